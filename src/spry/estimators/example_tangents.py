"""Forward gradients with one tangent per example (per-example weight perturbation).

A batch's loss is L = mean_i L_i, and example i only ever meets the weights through its
own rows of each layer's activations. So each example may see its own copy w_i = w with
its own tangent v_i: one forward pass with dual activations gives every d_i = ∇L_i·v_i,
and mean_i d_i v_i is an unbiased estimate of ∇L that averages B independent forward
gradients instead of one (Ren et al. 2023, "Scaling forward gradient with local losses",
independent perturbations per example). The price is nothing a shared tangent does not
pay: a linear layer's tangent output is ẋ Wᵀ + x V_iᵀ either way, computed per example.

How (K=1, or K>1 without the batch size): inside `torch.autograd.forward_ad`, every
`F.linear` whose weight (or bias) is one of `params` adds x_i V_iᵀ (+ v_b,i) to its
output's tangent, example by example; K tangents are K such passes. How (K>1, the batch
size given): the K passes share one primal pass, as `forward_gradient` does for shared
tangents. Each perturbed linear layer adds x_i E_iᵀ (+ e_i) for a per-example offset E
whose value is zero, so the output is unchanged and the offset's tangent V_i is example i's
weight tangent; `torch.func.jvp` over the offsets, `vmap`ped over the K tangents, computes
the primal once and the K tangent streams batched. Either way every tensor in `params`
must be the weight or bias of a linear layer (LoRA A/B, a linear head), or enter one
through `torch.einsum` as an operand (TinyLoRA: R = Σ_j v_j P_j, then x Rᵀ): einsum is
linear in each operand, so example i's tangent of R is the same einsum of its v_i, and
the layer adds x_i Ṙ_iᵀ. `ExampleTangentError` says which tensor is neither.
"""

from __future__ import annotations

import logging
from typing import Callable, Collection, Mapping, Sequence

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.func import jvp, vmap
from torch.overrides import TorchFunctionMode

from spry.estimators.base import Estimate, in_chunks
from spry.estimators.lean_jvp import lean_forward_ad
from spry.seeds import derive_seed, generator

log = logging.getLogger(__name__)

ExampleLossFn = Callable[[Mapping[str, torch.Tensor]], torch.Tensor]
"""Maps parameter values to the batch's per-example losses, shape (B,)."""


class ExampleTangentError(ValueError):
    """A perturbed tensor is not the weight or bias of a linear layer."""


def example_tangent(seed: int, name: str, batch_size: int, shape, dtype, device
                    ) -> torch.Tensor:
    """The (B, *shape) per-example tangents of one tensor: N(0, I), from (seed, name)."""
    g = generator(derive_seed(seed, "example-tangent", name), device)
    return torch.randn((batch_size, *shape), generator=g, dtype=dtype, device=device)


def input_span_tangent(seed: int, name: str, x: torch.Tensor, rows: int,
                       token_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, rows, d_in) tangents of a weight whose input is x (B, ..., d_in), each example's
    drawn in the span of its own inputs: V_i = Ξ_i X_i, Ξ_i ~ N(0, 1) over its real tokens
    (token_mask), scaled so that E|V_i|² = rows · d_in, a Gaussian tangent's. A linear
    weight's gradient is Σ_t δ_t x_tᵀ, so its rows lie in that span."""
    tokens = x.reshape(x.shape[0], -1, x.shape[-1])  # (B, T, d_in)
    g = generator(derive_seed(seed, "input-span-tangent", name), x.device)
    xi = torch.randn((tokens.shape[0], rows, tokens.shape[1]), generator=g, dtype=x.dtype,
                     device=x.device)
    energy = tokens.pow(2).sum(-1)  # (B, T): |x_t|²
    if token_mask is not None and token_mask.shape == energy.shape:
        mask = token_mask.to(x.dtype)
        xi, energy = xi * mask[:, None, :], energy * mask
    scale = (tokens.shape[-1] / energy.sum(-1).clamp_min(1e-12)).sqrt()  # (B,)
    return torch.einsum("brt,bti->bri", xi, tokens) * scale[:, None, None]


def _batched_equation(equation: str, position: int) -> str | None:
    """einsum's equation with an example index leading operand `position` and the output
    ("i,ijk->jk", 0 -> "Zi,ijk->Zjk"); None for an implicit output (not handled)."""
    equation = equation.replace(" ", "")
    if "->" not in equation:
        return None
    inputs, output = equation.split("->")
    letter = next(c for c in "ZYXWVUTSRQPONMLKJIHGFEDCBA" if c not in equation)
    operands = inputs.split(",")
    operands[position] = letter + operands[position]
    return ",".join(operands) + "->" + letter + output


class _PerturbedLinears(TorchFunctionMode):
    """Finds the linear layers whose weight or bias is a perturbed tensor, or was made from
    one by `torch.einsum` (a derived weight), and adds x_i W_iᵀ (+ b_i) to their outputs;
    subclasses say what the per-example values W_i are (`per_example`: tangents or zero
    offsets) and how the term joins the output (`add`)."""

    def __init__(self, params: Mapping[str, torch.Tensor]):
        super().__init__()
        self.names = {id(t): n for n, t in params.items()}
        # id(derived tensor) -> (the tensor, kept so its id is not reused; the perturbed
        # tensor's name; the einsum that maps its per-example values to the derived ones').
        self.derived: dict[int, tuple[torch.Tensor, str, Callable]] = {}

    def per_example(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """(B, *shape) per-example values of the perturbed tensor `name` (x: the layer input)."""
        raise NotImplementedError

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is torch.einsum:
            self._note_einsum(args, out)
            return out
        if func is not F.linear:
            return out
        x, weight, *rest = args
        bias = rest[0] if rest else kwargs.get("bias")
        x = self.layer_input(x)
        terms = [self._per_example_value(t, x) for t in (weight, bias)]
        if terms == [None, None]:
            return out
        return self.add(out, _per_example_term(x, *terms))

    def layer_input(self, x: torch.Tensor) -> torch.Tensor:
        """The x of x_i W_iᵀ."""
        return x

    def add(self, out: torch.Tensor, term: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _per_example_value(self, tensor, x):
        if tensor is None:
            return None
        if id(tensor) in self.names:
            return self.per_example(self.names[id(tensor)], x)
        if id(tensor) in self.derived:
            _, name, fan_out = self.derived[id(tensor)]
            return fan_out(self.per_example(name, x))
        return None

    def _note_einsum(self, args, out):
        equation, *operands = args
        if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
            operands = list(operands[0])
        hits = [i for i, t in enumerate(operands) if id(t) in self.names]
        batched = _batched_equation(equation, hits[0]) if len(hits) == 1 else None
        if batched is None:
            return  # the tensor is then never met as a weight: _check_used names it

        def fan_out(values, i=hits[0], rest=tuple(operands)):
            return torch.einsum(batched, *rest[:i], values, *rest[i + 1:])

        self.derived[id(out)] = (out, self.names[id(operands[hits[0]])], fan_out)


class _ExampleTangents(_PerturbedLinears):
    """Adds each example's weight tangent to the tangent of the linear layers' outputs."""

    def __init__(self, params: Mapping[str, torch.Tensor], seed: int,
                 input_span: Collection[str] = (), token_mask: torch.Tensor | None = None):
        super().__init__(params)
        self.params, self.seed = params, seed
        self.input_span, self.token_mask = set(input_span), token_mask
        self.tangents: dict[str, torch.Tensor] = {}

    def tangent(self, name: str, x: torch.Tensor) -> torch.Tensor:
        if name not in self.tangents:
            p = self.params[name]
            if name in self.input_span:
                self.tangents[name] = input_span_tangent(self.seed, name, x, p.shape[0],
                                                         self.token_mask)
            else:
                self.tangents[name] = example_tangent(self.seed, name, x.shape[0], p.shape,
                                                      p.dtype, p.device)
        return self.tangents[name]

    def layer_input(self, x):
        return fwAD.unpack_dual(x).primal  # the term is a tangent: x's own tangent is apart

    def per_example(self, name, x):
        return self.tangent(name, x)

    def add(self, out, term):
        primal, tangent = fwAD.unpack_dual(out)
        return fwAD.make_dual(primal, term if tangent is None else tangent + term)


def _per_example_term(x: torch.Tensor, weight: torch.Tensor | None,
                      bias: torch.Tensor | None):
    """x_i W_iᵀ (+ b_i) for each example i: what per-example (B, out, in) weight and (B, out)
    bias values add to a linear layer's output; 0 with neither."""
    term = 0
    if weight is not None:
        term = torch.einsum("b...i,boi->b...o", x, weight)
    if bias is not None:
        term = term + bias.view(bias.shape[0], *([1] * (x.dim() - 2)), bias.shape[-1])
    return term


class _ExampleOffsets(_PerturbedLinears):
    """Adds x_i E_iᵀ (+ e_i) to each perturbed linear layer's output, E the (zero) offsets."""

    def __init__(self, params: Mapping[str, torch.Tensor], offsets: Mapping[str, torch.Tensor]):
        super().__init__(params)
        self.offsets = offsets
        self.used: set[str] = set()

    def per_example(self, name, x):
        self.used.add(name)
        return self.offsets[name]

    def add(self, out, term):
        return out + term


def _check_used(primals: Mapping[str, torch.Tensor], used) -> None:
    unused = sorted(set(primals) - set(used))
    if unused:
        raise ExampleTangentError(
            f"per-example tangents: {unused} are not the weight or bias of a linear layer "
            "reached by the forward pass; set tangent_sharing=batch")


def example_forward_gradient(loss_fn: ExampleLossFn, params: Mapping[str, torch.Tensor],
                             tangent_seeds: Sequence[int], batch_size: int | None = None,
                             capture: dict | None = None, chunk: int | None = None,
                             input_span: Collection[str] = (),
                             token_mask: torch.Tensor | None = None,
                             tangent_dtype: str | None = None) -> Estimate:
    """Unbiased ∇L from K forward passes' worth of tangents, B per-example tangents each.

    No backward; memory ≈ one forward plus its tangents and B copies of `params`' shapes
    (K of each when the K passes are batched). `scalars` lists the K·B directional
    derivatives d_{k,i}, k-major. With no `params` it runs one plain forward (the caller may
    still read what `loss_fn` captured). K > 1 with `batch_size` (the loss's length): one
    primal pass for all K (dropout masks then shared by the K tangents, as in
    `forward_gradient`); `capture` is the dict `loss_fn` writes into, whose values are
    handed out of the transforms. If vmap cannot batch the model, the K passes run one
    after another with the same tangents: the same estimate, K primal passes. `chunk`
    (tangent_chunk): at most this many of the K per primal pass (None: all K).
    `input_span` (tangent_space=inputs): the tensors whose tangents are drawn in the span
    of their layer's inputs (`input_span_tangent`, over `token_mask`'s real tokens), which
    makes the estimate biased (a preconditioned gradient); they need the K passes one by
    one, since their tangents exist only once the layer's input does. `tangent_dtype`:
    the dtype of the tangent matmuls (`lean_forward_ad`); None: exact.
    """
    if len(tangent_seeds) < 1:
        raise ValueError("example_forward_gradient needs at least one tangent seed (K >= 1)")
    primals = {n: params[n].detach() for n in sorted(params)}
    if not primals:
        with torch.no_grad():
            return Estimate(loss=float(loss_fn(primals).mean()), grads={})
    if input_span:
        return sequential_example_forward_gradient(loss_fn, primals, tangent_seeds,
                                                   input_span, token_mask, tangent_dtype)
    return in_chunks(lambda seeds: _example_forward_gradient(loss_fn, primals, seeds,
                                                             batch_size, capture, tangent_dtype),
                     tangent_seeds, chunk)


def _example_forward_gradient(loss_fn: ExampleLossFn, primals: Mapping[str, torch.Tensor],
                              tangent_seeds: Sequence[int], batch_size: int | None,
                              capture: dict | None, tangent_dtype: str | None) -> Estimate:
    if len(tangent_seeds) > 1 and batch_size is not None:
        try:
            return batched_example_forward_gradient(loss_fn, primals, tangent_seeds,
                                                    batch_size, capture, tangent_dtype)
        except ExampleTangentError:
            raise
        except (RuntimeError, NotImplementedError) as exc:
            log.warning("example_forward_gradient: vmap over %d tangents failed (%s: %s); "
                        "running them one at a time", len(tangent_seeds),
                        type(exc).__name__, str(exc).splitlines()[0][:200])
            if capture is not None:
                capture.clear()
    return sequential_example_forward_gradient(loss_fn, primals, tangent_seeds,
                                               tangent_dtype=tangent_dtype)


def batched_example_forward_gradient(loss_fn: ExampleLossFn, primals: Mapping[str, torch.Tensor],
                                     tangent_seeds: Sequence[int], batch_size: int,
                                     capture: dict | None = None,
                                     tangent_dtype: str | None = None) -> Estimate:
    """All K passes' per-example tangents in one vmapped jvp over zero offsets."""
    k = len(tangent_seeds)
    tangents = {n: torch.stack([example_tangent(s, n, batch_size, p.shape, p.dtype, p.device)
                                for s in tangent_seeds]) for n, p in primals.items()}
    zeros = {n: torch.zeros_like(v[0]) for n, v in tangents.items()}
    used: set[str] = set()

    def with_offsets(offsets):
        mode = _ExampleOffsets(primals, offsets)
        with mode:
            losses = loss_fn(primals)
        used.update(mode.used)
        # What loss_fn captured lives inside the transforms: hand it out as aux.
        aux = dict(capture) if capture is not None else {}
        if capture is not None:
            capture.clear()
        return losses, aux

    def one(v):
        return jvp(with_offsets, (zeros,), (v,), has_aux=True)

    with torch.no_grad(), lean_forward_ad(tangent_dtype):
        losses, d, aux = vmap(one, randomness="same")(tangents)
    _check_used(primals, used)
    if capture is not None:
        capture.update({name: value[0] for name, value in aux.items()})
    d = d.to(next(iter(tangents.values())).dtype)
    grads = {n: torch.tensordot(d, v, dims=2).div_(batch_size * k) for n, v in tangents.items()}
    return Estimate(loss=float(losses.mean()), grads=grads,
                    scalars=[float(x) for x in d.flatten()])


def sequential_example_forward_gradient(loss_fn: ExampleLossFn,
                                        primals: Mapping[str, torch.Tensor],
                                        tangent_seeds: Sequence[int],
                                        input_span: Collection[str] = (),
                                        token_mask: torch.Tensor | None = None,
                                        tangent_dtype: str | None = None) -> Estimate:
    """K forward passes with dual activations, one per seed, one alive at a time."""
    k = len(tangent_seeds)
    grads = {n: torch.zeros_like(t) for n, t in primals.items()}
    scalars: list[float] = []
    loss_sum = 0.0
    for seed in tangent_seeds:
        mode = _ExampleTangents(primals, seed, input_span, token_mask)
        with torch.no_grad(), fwAD.dual_level(), lean_forward_ad(tangent_dtype), mode:
            losses = loss_fn(primals)
            primal, d = fwAD.unpack_dual(losses)
        _check_used(primals, mode.tangents)
        if d is None:
            d = torch.zeros_like(primal)
        batch = primal.shape[0]
        for n, v in mode.tangents.items():
            grads[n].add_(torch.tensordot(d.to(v.dtype), v, dims=1), alpha=1.0 / (batch * k))
        scalars += [float(x) for x in d]
        loss_sum += float(primal.mean())
    return Estimate(loss=loss_sum / k, grads=grads, scalars=scalars)
