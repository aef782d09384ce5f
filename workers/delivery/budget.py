"""A worker process's side of the shared provider budgets (shared/budgets.py): slices held locally, waits, 429s told.

Each (app, provider) has a local slice: requests this process may start, from
when, until when. A send takes one; when none is left one coroutine takes the
next slice from MongoDB (in a thread) while the others wait for it. A wait
shorter than ``max_in_process_wait`` is slept here; a longer one is answered to
the caller, whose delivery then goes back to wait without a worker (a throttled
chunk: ``workers.deliver``). A provider's 429 drops the slice, blocks this
process at once for its ``Retry-After`` and tells every worker through the budget
(at most once per :data:`TELL_EVERY_SECONDS` per process: one overload brings a
burst of 429s).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from pymongo.database import Database

from shared import budgets

#: Seconds a slice of an unrationed budget is used before the budget is read again (a Retry-After may have come).
UNRATIONED_SECONDS = 0.5
#: Seconds past its end a slice's unused requests may still start.
SLICE_GRACE_SECONDS = 0.05
#: Shortest time between two 429s this process tells the budget of.
TELL_EVERY_SECONDS = 0.25


@dataclass
class _Local:
    left: int = 0
    start: float = 0.0
    until: float = 0.0
    #: Until when this process sends nothing: the budget is taken ahead (``wait_until``) or a 429's Retry-After runs.
    wait_until: float = 0.0
    blocked_until: float = 0.0
    #: Coroutines waiting in :meth:`ProcessBudgets.admit`: the size of the next slice asked for.
    waiting: int = 0
    told_at: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ProcessBudgets:
    """The process's budgets in one event loop (``workers.deliver.DeliveryContext.budgets``)."""

    def __init__(self, db: Database, *, max_in_process_wait: float = 2.0):
        self.db = db
        self.max_in_process_wait = max_in_process_wait
        self._local: dict[tuple[str, str], _Local] = {}

    async def admit(self, app: dict, provider: str) -> float | None:
        """Wait for a request's turn: None once it may start, else the seconds it must wait (too long to wait here)."""
        local = self._local.get((app["_id"], provider))
        if local is None:
            local = self._local[(app["_id"], provider)] = _Local()
        local.waiting += 1
        try:
            return await self._admit(local, app, provider)
        finally:
            local.waiting -= 1

    async def _admit(self, local: _Local, app: dict, provider: str) -> float | None:
        while True:
            now = time.time()
            until = max(local.blocked_until, local.wait_until)
            if until > now:
                wait = until - now
                if wait > self.max_in_process_wait:
                    return wait
                await asyncio.sleep(wait)
                continue
            if local.left > 0 and now <= local.until + SLICE_GRACE_SECONDS:
                local.left -= 1
                if local.start > now:
                    await asyncio.sleep(local.start - now)
                return None
            async with local.lock:
                if local.left > 0 and time.time() <= local.until + SLICE_GRACE_SECONDS:
                    continue  # another coroutine took the next slice meanwhile
                grant = await asyncio.to_thread(budgets.take, self.db, app["_id"], provider,
                                                budgets.configured_per_second(app, provider), want=local.waiting)
                if grant.count:
                    local.left, local.start = grant.count, grant.start
                    local.until = grant.until if grant.until is not None else time.time() + UNRATIONED_SECONDS
                else:
                    local.left, local.wait_until = 0, time.time() + grant.wait

    def blocked_for(self, app_id: str, provider: str) -> float | None:
        """Seconds this process still waits for the app's provider (a 429 came after the request was admitted), or None."""
        local = self._local.get((app_id, provider))
        wait = local.blocked_until - time.time() if local is not None else 0.0
        return wait if wait > 0 else None

    async def throttled(self, app_id: str, provider: str, retry_after: float | None) -> None:
        """The provider answered 429 (or HMS flow control) to a request of this app."""
        local = self._local.get((app_id, provider))
        if local is None:
            local = self._local[(app_id, provider)] = _Local()
        now = time.time()
        local.left = 0
        local.blocked_until = max(local.blocked_until, now + (retry_after or 0.0))
        if now - local.told_at < TELL_EVERY_SECONDS:
            return
        local.told_at = now
        await asyncio.to_thread(budgets.throttled, self.db, app_id, provider, retry_after)
