"""Read a local csv/tsv/json/jsonl/parquet file (gzip, bz2 or xz compressed or not), or a
split of several such files, through `datasets`, with errors that name the file, the line
and the fix.

Rows are named as an editor shows them: `line N` (1-based) for jsonl and for csv/tsv (one
line per row, after the header row where the file has one), `row N` for a JSON array and
parquet, whose rows have no line of their own; in a split of several files (shards), the
file's name comes first.
"""

from __future__ import annotations

import bisect
import bz2
import codecs
import csv
import gzip
import io
import json
import lzma
import re
from dataclasses import dataclass, field
from pathlib import Path

from spry.config import ConfigError

FILE_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json",
                ".parquet": "parquet", ".txt": "fasttext", ".conll": "conll", ".iob": "conll",
                ".bio": "conll", ".conllu": "conllu"}
CONLL_TAG = re.compile(r"O|[BIESLU]-\S+|[A-Z$][A-Z$.:,'`-]*")
"""What the last field of a CoNLL line looks like: `O`, `B-PER`, `NNP`, `VBZ`, `PUNCT`."""
WORDS, TAGS = "tokens", "tags"
"""The columns a CoNLL file's sentences are read into (task_head=token)."""
FASTTEXT_LABEL = "__label__"
"""fastText's label prefix: a .txt file is read as fastText's supervised format, one text a
line after its labels (`__label__positive __label__funny the text`)."""
COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
"""Compressed text files read as they are (`train.jsonl.gz`): `datasets` decompresses
them, and the checks here open them through these."""
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
    class_names: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """The names of a `datasets` ClassLabel column (parquet and arrow files keep them):
    its integers index these."""
    shards: tuple[tuple[int, Rows], ...] = ()
    """Where the rows join several files: (the index of each file's first row, its Rows)."""

    def __len__(self) -> int:
        return len(self.rows)

    def name(self, index: int) -> str:
        """How an error names row `index` (0-based): `line 7` or `row 7`, after its file's
        name where the rows join several (`train-00001-of-00002.parquet row 7`)."""
        if self.shards:
            k = bisect.bisect_right([start for start, _ in self.shards], index) - 1
            start, shard = self.shards[k]
            return f"{shard.path.name} {shard.name(index - start)}"
        if self.lines is not None and index < len(self.lines):
            return f"line {self.lines[index]}"
        return f"row {index + 1}"


def _uncompressed(path: Path) -> Path:
    """`path` without a compression suffix (`train.jsonl.gz`: `train.jsonl`)."""
    path = Path(path)
    return path.with_suffix("") if path.suffix.lower() in COMPRESSIONS else path


def data_suffix(path: Path) -> str:
    """A data file's format suffix, a compression suffix passed over (`.tsv` of `a.tsv.gz`)."""
    return _uncompressed(path).suffix.lower()


def file_format(path: Path) -> str | None:
    """The `datasets` builder that reads `path` by its name (`csv`, `json`, `parquet`),
    a compression suffix passed over; None for any other file."""
    fmt = FILE_FORMATS.get(data_suffix(path))
    compressed = _uncompressed(path) != Path(path)
    return None if fmt == "parquet" and compressed else fmt  # parquet compresses itself


def data_stem(path: Path) -> str:
    """A data file's name without its format and compression suffixes (`train.jsonl.gz`:
    `train`), as run and prediction files are named after it."""
    inner = _uncompressed(path)
    return inner.stem if inner.suffix.lower() in FILE_FORMATS else inner.name


def _open(path: Path):
    """`path` opened for reading bytes, decompressed where its suffix says it is."""
    return COMPRESSIONS.get(path.suffix.lower(), open)(path, "rb")


def _text(path: Path):
    return io.TextIOWrapper(_open(path), encoding="utf-8", errors="replace", newline="")


def read_rows(path: Path, columns: tuple[str, ...] | None = None,
              csv_options: dict | None = None, unlabelled: bool = False) -> Rows:
    """A data file's rows. `unlabelled`: a fastText .txt file may be plain lines of text
    (new texts for `spry predict`)."""
    import datasets

    if not path.is_file():
        raise ConfigError(f"dataset: file {path} does not exist or is not a file")
    fmt = file_format(path)
    if fmt is None:
        shown = "".join(path.suffixes[-2:]) if path.suffix.lower() in COMPRESSIONS else path.suffix
        sheet = ("; a spreadsheet: save it as csv (Excel: Save As > CSV UTF-8; pandas: "
                 f"pandas.read_excel('{path.name}').to_csv('{path.stem}.csv', index=False))"
                 if path.suffix.lower() in (".xlsx", ".xls", ".ods") else "")
        raise ConfigError(f"dataset: {path} has suffix {shown!r}; use one of "
                          f"{', '.join(FILE_FORMATS)} (the text ones may end in "
                          f"{', '.join(COMPRESSIONS)} too; .txt is fastText's "
                          f"`{FASTTEXT_LABEL}<label> text` lines; .conll/.iob/.bio a word and its "
                          f"tag a line; .conllu Universal Dependencies){sheet}")
    if fmt != "parquet" and _blank(path):
        layout = {"csv": "a header row and one row a line", "json": "one JSON object a line",
                  "fasttext": "a line a text, its __label__ first",
                  "conll": "a word and its tag a line, a blank line after each sentence",
                  "conllu": "Universal Dependencies' ten columns a word"}[fmt]
        raise ConfigError(f"dataset: {path} is empty; give a file with {layout}")
    if fmt != "parquet":
        _refuse_non_utf8(path)
    if columns and fmt != "csv":
        raise ConfigError(f"column_names: names the columns of a csv/tsv file without a "
                          f"header row; {path} is {fmt}, whose columns have names: remove it")
    if fmt == "fasttext":
        return _read_fasttext(path, unlabelled)
    if fmt in ("conll", "conllu"):
        return _read_conll(path, unlabelled, universal=fmt == "conllu")
    options = dict(csv_options or {})
    if fmt == "csv":
        options.setdefault("delimiter", "\t" if data_suffix(path) == ".tsv"
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
    if any(isinstance(feature, dict) for feature in ds.features.values()):
        # nested JSON objects: their fields become columns of their own, `review.body`
        ds = ds.flatten()
    rows = dataset_rows(ds, path)
    rows.lines = _line_numbers(path, fmt, len(rows), header=not columns)
    return rows


def dataset_rows(split, path: Path) -> Rows:
    """A `datasets.Dataset`'s rows, its ClassLabel columns' names kept (a list of them, as
    a multi-label set's `labels: List(ClassLabel)`, too)."""
    import datasets

    def names(feature):
        inner = getattr(feature, "feature", None)  # List / Sequence of ClassLabel
        found = feature if isinstance(feature, datasets.ClassLabel) else inner
        return tuple(found.names) if isinstance(found, datasets.ClassLabel) else None

    return Rows(path, list(split), None,
                {name: names(feature) for name, feature in split.features.items()
                 if names(feature) is not None})


def read_split(paths: list[Path], columns: tuple[str, ...] | None = None) -> Rows:
    """One split's rows: a file's, or those of several files (a split sharded as
    `train-00000-of-00002.parquet`, `train-00001-of-00002.parquet`) joined in order, which
    must have the same columns."""
    if len(paths) == 1:
        return read_rows(paths[0], columns)
    parts = [read_rows(p, columns) for p in paths]
    first = list(parts[0].rows[0]) if parts[0].rows else []
    for part in parts[1:]:
        mine = list(part.rows[0]) if part.rows else first
        if set(mine) != set(first):
            raise ConfigError(f"dataset: {part.path} has columns {sorted(mine)}, and "
                              f"{parts[0].path.name}, a file of the same split, has "
                              f"{sorted(first)}; give a split's files the same columns")
    starts = [0]
    for part in parts[:-1]:
        starts.append(starts[-1] + len(part))
    return Rows(paths[0].parent, [row for part in parts for row in part.rows],
                class_names=parts[0].class_names, shards=tuple(zip(starts, parts)))


def sniff_delimiter(path: Path, probe: int = 1 << 16) -> str:
    """The delimiter of a .csv: of `DELIMITERS`, the one that splits the first lines into
    the same number (> 1) of fields; `,` where none does (a one-column file)."""
    with _text(path) as f:
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
    with _open(path) as f:
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
    with _text(path) as f:
        reader = csv.reader(f, delimiter=delimiter)
        names = list(columns) if columns else next((r for r in reader if r), [])
        for record in reader:
            if len(record) > len(names):
                raise ConfigError(
                    f"dataset: {path} line {reader.line_num} has {len(record)} fields "
                    f"separated by {shown}, where {'column_names' if columns else 'the header'} "
                    f"names {len(names)} ({', '.join(names)}): quote a text that holds a "
                    f"{shown} (\"...\"), or save the file as tab-separated .tsv")


SAVED_MARKERS = ("dataset_dict.json", "state.json")
"""What `Dataset(Dict).save_to_disk` writes at the top of its folder."""


def is_saved_dataset(folder: Path) -> bool:
    """A folder written by `datasets`' save_to_disk (read by load_from_disk), not a folder
    of data files."""
    return any((folder / marker).is_file() for marker in SAVED_MARKERS)


def read_saved(folder: Path) -> dict[str, Rows]:
    """{split: its rows} of a folder written by save_to_disk (a Dataset: one split,
    `train`), ClassLabel names kept."""
    import datasets

    try:
        saved = datasets.load_from_disk(str(folder))
    except Exception as exc:
        raise ConfigError(f"dataset: cannot read {folder} with datasets.load_from_disk "
                          f"({type(exc).__name__}: {str(exc)[:300]}); give the folder "
                          "save_to_disk wrote, whole") from None
    if isinstance(saved, datasets.Dataset):
        saved = {"train": saved}
    return {name: dataset_rows(split, folder / name) for name, split in saved.items()}


def held_out_order(items: list, key=str) -> list:
    """Those of `items` whose name (`key`) is a held-out split's, in SPLIT_NAMES' order of
    preference (validation before test), ties by name."""
    rank = {name: i for i, name in enumerate(SPLIT_NAMES["test"])}
    return sorted((x for x in items if key(x).lower() in rank),
                  key=lambda x: (rank[key(x).lower()], str(x)))


def split_files(folder: Path) -> tuple[list[Path], list[list[Path]]]:
    """(the training split's files, the held-out candidates' files) of a dataset folder.

    Its files named by `SPLIT_NAMES` (`train.csv`, `dev.tsv`, `test.jsonl.gz`), one file a
    split, the candidates in SPLIT_NAMES' order (spry.data.sources takes the first that
    has the label column). A folder with none of those is read by the layouts `datasets`
    itself knows (`datasets.data_files.get_data_patterns`): a hub repository's
    `data/train-00000-of-00002.parquet` shards, a subfolder per split; the held-out
    candidates there are its validation split, then its test split."""
    files = [f for f in sorted(folder.iterdir()) if f.is_file() and file_format(f)]
    train = [f for f in files if data_stem(f).lower() in SPLIT_NAMES["train"]]
    if len(train) > 1:
        raise ConfigError(f"dataset: folder {folder} has {len(train)} training files "
                          f"({[f.name for f in train]}); keep one, or give "
                          f"dataset=<the training file> and test_file=<the test file>")
    if train:
        return train, [[f] for f in held_out_order(files, key=data_stem)]
    splits = _datasets_layout(folder)
    if "train" not in splits:
        held = sorted(f.name for f in folder.iterdir())[:10]
        raise ConfigError(
            f"dataset: folder {folder} has no training file (it holds {held}); name it "
            f"train.csv (or .tsv, .json, .jsonl, .parquet) with its held-out split beside it "
            "as test.csv, or give dataset=<the training file>")
    formats = {file_format(f) for f in splits["train"]}
    if len(formats) > 1:
        raise ConfigError(f"dataset: folder {folder}'s training split mixes formats "
                          f"({[f.name for f in splits['train']]}); keep one format, or give "
                          "dataset=<the training file>")
    return splits["train"], [splits[name] for name in ("validation", "test") if name in splits]


def _datasets_layout(folder: Path) -> dict[str, list[Path]]:
    """{split: its files} as `datasets.load_dataset(folder)` would find them, only the
    formats read here; {} where the layout names no split."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    try:
        patterns = get_data_patterns(str(folder))
    except Exception:  # EmptyDatasetError: no file named by split
        return {}
    resolved = DataFilesDict.from_patterns(patterns, base_path=str(folder))
    splits = {str(name): [Path(f) for f in sorted(files) if file_format(Path(f))]
              for name, files in resolved.items()}
    return {name: files for name, files in splits.items() if files}


def _blank(path: Path, probe: int = 1 << 16) -> bool:
    """Empty or only whitespace (read in pieces: a data file may be large)."""
    with _open(path) as f:
        while piece := f.read(probe):
            if piece.strip():
                return False
    return True


def _read_fasttext(path: Path, unlabelled: bool = False) -> Rows:
    """fastText's supervised format, as the Amazon and Yelp review sets are often shipped:
    a line's leading `__label__<name>` tokens are its labels (one: the column `label`
    holds it; several: a list, which task_head=multilabel reads), the rest of the line
    its `text`. Blank lines are skipped; a line without a label is refused, so is a .txt
    file of plain lines (no labels to learn) unless `unlabelled`: then its lines are the
    texts (a file with some lines labelled is still refused at the first that is not)."""
    with _text(path) as f:
        found = [(number, line.split()) for number, line in enumerate(f, 1) if line.strip()]
    if unlabelled and not any(t[0].startswith(FASTTEXT_LABEL) for _, t in found):
        return Rows(path, [{"text": " ".join(t)} for _, t in found], [n for n, _ in found])
    rows = []
    for number, tokens in found:
        labels = []
        while tokens and tokens[0].startswith(FASTTEXT_LABEL):
            labels.append(tokens.pop(0)[len(FASTTEXT_LABEL):])
        if not labels:
            shown = " ".join(tokens)[:60]
            if _looks_like_conll(found):
                raise ConfigError(
                    f"dataset: {path} line {number} ({shown!r}) reads as a word and its tag "
                    "a line (CoNLL), not fastText's `__label__` lines: rename it to "
                    f"{path.stem}.conll and set task_head=token")
            raise ConfigError(
                f"dataset: {path} line {number} ({shown!r}) has no `{FASTTEXT_LABEL}` "
                "label: a .txt file is read as fastText's format, a line's labels first "
                f"(`{FASTTEXT_LABEL}positive the text`); give each line its label, or "
                "give a csv/tsv/jsonl file with text and label columns")
        rows.append({"text": " ".join(tokens), "label": labels[0] if len(labels) == 1
                     else labels})
    return Rows(path, rows, [n for n, _ in found])


def _looks_like_conll(lines: list[tuple[int, list[str]]]) -> bool:
    """The first lines hold two to four fields each, the last a tag (CoNLL's `EU B-ORG`:
    `O`, a BIO tag, or an upper-case part of speech), not a sentence each."""
    head = [tokens for _, tokens in lines[:50]]
    return bool(head) and all(2 <= len(t) <= 4 and CONLL_TAG.fullmatch(t[-1]) for t in head)


def _read_conll(path: Path, unlabelled: bool = False, universal: bool = False) -> Rows:
    """A CoNLL file (CoNLL-2003, WNUT-17, most NER and chunking sets): a word a line and its
    tag in the line's last field (tab- or space-separated), a blank line after each
    sentence, `-DOCSTART-` lines passed over; `universal` (.conllu, Universal Dependencies):
    comment lines (#) and multi-word or empty nodes passed over, the word its FORM (field
    2) and the tag its UPOS (field 4). Each sentence a row of WORDS and TAGS, named by the
    line it starts on. `unlabelled` (spry predict): a line may hold the word alone."""
    rows, lines, words, tags, start, tagless = [], [], [], [], None, None

    def close():
        nonlocal tagless
        if tags and tagless is not None:
            raise ConfigError(f"dataset: {path} line {tagless} has a word and no tag, and other "
                              "lines of its sentence have tags; give every word its tag, or "
                              "none (words alone, to tag them)")
        if words:
            rows.append({WORDS: list(words), TAGS: list(tags)} if tags or not unlabelled
                        else {WORDS: list(words)})
            lines.append(start)
        words.clear()
        tags.clear()
        tagless = None

    with _text(path) as f:
        for number, line in enumerate(f, 1):
            fields = [x.strip() for x in (line.split("\t") if "\t" in line else line.split())]
            fields = [x for x in fields if x] if not universal else fields
            if not line.strip() or fields[0] == "-DOCSTART-":
                close()
                continue
            if universal:
                if line.startswith("#") or not fields[0].isdigit():
                    continue  # a comment, or a multi-word (1-2) or empty (1.1) node
                if len(fields) < 4:
                    raise ConfigError(f"dataset: {path} line {number} has {len(fields)} fields; "
                                      "a .conllu line has ten (ID, FORM, LEMMA, UPOS, ...)")
                word, tag = fields[1], fields[3]
            elif len(fields) >= 2:
                word, tag = fields[0], fields[-1]
            elif unlabelled:
                word, tag = fields[0], None
                tagless = number if tagless is None else tagless
            else:
                raise ConfigError(f"dataset: {path} line {number} ({line.strip()[:40]!r}) has a "
                                  "word and no tag: a CoNLL file has a word and its tag a line "
                                  "(`EU B-ORG`), a blank line after each sentence")
            if not words:
                start = number
            words.append(word)
            if tag is not None:
                tags.append(tag)
        close()
    if not rows:
        raise ConfigError(f"dataset: {path} has no sentences; give a word and its tag a line, "
                          "a blank line after each sentence")
    return Rows(path, rows, lines)


def _line_numbers(path: Path, fmt: str, count: int, header: bool) -> list[int] | None:
    if fmt == "csv":
        first = 2 if header else 1
        return list(range(first, first + count))
    if fmt == "json":
        lines = []
        with _open(path) as f:
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
        with _open(path) as f:
            text = f.read().decode()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"dataset: {path} is not UTF-8 text (byte {exc.start}); save it as "
                          "UTF-8") from None
    if text.lstrip().startswith(("[", "{")) and data_suffix(path) == ".json":
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
