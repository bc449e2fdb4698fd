"""A buffer that a background thread sends to a tracking service, so the training loop never waits on it."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from typing import Any


class BackgroundSender:
    """Holds items until a daemon thread sends them, every ``interval`` seconds, or ``flush`` does.

    ``put`` only appends to a list under a lock: no I/O, no waiting on the service. One send runs
    at a time, in the order the items were put, whether the thread or ``flush`` runs it. A send
    that fails keeps its items for the next try; the thread warns once, and ``flush`` raises.

    Args:
        send: called with a non-empty list of items; sends all of them or raises.
        interval: seconds between the thread's sends.
        name: the thread's name, for debuggers and warnings.
    """

    def __init__(self, send: Callable[[list[Any]], None], interval: float, name: str) -> None:
        self._send = send
        self._interval = interval
        self._name = name
        self._items: list[Any] = []
        self._items_lock = threading.Lock()  # guards _items; held for an append or a swap only
        self._send_lock = threading.Lock()  # one send at a time, so items arrive in order
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = False

    @property
    def lock(self) -> threading.Lock:
        """Held during every send: hold it to call the service between two sends, never during one."""
        return self._send_lock

    def put(self, item: Any) -> None:
        """Buffer ``item``; the first call starts the thread."""
        with self._items_lock:
            self._items.append(item)
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def drop(self, keep: Callable[[Any], bool]) -> None:
        """Forget the buffered items for which ``keep`` is false."""
        with self._send_lock, self._items_lock:
            self._items = [item for item in self._items if keep(item)]

    def flush(self) -> None:
        """Send everything buffered now, from the calling thread.

        Raises:
            Exception: whatever ``send`` raised; the items stay buffered.
        """
        self._send_pending()

    def close(self) -> None:
        """Stop the thread, then send what is left (raising as ``flush`` does)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self._send_pending()

    def _send_pending(self) -> None:
        with self._send_lock:
            with self._items_lock:
                items, self._items = self._items, []
            if not items:
                return
            try:
                self._send(items)
            except BaseException:
                with self._items_lock:
                    self._items[:0] = items  # keep them, ahead of what arrived meanwhile
                raise

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._send_pending()
            except Exception as error:  # the service may come back; flush() reports it if not
                if not self._warned:
                    self._warned = True
                    warnings.warn(f"{self._name}: sending failed, will retry: {error!r}", RuntimeWarning, stacklevel=1)
