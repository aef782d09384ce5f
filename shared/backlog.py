"""The per-app backlog (issue 15): deliveries waiting and in flight per app, lane and provider, from the ledger.

Read from the ledger's open chunks only (``o``: some delivery pending or retry; index ``o, app``), their state
strings, holders (``c``), lanes (``l``, absent: bulk) and insert times (``at``), in one query:

- ``waiting``: open deliveries of chunks no worker holds (queued, or re-enqueued with a delay);
- ``in_flight``: open deliveries of chunks a worker holds (claimed, being sent);
- ``retry``: open deliveries in state ``retry`` (a provider answered a transient error; also counted above);
- ``oldest_waiting_seconds``: age of the oldest open chunk (now minus its insert time);
- ``throttled``: open deliveries waiting for their app's provider budget (shared/budgets.py; also counted above);
- ``parked``: open deliveries of chunks parked in MongoDB until due (a long budget wait, a paused message, a long
  retry: shared/scheduling.py ``later``; also counted in ``waiting``), read from ``scheduled`` in the same pass;
- ``paced``: entries of the app's bulk sends waiting for room under its bound (shared/pacing.py ``paced_sends``): not
  expanded yet, so they have no provider (the row's provider is ``-``) and are in no other figure; the oldest
  waiting age of that row is the oldest such send's.

The cost is one read of the open chunks' small fields, at most once per ``BACKLOG_CACHE_SECONDS`` per process
(:func:`cached`): scrapes and dashboards poll, the figure is for people and alerts.
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass

from pymongo.database import Database

from shared import db as mongo
from shared import pacing
from shared.budgets import BUDGET_REASON
from shared.commands import BULK
from shared.ledger import CHAR, PENDING, RETRY
from shared.scheduling import SCHEDULED

#: The provider of a row of sends not expanded yet.
NO_PROVIDER = "-"
#: Seconds one process reuses its backlog figures.
BACKLOG_CACHE_SECONDS = 5.0


@dataclass
class Backlog:
    app: str
    lane: str
    provider: str
    waiting: int = 0
    in_flight: int = 0
    retry: int = 0
    oldest_waiting_seconds: float = 0.0
    throttled: int = 0
    parked: int = 0
    paced: int = 0

    def as_json(self) -> dict:
        return asdict(self)


def compute(db: Database, *, now: float | None = None) -> list[Backlog]:
    """The backlog of every (app, lane, provider) with open deliveries, sorted."""
    now = time.time() if now is None else now
    rows: dict[tuple, Backlog] = {}
    projection = {"app": 1, "p": 1, "s": 1, "c": 1, "l": 1, "at": 1, "r": 1}
    parked = {d.get("chunk") for d in db[SCHEDULED].find({"parked": {"$exists": True}}, {"chunk": 1})}
    for doc in db[mongo.LEDGER].find({"o": True}, projection):
        key = (str(doc.get("app")), doc.get("l") or BULK, doc.get("p"))
        row = rows.get(key) or rows.setdefault(key, Backlog(*key))
        states = doc.get("s") or ""
        pending, retry = states.count(CHAR[PENDING]), states.count(CHAR[RETRY])
        if pending + retry == 0:
            continue
        if doc.get("c") is not None:
            row.in_flight += pending + retry
        else:
            row.waiting += pending + retry
        row.retry += retry
        row.throttled += sum(1 for i, reason in (doc.get("r") or {}).items()
                             if reason == BUDGET_REASON and states[int(i)] == CHAR[RETRY])
        if doc["_id"] in parked:
            row.parked += pending + retry
        row.oldest_waiting_seconds = max(row.oldest_waiting_seconds, now - float(doc.get("at") or now))
    for app_id, (entries, oldest) in pacing.waiting_by_app(db).items():
        rows[(app_id, BULK, NO_PROVIDER)] = Backlog(app_id, BULK, NO_PROVIDER, paced=entries,
                                                    oldest_waiting_seconds=max(0.0, now - oldest / 1e9))
    return [rows[k] for k in sorted(rows) if rows[k].waiting + rows[k].in_flight + rows[k].paced]


_lock = threading.Lock()
_cache: dict = {}


def cached(db: Database, *, seconds: float = BACKLOG_CACHE_SECONDS) -> list[Backlog]:
    """:func:`compute`, reused for ``seconds`` per process (per database)."""
    with _lock:
        hit = _cache.get(id(db))
        if hit is not None and time.monotonic() - hit[0] < seconds:
            return hit[1]
        rows = compute(db)
        _cache[id(db)] = (time.monotonic(), rows)
        return rows

