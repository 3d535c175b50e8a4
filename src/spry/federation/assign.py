"""Deal the trainable units out among the clients of a round (Spry, Sec. 3.1)."""

from __future__ import annotations

from typing import Sequence

import torch

from spry.seeds import generator


def assign_units(
    units: Sequence[str],
    clients: Sequence[int],
    server_round: int,
    policy: str = "rotating",
    shared: Sequence[str] = (),
    seed: int = 0,
    replicas: int = 1,
) -> dict[int, list[str]]:
    """Map each sampled client to the units it trains this round.

    `units` are in network order (shallow to deep). With M clients and L units:
    - M <= L: unit i goes to client (i + offset) mod M, so each client gets floor(L/M) or
      ceil(L/M) units spread across depth, and each unit goes to exactly one client.
    - M > L: client j gets unit (j + offset) mod L, so each client has one unit and each
      unit has floor(M/L) or ceil(M/L) clients.
    The offset is the round for `rotating` (over rounds every client trains every part
    of the network), 0 for `static` (the authors' fixed mapping). `random` deals a fresh
    random permutation of the units each round. `contiguous` (M <= L) cuts the units into
    M blocks of neighbouring units, floor(L/M) or ceil(L/M) each, block b to client
    (b + round) mod M: a client's forward-gradient step then costs only the layers from
    its block up. `shared` units (the head with `head=shared`) go to every client on top
    of its share.

    `replicas` r > 1 deals every split unit to r clients: the union of r deals whose
    offsets lie floor(min(M, L) / r) apart, so a unit's copies land on r different clients
    (M <= L) and a client's extra units are r different ones (M > L). The server averages
    each unit over the clients that trained it (aggregate_units), so r interpolates
    between the paper's split (1) and every client on every unit (r = M = L).
    """
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    if not clients:
        raise ValueError("assign_units needs at least one client")
    split = [u for u in units if u not in set(shared)]
    if policy == "random":
        order = torch.randperm(len(split), generator=generator(seed)).tolist()
        split, offset = [split[i] for i in order], 0
    elif policy in ("rotating", "contiguous"):
        offset = server_round
    elif policy == "static":
        offset = 0
    else:
        raise ValueError(f"unknown assignment policy {policy!r}")

    m, n_units = len(clients), len(split)
    if n_units and replicas > min(m, n_units):
        raise ValueError(f"replicas={replicas} is more than min(clients, units) = "
                         f"{min(m, n_units)}: some unit would go twice to one client")
    deal: dict[int, list[str]] = {c: [] for c in clients}
    for copy in range(replicas if n_units else 0):
        shift = offset + copy * (min(m, n_units) // replicas)
        if m <= n_units and policy == "contiguous":
            for i, unit in enumerate(split):  # unit i lies in block floor(i·M/L)
                deal[clients[(i * m // n_units + shift) % m]].append(unit)
        elif m <= n_units:
            for i, unit in enumerate(split):
                deal[clients[(i + shift) % m]].append(unit)
        else:
            for j, client in enumerate(clients):
                deal[client].append(split[(j + shift) % n_units])
    for client in clients:
        deal[client].extend(shared)
    # Keep network order inside a client's share.
    rank = {u: i for i, u in enumerate(units)}
    return {c: sorted(us, key=rank.__getitem__) for c, us in deal.items()}
