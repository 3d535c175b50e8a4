"""Split a labelled pool into non-IID clients.

Each client's label mix is drawn from Dirichlet(α · prior) and its examples are sampled
without replacement (Hsu et al. 2019, "Measuring the Effects of Non-Identical Data
Distribution"; the scheme FedNLP and Spry use). α = 0.1 gives clients dominated by one
or two labels, α = 1.0 near-homogeneous mixes. Every client gets the same number of
examples, so no client is left empty unless there are fewer examples than clients.
"""

from __future__ import annotations

import torch

from spry.seeds import generator


class PartitionError(ValueError):
    pass


def dirichlet_partition(labels: list[int], num_clients: int, alpha: float, seed: int,
                        num_labels: int | None = None) -> list[list[int]]:
    """Indices of `labels` for each client; disjoint; reproducible from `seed`."""
    n = len(labels)
    size = n // num_clients
    if size < 2:
        raise PartitionError(
            f"num_clients: {num_clients} clients for {n} examples leaves a client with "
            f"{size} example(s); each needs at least 2 (one to train, one to test): lower "
            "num_clients or raise max_train_examples")
    g = generator(seed)
    k = num_labels or (max(labels) + 1)
    pools = [[] for _ in range(k)]
    for index in torch.randperm(n, generator=g).tolist():
        pools[labels[index]].append(index)
    remaining = torch.tensor([len(p) for p in pools], dtype=torch.float64)
    prior = remaining / remaining.sum()
    concentration = (alpha * prior).clamp_min(1e-12)

    clients: list[list[int]] = []
    for _ in range(num_clients):
        mix = _dirichlet(concentration, g)
        chosen: list[int] = []
        for _ in range(size):
            # Labels that ran out are dropped and the mix renormalised over the rest.
            p = mix * (remaining > 0)
            if p.sum() <= 0:
                p = (remaining > 0).double()
            label = int(torch.multinomial(p, 1, generator=g))
            chosen.append(pools[label].pop())
            remaining[label] -= 1
        clients.append(sorted(chosen))
    return clients


def natural_partition(groups: list[str], num_clients: int, column: str) -> list[list[int]]:
    """Indices of each distinct value of `groups` (a user, a site): one client each, the
    values in sorted order (numbers by value), as Flower Datasets' NaturalIdPartitioner
    and LEAF's data sets partition by who wrote the example. A client of one example
    trains on it and has no local test split (train_test_split keeps one to train)."""
    members: dict[str, list[int]] = {}
    for index, value in enumerate(groups):
        members.setdefault(value, []).append(index)
    numeric = all(v.lstrip("-").isdigit() for v in members)
    values = sorted(members, key=int if numeric else None)
    if len(values) != num_clients:
        raise PartitionError(f"num_clients: partition_by={column} gives {len(values)} clients "
                             f"(the distinct values of column {column!r}), not {num_clients}; "
                             f"set num_clients={len(values)}")
    return [members[v] for v in values]


def _dirichlet(concentration: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Dirichlet sample from normalised Gamma draws, with an explicit Generator.

    torch's Gamma sampler takes no Generator, so draw Gamma(a, 1) as
    Gamma(a + 1, 1) · U^(1/a) (Marsaglia & Tsang's boost) with Gamma(a + 1) from the
    Marsaglia–Tsang squeeze, which needs only normals and uniforms.
    """
    a = concentration + 1.0
    d = a - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.empty_like(a)
    todo = torch.ones_like(a, dtype=torch.bool)
    while todo.any():
        x = torch.randn(a.shape, generator=g, dtype=a.dtype)
        u = torch.rand(a.shape, generator=g, dtype=a.dtype)
        v = (1 + c * x) ** 3
        ok = (v > 0) & (torch.log(u.clamp_min(1e-300)) < 0.5 * x * x + d - d * v
                        + d * torch.log(v.clamp_min(1e-300)))
        take = ok & todo
        out[take] = (d * v)[take]
        todo &= ~ok
    # In log space: with α ≪ 1 the boost U^(1/α) underflows to 0 in linear space.
    u = torch.rand(a.shape, generator=g, dtype=a.dtype).clamp_min(1e-300)
    return torch.softmax(torch.log(out) + torch.log(u) / concentration, dim=0)


def train_test_split(indices: list[int], test_fraction: float, seed: int
                     ) -> tuple[list[int], list[int]]:
    """A client's own split; at least one training example, test may be empty."""
    order = torch.randperm(len(indices), generator=generator(seed)).tolist()
    n_test = min(int(round(len(indices) * test_fraction)), len(indices) - 1)
    test = sorted(indices[i] for i in order[:n_test])
    train = sorted(indices[i] for i in order[n_test:])
    return train, test
