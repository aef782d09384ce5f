"""What failed in a send: its failed, dead-token, expired and given-up deliveries, a page at a time.

The one reader of failures (``GET /push/message/{id}/failures``, ``GET /push/campaign/{id}/failures``):
it reads the delivery ledger (shared/ledger.py).
"""
from __future__ import annotations

from datetime import UTC, datetime

from pymongo.database import Database

from shared import db as mongo
from shared import ledger

#: Delivery states that are failures, and what each is called in the list.
FAILURE_STATES = (ledger.FAILED, ledger.DEAD_TOKEN, ledger.EXPIRED, ledger.DEAD_LETTER)


def token_of(delivery_id: str) -> str:
    """The device token of a delivery id ``<message id>:<entry>:<token>`` (an FCM token may hold ``:``)."""
    return delivery_id.split(":", 2)[2]


def failures(db: Database, message_ids: list[str], page: int, size: int) -> tuple[int, list[dict]]:
    """(how many failures the messages have, page ``page`` of ``size`` of them in a stable order).

    Each failure: ``token`` (whole), ``platform``, ``state`` (one of :data:`FAILURE_STATES`), ``reason``, ``at``
    (an aware datetime: when the provider's answer came, for chunks recorded before that was kept when its
    chunk's outcomes were last written, or None when not recorded).
    Read from the ledger's chunks in ``_id`` order (their state strings first, for the count), then the
    old format's rows (``deliveries``) of messages expanded before the ledger.
    """
    ids = list(message_ids)
    chars = {ledger.CHAR[state] for state in FAILURE_STATES}
    chunks = db[mongo.LEDGER]
    match = {"m": {"$in": ids}}
    counts = {doc["_id"]: sum(ch in chars for ch in doc["s"]) for doc in chunks.find(match, {"s": 1})}
    old_match = {"message_id": {"$in": ids}, "state": {"$in": list(FAILURE_STATES)}}
    old_total = db[mongo.DELIVERIES].count_documents(old_match)
    skip, found = page * size, []
    wanted = [cid for cid in sorted(counts) if counts[cid]]
    for cid in wanted:
        if skip >= counts[cid]:
            skip -= counts[cid]
            continue
        doc = ledger.with_devices(db, [chunks.find_one({"_id": cid})])[0]
        for i, delivery in enumerate(ledger.deliveries_of(doc)):
            if doc["s"][i] not in chars:
                continue
            if skip:
                skip -= 1
                continue
            at = (doc.get("t") or {}).get(str(i), doc.get("u"))  # its answer's time; chunks written before ``t``: the chunk's
            found.append(_failure(delivery.token, doc["p"], ledger.STATE[doc["s"][i]], (doc.get("r") or {}).get(str(i)), at))
            if len(found) == size:
                return sum(counts.values()) + old_total, found
    for row in db[mongo.DELIVERIES].find(old_match, {"platform": 1, "state": 1, "reason": 1, "at": 1}).sort("_id", 1).skip(
            skip).limit(size - len(found)):
        found.append(_failure(token_of(row["_id"]), row.get("platform"), row["state"], row.get("reason"), row.get("at")))
    return sum(counts.values()) + old_total, found


def _failure(token: str, platform: str | None, state: str, reason: str | None, at) -> dict:
    return {"token": token, "platform": platform, "state": state, "reason": reason,
            "at": datetime.fromtimestamp(at, UTC) if isinstance(at, int | float) else None}
