"""Deliver a chunk of deliveries to one provider, recording every outcome.

A chunk is claimed before anything is sent: each delivery moves from
``pending``/``retry`` to ``sending`` under this run's claim id with a lease.
Only claimed deliveries are sent, so a chunk published twice, or redelivered
after a crash, never sends a delivery that another run holds or that already
has an outcome. A crashed run's claims become claimable again when their lease
runs out; the redelivered chunk waits for that with a delayed re-enqueue.
Outcomes are written as they arrive (in small bulk writes), so a crash leaves
at most the requests in flight at that instant without a recorded outcome.
Those are sent again after the lease; each carries its notification's
``display_id`` (shared/payload.py), so a device the provider had already
reached shows it once.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pymongo import UpdateMany
from pymongo.database import Database
from pymongo.errors import ConnectionFailure

from shared import db as collections
from shared import metrics, outbox
from shared.commands import DELIVER_ACTOR_BY_PROVIDER, Publisher, new_id
from shared.outbound import OutboundPolicy
from shared.payload import Body, FcmTemplate, apns_push, display_id, fcm_message, fcm_ttl_seconds
from shared.sealed_credentials import CredentialKeys
from shared.settings import Settings
from workers import wc_push
from workers.delivery.apns import ApnsClient, ApnsRequest, ApnsTokenSigner, certificate_context
from workers.delivery.fcm import FcmAuth, FcmClient
from workers.delivery.outcomes import Outcome, classify_apns, classify_fcm
from workers.delivery.retry import RetryPolicy, deliver_with_retries
from workers.expand import Delivery, chunk_payload
from workers.writes import mark_dead_tokens

log = logging.getLogger(__name__)

#: Seconds between two bulk writes of the outcomes that have arrived.
RECORD_INTERVAL_SECONDS = 0.02
#: Extra seconds past a foreign lease before a held delivery is looked at again.
LEASE_GRACE_SECONDS = 1.0
CLAIMABLE = ("pending", "retry")
#: How many times per lease period a run renews the lease of what it is still sending.
LEASE_RENEWALS = 3
#: How long a run keeps outcomes it could not write (MongoDB away) before it gives up on them.
RECORD_GIVE_UP_SECONDS = 300.0
#: Pause between two tries of writing outcomes while MongoDB is away.
RECORD_RETRY_PAUSE_SECONDS = 0.5

#: Outcome → delivery state recorded.
STATE_BY_OUTCOME = {
    Outcome.SENT: "sent",
    Outcome.DEAD_TOKEN: "dead_token",
    Outcome.BAD_MESSAGE: "failed",
    Outcome.CREDENTIALS: "failed",
}

#: What a dead token does to the registration it came from, by the entry's ``dead_token``.
DEACTIVATE_DEVICE = "device"
DEAD_TOKEN_ACTIONS = {
    DEACTIVATE_DEVICE: mark_dead_tokens,
    wc_push.DEAD_TOKEN_ACTION: wc_push.delete_dead_clients,
}


@dataclass
class Result:
    """What happened to one delivery in this run."""

    delivery: Delivery
    state: str
    reason: str | None = None
    retry_after: float | None = None
    outcome: Outcome | None = None
    #: A dead token's invalidation time from the provider (APNs 410 ``timestamp``, ms), if it gave one.
    token_invalid_since: int | None = None


@dataclass
class Recorder:
    """Buffers outcomes and writes them in bulk, guarded by the claim id."""

    db: Database
    claim: str
    platform: str
    entries: dict
    pending: list[Result] = field(default_factory=list)
    #: The app, whose outcome feed is told of failures (shared/outbox.py).
    app_id: str | None = None

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
            DEAD_TOKEN_ACTIONS[action](self.db, [r.delivery.device_id for r in dead_results], dead_results[0].reason or "dead token",
                                       invalid_since=invalid_since)
        outbox.add_events(self.db, outbox.outcome_events(self.app_id, self.platform, results))  # before the outcomes: none lost
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
        self.db[collections.DELIVERIES].bulk_write(operations, ordered=False)


class ProviderClients:
    """The process's provider clients, one pool per (app, provider, environment, credentials).

    APNs credentials are a token key (a signer; connections share one TLS context)
    or a client certificate (its own TLS context, presenting the certificate).

    Parameters:
      settings: provider endpoints, CA file, pool sizes.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self._clients: dict[tuple, object] = {}
        self._ssl_context = ssl.create_default_context(cafile=settings.provider_ca_file or None)
        self._ssl_context.set_alpn_protocols(["h2"])
        self._outbound = OutboundPolicy.from_settings(settings)
        #: Opens sealed credentials, only here, where a provider client is built (shared/sealed_credentials.py).
        self.keys = CredentialKeys.from_settings(settings)

    def apns(self, app: dict, environment: str | None) -> ApnsClient:
        credentials = app["apns"]
        environment = environment or credentials.get("environment") or "production"
        key = ("apns", app["_id"], environment, app["apns_ts"])
        client = self._clients.get(key)
        if client is None:
            credentials = self.keys.open(app["_id"], "apns", credentials)
            origin = (
                self.settings.apns_development_url if environment == "development" else self.settings.apns_production_url
            )
            signer, ssl_context = None, self._ssl_context
            if credentials.get("auth") == collections.APNS_CERTIFICATE:
                ssl_context = certificate_context(
                    ca_file=self.settings.provider_ca_file or None,
                    certificate_pem=credentials["certificate"],
                    private_key_pem=credentials["private_key"],
                )
            else:
                signer = ApnsTokenSigner(
                    key_id=credentials["key_id"], team_id=credentials["team_id"], private_key_pem=credentials["private_key"]
                )
            client = ApnsClient(
                origin=origin,
                signer=signer,
                topic=credentials["bundle"],
                ssl_context=ssl_context,
                connections=self.settings.provider_connections,
                request_timeout=self.settings.provider_request_timeout,
            )
            self._replace(key, client)
        return client

    def fcm(self, app: dict) -> FcmClient:
        credentials = app["fcm"]
        key = ("fcm", app["_id"], None, app["fcm_ts"])
        client = self._clients.get(key)
        if client is None:
            credentials = self.keys.open(app["_id"], "fcm", credentials)
            auth = FcmAuth(
                service_account_info=credentials["service_account"], outbound=self._outbound, ca_file=self.settings.provider_ca_file or None
            )
            client = FcmClient(
                origin=self.settings.fcm_url,
                project_id=credentials["project_id"],
                auth=auth,
                ssl_context=self._ssl_context,
                connections=self.settings.provider_connections,
                request_timeout=self.settings.provider_request_timeout,
            )
            self._replace(key, client)
        return client

    def _replace(self, key: tuple, client) -> None:
        """Keep the new client; close the pool of the same app and provider with older credentials."""
        for old_key in [k for k in self._clients if k[:3] == key[:3] and k != key]:
            stale = self._clients.pop(old_key)
            asyncio.ensure_future(stale.close())
        self._clients[key] = client


@dataclass
class DeliveryContext:
    """What a chunk delivery needs from the worker process."""

    db: Database
    publisher: Publisher
    settings: Settings
    clients: ProviderClients
    policy: RetryPolicy


async def deliver_chunk(ctx: DeliveryContext, platform: str, chunk: dict) -> None:
    """Claim, send and record one chunk; re-enqueue what must wait."""
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
    app = await asyncio.to_thread(ctx.db[collections.APPS].find_one, {"_id": chunk["app_id"]})
    recorder = Recorder(ctx.db, claim, platform, chunk["entries"], app_id=chunk["app_id"])
    work = [by_id[i] for i in mine]
    unavailable = _provider_unavailable(app, platform) or ctx.clients.keys.can_open((app or {}).get(platform))
    if unavailable:
        for delivery in work:
            recorder.add(Result(delivery, "failed", unavailable))
            metrics.record_result(platform, chunk["app_id"], "failed")
        await recorder.flush_all()
        return

    send_one = _apns_sender(ctx, app, chunk) if platform == "apns" else _fcm_sender(ctx, app, chunk)
    classify = classify_apns if platform == "apns" else classify_fcm
    attempts = chunk.get("attempts", {})
    valid_until = {key: _valid_until(entry) for key, entry in chunk["entries"].items()}

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
    refused = [r for r in results if r.outcome is Outcome.CREDENTIALS]
    if refused:
        await asyncio.to_thread(_suspend, ctx.db, chunk["app_id"], platform, refused[0].reason or "credentials refused")
    await _schedule_retries(ctx, platform, chunk, [r for r in results if r.state == "retry"], attempts, claim)



def _suspend(db: Database, app_id: str, platform: str, reason: str) -> None:
    db[collections.APPS].update_one({"_id": app_id}, {"$set": {f"suspended.{platform}": reason}})


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
    deliveries = db[collections.DELIVERIES]
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
    db[collections.DELIVERIES].update_many(
        {"_id": {"$in": ids}, "claim": claim, "state": "sending"}, {"$set": {"lease_until": time.time() + lease_seconds}}
    )


def _dead_letter(db: Database, platform: str, chunk: dict, results: list[Result], claim: str) -> None:
    now = time.time()
    ids = [r.delivery.id for r in results]
    db[collections.DELIVERIES].update_many(
        {"_id": {"$in": ids}, "claim": claim},
        {"$set": {"state": "dead_letter", "ps": f"{platform}:dead_letter", "reason": "gave up", "at": now}},
    )
    db[collections.DEAD_LETTERS].insert_many(
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


def _provider_unavailable(app: dict | None, platform: str) -> str | None:
    """Why this app cannot send on this provider now, or None."""
    if app is None:
        return "application not found"
    if not app.get(platform):
        return f"{platform} not configured for the application"
    suspended = app.get("suspended", {}).get(platform)
    if suspended:
        return f"{platform} suspended: {suspended}"
    return None


def _valid_until(entry: dict) -> float | None:
    value = entry["body"].get("validUntil")
    return Body.from_json({"validUntil": value}).valid_until.timestamp() if value else None


def _apns_sender(ctx: DeliveryContext, app: dict, chunk: dict):
    pushes = {
        key: apns_push(
            Body.from_json(entry["body"]),
            silent=entry.get("silent", False),
            high_priority=entry.get("high_priority", True),
            display=display_id(chunk["message_id"], key),
        )
        for key, entry in chunk["entries"].items()
    }

    def send(delivery: Delivery):
        push = pushes[str(delivery.entry)]
        client = ctx.clients.apns(app, delivery.environment)
        return client.send(
            ApnsRequest(
                token=delivery.token,
                payload=push.payload,
                push_type=push.push_type,
                priority=push.priority,
                expiration=push.expiration,
                collapse_id=push.collapse_id,
                apns_id=None,
            )
        )

    return send


def _fcm_sender(ctx: DeliveryContext, app: dict, chunk: dict):
    now = datetime.now(UTC)
    templates = {}
    for key, entry in chunk["entries"].items():
        body = Body.from_json(entry["body"])
        ttl = fcm_ttl_seconds(body.valid_until, now)
        templates[key] = FcmTemplate(
            fcm_message(
                body,
                silent=entry.get("silent", False),
                high_priority=entry.get("high_priority", True),
                display=display_id(chunk["message_id"], key),
            ),
            ttl_seconds=ttl,
        )
    client = ctx.clients.fcm(app)

    def send(delivery: Delivery):
        return client.send(templates[str(delivery.entry)].request_body(delivery.token))

    return send
