"""Write the settings tables from the schema: README.md's block and docs/settings.md.

    python scripts/settings_table.py          # rewrite both
    python scripts/settings_table.py --check  # exit 1 if either is out of date

Each setting's text is the docstring under its field in src/spry/config/schema.py (spry.settings),
so edit it there and rerun this; tests/test_settings.py fails while the files lag.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spry.settings import settings_doc, with_readme_block

ROOT = Path(__file__).resolve().parents[1]
FILES = {ROOT / "README.md": lambda text: with_readme_block(text),
         ROOT / "docs" / "settings.md": lambda text: settings_doc()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only check; exit 1 if out of date")
    a = p.parse_args(argv)
    stale = []
    for path, render in FILES.items():
        old = path.read_text() if path.exists() else ""
        new = render(old)
        if new != old:
            stale.append(path.relative_to(ROOT))
            if not a.check:
                path.write_text(new)
    if a.check and stale:
        print(f"out of date: {', '.join(map(str, stale))}; run python scripts/settings_table.py")
        return 1
    print("written: " + (", ".join(map(str, stale)) or "nothing (up to date)") if not a.check
          else "up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
