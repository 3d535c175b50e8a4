"""Evaluation in file order against length order (issue 20): one held-out split scored by
the classifier head both ways, in one process, interleaved.

    SPRY_DATA_DIR=../shared/data python benchmarks/eval_order.py [--dataset sst2] [--repeat 2]

Prints each order's seconds, its correct count and summed loss (the same, up to float32
rounding of the sum). MiniLM, one thread, eval_batch_size 64 unless --batch-size.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from spry.config import Config
from spry.data.batches import indexed_batches
from spry.experiment import build


def score(exp, by_length: bool, batch_size: int) -> tuple[float, int, float]:
    start, correct, loss = time.perf_counter(), 0, 0.0
    with torch.no_grad():
        for _, batch in indexed_batches(exp.data.test, exp.tokenizer, batch_size, by_length):
            labels = batch.pop("labels")
            logits = exp.model(**batch).logits.float()
            loss += float(F.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(-1) == labels).sum())
    return time.perf_counter() - start, correct, loss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="sst2")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(1)
    exp = build(Config(dataset=args.dataset, num_clients=10, clients_per_round=2, rounds=1,
                       head_init="random", max_train_examples=200))
    exp.model.eval()
    print(f"{args.dataset}: {len(exp.data.test)} held-out examples, batch {args.batch_size}")
    for _ in range(args.repeat):
        for by_length in (False, True):
            seconds, correct, loss = score(exp, by_length, args.batch_size)
            print(f"  {'length order' if by_length else 'file order  '}: {seconds:6.1f} s, "
                  f"{correct} correct, summed loss {loss:.4f}")


if __name__ == "__main__":
    main()
