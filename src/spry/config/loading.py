"""Reading settings in: a YAML file and `key=value` overrides, coerced to the schema's types."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Mapping

import yaml

from spry.config.choices import ConfigError


def read_values(path: str | Path | None, overrides: list[str] | None) -> dict[str, Any]:
    """The settings of a YAML file (optional) with `key=value` overrides on top, as given
    (overrides still strings)."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigError(f"--config: cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"--config: {path} is not UTF-8 text (byte {exc.start} is "
                              f"{exc.object[exc.start:exc.start + 1]!r}); save it as "
                              "UTF-8") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--config: {path} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config: {path} must hold a mapping of key: value")
        values.update(loaded)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value")
        values[key.strip()] = raw
    return values


def coerced_values(schema: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` as keyword arguments for `schema`: unknown keys refused, strings parsed as
    YAML scalars where the field's type calls for it."""
    known = {f.name for f in dataclasses.fields(schema)}
    unknown = sorted(set(values) - known)
    if unknown:
        # a misspelt key is the usual cause: name the nearest valid key first
        near = {k: difflib.get_close_matches(k, known, n=1) for k in unknown}
        hint = "; ".join(f"{k!r}: did you mean {m[0]!r}?" for k, m in near.items() if m)
        raise ConfigError(
            f"unknown config key(s) {unknown}{'; ' + hint if hint else ''}; "
            f"valid keys: {', '.join(sorted(known))}"
        )
    hints = typing.get_type_hints(schema)
    return {k: _coerce(v, hints[k]) for k, v in values.items()}


def _coerce(value: Any, annotation: Any) -> Any:
    """Overrides arrive as strings: read them as YAML scalars (1e-4, true, [a, b], null),
    unless the field takes a string and the YAML reading would not fit (`run_name=no`)."""
    if not isinstance(value, str) or not value.strip():
        return value
    if _takes_list(annotation) and "," in value and not value.lstrip().startswith("["):
        return [item.strip() for item in value.split(",")]  # `label_names=neg,pos`
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    if parsed == "" and value.strip() not in ("''", '""'):
        parsed = value  # `|` and `>` are YAML's block markers: `label_separator=|` means `|`
    if type_ok(parsed, annotation):
        return parsed
    if type_ok(value, annotation):
        return value
    try:  # YAML 1.1 reads "1e-3" (no dot) as a string
        number = float(value)
    except ValueError:
        return parsed
    return number if type_ok(number, annotation) else parsed


def _takes_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_takes_list(a) for a in typing.get_args(annotation))
    return typing.get_origin(annotation) is list


def type_ok(value: Any, annotation: Any) -> bool:
    """Whether `value` fits the field type `annotation` (an int fits float; a bool fits
    neither int nor float)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(annotation)
        return isinstance(value, list) and all(type_ok(v, item) for v in value)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def type_name(annotation: Any) -> str:
    """A field type as an error message names it (`int | None`)."""
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")
