"""The background sender behind the MLflow and W&B loggers: order, retries, and what flush reports."""

import contextlib
import threading
import time
import warnings

from trainwright.loggers import _sender
from trainwright.loggers._sender import BackgroundSender


class Destination:
    """Collects what is sent; fails while ``down`` is set, as an unreachable tracking server would."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.down = False
        self.failures = 0
        self.release = threading.Event()
        self.release.set()  # cleared: a send hangs until it is set, as one waiting on a dead server

    def send(self, items: list[int]) -> None:
        self.release.wait(30)
        if self.down:
            self.failures += 1
            raise ConnectionError("server unreachable")
        self.threads.add(threading.current_thread().name)
        self.batches.append(list(items))
        items.clear()


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


@contextlib.contextmanager
def sender_warnings():
    """Records the RuntimeWarnings that the sender's thread gives, every one of them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        messages: list[str] = []
        yield messages
    messages += [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def sent(destination):
    return [item for batch in destination.batches for item in batch]


def test_the_thread_sends_what_was_put_in_order():
    """Items put from the loop reach the destination from the sender's thread, in order, without flush."""
    destination = Destination()
    sender = BackgroundSender(destination.send, interval=0.05, name="test-sender")
    for item in range(5):
        sender.put(item)
    assert wait_for(lambda: sent(destination) == [0, 1, 2, 3, 4])
    assert destination.threads == {"test-sender"}
    assert sender.close(timeout=10) == 0


def test_flush_wakes_the_thread_and_close_stops_it():
    """flush makes the thread send before its interval is up; close sends the rest and ends the thread."""
    destination = Destination()
    sender = BackgroundSender(destination.send, interval=3600, name="test-sender", send_at_start=True)
    sender.put(1)
    assert wait_for(lambda: destination.batches == [[1]])  # the first send goes at once
    sender.put(2)
    sender.flush()
    assert wait_for(lambda: destination.batches == [[1], [2]])
    sender.put(3)
    thread = sender._thread
    assert sender.close(timeout=10) == 0
    assert destination.batches == [[1], [2], [3]]
    assert not thread.is_alive()


def test_flush_and_put_never_wait_on_a_hanging_send():
    """While a send hangs on the service, put, flush and drop return at once, and close gives up after its timeout."""
    destination = Destination()
    sender = BackgroundSender(destination.send, interval=3600, name="test-sender", send_at_start=True)
    destination.release.clear()
    sender.put(1)
    assert wait_for(lambda: sender.pending == 1 and sender._in_flight)  # the thread is inside send
    started = time.monotonic()
    sender.put(2)
    sender.flush()
    sender.drop(lambda item: True)
    # They returned while the send still hung (it ends only once released, or after 30 s): none waited for it.
    assert destination.batches == []
    assert time.monotonic() - started < 10  # at once; the bound only names it, far below the 30 s hang
    assert sender.close(timeout=0.2) == 2
    destination.release.set()
    assert wait_for(lambda: sent(destination) == [1])  # the abandoned thread ends the send it was in


def test_a_failed_send_keeps_its_items_until_the_service_is_back():
    """While the destination is down nothing is lost; once it is back everything arrives in order."""
    destination = Destination()
    destination.down = True
    sender = BackgroundSender(destination.send, interval=0.02, name="test-sender")
    with sender_warnings() as messages:
        sender.put(1)
        assert wait_for(lambda: destination.failures >= 1)
        sender.put(2)
        destination.down = False
        assert wait_for(lambda: sent(destination) == [1, 2])
    assert len(messages) == 2  # the outage and its end
    assert sender.close(timeout=10) == 0


def test_an_outage_warns_once_and_its_end_once():
    """Ten failing ticks give one RuntimeWarning naming the sender; the first success after them gives one more."""
    destination = Destination()
    destination.down = True
    sender = BackgroundSender(destination.send, interval=0.02, name="test-sender")
    with sender_warnings() as messages:
        sender.put(1)
        assert wait_for(lambda: destination.failures >= 10)  # ten ticks, each failing
        destination.down = False
        assert wait_for(lambda: sent(destination) == [1])
        sender.put(2)
        assert wait_for(lambda: sent(destination) == [1, 2])
    assert len(messages) == 2, messages
    assert messages[0].startswith("test-sender: sending failed (ConnectionError('server unreachable'))")
    assert "retrying every 0.02 s in the background" in messages[0]
    assert messages[1].startswith("test-sender: sending works again after")
    assert sender.close(timeout=10) == 0


def close_while_down(timeout: float) -> tuple[int, float, Destination, list[str]]:
    """Two items put while the service is down, then close(timeout) before any send: what it left, the
    seconds it took, the destination and the warnings."""
    destination = Destination()
    destination.down = True
    sender = BackgroundSender(destination.send, interval=3600, name="test-sender")
    with sender_warnings() as messages:
        sender.put(1)
        sender.put(2)
        started = time.monotonic()
        left = sender.close(timeout=timeout)
    return left, time.monotonic() - started, destination, messages


def test_close_gives_up_after_its_timeout_while_the_service_is_down(monkeypatch):
    """close retries until its timeout, then returns the number of items left unsent (with the second
    that an outage leaves a close made longer than the timeout, so that the timeout alone decides)."""
    monkeypatch.setattr(_sender, "_CLOSING_IN_OUTAGE", 60.0)
    left, seconds, destination, messages = close_while_down(timeout=1.2)  # tries at 0, 0.5 and 1 s
    assert left == 2
    assert len(messages) == 1
    assert 1.1 < seconds < 5
    assert destination.failures >= 2  # it retried while closing


def test_a_service_back_while_closing_gets_the_whole_timeout_for_what_is_left():
    """A send that fails while closing, then one that works but leaves items (a partial send), lifts the one-second
    limit again: close waits for the rest, here 2 s later, within its own timeout."""
    calls = []

    def send(items):
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise ConnectionError("server unreachable")
        if len(calls) < 6:
            del items[:1]  # one item per try, every half second: the last one after 2.5 s
        else:
            items.clear()

    sender = BackgroundSender(send, interval=3600, name="test-sender")
    with sender_warnings() as messages:
        for item in range(6):
            sender.put(item)
        started = time.monotonic()
        assert sender.close(timeout=30) == 0
    assert 2.0 < time.monotonic() - started < 20
    assert len(messages) == 2
    assert "sending failed" in messages[0]
    assert "sending works again" in messages[1]


def test_a_service_found_down_while_closing_gets_a_second_more_not_the_whole_timeout():
    """A close before any send (a run preempted in its first seconds) that finds the service down stops a
    second after the first failure, having tried again, rather than retrying for its whole 60 s."""
    left, seconds, destination, messages = close_while_down(timeout=60)
    assert left == 2
    assert 0.9 < seconds < 5
    assert destination.failures >= 2  # the try at close, and at least one more
    assert len(messages) == 1


def test_drop_forgets_buffered_items_and_those_of_a_failing_send():
    """drop removes the items that the predicate rejects, also from a send in flight that then fails."""
    destination = Destination()
    sender = BackgroundSender(destination.send, interval=3600, name="test-sender", send_at_start=True)
    sender.put(0)
    assert wait_for(lambda: destination.batches == [[0]])
    destination.release.clear()
    destination.down = True
    for item in range(1, 4):
        sender.put(item)
    sender.flush()
    assert wait_for(lambda: sender._in_flight == [1, 2, 3])
    for item in range(4, 7):
        sender.put(item)
    sender.drop(lambda item: item <= 2)  # a resume rewinds to item 2
    with sender_warnings() as messages:
        destination.release.set()
        assert wait_for(lambda: destination.failures == 1 and sender._in_flight is None)
        destination.down = False
        assert sender.close(timeout=10) == 0
    assert len(messages) == 2  # the outage and its end
    assert sent(destination) == [0, 1, 2]


def test_close_during_an_outage_makes_one_more_try_only():
    """Once a send has failed, close waits about a second, not its whole timeout, for a service that is down."""
    destination = Destination()
    destination.down = True
    sender = BackgroundSender(destination.send, interval=3600, name="test-sender", send_at_start=True)
    with sender_warnings() as messages:
        sender.put(1)
        assert wait_for(lambda: destination.failures == 1)
        started = time.monotonic()
        assert sender.close(timeout=60) == 1
    assert time.monotonic() - started < 5
    assert len(messages) == 1
