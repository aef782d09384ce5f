"""The Dramatiq actors: thin wrappers that decode a command, call the logic, and record.

Actors are registered on a broker by :func:`register` rather than at import
time, so the queue names can carry the deployment's prefix from the settings.
"""
from __future__ import annotations

import dramatiq

from shared import audit, budgets, commands, device_lookup, halt, ledger, outbox, queue_cap, scheduling
from shared.commands import Publisher, queue_name
from shared.db import connect, ensure_indexes, ensure_ttl_indexes
from shared.outbound import OutboundPolicy, OutboundSession
from shared.sealed_credentials import CredentialKeys
from shared.settings import Settings
from workers import auth, campaigns, dead_letters, deliver, expand, inbox, outcome_feed, scheduler, wc_bridge, wc_push, writes
from workers.deliver import DeliveryContext, ProviderClients, deliver_chunk
from workers.delivery.retry import RetryPolicy

#: Write handlers of every API family, by command kind (each family's module lists its own).
WRITE_HANDLERS = {
    **writes.HANDLERS, **campaigns.HANDLERS, **wc_bridge.HANDLERS, **wc_push.HANDLERS, **inbox.HANDLERS, **auth.HANDLERS,
    **audit.HANDLERS, **halt.HANDLERS, **scheduling.HANDLERS, **outbox.HANDLERS, **dead_letters.HANDLERS,
    **queue_cap.HANDLERS, **budgets.HANDLERS,
}

#: What a dead token does to its registration, by the entry's ``dead_token``: every family's action.
DEAD_TOKEN_ACTIONS = {**deliver.DEAD_TOKEN_ACTIONS, **wc_push.DEAD_TOKEN_ACTIONS}

#: The delivery actors own their retries (backoff, re-enqueue, dead letter);
#: Dramatiq's retries are for failures of our own infrastructure only.
DELIVERY_MAX_RETRIES = 5
#: A live campaign send may expand millions of users in one run (Dramatiq's default limit is 10 minutes).
CAMPAIGN_TIME_LIMIT_MS = 6 * 60 * 60 * 1000


def register(broker: dramatiq.Broker, settings: Settings) -> None:
    """Declare every actor on ``broker`` with the settings' queue names."""
    auth.redact_message_logs()
    db = connect(settings)
    ensure_indexes(db)
    device_lookup.backfill(db)  # before any actor runs: a database of an older version gets its lookup
    if settings.wc_bridge_ttl_indexes:
        ensure_ttl_indexes(db)
    publisher = Publisher(broker, settings)
    ledger.start_purger(db, retention_days=settings.delivery_retention_days)  # retention: shared/ledger.py purge()
    write_context = writes.WriteContext(db=db, publisher=publisher, settings=settings)  # passed to every write handler
    delivery = DeliveryContext(
        db=db,
        publisher=publisher,
        settings=settings,
        clients=ProviderClients(settings),
        policy=RetryPolicy(
            in_process_tries=settings.delivery_in_process_tries,
            max_in_process_wait=settings.delivery_max_in_process_wait,
            max_backoff=settings.delivery_max_backoff,
        ),
        dead_token_actions=DEAD_TOKEN_ACTIONS,
    )

    def declare(fn, name: str, **options):
        dramatiq.actor(fn, broker=broker, actor_name=name, queue_name=queue_name(settings, commands.ACTOR_QUEUES[name]), **options)

    def apply_write(command: dict) -> None:
        writes.apply(write_context, command, WRITE_HANDLERS)

    def expand_send(command: dict) -> None:
        expand.expand_send(db, publisher, command, chunk_size=settings.delivery_chunk_size,
                           deliveries_ahead=settings.app_bulk_deliveries_ahead)

    async def deliver_apns(chunk: dict) -> None:
        await deliver_chunk(delivery, "apns", chunk)

    async def deliver_fcm(chunk: dict) -> None:
        await deliver_chunk(delivery, "fcm", chunk)

    async def deliver_hms(chunk: dict) -> None:
        await deliver_chunk(delivery, "hms", chunk)

    def expand_campaign(command: dict) -> None:
        campaigns.expand_campaign(
            db, publisher, command, chunk_size=settings.delivery_chunk_size, users_per_batch=settings.campaign_users_per_batch,
            deliveries_ahead=settings.campaign_deliveries_ahead
        )

    def campaign_check(job: dict) -> None:
        campaigns.check_campaign(db, publisher, job)

    declare(apply_write, commands.APPLY_WRITE)
    declare(expand_send, commands.EXPAND_SEND)
    declare(expand_campaign, commands.EXPAND_CAMPAIGN, time_limit=CAMPAIGN_TIME_LIMIT_MS)
    declare(campaign_check, commands.CAMPAIGN_CHECK)
    declare(deliver_apns, commands.DELIVER_CHUNK_APNS, max_retries=DELIVERY_MAX_RETRIES)
    declare(deliver_fcm, commands.DELIVER_CHUNK_FCM, max_retries=DELIVERY_MAX_RETRIES)
    declare(deliver_hms, commands.DELIVER_CHUNK_HMS, max_retries=DELIVERY_MAX_RETRIES)

    webhooks = wc_bridge.WebhookContext(db=db, publisher=publisher, settings=settings, session=OutboundSession(OutboundPolicy.from_settings(settings)))

    def deliver_webhook(job: dict) -> None:
        wc_bridge.deliver_webhook(webhooks, job)

    declare(deliver_webhook, commands.DELIVER_CHUNK_WEBHOOK, max_retries=DELIVERY_MAX_RETRIES)
    # The transactional lane's queues: the same actors (a message names its actor), consumed by the tx worker group.
    for queue in commands.TX_QUEUES.values():
        broker.declare_queue(queue_name(settings, queue))
    scheduler.start_releaser(db, publisher, settings.app_bulk_deliveries_ahead)  # scheduled sends, released when due (shared/scheduling.py), once every actor is declared
    outcome_feed.start_sender(db, OutboundSession(OutboundPolicy.from_settings(settings)),  # the apps' outcome webhooks (shared/outbox.py)
                              CredentialKeys.from_settings(settings))  # which open their sealed secrets
