"""The core's version at build time, for hatchling's ``code`` version source (see pyproject.toml).

``src/trainwright/_version.py`` holds the release, ``X.Y.Z``, in lockstep with the template. A
build from a git checkout at any commit other than the release's own (the one tagged ``vX.Y.Z``)
gets the commit as a PEP 440 local label: ``X.Y.Z+g<40-hex commit>``. Two reasons:

- pip reinstalls a requirement only when the version differs. A project pins the core to a
  commit (``trainwright @ git+...@<commit>#subdirectory=core``); after ``copier update`` moves
  the pin to a commit of the same release, ``pip install -e .`` must replace the installed core,
  and with the commit in the version it does (``X.Y.Z`` alone reads as "already satisfied").
- the installed version names the exact code, in ``pip list`` as in a run's metadata, also
  for installs that carry no PEP 610 record of their commit (``pip install path/to/core``).

``trainwright==X.Y.Z`` still matches every ``X.Y.Z+g...`` (PEP 440 ignores a local label when the
specifier has none). Builds from an sdist take the version its PKG-INFO recorded; a folder that
is not a git checkout of the core, or no ``git`` command, gives ``X.Y.Z`` as written.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERSION_LINE = re.compile(r'^__version__ = "([^"]+)"$', re.MULTILINE)


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(HERE), *args], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def release() -> str:
    """``__version__`` as ``src/trainwright/_version.py`` writes it."""
    match = VERSION_LINE.search((HERE / "src" / "trainwright" / "_version.py").read_text(encoding="utf-8"))
    if match is None:
        raise ValueError(f'{HERE / "src/trainwright/_version.py"} has no line __version__ = "X.Y.Z"')
    return match.group(1)


def version() -> str:
    """``X.Y.Z`` at the commit tagged ``vX.Y.Z`` or outside git, else ``X.Y.Z+g<commit>``."""
    base = release()
    # The folder must be the core tracked by the repository git finds, not any folder inside
    # someone else's repository (a template copied into a project, an unpacked sdist).
    if _git("ls-files", "--error-unmatch", "pyproject.toml") is None:
        return base
    commit = _git("rev-parse", "--verify", "HEAD^{commit}")
    if commit is None:
        return base
    if _git("rev-parse", "--verify", "--quiet", f"refs/tags/v{base}^{{commit}}") == commit:
        return base  # the release itself: the plain version a package index would publish
    return f"{base}+g{commit}"


__version__ = version()
