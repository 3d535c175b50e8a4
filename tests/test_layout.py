"""The README's layout block lists every module of src/spry, one line each, and no other."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_readme_layout_matches_the_tree():
    # Prepare
    text = (REPO / "README.md").read_text()
    block = text[text.index("<!-- layout:begin"):text.index("<!-- layout:end -->")]
    listed = re.findall(r"^  (\S+\.py)\s+\S", block, flags=re.M)
    # Execute
    tree = sorted(str(p.relative_to(REPO / "src" / "spry"))
                  for p in (REPO / "src" / "spry").rglob("*.py"))
    # Assert
    assert len(listed) == len(set(listed)), "a module is listed twice"
    assert sorted(listed) == tree, (f"missing from README: {sorted(set(tree) - set(listed))}; "
                                    f"not in the tree: {sorted(set(listed) - set(tree))}")
