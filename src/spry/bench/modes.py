"""The bench's modes, read from the methods table, and the row each mode's run reports."""

from __future__ import annotations

from dataclasses import dataclass, field

from spry.methods import METHODS

# A mode is named after the method= it runs; this suffix marks the mode that trains one
# client's share of the units (client 0 of `clients_per_round`) instead of all of them.
SHARE = "_share"


def _runs(mode: str) -> tuple[str, str]:
    """(method= the mode runs, which units it trains) for a mode the methods table names."""
    method = mode.removesuffix(SHARE)
    assert method in METHODS, f"bench mode {mode!r} names no method"
    return method, "share" if mode.endswith(SHARE) else "all"


# Every mode some method is measured by (Method.bench_modes), in the table's order, a
# method's all-units mode before its share.
_MEASURED = {mode: _runs(mode) for method in METHODS.values()
             for mode in sorted(method.bench_modes, key=lambda m: m.endswith(SHARE))}
# mode -> (method= it measures, which units it trains). First the two the ratios divide by
# (spry.bench.report): no-grad inference (no method, trains nothing), then backprop.
MODES: dict[str, tuple[str | None, str]] = {
    "inference": (None, "none"), "backprop": _MEASURED["backprop"], **_MEASURED}
# Modes at another K that `spry bench` runs by default: Spry at K=10, whose step time a
# target bounds (spry.bench.report.TARGETS).
DEFAULT_K_RUNS = ("spry:10",)


def mode_config(mode: str, overrides: list[str], config: str | None = None):
    """The Config a mode's child runs: the overrides, then the mode's method= and K. The
    parent builds it for every mode before the first child starts, so a setting one mode
    cannot take (say tangent_dtype with backprop) is refused before any work."""
    from spry.config import Config

    name, k = parse_mode(mode)
    method = MODES[name][0]
    return Config.from_yaml(config, [*overrides, *([f"method={method}"] if method else []),
                                     f"tangents={k}"])


@dataclass
class ModeResult:
    mode: str
    method: str | None
    tangents: int
    allocator: str
    available: bool = True
    error: str | None = None
    trained_params: int = 0
    units: int = 0
    model_params: int = 0
    device: str = "cpu"
    threads: int = 0
    loaded_mib: float = 0.0
    """Resident (CPU) or allocated (GPU) memory after loading, before the first step."""
    peak_mib: float = 0.0
    """Peak memory of the steps above `loaded_mib`."""
    peak_method: str = ""
    step_seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    median_step_seconds: float = 0.0
    median_cpu_seconds: float = 0.0


def parse_mode(text: str) -> tuple[str, int]:
    """`spry:10` -> ("spry", 10); `spry` -> ("spry", 1)."""
    name, _, k = text.partition(":")
    if name not in MODES:
        raise ValueError(f"bench mode {name!r} is not one of {', '.join(MODES)}")
    if k and (not k.isdigit() or int(k) < 1):
        raise ValueError(f"bench mode {text!r}: K after ':' must be a positive integer")
    return name, int(k) if k else 1


def _default_modes() -> tuple[str, ...]:
    """Every mode, each run at another K placed after the modes of the method it runs."""
    def method(mode: str) -> str | None:
        return MODES[parse_mode(mode)[0]][0]

    modes = list(MODES)
    for run in DEFAULT_K_RUNS:
        last = max(i for i, mode in enumerate(modes) if method(mode) == method(run))
        modes.insert(last + 1, run)
    return tuple(modes)


DEFAULT_MODES = _default_modes()


def mode_available(mode: str) -> bool:
    """False when the method's estimator is not registered (yet) in ESTIMATORS."""
    from spry.estimators import ESTIMATORS

    method = MODES[parse_mode(mode)[0]][0]
    return method is None or (method in METHODS and METHODS[method].estimator in ESTIMATORS)
