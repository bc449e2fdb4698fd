"""Tag a release: `make release` runs this from the repository's root (docs/releasing.md, step 5).

It tags ``vX.Y.Z`` on HEAD, X.Y.Z being ``__version__`` in core/src/trainwright/_version.py, and
refuses, changing nothing, unless all of these hold:

- the working tree is clean (the tag names a commit, so uncommitted changes would not be in it);
- copier.yml's ``core_version`` is the same X.Y.Z (core and template are released in lockstep);
- CHANGELOG.md has an entry for it: a ``## X.Y.Z`` heading (``## X.Y.Z (core and template)``)
  with text under it;
- no tag ``vX.Y.Z`` exists yet.

Only the standard library and git: it runs before any virtual environment exists. Exit status 0
when tagged, 1 when refused, with one line on stderr that says what is wrong and what to do.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE_INIT = "core/src/trainwright/_version.py"
VERSION_LINE = re.compile(r'^__version__ = "([^"]+)"$', re.MULTILINE)
# copier.yml's core_version question: its `default:` line, in the indented block under it.
CORE_VERSION = re.compile(r'^core_version:\n(?:[ \t]+.*\n|\n)*?[ \t]+default: "([^"]+)"', re.MULTILINE)
RELEASE = re.compile(r"\d+\.\d+\.\d+")


class Refused(Exception):
    """A reason not to tag, worded for the person running `make release`."""


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=60, check=False)


def read(path: str) -> str:
    try:
        return (ROOT / path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise Refused(f"{path} is missing; run `make release` in a checkout of trainwright") from None


def version() -> str:
    """The release that core/ and copier.yml both name."""
    core = VERSION_LINE.search(read(CORE_INIT))
    if core is None:
        raise Refused(f'{CORE_INIT} has no line `__version__ = "X.Y.Z"`')
    template = CORE_VERSION.search(read("copier.yml"))
    if template is None:
        raise Refused('copier.yml has no `core_version:` question with a `default: "X.Y.Z"` line')
    if core.group(1) != template.group(1):
        raise Refused(
            f"the versions differ: {CORE_INIT} says {core.group(1)}, copier.yml's core_version says "
            f"{template.group(1)}; set both to the release (docs/releasing.md, step 2)"
        )
    if not RELEASE.fullmatch(core.group(1)):
        raise Refused(f"{core.group(1)!r} is not a release version X.Y.Z (three numbers, nothing after them)")
    return core.group(1)


def check_clean() -> None:
    status = git("status", "--porcelain")
    if status.returncode != 0:
        raise Refused(f"git status failed in {ROOT}: {status.stderr.strip()}")
    changed = [line[3:] for line in status.stdout.splitlines()]
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise Refused(f"the working tree is not clean ({shown}): commit or remove the changes, then release")


def check_changelog(release: str) -> None:
    text = read("CHANGELOG.md")
    heading = re.search(rf"^## {re.escape(release)}(?:[ \t].*)?$", text, re.MULTILINE)
    if heading is None:
        raise Refused(
            f"CHANGELOG.md has no entry for {release}: add a heading `## {release} (core and template)` "
            "with the release's changes under it (docs/releasing.md, step 3)"
        )
    body = text[heading.end() :].split("\n## ", 1)[0]
    if not body.strip():
        raise Refused(f"CHANGELOG.md's entry for {release} is empty: write the release's changes under its heading")


def check_untagged(tag: str) -> None:
    existing = git("rev-parse", "--verify", "--quiet", f"refs/tags/{tag}^{{commit}}")
    if existing.returncode == 0:
        raise Refused(
            f"the tag {tag} already exists, on commit {existing.stdout.strip()[:12]}: a new release needs a new "
            "version in both files (and its own CHANGELOG entry)"
        )


def main() -> int:
    try:
        check_clean()
        release = version()
        check_changelog(release)
        tag = f"v{release}"
        check_untagged(tag)
    except Refused as reason:
        print(f"make release: refused: {reason}", file=sys.stderr)
        return 1
    tagged = git("tag", "--annotate", tag, "--message", f"trainwright {release}")
    if tagged.returncode != 0:
        print(f"make release: git tag {tag} failed: {tagged.stderr.strip()}", file=sys.stderr)
        return 1
    commit = git("rev-parse", "HEAD").stdout.strip()
    print(f"Tagged {tag} on {commit}. Next:")
    print(f"  git push origin main {tag}")
    print(f"  and record the cut: `{tag} {commit}` in tests/template/releases.txt (docs/releasing.md, step 6)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
