"""Every random number in a run comes from a seed derived here.

Seeds are derived, not drawn: `derive_seed(run_seed, "tangent", round, client, step, k)`
is a pure function, so a server can regenerate exactly the tangent a client used
(per-iteration mode) and a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Iterator

import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any tuple of ints and strings; stable across processes and hosts."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


@contextlib.contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """Run a block with the global RNG seeded, then restore it.

    Only for code we do not own that reads the global RNG: transformers/peft weight
    initialisation and dropout masks inside the model. Our own code takes a Generator.
    """
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def tangent_seed(round_seed: int, client_id: int, step: int, k: int) -> int:
    """The seed of tangent k at a client's step: client and server derive the same one
    (per-iteration communication rebuilds the client's tangents from it)."""
    return derive_seed(round_seed, "tangent", client_id, step, k)
