"""Host-device syncs per 100 optimizer steps of the generated project, with the defaults and each ``nonfinite_loss``.

A sync is a read of a tensor's value on the host: ``.item()``, ``float()``, ``bool()``,
``int()``, ``.tolist()``, ``.cpu()`` or ``.numpy()``. On a GPU each one waits until the device
has run everything queued before it. The reads are counted exactly as the generated project's
own test counts them (``tests/test_hot_path.py``, imported from the rendered project, so the two
can never disagree): a ``torch.overrides.TorchFunctionMode`` sees every such call, and counts
those made from the project's or trainwright's code, not from torch's internals nor from inside
a ``DataLoader``, while training, outside validation.

The template is rendered with the default answers (the classification task) and ``fit`` runs
the default config for 100 optimizer steps, which cross an epoch's end (its validation and
checkpoints included). On a machine with a GPU the default config trains there; the counts do
not depend on the device.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import importlib
import io
import sys
import tempfile
from pathlib import Path

from _harness import table
from _project import project_module, render_project

PACKAGE = "bench_host_syncs"
STEPS = 100  # what the project's reads_in_100_steps runs
POLICIES = ("stop", "skip", "ignore")


def run() -> dict[str, list[str]]:
    """``nonfinite_loss`` policy -> the reads of 100 steps, each as ``"<call> in <file>:<line>"``."""
    with tempfile.TemporaryDirectory() as tmp:
        dst = render_project(Path(tmp) / "project", PACKAGE)
        sys.path.insert(0, str(dst / "tests"))
        try:
            hot_path = importlib.import_module("test_hot_path")
        finally:
            sys.path.remove(str(dst / "tests"))
        config_class = project_module(PACKAGE, "config").Config
        default = config_class()
        reads = {}
        for policy in POLICIES:
            config = dataclasses.replace(default, run_dir=Path(tmp) / f"run-{policy}", nonfinite_loss=policy)
            with contextlib.redirect_stdout(io.StringIO()):  # the fit's prints (validation, timing summary)
                reads[policy] = hot_path.reads_in_100_steps(config)
        # Not imported again by a later render: the next project's tests would import their own.
        del sys.modules["test_hot_path"]
    return reads


def report(reads: dict[str, list[str]]) -> str:
    default = project_module(PACKAGE, "config").Config()
    rows = []
    for policy, found in reads.items():
        where = collections.Counter(found)
        name = f"`{policy}`" + (" (default)" if policy == default.nonfinite_loss else "")
        places = ", ".join(f"{count} × `{read}`" for read, count in where.most_common())
        rows.append((name, str(len(found)), f"{len(found) / STEPS:.2f}", places or "none"))
    intro = (
        f"The default config (`log_every_n_steps={default.log_every_n_steps}`), {STEPS} optimizer steps, "
        "outside validation:\n\n"
    )
    return intro + table(rows, ("`nonfinite_loss`", f"syncs per {STEPS} steps", "per step", "where"))


if __name__ == "__main__":
    print(report(run()))
