"""Read a local csv/tsv/json/jsonl/parquet file through `datasets`, with errors that name
the file, the line and the fix.

Rows are named as an editor shows them: `line N` (1-based) for jsonl and for csv/tsv (one
line per row, after the header row where the file has one), `row N` for a JSON array and
parquet, whose rows have no line of their own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from spry.config import ConfigError

FILE_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json",
                ".parquet": "parquet"}


@dataclass
class Rows:
    """A file's rows (dicts) and, where the format has them, their line numbers."""
    path: Path
    rows: list[dict]
    lines: list[int] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def name(self, index: int) -> str:
        """How an error names row `index` (0-based): `line 7` or `row 7`."""
        if self.lines is not None and index < len(self.lines):
            return f"line {self.lines[index]}"
        return f"row {index + 1}"


def read_rows(path: Path, columns: tuple[str, ...] | None = None,
              csv_options: dict | None = None) -> Rows:
    import datasets

    if not path.is_file():
        raise ConfigError(f"dataset: file {path} does not exist or is not a file")
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"dataset: {path} has suffix {path.suffix!r}; use one of "
                          f"{', '.join(FILE_FORMATS)}")
    if fmt != "parquet" and _blank(path):
        layout = "a header row and one row a line" if fmt == "csv" else "one JSON object a line"
        raise ConfigError(f"dataset: {path} is empty; give a file with {layout}")
    options = dict(csv_options or {})
    if fmt == "csv":
        options.setdefault("delimiter", "\t" if path.suffix.lower() == ".tsv" else ",")
        if columns:
            options.update(column_names=list(columns), header=None)
        # Texts like "NA" or "null" stay text; labels are mapped below whatever their type.
        options.setdefault("keep_default_na", False)
    try:
        ds = datasets.load_dataset(fmt, data_files=str(path), split="train", **options)
    except Exception as exc:
        if fmt == "json":
            _raise_json_error(path)
        raise ConfigError(f"dataset: cannot read {path} as {fmt} ({type(exc).__name__}: "
                          f"{str(exc)[:300]})") from None
    rows = list(ds)
    return Rows(path, rows, _line_numbers(path, fmt, len(rows), header=not columns))


def _blank(path: Path, probe: int = 1 << 16) -> bool:
    """Empty or only whitespace (read in pieces: a data file may be large)."""
    with open(path, "rb") as f:
        while piece := f.read(probe):
            if piece.strip():
                return False
    return True


def _line_numbers(path: Path, fmt: str, count: int, header: bool) -> list[int] | None:
    if fmt == "csv":
        first = 2 if header else 1
        return list(range(first, first + count))
    if fmt == "json":
        lines = []
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                if not lines and line.lstrip().startswith(b"["):
                    return None  # a JSON array: its rows are not lines
                if line.strip():
                    lines.append(number)
        return lines if len(lines) == count else None
    return None


def _raise_json_error(path: Path) -> None:
    """`datasets` could not read a JSON file: find the line that is not JSON and say so."""
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"dataset: {path} is not UTF-8 text (byte {exc.start}); save it as "
                          "UTF-8") from None
    if text.lstrip().startswith(("[", "{")) and path.suffix.lower() == ".json":
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            if not text.lstrip().startswith("{"):
                raise ConfigError(f"dataset: {path} line {exc.lineno} is not valid JSON "
                                  f"({exc.msg}, column {exc.colno})") from None
        else:
            raise ConfigError(f"dataset: {path} is JSON but not a list of rows; give one JSON "
                              "object a line (jsonl) or a list of objects") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"dataset: {path} line {number} is not valid JSON ({exc.msg}, "
                              f"column {exc.colno}); each line must be one JSON object"
                              ) from None
        if not isinstance(row, dict):
            raise ConfigError(f"dataset: {path} line {number} is a JSON {type(row).__name__}, "
                              "not an object; each line must be one JSON object with the "
                              "text and label columns") from None
    raise ConfigError(f"dataset: cannot read {path} as JSON lines: its rows do not share "
                      "one set of column types; give every row the same columns") from None
