"""Requeue dead letters: the ``dead_letter.requeue`` write command (``POST /admin/dead-letters/requeue``).

A dead letter (``dead_letters`` collection, written by workers/deliver.py)
carries the delivery and its entry, so it can be put back on its deliver
queue. The handler is idempotent: it moves the deliveries still in
``dead_letter`` back to ``retry``, publishes a chunk for every delivery that is
claimable (a chunk published twice is a no-op for the second run, which claims
nothing), and marks the dead letters requeued. A requeued delivery starts a
fresh max-age period and zero attempts; one past its ``validUntil`` ends
``expired``.

A dead letter of a ledger chunk (``chunk``, ``index``) is moved back with a
compare-and-set on the chunk's states while no run holds it (a held chunk's
deliveries are skipped: ask again); one of the old format (rows in
``deliveries``) as before.
"""
from __future__ import annotations

import time

from pymongo.database import Database

from shared import db as mongo
from shared import ledger
from shared.commands import DELIVER_ACTOR_BY_PROVIDER, Publisher
from shared.ledger import Delivery
from workers.expand import chunk_payload
from workers.writes import WriteContext, takes_context

KIND = "dead_letter.requeue"
CLAIMABLE = ledger.CLAIMABLE


@takes_context
def requeue(ctx: WriteContext, cmd: dict) -> dict:
    """Put the dead letters named by the command back on their deliver queues with the context's publisher."""
    db, publisher = ctx.db, ctx.publisher
    ids = list(dict.fromkeys(cmd["delivery_ids"]))
    docs = {}
    for doc in db[mongo.DEAD_LETTERS].find({"delivery_id": {"$in": ids}}):
        if doc.get("delivery") and doc.get("entry") is not None:
            docs[doc["delivery_id"]] = doc  # any one carries what a chunk needs
    skipped = [i for i in ids if i not in docs]
    now = time.time()
    in_chunks = {i: d for i, d in docs.items() if d.get("chunk")}
    docs = {i: d for i, d in docs.items() if not d.get("chunk")}
    requeued = _requeue_chunks(db, publisher, in_chunks, now, skipped)
    by_platform: dict[str, list[str]] = {}
    for delivery_id, doc in docs.items():
        by_platform.setdefault(doc["platform"], []).append(delivery_id)
    for platform, platform_ids in by_platform.items():
        db[mongo.DELIVERIES].update_many(
            {"_id": {"$in": platform_ids}, "state": "dead_letter"},
            {"$set": {"state": "retry", "ps": f"{platform}:retry", "reason": "requeued", "at": now}},
        )
    claimable = {
        d["_id"] for d in db[mongo.DELIVERIES].find({"_id": {"$in": list(docs)}, "state": {"$in": list(CLAIMABLE)}}, {"_id": 1})
    }
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for delivery_id in claimable:
        doc = docs[delivery_id]
        groups.setdefault((doc["platform"], doc["message_id"], doc["app_id"]), []).append(doc)
    size = ctx.settings.delivery_chunk_size
    for (platform, message_id, app_id), group in groups.items():
        for start in range(0, len(group), size):
            part = group[start : start + size]
            deliveries = [Delivery(*d["delivery"]) for d in part]
            entries = {str(d["delivery"][3]): d["entry"] for d in part}
            publisher.publish(
                DELIVER_ACTOR_BY_PROVIDER[platform],
                chunk_payload(message_id, app_id, entries, deliveries, first_attempt_at=now),
            )
    db[mongo.DEAD_LETTERS].update_many(
        {"delivery_id": {"$in": list(docs) + requeued}}, {"$set": {"requeued_at": now, "requeue_command": cmd["id"]}}
    )
    return {"requeued": len(claimable) + len(requeued), "skipped": skipped}


def _requeue_chunks(db: Database, publisher: Publisher, docs: dict[str, dict], now: float, skipped: list[str]) -> list[str]:
    """Move ledger deliveries from dead_letter back to retry and publish their chunks; answer the delivery ids requeued."""
    by_chunk: dict[str, list[dict]] = {}
    for doc in docs.values():
        by_chunk.setdefault(doc["chunk"], []).append(doc)
    requeued = []
    for cid, group in by_chunk.items():
        ledger.change_free_chunk(db, cid, {d["index"]: (ledger.RETRY, "requeued") for d in group}, only_from=ledger.CHAR[ledger.DEAD_LETTER])
        chunk = db[mongo.LEDGER].find_one({"_id": cid}, {"s": 1, "c": 1})
        open_now = [d for d in group if chunk and chunk.get("c") is None and chunk["s"][d["index"]] in ledger.OPEN_CHARS]
        skipped.extend(d["delivery_id"] for d in group if d not in open_now)
        if not open_now:
            continue
        first = open_now[0]
        entries = {str(d["delivery"][3]): d["entry"] for d in open_now}
        provider, index = cid.rsplit(":", 2)[1], int(cid.rsplit(":", 1)[1])
        publisher.publish(
            DELIVER_ACTOR_BY_PROVIDER[first["platform"]],
            ledger.chunk_message(first["message_id"], first["app_id"], provider, index, entries, (d["delivery"][3] for d in open_now),
                                 first_attempt_at=now),
        )
        requeued.extend(d["delivery_id"] for d in open_now)
    return requeued


HANDLERS = {KIND: requeue}
