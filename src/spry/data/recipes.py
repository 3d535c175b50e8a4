"""Known tasks: where they live on the hub and in ../shared/data, and how to read them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FileSpec:
    path: str  # relative to data_dir
    text: str
    label: str
    pair: str | None = None
    columns: tuple[str, ...] | None = None  # for files without a header row
    csv_options: dict = field(default_factory=dict)


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
    "yelp_polarity": Recipe(
        hub_id="fancyzhx/yelp_polarity", hub_text="text", hub_label="label",
        label_names=("negative", "positive")),
}

# AG News test.csv numbers its classes from 1.
LABEL_OFFSETS = {"ag_news/test.csv": 1}
