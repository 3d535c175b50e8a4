"""Known tasks: where they live on the hub and in ../shared/data, and how to read them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from spry.data import multirc, squad


@dataclass(frozen=True)
class FileSpec:
    path: str  # relative to data_dir
    text: str
    label: str
    pair: str | None = None
    columns: tuple[str, ...] | None = None  # for files without a header row
    csv_options: dict = field(default_factory=dict)
    reader: Callable | None = None
    """For nested formats: reader(path, label_names) -> Examples; the columns are unused."""


@dataclass(frozen=True)
class Recipe:
    hub_id: str
    hub_text: str
    hub_label: str
    label_names: tuple[str, ...]
    train: FileSpec | None = None
    test: FileSpec | None = None
    hub_pair: str | None = None
    hub_config: str | None = None
    hub_test_split: str | None = "test"
    label_words: tuple[str, ...] | None = None
    """What task_head=verbalizer scores per label (default: the label names)."""


# QUOTE_NONE for GLUE-style TSVs, whose sentences contain bare quotes.
_TSV = {"delimiter": "\t", "quoting": 3}

RECIPES: dict[str, Recipe] = {
    "sst2": Recipe(
        hub_id="stanfordnlp/sst2", hub_text="sentence", hub_label="label",
        hub_test_split="validation", label_names=("negative", "positive"),
        train=FileSpec("sst2/train.tsv", text="sentence", label="label", csv_options=_TSV),
        test=FileSpec("sst2/dev.tsv", text="sentence", label="label", csv_options=_TSV)),
    "ag_news": Recipe(
        hub_id="fancyzhx/ag_news", hub_text="text", hub_label="label",
        label_names=("World", "Sports", "Business", "Sci/Tech"),
        train=FileSpec("ag_news/train_subset_10k_description_only.tsv", text="text",
                       label="label", columns=("text", "label"), csv_options=_TSV),
        # The official test set; its class is 1-based (1 = World).
        test=FileSpec("ag_news/test.csv", text="description", label="class",
                      columns=("class", "title", "description"))),
    "snli": Recipe(
        hub_id="stanfordnlp/snli", hub_text="premise", hub_pair="hypothesis", hub_label="label",
        label_names=("entailment", "neutral", "contradiction"),
        train=FileSpec("snli/dev.jsonl", text="premise", pair="hypothesis", label="label"),
        test=FileSpec("snli/test.tsv", text="premise", pair="hypothesis", label="label",
                      csv_options=_TSV)),
    "mnli": Recipe(
        hub_id="nyu-mll/multi_nli", hub_text="premise", hub_pair="hypothesis", hub_label="label",
        hub_test_split="validation_matched",
        label_names=("entailment", "neutral", "contradiction"),
        train=FileSpec("mnli/dev_matched.jsonl", text="premise", pair="hypothesis",
                       label="label")),
    "yahoo": Recipe(
        hub_id="community-datasets/yahoo_answers_topics", hub_text="question_title",
        hub_label="topic", label_names=("society_culture", "science_mathematics"),
        train=FileSpec("yahoo_answers_subset/train.csv", text="text", label="label",
                       columns=("text", "label")),
        test=FileSpec("yahoo_answers_subset/test.csv", text="text", label="label",
                      columns=("text", "label"))),
    # One example per answer option; val.jsonl (labelled) is the held-out test split.
    # Local files only (a recipe with a reader never falls back to the hub).
    "multirc": Recipe(
        hub_id="aps/super_glue", hub_text="paragraph", hub_label="label",
        label_names=multirc.LABEL_NAMES, label_words=multirc.LABEL_WORDS,
        train=FileSpec("multirc/train.jsonl", text="passage", label="label",
                       reader=multirc.read_multirc),
        test=FileSpec("multirc/val.jsonl", text="passage", label="label",
                      reader=multirc.read_multirc)),
    # SQuAD v2 (task_head=span on encoders, generate on decoders). Only the labelled half
    # of the official dev set is here: a quarter of its articles is held out (the global
    # test split), the rest is dealt to the clients.
    "squad_v2": Recipe(
        hub_id="rajpurkar/squad_v2", hub_text="question", hub_pair="context",
        hub_label="answers", label_names=squad.LABEL_NAMES,
        train=FileSpec("squad_v2/dev-v2.0.cs224n-half.json", text="question", label="answers",
                       reader=squad.read_client_part),
        test=FileSpec("squad_v2/dev-v2.0.cs224n-half.json", text="question", label="answers",
                      reader=squad.read_held_out_part)),
    "yelp_polarity": Recipe(
        hub_id="fancyzhx/yelp_polarity", hub_text="text", hub_label="label",
        label_names=("negative", "positive")),
}

# AG News test.csv numbers its classes from 1.
LABEL_OFFSETS = {"ag_news/test.csv": 1}
