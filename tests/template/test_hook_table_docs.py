"""The hook table in docs/callbacks.md is the generated project's HOOKS, hook for hook and argument for argument."""

from __future__ import annotations

import ast
import re

from tests.template.helpers import ROOT

ROW = re.compile(r"^\| `(on_\w+)` \| (.*) \|$", re.MULTILINE)


def generated_hooks() -> dict[str, tuple[str, ...]]:
    """HOOKS as template/src/<package>/hooks.py defines it, read without rendering or importing it."""
    tree = ast.parse((ROOT / "template" / "src" / "{{package_name}}" / "hooks.py").read_text(encoding="utf-8"))
    table = next(node.value for node in tree.body if isinstance(node, ast.AnnAssign) and node.target.id == "HOOKS")
    return ast.literal_eval(table)


def documented_hooks() -> dict[str, tuple[str, ...]]:
    """The table of docs/callbacks.md: each hook and the names in its row (notes in parentheses left out)."""
    text = (ROOT / "docs" / "callbacks.md").read_text(encoding="utf-8")
    return {hook: tuple(re.findall(r"`(\w+)`", re.sub(r"\(.*?\)", "", names))) for hook, names in ROW.findall(text)}


def test_the_documented_hook_table_is_the_generated_one():
    """Same hooks, in the same order, with the same keyword arguments."""
    hooks = generated_hooks()
    assert len(hooks) >= 16  # the parse found the table
    assert list(documented_hooks().items()) == list(hooks.items())
