"""PowerAuth campaigns: their writes, and the streamed live send to every device of their users.

A live send walks the campaign's users in user id order with a cursor, a
batch at a time, never holding the whole list: each batch's devices become
deliveries in ledger chunks (shared/ledger.py) numbered on from the chunks of
the batches before, so a replay (a redelivered command after a crash, or
send/live called twice) inserts nothing new. A device shared by several users
is one delivery: it is delivered in the batch of the first of its users (in user
id order) that is in the campaign. After each batch the campaign records how far
it got (``cursor``, and ``progress``: chunks and deliveries so far per provider),
so a redelivered command resumes there; the batch's chunks published again are
harmless: the delivery actors only send what is still open. When expansion ends,
a check re-enqueues itself until no chunk is open, then marks the campaign
``sent`` with ``timestamp_sent``.
"""
from __future__ import annotations

import time
from datetime import UTC, datetime

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from shared import db as mongo
from shared import db_counters, halt, ledger, outbox
from shared import device_lookup as lookup
from shared.commands import CAMPAIGN_CHECK, DELIVER_ACTOR_BY_PROVIDER, EXPAND_CAMPAIGN, Publisher
from shared.ledger import Delivery, delivery_id, insert_ignoring_duplicates
from shared.send_entry import SendEntry
from workers.expand import PROVIDERS

#: Campaign users read per batch of the live send.
USERS_PER_BATCH = 5000
#: Seconds between two checks whether a campaign's deliveries are all done.
CHECK_INTERVAL_SECONDS = 1.0
#: Delivery states that still await an outcome.
OPEN_STATES = ledger.OPEN_STATES
#: The one entry of a campaign send (its index in delivery ids and chunks).
ENTRY = 0


def user_doc_id(campaign_id: str, user_id: str) -> str:
    return f"{campaign_id}:{user_id}"


def _now() -> datetime:
    return datetime.now(UTC)


# --- writes (persist queue) ------------------------------------------------------------------------


def create_campaign(db: Database, cmd: dict) -> None:
    try:
        db[mongo.CAMPAIGNS].insert_one(
            {"_id": cmd["campaign_id"], "app_id": cmd["app_id"], "body": cmd["body"], "sent": False,
             "state": "created", "created_at": _now(), "timestamp_sent": None}
        )
    except DuplicateKeyError:
        pass


def delete_campaign(db: Database, cmd: dict) -> dict:
    deleted = db[mongo.CAMPAIGNS].delete_one({"_id": cmd["campaign_id"]}).deleted_count > 0
    db[mongo.CAMPAIGN_USERS].delete_many({"c": cmd["campaign_id"]})
    return {"deleted": deleted}


def add_users(db: Database, cmd: dict) -> dict:
    campaign_id = cmd["campaign_id"]
    if db[mongo.CAMPAIGNS].find_one({"_id": campaign_id}, {"_id": 1}) is None:
        return {"error": "campaign not found"}
    users = sorted(set(cmd["users"]))
    for start in range(0, len(users), USERS_PER_BATCH):
        insert_ignoring_duplicates(
            db[mongo.CAMPAIGN_USERS],
            [{"_id": user_doc_id(campaign_id, u), "c": campaign_id, "u": u} for u in users[start : start + USERS_PER_BATCH]],
        )
    return {"added": len(users)}


def delete_users(db: Database, cmd: dict) -> dict:
    ids = [user_doc_id(cmd["campaign_id"], u) for u in set(cmd["users"])]
    deleted = 0
    for start in range(0, len(ids), USERS_PER_BATCH):
        deleted += db[mongo.CAMPAIGN_USERS].delete_many({"_id": {"$in": ids[start : start + USERS_PER_BATCH]}}).deleted_count
    return {"deleted": deleted}


HANDLERS = {
    "campaign.create": create_campaign,
    "campaign.delete": delete_campaign,
    "campaign.users_add": add_users,
    "campaign.users_delete": delete_users,
}


# --- live send (expand queue) ----------------------------------------------------------------------


def campaign_entry(campaign: dict) -> dict:
    return SendEntry.for_user(None, campaign["body"]).to_json()


def expand_campaign(db: Database, publisher: Publisher, cmd: dict, *, chunk_size: int, users_per_batch: int = USERS_PER_BATCH,
                    deliveries_ahead: int | None = None) -> None:
    """Expand a live send, resuming where an earlier run of the same campaign stopped.

    ``deliveries_ahead``: the pacing bound (:func:`paced`); None expands without waiting.
    """
    campaigns = db[mongo.CAMPAIGNS]
    campaign_id = cmd["campaign_id"]
    campaign = campaigns.find_one({"_id": campaign_id})
    if campaign is None or campaign.get("sent") or campaign.get("state") == "expanded":
        return  # gone, done, or a second send/live after the expansion: nothing more to send
    if campaign.get("state") != "sending":
        campaigns.update_one({"_id": campaign_id, "state": "created"}, {"$set": {"state": "sending", "started_at": _now()}})
    try:
        db[mongo.MESSAGES].insert_one(
            {"_id": campaign_id, "app_id": campaign["app_id"], "kind": "campaign", "mode": "ASYNCHRONOUS",
             "created_at": _now(), "received_at": cmd["received_at"], "expanded": False}
        )
    except DuplicateKeyError:
        pass
    entries = {str(ENTRY): campaign_entry(campaign)}
    after = campaign.get("cursor") or ""
    progress = campaign.get("progress") or {"chunks": dict.fromkeys(PROVIDERS, 0), "totals": dict.fromkeys(PROVIDERS, 0)}
    while not halt.is_cancelled(db, campaign_id, campaign["app_id"]):
        if halt.hold_expansion(db, publisher, EXPAND_CAMPAIGN, cmd, campaign_id):
            return  # paused: this expansion comes back, from its cursor, once resumed
        if deliveries_ahead is not None and paced(db, publisher, cmd, campaign_id, chunk_size, deliveries_ahead):
            return  # enough of it waits to be sent: it comes back, from its cursor
        users = mongo.campaign_users_after(db, campaign_id, after, users_per_batch)
        if not users:
            break
        progress = _expand_users(db, publisher, campaign, users, entries, chunk_size, progress)
        after = users[-1]
        campaigns.update_one({"_id": campaign_id}, {"$set": {"cursor": after, "progress": progress}})
    totals = progress["totals"]
    told = outbox.expansion_fields(db, campaign["app_id"])  # the feed asks for message_done: the sweep follows it
    db[mongo.MESSAGES].update_one(
        {"_id": campaign_id},
        {"$set": {"expanded": True, "totals": totals, "total": sum(totals.values()), "chunks": progress["chunks"],
                  **told}},
    )
    if told:
        outbox.message_done(db, campaign["app_id"], [campaign_id], wanted=True)  # all its chunks may be final already
    publisher.publish(CAMPAIGN_CHECK, {"campaign_id": campaign_id})
    campaigns.update_one({"_id": campaign_id}, {"$set": {"state": "expanded", "devices_total": sum(totals.values())}})


#: Seconds a paced expansion waits before it looks again (re-enqueued with a delay: no worker thread held).
PACE_RECHECK_SECONDS = 1.0


def paced(db: Database, publisher: Publisher, cmd: dict, campaign_id: str, chunk_size: int, deliveries_ahead: int) -> bool:
    """Whether the campaign already has ``deliveries_ahead`` deliveries open (its open chunks × the chunk size, one
    query by equality on the ledger's ``(m, o)`` index, the ids counted here: nx-27017's ``count_documents`` and an
    ``$in`` on ``o`` both read the whole ledger, 120 ms at 6,000 chunks, growing with it, for every batch of users);
    then its expansion comes back after :data:`PACE_RECHECK_SECONDS`.

    Bulk work of other apps then waits behind at most that many of this campaign's deliveries, not behind all of them,
    and the deliver workers still always have a queue to take from (the bound is far above what they hold at once).
    """
    db_counters.count()
    open_chunks = len(list(db[mongo.LEDGER].find({"m": campaign_id, "o": True}, {"_id": 1})))
    if open_chunks * chunk_size < deliveries_ahead:
        return False
    publisher.publish(EXPAND_CAMPAIGN, cmd, delay_ms=int(PACE_RECHECK_SECONDS * 1000))
    return True


def _expand_users(db: Database, publisher: Publisher, campaign: dict, users: list[str], entries: dict, chunk_size: int,
                  progress: dict) -> dict:
    """Write and publish the chunks of one batch of users; answer the progress after it."""
    campaign_id = campaign["_id"]
    by_platform: dict[str, list[Delivery]] = {p: [] for p in PROVIDERS}
    held = lookup.devices_by_user(db, campaign["app_id"], users)
    devices = {d["_id"]: d for devices in held.values() for d in devices}
    # This batch's users read, their device ids, the devices in parts, and the cursor written after it.
    db_counters.count(trips=3 + max(1, -(-len(devices) // lookup.KEYS_PER_QUERY)), written=1)
    delivered_before = _delivered_in_earlier_batches(db, campaign_id, users[0], devices.values())
    for device in sorted(devices.values(), key=lambda d: d["_id"]):
        if device["platform"] not in by_platform or device["_id"] in delivered_before:
            continue  # a platform no provider delivers to, or a device an earlier batch's user already got
        by_platform[device["platform"]].append(
            Delivery(
                id=delivery_id(campaign_id, ENTRY, device["token"]),
                device_id=device["_id"],
                token=device["token"],
                entry=ENTRY,
                environment=device.get("environment"),
            )
        )
    now = time.time()
    docs = []
    chunks, totals = dict(progress["chunks"]), dict(progress["totals"])
    for platform, deliveries in by_platform.items():
        first = chunks.get(platform, 0)
        parts = [deliveries[start:start + chunk_size] for start in range(0, len(deliveries), chunk_size)]
        docs.extend(ledger.chunk_document(campaign_id, campaign["app_id"], platform, first + n, part, now=now, kind=ledger.CAMPAIGN_KIND)
                    for n, part in enumerate(parts))
        chunks[platform] = first + len(parts)
        totals[platform] = totals.get(platform, 0) + len(deliveries)
    ledger.insert_chunks(db, docs)
    ledger.publish_chunks(publisher, DELIVER_ACTOR_BY_PROVIDER, docs, entries, first_attempt_at=now)
    return {"chunks": chunks, "totals": totals}


def _delivered_in_earlier_batches(db: Database, campaign_id: str, first_user: str, devices) -> set[str]:
    """Devices of this batch that also belong to a campaign user before ``first_user`` (delivered with that user's batch)."""
    earlier: dict[str, set[str]] = {}
    for device in devices:
        for user in set((device.get("activations") or {}).values()):
            if user < first_user:
                earlier.setdefault(user_doc_id(campaign_id, user), set()).add(device["_id"])
    if not earlier:
        return set()
    db_counters.count()
    found = db[mongo.CAMPAIGN_USERS].find({"_id": {"$in": list(earlier)}}, {"_id": 1})
    return {device for doc in found for device in earlier[doc["_id"]]}


def check_campaign(db: Database, publisher: Publisher, job: dict) -> None:
    """Mark the campaign sent once none of its deliveries awaits an outcome; else look again later."""
    campaign_id = job["campaign_id"]
    campaign = db[mongo.CAMPAIGNS].find_one({"_id": campaign_id}, {"sent": 1})
    if campaign is None or campaign.get("sent"):
        return
    if not ledger.has_open(db, campaign_id):
        db[mongo.CAMPAIGNS].update_one(
            {"_id": campaign_id}, {"$set": {"sent": True, "state": halt.finished_state(db, campaign_id), "timestamp_sent": _now()}}
        )
        return
    publisher.publish(CAMPAIGN_CHECK, job, delay_ms=int(CHECK_INTERVAL_SECONDS * 1000))
