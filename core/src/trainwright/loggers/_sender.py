"""A buffer that a background thread sends to a tracking service, so the training loop never waits on it."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

_CLOSING_RETRY = 0.5  # seconds between two tries while close() waits for the rest to go out
# While the service is known to be down, or once a send fails while closing, close() waits one
# second more: waiting out its whole timeout for a service that is not there would only eat
# into a preempted job's grace period (a run preempted in its first seconds closes before the
# first send has failed).
_CLOSING_IN_OUTAGE = 1.0


def check_seconds(owner: str, name: str, value: object) -> None:
    """Raise a ``ValueError`` naming ``owner`` and ``name`` unless ``value`` is seconds a thread can wait.

    That is a number above 0 and at most ``threading.TIMEOUT_MAX`` (so neither infinite nor NaN):
    a longer wait would make ``Thread.join`` raise ``OverflowError`` when the logger closes.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= threading.TIMEOUT_MAX:
        most = f"{threading.TIMEOUT_MAX:g}"
        raise ValueError(f"{owner}: {name}={value!r} must be a number of seconds above 0, at most {most}")


@dataclasses.dataclass
class _Closing:
    """One thread's stop request. ``close`` sets ``began`` and ``by``, then ``asked``; the thread
    reads them only once it sees ``asked`` set, so the event orders the two threads' accesses."""

    asked: threading.Event = dataclasses.field(default_factory=threading.Event)
    began: float = 0.0  # when close() was called (time.monotonic())
    by: float = 0.0  # close()'s own deadline: when its timeout runs out


class BackgroundSender:
    """Holds items until a daemon thread sends them, every ``interval`` seconds or when ``flush`` asks.

    No method waits on the service in the caller's thread: ``put``, ``flush`` and ``drop`` only
    touch a list under a lock, and ``close`` waits at most its timeout. Only the thread sends,
    one send at a time, in the order the items were put. ``send`` is called with a non-empty
    list and removes from its front what it has sent; when it raises, the rest is kept and
    retried on the next tick, for as long as the service is down. An outage is reported once,
    with a ``RuntimeWarning`` when the first send fails, and its end once, when a send succeeds
    again.

    Args:
        send: called with a list of items; removes the sent ones from the list, or raises.
        interval: seconds between the thread's sends.
        name: the thread's name, for debuggers and warnings.
        send_at_start: whether the thread's first send goes at once (to open a tracker's run
            early) rather than after ``interval``.
    """

    def __init__(
        self, send: Callable[[list[Any]], None], interval: float, name: str, send_at_start: bool = False
    ) -> None:
        self._send = send
        self._send_at_start = send_at_start
        self._interval = interval
        self._name = name
        self._items: list[Any] = []
        self._in_flight: list[Any] | None = None  # what a send is working on, for close()'s count
        self._keeps: list[Callable[[Any], bool]] = []  # drop()s made during a send, for its leftovers
        self._lock = threading.Lock()  # guards the three above; held for list operations only
        self._send_lock = threading.Lock()  # one send at a time, so items arrive in order
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closing: _Closing | None = None  # the running thread's
        self._down_since: float | None = None  # when the current outage began (time.monotonic())

    @property
    def lock(self) -> threading.Lock:
        """Held during every send: hold it to call the service between two sends, never during one."""
        return self._send_lock

    @property
    def pending(self) -> int:
        """The number of items not sent yet."""
        with self._lock:
            return len(self._items) + len(self._in_flight or ())

    def put(self, item: Any) -> None:
        """Buffer ``item``; the first call starts the thread."""
        with self._lock:
            self._items.append(item)
        if self._thread is None:
            self._closing = _Closing()
            self._thread = threading.Thread(target=self._run, args=(self._closing,), name=self._name, daemon=True)
            self._thread.start()

    def drop(self, keep: Callable[[Any], bool]) -> None:
        """Forget the items not sent yet for which ``keep`` is false."""
        with self._lock:
            self._items = [item for item in self._items if keep(item)]
            if self._in_flight is not None:
                self._keeps.append(keep)  # applied to what that send leaves, if it fails

    def flush(self) -> None:
        """Ask the thread to send everything now; returns at once, without waiting for the service."""
        self._wake.set()

    def close(self, timeout: float) -> int:
        """Let the thread send the rest, retrying until it is sent or ``timeout`` seconds have passed, then stop it.

        While the service is down (the last send failed, before or during the wait), the wait
        ends a second after that is known.

        Returns:
            The number of items left unsent: 0 when everything went out. A thread still
            waiting on the service when the time is up is left to finish that send on its own.
        """
        thread, closing = self._thread, self._closing
        if thread is None or closing is None:
            return self.pending
        if self._down_since is not None:
            timeout = min(timeout, _CLOSING_IN_OUTAGE)
        closing.began = time.monotonic()
        closing.by = closing.began + timeout
        closing.asked.set()
        self._wake.set()
        thread.join(timeout)  # returns sooner when the thread finds the service down meanwhile
        self._thread = self._closing = None
        return self.pending

    def _run(self, closing: _Closing) -> None:
        first = self._send_at_start
        while True:
            if not first:
                self._wake.wait(_CLOSING_RETRY if closing.asked.is_set() else self._interval)
            first = False
            self._wake.clear()
            with contextlib.suppress(Exception):  # a warning turned into an error must not end the thread
                self._send_pending()
            if closing.asked.is_set():
                deadline = closing.by
                down_since = self._down_since  # written by this thread only
                if down_since is not None:  # down when close() began, or found down since: a second more
                    deadline = min(deadline, max(down_since, closing.began) + _CLOSING_IN_OUTAGE)
                if not self.pending or time.monotonic() >= deadline:
                    return

    def _send_pending(self) -> None:
        with self._send_lock:
            with self._lock:
                items, self._items = self._items, []
                self._in_flight = items
                if not items:
                    self._in_flight = None
                    return
            try:
                self._send(items)
            except Exception as error:
                with self._lock:
                    for keep in self._keeps:
                        items = [item for item in items if keep(item)]
                    self._items[:0] = items  # kept, ahead of what arrived meanwhile
                    self._in_flight, self._keeps = None, []
                self._report_outage(error)
                return
            with self._lock:
                self._items[:0] = items  # what send left (nothing, when it sent everything)
                self._in_flight, self._keeps = None, []
            self._report_recovery()

    def _report_outage(self, error: Exception) -> None:
        if self._down_since is not None:
            return
        self._down_since = time.monotonic()
        warnings.warn(
            f"{self._name}: sending failed ({error!r}); keeping {self.pending} items and retrying every "
            f"{self._interval:g} s in the background. Training and checkpoints do not wait for it.",
            RuntimeWarning,
            stacklevel=1,
        )

    def _report_recovery(self) -> None:
        if self._down_since is None:
            return
        seconds, self._down_since = time.monotonic() - self._down_since, None
        warnings.warn(f"{self._name}: sending works again after {seconds:.0f} s", RuntimeWarning, stacklevel=1)
