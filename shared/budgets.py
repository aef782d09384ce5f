"""Provider budgets shared by every worker process (issue 15): a send rate per (app, provider), held in MongoDB.

One document per app and provider in ``budgets`` (``_id`` ``<app>:<provider>``) is
the budget of all workers together, a GCRA (generic cell rate algorithm): ``tat``
is the time at which the budget is next free. A worker process takes a *slice*
of it (``rate`` × :data:`SLICE_SECONDS` requests, at least one) by one
compare-and-set that moves ``tat`` on by the slice's duration, and sends the
slice's requests from its start; so the database sees a few writes per second
per app and provider, whatever the number of workers or notifications.

The rate is the app's configured one (``budgets.<provider>`` of the app, per
minute, set by ``POST /admin/app/budget/update``), else the provider's documented
default (:data:`DEFAULT_PER_MINUTE`: FCM v1 600,000 messages per minute per
project); a provider without one is not rationed, but still honours a
``Retry-After``. A provider's 429 (or HMS flow control) lowers the rate for
every worker (:func:`throttled`: the ``ceiling`` becomes :data:`DECREASE` × the rate
refused and the rate :data:`DECREASE` × the ceiling, at most once per
:data:`DECREASE_EVERY_SECONDS`) and blocks the budget until its ``Retry-After``; the rate comes
back by :data:`INCREASE` per :data:`INCREASE_EVERY_SECONDS` to just below the
ceiling, then probes above it only slowly (:data:`PROBE`), so it settles near
the provider's real quota with few 429s.

Times are unix seconds of each worker's clock (the workers' clocks are assumed
in step within a few ms: NTP); a wrong clock skews the rate, never a delivery.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from shared import db as mongo
from shared import db_counters

BUDGETS = "budgets"
#: The reason a delivery waiting for its app's budget is recorded with (not a provider's answer: nothing was sent).
BUDGET_REASON = "throttled: the app's provider budget is spent"
#: Per-minute defaults by provider (documented quotas); a provider not named is not rationed unless configured.
DEFAULT_PER_MINUTE = {"fcm": 600_000}
#: Seconds of the budget's rate one slice holds.
SLICE_SECONDS = 0.05
#: The longest a slice may start after it is taken (a worker waits that long in-process; longer: the chunk waits).
MAX_AHEAD_SECONDS = 1.0
#: The factor a 429 lowers the rate's ceiling by (from the rate refused) and the rate by (from the ceiling), and how
#: often it may (the burst of 429s one overload brings counts once).
DECREASE, DECREASE_EVERY_SECONDS = 0.9, 1.0
#: The factor the rate comes back by, how often, up to this share of the rate it was refused at.
INCREASE, INCREASE_EVERY_SECONDS, BELOW_CEILING = 1.1, 1.0, 0.98
#: Above that share, the factor and period of a probe for a higher quota.
PROBE, PROBE_EVERY_SECONDS = 1.02, 2.0
#: The lowest a rate is lowered to (per second).
MIN_RATE = 1.0
#: Compare-and-set attempts before a take answers "wait a moment".
CAS_TRIES = 5


def budget_id(app_id: str, provider: str) -> str:
    return f"{app_id}:{provider}"


def configured_per_second(app: dict | None, provider: str) -> float | None:
    """The app's budget for ``provider`` (per second): its own setting, else the provider's default, else None."""
    per_minute = ((app or {}).get("budgets") or {}).get(provider, DEFAULT_PER_MINUTE.get(provider))
    return None if per_minute is None else per_minute / 60.0


@dataclass(frozen=True)
class Grant:
    """What a take answered: ``count`` requests that may start from ``start`` until ``until`` (unix seconds; None: an
    unrationed budget); none: ``wait`` first."""

    count: int
    start: float
    wait: float = 0.0
    until: float | None = None


def take(db: Database, app_id: str, provider: str, configured: float | None, *, want: int | None = None,
         now: float | None = None) -> Grant:
    """Take a slice of the budget for this process (one compare-and-set): ``want`` requests (those waiting), at most
    :data:`SLICE_SECONDS` of the rate (a slice not used by its end is lost to everyone)."""
    budgets = db[BUDGETS]
    key = budget_id(app_id, provider)
    for _ in range(CAS_TRIES):
        now = time.time() if now is None else now
        doc = _read(budgets, key, configured, now)
        blocked = float(doc.get("blocked_until", 0.0))
        if blocked > now:
            return Grant(0, blocked, blocked - now)
        rate = _rate(doc, configured, now)
        if rate is None:  # not rationed: only a Retry-After holds it
            return Grant(1 << 30, now)
        start = max(float(doc.get("tat", 0.0)), now)
        if start - now > MAX_AHEAD_SECONDS:
            return Grant(0, start, start - now - MAX_AHEAD_SECONDS / 2)
        count = max(1, min(int(rate * SLICE_SECONDS), want or 1 << 30))
        fields = {"tat": start + count / rate, "rate": rate, "configured": configured, "v": doc.get("v", 0) + 1}
        if rate != doc.get("rate"):
            fields["changed_at"] = now
        db_counters.count(written=1)
        if budgets.update_one({"_id": key, "v": doc.get("v", 0)}, {"$set": fields}).modified_count:
            return Grant(count, start, until=fields["tat"])
        now = None  # another worker took a slice meanwhile: look again
    return Grant(0, time.time(), SLICE_SECONDS)


def _read(budgets, key: str, configured: float | None, now: float) -> dict:
    """The budget document, created first when there is none (a racing creator's wins)."""
    db_counters.count()
    doc = budgets.find_one({"_id": key})
    if doc is not None:
        return doc
    doc = {"_id": key, "rate": configured, "configured": configured, "tat": now, "blocked_until": 0.0, "ceiling": None,
           "changed_at": now, "lowered_at": 0.0, "throttled": 0, "v": 0}
    try:
        db_counters.count(written=1)
        budgets.insert_one(doc)
        return doc
    except DuplicateKeyError:
        return budgets.find_one({"_id": key}) or doc


def _rate(doc: dict, configured: float | None, now: float) -> float | None:
    """The rate now: the configured one unless a 429 lowered it (then raised back slowly, never above it)."""
    if configured is None and doc.get("ceiling") is None:
        return None
    rate = doc.get("rate") or configured
    if doc.get("configured") != configured and configured is not None and now - doc.get("lowered_at", 0.0) > DECREASE_EVERY_SECONDS * 10:
        rate = configured  # the app's setting changed: it wins over what was learnt long ago
    ceiling = doc.get("ceiling")
    since = now - max(doc.get("changed_at", 0.0), doc.get("lowered_at", 0.0))
    top = configured if configured is not None else float("inf")
    if ceiling is not None and rate < BELOW_CEILING * ceiling:
        if since >= INCREASE_EVERY_SECONDS:
            rate = min(rate * INCREASE, BELOW_CEILING * ceiling)
    elif since >= PROBE_EVERY_SECONDS:
        rate = rate * PROBE
    return max(min(MIN_RATE, top), min(rate, top))  # a setting below MIN_RATE is kept


def throttled(db: Database, app_id: str, provider: str, retry_after: float | None, *, now: float | None = None) -> None:
    """A provider refused a request of this app for its rate: every worker waits ``Retry-After`` and slows down."""
    budgets = db[BUDGETS]
    key = budget_id(app_id, provider)
    for _ in range(CAS_TRIES):
        now = time.time() if now is None else now
        doc = _read(budgets, key, None, now)
        blocked = max(float(doc.get("blocked_until", 0.0)), now + (retry_after or 0.0))
        fields = {"blocked_until": blocked, "tat": max(float(doc.get("tat", 0.0)), blocked), "throttled": doc.get("throttled", 0) + 1,
                  "v": doc.get("v", 0) + 1}
        rate = doc.get("rate")
        if rate is not None and now - doc.get("lowered_at", 0.0) >= DECREASE_EVERY_SECONDS:
            # The quota is taken to be below DECREASE x the rate refused (a provider's bucket refuses late: a rate a
            # little above its quota is refused only once the bucket is empty); the rate falls below that and climbs
            # back to just under it.
            ceiling = rate * DECREASE
            fields.update(rate=max(MIN_RATE, ceiling * DECREASE), ceiling=ceiling, lowered_at=now, changed_at=now)
        db_counters.count(written=1)
        if budgets.update_one({"_id": key, "v": doc.get("v", 0)}, {"$set": fields}).modified_count:
            return
        now = None


def view(db: Database, app_ids: list[str] | None = None) -> list[dict]:
    """The budgets (for ``/admin/queues`` and tests): ``app_id``, ``provider``, ``rate_per_minute``, ``throttled``, ``blocked_for``."""
    now = time.time()
    query = {"_id": {"$in": [budget_id(a, p) for a in app_ids for p in ("apns", "fcm", "hms")]}} if app_ids else {}
    found = []
    for doc in db[BUDGETS].find(query):
        app_id, provider = doc["_id"].rsplit(":", 1)
        found.append({"app_id": app_id, "provider": provider,
                      "rate_per_minute": None if doc.get("rate") is None else round(doc["rate"] * 60),
                      "throttled": doc.get("throttled", 0), "blocked_for": max(0.0, doc.get("blocked_until", 0.0) - now)})
    return found


def set_budget(db: Database, cmd: dict) -> None:
    """The ``app.budget`` write: the app's per-minute budget on one provider (None: the default); the last one the
    API received wins (two filters, not ``$or``, for nx-27017)."""
    provider, stamp = cmd["platform"], f"budgets_ts.{cmd['platform']}"
    update = ({"$set": {f"budgets.{provider}": cmd["per_minute"], stamp: cmd["received_at"]}} if cmd.get("per_minute")
              else {"$unset": {f"budgets.{provider}": ""}, "$set": {stamp: cmd["received_at"]}})
    apps = db[mongo.APPS]
    if not apps.update_one({"_id": cmd["app_id"], stamp: {"$lt": cmd["received_at"]}}, update).matched_count:
        apps.update_one({"_id": cmd["app_id"], stamp: {"$exists": False}}, update)


HANDLERS = {"app.budget": set_budget}
