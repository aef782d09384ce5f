"""The per-process outcome waiter of SYNCHRONOUS sends (api/outcome_waiter.py), with a fake counts reader."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from api.outcome_waiter import OutcomeWaiter, WaiterFull, finished

DONE = {"apns": {"sent": 1, "pending": 0, "failed": 0, "total": 1}}
PENDING = {"apns": {"sent": 0, "pending": 1, "failed": 0, "total": 1}}


class Counts:
    """``counts_many`` over a dict the test changes; records every call's ids."""

    def __init__(self):
        self.state: dict[str, dict | None] = {}
        self.calls: list[list[str]] = []
        self.lock = threading.Lock()

    def __call__(self, ids: list[str]) -> dict:
        with self.lock:
            self.calls.append(list(ids))
            return {i: self.state.get(i) for i in ids}


def test_finished_means_nothing_pending():
    assert finished(DONE) and not finished(PENDING) and not finished(None)


def test_many_waiting_sends_are_read_together_and_each_wakes_when_done():
    counts = Counts()
    waiter = OutcomeWaiter(counts, capacity=500, first=0.005, longest=0.01)
    ids = [f"m{n}" for n in range(200)]
    for message_id in ids:
        counts.state[message_id] = PENDING
    with ThreadPoolExecutor(len(ids)) as pool:
        futures = [pool.submit(waiter.wait, message_id, 10.0) for message_id in ids]
        time.sleep(0.3)
        for message_id in ids:
            counts.state[message_id] = DONE
        started = time.monotonic()
        results = [f.result() for f in futures]
    assert results == [DONE] * len(ids)
    assert time.monotonic() - started < 2.0
    # One call reads many waiting ids (not one call per request per check).
    ids_read = sum(len(call) for call in counts.calls)
    assert ids_read / len(counts.calls) >= 20


def test_a_send_still_pending_at_its_timeout_answers_its_last_counts():
    counts = Counts()
    counts.state["slow"] = PENDING
    waiter = OutcomeWaiter(counts, capacity=10, first=0.005, longest=0.01)
    started = time.monotonic()
    assert waiter.wait("slow", 0.3) == PENDING
    assert 0.25 <= time.monotonic() - started < 2.0


def test_a_message_not_yet_expanded_answers_none_at_its_timeout():
    waiter = OutcomeWaiter(Counts(), capacity=10, first=0.005, longest=0.01)
    assert waiter.wait("unknown", 0.1) is None


def test_beyond_its_capacity_the_waiter_refuses_at_once():
    counts = Counts()
    counts.state["a"] = PENDING
    waiter = OutcomeWaiter(counts, capacity=1, first=0.005, longest=0.01)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(waiter.wait, "a", 1.0)
        time.sleep(0.1)
        with pytest.raises(WaiterFull):
            waiter.wait("b", 1.0)
        counts.state["a"] = DONE
        assert first.result() == DONE
    counts.state["b"] = DONE
    assert waiter.wait("b", 1.0) == DONE  # the place is free again


def test_a_failed_read_is_raised_in_every_waiting_request():
    def broken(ids):
        raise ConnectionError("database down")

    waiter = OutcomeWaiter(broken, capacity=10, first=0.005, longest=0.01)
    with pytest.raises(ConnectionError):
        waiter.wait("x", 5.0)
