"""How every queue is declared on RabbitMQ: classic, or quorum with what quorum queues need to keep the guarantees.

Dramatiq declares three queues per queue name: the queue itself, its delay
queue ``.DQ`` (retries and delayed messages waiting for their time, held
unacknowledged by a worker until then) and its dead-letter queue ``.XQ``
(messages it gave up on). The queue and ``.DQ`` dead-letter into ``.XQ``.
:class:`shared.broker.QueueTypeBroker` asks this module for the arguments of
every declaration, so any queue an actor is declared on gets them, whatever
its name.

What a quorum queue changes, and why each argument is here (README "Clusters"):

- ``x-dead-letter-strategy: at-least-once``: the default strategy of a quorum
  queue dead-letters *at most once* (published to ``.XQ`` without confirms:
  lost if ``.XQ``'s leader is down at that moment). At-least-once keeps the
  message in its source queue until ``.XQ`` confirmed it.
- ``x-overflow: reject-publish``: at-least-once dead-lettering falls back to
  at-most-once with the default ``drop-head``. No length limit is set, so
  nothing is ever rejected for length; an operator's ``max-length`` policy
  would make publishes refused (the API answers 503), never dropped.
- ``x-delivery-limit``: a message returned to the queue this many times (its
  consumer's channel closed before the ack: a worker killed, restarted or
  cut off, a node lost) is dead-lettered to ``.XQ`` with reason
  ``delivery_limit``, so a message that crashes every worker that takes it
  cannot crash them for ever. Dramatiq never requeues on purpose (a failure is
  a new delayed message, a give-up a reject into ``.XQ``), so only such
  returns count.
- ``.XQ`` keeps Dramatiq's ``x-message-ttl`` (quorum queues honour message
  TTL since RabbitMQ 3.10).
- No ``x-max-priority``: quorum queues have no message priorities on 3.x.

A queue that exists with other arguments refuses the declaration with
``PRECONDITION_FAILED`` (406): switching a deployment is a drain and a
re-declaration (``python -m ops.queue_type``).
"""
from __future__ import annotations

from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL

CLASSIC = "classic"
QUORUM = "quorum"
#: The queue types ``PUSH_RABBITMQ_QUEUE_TYPE`` may name.
QUEUE_TYPES = (CLASSIC, QUORUM)
#: Returns of one message before a quorum queue dead-letters it (RabbitMQ 4's default for quorum
#: queues): far more than the restarts and node losses a live message meets, few for a crash loop.
QUORUM_DELIVERY_LIMIT = 20
#: Milliseconds a message stays in a dead-letter queue (Dramatiq's own ``dramatiq_dead_message_ttl``, 7 days).
DEAD_LETTER_TTL_MS = DEAD_MESSAGE_TTL


class UnknownQueueType(ValueError):
    """``PUSH_RABBITMQ_QUEUE_TYPE`` names no queue type this server declares."""

    def __init__(self, queue_type: str):
        super().__init__(f"PUSH_RABBITMQ_QUEUE_TYPE must be one of {', '.join(QUEUE_TYPES)}, not {queue_type!r}")


def checked_queue_type(queue_type: str) -> str:
    """The queue type, lower-cased; :class:`UnknownQueueType` for anything else."""
    normalised = queue_type.strip().lower()
    if normalised not in QUEUE_TYPES:
        raise UnknownQueueType(queue_type)
    return normalised


def work_queue_arguments(queue_type: str, *, dead_letter_queue: str) -> dict:
    """Arguments of a queue that workers consume (a queue or its ``.DQ``), dead-lettering into ``dead_letter_queue``."""
    arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead_letter_queue}
    if checked_queue_type(queue_type) == QUORUM:
        arguments.update({
            "x-queue-type": QUORUM,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            "x-delivery-limit": QUORUM_DELIVERY_LIMIT,
        })
    return arguments


def dead_letter_queue_arguments(queue_type: str) -> dict:
    """Arguments of a ``.XQ`` queue: expiry of what it holds (expired messages are dropped)."""
    arguments: dict = {"x-message-ttl": DEAD_LETTER_TTL_MS}
    if checked_queue_type(queue_type) == QUORUM:
        arguments["x-queue-type"] = QUORUM
    return arguments
