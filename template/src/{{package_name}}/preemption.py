"""Preemption: a scheduler's warning signal ends the fit at the next step, with a checkpoint.

SLURM (``#SBATCH --signal``) and most schedulers send SIGTERM or SIGUSR1 some time before they
stop a job. ``PreemptionHandler`` catches the signals the config names and only records that
one came; the trainer finishes its optimizer step, saves ``last.ckpt`` and raises ``Preempted``,
which the command line turns into exit code ``EXIT_CODE``. ``--resume=last`` then continues as if
nothing had happened.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

EXIT_CODE = 75  # EX_TEMPFAIL: "try again later", which is what a preempted run asks for


class Preempted(Exception):
    """A preemption signal stopped the fit; ``last.ckpt`` holds the step it stopped after.

    ``checkpoint`` is None when the signal came before training began: nothing new was saved.
    """

    def __init__(self, signal_name: str | None, global_step: int, checkpoint: Path | None) -> None:
        # None: this process stopped because another one received the signal (they agree at reads).
        signal_name = signal_name or "a signal to another process"
        if checkpoint is None:  # the signal came before training began: the run dir holds what it held
            message = f"stopped by {signal_name} before training began (at optimizer step {global_step}); run it again"
        else:
            message = (
                f"stopped by {signal_name} after optimizer step {global_step}; saved {checkpoint}, "
                "resume with --resume=last"
            )
        super().__init__(message)
        self.signal_name, self.global_step, self.checkpoint = signal_name, global_step, checkpoint


class PreemptionHandler:
    """Records the first of ``signal_names`` that arrives while installed; ``received`` is its name.

    Installing replaces the signals' handlers and ``uninstall`` puts the old ones back. Outside
    the main thread, where Python cannot catch signals, it does nothing.
    """

    def __init__(self, signal_names: list[str]) -> None:
        self.signals = [signal.Signals[name] for name in signal_names]
        self.received: str | None = None
        self._previous: dict[signal.Signals, object] = {}

    def install(self) -> PreemptionHandler:
        if threading.current_thread() is threading.main_thread():
            for number in self.signals:
                self._previous[number] = signal.signal(number, self._record)
        return self

    def uninstall(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _record(self, number: int, frame: FrameType | None) -> None:
        self.received = self.received or signal.Signals(number).name
