"""What failed in a send: its failed, dead-token, expired and given-up deliveries, a page at a time.

The one reader of failures (``GET /push/message/{id}/failures``, ``GET /push/campaign/{id}/failures``):
where deliveries are kept changes (a per-chunk ledger, DESIGN §9), this function follows it and the
routes stay as they are.
"""
from __future__ import annotations

from datetime import UTC, datetime

from pymongo.database import Database

from shared import db as collections

#: Delivery states that are failures, and what each is called in the list.
FAILURE_STATES = ("failed", "dead_token", "expired", "dead_letter")


def token_of(delivery_id: str) -> str:
    """The device token of a delivery id ``<message id>:<entry>:<token>`` (an FCM token may hold ``:``)."""
    return delivery_id.split(":", 2)[2]


def failures(db: Database, message_ids: list[str], page: int, size: int) -> tuple[int, list[dict]]:
    """(how many failures the messages have, page ``page`` of ``size`` of them in a stable order).

    Each failure: ``token`` (whole), ``platform``, ``state`` (one of :data:`FAILURE_STATES`), ``reason``, ``at``
    (an aware datetime, or None when not recorded).
    """
    match = {"message_id": {"$in": list(message_ids)}, "state": {"$in": list(FAILURE_STATES)}}
    deliveries = db[collections.DELIVERIES]
    total = sum(row["n"] for row in deliveries.aggregate([{"$match": match}, {"$group": {"_id": "$state", "n": {"$sum": 1}}}]))
    docs = deliveries.find(match, {"platform": 1, "state": 1, "reason": 1, "at": 1}).sort("_id", 1).skip(page * size).limit(size)
    return total, [
        {
            "token": token_of(doc["_id"]),
            "platform": doc.get("platform"),
            "state": doc["state"],
            "reason": doc.get("reason"),
            "at": datetime.fromtimestamp(doc["at"], UTC) if isinstance(doc.get("at"), int | float) else None,
        }
        for doc in docs
    ]
