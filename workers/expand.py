"""Expand a send (one message or a batch) into deliveries, one per (entry, device), kept in ledger chunks.

The deliveries of each provider are cut into chunks of ``chunk_size``; each
chunk is one ledger document with a natural ``_id`` (message id, provider,
chunk index: shared/ledger.py), so running the expansion twice (a redelivered
command) inserts nothing new, and the chunks it publishes again are no-ops for
the delivery actors, which only send what is still open in a chunk they hold.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from shared import db as mongo
from shared import db_counters, halt, ledger, outbox, pacing
from shared import device_lookup as lookup
from shared.commands import BULK, DELIVER_ACTOR_BY_PROVIDER, PUSH_PROVIDERS, Publisher

# The names other modules and tests know these by (shared/ledger.py owns them).
DUPLICATE_KEY = ledger.DUPLICATE_KEY
FINAL_STATES = ledger.FINAL_STATES
PENDING = ledger.PENDING
Delivery = ledger.Delivery
delivery_id = ledger.delivery_id
insert_ignoring_duplicates = ledger.insert_ignoring_duplicates
#: Providers a delivery is made for (a device of another provider is counted nowhere).
PROVIDERS = PUSH_PROVIDERS


def expand_send(db: Database, publisher: Publisher, cmd: dict, *, chunk_size: int, deliveries_ahead: int = 0) -> None:
    """Turn a send command into ledger chunks per provider and publish one deliver message per chunk.

    ``deliveries_ahead``: the bound per app on open deliveries of bulk sends (shared/pacing.py); a bulk send of an app
    at its bound waits in ``paced_sends`` and is expanded when released. 0: no bound.
    """
    message_id = cmd["id"]
    now = datetime.now(UTC)
    db_counters.count(written=1)
    try:
        db[mongo.MESSAGES].insert_one(
            {
                "_id": message_id,
                "app_id": cmd["app_id"],
                "kind": cmd["kind"],
                "mode": cmd.get("mode"),
                "created_at": now,
                "received_at": cmd["received_at"],
                "expanded": False,
            }
        )
    except DuplicateKeyError:
        pass
    if pacing.park_if_over(db, cmd, deliveries_ahead):
        return  # its app has enough bulk work open: it waits for room, in MongoDB (the pacer releases it)
    # A send cancelled before its expansion (scheduled, or queued) expands to nothing.
    entries = [] if halt.is_cancelled(db, message_id, cmd["app_id"]) else cmd["entries"]
    deliveries: dict[str, dict[str, Delivery]] = {platform: {} for platform in PROVIDERS}
    for entry_index, device in lookup.send_targets(db, cmd["app_id"], entries):
        platform = device["platform"]
        if platform not in deliveries:
            continue  # a platform no provider delivers to: no delivery, counted nowhere
        delivery = Delivery(
            id=delivery_id(message_id, entry_index, device["token"]),
            device_id=device["_id"],
            token=device["token"],
            entry=entry_index,
            environment=device.get("environment"),
        )
        deliveries[platform].setdefault(delivery.id, delivery)  # a device twice for one entry is one delivery, as before
    started = time.time()
    docs = []
    for platform, items in deliveries.items():
        docs.extend(ledger.chunk_document(message_id, cmd["app_id"], platform, n, part, now=started, lane=cmd.get("lane"))
                    for n, part in enumerate(_parts(list(items.values()), chunk_size)))
    ledger.insert_chunks(db, docs)
    entries_by_key = {str(index): entry for index, entry in enumerate(entries)}
    ledger.publish_chunks(publisher, DELIVER_ACTOR_BY_PROVIDER, docs, entries_by_key, first_attempt_at=started,
                          lane=cmd.get("lane"))
    totals = {platform: len(items) for platform, items in deliveries.items()}
    chunks = {platform: -(-len(items) // chunk_size) for platform, items in deliveries.items()}
    db_counters.count(written=1)
    told = outbox.expansion_fields(db, cmd["app_id"])  # the feed asks for message_done: the sweep follows it
    db[mongo.MESSAGES].update_one(
        {"_id": message_id}, {"$set": {"expanded": True, "totals": totals, "total": sum(totals.values()), "chunks": chunks,
                             **told}}
    )
    if told:
        outbox.message_done(db, cmd["app_id"], [message_id], wanted=True)  # all its chunks may be final already (or it has none)
    pacing.expanded(db, cmd, deliveries_ahead)


def chunk_payload(
    message_id: str,
    app_id: str,
    entries: Mapping[str, dict],
    deliveries: list[Delivery],
    *,
    first_attempt_at: float,
    attempts: dict | None = None,
    lane: str | None = None,
) -> dict:
    """An old-format deliver-queue message (``ledger_v1``: rows in ``deliveries``): the deliveries and the entries they use, in its lane."""
    used = sorted({str(d.entry) for d in deliveries})
    return {
        "lane": lane or BULK,
        "message_id": message_id,
        "app_id": app_id,
        "entries": {key: entries[key] for key in used},
        "deliveries": [d.as_list() for d in deliveries],
        "first_attempt_at": first_attempt_at,
        "attempts": attempts or {},
    }


def _parts(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
