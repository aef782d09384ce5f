"""Apply write commands (apps, devices, activations) to MongoDB, idempotently.

Each handler can run twice, or after a later command for the same entity, and
still leave what the API acknowledged last: documents carry the order ``ts`` of
the write that produced them (shared/write_order.py: claimed from MongoDB before
the API answered, so no host clock can reorder two writes) and a write only
lands on a document whose ``ts`` is lower (last writer wins). Deletes leave a
tombstone (``deleted: True`` with its ``ts``) so a create that arrives late
cannot bring a deleted device back; tombstones are purged by
:func:`purge_tombstones` once no queued command can be older.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from pymongo import UpdateOne
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from shared import activation_status
from shared import db as mongo
from shared import device_lookup as lookup
from shared.commands import REMOVED, Publisher
from shared.device_lookup import device_id
from shared.settings import Settings
from shared.write_order import order_of

#: How many times a read-modify-write of a device retries after losing a race.
MAX_OPTIMISTIC_TRIES = 10
#: Nanoseconds (a write's ``ts``) per millisecond (a provider's timestamp).
NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class WriteContext:
    """What a write handler may need from the worker process, passed in by :func:`apply`.

    Most handlers need the database only and take ``(db, cmd)``; one marked
    :func:`takes_context` takes ``(ctx, cmd)`` (e.g. to publish the deliveries
    it expands, in chunks of ``settings.delivery_chunk_size``).
    """

    db: Database
    publisher: Publisher | None = None
    settings: Settings | None = None


def takes_context(handler):
    """Mark a write handler that takes the :class:`WriteContext` instead of the database."""
    handler.takes_context = True
    return handler


def _now() -> datetime:
    return datetime.now(UTC)


def upsert_if_newer(collection, _id: str, ts: int, fields: dict, *, on_insert: dict | None = None) -> bool:
    """Set ``fields`` on document ``_id`` unless it already holds a write newer than ``ts``.

    An upsert whose filter misses because the stored ``ts`` is newer tries to
    insert a second document with the same ``_id``, which the unique ``_id``
    index refuses: that refusal is how a stale write is recognised.
    """
    update = {"$set": {**fields, "ts": ts}}
    if on_insert:
        update["$setOnInsert"] = on_insert
    try:
        collection.update_one({"_id": _id, "ts": {"$lt": ts}}, update, upsert=True)
        return True
    except DuplicateKeyError:
        return False


# --- apps ---------------------------------------------------------------------------------------

def create_app(db: Database, cmd: dict) -> None:
    try:
        db[mongo.APPS].insert_one(
            {"_id": cmd["app_id"], "created_at": _now(), "apns_ts": 0, "fcm_ts": 0, "hms_ts": 0, "suspended": {}}
        )
    except DuplicateKeyError:
        pass


def set_app_provider(db: Database, cmd: dict) -> None:
    """Set or remove (``credentials`` None) one provider's credentials; lifts its suspension."""
    provider = cmd["provider"]
    ts_field = f"{provider}_ts"
    # An app created before a provider was known here (HMS) has no time for it yet: it starts at 0.
    db[mongo.APPS].update_one({"_id": cmd["app_id"], ts_field: {"$exists": False}}, {"$set": {ts_field: 0}})
    db[mongo.APPS].update_one(
        {"_id": cmd["app_id"], ts_field: {"$lt": order_of(cmd)}},
        {
            "$set": {provider: cmd["credentials"], ts_field: order_of(cmd)},
            "$unset": {f"suspended.{provider}": ""},
        },
    )


# --- devices ------------------------------------------------------------------------------------

def register_device(db: Database, cmd: dict) -> None:
    """Create or update a registration; its activations leave any other token of the app.

    The lookup entries (``shared.device_lookup``) are added before the registration is
    written, so a crash in between leaves one entry too many, never one too few.
    """
    ts = order_of(cmd)
    activations = {activation: cmd.get("user_id") for activation in cmd["activation_ids"]}
    fields = {
        "app_id": cmd["app_id"],
        "token": cmd["token"],
        "platform": cmd["platform"],
        "environment": cmd.get("environment"),
        "activations": activations,
        "activation_ids": list(activations),
        "user_ids": [cmd["user_id"]] if cmd.get("user_id") else [],
        "deleted": False,
        "active": True,
        "received_at": cmd["received_at"],  # compared with a provider's clock (written_by), never for order
        "updated_at": _now(),
    }
    _id = device_id(cmd["app_id"], cmd["token"])
    devices = db[mongo.DEVICES]
    before = devices.find_one({"_id": _id}, lookup.FIELDS) or {}
    lookup.add(db, cmd["app_id"], _id, ts, users=fields["user_ids"], activations=fields["activation_ids"])
    if not upsert_if_newer(devices, _id, ts, fields):
        stored = devices.find_one({"_id": _id}, lookup.FIELDS)
        if stored is None or stored["ts"] != ts:
            # A newer write holds the registration: take off the entries it does not need.
            if stored is not None:
                lookup.prune(db, stored, users=fields["user_ids"], activations=fields["activation_ids"])
            return
        # This very command was applied before (a redelivery): finish what it may not have done.
    lookup.prune(
        db,
        {"_id": _id, "ts": ts, **fields},
        users={*fields["user_ids"], *(before.get("user_ids") or ())},
        activations={*fields["activation_ids"], *(before.get("activation_ids") or ())},
    )
    for activation in cmd["activation_ids"]:
        detach_activation(db, cmd["app_id"], activation, ts, keep=_id)


def delete_device(db: Database, cmd: dict) -> None:
    """Tombstone the registration, even one not yet created (a create may still be queued)."""
    _id = device_id(cmd["app_id"], cmd["token"])
    devices = db[mongo.DEVICES]
    before = devices.find_one({"_id": _id}, lookup.FIELDS)
    ts = order_of(cmd)
    stored = upsert_if_newer(
        devices,
        _id,
        ts,
        {"deleted": True, "app_id": cmd["app_id"], "token": cmd["token"], "updated_at": _now()},
        on_insert={"activations": {}, "activation_ids": [], "user_ids": []},
    )
    if stored and before:
        # A tombstone holds no user; it keeps its activations until purged.
        lookup.prune(db, {**before, "ts": ts, "deleted": True}, users=before.get("user_ids") or ())


def detach_activation(db: Database, app_id: str | None, activation_id: str, ts: int, *, keep: str | None = None) -> None:
    """Take an activation off every registration older than ``ts`` (but ``keep``).

    A registration left without activations is tombstoned: nothing can reach it.
    The read-modify-write is guarded by the document's ``ts`` so a concurrent
    write to the same registration is never overwritten. The registrations are
    found through ``activation_devices`` (by ``_id``), not by ``activation_ids``.
    """
    devices = db[mongo.DEVICES]
    for doc in lookup.devices_holding_activation(db, activation_id, {"activations": 1}):
        if doc["_id"] == keep or doc.get("deleted") or (app_id is not None and doc.get("app_id") != app_id):
            continue
        for _ in range(MAX_OPTIMISTIC_TRIES):
            if doc is None or doc["ts"] >= ts or activation_id not in doc.get("activations", {}):
                break
            activations = {a: u for a, u in doc["activations"].items() if a != activation_id}
            update = {
                "activations": activations,
                "activation_ids": list(activations),
                "user_ids": sorted({user for user in activations.values() if user}),
                "ts": ts,
                "updated_at": _now(),
            }
            if not activations:
                update["deleted"] = True
            result = devices.update_one({"_id": doc["_id"], "ts": doc["ts"]}, {"$set": update})
            if result.modified_count:
                lookup.prune(
                    db,
                    {**doc, **update, "deleted": bool(update.get("deleted", doc.get("deleted")))},
                    users=doc.get("user_ids") or (),
                    activations=[activation_id],
                )
                break
            doc = devices.find_one({"_id": doc["_id"]})


def update_activation_status(db: Database, cmd: dict) -> None:
    """Record an activation's status for the app whose key set it (none: every app); REMOVED also takes it off
    that app's (every app's) registrations."""
    app_id = cmd.get("app_id")
    key = activation_status.status_key(app_id, cmd["activation_id"])
    stored = upsert_if_newer(db[mongo.ACTIVATIONS], key, order_of(cmd), {"status": cmd["status"], "app_id": app_id})
    if stored and cmd["status"] == REMOVED:
        detach_activation(db, app_id, cmd["activation_id"], order_of(cmd))


def written_by(invalid_since_ms: int) -> list[dict]:
    """Filters (either matches) of a registration written no later than a provider's invalidation time (ms since the epoch).

    APNs answers 410 with the time it last confirmed the token invalid; a
    registration the API received after that is the app registering the token
    again, which Apple says to keep sending to. Compared with Apple's clock, so
    by the API's receive time ``received_at`` (ns), not by the write order ``ts``
    (which a host whose clock is ahead can move ahead: shared/write_order.py); a
    registration stored before ``received_at`` was kept has its receive time as
    ``ts``. Two filters, not one ``$or``: nx-27017 drops ``$or`` filters in bulk writes.
    """
    since = invalid_since_ms * NS_PER_MS
    return [{"received_at": {"$lte": since}}, {"received_at": {"$exists": False}, "ts": {"$lte": since}}]


def mark_dead_tokens(db: Database, device_ids: list[str], reason: str, *, invalid_since: Mapping[str, int] | None = None) -> None:
    """Deactivate registrations whose token the provider declared dead (a new create revives them).

    ``invalid_since``: by device id, when the provider says the token stopped
    being valid (the APNs 410 ``timestamp``, ms): such a registration is
    deactivated only if it was written no later than that (:func:`written_by`).
    """
    invalid_since = invalid_since or {}
    update = {"$set": {"active": False, "dead_reason": reason, "updated_at": _now()}}
    devices = db[mongo.DEVICES]
    unconditional = [device for device in device_ids if device not in invalid_since]
    if unconditional:
        devices.update_many({"_id": {"$in": unconditional}}, update)
    stamped = [UpdateOne({"_id": device, **when}, update) for device, stamp in invalid_since.items() for when in written_by(stamp)]
    if stamped:
        devices.bulk_write(stamped, ordered=False)


def purge_tombstones(db: Database, *, older_than_seconds: float) -> int:
    """Delete tombstones older than any command still queued can be (the queue's age limit)."""
    limit = time.time_ns() - int(older_than_seconds * 1e9)
    tombstones = [d for d in db[mongo.DEVICES].find({"deleted": True}, lookup.FIELDS) if d["ts"] < limit]
    if not tombstones:
        return 0
    deleted = db[mongo.DEVICES].delete_many(
        {"_id": {"$in": [d["_id"] for d in tombstones]}, "deleted": True, "ts": {"$lt": limit}}
    ).deleted_count
    for tombstone in tombstones:
        lookup.prune(
            db, tombstone, users=tombstone.get("user_ids") or (), activations=tombstone.get("activation_ids") or (), gone=True
        )
    return deleted


HANDLERS = {
    "app.create": create_app,
    "app.provider": set_app_provider,
    "device.register": register_device,
    "device.delete": delete_device,
    "activation.status": update_activation_status,
}


def apply(ctx: WriteContext, cmd: dict, handlers: dict) -> None:
    """Apply one write command with its handler, then record that it was applied (the API waits for that).

    A handler may answer a result (a dict) that the API reads back with the
    applied record, e.g. whether a notification id was new or a repeat.
    """
    handler = handlers[cmd["kind"]]
    result = handler(ctx, cmd) if getattr(handler, "takes_context", False) else handler(ctx.db, cmd)
    mark_applied(ctx.db, cmd["id"], result)


def mark_applied(db: Database, command_id: str, result: dict | None = None) -> None:
    record = {"_id": command_id, "at": _now()}
    if result is not None:
        record["result"] = result
    try:
        db[mongo.COMMANDS].insert_one(record)
    except DuplicateKeyError:
        pass
