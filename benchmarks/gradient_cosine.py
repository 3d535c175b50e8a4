"""How far a forward gradient points along the true gradient, on a real model and data.

    SPRY_DATA_DIR=../shared/data python benchmarks/gradient_cosine.py peft=head
    SPRY_DATA_DIR=../shared/data python benchmarks/gradient_cosine.py peft=lora head=shared ks=1,8,32

For one batch of the first client's SST-2 data and the untrained model, prints the cosine
between the autograd gradient of the trainable weights and forward-gradient estimates
with K tangents (5 draws each), next to the theory for Gaussian tangents over d weights:
E|g~|^2 = |g|^2 (1 + (d + 1) / K), so the cosine is about sqrt(K / (K + d + 1)). This
is why K=1 needs on the order of d steps per unit to learn (docs/core.md).
`ks=1,8,32` picks the K values (default 1,8,32,128,512; with LoRA every tangent runs
through the whole encoder, so large K costs K tangent passes). `tangent_sharing=example`
draws one tangent per example (spry.estimators.example_tangents), `batch` one for the
batch; `draws=20` sets the draws per K; `lora_b=0.01` first gives every LoRA B factor
N(0, 0.01²) values (at B = 0 the A factors have no gradient at all). `guide=batch`
adds the guided tangent (spry.estimators.guided) along the exact gradient of the client's
next batch, a stand-in for an informative last update; `guide=random` along a random
direction (an uninformative one). `lora_factors=a tangent_space=inputs` trains the A
factors only (B frozen at random values) and draws their tangents in the span of each
example's inputs to the layer (biased; docs/learning.md). `only=lora_A` perturbs and
compares only the tensors whose names contain it (the head, trained by its exact gradient
in the default recipe, left out). Other key=value arguments go to the Config (e.g.
model=..., dataset=...).

    SPRY_DATA_DIR=../shared/data python benchmarks/gradient_cosine.py peft=lora ks=1,8 \
        draws=20 only=lora_A lora_factors=a tangent_space=inputs   # then =parameters

    SPRY_DATA_DIR=../shared/data python benchmarks/gradient_cosine.py peft=lora \
        ks=1,8 draws=20 lora_b=0.01 tangent_sharing=example
"""

from __future__ import annotations

import math
import os
import sys

import torch

from spry.tasks.classifier import classification_loss, task_loss
from spry.config import Config
from spry.data.batches import iterate_batches
from spry.estimators.autograd import backprop_gradient
from spry.estimators.example_tangents import example_forward_gradient
from spry.estimators.forward_gradient import forward_gradient
from spry.estimators.guided import guided_estimate
from spry.experiment import build


def flat(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([grads[n].flatten() for n in sorted(grads)])


def main(argv: list[str]) -> None:
    settings = dict(model="all-minilm-l6-v2", dataset="sst2", num_clients=4,
                    clients_per_round=4, dirichlet_alpha=1.0, max_train_examples=2000,
                    max_test_examples=100, data_dir=os.environ.get("SPRY_DATA_DIR"))
    args = dict(a.split("=", 1) for a in argv)
    ks = [int(k) for k in args.pop("ks", "1,8,32,128,512").split(",")]
    draws = int(args.pop("draws", "5"))
    lora_b = float(args.pop("lora_b", "0"))
    guide_kind = args.pop("guide", "none")
    only = args.pop("only", None)
    cfg = Config.from_flat({**settings, **args})
    exp = build(cfg)
    params = {n: p for n, p in exp.model.named_parameters() if p.requires_grad}
    with torch.no_grad():
        for n, p in params.items():
            if "lora_B" in n and lora_b:
                p.normal_(0, lora_b, generator=torch.Generator().manual_seed(0))
    if only is not None:  # e.g. only=lora_A: the tensors whose names contain it
        params = {n: p for n, p in params.items() if only in n}
    d = sum(p.numel() for p in params.values())
    batches = iter(iterate_batches(exp.data.clients[0].train, exp.tokenizer, cfg.batch_size,
                                   seed=0))
    batch = next(batches)
    exp.model.eval()  # no dropout: both estimators see the same loss
    loss_fn = task_loss(exp.model, batch)
    true = flat(backprop_gradient(loss_fn, params).grads)
    per_example = classification_loss(exp.model, batch, per_example=True)
    guide = None
    if guide_kind == "batch":
        guide = backprop_gradient(task_loss(exp.model, next(batches)), params).grads
    elif guide_kind == "random":
        g = torch.Generator().manual_seed(1)
        guide = {n: torch.randn(p.shape, generator=g) for n, p in params.items()}
    print(f"peft={cfg.peft}, tangent_sharing={cfg.tangent_sharing}, guide={guide_kind}: "
          f"{d} trainable weights")
    if guide is not None:
        u = flat(guide)
        print(f"cosine of the guide with the true gradient: {float(true @ u / (true.norm() * u.norm())):.4f}")
    print(f"| K | mean cosine ({draws} draws) | rms cosine | sqrt(K/(K+d+1)) |\n|---|---|---|---|")
    for k in ks:
        cos = []
        for draw in range(draws):
            seeds = [10_000 * draw + i for i in range(k)]
            if cfg.tangent_sharing == "example":
                span = ([n for n in params if ".lora_A." in n]
                        if cfg.tangent_space == "inputs" else ())
                est = example_forward_gradient(per_example, params, seeds, input_span=span,
                                               token_mask=batch["attention_mask"])
            else:
                est = forward_gradient(loss_fn, params, seeds)
            est = flat(guided_estimate(loss_fn, params, est, guide).grads)
            cos.append(float(true @ est / (true.norm() * est.norm())))
        rms = math.sqrt(sum(c * c for c in cos) / len(cos))
        print(f"| {k} | {sum(cos) / len(cos):.4f} | {rms:.4f} | {math.sqrt(k / (k + d + 1)):.4f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
