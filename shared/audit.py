"""The audit log of admin actions: who did what, when, with which answer; never a secret.

Every request to an admin route that is not a read (``/admin/…`` and the
WalletConnect tenant management ``/tenants…``; refused attempts included) is
recorded by the API as an ``audit.record`` write (confirmed by RabbitMQ like
every write, applied by a persist worker into ``audit_log``) and read back by
the admin with ``GET /admin/audit`` (api/audit.py).

An entry holds: ``at`` (the API's time), ``who`` (``admin`` key, an app's API
key by id, the WalletConnect admin token, or ``auth-off``), ``action`` (method
and route), ``path``, ``status``, and ``target``: the ids a request names
(:data:`TARGET_FIELDS` of its JSON body), never a body, a key, a token or a
credential.
"""
from __future__ import annotations

from datetime import UTC, datetime

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from shared import db as mongo

#: Write command kind of an audit entry.
RECORD = "audit.record"
#: Body fields (top level or inside PowerAuth's ``requestObject``) copied into an entry's target: ids, never values.
TARGET_FIELDS = ("appId", "keyId", "id", "name", "ids", "all", "activationId")
#: Longest text kept per target field, and most list items kept.
MAX_TARGET_TEXT = 256
MAX_TARGET_ITEMS = 20


def entry_id(at_ns: int, command_id: str) -> str:
    """``_id`` of an entry: sortable by time (the API's), unique by its command."""
    return f"{at_ns:020d}-{command_id}"


def target_of(body) -> dict:
    """The ids a request body names (:data:`TARGET_FIELDS`), trimmed; nothing else of it."""
    if not isinstance(body, dict):
        return {}
    inner = body.get("requestObject") if isinstance(body.get("requestObject"), dict) else {}
    target = {}
    for name in TARGET_FIELDS:
        value = inner.get(name, body.get(name))
        if isinstance(value, str):
            target[name] = value[:MAX_TARGET_TEXT]
        elif isinstance(value, bool | int):
            target[name] = value
        elif isinstance(value, list):
            target[name] = [str(item)[:MAX_TARGET_TEXT] for item in value[:MAX_TARGET_ITEMS]]
    return target


def record(db: Database, cmd: dict) -> None:
    """Store one entry (a redelivered command stores nothing twice)."""
    try:
        db[mongo.AUDIT_LOG].insert_one(
            {
                "_id": entry_id(cmd["received_at"], cmd["id"]),
                "at": datetime.fromtimestamp(cmd["received_at"] / 1e9, UTC),
                **{name: cmd.get(name) for name in ("who", "action", "path", "status", "target")},
            }
        )
    except DuplicateKeyError:
        pass


HANDLERS = {RECORD: record}
