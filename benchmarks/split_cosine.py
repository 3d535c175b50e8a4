"""Does splitting the units sharpen a round's update? Spry against FedFGD on one round.

    SPRY_DATA_DIR=../shared/data python benchmarks/split_cosine.py peft=tinylora
    SPRY_DATA_DIR=../shared/data python benchmarks/split_cosine.py peft=lora lora_b=0.01

M = clients_per_round (10) clients each take one forward-gradient step (one tangent a
batch) on their own first batch, from the same untrained model. FedFGD: every client
perturbs every adapter tensor and the server averages the M estimates. Spry: the units
are dealt out as the server deals them (spry.federation.assign_units, round 1), each
client perturbs only its units, and each unit's update is its one client's estimate.
Printed: the cosine of one client's estimate with its own batch's gradient (on the
tensors it perturbs), and of the round's combined update with the population gradient
(the mean autograd gradient of `ref_batches`=30 further batches from each client, none of
them seen by the estimates), over `draws`=200 draws; and the same two combinations of the
clients' exact gradients. The head is left out (recipe=spry trains it by its exact
gradient in both methods). Each client holds 800 of 8,000 SST-2 sentences.

The theory (Gaussian tangents, g_c client c's batch gradient, D weights, M clients):
FedFGD's combined update is the mean of M estimates over all D weights, per-coordinate
variance ~ |g_c|²/M. Spry's is, on each unit, its one client's estimate over the client's
share S, variance ~ |g_c,S|² ≈ |g_c|²/M when the gradient is spread evenly over the
units. So at equal client steps the tangent noise of the round's update is the same: a
split client's own estimate is about √M times sharper, and averaging M unsplit ones buys
the same back. On the data side the split is worse — each unit learns from one client's
batch, not M — which matters once the tangent noise is small. What the split saves is
each client's cost (tangents over its units only), not the round's variance.
"""

from __future__ import annotations

import math
import os
import sys

import torch

from spry.config import Config
from spry.data.batches import iterate_batches
from spry.estimators.autograd import backprop_gradient
from spry.estimators.forward_gradient import forward_gradient
from spry.experiment import build
from spry.federation.assign import assign_units
from spry.models import HEAD_UNIT, list_units
from spry.tasks.classifier import task_loss


def flat(grads: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([grads[n].flatten() for n in names])


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def main(argv: list[str]) -> None:
    settings = dict(model="all-minilm-l6-v2", dataset="sst2", num_clients=10,
                    clients_per_round=10, dirichlet_alpha=1.0, max_train_examples=8000,
                    max_test_examples=100, data_dir=os.environ.get("SPRY_DATA_DIR"))
    args = dict(a.split("=", 1) for a in argv)
    draws = int(args.pop("draws", "200"))
    lora_b = float(args.pop("lora_b", "0"))
    ref_batches = int(args.pop("ref_batches", "30"))
    cfg = Config.from_flat({**settings, **args})
    exp = build(cfg)
    exp.model.eval()  # no dropout: every estimate differentiates the same loss
    units = [u for u in list_units(exp.model) if u.name != HEAD_UNIT]
    live = dict(exp.model.named_parameters())
    with torch.no_grad():  # at B = 0 LoRA's A factors have no gradient at all
        for u in units:
            for n in u.params:
                if "lora_B" in n and lora_b:
                    live[n].normal_(0, lora_b, generator=torch.Generator().manual_seed(0))
    params = {n: live[n].detach() for u in units for n in u.params}
    names = sorted(params)
    m = cfg.clients_per_round
    clients = list(range(m))
    deal = assign_units([u.name for u in units], clients, server_round=1)
    unit_params = {u.name: u.params for u in units}
    losses, grads, reference = [], [], []
    for c in clients:
        batches = iter(iterate_batches(exp.data.clients[c].train, exp.tokenizer,
                                       cfg.batch_size, seed=c))
        losses.append(task_loss(exp.model, next(batches)))
        grads.append(backprop_gradient(losses[-1], params).grads)
        for _ in range(ref_batches):  # held out from the estimates: no self-agreement
            reference.append(backprop_gradient(task_loss(exp.model, next(batches)),
                                               params).grads)
    true = {n: sum(g[n] for g in reference) / len(reference) for n in names}
    exact_fedavg = {n: sum(g[n] for g in grads) / m for n in names}
    every = torch.stack([flat(g, names) for g in grads + reference])
    spread = float(((every - every.mean(0)) ** 2).sum(1).mean())
    snr = float(every.mean(0).norm() ** 2) / spread  # ≥ the population's: mean has noise too
    d = len(flat(true, names))
    shares = [sorted(n for u in deal[c] for n in unit_params[u]) for c in clients]
    d_share = sum(sum(params[n].numel() for n in s) for s in shares) / m
    print(f"peft={cfg.peft}: {len(units)} units, D={d} weights, M={m} clients, "
          f"a Spry client's share d={d_share:.0f} on average, {draws} draws; batch-gradient "
          f"signal to noise |mean|² / mean|g_b − mean|² over {len(every)} batches: {snr:.4f}")
    # The split with exact gradients (method=backprop_split): each unit from its one
    # client's batch, where FedFGD's update averages all M batches. Data noise only.
    exact_split = {n: torch.zeros_like(params[n]) for n in names}
    exact_split.update({n: grads[c][n] for c in clients for n in shares[c]})
    split_cos = cosine(flat(exact_split, names), flat(true, names))
    one_fgd, one_spry, round_fgd, round_spry = [], [], [], []
    for draw in range(draws):
        fgd = {n: torch.zeros_like(params[n]) for n in names}
        spry = {n: torch.zeros_like(params[n]) for n in names}
        for c in clients:
            seed = 1_000 * draw + c
            est = forward_gradient(losses[c], params, [seed]).grads
            one_fgd.append(cosine(flat(est, names), flat(grads[c], names)))
            for n in names:
                fgd[n] += est[n] / m
            share = shares[c]
            if share:
                est = forward_gradient(losses[c], {n: params[n] for n in share}, [seed]).grads
                one_spry.append(cosine(flat(est, share), flat(grads[c], share)))
                for n in share:
                    spry[n] += est[n]  # each unit has exactly one client (M <= units)
        round_fgd.append(cosine(flat(fgd, names), flat(true, names)))
        round_spry.append(cosine(flat(spry, names), flat(true, names)))
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    def sem(xs: list[float]) -> float:
        return math.sqrt(sum((x - mean(xs)) ** 2 for x in xs) / len(xs) / (len(xs) - 1))

    def both(a: list[float], b: list[float]) -> str:
        return f"{mean(a):.4f} ± {sem(a):.4f} | {mean(b):.4f} ± {sem(b):.4f}"

    print("| estimate (mean ± standard error) | FedFGD | Spry | Gaussian theory FedFGD / Spry |\n"
          "|---|---|---|---|")
    print(f"| one client's, with its batch's gradient on the tensors it perturbs | "
          f"{both(one_fgd, one_spry)} | {math.sqrt(1 / (d + 2)):.4f} / "
          f"{math.sqrt(1 / (d_share + 2)):.4f} |")
    print(f"| the round's combined update, with the population gradient | "
          f"{both(round_fgd, round_spry)} | equal (the docstring) |")
    print(f"| exact gradients combined the same way (FedAvg / backprop_split) | "
          f"{cosine(flat(exact_fedavg, names), flat(true, names)):.4f} | {split_cos:.4f} | |")

if __name__ == "__main__":
    main(sys.argv[1:])
