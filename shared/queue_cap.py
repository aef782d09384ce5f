"""The cap per app on queued work (issue 15): deliveries waiting per app are bounded.

An app's cap is its ``max_queued_deliveries`` (set with ``POST /admin/app/limits``), else the setting
``PUSH_MAX_QUEUED_DELIVERIES_PER_APP`` (5,000,000: a million-user campaign on five providers' worth of
devices, far below what fills RabbitMQ's disk at a few hundred bytes per chunk message). Waiting
deliveries are the open deliveries (pending or retry) of the ledger's open chunks (``o``), counted for all
apps in one read of those chunks' state strings (and the entries of sends waiting for room, shared/pacing.py), at most once per ``queued_cache_seconds`` per API
process (:class:`WaitingCounts`): no scan per request. A send is refused while its app is at or above its
cap (api/queue_cap.py).
"""
from __future__ import annotations

import threading
import time
from collections import Counter

from pymongo.database import Database

from shared import db as mongo
from shared import pacing
from shared.ledger import OPEN_CHARS

#: The app document's field holding its own cap.
FIELD = "max_queued_deliveries"


def waiting_by_app(db: Database) -> Counter:
    """``Counter(app id: open deliveries)`` over the ledger's open chunks (one query, states and app only), plus the
    entries of the app's bulk sends waiting for room (shared/pacing.py: not expanded yet, one delivery an entry at least)."""
    counts: Counter = Counter()
    for doc in db[mongo.LEDGER].find({"o": True}, {"app": 1, "s": 1, "_id": 0}):
        states = doc.get("s") or ""
        counts[doc.get("app")] += sum(states.count(ch) for ch in OPEN_CHARS)
    counts.update({app_id: entries for app_id, (entries, _) in pacing.waiting_by_app(db).items()})
    return counts


class WaitingCounts:
    """:func:`waiting_by_app`, read again at most every ``seconds`` (thread-safe; one reader at a time)."""

    def __init__(self, db: Database, *, seconds: float, clock=time.monotonic):
        self.db = db
        self.seconds = seconds
        self.clock = clock
        self.lock = threading.Lock()
        self.counts: Counter = Counter()
        self.read_at: float | None = None

    def of(self, app_id: str) -> int:
        with self.lock:
            now = self.clock()
            if self.read_at is None or now - self.read_at >= self.seconds:
                self.counts = waiting_by_app(self.db)
                self.read_at = now
            return self.counts.get(app_id, 0)


def cap_of(app: dict, default: int) -> int:
    """The app's cap: its own setting, else ``default`` (0: no cap)."""
    own = app.get(FIELD)
    return int(own) if own is not None else default


def set_limits(db: Database, cmd: dict) -> None:
    """The ``app.limits`` write: the app's own cap (None: back to the default)."""
    value = cmd.get("max_queued_deliveries")
    update = {"$set": {FIELD: value}} if value is not None else {"$unset": {FIELD: ""}}
    db[mongo.APPS].update_one({"_id": cmd["app_id"]}, update)


HANDLERS = {"app.limits": set_limits}
