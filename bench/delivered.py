"""When a benchmark's sends are done, read from the simulators' counters (their control ports' ``/stats``).

Never from the database: a baseline and the current tree keep deliveries in
different layouts, and reading them costs the database the run measures.
Every token a benchmark sends to is deliverable, so "delivered == expected"
is completion; no new delivery for ``stall_seconds`` fails the run.
"""
from __future__ import annotations

import time

import requests

from devstack.stack import Stack

#: Seconds without a new delivery after which a run is failed as stalled.
STALL_SECONDS = 60.0
#: Seconds between two reads of the counters.
POLL_SECONDS = 0.2
#: Seconds one read of a simulator's counters may take (its control port shares the loop that serves the sends).
STATS_TIMEOUT_SECONDS = 30


class Stalled(RuntimeError):
    """The simulators stopped receiving before a run delivered what it sent."""


def simulator_stats(stack: Stack) -> list[dict]:
    """Both simulators' ``/stats`` (delivered_total, last_delivered_at, …)."""
    ports = (stack.ports.apns_control, stack.ports.fcm_control)
    return [requests.get(f"http://127.0.0.1:{port}/stats", timeout=STATS_TIMEOUT_SECONDS).json() for port in ports]


def delivered_total(stack: Stack) -> int:
    """Sends both simulators have answered 200 so far."""
    return sum(stats["delivered_total"] for stats in simulator_stats(stack))


def wait_delivered(stack: Stack, expected: int, *, delivered_before: int, stall_seconds: float = STALL_SECONDS, what: str = "run") -> float:
    """Wait until the simulators delivered ``expected`` more than ``delivered_before``; answer the last delivery's time.

    The time is the simulators' ``last_delivered_at`` (epoch seconds), so polling
    late does not lengthen the run.
    """
    started = moved_at = time.monotonic()
    progress = -1
    while True:
        try:
            stats = simulator_stats(stack)
        except requests.RequestException:
            # A simulator too busy to answer in time (the machine is shared): the stall check decides.
            stats = None
        now = time.monotonic()
        delivered = progress if stats is None else sum(s["delivered_total"] for s in stats) - delivered_before
        if stats is not None and delivered >= expected:
            return max(s["last_delivered_at"] or 0.0 for s in stats)
        if delivered != progress:
            progress, moved_at = delivered, now
        elif now - moved_at > stall_seconds:
            raise Stalled(
                f"{what}: the simulators delivered {delivered:,} of {expected:,} in {now - started:.0f} s "
                f"and nothing more for {stall_seconds:.0f} s (see {stack.var_dir}/logs)"
            )
        time.sleep(POLL_SECONDS)
