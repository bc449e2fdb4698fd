"""Every Python block in the docs runs, so the docs cannot drift from the code."""

import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
CANDIDATES = [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md", ROOT / "core" / "README.md"]
DOCUMENTS = [path for path in CANDIDATES if BLOCK.search(path.read_text())]


def test_the_documents_with_code_are_found():
    """The guides, the tutorial and the core README are among the documents whose code is run."""
    pages = ["fabric.md", "tutorial.md", "callbacks.md", "devices.md", "distributed.md"]
    assert {*(ROOT / "docs" / page for page in pages), ROOT / "core" / "README.md"} <= set(DOCUMENTS)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(document, tmp_path, monkeypatch):
    """The document's Python blocks run top to bottom in one namespace without error."""
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "blocks.py"
    script.write_text("\n\n".join(BLOCK.findall(document.read_text())))
    runpy.run_path(str(script), run_name="__docs__")
