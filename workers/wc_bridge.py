"""The WalletConnect v1 bridge's side of the workers: its writes, and the webhook push to the wallet.

Writes (sessions, call requests, call statuses) are applied like every other
write (:func:`workers.writes.apply`): idempotent, last writer wins on the
write's order ``ts`` (shared/write_order.py). Each document carries ``expires_at``, the API's receive
time plus the TTL the API put in the command, so a replayed command stores the
same expiry; a TTL index on ``expires_at`` removes it from MongoDB, and the
readers treat a passed ``expires_at`` as absent (TTL deletion is not instant).

A webhook push is one document in ``wc_pushes`` (``_id`` = the push id, the
call id). The API publishes it on ``deliver.webhook`` as ``{id, url, body,
call_id, session_id, first_attempt_at, attempts}``. The actor claims it before it POSTs, so a push published twice or
redelivered is sent once while its claim holds; it retries transient failures
a few times in-process (tenacity, exponential backoff with jitter), then goes
back to the queue with a delay, and gives up after ``delivery_max_age_seconds``
with a dead letter. Every attempt's outcome is recorded on the push. The POST
goes through the outbound check (shared/outbound.py), made again when it is
sent: a URL it refuses (a name that now resolves to a private address, one
queued before the settings changed) is recorded as failed and nothing is sent;
a redirect is not followed (its 3xx is recorded as the failure). The call
request itself was stored before the push was published: a failed push never
loses it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import requests
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_result,
    stop_after_attempt,
    wait_exponential_jitter,
)

from shared import db as mongo
from shared.commands import DELIVER_CHUNK_WEBHOOK, Publisher, new_id
from shared.outbound import OutboundRefused, OutboundSession, parse
from shared.settings import Settings
from shared.write_order import order_of
from workers.writes import upsert_if_newer

log = logging.getLogger(__name__)

#: Seconds between two purges of expired documents by one worker process (the TTL index's fallback).
PURGE_INTERVAL_SECONDS = 60.0
#: Expired ids deleted per ``delete_many``.
PURGE_BATCH = 1000
#: First backoff between two webhook attempts (seconds); it doubles per attempt, plus jitter.
WEBHOOK_INITIAL_BACKOFF = 0.2
#: HTTP statuses of a webhook answer worth another try (besides 5xx).
WEBHOOK_RETRY_STATUSES = (408, 425, 429)
#: Extra seconds past a foreign claim's lease before the push is looked at again.
LEASE_GRACE_SECONDS = 1.0
#: A push record outlives the longest delivery by this much (then the TTL index removes it).
PUSH_RECORD_KEEP_SECONDS = 86400.0

SENT = "sent"
FAILED = "failed"
DEAD_LETTER = "dead_letter"
FINAL_STATES = (SENT, FAILED, DEAD_LETTER)
CLAIMABLE = ("pending", "retry")
#: What the recorded error of a webhook the outbound check refused starts with (nothing was sent).
REFUSED = "not sent: the webhook is not allowed on this server"


def expires_at(cmd: dict, ttl_seconds: float) -> datetime:
    """The expiry of what ``cmd`` writes: the API's receive time plus the TTL."""
    return datetime.fromtimestamp(cmd["received_at"] / 1e9 + ttl_seconds, UTC)


def _now() -> datetime:
    return datetime.now(UTC)


# --- writes -------------------------------------------------------------------------------------

def new_session(db: Database, cmd: dict) -> None:
    upsert_if_newer(
        db[mongo.WC_SESSIONS],
        cmd["session_id"],
        order_of(cmd),
        {"payload": None, "push": None, "deleted": False, "expires_at": expires_at(cmd, cmd["ttl_seconds"])},
    )
    purge_expired_now_and_then(db)


def update_session(db: Database, cmd: dict) -> None:
    """The wallet's session details and push target; a deleted session stays deleted."""
    db[mongo.WC_SESSIONS].update_one(
        {"_id": cmd["session_id"], "ts": {"$lt": order_of(cmd)}, "deleted": False},
        {
            "$set": {
                "payload": cmd["payload"],
                "push": cmd.get("push"),
                "expires_at": expires_at(cmd, cmd["ttl_seconds"]),
                "ts": order_of(cmd),
            }
        },
    )


def delete_session(db: Database, cmd: dict) -> None:
    """Tombstone the session (a late update cannot bring it back) and drop its calls."""
    session_id = cmd["session_id"]
    upsert_if_newer(
        db[mongo.WC_SESSIONS],
        session_id,
        order_of(cmd),
        {"payload": None, "push": None, "deleted": True, "expires_at": expires_at(cmd, cmd["ttl_seconds"])},
    )
    call_ids = [doc["_id"] for doc in db[mongo.WC_CALLS].find({"session_id": session_id}, {"_id": 1})]
    if call_ids:
        db[mongo.WC_CALLS].delete_many({"_id": {"$in": call_ids}})
        db[mongo.WC_CALL_STATUS].delete_many({"_id": {"$in": call_ids}})


def new_call(db: Database, cmd: dict) -> None:
    try:
        db[mongo.WC_CALLS].insert_one(
            {
                "_id": cmd["call_id"],
                "session_id": cmd["session_id"],
                "payload": cmd["payload"],
                "dapp_name": cmd.get("dapp_name"),
                "push": cmd.get("push"),
                "created_at": _now(),
                "ts": order_of(cmd),
                "expires_at": expires_at(cmd, cmd["ttl_seconds"]),
            }
        )
    except DuplicateKeyError:
        pass


def set_call_status(db: Database, cmd: dict) -> None:
    upsert_if_newer(
        db[mongo.WC_CALL_STATUS],
        cmd["call_id"],
        order_of(cmd),
        {"payload": cmd["payload"], "expires_at": expires_at(cmd, cmd["ttl_seconds"])},
    )


HANDLERS = {
    "wc.session.new": new_session,
    "wc.session.update": update_session,
    "wc.session.delete": delete_session,
    "wc.call.new": new_call,
    "wc.call.status": set_call_status,
}


# --- expiry -------------------------------------------------------------------------------------

_last_purge = {"at": 0.0}


def purge_expired_now_and_then(db: Database) -> None:
    """Run :func:`purge_expired` at most once per :data:`PURGE_INTERVAL_SECONDS` in this process."""
    now = time.monotonic()
    if now - _last_purge["at"] < PURGE_INTERVAL_SECONDS:
        return
    _last_purge["at"] = now
    try:
        purge_expired(db)
    except Exception:  # noqa: BLE001 - a failed clean-up must not fail the write that triggered it
        log.exception("purge of expired WalletConnect bridge data failed")


def purge_expired(db: Database, now: datetime | None = None) -> int:
    """Delete documents whose ``expires_at`` has passed (what the TTL index does, for servers without one)."""
    now = now or _now()
    deleted = 0
    for collection in mongo.TTL_COLLECTIONS:
        ids = [doc["_id"] for doc in db[collection].find({mongo.EXPIRES_AT: {"$lt": now}}, {"_id": 1})]
        for start in range(0, len(ids), PURGE_BATCH):
            part = ids[start : start + PURGE_BATCH]
            deleted += db[collection].delete_many({"_id": {"$in": part}, mongo.EXPIRES_AT: {"$lt": now}}).deleted_count
    return deleted


# --- webhook push -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Attempt:
    """One POST's outcome: the HTTP status (None without an answer), what went wrong, whether it was refused unsent."""

    status: int | None
    error: str | None = None
    refused: bool = False

    @property
    def sent(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        if self.refused:
            return False
        return self.status is None or self.status >= 500 or self.status in WEBHOOK_RETRY_STATUSES


@dataclass
class WebhookContext:
    """What a webhook delivery needs from the worker process.

    Parameters:
      db: MongoDB.
      publisher: to put a push back on the queue with a delay.
      settings: timeouts, retry limits and ages.
      session: the process's pooled outbound session (shared/outbound.py: checked targets, no redirects).
    """

    db: Database
    publisher: Publisher
    settings: Settings
    session: OutboundSession


def post_once(ctx: WebhookContext, url: str, body: dict) -> Attempt:
    try:
        answer = ctx.session.post(url, json=body, timeout=ctx.settings.wc_bridge_webhook_timeout_seconds)
    except OutboundRefused as refused:
        return Attempt(None, f"{REFUSED}: {refused}", refused=True)
    except requests.RequestException as error:
        return Attempt(None, f"{type(error).__name__}: {error}"[:500])
    answer.close()
    if 300 <= answer.status_code < 400:
        return Attempt(answer.status_code, f"HTTP {answer.status_code}: redirect not followed")
    return Attempt(answer.status_code, None if 200 <= answer.status_code < 300 else f"HTTP {answer.status_code}")


def backoff(attempt: int, settings: Settings) -> float:
    """Seconds to wait after the ``attempt``-th failed attempt (1 for the first), with jitter."""
    strategy = wait_exponential_jitter(
        multiplier=WEBHOOK_INITIAL_BACKOFF, max=settings.delivery_max_backoff, jitter=WEBHOOK_INITIAL_BACKOFF
    )
    state = RetryCallState(None, None, (), {})
    state.attempt_number = max(1, attempt)
    return min(settings.delivery_max_backoff, strategy(state))


def post_with_retries(ctx: WebhookContext, url: str, body: dict, *, earlier_attempts: int) -> tuple[Attempt, int]:
    """POST with a few in-process retries; answers the last attempt and how many were made."""
    settings = ctx.settings

    def wait(state: RetryCallState) -> float:
        return backoff(earlier_attempts + state.attempt_number, settings)

    def too_long(state: RetryCallState) -> bool:
        return (state.upcoming_sleep or 0.0) > settings.delivery_max_in_process_wait

    retrying = Retrying(
        retry=retry_if_result(lambda attempt: attempt.retryable),
        wait=wait,
        stop=stop_after_attempt(max(1, settings.delivery_in_process_tries)) | too_long,
        retry_error_callback=lambda state: state.outcome.result(),
    )
    attempt = retrying(post_once, ctx, url, body)
    return attempt, retrying.statistics.get("attempt_number", 1)


def deliver_webhook(ctx: WebhookContext, job: dict) -> str | None:
    """Claim, POST and record one webhook push; answers the state recorded (None when not claimed)."""
    pushes = ctx.db[mongo.WC_PUSHES]
    push_id = job["id"]
    keep_until = datetime.fromtimestamp(
        job["first_attempt_at"] + ctx.settings.delivery_max_age_seconds + PUSH_RECORD_KEEP_SECONDS, UTC
    )
    pushes.update_one(
        {"_id": push_id},
        {
            "$setOnInsert": {
                "state": "pending",
                "url": job["url"],
                "call_id": job.get("call_id"),
                "session_id": job.get("session_id"),
                "attempts": 0,
                "created_at": _now(),
                mongo.EXPIRES_AT: keep_until,
            }
        },
        upsert=True,
    )
    claim = new_id()
    now = time.time()
    grab = {"$set": {"state": "sending", "claim": claim, "lease_until": now + ctx.settings.delivery_lease_seconds}}
    pushes.update_one({"_id": push_id, "state": {"$in": list(CLAIMABLE)}}, grab)
    pushes.update_one({"_id": push_id, "state": "sending", "lease_until": {"$lt": now}}, grab)
    record = pushes.find_one({"_id": push_id}, {"state": 1, "claim": 1, "lease_until": 1, "attempts": 1})
    if record is None or record["state"] in FINAL_STATES:
        return None
    if record.get("claim") != claim:
        # Another run holds it (or held it and crashed): look again once its lease is over.
        delay = max(0.0, record["lease_until"] - now) + LEASE_GRACE_SECONDS
        ctx.publisher.publish(DELIVER_CHUNK_WEBHOOK, job, delay_ms=int(delay * 1000))
        return None

    earlier = record.get("attempts", 0)
    attempt, tries = post_with_retries(ctx, job["url"], job["body"], earlier_attempts=earlier)
    attempts = earlier + (0 if attempt.refused else tries)
    outcome = {"attempts": attempts, "last_status": attempt.status, "last_error": attempt.error, "at": _now()}
    if attempt.sent:
        state = SENT
    elif not attempt.retryable:
        state = FAILED
    else:
        wait = backoff(attempts, ctx.settings)
        state = DEAD_LETTER if time.time() + wait >= job["first_attempt_at"] + ctx.settings.delivery_max_age_seconds else "retry"
    pushes.update_one({"_id": push_id, "claim": claim}, {"$set": {"state": state, **outcome}})
    if state == "retry":
        ctx.publisher.publish(DELIVER_CHUNK_WEBHOOK, {**job, "attempts": attempts}, delay_ms=int(wait * 1000))
    elif state == DEAD_LETTER:
        ctx.db[mongo.DEAD_LETTERS].insert_one(
            {
                "delivery_id": push_id,
                "message_id": job.get("call_id"),
                "platform": "webhook",
                "reason": f"gave up after {attempts} attempts: {attempt.error}",
                "at": time.time(),
            }
        )
    if state != SENT:
        # The URL's origin only: its path or query may carry the wallet's token.
        log.warning("webhook push %s to %s: %s after %d attempts (%s)", push_id, _origin(job["url"]), state, attempts, attempt.error)
    return state


def _origin(url: str) -> str:
    """``scheme://host:port`` of a webhook URL for a log line (or that it is not one)."""
    try:
        target = parse(url)
    except OutboundRefused:
        return "(an invalid URL)"
    return f"{target.scheme}://{target.authority}"
