"""Expand a send (one message or a batch) into deliveries, one per (entry, device).

A delivery's ``_id`` is made of the message id, the entry's index and the
device token, so running the expansion twice (a redelivered command) inserts
nothing new, and the chunks it publishes again are no-ops for the delivery
actors, which only take deliveries they can claim.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from shared import activation_status, halt
from shared import db as collections
from shared import device_lookup as lookup
from shared.commands import ACTIVE, BULK, DELIVER_ACTOR_BY_PROVIDER, Publisher

#: MongoDB's duplicate-key error: an insert that already happened.
DUPLICATE_KEY = 11000
#: Delivery states that are final (the outcome is known and recorded).
FINAL_STATES = ("sent", "failed", "dead_token", "expired", "dead_letter", "cancelled")
PENDING = "pending"


@dataclass(frozen=True)
class Delivery:
    """One notification to one device, as it crosses the deliver queue."""

    id: str
    device_id: str
    token: str
    entry: int
    environment: str | None

    def as_list(self) -> list:
        return [self.id, self.device_id, self.token, self.entry, self.environment]


def delivery_id(message_id: str, entry: int, token: str) -> str:
    return f"{message_id}:{entry}:{token}"


def insert_ignoring_duplicates(collection, documents: list[dict]) -> None:
    """``insert_many`` that treats documents already there as inserted (idempotent replays)."""
    if not documents:
        return
    try:
        collection.insert_many(documents, ordered=False)
    except BulkWriteError as error:
        if any(e["code"] != DUPLICATE_KEY for e in error.details["writeErrors"]):
            raise


def expand_send(db: Database, publisher: Publisher, cmd: dict, *, chunk_size: int) -> None:
    """Turn a send command into deliveries and publish them in chunks per provider."""
    message_id = cmd["id"]
    now = datetime.now(UTC)
    try:
        db[collections.MESSAGES].insert_one(
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
    # A send cancelled before its expansion (scheduled, or queued) expands to nothing.
    entries = [] if halt.is_cancelled(db, message_id, cmd["app_id"]) else cmd["entries"]
    deliveries = {"apns": [], "fcm": []}
    for entry_index, device in _targets(db, cmd["app_id"], entries):
        platform = device["platform"]
        if platform not in deliveries:
            continue  # a provider this server does not deliver to yet (HMS): no delivery, counted nowhere
        deliveries[platform].append(
            Delivery(
                id=delivery_id(message_id, entry_index, device["token"]),
                device_id=device["_id"],
                token=device["token"],
                entry=entry_index,
                environment=device.get("environment"),
            )
        )
    for platform, items in deliveries.items():
        insert_ignoring_duplicates(
            db[collections.DELIVERIES],
            [
                {
                    "_id": d.id,
                    "message_id": message_id,
                    "platform": platform,
                    "device_id": d.device_id,
                    "state": PENDING,
                    "ps": f"{platform}:{PENDING}",
                }
                for d in items
            ],
        )
    totals = {platform: len(items) for platform, items in deliveries.items()}
    entries_by_key = {str(index): entry for index, entry in enumerate(entries)}
    for platform, items in deliveries.items():
        for start in range(0, len(items), chunk_size):
            part = items[start : start + chunk_size]
            publisher.publish(
                DELIVER_ACTOR_BY_PROVIDER[platform],
                chunk_payload(message_id, cmd["app_id"], entries_by_key, part, first_attempt_at=time.time(), lane=cmd.get("lane")),
            )
    db[collections.MESSAGES].update_one(
        {"_id": message_id}, {"$set": {"expanded": True, "totals": totals, "total": sum(totals.values())}}
    )


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
    """A deliver-queue message: the deliveries and only the entries they use (keyed by index), in its send's lane."""
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


def _targets(db: Database, app_id: str, entries: list[dict]) -> Iterator[tuple[int, dict]]:
    """(entry index, device) for every device each entry reaches.

    An entry names either a user (PowerAuth: every registration of the user) or
    one ``device`` directly (``{"_id", "token", "platform", "environment"}``:
    the WalletConnect APIs, which know the token already).
    """
    for index, entry in enumerate(entries):
        if entry.get("device"):
            yield index, entry["device"]
    users = {entry["user_id"] for entry in entries if entry.get("user_id")}
    devices_by_user = lookup.devices_by_user(
        db, app_id, users, {"token": 1, "platform": 1, "environment": 1, "activations": 1}
    )
    personal_activations = {
        activation
        for entry in entries
        if entry.get("personal")
        for device in devices_by_user.get(entry.get("user_id"), ())
        for activation in device["activations"]
    }
    status = activation_status.statuses(db, app_id, personal_activations)
    for index, entry in enumerate(entries):
        for device in devices_by_user.get(entry.get("user_id"), ()):
            activations = [a for a, user in device["activations"].items() if user == entry["user_id"]]
            if entry.get("activation_id"):
                activations = [a for a in activations if a == entry["activation_id"]]
                if not activations:
                    continue
            if entry.get("personal") and not any(status.get(a, ACTIVE) == ACTIVE for a in activations):
                continue
            yield index, device


def _parts(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
