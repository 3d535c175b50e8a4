"""Read a local csv/tsv/json/jsonl/parquet file through `datasets`, with errors that name
the file, the line and the fix.

Rows are named as an editor shows them: `line N` (1-based) for jsonl and for csv/tsv (one
line per row, after the header row where the file has one), `row N` for a JSON array and
parquet, whose rows have no line of their own.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from spry.config import ConfigError

FILE_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json",
                ".parquet": "parquet"}
DELIMITERS = (",", ";", "\t", "|")
"""What a .csv may be separated by (spreadsheets in many locales write `;`), in the order
a tie is broken."""
SPLIT_NAMES = {"train": ("train", "training"),
               "test": ("validation", "valid", "val", "dev", "eval", "test", "testing")}
"""The file stems a dataset folder's splits go by (`train.csv`, `test.jsonl`, ...); the
held-out names in the order one is preferred where a folder has several: a validation
split before a test split, which benchmark exports often leave unlabelled (GLUE's
test.tsv) or keep for the end."""


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
    if fmt != "parquet":
        _refuse_non_utf8(path)
    options = dict(csv_options or {})
    if fmt == "csv":
        options.setdefault("delimiter", "\t" if path.suffix.lower() == ".tsv"
                           else sniff_delimiter(path))
        if "quoting" not in options:  # a recipe's own quoting reads its file its way
            _refuse_extra_fields(path, options["delimiter"], columns)
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


def sniff_delimiter(path: Path, probe: int = 1 << 16) -> str:
    """The delimiter of a .csv: of `DELIMITERS`, the one that splits the first lines into
    the same number (> 1) of fields; `,` where none does (a one-column file)."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        sample = f.read(probe)
    if len(sample) == probe:  # a cut last line would count wrong
        sample = sample[:sample.rfind("\n") + 1] or sample
    for delimiter in DELIMITERS:
        widths = {len(r) for r in list(csv.reader(io.StringIO(sample), delimiter=delimiter))[:50]
                  if r}
        if len(widths) == 1 and widths.pop() > 1:
            return delimiter
    return ","


def _refuse_non_utf8(path: Path, probe: int = 1 << 20) -> None:
    """Text files are read as UTF-8 (a BOM is fine); a file saved by a spreadsheet as
    Windows-1252 or Latin-1 is named with its first bad byte and line, and the fix."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, lines = 0, 1
    with open(path, "rb") as f:
        while piece := f.read(probe):
            try:
                decoder.decode(piece)
            except UnicodeDecodeError as exc:
                bad = piece[exc.start]
                line = lines + piece[:exc.start].count(b"\n")
                raise ConfigError(
                    f"dataset: {path} is not UTF-8 text (byte 0x{bad:02x} at line {line}, "
                    f"offset {offset + exc.start}: perhaps Windows-1252 or Latin-1); save it as "
                    f"UTF-8, e.g. iconv -f cp1252 -t utf-8 {path.name} > utf8-{path.name}"
                    ) from None
            offset, lines = offset + len(piece), lines + piece.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise ConfigError(f"dataset: {path} ends in the middle of a UTF-8 character: it was "
                          "cut short; save it whole") from None


def _refuse_extra_fields(path: Path, delimiter: str, columns: tuple[str, ...] | None) -> None:
    """A row with more fields than the header names is a text that holds the delimiter
    unquoted: pandas would read its first field as an index and shift the rest, silently
    (`I loved it, truly` under the header `text` becomes ` truly`). Name the line instead."""
    shown = {"\t": "tab", ",": "','", ";": "';'", "|": "'|'"}[delimiter]
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f, delimiter=delimiter)
        names = list(columns) if columns else next((r for r in reader if r), [])
        for record in reader:
            if len(record) > len(names):
                raise ConfigError(
                    f"dataset: {path} line {reader.line_num} has {len(record)} fields "
                    f"separated by {shown}, where {'column_names' if columns else 'the header'} "
                    f"names {len(names)} ({', '.join(names)}): quote a text that holds a "
                    f"{shown} (\"...\"), or save the file as tab-separated .tsv")


def split_files(folder: Path) -> tuple[Path, list[Path]]:
    """(the training file, the held-out candidates) of a dataset folder: its files named by
    `SPLIT_NAMES` in one of the formats read here, the candidates in SPLIT_NAMES' order
    (spry.data.sources takes the first that has the label column)."""
    files = [f for f in sorted(folder.iterdir())
             if f.is_file() and f.suffix.lower() in FILE_FORMATS]
    train = [f for f in files if f.stem.lower() in SPLIT_NAMES["train"]]
    if not train:
        held = sorted(f.name for f in folder.iterdir())[:10]
        raise ConfigError(
            f"dataset: folder {folder} has no training file (it holds {held}); name it "
            f"train.csv (or .tsv, .json, .jsonl, .parquet) with its held-out split beside it "
            "as test.csv, or give dataset=<the training file>")
    if len(train) > 1:
        raise ConfigError(f"dataset: folder {folder} has {len(train)} training files "
                          f"({[f.name for f in train]}); keep one, or give "
                          f"dataset=<the training file> and test_file=<the test file>")
    rank = {stem: i for i, stem in enumerate(SPLIT_NAMES["test"])}
    held_out = sorted((f for f in files if f.stem.lower() in rank),
                      key=lambda f: (rank[f.stem.lower()], f.name))
    return train[0], held_out


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
