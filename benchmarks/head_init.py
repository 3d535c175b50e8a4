"""Round 0's head, before any training: class means (FedNCM) against linear discriminant
analysis (head_init=lda) at several shrinkages and logit scales, with a logistic-regression
probe on the same examples as the ceiling for a linear head on these frozen features.

    SPRY_DATA_DIR=../shared/data python benchmarks/head_init.py dataset=sst2
    SPRY_DATA_DIR=../shared/data python benchmarks/head_init.py dataset=ag_news
    SPRY_DATA_DIR=../shared/data python benchmarks/head_init.py \
        dataset=../shared/data/mnli/dev_matched.jsonl test_fraction=0.2

The clients' features are exactly round 0's (spry.engines.node.round_zero_features: the
packaged all-MiniLM-L6-v2, N=100 clients, Dirichlet α=1.0, at most head_init_examples=64
examples each), and every head is built from the statistics the clients would send
(spry.tasks.linear_head), then scored on the whole held-out split. Other key=value
arguments go to the Config (num_clients, dirichlet_alpha, head_init_examples, model, ...).
Writes benchmarks/results/head-init/<task>.json.

With task_head=token (a tag a word) the examples are the labelled token states, and each
head is also scored per entity (seqeval's F1, words cut off by max_length counted as `O`):

    python benchmarks/head_init.py dataset=runs/tokens/data/wnut17_train.conll \
        test_file=runs/tokens/data/wnut17_test.conll task_head=token num_clients=30 \
        head_init_examples=1000   # every training sentence; the files scripts/tokens.py writes

With task_head=regression (a file of scores) the rows are the least-squares head
(spry.tasks.linear_head.ridge_head) at each shrinkage and at the one generalized
cross-validation picks (the default), scored by Pearson correlation and RMSE:

    python benchmarks/head_init.py dataset=runs/regression/data/snli_score_train.csv \
        test_file=runs/regression/data/snli_score_test.csv task_head=regression \
        max_test_examples=2000      # the files scripts/regression.py writes
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from spry.config import Config
from spry.data.batches import iterate_batches
from spry.engines.node import round_zero_features
from spry.experiment import build
from spry.tasks.linear_head import (ClassStatistics, class_mean_head, class_statistics, lda_head,
                                    gcv_shrinkage, labelled_tokens, pooled_moments, ridge_head,
                                    score_statistics)
from spry.tasks.tokens import default_tag, entity_scores, is_entity_tagging
from spry.tasks.regression import score_metrics

SHRINKAGES = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
SCALES = (1.0, 0.5, 0.25)
OUT = Path(__file__).resolve().parent / "results" / "head-init"
BASE = ["num_clients=100", "dirichlet_alpha=1.0", "max_length=64", "eval_batch_size=64",
        "threads=1"]


@torch.no_grad()
def held_out_features(exp) -> tuple[torch.Tensor, torch.Tensor]:
    exp.model.eval()
    features, labels = [], []
    for batch in iterate_batches(exp.data.test, exp.tokenizer, exp.cfg.eval_batch_size):
        y = batch.pop("labels")
        out = exp.model(**batch)
        f = out.features.float()
        if f.dim() == 3:  # task_head=token: the labelled token states, in word order
            f, _, y = labelled_tokens(f, out.logits, y)
        labels.append(y)
        features.append(f)
    return torch.cat(features), torch.cat(labels)


def score(weight, bias, features, labels, entities=None) -> dict:
    logits = features @ weight.T + bias
    out = {"accuracy": (logits.argmax(-1) == labels).float().mean().item(),
           "loss": F.cross_entropy(logits, labels).item()}
    if entities is not None:
        out["entity_f1"] = entities(logits.argmax(-1).tolist())
    return out


def entity_scorer(exp):
    """task_head=token with entity tags: flat predictions over the held-out split's labelled
    tokens (held_out_features' order) -> seqeval's entity F1 over its sentences; else None."""
    names = list(exp.cfg.label_names or ())
    if exp.cfg.task_head != "token" or not is_entity_tagging(names):
        return None
    test, fallback = exp.data.test, default_tag(names)

    def entity_f1(flat: list[int]) -> float:
        predicted, k = [], 0
        for at in test.word_tokens:
            predicted.append([])
            for token in at:
                predicted[-1].append(flat[k] if token >= 0 else fallback)
                k += token >= 0
        return entity_scores([[names[t] for t in s] for s in test.word_tags],
                             [[names[t] for t in s] for s in predicted])["test_entity_f1"]

    return entity_f1


def logistic_probe(features, labels, num_labels: int, weight_decay: float = 1e-4):
    """Multinomial logistic regression on the pooled round-0 examples (L-BFGS), the best a
    linear head does on these features when it sees the clients' examples centrally."""
    weight = torch.zeros(num_labels, features.shape[1], requires_grad=True)
    bias = torch.zeros(num_labels, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (F.cross_entropy(features @ weight.T + bias, labels)
                + weight_decay * weight.pow(2).sum())
        loss.backward()
        return loss

    opt.step(closure)
    return weight.detach(), bias.detach()


def main(argv: list[str]) -> int:
    cfg = Config.from_yaml(None, [*BASE, *argv])
    torch.manual_seed(0)
    start = time.perf_counter()
    exp = build(cfg)
    num_labels = exp.data.num_labels
    per_client = [round_zero_features(exp.model, c.client_id, c, exp.tokenizer, exp.cfg)
                  for c in exp.data.clients]
    test_x, test_y = held_out_features(exp)
    print(f"{sum(len(f) for f, _ in per_client)} round-0 examples from {len(per_client)} "
          f"clients, {len(test_y)} held out ({time.perf_counter() - start:.0f} s)", flush=True)
    if cfg.task_head == "regression":
        rows = regression_rows(per_client, test_x, test_y)
    else:
        rows = class_rows(exp, per_client, test_x, test_y, num_labels)
    for row in rows:
        knobs = ", ".join(f"{k} {row[k]}" for k in ("shrinkage", "scale") if k in row)
        scores = ", ".join(f"{k} {row[k]:.3f}" for k in ("accuracy", "loss", "entity_f1",
                                                         "pearson", "rmse") if k in row)
        print(f"{row['head']:>26} {knobs:<26} {scores}")
    OUT.mkdir(parents=True, exist_ok=True)
    task = Path(str(cfg.dataset)).stem if "/" in str(cfg.dataset) else str(cfg.dataset)
    (OUT / f"{task}.json").write_text(json.dumps(
        {"command": "python benchmarks/head_init.py " + " ".join(argv),
         "round_zero_examples": sum(len(y) for _, y in per_client), "held_out": len(test_y),
         "rows": rows}, indent=1) + "\n")
    return 0


def regression_rows(per_client, test_x, test_y) -> list[dict]:
    """The least-squares head from the clients' statistics at each shrinkage, and at the
    one generalized cross-validation picks. The statistics are sufficient: λ = 0 is
    ordinary least squares on the pooled round-0 examples (the central fit)."""
    stats = []
    for i, (f, y) in enumerate(per_client):
        sums, counts, norms, scatter = score_statistics(f, y)
        stats.append(ClassStatistics(i, sums, counts, norms, 0.0, scatter))

    def scored(weight, bias) -> dict:
        m = score_metrics((test_x @ weight[0] + bias[0]).tolist(), test_y.float().tolist())
        return {"pearson": m["test_pearson"], "rmse": m["test_rmse"]}

    rows = [{"head": "ridge", "shrinkage": s, **scored(*ridge_head(stats, s))}
            for s in SHRINKAGES]
    counts, _, covariance = pooled_moments(stats)
    rows.append({"head": "ridge, λ by GCV", "shrinkage": gcv_shrinkage(covariance, counts.sum()),
                 **scored(*ridge_head(stats))})
    return rows


def class_rows(exp, per_client, test_x, test_y, num_labels: int) -> list[dict]:
    """Class means, LDA at each shrinkage and logit scale, and the central logistic probe."""
    means = [ClassStatistics(i, *class_statistics(f, y, num_labels))
             for i, (f, y) in enumerate(per_client)]
    lda = []
    for i, (f, y) in enumerate(per_client):
        sums, counts, norms, scatter = class_statistics(f, y, num_labels, scatter=True)
        lda.append(ClassStatistics(i, sums, counts, norms, 0.0, scatter))
    entities = entity_scorer(exp)
    rows = [{"head": "class means", "scale": exp.cfg.head_init_scale,
             **score(*class_mean_head(means, exp.cfg.head_init_scale), test_x, test_y,
                     entities)}]
    for shrinkage in SHRINKAGES:
        for scale in SCALES:
            rows.append({"head": "lda", "shrinkage": shrinkage, "scale": scale,
                         **score(*lda_head(lda, shrinkage, scale), test_x, test_y, entities)})
    pooled_x = torch.cat([f for f, _ in per_client])
    pooled_y = torch.cat([y for _, y in per_client])
    rows.append({"head": "logistic probe (central)",
                 **score(*logistic_probe(pooled_x, pooled_y, num_labels), test_x, test_y,
                         entities)})
    return rows


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
