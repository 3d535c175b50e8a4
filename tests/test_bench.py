"""`spry bench`: the report's schema, its ratios, and real (tiny) runs. No timing thresholds."""

from __future__ import annotations

import json

import pytest

from spry import bench
from spry.bench import ModeResult, parse_mode, ratios, table, targets
from spry.cli import main


def _result(mode, peak, seconds, loaded=1000.0, **kw) -> ModeResult:
    name, k = parse_mode(mode)
    return ModeResult(mode=mode, method=bench.MODES[name][0], tangents=k, allocator="glibc",
                      loaded_mib=loaded, peak_mib=peak, median_step_seconds=seconds,
                      median_cpu_seconds=seconds / 2, **kw)


def test_parse_mode():
    assert parse_mode("spry") == ("spry", 1)
    assert parse_mode("spry:10") == ("spry", 10)
    for bad in ("nosuch", "spry:0", "spry:x"):
        with pytest.raises(ValueError):
            parse_mode(bad)


def test_ratios_and_targets_are_computed_from_the_results():
    results = [_result("inference", 100.0, 1.0), _result("backprop", 400.0, 3.0),
               _result("spry", 130.0, 2.0), _result("spry:10", 200.0, 13.0)]
    rows = {r["mode"]: r for r in ratios(results)}
    spry = rows["spry"]
    assert spry["peak_vs_inference"] == pytest.approx(1.3)
    assert spry["peak_vs_backprop"] == pytest.approx(130 / 400)
    assert spry["time_vs_inference"] == pytest.approx(2.0)
    assert spry["time_vs_backprop"] == pytest.approx(2 / 3)
    assert spry["cpu_time_vs_inference"] == pytest.approx(2.0)
    assert spry["total_peak_vs_inference"] == pytest.approx(1130 / 1100)
    assert rows["inference"]["peak_vs_inference"] == pytest.approx(1.0)
    met = {(t["mode"], t["ratio"]): t["met"] for t in targets(results)}
    assert met[("spry", "peak_vs_inference")] is True  # 1.3 <= 1.3
    assert met[("spry", "peak_vs_backprop")] is True  # 0.325 <= 0.4
    assert met[("spry", "time_vs_inference")] is True  # 2.0 <= 2.0
    assert met[("spry", "time_vs_backprop")] is True  # 0.67 < 1
    assert met[("spry:10", "time_vs_inference")] is False  # 13 > 12 (issue 20: K=10 <= 12x)


def test_ratios_are_none_without_a_baseline_or_for_failed_modes():
    results = [_result("spry", 130.0, 2.0),
               ModeResult(mode="fwdllm", method="fwdllm", tangents=1, allocator="glibc",
                          available=False, error="not registered")]
    for row in ratios(results):
        assert row["peak_vs_inference"] is None and row["time_vs_backprop"] is None
    assert targets(results) == []
    report = {"results": [vars(r) for r in results], "ratios": ratios(results)}
    text = table(report)
    assert "| fwdllm | glibc | 1 | not available |" in text
    assert len({line.count("|") for line in text.splitlines()}) == 1  # a rectangular table


def test_unregistered_estimator_is_reported_not_run(monkeypatch):
    from spry import estimators

    monkeypatch.delitem(estimators.ESTIMATORS, "fwdllm")
    r = bench.spawn("fwdllm", [], steps=1, warmup=0, threads=1, allocator="glibc")
    assert r.available is False and "not registered" in r.error


def test_run_mode_in_process_on_a_random_tiny_config():
    r = bench.run_mode("spry_share", ["model=random:tiny-bert", "batch_size=2", "max_length=8",
                                      "clients_per_round=2"], steps=2, warmup=1, threads=1)
    assert r.error is None and r.units >= 1 and r.trained_params > 0
    assert r.trained_params < r.model_params
    assert len(r.step_seconds) == 2 and r.median_step_seconds > 0
    assert r.peak_mib >= 0 and r.loaded_mib > 0
    full = bench.run_mode("spry:2", ["model=random:tiny-bert", "batch_size=2", "max_length=8"],
                          steps=1, warmup=0, threads=1)
    assert full.tangents == 2 and full.trained_params > r.trained_params


def test_cli_bench_writes_the_json_report(tiny_bert, tmp_path, capsys):
    out = tmp_path / "report.json"
    code = main(["bench", "--modes", "inference,spry", "--steps", "1", "--warmup", "0",
                 "--threads", "1", "--out", str(out), f"model={tiny_bert}", "batch_size=2",
                 "max_length=8"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| inference | glibc |" in printed and "| spry | glibc |" in printed
    report = json.loads(out.read_text())
    assert set(report) >= {"settings", "results", "ratios", "targets", "machine"}
    assert report["settings"]["modes"] == ["inference", "spry"]
    by_mode = {r["mode"]: r for r in report["results"]}
    assert set(by_mode) == {"inference", "spry"}
    for r in by_mode.values():
        assert r["error"] is None, r["error"]
        assert set(r) >= {"peak_mib", "loaded_mib", "peak_method", "median_step_seconds",
                          "step_seconds", "cpu_seconds", "trained_params", "tangents"}
        assert len(r["step_seconds"]) == 1
    assert by_mode["inference"]["trained_params"] == 0
    assert by_mode["spry"]["trained_params"] > 0
    spry_ratio = next(q for q in report["ratios"] if q["mode"] == "spry")
    assert spry_ratio["time_vs_inference"] == pytest.approx(
        by_mode["spry"]["median_step_seconds"] / by_mode["inference"]["median_step_seconds"])


def test_a_setting_one_mode_cannot_take_is_refused_before_any_child(monkeypatch):
    """tangent_dtype with backprop: named with its mode, and no mode has run yet."""
    from spry.bench import parent
    from spry.config import ConfigError

    def spawn(*args, **kwargs):
        raise AssertionError("a child started before the settings were checked")

    monkeypatch.setattr(parent, "spawn", spawn)
    with pytest.raises(ConfigError, match="bench mode 'backprop': tangent_dtype: only forward"):
        parent.bench(["model=random:tiny-bert", "tangent_dtype=bfloat16"],
                     modes=("inference", "spry", "backprop"))
