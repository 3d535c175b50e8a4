"""The Markdown table `spry compare` prints: one row per run summary, formatted cells."""

from __future__ import annotations


def _acc(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def _int(v) -> str:
    return "–" if v is None else f"{v:,}"


def _seconds(v) -> str:
    return "–" if v is None else f"{v:,.0f}"


def _bytes(v) -> str:
    if v is None:
        return "–"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= size:
            return f"{v / size:.1f} {unit}"
    return f"{v} B"


def _mib(v) -> str:
    return "–" if v is None else f"{v:,.0f}"


# (key, header, format); the order of the table's columns.
COLUMNS = [
    ("run", "run", str), ("method", "method", str),
    ("final_test", "final test acc", _acc), ("best_test", "best test acc", _acc),
    ("final_test_f1", "final test macro-F1", _acc),
    ("final_gen", "final gen. acc", _acc), ("best_gen", "best gen. acc", _acc),
    ("final_pers", "final pers. acc", _acc), ("best_pers", "best pers. acc", _acc),
    ("target_round", "rounds to target", _int), ("target_seconds", "s to target", _seconds),
    ("rounds", "rounds", _int), ("seconds", "wall s", _seconds),
    ("bytes_up", "bytes up", _bytes), ("bytes_down", "bytes down", _bytes),
    ("peak_mib", "client peak MiB", _mib),
]


SCORE_COLUMNS = [("final_pearson", "final test Pearson", _acc),
                 ("best_pearson", "best test Pearson", _acc)]
"""Added where a run learned a score (task_head=regression), which has no accuracy."""

SET_COLUMNS = [("final_micro_f1", "final test micro-F1", _acc)]
"""Added where a run learned sets of labels (task_head=multilabel), whose test accuracy is
the exact-match rate."""


ENTITY_COLUMNS = [("final_entity_f1", "final test entity F1", _acc),
                  ("best_entity_f1", "best test entity F1", _acc)]
"""Added where a run tagged words with entity tags (task_head=token, BIO tags), whose test
accuracy is over words."""


def markdown_table(summaries: list[dict], extra: list[tuple] = ()) -> str:
    """One row per summary; `extra` adds (key, header, format) columns at the end."""
    columns = COLUMNS + list(extra)
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
             "|" + "---|" * len(columns)]
    for s in summaries:
        cells = []
        for key, _, fmt in columns:
            cell = "–" if s.get(key) is None else fmt(s[key])
            if key == "run" and not s.get("finished", True):
                cell += " (running or stopped)"
            if key == "final_test" and s.get("one_class"):
                cell += " (one class)"
            cells.append(cell.replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
