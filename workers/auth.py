"""Apply API key writes (create, revoke), idempotently and in any order; keep secrets out of logs.

The API sends only a key's SHA-256 digest through the queue: the key itself
is answered once to the admin who created it and stored nowhere. Both writes
are upserts by the key id, so a revoke that lands before its create (or a
create redelivered after a revoke) leaves a revoked key: a revoked document
can never authenticate again.
"""
from __future__ import annotations

import logging
from datetime import UTC, datetime

from pymongo.database import Database

from shared import db as mongo

#: Dramatiq's loggers that print a message with its arguments (``actor(args…)``) on failure.
DRAMATIQ_MESSAGE_LOGGERS = ("dramatiq.worker.WorkerThread",)


def create_key(db: Database, cmd: dict) -> None:
    db[mongo.API_KEYS].update_one(
        {"_id": cmd["key_id"]},
        {
            "$setOnInsert": {
                "app_id": cmd["app_id"],
                "hash": cmd["hash"],
                "name": cmd.get("name"),
                "created_at": datetime.now(UTC),
                "revoked_at": None,
            }
        },
        upsert=True,
    )


def revoke_key(db: Database, cmd: dict) -> None:
    db[mongo.API_KEYS].update_one(
        {"_id": cmd["key_id"]},
        {"$set": {"revoked_at": datetime.now(UTC)}, "$setOnInsert": {"app_id": cmd["app_id"], "hash": None}},
        upsert=True,
    )


HANDLERS = {
    "auth.key.create": create_key,
    "auth.key.revoke": revoke_key,
}


class RedactMessageArguments(logging.Filter):
    """Log a Dramatiq message as ``actor(id)`` rather than with its arguments.

    A write command may carry an app's provider credentials (APNs key, FCM
    service account); Dramatiq prints the whole message when an actor fails.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args:
            record.args = tuple(_redacted(arg) for arg in args)
        return True


def _redacted(arg):
    actor_name, message_id = getattr(arg, "actor_name", None), getattr(arg, "message_id", None)
    if actor_name is not None and message_id is not None:
        return f"{actor_name}(message_id={message_id}, arguments redacted)"
    return arg


def redact_message_logs() -> None:
    """Install :class:`RedactMessageArguments` on Dramatiq's message-printing loggers (idempotent)."""
    for name in DRAMATIQ_MESSAGE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactMessageArguments) for f in logger.filters):
            logger.addFilter(RedactMessageArguments())
