"""The background sender behind the MLflow and W&B loggers: order, retries, and what flush reports."""

import threading
import time

import pytest

from trainwright.loggers._sender import BackgroundSender


class Destination:
    """Collects what is sent; fails while ``down`` is set, as an unreachable tracking server would."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.down = False
        self.failures = 0

    def send(self, items: list[int]) -> None:
        if self.down:
            self.failures += 1
            raise ConnectionError("server unreachable")
        self.threads.add(threading.current_thread().name)
        self.batches.append(list(items))


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_the_thread_sends_what_was_put_in_order():
    """Items put from the loop reach the destination from the sender's thread, in order, without flush."""
    destination = Destination()
    sender = BackgroundSender(destination.send, interval=0.05, name="test-sender")
    for item in range(5):
        sender.put(item)
    assert wait_for(lambda: [item for batch in destination.batches for item in batch] == [0, 1, 2, 3, 4])
    assert destination.threads == {"test-sender"}
    sender.close()


def test_flush_sends_at_once_and_close_stops_the_thread():
    """flush sends from the caller's thread; close sends the rest and ends the thread."""
    destination = Destination()
    sender = BackgroundSender(destination.send, interval=3600, name="test-sender")
    sender.put(1)
    thread = sender._thread
    sender.flush()
    assert destination.batches == [[1]]
    sender.put(2)
    sender.close()
    assert destination.batches == [[1], [2]]
    assert not thread.is_alive()


def test_a_failed_send_keeps_its_items_and_flush_raises():
    """While the destination is down flush raises and nothing is lost; once it is back all arrives in order."""
    destination = Destination()
    sender = BackgroundSender(destination.send, interval=3600, name="test-sender")
    sender.put(1)
    destination.down = True
    with pytest.raises(ConnectionError):
        sender.flush()
    sender.put(2)
    destination.down = False
    sender.close()
    assert destination.batches == [[1, 2]]


def test_the_thread_warns_once_and_retries():
    """A failing background send warns once (RuntimeWarning naming the sender) and is retried on the next tick."""
    destination = Destination()
    destination.down = True
    sender = BackgroundSender(destination.send, interval=0.02, name="test-sender")

    def put_and_wait():
        sender.put(1)
        assert wait_for(lambda: destination.failures >= 10)  # ten ticks, each failing

    with pytest.warns(RuntimeWarning, match="test-sender: sending failed, will retry") as caught:
        put_and_wait()
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1
    destination.down = False
    assert wait_for(lambda: destination.batches == [[1]])
    sender.close()


def test_drop_forgets_buffered_items():
    """drop removes the buffered items that the predicate rejects."""
    destination = Destination()
    sender = BackgroundSender(destination.send, interval=3600, name="test-sender")
    for item in range(6):
        sender.put(item)
    sender.drop(lambda item: item <= 2)
    sender.close()
    assert destination.batches == [[0, 1, 2]]
