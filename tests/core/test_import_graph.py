"""The core's modules import each other without circles; the circle finder itself finds circles."""

from __future__ import annotations

from pathlib import Path

from tests.import_graph import import_cycles, import_graph

CORE = Path(__file__).resolve().parents[2] / "core" / "src" / "trainwright"


def write_package(root: Path, files: dict[str, str]) -> Path:
    """Write a package ``pkg`` under ``root`` from ``{relative path: source}``."""
    package = root / "pkg"
    for name, source in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(source, encoding="utf-8")
    return package


def test_the_core_has_no_import_circles():
    """No module of trainwright imports, directly or through others, a module that imports it."""
    cycles = import_cycles(CORE)
    assert not cycles, "import circles in the core:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_graph_sees_the_core_modules_and_their_imports():
    """The graph holds every core module and a known edge, so an empty graph cannot pass the test above."""
    graph = import_graph(CORE)
    assert {"trainwright", "trainwright.fabric", "trainwright.strategies.fsdp"} <= set(graph)
    assert "trainwright.strategies" in graph["trainwright.flags"]
    assert "trainwright.fabric" in graph["trainwright"]


def test_a_circle_through_the_package_init_is_found(tmp_path):
    """``from pkg import __version__`` in a module that ``pkg/__init__.py`` imports is a circle."""
    package = write_package(
        tmp_path,
        {"__init__.py": '__version__ = "1"\nfrom pkg.core import run\n', "core.py": "from pkg import __version__\n"},
    )
    assert import_cycles(package) == [["pkg", "pkg.core", "pkg"]]


def test_relative_and_deferred_imports_count_but_type_checking_ones_do_not(tmp_path):
    """A relative import inside a function closes a circle; the same import under TYPE_CHECKING does not."""
    deferred = write_package(
        tmp_path / "deferred",
        {
            "__init__.py": "",
            "a.py": "from .sub import b\n",
            "sub/__init__.py": "",
            "sub/b.py": "def f():\n    from ..a import x\n",
        },
    )
    assert import_cycles(deferred) == [["pkg.a", "pkg.sub.b", "pkg.a"]]
    typed = write_package(
        tmp_path / "typed",
        {
            "__init__.py": "",
            "a.py": "from .sub import b\n",
            "sub/__init__.py": "",
            "sub/b.py": "import typing\nif typing.TYPE_CHECKING:\n    from ..a import x\nelse:\n    x = 1\n",
        },
    )
    assert import_graph(typed)["pkg.sub.b"] == set()
    assert import_cycles(typed) == []
