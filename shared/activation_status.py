"""PowerAuth activation statuses, scoped per app: one app's key cannot set the status another app's devices see.

``POST /push/device/status/update`` names only the activation. With an app's
API key the status is recorded for that app (``_id`` app NUL activation); with
the admin key (or auth off) for every app (``_id`` the activation id, as
before). A send of an app reads both and the newer (higher write order) wins,
so an admin's later change overrides an app's and the other way round. Before,
every status was global: app A's key could preset the status of an activation
app B registered later (issue 14 item 7).
"""
from __future__ import annotations

from collections.abc import Iterable

from pymongo.database import Database

from shared import db as mongo

#: Status documents read per query (``_id`` ``$in``).
KEYS_PER_QUERY = 1000


def status_key(app_id: str | None, activation_id: str) -> str:
    """``_id`` of an activation's status for ``app_id`` (None: every app's, the admin's record)."""
    return activation_id if app_id is None else f"{app_id}\x00{activation_id}"


def statuses(db: Database, app_id: str, activation_ids: Iterable[str]) -> dict[str, str]:
    """The status each activation has for ``app_id`` (the newer of its own and the every-app record); absent when none."""
    ids = sorted(set(activation_ids))
    keys = [key for activation in ids for key in (status_key(None, activation), status_key(app_id, activation))]
    found: dict[str, dict] = {}
    for start in range(0, len(keys), KEYS_PER_QUERY):
        for doc in db[mongo.ACTIVATIONS].find({"_id": {"$in": keys[start : start + KEYS_PER_QUERY]}}, {"status": 1, "ts": 1}):
            found[doc["_id"]] = doc
    result = {}
    for activation in ids:
        records = [doc for doc in (found.get(status_key(None, activation)), found.get(status_key(app_id, activation))) if doc]
        if records:
            result[activation] = max(records, key=lambda doc: doc.get("ts", 0))["status"]
    return result
