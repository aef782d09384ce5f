"""The outcome feed's sender: a loop in each worker process that drains the outbox (shared/outbox.py).

Events are claimed in bulk under a lease, POSTed to their app's webhook in
batches through the one outbound-URL check (shared/outbound.py), signed
``X-Push-Signature: t=<unix time>,sha256=<HMAC-SHA256(secret, t + "." + body)>``,
and deleted once the webhook answered 2xx. Anything else is tried again with
exponential backoff and jitter; a sender killed mid-way leaves its claims to
run out, and the events are sent again (at least once: receivers dedupe by ``id``).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import threading
import time

import requests
from pymongo.database import Database
from pymongo.errors import PyMongoError

from shared import outbox
from shared.commands import new_id
from shared.outbound import OutboundRefused, OutboundSession
from shared.outbox import OUTBOX, webhook_of
from shared.sealed_credentials import CredentialKeys, CredentialsUnavailable

log = logging.getLogger(__name__)

#: Events claimed per look, and sent per POST.
CLAIM_BATCH = 1000
POST_BATCH = 100
#: Seconds a sender holds what it claimed (longer than a POST may take).
LEASE_SECONDS = 30.0
#: Seconds a POST may take.
POST_TIMEOUT_SECONDS = 10.0
#: Seconds between two looks at an empty outbox.
POLL_SECONDS = 1.0
#: Backoff of a failed POST: first wait, longest wait (seconds), and the tries before an event is dropped (about a day).
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 600.0
MAX_ATTEMPTS = 150
SIGNATURE_HEADER = "X-Push-Signature"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Push-Signature`` value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},sha256={mac}"


def backoff(attempts: int) -> float:
    """Seconds before try ``attempts + 1``: doubling from the first wait to the longest, with full jitter over its upper half."""
    wait = min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2 ** max(0, attempts - 1))
    return wait / 2 + random.random() * wait / 2


def body_of(events: list[dict]) -> bytes:
    return json.dumps({"events": [{"id": e["_id"], "type": e["type"], "appId": e["app_id"], "createdAt": e["created_at"], **e["data"]}
                                  for e in events]}, separators=(",", ":")).encode()


def post(session: OutboundSession, webhook: dict, events: list[dict]) -> str | None:
    """POST one batch; None when the webhook took it (2xx), else why not."""
    body = body_of(events)
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(webhook["secret"], int(time.time()), body)}
    try:
        answer = session.post(webhook["url"], data=body, headers=headers, timeout=POST_TIMEOUT_SECONDS)
    except OutboundRefused as refused:
        return f"refused: {refused}"
    except requests.RequestException as error:
        return f"{type(error).__name__}: {error}"[:300]
    answer.close()
    return None if 200 <= answer.status_code < 300 else f"HTTP {answer.status_code}"


def opened_webhook(db: Database, keys: CredentialKeys | None, app_id: str) -> dict | None:
    """The app's webhook with its secret opened (sealed at rest: shared/sealed_credentials.py); None without one or if it does not open."""
    webhook = webhook_of(db, app_id)
    if not webhook or keys is None:
        return webhook
    try:
        return keys.open(app_id, "webhook", webhook)
    except CredentialsUnavailable as error:
        log.warning("outcome feed of %s: %s", app_id, error)
        return None


def send_due(db: Database, session: OutboundSession, *, now: float | None = None, keys: CredentialKeys | None = None) -> int:
    """Claim due events, send them per app, settle each; answer how many were settled (sent, dropped or delayed)."""
    now = time.time() if now is None else now
    outbox = db[OUTBOX]
    due = [e["_id"] for e in outbox.find({"next_at": {"$lte": now}, "lease_until": {"$lt": now}}, {"_id": 1}).limit(CLAIM_BATCH)]
    if not due:
        return 0
    claim = new_id()
    outbox.update_many({"_id": {"$in": due}, "lease_until": {"$lt": now}}, {"$set": {"claim": claim, "lease_until": now + LEASE_SECONDS}})
    by_app: dict[str, list[dict]] = {}
    for doc in outbox.find({"_id": {"$in": due}, "claim": claim}):
        by_app.setdefault(doc["app_id"], []).append(doc)
    settled = 0
    for app_id, events in by_app.items():
        webhook = opened_webhook(db, keys, app_id)
        wanted = [e for e in events if webhook and e["type"] in webhook.get("events", ())]
        unwanted = [e["_id"] for e in events if e not in wanted]
        if unwanted:  # no feed for them: nobody to tell
            outbox.delete_many({"_id": {"$in": unwanted}, "claim": claim})
        for start in range(0, len(wanted), POST_BATCH):
            part = wanted[start : start + POST_BATCH]
            ids = [e["_id"] for e in part]
            failure = post(session, webhook, part)
            if failure is None:
                outbox.delete_many({"_id": {"$in": ids}, "claim": claim})
                continue
            attempts = max(e["attempts"] for e in part) + 1
            if attempts >= MAX_ATTEMPTS:
                log.warning("outcome feed of %s: %d events dropped after %d tries: %s", app_id, len(ids), attempts, failure)
                outbox.delete_many({"_id": {"$in": ids}, "claim": claim})
                continue
            log.info("outcome feed of %s: %d events not taken (%s), try %d", app_id, len(ids), failure, attempts)
            outbox.update_many({"_id": {"$in": ids}, "claim": claim},
                               {"$set": {"attempts": attempts, "next_at": time.time() + backoff(attempts), "lease_until": 0.0,
                                         "claim": None, "last_error": failure}})
        settled += len(events)
    return settled


def run_sender(db: Database, session: OutboundSession, *, stop: threading.Event, keys: CredentialKeys | None = None) -> None:
    swept = 0.0
    while not stop.is_set():
        try:
            if time.monotonic() - swept >= outbox.DONE_SWEEP_SECONDS:
                swept = time.monotonic()
                outbox.sweep_message_done(db)  # a message_done a killed worker did not write
            if send_due(db, session, keys=keys):
                continue
        except PyMongoError as error:
            log.warning("outcome feed paused, MongoDB: %s", error)
        except Exception:  # the claims' lease brings the events back
            log.exception("outcome feed paused")
        stop.wait(POLL_SECONDS)


def start_sender(db: Database, session: OutboundSession, keys: CredentialKeys | None = None) -> threading.Event:
    """Start this process's outcome feed sender thread; set the answered event to stop it. ``keys`` open the webhooks' secrets."""
    stop = threading.Event()
    threading.Thread(target=run_sender, args=(db, session), kwargs={"stop": stop, "keys": keys}, name="outcome-feed", daemon=True).start()
    return stop
