"""Unit assignment, aggregation and server optimizers against hand computations."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from spry.config import Config
from spry.federation import ServerOptimizer, aggregate_units, assign_units

UNITS = [f"u{i}" for i in range(7)]


def _owners(deal):
    owners = Counter()
    for units in deal.values():
        owners.update(units)
    return owners


@pytest.mark.parametrize("m", [1, 3, 7])
def test_m_at_most_l_each_unit_to_exactly_one_client(m):
    clients = list(range(10, 10 + m))
    for r in range(1, 6):
        deal = assign_units(UNITS, clients, r)
        assert set(deal) == set(clients)
        assert _owners(deal) == Counter(UNITS)  # every unit once
        sizes = sorted(len(v) for v in deal.values())
        assert sizes[0] == len(UNITS) // m and sizes[-1] == math.ceil(len(UNITS) / m)


def test_m_at_most_l_units_spread_across_depth():
    deal = assign_units(UNITS, [0, 1, 2], server_round=0)
    assert deal == {0: ["u0", "u3", "u6"], 1: ["u1", "u4"], 2: ["u2", "u5"]}


@pytest.mark.parametrize("m", [8, 14, 17])
def test_m_more_than_l_one_unit_each_and_balanced(m):
    for r in range(4):
        deal = assign_units(UNITS, list(range(m)), r)
        assert all(len(v) == 1 for v in deal.values())
        counts = _owners(deal)
        assert set(counts) == set(UNITS)
        assert min(counts.values()) == m // len(UNITS)
        assert max(counts.values()) == math.ceil(m / len(UNITS))


def test_rotating_deal_visits_every_unit_static_does_not():
    clients = [0, 1, 2]
    seen_rotating = {c: set() for c in clients}
    seen_static = {c: set() for c in clients}
    for r in range(len(UNITS)):
        for c, us in assign_units(UNITS, clients, r, policy="rotating").items():
            seen_rotating[c].update(us)
        for c, us in assign_units(UNITS, clients, r, policy="static").items():
            seen_static[c].update(us)
    assert all(s == set(UNITS) for s in seen_rotating.values())
    assert all(len(s) < len(UNITS) for s in seen_static.values())
    assert assign_units(UNITS, clients, 1, "static") == assign_units(UNITS, clients, 5, "static")


def test_random_deal_is_seeded_and_still_a_partition():
    a = assign_units(UNITS, [0, 1, 2], 1, policy="random", seed=3)
    assert a == assign_units(UNITS, [0, 1, 2], 1, policy="random", seed=3)
    assert _owners(a) == Counter(UNITS)
    draws = {tuple(map(tuple, assign_units(UNITS, [0, 1, 2], 1, "random", seed=s).values()))
             for s in range(6)}
    assert len(draws) > 1


def test_shared_head_goes_to_every_client():
    units = UNITS + ["head"]
    deal = assign_units(units, [0, 1, 2], 2, shared=["head"])
    assert all(us[-1] == "head" for us in deal.values())
    assert _owners(deal)["head"] == 3
    assert _owners(deal) - Counter({"head": 3}) == Counter(UNITS)


def test_aggregate_is_example_weighted_per_unit_and_untrained_units_keep_value():
    current = {"a": torch.zeros(2), "b": torch.ones(2), "c": torch.full((2,), 5.0)}
    updates = [({"a": torch.tensor([1.0, 2.0])}, 1),
               ({"a": torch.tensor([4.0, 8.0]), "b": torch.tensor([3.0, 3.0])}, 3),
               ({"b": torch.tensor([100.0, 100.0])}, 0)]  # no examples: no weight
    out = aggregate_units(current, updates)
    torch.testing.assert_close(out["a"], torch.tensor([(1 + 12) / 4, (2 + 24) / 4]))
    torch.testing.assert_close(out["b"], torch.tensor([3.0, 3.0]))
    torch.testing.assert_close(out["c"], current["c"])  # nobody trained it


def test_aggregate_rejects_unknown_tensor():
    with pytest.raises(KeyError):
        aggregate_units({"a": torch.zeros(1)}, [({"zz": torch.zeros(1)}, 1)])


def test_fedyogi_two_steps_by_hand():
    opt = ServerOptimizer("fedyogi", lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    x0 = {"w": torch.tensor([1.0, -2.0], dtype=torch.float64)}
    agg1 = {"w": torch.tensor([1.5, -2.0], dtype=torch.float64)}
    x1 = opt.step(x0, agg1, {"w"})
    # Δ = (0.5, 0); m = 0.1Δ; v = τ² − 0.01 Δ² sign(τ² − Δ²)
    d = torch.tensor([0.5, 0.0], dtype=torch.float64)
    m = 0.1 * d
    v = 1e-6 - 0.01 * d**2 * torch.sign(1e-6 - d**2)
    torch.testing.assert_close(x1["w"], x0["w"] + 0.1 * m / (v.sqrt() + 1e-3))
    agg2 = {"w": x1["w"] - 0.2}
    x2 = opt.step(x1, agg2, {"w"})
    d2 = torch.full((2,), -0.2, dtype=torch.float64)
    m = 0.9 * m + 0.1 * d2
    v = v - 0.01 * d2**2 * torch.sign(v - d2**2)
    torch.testing.assert_close(x2["w"], x1["w"] + 0.1 * m / (v.sqrt() + 1e-3))


def test_fedadam_and_fedavg_by_hand_and_untrained_state_untouched():
    adam = ServerOptimizer("fedadam", lr=0.5, beta1=0.5, beta2=0.75, tau=0.1)
    x = {"w": torch.tensor([0.0]), "u": torch.tensor([3.0])}
    out = adam.step(x, {"w": torch.tensor([2.0]), "u": torch.tensor([9.0])}, {"w"})
    m, v = 0.5 * 2.0, 0.75 * 0.01 + 0.25 * 4.0
    assert out["w"].item() == pytest.approx(0.5 * m / (math.sqrt(v) + 0.1))
    assert out["u"].item() == 3.0 and "u" not in adam.m  # not trained: no step, no state
    avg = ServerOptimizer("fedavg", lr=1.0)
    assert avg.step(x, {"w": torch.tensor([2.0]), "u": x["u"]}, {"w"})["w"].item() == 2.0


def test_fedavgm_steps_along_the_moving_average_of_the_rounds_updates():
    """m ← β m + (1−β) Δ, x ← x + η m: two rounds by hand; a steady Δ is stepped in full
    once the average has caught up, and a flipping Δ (noise) mostly cancels."""
    opt = ServerOptimizer("fedavgm", lr=1.0, beta1=0.5)
    x = {"w": torch.tensor([0.0])}
    x1 = opt.step(x, {"w": torch.tensor([2.0])}, {"w"})
    assert x1["w"].item() == pytest.approx(0.5 * 2.0)
    x2 = opt.step(x1, {"w": x1["w"] - 4.0}, {"w"})  # Δ = −4: m = 0.5·1 + 0.5·(−4)
    assert x2["w"].item() == pytest.approx(1.0 + (0.5 * 1.0 - 2.0))
    steady, flip = ServerOptimizer("fedavgm", lr=1.0, beta1=0.9), ServerOptimizer(
        "fedavgm", lr=1.0, beta1=0.9)
    for r in range(100):
        a = steady.step({"w": torch.tensor([0.0])}, {"w": torch.tensor([1.0])}, {"w"})
        b = flip.step({"w": torch.tensor([0.0])}, {"w": torch.tensor([(-1.0) ** r])}, {"w"})
    assert a["w"].item() == pytest.approx(1.0, abs=1e-4) and abs(b["w"].item()) < 0.06
    assert Config(server_optimizer="fedavgm").server_lr == 1.0 and not steady.v  # no 2nd moment


def test_contiguous_deal_gives_each_client_neighbouring_units_and_rotates():
    units = [f"layer{i}" for i in range(12)] + ["head"]
    clients = [3, 5, 8]
    seen = {c: set() for c in clients}
    for r in range(6):
        deal = assign_units(units, clients, r, policy="contiguous", shared=["head"])
        dealt = [u for us in deal.values() for u in us if u != "head"]
        assert sorted(dealt) == sorted(units[:-1])  # every unit once
        for c, us in deal.items():
            idx = [units.index(u) for u in us if u != "head"]
            assert idx == list(range(idx[0], idx[0] + 4))  # one block of neighbours
            assert "head" in us
            seen[c].update(us)
    assert all(s == set(units) for s in seen.values())  # the blocks rotate


@pytest.mark.parametrize("policy", ["rotating", "static", "random", "contiguous"])
@pytest.mark.parametrize("m, n_units, r", [(10, 12, 2), (10, 12, 10), (5, 12, 3), (8, 3, 2)])
def test_replicated_deal_gives_each_unit_r_distinct_clients(policy, m, n_units, r):
    units = [f"layer{i}" for i in range(n_units)] + ["head"]
    clients = list(range(100, 100 + m))
    single = assign_units(units, clients, 4, policy=policy, shared=["head"], seed=7)
    deal = assign_units(units, clients, 4, policy=policy, shared=["head"], seed=7, replicas=r)
    owners = Counter(u for us in deal.values() for u in us)
    base = Counter(u for us in single.values() for u in us)
    assert owners["head"] == m
    for u in units[:-1]:
        # r copies on top of what the single deal gives (M > L: floor(M/L) or more)
        assert owners[u] == r * base[u] if m <= n_units else owners[u] >= r
    assert sum(owners[u] for u in units[:-1]) == r * sum(base[u] for u in units[:-1])
    for c, us in deal.items():
        assert len(us) == len(set(us))  # no unit twice on one client
        assert set(single[c]) <= set(us)  # the first copy is the single deal
    if m == n_units - 2 and r == m:  # every client every unit: FedFGD's coverage
        assert all(set(us) == set(units) for us in deal.values())


def test_replicas_beyond_the_clients_or_units_are_refused():
    with pytest.raises(ValueError, match="replicas=4"):
        assign_units(["a", "b", "c"], [0, 1, 2, 3, 4], 0, replicas=4)
    with pytest.raises(ValueError, match="replicas must be >= 1"):
        assign_units(["a"], [0], 0, replicas=0)
