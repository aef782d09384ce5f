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

from shared import db as mongo
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


#: ``webhook`` of :func:`add_wanted` when the caller has not read the app: it is read then.
READ = object()


def add_wanted(db: Database, app_id: str | None, events: list[dict], *, webhook=READ) -> None:
    """Write those of one app's events its outcome webhook asks for (none without a webhook: nobody to tell);
    ``webhook``: the app's, when the caller read the app already (:func:`webhook_in`)."""
    if webhook is READ:
        webhook = webhook_of(db, app_id) if app_id and events else None
    wanted = [e for e in events if asks_for(webhook, e["type"])]
    if wanted:
        add_events(db, wanted)


def webhook_of(db: Database, app_id: str) -> dict | None:
    """The app's outcome webhook ``{url, secret, events}``, or None."""
    return webhook_in(db[mongo.APPS].find_one({"_id": app_id}, {"webhook": 1}))


def webhook_in(app: dict | None) -> dict | None:
    """The outcome webhook of an app document already read, or None."""
    return (app or {}).get("webhook") or None


def asks_for(webhook: dict | None, type_: str) -> bool:
    return bool(webhook) and type_ in webhook.get("events", ())


def set_webhook(db: Database, cmd: dict) -> None:
    """The ``app.webhook`` write (the last one the API received wins; two filters, not ``$or``, for nx-27017)."""
    update = {"$set": {"webhook": cmd["webhook"], "webhook_ts": cmd["received_at"]}}
    apps = db[mongo.APPS]
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
               "at": getattr(r, "at", None) or time.time()})
        for r in results
        if r.state in EVENT_OF_STATE
    ]


def wants(db: Database, app_id: str | None, type_: str) -> bool:
    """Whether the app's outcome webhook asks for events of ``type_`` (no outbox document is written otherwise)."""
    return asks_for(webhook_of(db, app_id) if app_id else None, type_)


def message_done(db: Database, app_id: str | None, message_ids, *, wanted: bool | None = None) -> None:
    """Add the ``message_done`` event of each message whose deliveries are all final, once its app's feed asks for it.

    Called after a chunk's last open delivery is recorded (workers/recorder.py) and after a
    message is expanded (workers/expand.py, workers/campaigns.py): whichever of two racing
    writers looks last sees every chunk final. The event's ``_id`` is the message id's, so
    two that see it done add one event.
    """
    if not (wants(db, app_id, MESSAGE_DONE) if wanted is None else wanted):
        return
    events = []
    for message_id in dict.fromkeys(message_ids):
        message = db[mongo.MESSAGES].find_one({"_id": message_id}, {"app_id": 1, "expanded": 1, "total": 1})
        if not message or not message.get("expanded") or message.get("app_id") != app_id or ledger.has_open(db, message_id):
            continue
        counts = ledger.state_counts(db, [message_id])
        events.append(event(message["app_id"], MESSAGE_DONE, message_id,
                            {"messageId": message_id, "total": message.get("total", 0), "states": dict(counts), "at": time.time()}))
    if events:
        add_events(db, events)
        db[mongo.MESSAGES].update_many({"_id": {"$in": [e["data"]["messageId"] for e in events]}}, {"$set": {DONE_TOLD: True}})


# --- message_done, whatever a kill interrupted ---------------------------------------------------

#: A message's field: False from its expansion until its ``message_done`` event is written (True), only for an app
#: whose feed asks for it. A worker killed between writing a message's last outcome and its event leaves it False,
#: and :func:`sweep_message_done` writes the event.
DONE_TOLD = "done_told"
#: When the sweep looks at a message still open next (seconds since the epoch).
DONE_CHECK_AT = "done_check_at"
#: Seconds between two looks of the sweep at a message still open.
DONE_SWEEP_SECONDS = 5.0
#: Messages the sweep looks at per step.
DONE_SWEEP_BATCH = 200


def expansion_fields(db: Database, app_id: str | None) -> dict:
    """What an expansion sets on its message besides ``expanded``: the mark the sweep follows, when the feed wants the event."""
    return {DONE_TOLD: False, DONE_CHECK_AT: 0.0} if wants(db, app_id, MESSAGE_DONE) else {}


def sweep_message_done(db: Database, *, now: float | None = None) -> int:
    """Write the ``message_done`` event of the marked messages now done (the same event as :func:`message_done`);
    look at those still open again after :data:`DONE_SWEEP_SECONDS`; answer how many were looked at."""
    now = time.time() if now is None else now
    messages = db[mongo.MESSAGES]
    due = list(messages.find({DONE_TOLD: False, DONE_CHECK_AT: {"$lte": now}}, {"app_id": 1}).limit(DONE_SWEEP_BATCH))
    if not due:
        return 0
    messages.update_many({"_id": {"$in": [m["_id"] for m in due]}}, {"$set": {DONE_CHECK_AT: now + DONE_SWEEP_SECONDS}})
    by_app: dict[str, list[str]] = {}
    for message in due:
        by_app.setdefault(message.get("app_id"), []).append(message["_id"])
    for app_id, ids in by_app.items():
        if wants(db, app_id, MESSAGE_DONE):
            message_done(db, app_id, ids, wanted=True)
        else:  # the feed no longer asks for it
            messages.update_many({"_id": {"$in": ids}}, {"$set": {DONE_TOLD: True}})
    return len(due)


HANDLERS = {"app.webhook": set_webhook}
