"""Does Spry learn? Every method at equal client steps, the same head treatment for all.

    python scripts/learning.py --dry-run            # print every command, run nothing
    python scripts/learning.py --jobs 2             # run what has not finished, 2 at a time
    python scripts/learning.py --only sst2-a1.0     # only runs whose name contains this
    python scripts/learning.py --only sst2-a1.0-spry  # a run's exact name: that run alone
    python scripts/learning.py --doc-only           # rewrite the tables in docs/learning.md

SST-2 and AG News from $SPRY_DATA_DIR with the packaged all-MiniLM-L6-v2: N=100 clients,
M=10 a round, Dirichlet α ∈ {1.0, 0.1}, the full dev/test split as the global test set,
and the same budget (rounds × clients × local steps, in BUDGET) for every method. The main
table gives every method the same head: mean-pooled normalised features (the model's
declared pooling), class means from round 0 (FedNCM) and the head's exact gradient; the
paper-faithful rows run `recipe=paper`.

Each finished run's metrics.jsonl and config.yaml are copied to
benchmarks/results/learning/<name>/ (committed), so a grid spread over several sessions
resumes: a run whose copy exists is not run again. Runs go to runs/learning/<name>.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "learning"
RUNS = ROOT / "runs" / "learning"
DOC = ROOT / "docs" / "learning.md"

BUDGET = ("num_clients=100", "clients_per_round=10", "rounds=40", "max_steps=8",
          "eval_every=10", "personalization_epochs=0", "batch_size=8", "max_length=64")
"""40 rounds × 10 clients × 8 local steps = 3,200 client steps per run (1 thread each)."""
DATASETS = {"sst2": "SST-2", "ag_news": "AG News"}
ALPHAS = (1.0, 0.1)
TARGET = 0.80
"""Held-out accuracy whose first crossing (client steps, wall seconds) the tables report;
round 0's class-mean head counts as 0 steps."""
FEDAVG = ("server_optimizer=fedavg", "server_lr=1.0")


def tiny(method: str, *extra: str, server: tuple[str, ...] = FEDAVG, lr: str = "1e-2"
         ) -> tuple[str, ...]:
    """A TinyLoRA row's overrides: the method, lr (1e-2), the head at 1e-4, then `extra`."""
    return (f"method={method}", "peft=tinylora", f"client_lr={lr}", "head_lr=1e-4", *extra,
            *server)


# name -> (label, overrides). Same server (FedAvg: the mean replaces the weights) and the
# same head (class means, exact gradient, AdamW at head_lr 1e-4) for all main-table
# methods. Measured first (SST-2 α=1.0, kept in benchmarks/results/learning/*-lr*,
# docs/learning.md): at head_lr 1e-3 a fresh AdamW every 8 steps walks the class-mean
# head down (head only 0.788 -> 0.750 in 40 rounds; 1e-4 holds it); at a LoRA lr of
# 3e-3 Spry's noisy estimates walk the adapters down too (0.788 -> 0.729), so the
# estimators run at 3e-4; backprop at AdamW 1e-3.
METHODS = {
    "fedavg": ("FedAvg (backprop)", ("method=backprop", "peft=lora", "client_lr=1e-3",
                                     "head_lr=1e-4", *FEDAVG)),
    "spry": ("Spry", ("method=spry", "peft=lora", "client_lr=3e-4", "head_lr=1e-4", *FEDAVG)),
    "head": ("head only", ("method=spry", "peft=head", "head_lr=1e-4", *FEDAVG)),
    "fedfgd": ("FedFGD", ("method=fedfgd", "peft=lora", "client_lr=3e-4", "head_lr=1e-4",
                          *FEDAVG)),
    "fedmezo": ("FedMeZO", ("method=fedmezo", "peft=lora", "client_lr=3e-4", "head_lr=1e-4",
                            *FEDAVG)),
    # Spry with one more tangent a step along its units' last global update (exact there,
    # spry.estimators.guided): one jvp dearer a step, same client steps.
    "spry-guided": ("Spry + guided tangent", ("method=spry", "peft=lora", "guided_tangent=true",
                                              "client_lr=3e-4", "head_lr=1e-4", *FEDAVG)),
    "fwdllm": ("FwdLLM (2 perturbations)", ("method=fwdllm", "peft=lora",
                                             "fwdllm_max_perturbations=2", "client_lr=3e-4",
                                             "head_lr=1e-4", *FEDAVG)),
    # LoRA's A factors only (B frozen at random values, lora_factors=a), each A's tangent
    # drawn in the span of the example's inputs to its layer, where A's gradient lies
    # (tangent_space=inputs: a K=1 cosine of 0.14 against 0.027 for Gaussian tangents on
    # the same tensors; biased). Beside it, the same tensors with Gaussian tangents and
    # with backprop. LoRA lr 1e-3 for all three.
    "spry-inputs": ("Spry, A factors, input-span tangents",
                    ("method=spry", "peft=lora", "lora_factors=a", "tangent_space=inputs",
                     "client_lr=1e-3", "head_lr=1e-4", *FEDAVG)),
    "spry-a": ("Spry, A factors, Gaussian tangents",
               ("method=spry", "peft=lora", "lora_factors=a", "client_lr=1e-3", "head_lr=1e-4",
                *FEDAVG)),
    "fedavg-a": ("FedAvg (backprop), A factors",
                 ("method=backprop", "peft=lora", "lora_factors=a", "client_lr=1e-3",
                  "head_lr=1e-4", *FEDAVG)),
    # TinyLoRA (peft=tinylora): each module trains 16 numbers v, ΔW = U√S (Σ v_i P_i) √S Vᵀ
    # in its weight's top-4 singular directions (frozen), so a client's forward gradient
    # guesses in 16–32 dimensions, not ~10⁴. Every method on the same adapter, lr 1e-2
    # (centrally, 500 steps: backprop at 1e-2 lowers the dev loss faster than at 1e-3, and
    # the forward gradient at 1e-2 follows backprop at 1e-3).
    "spry-tiny": ("Spry, TinyLoRA", tiny("spry")),
    "fedfgd-tiny": ("FedFGD, TinyLoRA", tiny("fedfgd")),
    "fedmezo-tiny": ("FedMeZO, TinyLoRA", tiny("fedmezo")),
    "fedavg-tiny": ("FedAvg (backprop), TinyLoRA", tiny("backprop")),
    # Spry on TinyLoRA with what a split round lacks (docs/learning.md, "Does splitting the
    # units sharpen a round's update?"): its error is the tangent noise, d/K times the data
    # noise (d = 16–32 numbers a client), so K=4 tangents a step (same client steps, ~2x
    # the seconds); and each unit's update is one client's, so FedAvgM's moving average
    # over rounds (β 0.9) averages ~10 clients' estimates of it.
    "spry-tiny-k4": ("Spry, TinyLoRA, K=4", tiny("spry", "tangents=4")),
    "spry-tiny-avgm": ("Spry, TinyLoRA, FedAvgM server (β 0.9)",
                       tiny("spry", server=("server_optimizer=fedavgm", "server_lr=1.0",
                                            "server_beta1=0.9"))),
    "spry-tiny-rerun": ("Spry, TinyLoRA (rerun)", tiny("spry")),
    # Each unit to r of the round's 10 clients (unit_replicas): its update the mean of r
    # clients' estimates, each client perturbing r times the units. r=1 is Spry, r=10
    # FedFGD's coverage: does the gap of the long runs close as r grows?
    "spry-tiny-r2": ("Spry, TinyLoRA, each unit to 2 clients", tiny("spry", "unit_replicas=2")),
    "spry-tiny-r5": ("Spry, TinyLoRA, each unit to 5 clients", tiny("spry", "unit_replicas=5")),
    # The same in bfloat16 (dtype=bfloat16; peft keeps v and the head in float32): does it
    # learn as well, and how much faster is a client on a CPU with bf16 matmuls (AMX)?
    "spry-tiny-bf16": ("Spry, TinyLoRA, bf16 model", tiny("spry", "dtype=bfloat16")),
    # Without dropout while the estimators train (train_dropout=false, recipe=spry's
    # default for them since 2026-12-03; MeZO's client does the same): no mask noise in
    # the directional derivative and no mask multiply on the tangents. Backprop keeps it.
    "spry-tiny-nodrop": ("Spry, TinyLoRA, no dropout", tiny("spry", "train_dropout=false")),
    "fedfgd-tiny-nodrop": ("FedFGD, TinyLoRA, no dropout",
                           tiny("fedfgd", "train_dropout=false")),
    # The default (no dropout) with the tangent pass's matmuls in bfloat16
    # (tangent_dtype=bfloat16; the primal stays float32): a step at 1.9x inference instead
    # of 2.4x on this CPU (docs/memory.md). Does it learn as the exact jvp does?
    "spry-tiny-bf16tan": ("Spry, TinyLoRA, no dropout, bf16 tangents",
                          tiny("spry", "train_dropout=false", "tangent_dtype=bfloat16")),
    # Round 0 by linear discriminant analysis instead of class means (head_init=lda: the
    # clients' within-class scatter beside their class sums, one forward pass as before;
    # at round 0 +1.1 SST-2, +2.5 AG News, +0.4 MNLI: benchmarks/head_init.py). Does the
    # lead survive 3,200 client steps, and do the adapters still add to it?
    "head-lda": ("head only, LDA head", ("method=spry", "peft=head", "head_lr=1e-4",
                                         "head_init=lda", *FEDAVG)),
    "spry-tiny-lda": ("Spry, TinyLoRA, no dropout, LDA head",
                      tiny("spry", "train_dropout=false", "head_init=lda")),
    "fedavg-tiny-lda": ("FedAvg (backprop), TinyLoRA, LDA head",
                        tiny("backprop", "head_init=lda")),
    "fedfgd-tiny-lda": ("FedFGD, TinyLoRA, no dropout, LDA head",
                        tiny("fedfgd", "train_dropout=false", "head_init=lda")),
    # Spry's adapter lr from the LDA head. A K=1 estimate over a client's d = 16-32 numbers
    # has a per-coordinate signal-to-noise of ~1/sqrt(d), and AdamW normalises every step to
    # ~lr whatever its signal: so at backprop's lr Spry travels ~sqrt(d) times less far
    # along the gradient in the same steps. Do larger steps buy that distance back?
    "spry-tiny-lda-lr3e-2": ("Spry, TinyLoRA, no dropout, LDA head, lr 3e-2",
                             tiny("spry", "train_dropout=false", "head_init=lda", lr="3e-2")),
    # K=4 tangents a step from the LDA head: a quarter of the tangent noise at ~2x a step's
    # seconds (same client steps). The held-out loss shows what accuracy's spread hides.
    "spry-tiny-lda-k4": ("Spry, TinyLoRA, no dropout, LDA head, K=4",
                         tiny("spry", "train_dropout=false", "head_init=lda", "tangents=4")),
    # One tangent per example on TinyLoRA's v (tangent_sharing=example: R = Σ v_j P_j is
    # built by an einsum, so each example's R_i gets its own tangent): B estimates for one
    # jvp, as LoRA has had. Per-example gradients of one unit's v on SST-2 agree by
    # B|mean g|²/mean|g_i|² = 1.3-1.9 (1 = orthogonal, B = equal), so ~1.5x less tangent
    # noise at no cost. Does it show, and should it be recipe=spry's default?
    "spry-tiny-lda-example": ("Spry, TinyLoRA, no dropout, LDA head, per-example tangents",
                              tiny("spry", "train_dropout=false", "head_init=lda",
                                   "tangent_sharing=example")),
    # Spry's split with exact gradients (method=backprop_split: each client backpropagates
    # through its dealt units only, dropout on as for every backprop row): what Spry's
    # client computes with an exact estimate, which a better tangent at most recovers. Does
    # the split itself, one client's batches a unit, hold the adapters below FedAvg?
    "split-tiny-lda": ("Spry's split, backprop (backprop_split), TinyLoRA, LDA head",
                       tiny("backprop_split", "head_init=lda")),
    # Spry exactly as `spry run` defaults it: the paper's FedYogi server (η 1e-2, on the
    # pseudo-gradient) where every other row has FedAvg. Which should recipe=spry default to?
    "spry-tiny-lda-yogi": ("Spry, TinyLoRA, no dropout, LDA head, FedYogi server (η 1e-2)",
                           tiny("spry", "train_dropout=false", "head_init=lda",
                                server=("server_optimizer=fedyogi", "server_lr=1e-2"))),
    # FwdLLM (up to 2 perturbations a step, kept by their variance) from the same LDA head on
    # TinyLoRA, no dropout: the main table's last zeroth-order method with the same head
    # treatment as Spry's default (FedMeZO equals FedFGD on TinyLoRA by construction).
    "fwdllm-tiny-lda": ("FwdLLM (2 perturbations), TinyLoRA, no dropout, LDA head",
                        tiny("fwdllm", "fwdllm_max_perturbations=2", "train_dropout=false",
                             "head_init=lda")),
    # Spry with the guided tangent (one more jvp a step along its units' last global update,
    # exact there, unbiased) on TinyLoRA from the LDA head: FwdLLM's prior-aligned
    # perturbations (biased) led Spry under seed 0 (level over three seeds), and on TinyLoRA
    # a unit's update is a direction in 16 numbers, not ~10^3 as on LoRA, where the guide
    # did not help.
    "spry-tiny-lda-guided": ("Spry, TinyLoRA, no dropout, LDA head, guided tangent",
                             tiny("spry", "train_dropout=false", "head_init=lda",
                                  "guided_tangent=true")),
    # The paper's recipe: its head (random, on the architecture's [CLS] pooler, trained by
    # the estimator), one shared tangent, AdamW 1e-4, FedYogi 1e-2.
    "spry-paper": ("Spry (recipe=paper)", ("method=spry", "recipe=paper")),
    "fedmezo-paper": ("FedMeZO (recipe=paper)", ("method=fedmezo", "recipe=paper")),
}
SST2_ONLY = ("spry-tiny-lda-lr3e-2", "spry-tiny-lda-k4", "spry-tiny-lda-example",
             "split-tiny-lda", "fwdllm-tiny-lda", "spry-tiny-lda-guided")
"""Variants of Spry's default asked of SST-2 alone (at α=1.0, the cell with three seeds of
every method beside them; the exact split at α=0.1 too: ONLY_IN); the other cells neither
run nor list them."""
ONLY_IN = {"split-tiny-lda": (("sst2", 1.0), ("sst2", 0.1))}
MAIN = ("fedavg", "spry", "spry-guided", "head", "fedfgd", "fedmezo", "fwdllm", "spry-inputs",
        "spry-a", "fedavg-a", "spry-tiny", "fedfgd-tiny", "fedmezo-tiny", "fedavg-tiny",
        "spry-tiny-k4", "spry-tiny-avgm", "spry-tiny-bf16", "spry-tiny-nodrop",
        "fedfgd-tiny-nodrop", "spry-tiny-bf16tan", "head-lda", "spry-tiny-lda",
        "fedavg-tiny-lda", "fedfgd-tiny-lda", "spry-tiny-lda-yogi", *SST2_ONLY)
PAPER = ("spry-paper", "fedmezo-paper")
RUN_ORDER = ("fedavg", "spry", "head", "fedmezo", "fedfgd", "spry-tiny", "fedavg-tiny",
             "fedfgd-tiny", "fedmezo-tiny", "spry-inputs", "spry-a", "fedavg-a", "spry-guided",
             "spry-paper", "fwdllm", "fedmezo-paper", "spry-tiny-k4", "spry-tiny-avgm",
             "spry-tiny-bf16", "spry-tiny-nodrop", "fedfgd-tiny-nodrop", "spry-tiny-bf16tan",
             "head-lda", "spry-tiny-lda", "fedavg-tiny-lda", "fedfgd-tiny-lda",
             "spry-tiny-lda-yogi", *SST2_ONLY)


LATER = ("spry-guided", "spry-paper", "fwdllm", "fedmezo-paper", "spry-tiny-k4",
         "spry-tiny-avgm", "spry-tiny-bf16", "spry-tiny-nodrop", "fedfgd-tiny-nodrop",
         "spry-tiny-bf16tan", "head-lda", "spry-tiny-lda", "fedavg-tiny-lda",
         "fedfgd-tiny-lda", "spry-tiny-lda-yogi", *SST2_ONLY)
"""Rows that run after every data set's fast main-table rows: the paper table and FwdLLM
(2-3x slower a step), so a session that ends early leaves the main table complete."""


def in_cell(method: str, data: str, alpha: float) -> bool:
    if method not in SST2_ONLY:
        return True
    return (data, alpha) in ONLY_IN.get(method, (("sst2", 1.0),))


KNOB_ROUNDS = 20
"""The knob sweep's budget: 20 rounds × 10 clients × 8 steps = 1,600 client steps."""
KNOB_BASE = ("dataset=sst2", "dirichlet_alpha=1.0", "method=spry", "peft=lora", "head_lr=1e-4",
             *FEDAVG)
# name -> (what it changes, overrides on top of KNOB_BASE). Issue 16's point 5: the
# client optimizer and lr for forward gradients, optimizer state across rounds, K,
# per-iteration mode and LoRA rank, each one at a time against Spry's default (3e-4)
# and head only, on SST-2 α=1.0. eval_loss is read beside accuracy: it moves before
# accuracy does (FedAvg: 0.545 -> 0.450 by round 20 while its accuracy stays within noise).
KNOBS = {
    "lr1e-3": ("LoRA lr 1e-3", ("client_lr=1e-3",)),
    "lr3e-3": ("LoRA lr 3e-3", ("client_lr=3e-3",)),
    "lr1e-2": ("LoRA lr 1e-2", ("client_lr=1e-2",)),
    "sgd1e-2": ("client SGD (the head too, at 1e-4), lr 1e-2",
                ("client_optimizer=sgd", "client_lr=1e-2")),
    "sgd1e-1": ("client SGD (the head too, at 1e-4), lr 1e-1",
                ("client_optimizer=sgd", "client_lr=1e-1")),
    # AdamW's per-coordinate normalisation turns a low-rank estimate into its sign
    # pattern, which spreads it over every coordinate again; SGD keeps its direction.
    "inputs-sgd3e-2": ("A factors, input-span tangents, client SGD 3e-2 (the head too, at 1e-4)",
                       ("lora_factors=a", "tangent_space=inputs", "client_optimizer=sgd",
                        "client_lr=3e-2")),
    "k4": ("K=4 tangents a step, LoRA lr 1e-3", ("tangents=4", "client_lr=1e-3")),
    "keep-opt": ("client AdamW kept across rounds, lr 1e-3",
                 ("keep_client_optimizer=true", "client_lr=1e-3")),
    "r4": ("LoRA rank 4, lr 1e-3", ("lora_r=4", "client_lr=1e-3")),
    "per-iteration": ("per-iteration mode, lr 1e-3",
                      ("communication=per_iteration", "client_lr=1e-3")),
    # TinyLoRA's loss rose from round 30 to 40 at 1e-2 (the grid's row): a lower lr.
    "tiny-lr3e-3": ("TinyLoRA, lr 3e-3", ("peft=tinylora", "client_lr=3e-3")),
}


LONG_ROUNDS = 120
"""The long runs' budget: 120 rounds × 10 clients × 8 steps = 9,600 client steps."""
LONG = ("fedavg", "spry", "head", "spry-tiny", "fedavg-tiny", "fedfgd-tiny", "spry-tiny-rerun",
        "spry-tiny-r2", "spry-tiny-r5", "spry-tiny-nodrop", "fedfgd-tiny-nodrop",
        "spry-tiny-lda", "fedavg-tiny-lda", "head-lda", "fedfgd-tiny-lda")
"""SST-2 α=1.0 at three times the grid's budget: does backprop pull away, and does Spry
leave head-only behind, when the runs are longer (issue 16: "aim for 100+ rounds")?
The TinyLoRA rows ask it again of the adapter on which forward gradients add to the head.
`spry-tiny-rerun` is spry-tiny again on the code after 2026-12-02's head-feature change
(fedfgd-tiny's code: the same estimator, other dropout draws), so the two compare alike.
`spry-tiny-r2`/`-r5` deal each unit to 2 / 5 clients: between Spry and FedFGD. The
`-nodrop` pair asks whether the estimators' default without dropout changes the long run;
the `-lda` rows ask the issue's question of the main table's methods as they now stand
(LDA head, no dropout for the estimators): does the adapters' gain over head only grow with
three times the client steps, and does Spry keep up with backprop?"""
LONG_CELLS = {1.0: LONG, 0.1: ("spry-tiny-lda", "fedavg-tiny-lda", "head-lda", "fedfgd-tiny-lda")}
"""The long runs' cells: SST-2 α=1.0 (every row above) and α=0.1, where the main methods
from the LDA head are asked the same (issue 16 asks for both α)."""


SEEDS = (1, 2)
SEEDED = ("head-lda", "spry-tiny-lda", "fedavg-tiny-lda", "fedfgd-tiny-lda")
SEED_CELLS = {("sst2", 1.0): (*SEEDED, "spry-tiny-lda-k4", "spry-tiny-lda-example",
                               "split-tiny-lda", "spry-tiny-lda-yogi", "fwdllm-tiny-lda",
                               "spry-tiny-lda-guided"),
              ("sst2", 0.1): ("head-lda", "spry-tiny-lda", "split-tiny-lda", "fedavg-tiny-lda",
                              "fedfgd-tiny-lda", "spry-tiny-lda-yogi")}
"""Cells run again from the LDA head under other run seeds (seed 0 is the grid's run;
SEED_CELLS: every main method, the exact split (backprop_split), Spry at K=4, with
per-example tangents or the guided tangent, and FwdLLM on SST-2 α=1.0; the main methods,
the exact split and the default FedYogi server in both SST-2 cells):
the seed draws the Dirichlet split, the sampled clients, the head's round-0 examples, the
tangents and the dropout masks; the dev set stays the same. The differences the targets
ask about (±1–2 points) are of the size of one run's spread, so they are read as means
over the seeds, each run beside them."""


FILE_TASKS = {
    "mnli": ("MNLI matched, a local jsonl file (20 % held out)",
             ("dataset=$SPRY_DATA_DIR/mnli/dev_matched.jsonl", "test_fraction=0.2")),
}
"""Tasks this project's recipes do not know, read from a local file as a new user would
(`dataset=<file>`, the columns found by name, a seeded stratified test split). MNLI is a
sentence pair task on which class means of the sentence embedding are weak (0.42 at round
0, three classes), so the adapters have room to add to the head."""
FILE_ALPHAS = (1.0,)
FILE_METHODS = ("spry-tiny-nodrop", "fedavg-tiny", "head", "fedfgd-tiny-nodrop", "fedavg",
                "head-lda", "spry-tiny-lda", "fedavg-tiny-lda", "fedfgd-tiny-lda")
"""The last four: from the LDA head (recipe=spry's round 0 since 2026-12-03; run
2026-12-07), where the head alone is stronger and the adapters must add to it."""


def pinned(overrides: tuple[str, ...]) -> tuple[str, ...]:
    """The rows that name no train_dropout ran with the model's dropout on (every method,
    before 2026-12-03's recipe=spry default), and those that name no head_init (recipe=spry)
    from class means (before 2026-12-03's head_init=lda default): said so, so their
    commands still reproduce them."""
    named = {o.split("=", 1)[0] for o in overrides}
    if "train_dropout" not in named:
        overrides = (*overrides, "train_dropout=true")
    if "head_init" not in named and "recipe=paper" not in overrides:
        overrides = (*overrides, "head_init=class_means")
    return overrides


def with_rounds(rounds: int) -> tuple[str, ...]:
    return tuple(f"rounds={rounds}" if o.startswith("rounds=") else o for o in BUDGET)


def experiments() -> dict[str, list[str]]:
    """name -> spry run overrides, in the order they run (SST-2 at α=1.0 first, LATER last,
    then the long runs and the knob sweep)."""
    out = {}
    for later in (False, True):
        for data, alpha, method in itertools.product(DATASETS, ALPHAS, RUN_ORDER):
            if (method in LATER) == later and in_cell(method, data, alpha):
                name = f"{data}-a{alpha}-{method}"
                out[name] = [f"dataset={data}", f"dirichlet_alpha={alpha}", *BUDGET,
                             *pinned(METHODS[method][1]), f"output_dir={RUNS}",
                             f"run_name={name}"]
    for alpha, methods in LONG_CELLS.items():
        for method in methods:
            name = f"long-sst2-a{alpha}-{method}"
            out[name] = ["dataset=sst2", f"dirichlet_alpha={alpha}", *with_rounds(LONG_ROUNDS),
                         *pinned(METHODS[method][1]), f"output_dir={RUNS}", f"run_name={name}"]
    for (data, alpha), methods in SEED_CELLS.items():
        for seed, method in itertools.product(SEEDS, methods):
            name = f"seed{seed}-{data}-a{alpha}-{method}"
            out[name] = [f"dataset={data}", f"dirichlet_alpha={alpha}", *BUDGET,
                         *pinned(METHODS[method][1]), f"seed={seed}",
                         f"output_dir={RUNS}", f"run_name={name}"]
    for task, alpha, method in itertools.product(FILE_TASKS, FILE_ALPHAS, FILE_METHODS):
        name = f"file-{task}-a{alpha}-{method}"
        out[name] = [*FILE_TASKS[task][1], f"dirichlet_alpha={alpha}", *BUDGET,
                     *pinned(METHODS[method][1]), f"output_dir={RUNS}", f"run_name={name}"]
    for knob, (_, overrides) in KNOBS.items():
        name = f"knob-sst2-a1.0-{knob}"
        out[name] = [*KNOB_BASE, *with_rounds(KNOB_ROUNDS), *pinned(overrides),
                     f"output_dir={RUNS}", f"run_name={name}"]
    return out


def command(overrides: list[str]) -> str:
    return "spry run --quiet " + " ".join(o for o in overrides
                                          if not o.startswith(("output_dir=", "run_name=")))


def done(name: str) -> bool:
    return (RESULTS / name / "metrics.jsonl").is_file()


def launch(name: str, overrides: list[str]) -> subprocess.Popen:
    shutil.rmtree(RUNS / name, ignore_errors=True)  # an unfinished attempt starts over
    RUNS.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log = open(RUNS / f"{name}.log", "w")
    overrides = [os.path.expandvars(o) for o in overrides]  # FILE_TASKS' $SPRY_DATA_DIR
    return subprocess.Popen(["spry", "run", "--quiet", *overrides], stdout=log,
                            stderr=subprocess.STDOUT, env=env)


def keep(name: str) -> None:
    (RESULTS / name).mkdir(parents=True, exist_ok=True)
    for f in ("config.yaml", "metrics.jsonl"):
        shutil.copy(RUNS / name / f, RESULTS / name / f)


def run_all(todo: dict[str, list[str]], jobs: int) -> None:
    running: dict[str, subprocess.Popen] = {}
    queue = list(todo.items())
    while queue or running:
        while queue and len(running) < jobs:
            name, overrides = queue.pop(0)
            print(f"start {name}: {command(overrides)}", flush=True)
            running[name] = launch(name, overrides)
        time.sleep(5)
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                ok = proc.returncode == 0
                if ok:
                    keep(name)
                print(f"{'done' if ok else 'FAILED'} {name} (exit {proc.returncode})", flush=True)


# --- the doc -----------------------------------------------------------------------------
def rows(name: str) -> list[dict]:
    path = RESULTS / name / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summary(name: str) -> dict | None:
    if not done(name):
        return None
    metrics = rows(name)
    tested = [r for r in metrics if r.get("test_accuracy") is not None]
    trained = [r for r in metrics if r["round"] > 0]
    hit = next((r for r in tested if r["test_accuracy"] >= TARGET), None)
    # Wall seconds from the end of round 0: the runs before 2026-12-07 record no round-0
    # time in elapsed_seconds, so every row counts from the same point.
    zero = metrics[0].get("elapsed_seconds", 0.0) if metrics[0]["round"] == 0 else 0.0
    to_target = None if hit is None else (
        sum(r.get("steps", 0) for r in trained if r["round"] <= hit["round"]),
        hit.get("elapsed_seconds", zero) - zero)
    start = tested[0]["test_accuracy"] if tested[0]["round"] == 0 else None  # recipe=paper: none
    return {"start": start, "final": tested[-1]["test_accuracy"],
            "to_target": to_target,
            "best": max(r["test_accuracy"] for r in tested),
            "round": tested[-1]["round"], "steps": sum(r.get("steps", 0) for r in trained),
            "seconds": sum(r.get("client_seconds", 0) for r in metrics),
            "curve": [(r["round"], r["test_accuracy"]) for r in tested]}


def _budget(key: str) -> str:
    return next(o.split("=", 1)[1] for o in BUDGET if o.startswith(key + "="))


def table(data: str, alpha: float, methods: tuple[str, ...], prefix: str = "") -> list[str]:
    lines = ["| method | round 0 | final test | best | rounds × clients × steps | client s | "
             f"to {TARGET:.2f}: client steps, wall s | curve (round: test acc) |",
             "|---|---|---|---|---|---|---|---|"]
    for method in (m for m in methods if prefix or in_cell(m, data, alpha)):
        s = summary(f"{prefix}{data}-a{alpha}-{method}")
        label = METHODS[method][0]
        if s is None:
            lines.append(f"| {label} | not run | | | | | | |")
            continue
        curve = ", ".join(f"{r}: {a:.3f}" for r, a in s["curve"])
        hit = ("not reached" if s["to_target"] is None
               else f"{s['to_target'][0]:,}, {s['to_target'][1]:.0f}")
        start = "—" if s["start"] is None else f"{s['start']:.3f}"
        lines.append(f"| {label} | {start} | {s['final']:.3f} | {s['best']:.3f} | "
                     f"{s['round']} × {_budget('clients_per_round')} × {_budget('max_steps')} "
                     f"= {s['steps']:,} | {s['seconds']:.0f} | {hit} | {curve} |")
    return lines


def at_round(name: str, round_: int) -> str:
    """'accuracy / eval_loss' of a run's row at `round_`, or 'not run'."""
    if not done(name):
        return "not run"
    row = next((r for r in rows(name) if r["round"] == round_), None)
    if row is None or row.get("test_accuracy") is None:
        return "—"
    loss = row.get("eval_loss")
    return f"{row['test_accuracy']:.3f} / " + ("—" if loss is None else f"{loss:.4f}")


def knob_table() -> list[str]:
    rounds = list(range(10, KNOB_ROUNDS + 1, 10))
    lines = ["| run | " + " | ".join(f"round {r}: acc / eval loss" for r in rounds)
             + " | client s |", "|---" * (len(rounds) + 2) + "|"]
    refs = [("Spry default (LoRA lr 3e-4; the grid's run)", "sst2-a1.0-spry"),
            ("head only (the grid's run)", "sst2-a1.0-head"),
            ("FedAvg, backprop (the grid's run)", "sst2-a1.0-fedavg"),
            ("Spry, TinyLoRA lr 1e-2 (the grid's run)", "sst2-a1.0-spry-tiny")]
    knobs = [(label, f"knob-sst2-a1.0-{knob}") for knob, (label, _) in KNOBS.items()]
    for label, name in refs + knobs:
        seconds = "" if not done(name) else "{:.0f}".format(sum(
            r.get("client_seconds", 0) for r in rows(name) if r["round"] <= KNOB_ROUNDS))
        lines.append(f"| {label} | " + " | ".join(at_round(name, r) for r in rounds)
                     + f" | {seconds} |")
    return lines


def seed_runs(method: str, cell: str = "sst2-a1.0") -> list[str]:
    """The names of a seeded method's runs in a cell, seed 0 (the grid's own row) first."""
    return [f"{cell}-{method}"] + [f"seed{seed}-{cell}-{method}" for seed in SEEDS]


def _mean_sd(values: list[float], signed: bool = False) -> str:
    """'mean ± sd' (the sample standard deviation over the seeds), a lone value as is."""
    form = "+.3f" if signed else ".3f"
    if len(values) < 2:
        return format(values[0], form) if values else "—"
    mean = sum(values) / len(values)
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{format(mean, form)} ± {sd:.3f}"


def _seed_stats(name: str) -> tuple[float, float, float | None] | None:
    """(final test accuracy, mean of the rounds 10–40 evaluations, held-out loss at the
    end: recorded since 2026-12-04, so older runs have None) of a kept run, or None."""
    s = summary(name)
    if s is None:
        return None
    later = [a for r, a in s["curve"] if r >= 10]
    return s["final"], sum(later) / len(later), rows(name)[-1].get("test_loss")


def seed_table(cell: str = "sst2-a1.0", methods: tuple[str, ...] = SEEDED) -> list[str]:
    """Each seeded method under every seed: final test accuracy (mean of rounds 10–40)
    and the held-out loss at the end; then Spry's differences paired by seed (a seed
    fixes the split and the sampled clients for every method)."""
    seeds = (0, *SEEDS)
    lines = ["| method | " + " | ".join(f"seed {s}: final (mean 10–40)" for s in seeds)
             + " | final, mean ± sd | mean 10–40, mean ± sd | held-out loss at 40 |",
             "|---" * (len(seeds) + 4) + "|"]
    stats: dict[str, dict[int, tuple]] = {}
    for method in methods:
        runs = dict(zip(seeds, map(_seed_stats, seed_runs(method, cell))))
        stats[method] = {seed: st for seed, st in runs.items() if st is not None}
        kept = list(stats[method].values())
        cells = ["not run" if st is None else f"{st[0]:.3f} ({st[1]:.3f})"
                 for st in runs.values()]
        losses = ", ".join("—" if st[2] is None else f"{st[2]:.4f}" for st in kept)
        lines.append(f"| {METHODS[method][0]} | " + " | ".join(cells)
                     + f" | {_mean_sd([st[0] for st in kept])} | "
                     f"{_mean_sd([st[1] for st in kept])} | {losses} |")
    spry = stats.get("spry-tiny-lda", {})
    for other in methods:
        paired = [s for s in seeds if s in spry and s in stats[other]]
        if other == "spry-tiny-lda" or not paired:
            continue
        diff = {s: [a - b if None not in (a, b) else None
                    for a, b in zip(spry[s], stats[other][s])] for s in paired}
        losses = ", ".join(f"{d[2]:+.4f}" for d in diff.values() if d[2] is not None)
        lines.append(f"| Spry − {METHODS[other][0]} (seeds {', '.join(map(str, paired))}) | "
                     + " | ".join(f"{diff[s][0]:+.3f}" if s in diff else "" for s in seeds)
                     + f" | {_mean_sd([d[0] for d in diff.values()], True)} | "
                     f"{_mean_sd([d[1] for d in diff.values()], True)} | {losses or '—'} |")
    return lines


def write_doc() -> None:
    marker = "<!-- tables below are written by scripts/learning.py --doc-only -->"
    head = DOC.read_text().split(marker)[0] if DOC.exists() else "# Learning\n\n"
    out = [head.rstrip() + "\n", marker, ""]
    for data, title in DATASETS.items():
        for alpha in ALPHAS:
            out += [f"### {title}, α={alpha}: same head treatment for all", ""]
            out += table(data, alpha, MAIN) + [""]
            out += [f"### {title}, α={alpha}: paper-faithful", ""]
            out += table(data, alpha, PAPER) + [""]
    for alpha, methods in LONG_CELLS.items():
        out += [f"### SST-2, α={alpha}, {LONG_ROUNDS} rounds: "
                f"{LONG_ROUNDS} × {_budget('clients_per_round')} × {_budget('max_steps')} = "
                f"{LONG_ROUNDS * int(_budget('clients_per_round')) * int(_budget('max_steps')):,} "
                "client steps", ""]
        out += table("sst2", alpha, methods, prefix="long-") + [""]
    for task, (title, _) in FILE_TASKS.items():
        for alpha in FILE_ALPHAS:
            out += [f"### {title}, α={alpha}: a task the recipes do not know", ""]
            out += table(task, alpha, FILE_METHODS, prefix="file-") + [""]
    out += [f"### Knobs, one at a time: SST-2 α=1.0, Spry, {KNOB_ROUNDS} rounds × "
            f"{_budget('clients_per_round')} × {_budget('max_steps')} = "
            f"{KNOB_ROUNDS * int(_budget('clients_per_round')) * int(_budget('max_steps')):,} "
            "client steps", ""]
    out += knob_table() + [""]
    steps = int(_budget("rounds")) * int(_budget("clients_per_round")) * int(_budget("max_steps"))
    for (data, alpha), methods in SEED_CELLS.items():
        out += [f"### {DATASETS[data]}, α={alpha}, LDA head, three run seeds: "
                f"{_budget('rounds')} × {_budget('clients_per_round')} × "
                f"{_budget('max_steps')} = {steps:,} client steps each", ""]
        out += seed_table(f"{data}-a{alpha}", methods) + [""]
    out += ["Commands (each with `output_dir`/`run_name` of its own):", "", "```"]
    out += [command(o) for o in experiments().values()] + ["```", ""]
    DOC.write_text("\n".join(out))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--only", default=None,
                   help="run only this experiment, or those whose name contains this")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--doc-only", action="store_true")
    a = p.parse_args(argv)
    if a.doc_only:
        write_doc()
        return 0
    every = experiments()
    if a.only in every:  # a run's exact name: that run alone
        every = {a.only: every[a.only]}
    elif a.only is not None:  # else every run whose name contains it
        every = {n: o for n, o in every.items() if a.only in n}
    todo = {n: o for n, o in every.items() if not done(n)}
    if a.dry_run:
        for name, overrides in todo.items():
            print(f"{name}: {command(overrides)}")
        return 0
    run_all(todo, a.jobs)
    write_doc()
    return 0


if __name__ == "__main__":
    sys.exit(main())
