"""Fair share of bulk sends between apps (issue 15): a bound per app on the open deliveries of its bulk sends.

The bulk deliver queues are first in, first out. Campaigns are paced on their own (workers/campaigns.py
``paced``); this paces an app's other bulk sends (batches, ASYNCHRONOUS messages, WalletConnect pushes), so
that one app posting a hundred 10,000-message batches does not put a million deliveries ahead of another
app's batch of 1,000:

- The expansion of a bulk send (workers/expand.py) looks at its app first (:func:`park_if_over`). When the app
  already has ``PUSH_APP_BULK_DELIVERIES_AHEAD`` (20,000) open deliveries of bulk sends in the ledger, or sends
  of it already wait here, the send is kept in ``paced_sends`` instead (``_id`` its message id, so a
  redelivered command keeps one; its command apart in ``paced_commands``) and expanded later: it holds no
  worker thread, and nothing waits unacknowledged in RabbitMQ.
- A pacer in every worker process (:func:`release`, from workers/scheduler.py, once a second) gives each app
  with waiting sends the room it has (the bound minus its open send deliveries, minus the entries of its sends
  released and not yet expanded) and releases its oldest sends, by receive time, into that room: it marks each
  one released by a compare-and-set (two pacers never release one send twice) and publishes its command again,
  marked ``paced`` so that its expansion does not wait a second time. The expansion deletes the document once
  its chunks are in the ledger. A released send whose expansion has not deleted it after
  :data:`RELEASED_COUNTS_SECONDS` no longer takes room, and after :data:`RELEASE_AGAIN_SECONDS` it is released
  again (a pacer killed between its compare-and-set and its publish loses no send). A waiting send whose cancel is
  recorded is released at once and takes no room: its expansion records it cancelled, and nothing is sent.

Within its bound an app's sends go in the order they came; across apps the deliver queues then hold at most
about the bound plus one send of each app. The bound is counted in deliveries of chunks without a lane (bulk)
that are not a campaign's (``k``), from their state strings (one read of the app's open chunks, on the
``(o, app)`` index). A send beyond the bound is not refused: the cap of queued work (shared/queue_cap.py) counts
paced sends' entries as waiting and refuses what passes it.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from shared import db as mongo
from shared import db_counters, halt
from shared.commands import BULK, EXPAND_SEND, Publisher
from shared.ledger import CAMPAIGN_KIND, OPEN_CHARS

log = logging.getLogger(__name__)

PACED_SENDS = "paced_sends"
#: The waiting sends' commands, apart (``_id`` the message id): every look at ``paced_sends`` reads whole documents
#: (nx-27017 decodes a document before its projection), and a batch's command is up to megabytes.
PACED_COMMANDS = "paced_commands"
#: Seconds a released send whose expansion has not ended still takes room in its app's bound.
RELEASED_COUNTS_SECONDS = 60.0
#: Seconds after which a released send whose expansion has not ended is released again (its process died between
#: the release and the publish, or the expansion failed; a second expansion of one send inserts nothing twice), at
#: most :data:`MOST_RELEASES` times (then Dramatiq's dead letters hold its failed command). A registration whose
#: expansion did not end is dropped then: its command is still in RabbitMQ, redelivered.
RELEASE_AGAIN_SECONDS = 600.0
MOST_RELEASES = 5
#: Seconds between two passes of the pacer.
PACER_SECONDS = 1.0


def open_send_deliveries(db: Database, app_id: str) -> int:
    """Open deliveries of the app's bulk sends (not campaigns, not the transactional lane) in the ledger."""
    db_counters.count()
    total = 0
    for doc in db[mongo.LEDGER].find({"o": True, "app": app_id}, {"s": 1, "l": 1, "k": 1, "_id": 0}):
        if doc.get("k") == CAMPAIGN_KIND or (doc.get("l") or BULK) != BULK:
            continue
        states = doc.get("s") or ""
        total += sum(states.count(ch) for ch in OPEN_CHARS)
    return total


def park_if_over(db: Database, cmd: dict, bound: int) -> bool:
    """Whether this send waits in ``paced_sends`` (kept there now) rather than expanding now.

    A send that may go registers itself first, as a release whose expansion runs (``released_at`` now), and only
    then counts: of several expansions of one app that run at once, each counts those registered before it, so
    together they pass the bound by at most one send (counted first, they would all pass it together).
    """
    if bound <= 0 or cmd.get("paced") or (cmd.get("lane") or BULK) != BULK:
        return False
    app_id, sends = cmd["app_id"], db[PACED_SENDS]
    waiting = {"_id": cmd["id"], "app": app_id, "q": cmd["received_at"], "n": len(cmd.get("entries") or ()), "released_at": None,
               "w": True}
    db_counters.count()
    if sends.find_one({"app": app_id, "released_at": None}, {"_id": 1}) is not None:
        return _wait(db, cmd, waiting)  # sends of the app wait already: this one goes behind them
    now = time.time()
    db_counters.count(trips=2, written=1)  # the registration, then the others'
    try:
        sends.insert_one({**waiting, "released_at": now, "w": False})
    except DuplicateKeyError:
        return _still_waits(sends, cmd["id"])
    others = sum(max(1, d.get("n") or 0) for d in sends.find({"app": app_id, "_id": {"$ne": cmd["id"]}}, {"n": 1, "released_at": 1})
                 if d.get("released_at") and now - d["released_at"] < RELEASED_COUNTS_SECONDS)
    if open_send_deliveries(db, app_id) + others < bound:
        return False  # it expands now; its registration is deleted once its chunks are in the ledger (:func:`expanded`)
    _keep_command(db, cmd)
    db_counters.count(written=1)
    sends.update_one({"_id": cmd["id"]}, {"$set": {"released_at": None, "w": True}})
    return True


def _keep_command(db: Database, cmd: dict) -> None:
    """The command a release publishes, written before its send is marked waiting (a pacer then always finds it)."""
    db_counters.count(written=1)
    try:
        db[PACED_COMMANDS].insert_one({"_id": cmd["id"], "payload": {**cmd, "paced": True}})
    except DuplicateKeyError:
        pass  # a redelivered command: one is kept


def _wait(db: Database, cmd: dict, doc: dict) -> bool:
    _keep_command(db, cmd)
    db_counters.count(written=1)
    try:
        db[PACED_SENDS].insert_one(doc)
    except DuplicateKeyError:
        return _still_waits(db[PACED_SENDS], doc["_id"])
    return True


def _still_waits(sends, send_id: str) -> bool:
    """A redelivered command whose send is here already: it waits if it waited (once), and goes on if it was being
    expanded (registered or released: that run did not end)."""
    db_counters.count()
    mine = sends.find_one({"_id": send_id}, {"released_at": 1})
    return mine is not None and mine.get("released_at") is None


def expanded(db: Database, cmd: dict, bound: int) -> None:
    """The send's chunks are in the ledger: its registration or release goes (its open deliveries count from now)."""
    if bound > 0 and (cmd.get("lane") or BULK) == BULK:
        db_counters.count(trips=2, written=2)
        db[PACED_SENDS].delete_one({"_id": cmd["id"]})
        db[PACED_COMMANDS].delete_one({"_id": cmd["id"]})  # kept if it waited (also when a redelivered copy went on)


def release(db: Database, publisher: Publisher, bound: int, *, now: float | None = None) -> int:
    """Release each app's oldest waiting sends into the room its bound leaves; answer how many were released."""
    now = time.time() if now is None else now
    by_app: dict[str, list[dict]] = defaultdict(list)
    for doc in db[PACED_SENDS].find({}, {"app": 1, "q": 1, "n": 1, "released_at": 1, "w": 1, "tries": 1}):
        by_app[doc["app"]].append(doc)
    released = 0
    for app_id, docs in by_app.items():
        _release_again(db, [d for d in docs if d.get("released_at") and now - d["released_at"] > RELEASE_AGAIN_SECONDS])
        in_release = [d for d in docs if d.get("released_at") and now - d["released_at"] < RELEASED_COUNTS_SECONDS]
        room = bound - open_send_deliveries(db, app_id) - sum(max(1, d.get("n") or 0) for d in in_release)
        waiting = sorted((d for d in docs if not d.get("released_at")), key=lambda d: (d["q"], d["_id"]))
        cancelled = _cancelled(db, app_id, [d["_id"] for d in waiting]) if waiting else set()
        for doc in waiting:
            gone = doc["_id"] in cancelled  # it expands to nothing: it goes at once and takes no room
            if room <= 0 and not gone:
                continue
            claimed = db[PACED_SENDS].update_one({"_id": doc["_id"], "released_at": None},
                                                 {"$set": {"released_at": now, **({"n": 0} if gone else {})}})
            if not claimed.modified_count:
                continue  # another pacer released it
            kept = db[PACED_COMMANDS].find_one({"_id": doc["_id"]})
            if kept is not None:  # else its expansion already ran (a redelivered command went on) and took it
                try:
                    publisher.publish(EXPAND_SEND, kept["payload"])
                except Exception:
                    db[PACED_SENDS].update_one({"_id": doc["_id"]}, {"$set": {"released_at": None}})  # it waits again
                    raise
            room -= 0 if gone else max(1, doc.get("n") or 0)
            released += 1
    return released


def _cancelled(db: Database, app_id: str, ids: list[str]) -> set[str]:
    """Those of the waiting sends ``ids`` whose cancel is recorded (``POST /push/message/{id}/cancel``)."""
    db_counters.count()
    return {doc["_id"] for doc in db[halt.HALTS].find({"_id": {"$in": ids}, "state": halt.CANCELLED}, {"app_id": 1})
            if doc.get("app_id") in (None, app_id)}


def _release_again(db: Database, stale: list[dict]) -> None:
    """Released sends whose expansion did not end wait again (released once more); registrations go."""
    for doc in stale:
        if doc.get("w") and (doc.get("tries") or 0) < MOST_RELEASES:
            db[PACED_SENDS].update_one({"_id": doc["_id"], "released_at": doc["released_at"]},
                                       {"$set": {"released_at": None}, "$inc": {"tries": 1}})
            continue
        if doc.get("w"):
            log.error("paced send %s of app %s: released %d times, never expanded; left to Dramatiq's dead letters",
                      doc["_id"], doc.get("app"), MOST_RELEASES)
        db[PACED_SENDS].delete_one({"_id": doc["_id"], "released_at": doc["released_at"]})
        db[PACED_COMMANDS].delete_one({"_id": doc["_id"]})


def waiting_by_app(db: Database) -> dict[str, tuple[int, int]]:
    """Per app, the entries of its sends waiting here and the receive time (ns) of the oldest: the cap of queued
    work counts the entries (shared/queue_cap.py), the backlog shows both (shared/backlog.py)."""
    found: dict[str, tuple[int, int]] = {}
    for doc in db[PACED_SENDS].find({"released_at": None}, {"app": 1, "n": 1, "q": 1}):
        entries, oldest = found.get(doc["app"], (0, doc["q"]))
        found[doc["app"]] = (entries + (doc.get("n") or 0), min(oldest, doc["q"]))
    return found
