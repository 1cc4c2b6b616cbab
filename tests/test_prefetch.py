"""varco_ocr.prefetch: the next item is prepared in a thread while the caller holds the current one,
in order, bounded, with errors raised where they belong."""

from __future__ import annotations

import threading

import pytest

from varco_ocr.prefetch import prefetched


@pytest.mark.parametrize("enabled", [True, False])
def test_same_items_in_the_same_order(enabled):
    jobs = list(range(25))
    assert list(prefetched(iter(jobs), lambda j: j * j, enabled=enabled)) == [(j, j * j) for j in jobs]
    assert list(prefetched([], lambda j: j, enabled=enabled)) == []


def test_the_next_item_is_prepared_while_the_caller_holds_this_one():
    second_started = threading.Event()
    callers = []

    def prepare(job: int) -> int:
        callers.append(threading.current_thread().name)
        if job == 1:
            second_started.set()
        return job

    items = prefetched(range(3), prepare)
    assert next(items) == (0, 0)
    # Without the thread, job 1 would be prepared only when the caller asks for it: this would time out.
    assert second_started.wait(10), "job 1 was not prepared while the caller held job 0"
    assert list(items) == [(1, 1), (2, 2)]
    assert set(callers) == {"varco-ocr-prefetch"}


def test_at_most_two_prepared_items_are_alive():
    prepared = []
    items = prefetched(range(10), lambda j: prepared.append(j) or j)
    for taken, (job, _) in enumerate(items, start=1):
        # the caller holds `taken` items so far; the thread may be one ahead, never more
        threading.Event().wait(0.02)
        assert len(prepared) <= taken + 1
        assert job == taken - 1


def test_errors_reach_the_caller_after_the_items_before_them():
    def prepare(job: int) -> int:
        if job == 2:
            raise ValueError("bad page 2")
        return job

    items = prefetched(range(5), prepare)
    assert [next(items), next(items)] == [(0, 0), (1, 1)]
    with pytest.raises(ValueError, match="bad page 2"):
        next(items)

    def jobs():
        yield 0
        raise OSError("input gone")

    items = prefetched(jobs(), lambda j: j)
    assert next(items) == (0, 0)
    with pytest.raises(OSError, match="input gone"):
        next(items)


def test_closing_early_stops_the_thread():
    prepared = []
    items = prefetched(range(1000), lambda j: prepared.append(j) or j)
    next(items)
    items.close()
    assert not any(t.name == "varco-ocr-prefetch" for t in threading.enumerate())
    assert len(prepared) <= 3


def test_an_interrupt_while_waiting_for_work_ends_the_thread_through_stop():
    """The batch runner's jobs wait on a feed for the next batch. A Ctrl-C that lands while the caller
    waits for an item ends the generator; its ``stop`` must reach the jobs iterator, or joining the
    thread waits forever (a hang seen in test_ctrl_c_stops_cleanly_with_a_summary)."""
    import signal
    import threading
    import time

    stop = threading.Event()

    def jobs():
        yield 1
        while not stop.is_set():  # waits for work that never comes
            time.sleep(0.01)

    stream = prefetched(jobs(), lambda job: job * 10, stop=stop)
    assert next(stream) == (1, 10)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            next(stream)  # the second job never comes: the interrupt ends the wait
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert stop.is_set() and time.monotonic() - started < 5
    assert not [t for t in threading.enumerate() if t.name == "varco-ocr-prefetch"]
