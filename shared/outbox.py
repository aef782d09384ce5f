"""The outcome feed's outbox (issue 18): events an app's webhook is told, at least once.

An event is written by the one function :func:`add_events`, which the outcome
recorder calls before it records the outcomes the events report (workers/deliver.py
``Recorder._write``): a kill between the two leaves the delivery without an
outcome, so it is sent and recorded again, and its event, whose ``_id`` is made
of the delivery id, is not added twice. The sender loop (workers/outcome_feed.py)
drains the outbox.

An event: ``_id`` (the id receivers dedupe by), ``app_id``, ``type`` (one of
:data:`EVENT_TYPES`), ``data``, ``created_at``, ``next_at`` (when it may be
sent), ``attempts``, ``lease_until`` / ``claim`` (the sender holding it).
"""
from __future__ import annotations

import time

from pymongo.database import Database

from shared import db as collections
from shared import ledger

OUTBOX = "outbox"
DEAD_TOKEN, FAILED, MESSAGE_DONE = "dead_token", "failed", "message_done"
EVENT_TYPES = (DEAD_TOKEN, FAILED, MESSAGE_DONE)


def event(app_id: str, type_: str, key: str, data: dict) -> dict:
    """An outbox document; ``key`` makes its id (the same outcome reported again is the same event)."""
    now = time.time()
    return {"_id": f"{type_}:{key}", "app_id": app_id, "type": type_, "data": data, "created_at": now, "next_at": now,
            "attempts": 0, "lease_until": 0.0, "claim": None}


def add_events(db: Database, events: list[dict]) -> None:
    """Write events (made by :func:`event`); an event already there is kept as it is."""
    ledger.insert_ignoring_duplicates(db[OUTBOX], events)


def webhook_of(db: Database, app_id: str) -> dict | None:
    """The app's outcome webhook ``{url, secret, events}``, or None."""
    app = db[collections.APPS].find_one({"_id": app_id}, {"webhook": 1})
    return (app or {}).get("webhook") or None


def set_webhook(db: Database, cmd: dict) -> None:
    """The ``app.webhook`` write (the last one the API received wins; two filters, not ``$or``, for nx-27017)."""
    update = {"$set": {"webhook": cmd["webhook"], "webhook_ts": cmd["received_at"]}}
    apps = db[collections.APPS]
    if not apps.update_one({"_id": cmd["app_id"], "webhook_ts": {"$lt": cmd["received_at"]}}, update).matched_count:
        apps.update_one({"_id": cmd["app_id"], "webhook_ts": {"$exists": False}}, update)


#: Delivery states reported as events, and the event type of each.
EVENT_OF_STATE = {"dead_token": DEAD_TOKEN, "failed": FAILED}


def outcome_events(app_id: str | None, platform: str, results) -> list[dict]:
    """The events of recorded outcomes (the recorder's results: ``.state``, ``.reason``, ``.delivery.id``, ``.delivery.token``)."""
    if app_id is None:
        return []
    return [
        event(app_id, EVENT_OF_STATE[r.state], r.delivery.id,
              {"messageId": r.delivery.id.split(":", 1)[0], "token": r.delivery.token, "platform": platform, "reason": r.reason,
               "at": time.time()})
        for r in results
        if r.state in EVENT_OF_STATE
    ]


HANDLERS = {"app.webhook": set_webhook}
