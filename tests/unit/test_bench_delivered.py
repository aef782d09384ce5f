"""Completion by the simulators' counters: the last delivery's time, and a stall failing the run."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from bench import delivered


def counters(monkeypatch, readings: list[list[dict]]) -> None:
    """The simulators' /stats answers, one reading per poll (the last one repeated)."""
    answers = iter(readings)
    last = {}

    def read(_stack):
        last["value"] = next(answers, last.get("value"))
        if isinstance(last["value"], Exception):
            raise last["value"]
        return last["value"]

    monkeypatch.setattr(delivered, "simulator_stats", read)
    monkeypatch.setattr(delivered, "POLL_SECONDS", 0.01)


STACK = SimpleNamespace(var_dir=Path("var/bench/x"))


def test_done_when_both_simulators_delivered_what_was_sent(monkeypatch):
    counters(monkeypatch, [
        [{"delivered_total": 100, "last_delivered_at": 5.0}, {"delivered_total": 100, "last_delivered_at": 6.0}],
        [{"delivered_total": 140, "last_delivered_at": 10.0}, {"delivered_total": 150, "last_delivered_at": 12.0}],
        [{"delivered_total": 150, "last_delivered_at": 13.0}, {"delivered_total": 150, "last_delivered_at": 12.0}],
    ])
    assert delivered.wait_delivered(STACK, 100, delivered_before=200) == 13.0


def test_no_progress_fails_the_run_with_what_was_delivered(monkeypatch):
    counters(monkeypatch, [[{"delivered_total": 40, "last_delivered_at": 1.0}, {"delivered_total": 30, "last_delivered_at": 1.0}]])
    with pytest.raises(delivered.Stalled, match="e2e: the simulators delivered 60 of 100 .* nothing more for 0 s"):
        delivered.wait_delivered(STACK, 100, delivered_before=10, stall_seconds=0.2, what="e2e")


def test_a_simulator_too_busy_to_answer_once_does_not_end_the_wait(monkeypatch):
    counters(monkeypatch, [
        requests.ReadTimeout("busy"),
        [{"delivered_total": 50, "last_delivered_at": 7.0}, {"delivered_total": 50, "last_delivered_at": 8.0}],
    ])
    assert delivered.wait_delivered(STACK, 100, delivered_before=0) == 8.0
