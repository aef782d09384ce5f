"""Scheduled sends (issue 18): held in MongoDB until due, never in RabbitMQ.

A send, batch or campaign live send with ``sendAt`` is a ``send.schedule``
write: the persist worker stores it in the ``scheduled`` collection (``_id``
the message or campaign id) from the confirmed command, so an acknowledged
schedule is never lost. A releaser in every worker process
(workers/scheduler.py) claims due schedules in bulk under a short lease,
publishes each one's normal command (expand a send, expand a campaign) and
then deletes it. A releaser killed after its claim leaves the lease to run
out, and another takes the schedule over; one killed after publishing but
before deleting makes the next publish it again, which the expansion ignores
(it is idempotent by message id).
"""
from __future__ import annotations

import time
from datetime import UTC, datetime

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from shared import db as mongo
from shared.commands import new_id

SCHEDULED = "scheduled"
#: Seconds a releaser holds the schedules it claimed (DESIGN: at most 5).
RELEASE_LEASE_SECONDS = 2.0
#: Seconds between two looks for due schedules (the first provider request comes within 1 s of the due time).
RELEASE_POLL_SECONDS = 0.2
#: Most schedules released per look.
RELEASE_BATCH = 500


def schedule(db: Database, cmd: dict) -> None:
    """The ``send.schedule`` write: keep the schedule; a send's message exists at once (its detail shows it scheduled)."""
    send_at = cmd["send_at"]
    try:
        db[SCHEDULED].insert_one({"_id": cmd["target_id"], "app_id": cmd["app_id"], "send_at": send_at, "actor": cmd["actor"],
                                  "payload": cmd["payload"], "lease_until": 0.0, "claim": None})
    except DuplicateKeyError:
        pass  # a redelivered command
    at = datetime.fromtimestamp(send_at, UTC)
    if cmd["actor_kind"] == "campaign":
        db[mongo.CAMPAIGNS].update_one({"_id": cmd["target_id"]}, {"$set": {"send_at": at}})
        return
    send = cmd["payload"]
    try:
        db[mongo.MESSAGES].insert_one({"_id": send["id"], "app_id": send["app_id"], "kind": send["kind"], "mode": send.get("mode"),
                                             "created_at": datetime.now(UTC), "received_at": send["received_at"], "expanded": False,
                                             "send_at": at})
    except DuplicateKeyError:
        pass


#: Waits longer than this are parked in MongoDB rather than published with a delay: Dramatiq holds a delayed message
#: unacknowledged in a worker's memory until its time, and RabbitMQ closes a channel holding one 30 minutes.
PARK_AFTER_SECONDS = 10.0
#: Why a chunk is parked (the backlog shows them): its app's provider budget is spent or blocked, or it is paused.
THROTTLED, PAUSED = "throttled", "paused"


def later(db: Database, publisher, actor: str, payload: dict, *, delay: float, reason: str, park: bool = False) -> None:
    """Publish ``payload`` to ``actor`` after ``delay`` seconds: a short wait with a delay on the broker, a long one
    (or ``park``) in ``scheduled``, released when due by the same releaser as scheduled sends (never cancelled there:
    a cancelled message's chunk still records its deliveries ``cancelled``)."""
    if not park and delay <= PARK_AFTER_SECONDS:
        publisher.publish(actor, payload, delay_ms=max(0, int(delay * 1000)))
        return
    key = payload.get("chunk") or payload.get("message_id") or new_id()
    db[SCHEDULED].insert_one({"_id": f"park:{key}:{new_id()}", "app_id": payload.get("app_id"), "send_at": time.time() + delay,
                              "actor": actor, "payload": payload, "parked": reason, "chunk": payload.get("chunk"),
                              "lease_until": 0.0, "claim": None})


def pending_release(db: Database, target_id: str) -> bool:
    """Whether a schedule of this message or campaign still waits for its time."""
    return db[SCHEDULED].find_one({"_id": target_id}, {"_id": 1}) is not None


HANDLERS = {"send.schedule": schedule}
