"""The settings as a user reads them: `spry run --help`, the tables in README.md and
docs/settings.md, and a run's config.yaml, all from the one schema (spry.config.Config).

Each setting's description is the docstring under its field in spry/config/schema.py, and its
section the `# --- name ---` comment above it, so the help and the docs cannot drift from
the schema: scripts/settings_table.py rewrites the tables, and a test checks them.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap
from functools import cache

import yaml

from spry import config
from spry.config import CHOICE_DEFAULTS, RECIPE_DEFAULTS, Config

# The settings README.md's short table shows; docs/settings.md shows every one.
README_KEYS = ("recipe", "model", "peft", "lora_r", "dataset", "test_file", "test_fraction",
               "text_column", "pair_column", "label_column", "task_head", "pooling",
               "head_init", "head_gradient", "tangent_sharing", "num_clients",
               "clients_per_round", "dirichlet_alpha", "method", "communication", "head",
               "tangents", "client_lr", "head_lr", "server_optimizer", "server_lr", "rounds",
               "local_epochs", "max_steps", "personalization_epochs", "eval_every",
               "max_wall_seconds", "threads", "seed")
BEGIN = "<!-- settings:begin (scripts/settings_table.py writes this) -->"
END = "<!-- settings:end -->"


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    section: str
    default: str
    """As a user would type it; for a default that follows other settings, what it
    follows (e.g. `1.0 (fedavg, fedavgm), 0.01 (fedadam, fedyogi)`)."""
    doc: str
    """The field's docstring, one paragraph."""

    @property
    def line(self) -> str:
        """The doc's first sentence (a period after `et al`, `e.g`, `i.e` ends none)."""
        for match in re.finditer(r"[.!?](\s|$)", self.doc):
            if not re.search(r"(\bal|\be\.g|\bi\.e|\bvs)$", self.doc[:match.start()]):
                return self.doc[:match.start() + 1]
        return self.doc


@cache
def settings() -> tuple[Setting, ...]:
    """Every field of Config in schema order, with its section, default and doc."""
    source = inspect.getsource(inspect.getmodule(Config))  # the module defining the class
    tree = ast.parse(source)
    body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Config").body
    lines = source.splitlines()
    docs, sections, section = {}, {}, "general"
    previous_end = body[0].lineno - 1
    for i, node in enumerate(body):
        if not isinstance(node, ast.AnnAssign):
            continue
        for text in lines[previous_end:node.lineno - 1]:
            heading = re.match(r"\s*# --- (.+?) -+\s*$", text)
            if heading:
                section = heading.group(1)
        sections[node.target.id] = section
        following = body[i + 1] if i + 1 < len(body) else None
        if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
            docs[node.target.id] = " ".join(following.value.value.split())
            previous_end = following.end_lineno
        else:
            previous_end = node.end_lineno
    return tuple(Setting(f.name, sections[f.name], _default_text(f), docs.get(f.name, ""))
                 for f in dataclasses.fields(Config))


def _show(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def _default_text(f: dataclasses.Field) -> str:
    if f.name == "train_dropout":  # the recipe's value, except backprop's
        return (f"{_show(RECIPE_DEFAULTS['spry'][f.name])} for the estimators, "
                f"{_show(config.BACKPROP_TRAIN_DROPOUT)} for backprop "
                f"({_show(RECIPE_DEFAULTS['paper'][f.name])} for all with recipe=paper)")
    if f.name == "tangent_sharing":  # the recipe's, where per-example tangents apply
        shared = ", ".join((*config.NO_EXAMPLE_TANGENTS, *config.SHARED_TANGENT_DEFAULT))
        return (f"{_show(RECIPE_DEFAULTS['spry'][f.name])}; batch for peft={shared}, "
                "task heads other than classifier, multilabel, regression and token, and "
                "per_iteration "
                f"({_show(RECIPE_DEFAULTS['paper'][f.name])} for all with recipe=paper)")
    if f.name == "personalization":
        return "round; global with per_iteration (global with recipe=paper)"
    if f.name in RECIPE_DEFAULTS["spry"]:
        spry, paper = (RECIPE_DEFAULTS[r][f.name] for r in ("spry", "paper"))
        return f"{_show(spry)} ({_show(paper)} with recipe=paper)"
    if f.name == "clients_per_round":
        return f"{config.CLIENTS_PER_ROUND} (num_clients where fewer)"
    if f.name == "server_lr":
        return "1.0 (fedavg, fedavgm), 0.01 (fedadam, fedyogi)"
    if f.name == "client_lr":
        lrs, by_value = config.CLIENT_LR["spry"], {}
        for method, value in lrs.items():
            if method is not None:
                by_value.setdefault(value, []).append(method)
        named = "; ".join(f"{_show(v)} ({', '.join(ms)})" for v, ms in by_value.items())
        return (f"{_show(config.TINYLORA_CLIENT_LR)} (peft=tinylora, Adam(W)), else "
                f"{_show(lrs[None])}; {named} with recipe=spry "
                f"({_show(config.CLIENT_LR['paper'][None])} for all with recipe=paper)")
    if f.name == "head_lr":
        return (f"{_show(config.CLASS_MEAN_HEAD_LR)} (class-mean or lda classifier head, "
                f"Adam(W), recipe=spry; {_show(config.TOKEN_HEAD_LR)} for task_head=token), "
                "else client_lr")
    assert f.name not in CHOICE_DEFAULTS, f"{f.name}: say what its default follows"
    return _show(f.default)


def help_text(width: int = 100) -> str:
    """The settings block of `spry run --help`: per section, `key=DEFAULT  first sentence`."""
    out, section = ["settings (key=value after the command, or keys of a --config YAML file; "
                    "docs/settings.md has each in full):"], None
    for s in settings():
        if s.section != section:
            section = s.section
            out.append(f"\n  {section}:")
        out.append(f"    {s.name}={s.default}")
        out.extend(textwrap.wrap(s.line, width, initial_indent=" " * 8,
                                 subsequent_indent=" " * 8))
    return "\n".join(out)


def markdown_table(keys: tuple[str, ...] | None = None) -> str:
    """| key | default | meaning |; every setting (by section), or just `keys` in order."""
    by_name = {s.name: s for s in settings()}
    chosen = [by_name[k] for k in keys] if keys else list(settings())
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for s in chosen:
        doc = (s.line if keys else s.doc).replace("|", "\\|")
        rows.append(f"| `{s.name}` | {s.default.replace('|', chr(92) + '|')} | {doc} |")
    return "\n".join(rows)


def to_yaml(cfg: Config) -> str:
    """A run's config.yaml: every setting as resolved, a default that followed another
    setting marked with a comment (`server_lr: 1.0  # default for server_optimizer=fedavg`).
    Comments only, so the file reads back as the same Config (spry run --resume)."""
    out = ["# The resolved settings of this run (`spry run --config` reads this file back).",
           "# A comment marks a setting left unset whose default followed other settings."]
    defaulted = cfg.defaulted
    for key, value in cfg.to_dict().items():
        text = yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True)
        line = f"{key}: {text.removesuffix(chr(10) + '...' + chr(10)).strip()}"
        if key in defaulted:
            line += f"  # default for {defaulted[key]}"
        out.append(line)
    return "\n".join(out) + "\n"


def settings_doc() -> str:
    """docs/settings.md: every setting, by section, with its whole docstring."""
    out = ["# Settings", "",
           "Every setting of `spry run` (a field of `spry.config.Config`), as `key=value` on the",
           "command line or `key: value` in a `--config` YAML file. Written from the schema by",
           "`python scripts/settings_table.py`; `spry run --help` shows the same, one line each.",
           "A default written as `a (b with recipe=paper)` or `x (fedavg), ...` follows another",
           "setting; a run's config.yaml says which value it got and why.", ""]
    section = None
    for s in settings():
        if s.section != section:
            section = s.section
            out += ["", f"## {section}", "", "| key | default | meaning |", "|---|---|---|"]
        out.append(f"| `{s.name}` | {s.default} | {s.doc.replace('|', chr(92) + '|')} |")
    return "\n".join(out) + "\n"


def readme_block() -> str:
    """What README.md holds between BEGIN and END."""
    return "\n".join([BEGIN, markdown_table(README_KEYS), "", "Every setting, in full: "
                      "[docs/settings.md](docs/settings.md) (or `spry run --help`).", END])


def with_readme_block(readme: str) -> str:
    """README.md's text with its settings block rewritten."""
    if BEGIN not in readme or END not in readme:
        raise ValueError(f"README.md has no {BEGIN} ... {END} block")
    head, rest = readme.split(BEGIN, 1)
    return head + readme_block() + rest.split(END, 1)[1]
