"""Deliver a ledger chunk to one provider, recording every outcome (shared/ledger.py, workers/recorder.py).

A chunk is claimed before anything is sent: one compare-and-set gives the chunk
document to this run (``c`` its claim id). Only the deliveries still open in it
(``pending``/``retry``) are sent, so a chunk published twice, or redelivered
after a crash, never sends a delivery that already has an outcome, and never one
another live run holds. A held chunk is looked at again after one lease; when its
holder's heartbeat has not moved for that long (``LeaseWatch``: no clocks compared
across hosts) the run takes it over and sends only what has no outcome.
Outcomes are written by the process's recorder thread every ~5 ms, one update
per chunk guarded by the claim, so a crash leaves at most the requests in flight
and the last ~5 ms of answers (plus one write) unrecorded; the send gate
(workers/delivery/window.py: what the provider's answer time needs, at most
``delivery_max_in_flight`` per provider per process) bounds the former. Those
are sent again after the lease; each carries its notification's ``display_id``
(shared/payload.py), so a device the provider had already reached shows it once.

The per-provider seam: :data:`SENDERS` maps a provider to a function building
its one-delivery sender and ``workers.delivery.outcomes.CLASSIFY_BY_PROVIDER`` to its answer classifier; a
new provider adds an entry to each (and a ``ProviderClients`` method).

Old-format messages (rows in ``deliveries``) are delivered by workers/deliver_v1.py.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pymongo.database import Database

from shared import db as mongo
from shared import db_counters, halt, ledger, metrics, scheduling
from shared.budgets import BUDGET_REASON
from shared.commands import DELIVER_ACTOR_BY_PROVIDER, Publisher, new_id
from shared.ledger import Delivery
from shared.outbound import OutboundPolicy
from shared.payload import (
    Body,
    FcmTemplate,
    HmsTemplate,
    apns_push,
    display_id,
    fcm_message,
    fcm_ttl_seconds,
    hms_message,
    hms_ttl_seconds,
)
from shared.sealed_credentials import CredentialKeys
from shared.settings import Settings
from workers.delivery.answer import ProviderAnswer
from workers.delivery.apns import ApnsClient, ApnsRequest, ApnsTokenSigner, certificate_context
from workers.delivery.budget import ProcessBudgets
from workers.delivery.fcm import FcmAuth, FcmClient
from workers.delivery.hms import HmsAuth, HmsClient
from workers.delivery.outcomes import CLASSIFY_BY_PROVIDER, Outcome
from workers.delivery.retry import RetryPolicy, deliver_with_retries
from workers.delivery.window import SendWindow
from workers.recorder import ClaimLost, Recorder
from workers.writes import mark_dead_tokens

log = logging.getLogger(__name__)

#: Extra seconds past a lease before a held chunk is looked at again.
LEASE_GRACE_SECONDS = 1.0
#: How many heartbeats per lease period a run gives a chunk it holds.
LEASE_RENEWALS = 3

#: Outcome → delivery state recorded.
STATE_BY_OUTCOME = {
    Outcome.SENT: ledger.SENT,
    Outcome.DEAD_TOKEN: ledger.DEAD_TOKEN,
    Outcome.BAD_MESSAGE: ledger.FAILED,
    Outcome.CREDENTIALS: ledger.FAILED,
}

#: An entry without ``dead_token`` came from a device registration: its dead token deactivates the device.
DEACTIVATE_DEVICE = "device"
#: What a dead token does to the registration it came from, by the entry's ``dead_token``: this module's own
#: action; every other API family registers its own in the worker's ``DeliveryContext.dead_token_actions``
#: (workers/actors.py), so delivery imports no API family.
DEAD_TOKEN_ACTIONS = {DEACTIVATE_DEVICE: mark_dead_tokens}


def dead_token_action(entry: dict) -> str:
    return entry.get("dead_token", DEACTIVATE_DEVICE)


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
    #: The delivery's place in its ledger chunk.
    index: int = -1
    #: The dead letter to write with a ``dead_letter`` outcome.
    dead_letter: dict | None = None
    #: When its outcome came (unix time; set by the recorder when the run did not).
    at: float | None = None


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
        environment = environment or app["apns"].get("environment") or "production"
        origin = self.settings.apns_development_url if environment == "development" else self.settings.apns_production_url

        def build(credentials: dict) -> ApnsClient:
            signer, ssl_context = None, self._ssl_context
            if credentials.get("auth") == mongo.APNS_CERTIFICATE:
                ssl_context = certificate_context(
                    ca_file=self.settings.provider_ca_file or None,
                    certificate_pem=credentials["certificate"],
                    private_key_pem=credentials["private_key"],
                )
            else:
                signer = ApnsTokenSigner(
                    key_id=credentials["key_id"], team_id=credentials["team_id"], private_key_pem=credentials["private_key"]
                )
            return ApnsClient(origin=origin, signer=signer, topic=credentials["bundle"], **self._pool(ssl_context))

        return self._client(app, "apns", environment, app["apns_ts"], build)

    def fcm(self, app: dict) -> FcmClient:
        def build(credentials: dict) -> FcmClient:
            auth = FcmAuth(
                service_account_info=credentials["service_account"], outbound=self._outbound, ca_file=self.settings.provider_ca_file or None
            )
            return FcmClient(origin=self.settings.fcm_url, project_id=credentials["project_id"], auth=auth, **self._pool())

        return self._client(app, "fcm", None, app["fcm_ts"], build)

    def hms(self, app: dict) -> HmsClient:
        def build(credentials: dict) -> HmsClient:
            auth = HmsAuth(
                token_url=self.settings.hms_token_url,
                client_id=credentials["client_id"],
                client_secret=credentials["client_secret"],
                outbound=self._outbound,
                ca_file=self.settings.provider_ca_file or None,
            )
            return HmsClient(origin=self.settings.hms_url, project_id=credentials["project_id"], auth=auth, **self._pool())

        return self._client(app, "hms", None, app.get("hms_ts", 0), build)

    def _client(self, app: dict, provider: str, environment: str | None, credentials_ts, build):
        """The app's pooled client for ``provider``, built from its opened credentials when they changed (``*_ts``)."""
        key = (provider, app["_id"], environment, credentials_ts)
        client = self._clients.get(key)
        if client is None:
            client = build(self.keys.open(app["_id"], provider, app[provider]))
            self._replace(key, client)
        return client

    def _pool(self, ssl_context: ssl.SSLContext | None = None) -> dict:
        return {"ssl_context": ssl_context or self._ssl_context, "connections": self.settings.provider_connections,
                "request_timeout": self.settings.provider_request_timeout}

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
    recorder: Recorder | None = None
    #: What a dead token does, by the entry's ``dead_token`` (each API family registers its action).
    dead_token_actions: Mapping[str, Callable] = field(default_factory=lambda: dict(DEAD_TOKEN_ACTIONS))

    def __post_init__(self):
        if self.recorder is None:
            self.recorder = Recorder(self.dead_token_actions, heartbeat=self.settings.delivery_lease_seconds / LEASE_RENEWALS)
        self._gates: dict[tuple[int, str], SendWindow] = {}
        #: The shared provider budgets' local side (shared/budgets.py), one per process.
        self.budgets = ProcessBudgets(self.db, max_in_process_wait=self.policy.max_in_process_wait)

    def gate(self, provider: str) -> SendWindow:
        """The send gate of a provider in the running event loop: as many requests in flight as the provider's answer
        time needs (workers/delivery/window.py), at most ``delivery_max_in_flight``."""
        key = (id(asyncio.get_running_loop()), provider)
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = SendWindow(self.settings.delivery_max_in_flight)
        return gate


async def deliver_chunk(ctx: DeliveryContext, platform: str, chunk: dict) -> None:
    """Claim, send and record one chunk; re-enqueue what must wait."""
    if await asyncio.to_thread(halt.hold_chunk, ctx.db, ctx.publisher, DELIVER_ACTOR_BY_PROVIDER[platform], chunk):
        return  # paused: back later (a cancelled chunk is claimed and its open deliveries recorded cancelled)
    if chunk.get("v") != ledger.FORMAT:
        from workers.deliver_v1 import deliver_chunk_v1  # an old-format message (rolling upgrade)

        await deliver_chunk_v1(ctx, platform, chunk)
        return
    claim = new_id()
    doc, found = await asyncio.to_thread(ledger.claim, ctx.db, chunk["chunk"], claim, chunk.get("watch"))
    if doc is None:
        _not_claimed(ctx, platform, chunk, found)
        return
    deliveries = ledger.deliveries_of(doc)
    work = [(i, d) for i, d in enumerate(deliveries) if doc["s"][i] in ledger.OPEN_CHARS]
    if not work:
        await asyncio.to_thread(ledger.release, ctx.db, doc["_id"], claim)
        return
    db_counters.count()
    app = await asyncio.to_thread(ctx.db[mongo.APPS].find_one, {"_id": chunk["app_id"]})
    recorder = ctx.recorder
    book = recorder.open(ctx.db, doc, claim, platform, chunk["entries"], dead_token_action, app=app or {})
    unavailable = _provider_unavailable(app, platform) or ctx.clients.keys.can_open((app or {}).get(platform))
    if unavailable:
        await _fail_all(recorder, book, platform, chunk, work, unavailable)
        return

    send_one = SENDERS[platform](ctx, app, chunk)
    classify = CLASSIFY_BY_PROVIDER[platform]
    attempts = chunk.get("attempts", {})
    valid_until = {key: _valid_until(entry) for key, entry in chunk["entries"].items()}
    max_age_at = chunk["first_attempt_at"] + ctx.settings.delivery_max_age_seconds

    gated = _budgeted(ctx, app, platform, send_one)
    suspension = Suspension(ctx.db, chunk["app_id"], platform)

    async def run(index: int, delivery: Delivery) -> Result:
        deadline = valid_until[str(delivery.entry)]
        if deadline is not None and deadline <= time.time():
            result = Result(delivery, ledger.EXPIRED, "validUntil passed", index=index)
        elif (halted := halt.state(ctx.db, chunk["message_id"], chunk["app_id"])) != halt.RUNNING:
            # Halted while this chunk ran: a cancel records it, a pause sends it back to wait.
            result = (Result(delivery, ledger.CANCELLED, halt.CANCELLED_REASON, index=index) if halted == halt.CANCELLED
                      else Result(delivery, ledger.RETRY, halted, retry_after=halt.PAUSE_RECHECK_SECONDS, index=index))
        else:
            outcome, answer, tries, requeue_after = await deliver_with_retries(
                lambda: gated(delivery), classify, ctx.policy, first_attempt=attempts.get(delivery.id, 0)
            )
            if outcome not in STATE_BY_OUTCOME:
                attempts[delivery.id] = attempts.get(delivery.id, 0) + tries
            limit = min(max_age_at, deadline) if deadline is not None else max_age_at
            result = _result_of(platform, chunk, doc["_id"], claim, index, delivery, (outcome, answer, requeue_after), attempts, limit)
            if outcome is Outcome.CREDENTIALS:
                await suspension.write(result.reason)  # before the outcome: whoever reads the outcome sees the suspension
        recorder.add(book, result)
        if result.state != ledger.DEAD_LETTER:
            metrics.record_result(platform, chunk["app_id"], result.state, chunk.get("first_attempt_at"), delivery_id=delivery.id,
                                  reason=result.reason)
        return result

    results = await asyncio.gather(*(run(i, d) for i, d in work))
    await _close(recorder, book)
    await _after_run(ctx, platform, chunk, results, attempts)


def _budgeted(ctx: DeliveryContext, app: dict, platform: str, send_one):
    """``send_one`` within the app's shared budget for the provider (shared/budgets.py) and the process's send gate;
    a provider's 429 is told to the budget, a budget spent for longer than a wait here answers a 429 of its own."""
    gate, classify = ctx.gate(platform), CLASSIFY_BY_PROVIDER[platform]

    async def gated(delivery: Delivery) -> ProviderAnswer:
        wait = await ctx.budgets.admit(app, platform)
        if wait is not None:  # nothing sent: the delivery waits (parked when long) and comes back
            return ProviderAnswer(429, BUDGET_REASON, retry_after=wait)
        async with gate.slot():
            if (blocked := ctx.budgets.blocked_for(app["_id"], platform)) is not None:  # a 429 came while it waited
                return ProviderAnswer(429, BUDGET_REASON, retry_after=blocked)
            answer = await send_one(delivery)
        if classify(answer) is Outcome.THROTTLED:
            await ctx.budgets.throttled(app["_id"], platform, answer.retry_after)
        return answer

    return gated


def _not_claimed(ctx: DeliveryContext, platform: str, chunk: dict, found: dict | None) -> None:
    """A chunk this run could not claim: gone from the ledger, finished, or held by another run."""
    if found is None:
        log.warning("chunk %s not in the ledger (purged?): nothing to deliver", chunk["chunk"])
    elif found.get("o"):
        # Held by a run that may have died: look again after a lease, with what we saw (LeaseWatch).
        delay = ctx.settings.delivery_lease_seconds + LEASE_GRACE_SECONDS
        ctx.publisher.publish(DELIVER_ACTOR_BY_PROVIDER[platform], {**chunk, "watch": ledger.LeaseWatch.seen(found)},
                              delay_ms=int(delay * 1000))


async def _fail_all(recorder: Recorder, book, platform: str, chunk: dict, work: list[tuple[int, Delivery]], reason: str) -> None:
    """Record every open delivery failed (the app's provider is unavailable) without sending any."""
    for index, delivery in work:
        recorder.add(book, Result(delivery, ledger.FAILED, reason, index=index))
        metrics.record_result(platform, chunk["app_id"], ledger.FAILED)
    await _close(recorder, book)


def _result_of(platform: str, chunk: dict, chunk_id: str, claim: str, index: int, delivery: Delivery, sent: tuple,
               attempts: dict, limit: float) -> Result:
    """The result of one delivery's tries (``sent``: outcome, answer, requeue_after): final, retry later, or dead letter."""
    outcome, answer, requeue_after = sent
    reason = getattr(answer, "reason", None) if answer is not None else "transport error"
    if outcome in STATE_BY_OUTCOME:
        return Result(delivery, STATE_BY_OUTCOME[outcome], reason if outcome is not Outcome.SENT else None, outcome=outcome,
                      token_invalid_since=getattr(answer, "token_invalid_since", None), index=index)
    if time.time() + (requeue_after or 0.0) >= limit:
        result = Result(delivery, ledger.DEAD_LETTER, "gave up", index=index,
                        dead_letter=_dead_letter_doc(platform, chunk, chunk_id, index, delivery, reason, attempts, claim))
        metrics.record_dead_letters(platform, chunk["app_id"], 1)
        return result
    return Result(delivery, ledger.RETRY, reason, retry_after=requeue_after, index=index, outcome=outcome)


async def _after_run(ctx: DeliveryContext, platform: str, chunk: dict, results: list[Result], attempts: dict) -> None:
    """Re-enqueue what must be tried again."""
    later = [r for r in results if r.state == ledger.RETRY]
    if later:
        # Their "retry" state is recorded and the claim released: the re-enqueued chunk claims them again.
        delay = max(r.retry_after or 0.0 for r in later)
        message = {**chunk, "attempts": {r.delivery.id: attempts.get(r.delivery.id, 0) for r in later}}
        message.pop("watch", None)
        # A long wait (a spent budget, a long Retry-After) is parked in MongoDB, not held by the broker.
        reason = scheduling.THROTTLED if any(r.reason == BUDGET_REASON or r.outcome is Outcome.THROTTLED for r in later) else "retry"
        await asyncio.to_thread(scheduling.later, ctx.db, ctx.publisher, DELIVER_ACTOR_BY_PROVIDER[platform], message,
                                delay=delay, reason=reason)


async def _close(recorder: Recorder, book) -> None:
    try:
        await recorder.close(book)
    except ClaimLost as lost:
        # Another run took the chunk over (this one looked dead for a lease): it sends what has no outcome.
        log.warning("%s", lost)


class Suspension:
    """An app's provider suspended (its credentials were refused) once per chunk run, awaited by every delivery the
    refusal failed, so that it is written before any of their outcomes is recorded."""

    def __init__(self, db: Database, app_id: str, platform: str) -> None:
        self.db, self.app_id, self.platform = db, app_id, platform
        self._written: asyncio.Future | None = None

    async def write(self, reason: str | None) -> None:
        if self._written is None:
            self._written = asyncio.ensure_future(asyncio.to_thread(
                _suspend, self.db, self.app_id, self.platform, reason or "credentials refused"))
        await self._written


def _suspend(db: Database, app_id: str, platform: str, reason: str) -> None:
    db[mongo.APPS].update_one({"_id": app_id}, {"$set": {f"suspended.{platform}": reason}})


def _dead_letter_doc(platform: str, chunk: dict, cid: str, index: int, delivery: Delivery, reason: str | None,
                     attempts: dict, claim: str) -> dict:
    return {
        "_id": f"{delivery.id}:{claim}",
        "delivery_id": delivery.id,
        "message_id": chunk["message_id"],
        "app_id": chunk["app_id"],
        "platform": platform,
        "reason": f"gave up after retries: {reason}",
        "at": time.time(),
        # What POST /admin/dead-letters/requeue needs to put it back (workers/dead_letters.py).
        "attempts": attempts.get(delivery.id),
        "delivery": delivery.as_list(),
        "entry": chunk["entries"][str(delivery.entry)],
        "chunk": cid,
        "index": index,
    }


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


def _token_templates(chunk: dict, build_message, ttl_seconds, template) -> dict:
    """Each entry's FCM or HMS request body serialised once, by entry key (``build_message``: fcm_message or hms_message)."""
    now = datetime.now(UTC)
    templates = {}
    for key, entry in chunk["entries"].items():
        body = Body.from_json(entry["body"])
        message = build_message(body, silent=entry.get("silent", False), high_priority=entry.get("high_priority", True),
                                display=display_id(chunk["message_id"], key))
        templates[key] = template(message, ttl_seconds=ttl_seconds(body.valid_until, now))
    return templates


def _fcm_sender(ctx: DeliveryContext, app: dict, chunk: dict):
    templates = _token_templates(chunk, fcm_message, fcm_ttl_seconds, FcmTemplate)
    client = ctx.clients.fcm(app)

    def send(delivery: Delivery):
        return client.send(templates[str(delivery.entry)].request_body(delivery.token))

    return send


def _hms_sender(ctx: DeliveryContext, app: dict, chunk: dict):
    templates = _token_templates(chunk, hms_message, hms_ttl_seconds, HmsTemplate)
    client = ctx.clients.hms(app)

    def send(delivery: Delivery):
        return client.send(templates[str(delivery.entry)].request_body(delivery.token), delivery.token)

    return send


#: Each provider's sender: (context, app, chunk) → a function sending one delivery.
SENDERS = {"apns": _apns_sender, "fcm": _fcm_sender, "hms": _hms_sender}
