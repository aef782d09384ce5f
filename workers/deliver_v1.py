"""The old deliver-message format (``ledger_v1``): chunks of ``Delivery.as_list()`` rows kept in ``deliveries``.

A deployment upgraded while such messages are still queued delivers them
exactly as before: each delivery is a row, claimed from ``pending``/``retry`` to
``sending`` under the run's claim id with a lease, sent only when claimed, and
its outcome written in small bulk writes guarded by the claim. New expansions
write ledger chunks (shared/ledger.py, workers/deliver.py); this module only
drains what older workers published.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pymongo import UpdateMany
from pymongo.database import Database
from pymongo.errors import ConnectionFailure

from shared import db as mongo
from shared import metrics
from shared.commands import DELIVER_ACTOR_BY_PROVIDER, new_id
from shared.ledger import CLAIMABLE, Delivery
from workers.deliver import (
    DEACTIVATE_DEVICE,
    DEAD_TOKEN_ACTIONS,
    STATE_BY_OUTCOME,
    DeliveryContext,
    Result,
    Suspension,
    _apns_sender,
    _fcm_sender,
    _provider_unavailable,
    _valid_until,
)
from workers.delivery.outcomes import CLASSIFY_BY_PROVIDER, Outcome
from workers.delivery.retry import deliver_with_retries
from workers.expand import chunk_payload

log = logging.getLogger(__name__)

#: Seconds between two bulk writes of the outcomes that have arrived.
RECORD_INTERVAL_SECONDS = 0.02
#: Extra seconds past a foreign lease before a held delivery is looked at again.
LEASE_GRACE_SECONDS = 1.0
#: How many times per lease period a run renews the lease of what it is still sending.
LEASE_RENEWALS = 3
#: How long a run keeps outcomes it could not write (MongoDB away) before it gives up on them.
RECORD_GIVE_UP_SECONDS = 300.0
#: Pause between two tries of writing outcomes while MongoDB is away.
RECORD_RETRY_PAUSE_SECONDS = 0.5

@dataclass
class Recorder:
    """Buffers outcomes and writes them in bulk, guarded by the claim id."""

    db: Database
    claim: str
    platform: str
    entries: dict
    pending: list[Result] = field(default_factory=list)
    #: What a dead token does, by the entry's ``dead_token`` (``DeliveryContext.dead_token_actions``).
    dead_token_actions: Mapping[str, Callable] = field(default_factory=lambda: dict(DEAD_TOKEN_ACTIONS))

    def add(self, result: Result) -> None:
        self.pending.append(result)

    async def flush(self) -> None:
        """Write what has arrived; while MongoDB is unreachable keep it for the next flush.

        Dropping outcomes would leave their deliveries claimed without an outcome:
        retried after the lease, sent a second time although the provider took them.
        """
        results, self.pending = self.pending, []
        if not results:
            return
        try:
            await asyncio.to_thread(self._write, results)
        except ConnectionFailure as error:
            self.pending[:0] = results
            log.warning("%d outcomes kept for the next write, MongoDB unreachable: %s", len(results), error)

    async def flush_all(self) -> None:
        """Write every outcome, waiting (bounded) for MongoDB to come back; the writes are idempotent."""
        deadline = time.monotonic() + RECORD_GIVE_UP_SECONDS
        await self.flush()
        while self.pending:
            if time.monotonic() > deadline:
                await asyncio.to_thread(self._write, self.pending)  # the last try raises: Dramatiq retries the chunk
                self.pending = []
                return
            await asyncio.sleep(RECORD_RETRY_PAUSE_SECONDS)
            await self.flush()

    def _write(self, results: list[Result]) -> None:
        # Dead tokens first: a crash between the two writes then leaves the delivery claimed
        # (retried after the lease; the provider says "dead" again), never recorded as
        # dead_token with its registration still active (which nothing would ever fix).
        dead: dict[str, list[Result]] = {}
        for result in results:
            if result.state == "dead_token":
                action = self.entries[str(result.delivery.entry)].get("dead_token", DEACTIVATE_DEVICE)
                dead.setdefault(action, []).append(result)
        for action, dead_results in dead.items():
            invalid_since = {r.delivery.device_id: r.token_invalid_since for r in dead_results if r.token_invalid_since is not None}
            self.dead_token_actions[action](self.db, [r.delivery.device_id for r in dead_results], dead_results[0].reason or "dead token",
                                       invalid_since=invalid_since)
        now = time.time()
        groups: dict[tuple[str, str | None], list[str]] = {}
        for result in results:
            groups.setdefault((result.state, result.reason), []).append(result.delivery.id)
        operations = [
            UpdateMany(
                {"_id": {"$in": ids}, "claim": self.claim},
                {"$set": {"state": state, "ps": f"{self.platform}:{state}", "reason": reason, "at": now}},
            )
            for (state, reason), ids in groups.items()
        ]
        self.db[mongo.DELIVERIES].bulk_write(operations, ordered=False)


async def deliver_chunk_v1(ctx: DeliveryContext, platform: str, chunk: dict) -> None:
    """Claim, send and record one old-format chunk; re-enqueue what must wait (in the old format)."""
    deliveries = [Delivery(*item) for item in chunk["deliveries"]]
    by_id = {d.id: d for d in deliveries}
    claim = new_id()
    mine, held_until = await asyncio.to_thread(_claim, ctx.db, platform, list(by_id), claim, ctx.settings.delivery_lease_seconds)
    if held_until:
        # Held by a run that may have crashed: look again once its lease is over.
        held = [by_id[i] for i in held_until]
        delay = max(held_until.values()) - time.time() + LEASE_GRACE_SECONDS
        _requeue(ctx, platform, chunk, held, delay)
    if not mine:
        return
    app = await asyncio.to_thread(ctx.db[mongo.APPS].find_one, {"_id": chunk["app_id"]})
    recorder = Recorder(ctx.db, claim, platform, chunk["entries"], dead_token_actions=ctx.dead_token_actions)
    work = [by_id[i] for i in mine]
    unavailable = _provider_unavailable(app, platform) or ctx.clients.keys.can_open((app or {}).get(platform))
    if unavailable:
        for delivery in work:
            recorder.add(Result(delivery, "failed", unavailable))
            metrics.record_result(platform, chunk["app_id"], "failed")
        await recorder.flush_all()
        return

    send_one = _apns_sender(ctx, app, chunk) if platform == "apns" else _fcm_sender(ctx, app, chunk)
    classify = CLASSIFY_BY_PROVIDER[platform]
    attempts = chunk.get("attempts", {})
    valid_until = {key: _valid_until(entry) for key, entry in chunk["entries"].items()}
    suspension = Suspension(ctx.db, chunk["app_id"], platform)

    async def run(delivery: Delivery) -> Result:
        deadline = valid_until[str(delivery.entry)]
        if deadline is not None and deadline <= time.time():
            result = Result(delivery, "expired", "validUntil passed")
        else:
            outcome, answer, tries, requeue_after = await deliver_with_retries(
                lambda: send_one(delivery), classify, ctx.policy, first_attempt=attempts.get(delivery.id, 0)
            )
            reason = getattr(answer, "reason", None) if answer is not None else "transport error"
            if outcome in STATE_BY_OUTCOME:
                result = Result(delivery, STATE_BY_OUTCOME[outcome], reason if outcome is not Outcome.SENT else None, outcome=outcome,
                                token_invalid_since=getattr(answer, "token_invalid_since", None))
                if outcome is Outcome.CREDENTIALS:
                    await suspension.write(reason)
            else:
                result = Result(delivery, "retry", reason, retry_after=requeue_after)
                attempts[delivery.id] = attempts.get(delivery.id, 0) + tries
        recorder.add(result)
        metrics.record_result(platform, chunk["app_id"], result.state, chunk.get("first_attempt_at"), delivery_id=delivery.id, reason=result.reason)
        return result

    tasks = {asyncio.ensure_future(run(d)): d.id for d in work}
    pending = set(tasks)
    lease = ctx.settings.delivery_lease_seconds
    renew_at = time.monotonic() + lease / LEASE_RENEWALS
    while pending:
        done, pending = await asyncio.wait(pending, timeout=RECORD_INTERVAL_SECONDS)
        await recorder.flush()
        if pending and time.monotonic() >= renew_at:
            # Still sending: keep the claim, so no other run takes over a live delivery.
            try:
                await asyncio.to_thread(_renew_lease, ctx.db, [tasks[t] for t in pending], claim, lease)
            except ConnectionFailure as error:
                log.warning("lease not renewed, MongoDB unreachable: %s", error)  # renewed at the next turn
            renew_at = time.monotonic() + lease / LEASE_RENEWALS
    await recorder.flush_all()
    results = [t.result() for t in tasks]
    await _schedule_retries(ctx, platform, chunk, [r for r in results if r.state == "retry"], attempts, claim)



async def _schedule_retries(ctx: DeliveryContext, platform: str, chunk: dict, retries: list[Result], attempts: dict, claim: str) -> None:
    """Re-enqueue deliveries that must wait; dead-letter those past validUntil or the max age."""
    if not retries:
        return
    now = time.time()
    max_age_at = chunk["first_attempt_at"] + ctx.settings.delivery_max_age_seconds
    later, given_up = [], []
    for result in retries:
        deadline = _valid_until(chunk["entries"][str(result.delivery.entry)])
        wait = result.retry_after or 0.0
        limit = min(max_age_at, deadline) if deadline is not None else max_age_at
        (given_up if now + wait >= limit else later).append(result)
    if given_up:
        await asyncio.to_thread(_dead_letter, ctx.db, platform, chunk, given_up, claim)
    if later:
        # Their "retry" state is already recorded: claimable again by the re-enqueued chunk.
        delay = max(r.retry_after or 0.0 for r in later)
        _requeue(ctx, platform, chunk, [r.delivery for r in later], delay, attempts=attempts)


def _claim(db: Database, platform: str, ids: list[str], claim: str, lease_seconds: float) -> tuple[list[str], dict[str, float]]:
    """Claim what is claimable; answer (claimed ids, {held id: lease end}) for the rest not final."""
    deliveries = db[mongo.DELIVERIES]
    now = time.time()
    grab = {"$set": {"state": "sending", "ps": f"{platform}:sending", "claim": claim, "lease_until": now + lease_seconds}}
    claimed = deliveries.update_many({"_id": {"$in": ids}, "state": {"$in": list(CLAIMABLE)}}, grab).modified_count
    if claimed == len(ids):
        return list(ids), {}  # the common case: all were waiting, all are mine (no more round trips)
    deliveries.update_many({"_id": {"$in": ids}, "state": "sending", "lease_until": {"$lt": now}}, grab)
    mine, held = [], {}
    for doc in deliveries.find({"_id": {"$in": ids}, "state": "sending"}, {"claim": 1, "lease_until": 1}):
        if doc["claim"] == claim:
            mine.append(doc["_id"])
        else:
            held[doc["_id"]] = doc["lease_until"]
    return mine, held


def _renew_lease(db: Database, ids: list[str], claim: str, lease_seconds: float) -> None:
    db[mongo.DELIVERIES].update_many(
        {"_id": {"$in": ids}, "claim": claim, "state": "sending"}, {"$set": {"lease_until": time.time() + lease_seconds}}
    )


def _dead_letter(db: Database, platform: str, chunk: dict, results: list[Result], claim: str) -> None:
    now = time.time()
    ids = [r.delivery.id for r in results]
    db[mongo.DELIVERIES].update_many(
        {"_id": {"$in": ids}, "claim": claim},
        {"$set": {"state": "dead_letter", "ps": f"{platform}:dead_letter", "reason": "gave up", "at": now}},
    )
    db[mongo.DEAD_LETTERS].insert_many(
        [
            {
                "delivery_id": r.delivery.id,
                "message_id": chunk["message_id"],
                "app_id": chunk["app_id"],
                "platform": platform,
                "reason": f"gave up after retries: {r.reason}",
                "at": now,
                # What POST /admin/dead-letters/requeue needs to publish it again (workers/dead_letters.py).
                "attempts": chunk.get("attempts", {}).get(r.delivery.id),
                "delivery": r.delivery.as_list(),
                "entry": chunk["entries"][str(r.delivery.entry)],
            }
            for r in results
        ]
    )
    metrics.record_dead_letters(platform, chunk["app_id"], len(results))


def _requeue(ctx: DeliveryContext, platform: str, chunk: dict, deliveries: list[Delivery], delay: float, *, attempts: dict | None = None) -> None:
    payload = chunk_payload(
        chunk["message_id"],
        chunk["app_id"],
        chunk["entries"],
        deliveries,
        first_attempt_at=chunk["first_attempt_at"],
        attempts={d.id: (attempts or chunk.get("attempts", {})).get(d.id, 0) for d in deliveries},
    )
    ctx.publisher.publish(DELIVER_ACTOR_BY_PROVIDER[platform], payload, delay_ms=max(0, int(delay * 1000)))
