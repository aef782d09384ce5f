"""PowerAuth campaigns: their writes, and the streamed live send to every device of their users.

A live send walks the campaign's users in user id order with a cursor, a
batch at a time, never holding the whole list: each batch's devices become
deliveries whose ``_id`` is the campaign id and the device token, so a device
shared by several users is one delivery, and a replay (a redelivered command
after a crash, or send/live called twice) inserts nothing new. After each
batch the campaign records how far it got (``cursor``), so a redelivered
command resumes there; deliveries of the batch still pending are published
(again) in chunks, which is harmless: the delivery actors only send what they
can claim. When expansion ends, a check re-enqueues itself until nothing is
pending, then marks the campaign ``sent`` with ``timestamp_sent``.
"""
from __future__ import annotations

import time
from datetime import UTC, datetime

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from shared import db as collections
from shared import device_lookup as lookup
from shared import halt
from shared.commands import CAMPAIGN_CHECK, DELIVER_ACTOR_BY_PROVIDER, EXPAND_CAMPAIGN, Publisher
from workers.expand import PENDING, Delivery, chunk_payload, delivery_id, insert_ignoring_duplicates

#: Campaign users read per batch of the live send.
USERS_PER_BATCH = 5000
#: Seconds between two checks whether a campaign's deliveries are all done.
CHECK_INTERVAL_SECONDS = 1.0
#: Delivery states that still await an outcome.
OPEN_STATES = ("pending", "sending", "retry")
#: The one entry of a campaign send (its index in delivery ids and chunks).
ENTRY = 0


def user_doc_id(campaign_id: str, user_id: str) -> str:
    return f"{campaign_id}:{user_id}"


def _now() -> datetime:
    return datetime.now(UTC)


# --- writes (persist queue) ------------------------------------------------------------------------


def create_campaign(db: Database, cmd: dict) -> None:
    try:
        db[collections.CAMPAIGNS].insert_one(
            {"_id": cmd["campaign_id"], "app_id": cmd["app_id"], "body": cmd["body"], "sent": False,
             "state": "created", "created_at": _now(), "timestamp_sent": None}
        )
    except DuplicateKeyError:
        pass


def delete_campaign(db: Database, cmd: dict) -> dict:
    deleted = db[collections.CAMPAIGNS].delete_one({"_id": cmd["campaign_id"]}).deleted_count > 0
    db[collections.CAMPAIGN_USERS].delete_many({"c": cmd["campaign_id"]})
    return {"deleted": deleted}


def add_users(db: Database, cmd: dict) -> dict:
    campaign_id = cmd["campaign_id"]
    if db[collections.CAMPAIGNS].find_one({"_id": campaign_id}, {"_id": 1}) is None:
        return {"error": "campaign not found"}
    users = sorted(set(cmd["users"]))
    for start in range(0, len(users), USERS_PER_BATCH):
        insert_ignoring_duplicates(
            db[collections.CAMPAIGN_USERS],
            [{"_id": user_doc_id(campaign_id, u), "c": campaign_id, "u": u} for u in users[start : start + USERS_PER_BATCH]],
        )
    return {"added": len(users)}


def delete_users(db: Database, cmd: dict) -> dict:
    ids = [user_doc_id(cmd["campaign_id"], u) for u in set(cmd["users"])]
    deleted = 0
    for start in range(0, len(ids), USERS_PER_BATCH):
        deleted += db[collections.CAMPAIGN_USERS].delete_many({"_id": {"$in": ids[start : start + USERS_PER_BATCH]}}).deleted_count
    return {"deleted": deleted}


HANDLERS = {
    "campaign.create": create_campaign,
    "campaign.delete": delete_campaign,
    "campaign.users_add": add_users,
    "campaign.users_delete": delete_users,
}


# --- live send (expand queue) ----------------------------------------------------------------------


def campaign_entry(campaign: dict) -> dict:
    return {"user_id": None, "activation_id": None, "personal": False, "silent": False, "high_priority": True, "body": campaign["body"]}


def expand_campaign(db: Database, publisher: Publisher, cmd: dict, *, chunk_size: int, users_per_batch: int = USERS_PER_BATCH) -> None:
    """Expand a live send, resuming where an earlier run of the same campaign stopped."""
    campaigns = db[collections.CAMPAIGNS]
    campaign_id = cmd["campaign_id"]
    campaign = campaigns.find_one({"_id": campaign_id})
    if campaign is None or campaign.get("sent") or campaign.get("state") == "expanded":
        return  # gone, done, or a second send/live after the expansion: nothing more to send
    if campaign.get("state") != "sending":
        campaigns.update_one({"_id": campaign_id, "state": "created"}, {"$set": {"state": "sending", "started_at": _now()}})
    try:
        db[collections.MESSAGES].insert_one(
            {"_id": campaign_id, "app_id": campaign["app_id"], "kind": "campaign", "mode": "ASYNCHRONOUS",
             "created_at": _now(), "received_at": cmd["received_at"], "expanded": False}
        )
    except DuplicateKeyError:
        pass
    entries = {str(ENTRY): campaign_entry(campaign)}
    after = campaign.get("cursor") or ""
    while not halt.is_cancelled(db, campaign_id, campaign["app_id"]):
        if halt.hold_expansion(db, publisher, EXPAND_CAMPAIGN, cmd, campaign_id):
            return  # paused: this expansion comes back, from its cursor, once resumed
        users = [
            doc["u"]
            for doc in db[collections.CAMPAIGN_USERS]
            .find({"c": campaign_id, "u": {"$gt": after}}, {"u": 1})
            .sort("u", 1)
            .limit(users_per_batch)
        ]
        if not users:
            break
        _expand_users(db, publisher, campaign, users, entries, chunk_size)
        after = users[-1]
        campaigns.update_one({"_id": campaign_id}, {"$set": {"cursor": after}})
    totals = {"apns": 0, "fcm": 0}
    for row in db[collections.DELIVERIES].aggregate(
        [{"$match": {"message_id": campaign_id}}, {"$group": {"_id": "$platform", "n": {"$sum": 1}}}]
    ):
        totals[row["_id"]] = row["n"]
    db[collections.MESSAGES].update_one(
        {"_id": campaign_id}, {"$set": {"expanded": True, "totals": totals, "total": sum(totals.values())}}
    )
    publisher.publish(CAMPAIGN_CHECK, {"campaign_id": campaign_id})
    campaigns.update_one({"_id": campaign_id}, {"$set": {"state": "expanded", "devices_total": sum(totals.values())}})


def _expand_users(db: Database, publisher: Publisher, campaign: dict, users: list[str], entries: dict, chunk_size: int) -> None:
    campaign_id = campaign["_id"]
    by_platform: dict[str, dict[str, Delivery]] = {"apns": {}, "fcm": {}}
    held = lookup.devices_by_user(db, campaign["app_id"], users, {"token": 1, "platform": 1, "environment": 1})
    for device in {d["_id"]: d for devices in held.values() for d in devices}.values():
        if device["platform"] not in by_platform:
            continue  # a provider this server does not deliver to yet (HMS): no delivery, counted nowhere
        delivery = Delivery(
            id=delivery_id(campaign_id, ENTRY, device["token"]),
            device_id=device["_id"],
            token=device["token"],
            entry=ENTRY,
            environment=device.get("environment"),
        )
        by_platform[device["platform"]][delivery.id] = delivery
    now = time.time()
    for platform, deliveries in by_platform.items():
        if not deliveries:
            continue
        insert_ignoring_duplicates(
            db[collections.DELIVERIES],
            [
                {"_id": d.id, "message_id": campaign_id, "platform": platform, "device_id": d.device_id,
                 "state": PENDING, "ps": f"{platform}:{PENDING}"}
                for d in deliveries.values()
            ],
        )
        # Only what is still pending: on a replay, what an earlier run already sent is not published again.
        pending = [
            deliveries[doc["_id"]]
            for doc in db[collections.DELIVERIES].find({"_id": {"$in": list(deliveries)}, "state": PENDING}, {"_id": 1})
        ]
        for start in range(0, len(pending), chunk_size):
            part = pending[start : start + chunk_size]
            publisher.publish(DELIVER_ACTOR_BY_PROVIDER[platform], chunk_payload(campaign_id, campaign["app_id"], entries, part, first_attempt_at=now))


def check_campaign(db: Database, publisher: Publisher, job: dict) -> None:
    """Mark the campaign sent once none of its deliveries awaits an outcome; else look again later."""
    campaign_id = job["campaign_id"]
    campaign = db[collections.CAMPAIGNS].find_one({"_id": campaign_id}, {"sent": 1})
    if campaign is None or campaign.get("sent"):
        return
    open_one = db[collections.DELIVERIES].find_one({"message_id": campaign_id, "state": {"$in": list(OPEN_STATES)}}, {"_id": 1})
    if open_one is None:
        db[collections.CAMPAIGNS].update_one(
            {"_id": campaign_id}, {"$set": {"sent": True, "state": halt.finished_state(db, campaign_id), "timestamp_sent": _now()}}
        )
        return
    publisher.publish(CAMPAIGN_CHECK, job, delay_ms=int(CHECK_INTERVAL_SECONDS * 1000))
