"""Every file spry reads, damaged at random (hypothesis): a run directory's files on
`spry run --resume`, and `spry plot` / `spry compare` inputs (metrics.jsonl, config.yaml,
`spry bench` reports). Each ends in success or a named error (exit 2), never a traceback,
and a refused resume leaves every file of the run as it was. The config and data-file fuzz
is in test_fuzz_config.py. Derandomized, so CI is reproducible.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spry.cli import main
from spry.experiment import run

RUN_FILES = ("config.yaml", "checkpoint.pt", "checkpoint.prev.pt", "metrics.jsonl",
             "units.json")


@pytest.fixture(scope="module")
def finished_run(tiny_bert, tmp_path_factory):
    from spry.config import Config

    root = tmp_path_factory.mktemp("fuzz-run")
    cfg = Config(model=tiny_bert, dataset="sentiment", num_clients=4, clients_per_round=2,
                 rounds=2, max_length=16, max_steps=1, checkpoint_every=1,
                 personalization_epochs=0, head_init="random", output_dir=str(root),
                 run_name="base")
    return run(cfg, progress=False)


@st.composite
def damage(draw):
    """(file, how, where, byte): truncate, flip a byte, replace with noise, or delete."""
    return (draw(st.sampled_from(RUN_FILES)),
            draw(st.sampled_from(["truncate", "flip", "noise", "delete"])),
            draw(st.floats(0.0, 1.0)), draw(st.integers(1, 255)),
            draw(st.binary(max_size=40)))


def _damage(path: Path, how: str, where: float, byte: int, noise: bytes) -> None:
    if how == "delete":
        path.unlink(missing_ok=True)
        return
    data = path.read_bytes() if path.exists() else b""
    at = int(where * max(len(data) - 1, 0))
    if how == "truncate":
        data = data[:at]
    elif how == "flip" and data:
        data = data[:at] + bytes([data[at] ^ byte]) + data[at + 1:]
    else:
        data = noise
    path.write_bytes(data)


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


@settings(max_examples=24, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(damage())
def test_a_damaged_run_directory_resumes_or_is_refused_unchanged(finished_run, capsys, hurt):
    name, how, where, byte, noise = hurt
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "run"
        shutil.copytree(finished_run, d)
        _damage(d / name, how, where, byte, noise)
        before = _snapshot(d)
        code = main(["run", "--quiet", "--resume", str(d), "rounds=3"])
        err = capsys.readouterr().err
        assert code in (0, 2), err
        if code == 2:
            assert err.startswith("spry: error: "), err
            assert _snapshot(d) == before, "a refused resume changed the run's files"
        else:
            rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
            assert rows[-1]["round"] == 3


ROW_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6),
                       st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
                       st.lists(st.integers(0, 3), max_size=3))
ROW_KEYS = st.sampled_from(["round", "train_loss", "generalized_accuracy", "test_accuracy",
                            "personalized_accuracy", "elapsed_seconds", "bytes_up_total",
                            "bytes_down_total", "test_predicted_classes", "clients"])


@st.composite
def results_dirs(draw):
    """(metrics.jsonl, config.yaml, bench report) contents, each well-formed or not."""
    good = {"round": 1, "train_loss": 0.5, "generalized_accuracy": 0.7,
            "test_accuracy": 0.6, "elapsed_seconds": 3.0, "bytes_up_total": 10,
            "bytes_down_total": 20}
    rows = draw(st.lists(st.one_of(
        st.just(good), st.dictionaries(ROW_KEYS, ROW_VALUES, max_size=6).map(
            lambda r: {**good, **r})), max_size=4))
    metrics = "".join(json.dumps(r) + "\n" for r in rows).encode()
    metrics = draw(st.one_of(st.just(metrics), st.binary(max_size=60),
                             st.just(metrics + b'{"round": 2, "train')))
    config = draw(st.one_of(st.just(b"method: spry\ntangents: 1\n"), st.binary(max_size=40),
                            st.just(b"- a list\n"), st.just(b"method: [\n")))
    bench_row = st.fixed_dictionaries({"mode": st.sampled_from(["spry", 3]),
                                       "allocator": st.sampled_from(["glibc", None]),
                                       "peak_mib": ROW_VALUES, "median_step_seconds": ROW_VALUES})
    bench = draw(st.one_of(
        st.lists(bench_row, max_size=3).map(lambda r: json.dumps({"results": r}).encode()),
        st.binary(max_size=30), st.just(b'{"results": [1, "x"]}'),
        st.just(b'{"results": [], "settings": {"overrides": [1]}}')))
    return metrics, config, bench


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(results_dirs())
def test_plot_and_compare_draw_or_name_the_bad_file(capsys, inputs):
    metrics, config, bench = inputs
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "run"
        d.mkdir()
        (d / "metrics.jsonl").write_bytes(metrics)
        (d / "config.yaml").write_bytes(config)
        (Path(tmp) / "bench.json").write_bytes(bench)
        for argv in (["compare", str(d)], ["compare", str(d), "--bench", f"{tmp}/bench.json"],
                     ["plot", str(d), "--out", f"{tmp}/fig", "--formats", "svg"],
                     ["plot", "--bench", f"{tmp}/bench.json", "--out", f"{tmp}/m",
                      "--formats", "svg"]):
            code = main(argv)
            err = capsys.readouterr().err
            assert code in (0, 2), (argv, err)
            if code == 2:
                assert err.startswith("spry: error: "), err


@settings(max_examples=80, deadline=None, derandomize=True)
@given(st.binary(max_size=80), st.sampled_from([b"", b"rounds: 2\n", b"run_name: x\n"]))
def test_config_files_of_any_bytes_load_or_name_the_file(noise, prefix):
    from spry.config import Config, ConfigError

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_bytes(prefix + noise)
        try:
            Config.from_yaml(path)
        except ConfigError as exc:
            message = str(exc)
            assert message.startswith("--config: ") or message.split(":")[0] in {
                f for f in Config.__dataclass_fields__} or "unknown config key" in message, message
