"""Evaluation in file order against length order, and in float32 against bfloat16
autocast (issue 20): one held-out split scored by the classifier head each way, in one
process, interleaved.

    SPRY_DATA_DIR=../shared/data python benchmarks/eval_order.py [--dataset sst2] [--repeat 2] [--bf16]

Prints each way's seconds, its correct count and summed loss (the orders agree up to
float32 rounding of the sum); with --bf16 also length order under eval_dtype=bfloat16's
autocast (spry.client.eval_precision) and how many of its predictions differ from
float32's. MiniLM with a random head (head_init=random), one thread, eval_batch_size 64
unless --batch-size.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
import torch.nn.functional as F

from spry.client import eval_precision
from spry.config import Config
from spry.data.batches import indexed_batches
from spry.experiment import build


def score(exp, by_length: bool, batch_size: int, bf16: bool = False
          ) -> tuple[float, int, float, dict[int, int]]:
    """(seconds, correct, summed loss, row -> predicted label)."""
    start, correct, loss, predicted = time.perf_counter(), 0, 0.0, {}
    cfg = dataclasses.replace(exp.cfg, eval_dtype="bfloat16" if bf16 else None)
    with torch.no_grad(), eval_precision(cfg):
        for rows, batch in indexed_batches(exp.data.test, exp.tokenizer, batch_size, by_length):
            labels = batch.pop("labels")
            logits = exp.model(**batch).logits.float()
            loss += float(F.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(-1) == labels).sum())
            predicted.update(zip(rows, logits.argmax(-1).tolist()))
    return time.perf_counter() - start, correct, loss, predicted


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="sst2")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--bf16", action="store_true", help="also length order in bf16 autocast")
    args = p.parse_args()
    torch.set_num_threads(1)
    exp = build(Config(dataset=args.dataset, num_clients=10, clients_per_round=2, rounds=1,
                       head_init="random", max_train_examples=200))
    exp.model.eval()
    print(f"{args.dataset}: {len(exp.data.test)} held-out examples, batch {args.batch_size}")
    ways = [("file order  ", False, False), ("length order", True, False)]
    ways += [("length, bf16", True, True)] if args.bf16 else []
    for _ in range(args.repeat):
        reference = None
        for label, by_length, bf16 in ways:
            seconds, correct, loss, predicted = score(exp, by_length, args.batch_size, bf16)
            reference = reference or predicted
            flipped = sum(predicted[r] != reference[r] for r in reference)
            print(f"  {label}: {seconds:6.1f} s, {correct} correct, summed loss {loss:.4f}, "
                  f"{flipped} predictions differ from file order's")


if __name__ == "__main__":
    main()
