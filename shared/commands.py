"""What crosses the queue: queue names, actor names and the command envelope.

The API builds commands and publishes them as Dramatiq messages without
importing the workers; the workers register actors under the same names.
Every command carries an ``id`` made by the API and ``received_at``, the API's
receive time in nanoseconds, which orders writes to one entity (last writer wins).
"""
from __future__ import annotations

import time
import uuid

import dramatiq

from shared.settings import Settings

# Queues, one per kind of work, so ops scale each on its own.
PERSIST = "persist"
EXPAND = "expand"
DELIVER_APNS = "deliver.apns"
DELIVER_FCM = "deliver.fcm"
DELIVER_HMS = "deliver.hms"
DELIVER_WEBHOOK = "deliver.webhook"

# Lanes: transactional work (a SYNCHRONOUS send, a single HIGH-priority send) never waits in a FIFO behind
# bulk (batches, campaigns). Each stage a send goes through has a queue per lane, served by its own worker
# group; separate queues rather than message priorities, which quorum queues lack on RabbitMQ 3.x.
BULK = "bulk"
TX = "tx"
LANES = (BULK, TX)
#: The transactional twin of each queue a send goes through (a provider's deliver queue gets one too, e.g. HMS).
TX_QUEUES = {EXPAND: EXPAND + ".tx", DELIVER_APNS: DELIVER_APNS + ".tx", DELIVER_FCM: DELIVER_FCM + ".tx",
             DELIVER_HMS: DELIVER_HMS + ".tx"}
QUEUES = (PERSIST, EXPAND, DELIVER_APNS, DELIVER_FCM, DELIVER_HMS, DELIVER_WEBHOOK, *TX_QUEUES.values())

# Actors and the queue each one consumes.
APPLY_WRITE = "apply_write"
EXPAND_SEND = "expand_send"
DELIVER_CHUNK_APNS = "deliver_apns"
DELIVER_CHUNK_FCM = "deliver_fcm"
DELIVER_CHUNK_HMS = "deliver_hms"
DELIVER_CHUNK_WEBHOOK = "deliver_webhook"
EXPAND_CAMPAIGN = "expand_campaign"
CAMPAIGN_CHECK = "campaign_check"
ACTOR_QUEUES = {
    APPLY_WRITE: PERSIST,
    EXPAND_SEND: EXPAND,
    EXPAND_CAMPAIGN: EXPAND,
    CAMPAIGN_CHECK: EXPAND,
    DELIVER_CHUNK_APNS: DELIVER_APNS,
    DELIVER_CHUNK_FCM: DELIVER_FCM,
    DELIVER_CHUNK_HMS: DELIVER_HMS,
    DELIVER_CHUNK_WEBHOOK: DELIVER_WEBHOOK,
}
#: The delivery actor of each provider.
DELIVER_ACTOR_BY_PROVIDER = {"apns": DELIVER_CHUNK_APNS, "fcm": DELIVER_CHUNK_FCM, "hms": DELIVER_CHUNK_HMS, "webhook": DELIVER_CHUNK_WEBHOOK}
#: The push providers a device registers with (each with its deliver queue), in the order results list them.
PUSH_PROVIDERS = ("apns", "fcm", "hms")

#: Activation states PowerAuth knows; only ACTIVE receives personal messages.
ACTIVE = "ACTIVE"
REMOVED = "REMOVED"
ACTIVATION_STATES = ("CREATED", "PENDING_COMMIT", "ACTIVE", "BLOCKED", "REMOVED")


def lane_queue(queue: str, lane: str | None) -> str:
    """The queue of ``queue``'s stage in ``lane`` (bulk, or a queue without a transactional twin: itself)."""
    return TX_QUEUES.get(queue, queue) if lane == TX else queue


def lane_of_queue(queue: str) -> str:
    """The lane a queue (without prefix) serves."""
    return TX if queue in TX_QUEUES.values() else BULK


def send_lane(mode: str | None, entries: list[dict]) -> str:
    """The lane of a send: one message SYNCHRONOUS or HIGH priority is transactional; batches are bulk."""
    if len(entries) == 1 and (mode == "SYNCHRONOUS" or entries[0].get("high_priority")):
        return TX
    return BULK


def queue_name(settings: Settings, queue: str) -> str:
    """The queue's name on the broker, with the deployment's prefix."""
    return queue_name_for_prefix(settings.queue_prefix, queue)


def queue_name_for_prefix(prefix: str, queue: str) -> str:
    return prefix + queue


def new_id() -> str:
    """A command, message or campaign id: random, URL-safe, 32 hex characters."""
    return uuid.uuid4().hex


def command(kind: str, **fields) -> dict:
    """A write or send command stamped with its id and the API's receive time."""
    return {"id": new_id(), "kind": kind, "received_at": time.time_ns(), **fields}


class Publisher:
    """Publishes commands to the broker; returns only once RabbitMQ confirmed them.

    Parameters:
      broker: the Dramatiq broker (publisher confirms on).
      settings: for the queue prefix.
    """

    def __init__(self, broker: dramatiq.Broker, settings: Settings):
        self.broker = broker
        self.settings = settings

    def publish(self, actor_name: str, payload: dict, *, delay_ms: int | None = None) -> dramatiq.Message:
        """Publish on the actor's queue in the payload's ``lane`` (a command or chunk carries it; none: bulk)."""
        message = dramatiq.Message(
            queue_name=queue_name(self.settings, lane_queue(ACTOR_QUEUES[actor_name], payload.get("lane"))),
            actor_name=actor_name,
            args=(payload,),
            kwargs={},
            options={},
        )
        return self.broker.enqueue(message, delay=delay_ms)
