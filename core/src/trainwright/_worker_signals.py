"""Keeping DataLoader workers alive through the signals that a launcher sends the whole job.

torchrun forwards SIGTERM to its workers' process group, and SLURM signals every process of a
job step: DataLoader workers receive the preemption signal too. torch's worker handler lets a
SIGTERM from anyone but the worker's parent kill the worker (SIGUSR1's default action kills it
as well), and the main process then raises "DataLoader worker ... is killed by signal", instead
of saving at its next step. Workers therefore leave these signals to the main process.

One exception is kept: the main process itself stops a worker that does not exit with SIGTERM
(``Process.terminate``, at interpreter exit among others). A worker must still obey that, or
the main process waits on it forever. Telling the two apart needs the sender's pid, which only
``sigwaitinfo`` gives: the worker blocks the signals and a small thread takes them.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable
from typing import Any

#: What a scheduler or a launcher sends to ask for a checkpoint and an exit.
PREEMPTION_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name)
)


def check_signals(signals: Iterable[Any], where: str) -> tuple[signal.Signals, ...]:
    """``signals`` as a tuple of ``signal.Signals``.

    Raises:
        ValueError: an entry is not a signal that a process can block (SIGKILL and SIGSTOP cannot).
    """
    if isinstance(signals, (str, bytes, int)):
        raise ValueError(f"{where}: expected a collection of signals such as (signal.SIGTERM,), got {signals!r}")
    checked = []
    for value in signals:
        try:
            number = signal.Signals(value) if not isinstance(value, bool) else None
        except ValueError:
            number = None
        if number is None or number in (getattr(signal, "SIGKILL", None), getattr(signal, "SIGSTOP", None)):
            raise ValueError(
                f"{where}: {value!r} is not a signal that a worker can leave to the main process; "
                "use signals such as signal.SIGTERM or signal.SIGUSR1 (SIGKILL and SIGSTOP cannot be blocked)"
            )
        checked.append(number)
    return tuple(dict.fromkeys(checked))


class LeaveSignalsToMain:
    """A ``worker_init_fn`` that makes a worker leave ``signals`` to the main process, then runs
    the loader's own ``worker_init_fn``.

    Picklable (for the ``spawn`` and ``forkserver`` start methods) when the wrapped function is.
    Where the platform cannot tell who sent a signal (no ``sigwaitinfo``, e.g. macOS), only
    signals other than SIGTERM are ignored, and SIGTERM keeps torch's handling.

    Args:
        worker_init_fn: the loader's own, or ``None``.
        signals: the signals to leave to the main process.
    """

    def __init__(self, worker_init_fn: Callable[[int], Any] | None, signals: tuple[signal.Signals, ...]) -> None:
        self.worker_init_fn = worker_init_fn
        self.signals = signals
        self.main_pid = os.getpid()  # who may still stop a worker with SIGTERM, besides its parent

    def __call__(self, worker_id: int) -> None:
        _leave_to_main(self.signals, self.main_pid)
        if self.worker_init_fn is not None:
            self.worker_init_fn(worker_id)


def leave_signals_to_main(loader: Any, signals: tuple[signal.Signals, ...]) -> None:
    """Make ``loader``'s workers leave ``signals`` to the main process (its ``worker_init_fn`` is wrapped)."""
    if not signals or not getattr(loader, "num_workers", 0):
        return
    own = loader.worker_init_fn
    if isinstance(own, LeaveSignalsToMain):  # set up a second time: wrap the user's function once
        own = own.worker_init_fn
    loader.worker_init_fn = LeaveSignalsToMain(own, signals)


def _leave_to_main(signals: tuple[signal.Signals, ...], main_pid: int) -> None:
    if not hasattr(signal, "sigwaitinfo"):
        for number in signals:
            if number != getattr(signal, "SIGTERM", None):
                signal.signal(number, signal.SIG_IGN)
        return
    # Blocked here, in the worker's only thread, and so in every thread it starts later; the
    # thread below takes them from the pending set one at a time.
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    threading.Thread(target=_take, args=(signals, main_pid), name="trainwright-worker-signals", daemon=True).start()


def _take(signals: tuple[signal.Signals, ...], main_pid: int) -> None:
    while True:
        info = signal.sigwaitinfo(signals)
        if info.si_signo == signal.SIGTERM and info.si_pid in (main_pid, os.getppid()):
            os._exit(0)  # the main process stops its worker: exit as torch's own handler does
