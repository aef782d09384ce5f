"""A worker process's side of the shared provider budgets (shared/budgets.py): slices held locally, waits, 429s told.

Each (app, provider) has a local slice: requests this process may start, from
when, until when. A send takes one; when a quarter is left (or its end is near)
the next slice is taken from MongoDB in the background (a thread), twice the size
of the last (the budget caps it), so sends do not wait for the database. A wait
shorter than ``max_in_process_wait`` is slept here; a longer one is answered to
the caller, whose delivery then goes back to wait without a worker (a throttled
chunk: ``workers.deliver``). A provider's 429 drops the slice, blocks this
process at once for its ``Retry-After`` and tells every worker through the budget
(at most once per :data:`TELL_EVERY_SECONDS` per process: one overload brings a
burst of 429s).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from pymongo.database import Database
from pymongo.errors import PyMongoError

from shared import budgets

log = logging.getLogger(__name__)

#: Seconds a slice of an unrationed budget is used before the budget is read again (a Retry-After may have come).
UNRATIONED_SECONDS = 0.5
#: Seconds a slice may be used from its start, however short its share of the rate (a slice of 50 ms of a budget far
#: above what this process sends would else expire unused at once; spent late it is a burst of one slice at most).
SLICE_VALID_SECONDS = 1.0
#: Seconds before a slice's end at which the next one is taken.
PREFETCH_SECONDS = 0.1
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
    #: The current slice's size, and the next slice being taken (or taken) before this one runs out.
    size: int = 0
    fetch: asyncio.Future | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ProcessBudgets:
    """The process's budgets in one event loop (``workers.deliver.DeliveryContext.budgets``)."""

    def __init__(self, db: Database, *, max_in_process_wait: float = 2.0):
        self.db = db
        self.max_in_process_wait = max_in_process_wait
        self._local: dict[tuple[str, str], _Local] = {}

    def _local_of(self, app_id: str, provider: str) -> _Local:
        local = self._local.get((app_id, provider))
        if local is None:
            local = self._local[(app_id, provider)] = _Local()
        return local

    async def admit(self, app: dict, provider: str) -> float | None:
        """Wait for a request's turn: None once it may start, else the seconds it must wait (too long to wait here)."""
        local = self._local_of(app["_id"], provider)
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
                if local.fetch is None and (local.left <= local.size // 4 or local.until - now < PREFETCH_SECONDS):
                    # The next slice is taken while this one still serves: sends never stop for the database.
                    local.fetch = asyncio.ensure_future(self._take(app, provider, max(local.waiting, 2 * local.size)))
                if local.start > now:
                    await asyncio.sleep(local.start - now)
                return None
            async with local.lock:
                if local.left > 0 and time.time() <= local.until + SLICE_GRACE_SECONDS:
                    continue  # another coroutine took the next slice meanwhile
                fetch, local.fetch = local.fetch, None
                grant = await fetch if fetch is not None else await self._take(app, provider, local.waiting)
                if grant is None:
                    local.wait_until = time.time() + SLICE_GRACE_SECONDS  # MongoDB away: look again shortly
                elif grant.count:
                    local.left, local.start, local.size = grant.count, grant.start, grant.count
                    local.until = (grant.start + max(grant.until - grant.start, SLICE_VALID_SECONDS) if grant.until is not None
                                   else time.time() + UNRATIONED_SECONDS)
                else:
                    local.left, local.wait_until = 0, time.time() + grant.wait

    async def _take(self, app: dict, provider: str, want: int) -> budgets.Grant | None:
        try:
            return await asyncio.to_thread(budgets.take, self.db, app["_id"], provider, budgets.configured_per_second(app, provider),
                                           want=max(1, want))
        except PyMongoError as error:
            log.warning("budget of %s/%s not read: %s", app["_id"], provider, error)
            return None

    def blocked_for(self, app_id: str, provider: str) -> float | None:
        """Seconds this process still waits for the app's provider (a 429 came after the request was admitted), or None."""
        local = self._local.get((app_id, provider))
        wait = local.blocked_until - time.time() if local is not None else 0.0
        return wait if wait > 0 else None

    async def throttled(self, app_id: str, provider: str, retry_after: float | None) -> None:
        """The provider answered 429 (or HMS flow control) to a request of this app."""
        local = self._local_of(app_id, provider)
        now = time.time()
        local.left = 0
        local.blocked_until = max(local.blocked_until, now + (retry_after or 0.0))
        if now - local.told_at < TELL_EVERY_SECONDS:
            return
        local.told_at = now
        await asyncio.to_thread(budgets.throttled, self.db, app_id, provider, retry_after)
