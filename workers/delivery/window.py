"""The send gate: how many provider requests one worker process keeps in flight per provider, adapted (TCP Vegas).

Requests in flight are what a worker kill can leave unrecorded (sent again after
the lease: README "Delivery guarantees"), so the gate keeps no more in flight than
the provider's answer time needs. By Little's law a provider answering in ``r``
seconds at a rate ``x`` needs ``x * r`` requests in flight; more only queue (in the
provider, the socket or this event loop) and lengthen every answer. As TCP Vegas
does, the gate compares each window's mean answer time with the least seen lately
(``base``): ``limit * (1 - base / mean)`` requests are queued, not needed. Fewer
than :data:`ALPHA` queued: the limit grows (doubling until the first queue is
seen, then by one per window); more than :data:`BETA`: it sheds half the excess. A
provider answering over a WAN in 50 ms so gets hundreds in flight, one on
loopback a few tens. ``base`` is forgotten every :data:`BASE_RESET_SECONDS` (the
least answer time of a quieter moment would hold the limit low forever).

Between ``minimum`` and ``maximum`` (``PUSH_DELIVERY_MAX_IN_FLIGHT``). No
maintained library does this for asyncio (aioadaptive, a Vegas port, is a
pre-release of an unmaintained project): README "Dependencies".
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from contextlib import asynccontextmanager

#: Queued requests below which the limit grows, and above which it shrinks. Larger than TCP's 2-4: the event loop
#: stalls now and then (a chunk claimed, its payloads built) and the queued requests keep the provider busy meanwhile.
#: Measured 2026-12-03 (bench e2e, worker-SIGKILL wire repeats of 20,000): 3-6 → 5,661-5,894/s, 24; 6-12 → 7,589/s,
#: 50-110 (0.80 x a fixed 64 in one invocation); 8-16 → 0.83 x a fixed 64, 0-78; 10-20 → 8,100/s, 203-264;
#: a fixed 64 → 7,838/s, 342-534.
ALPHA, BETA = 8, 16
#: Seconds after which the least answer time seen is forgotten (taken again from the next window).
BASE_RESET_SECONDS = 10.0
#: The limit a gate starts at.
INITIAL = 8


class SendWindow:
    """An adaptive semaphore: ``async with window.slot():`` around one provider request."""

    def __init__(self, maximum: int, *, minimum: int = 4, initial: int = INITIAL, clock=time.monotonic):
        self.maximum = max(1, maximum)
        self.minimum = min(max(1, minimum), self.maximum)
        self.limit = min(max(initial, self.minimum), self.maximum)
        self.in_flight = 0
        self._clock = clock
        self._waiters: deque[asyncio.Future] = deque()
        self._window_sum = 0.0
        self._window_n = 0
        self._base: float | None = None
        self._base_at = clock()
        self._slow_start = True

    @asynccontextmanager
    async def slot(self):
        await self._acquire()
        started = self._clock()
        try:
            yield
        finally:
            self._release(self._clock() - started)

    async def _acquire(self) -> None:
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # the slot was handed over with ``in_flight`` already counted
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.in_flight -= 1
                self._wake()
            else:
                self._waiters.remove(waiter)
            raise

    def _release(self, seconds: float) -> None:
        self.in_flight -= 1
        self.observe(seconds)
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)

    def observe(self, seconds: float) -> None:
        """One answer time; every ``limit`` answers the limit is adjusted."""
        self._window_sum += seconds
        self._window_n += 1
        if self._window_n < self.limit:
            return
        mean = self._window_sum / self._window_n
        self._window_sum, self._window_n = 0.0, 0
        now = self._clock()
        if self._base is None or mean < self._base or now - self._base_at > BASE_RESET_SECONDS:
            self._base, self._base_at = mean, now
        queued = self.limit * (1.0 - self._base / mean) if mean > 0 else 0.0
        if queued < ALPHA:
            self.limit = self.limit * 2 if self._slow_start else self.limit + 1
        elif queued > BETA:  # half the excess at once: slow start overshoots by up to twice what is needed
            self._slow_start = False
            self.limit -= max(1, int((queued - BETA) / 2))
        else:
            self._slow_start = False
        self.limit = min(max(self.limit, self.minimum), self.maximum)
