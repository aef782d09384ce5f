"""The releaser of scheduled sends: a loop in each worker process (shared/scheduling.py says how it is safe)."""
from __future__ import annotations

import logging
import os
import threading
import time

from pymongo.database import Database
from pymongo.errors import PyMongoError

from shared import halt, pacing
from shared.commands import Publisher, new_id
from shared.scheduling import RELEASE_BATCH, RELEASE_LEASE_SECONDS, RELEASE_POLL_SECONDS, SCHEDULED

log = logging.getLogger(__name__)


def release_due(db: Database, publisher: Publisher, *, now: float | None = None) -> int:
    """Claim the due schedules no live releaser holds, publish each one's command, delete it; answer how many."""
    now = time.time() if now is None else now
    schedules = db[SCHEDULED]
    due = [d["_id"] for d in schedules.find({"send_at": {"$lte": now}, "lease_until": {"$lt": now}}, {"_id": 1}).limit(RELEASE_BATCH)]
    if not due:
        return 0
    claim = f"{os.getpid()}-{new_id()}"  # the releasing process (a fault test kills it at its claim)
    schedules.update_many({"_id": {"$in": due}, "lease_until": {"$lt": now}},
                          {"$set": {"claim": claim, "lease_until": now + RELEASE_LEASE_SECONDS}})
    released = 0
    for doc in schedules.find({"_id": {"$in": due}, "claim": claim}):
        # A cancel of a scheduled send (POST .../cancel) drops it; a parked chunk goes back whatever its state.
        if doc.get("parked") or not halt.is_cancelled(db, doc["_id"], doc["payload"].get("app_id")):
            publisher.publish(doc["actor"], doc["payload"])
            released += 1
        schedules.delete_one({"_id": doc["_id"], "claim": claim})
    return released


def run_releaser(db: Database, publisher: Publisher, *, stop: threading.Event, deliveries_ahead: int = 0) -> None:
    """Release due schedules, and once every ``pacing.PACER_SECONDS`` the paced bulk sends that have room
    (shared/pacing.py; ``deliveries_ahead`` its bound, 0: none)."""
    paced_at = 0.0
    while not stop.is_set():
        try:
            if deliveries_ahead > 0 and time.monotonic() - paced_at >= pacing.PACER_SECONDS:
                paced_at = time.monotonic()
                pacing.release(db, publisher, deliveries_ahead)
            if release_due(db, publisher):
                continue  # more may be due: look again at once
        except PyMongoError as error:
            log.warning("scheduled sends not released, MongoDB: %s", error)
        except Exception:  # the broker away, or anything else: the lease brings the schedules back
            log.exception("scheduled sends not released")
        stop.wait(RELEASE_POLL_SECONDS)


def start_releaser(db: Database, publisher: Publisher, deliveries_ahead: int = 0) -> threading.Event:
    """Start the releaser thread of this process (scheduled sends, paced bulk sends); set the answered event to stop it."""
    stop = threading.Event()
    threading.Thread(target=run_releaser, args=(db, publisher), kwargs={"stop": stop, "deliveries_ahead": deliveries_ahead},
                     name="schedule-releaser", daemon=True).start()
    return stop
