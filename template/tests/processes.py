"""The tests' own subprocesses, waited on with a deadline: one past it is stopped, with its children, and the
test fails naming it, rather than hanging on a loaded machine."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable

import pytest


def start(command: list[str], **options) -> subprocess.Popen:
    """Start ``command`` in a session of its own (so that a deadline stops its children too), its output piped."""
    options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **options}
    return subprocess.Popen(command, start_new_session=True, **options)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process's session (torchrun then stops its workers), SIGKILL to what is left after 30 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):  # the session may have ended already
        os.killpg(process.pid, signal.SIGKILL)


def finish(process: subprocess.Popen, timeout: float, what: str) -> tuple[str, str]:
    """Wait up to ``timeout`` s for ``process`` to end and return its output; past that, stop it and fail."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(process)
        try:
            _, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # a descendant that left the session holds the pipes
            err = ""
        pytest.fail(f"{what} did not end within {timeout:.0f} s; stopped it. Its last output:\n{(err or '')[-4000:]}")


def wait_for(condition: Callable[[], bool], process: subprocess.Popen, timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` if ``process`` ends first or ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            _, err = process.communicate(timeout=30)
            pytest.fail(f"the process ended (code {process.returncode}) before {what}:\n{(err or '')[-4000:]}")
        if time.monotonic() > deadline:
            stop(process)
            pytest.fail(f"{what} did not happen within {timeout:.0f} s; stopped the process")
        time.sleep(0.01)
