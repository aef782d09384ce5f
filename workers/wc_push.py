"""Writes of the WalletConnect push server API: clients, tenants, and deduplicated notifications.

Every handler is idempotent and ordered by the write's order (last writer wins,
as in :mod:`workers.writes`; shared/write_order.py):

- a client is one document per (tenant, client id), tombstoned on unregister;
- a token belongs to one client per tenant: a registration swaps the token's
  owner atomically and evicts the previous owner (its pending notifications go);
- a notification is accepted once per (tenant, client, notification id): its
  document's unique ``_id`` is the deduplication, decided here and nowhere
  else. The accepting command then expands the send in-process (deliveries with
  a unique id per message and device, see :mod:`workers.expand`). A command
  redelivered after a crash recognises its own document (same command id) and
  dispatches again: the message id is the command's, so the expansion inserts
  nothing new and its chunk finds every delivery already claimed or final.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from shared import db as mongo
from shared import ledger
from shared.send_entry import SendEntry
from shared.wc_payload import RAW, Notification, PayloadError, body_for
from shared.wc_push import (
    CLIENT_NOT_FOUND,
    CLIENT_TYPES,
    INVALID,
    NEW,
    RAW_ONLY,
    REPEAT,
    SEP,
    client_key,
    device_id,
    notification_key,
    token_key,
)
from shared.write_order import order_of
from workers import expand
from workers.writes import WriteContext, takes_context, upsert_if_newer, written_by

log = logging.getLogger(__name__)

#: The entry's ``dead_token`` action (registered by :data:`DEAD_TOKEN_ACTIONS`): delete the client.
DEAD_TOKEN_ACTION = "wc_push_client"
#: Times a token swap is retried after losing an insert race to an older registration.
MAX_SWAP_TRIES = 5
PENDING_STATES = ledger.CLAIMABLE


def _now() -> datetime:
    return datetime.now(UTC)


# --- clients ------------------------------------------------------------------------------------

def register_client(db: Database, cmd: dict) -> dict:
    """Create or update a client; the token leaves whichever client of the tenant held it before."""
    ts, tenant, client, token = order_of(cmd), cmd["tenant_id"], cmd["client_id"], cmd["token"]
    platform, environment = CLIENT_TYPES[cmd["type"]]
    key = client_key(tenant, client)
    fields = {
        "tenant_id": tenant,
        "client_id": client,
        "type": cmd["type"],
        "token": token,
        "platform": platform,
        "environment": environment,
        "always_raw": bool(cmd.get("always_raw")),
        "received_at": cmd["received_at"],  # compared with a provider's clock (workers.writes.written_by), never for order
        "deleted": False,
        "updated_at": _now(),
    }
    if not upsert_if_newer(db[mongo.WCP_CLIENTS], key, ts, fields):
        return {"applied": False}
    _take_token(db, tenant, client, token, ts)
    return {"applied": True}


def _take_token(db: Database, tenant: str, client: str, token: str, ts: int) -> None:
    """Make ``client`` the token's owner unless a newer registration owns it; evict the loser."""
    tokens = db[mongo.WCP_TOKENS]
    _id = token_key(tenant, token)
    for _ in range(MAX_SWAP_TRIES):
        try:
            previous = tokens.find_one_and_update(
                {"_id": _id, "ts": {"$lt": ts}},
                {"$set": {"client_id": client, "ts": ts}},
                upsert=True,
                return_document=ReturnDocument.BEFORE,
            )
        except DuplicateKeyError:
            previous = None  # MongoDB: a newer owner (or a racing insert) is there
        if previous is not None:
            if previous["client_id"] != client:
                evict(db, tenant, previous["client_id"], token, ts, "token registered by another client")
            return
        # Inserted, or refused because a newer owner is there (nx-27017 refuses silently): look.
        holder = tokens.find_one({"_id": _id})
        if holder is None or holder["ts"] < ts:
            continue  # lost an insert race to an older registration: swap again
        if holder["client_id"] != client:
            evict(db, tenant, client, token, holder["ts"], "token registered by a newer client")
        return


def evict(db: Database, tenant: str, client: str, token: str, ts: int, reason: str) -> None:
    """Tombstone a client that still holds ``token`` and is older than ``ts``; cancel what it has pending."""
    key = client_key(tenant, client)
    result = db[mongo.WCP_CLIENTS].update_one(
        {"_id": key, "token": token, "deleted": False, "ts": {"$lt": ts}},
        {"$set": {"deleted": True, "ts": ts, "reason": reason, "updated_at": _now()}},
    )
    if result.modified_count:
        drop_pending(db, key, reason)


def delete_client(db: Database, cmd: dict) -> dict:
    """Unregister: tombstone the client (even one not yet created) and cancel its pending notifications."""
    key = client_key(cmd["tenant_id"], cmd["client_id"])
    stored = upsert_if_newer(
        db[mongo.WCP_CLIENTS],
        key,
        order_of(cmd),
        {"deleted": True, "tenant_id": cmd["tenant_id"], "client_id": cmd["client_id"], "reason": "unregistered", "updated_at": _now()},
        on_insert={"token": None},
    )
    if stored:
        drop_pending(db, key, "client unregistered")
    return {"applied": stored}


def drop_pending(db: Database, key: str, reason: str) -> None:
    """Fail the client's deliveries not yet sent and forget its notifications."""
    notifications = list(
        db[mongo.WCP_NOTIFICATIONS].find({"client_key": key}, {"message_id": 1, "token": 1, "platform": 1})
    )
    by_platform: dict[str, list[str]] = {}
    for doc in notifications:
        if doc.get("platform"):
            by_platform.setdefault(doc["platform"], []).append(expand.delivery_id(doc["message_id"], 0, doc["token"]))
    for doc in notifications:
        if doc.get("platform"):  # its one delivery: chunk 0, index 0 (expand_send of one device)
            ledger.change_free_chunk(db, ledger.chunk_id(doc["message_id"], doc["platform"], 0), {0: (ledger.FAILED, reason)},
                                     only_from=ledger.OPEN_CHARS)
    for platform, ids in by_platform.items():  # the old format
        db[mongo.DELIVERIES].update_many(
            {"_id": {"$in": ids}, "state": {"$in": list(PENDING_STATES)}},
            {"$set": {"state": "failed", "ps": f"{platform}:failed", "reason": reason}},
        )
    if notifications:
        db[mongo.WCP_NOTIFICATIONS].delete_many({"_id": {"$in": [d["_id"] for d in notifications]}})


def delete_dead_clients(db: Database, device_ids: list[str], reason: str, *, invalid_since: Mapping[str, int] | None = None) -> None:
    """A provider declared the token dead: delete the client, if it still has that token.

    ``invalid_since`` (APNs 410 ``timestamp`` by device id): a client registered after it keeps its token
    (:func:`workers.writes.written_by`).
    """
    invalid_since = invalid_since or {}
    for device in device_ids:
        key, _, token = device.rpartition(SEP)
        stamp = invalid_since.get(device)
        for when in written_by(stamp) if stamp is not None else [{}]:
            db[mongo.WCP_CLIENTS].update_one(
                {"_id": key, "token": token, "deleted": False, **when},
                {"$set": {"deleted": True, "reason": f"dead token: {reason}", "updated_at": _now()}},
            )


# --- notifications ------------------------------------------------------------------------------

@takes_context
def accept_notification(ctx: WriteContext, cmd: dict) -> dict:
    """Accept a notification once per (tenant, client, id) and expand it with the context's publisher; answer the outcome."""
    db = ctx.db
    tenant, client_id = cmd["tenant_id"], cmd["client_id"]
    key = client_key(tenant, client_id)
    client = db[mongo.WCP_CLIENTS].find_one({"_id": key})
    if client is None or client.get("deleted"):
        return {"outcome": CLIENT_NOT_FOUND}
    notification = Notification.from_json(cmd["notification"])
    if client.get("always_raw") and notification.form != RAW:
        return {"outcome": RAW_ONLY}
    notifications = db[mongo.WCP_NOTIFICATIONS]
    doc = {
        "_id": notification_key(tenant, client_id, cmd["notification_id"]),
        "tenant_id": tenant,
        "client_key": key,
        "notification_id": cmd["notification_id"],
        "command_id": cmd["id"],
        "message_id": cmd["id"],
        "token": client["token"],
        "platform": client["platform"],
        "environment": client.get("environment"),
        "received_at": cmd["received_at"],
        "created_at": _now(),
    }
    try:
        notifications.insert_one(doc)
    except DuplicateKeyError:
        existing = notifications.find_one({"_id": doc["_id"]})
        if existing is None or existing["command_id"] != cmd["id"]:
            return {"outcome": REPEAT}
        doc = existing  # this very command accepted it before a crash: dispatch again (idempotent)
    try:
        _dispatch(ctx, doc, key, notification, cmd)
    except PayloadError as error:
        log.warning("notification %s not deliverable: %s", doc["_id"], error)
        notifications.update_one({"_id": doc["_id"]}, {"$set": {"error": str(error)}})
        return {"outcome": INVALID, "field": error.field, "message": error.message}
    return {"outcome": NEW}


def _dispatch(ctx: WriteContext, doc: dict, key: str, notification: Notification, cmd: dict) -> None:
    platform = doc["platform"]
    if platform is None:
        return  # noop client: accepted and deduplicated, nothing to deliver
    if ctx.publisher is None or ctx.settings is None:
        raise RuntimeError("a write context without a publisher and settings cannot expand notifications")
    body, silent = body_for(notification, platform)
    device = {"_id": device_id(key, doc["token"]), "token": doc["token"], "platform": platform, "environment": doc["environment"]}
    entry = SendEntry.for_device(device, body.to_json(), silent=silent, dead_token=DEAD_TOKEN_ACTION).to_json()
    send = {
        "id": doc["message_id"],
        "kind": "wcp.send",
        "received_at": doc["received_at"],
        "app_id": cmd["app_id"],
        "mode": "ASYNCHRONOUS",
        "entries": [entry],
    }
    expand.expand_send(ctx.db, ctx.publisher, send, chunk_size=ctx.settings.delivery_chunk_size)


def purge(db: Database, *, older_than_seconds: float) -> dict:
    """Forget notifications and client tombstones older than ``older_than_seconds`` (for a periodic job).

    A notification id repeated after its record is purged is delivered again:
    the purge age is the deduplication window (the relay repeats within minutes).
    """
    limit_ns = time.time_ns() - int(older_than_seconds * 1e9)
    limit = datetime.fromtimestamp(limit_ns / 1e9, UTC)
    notifications = db[mongo.WCP_NOTIFICATIONS].delete_many({"created_at": {"$lt": limit}}).deleted_count
    tombstones = [d["_id"] for d in db[mongo.WCP_CLIENTS].find({"deleted": True}, {"_id": 1, "ts": 1}) if d["ts"] < limit_ns]
    clients = 0
    if tombstones:
        clients = db[mongo.WCP_CLIENTS].delete_many({"_id": {"$in": tombstones}, "deleted": True, "ts": {"$lt": limit_ns}}).deleted_count
    return {"notifications": notifications, "clients": clients}


# --- tenants ------------------------------------------------------------------------------------

def create_tenant(db: Database, cmd: dict) -> dict:
    """Create (or revive) a tenant's app document; credentials already there stay."""
    stored = upsert_if_newer(
        db[mongo.APPS],
        cmd["app_id"],
        order_of(cmd),
        {"tenant_id": cmd["tenant_id"], "wc_push": True, "deleted": False},
        on_insert={"created_at": _now(), "apns": None, "fcm": None, "apns_ts": 0, "fcm_ts": 0, "suspended": {}},
    )
    return {"applied": stored}


def delete_tenant(db: Database, cmd: dict) -> dict:
    """Delete a tenant: its credentials, its clients and their notifications."""
    stored = upsert_if_newer(
        db[mongo.APPS],
        cmd["app_id"],
        order_of(cmd),
        {"tenant_id": cmd["tenant_id"], "wc_push": True, "deleted": True, "apns": None, "fcm": None, "suspended": {}},
        on_insert={"created_at": _now(), "apns_ts": 0, "fcm_ts": 0},
    )
    if stored:
        db[mongo.WCP_CLIENTS].update_many(
            {"tenant_id": cmd["tenant_id"], "deleted": False},
            {"$set": {"deleted": True, "reason": "tenant deleted", "updated_at": _now()}},
        )
        db[mongo.WCP_NOTIFICATIONS].delete_many({"tenant_id": cmd["tenant_id"]})
    return {"applied": stored}


HANDLERS = {
    "wcp.client.register": register_client,
    "wcp.client.delete": delete_client,
    "wcp.notify": accept_notification,
    "wcp.tenant.create": create_tenant,
    "wcp.tenant.delete": delete_tenant,
}

#: This family's dead-token action, registered with the delivery workers (workers/actors.py).
DEAD_TOKEN_ACTIONS = {DEAD_TOKEN_ACTION: delete_dead_clients}
