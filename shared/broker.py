"""One Dramatiq broker set-up for the API and the workers.

The API only enqueues; the workers consume. Both build the broker here so the
queue names, the queue type and its arguments, the publisher confirms and the
middleware are the same on both sides.
"""
from __future__ import annotations

import logging
import random

import dramatiq
import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import dq_name, xq_name
from dramatiq.middleware import AgeLimit, AsyncIO, Callbacks, Pipelines, Retries, ShutdownNotifications, TimeLimit

from shared.queue_declarations import checked_queue_type, dead_letter_queue_arguments, work_queue_arguments
from shared.settings import Settings

log = logging.getLogger(__name__)

#: Seconds pika waits for a TCP connection or a socket answer: a broker that is
#: down must turn into a quick 503, not a hung request.
CONNECT_TIMEOUT_SECONDS = 2
#: How many times pika tries to connect before giving up on one enqueue.
CONNECTION_ATTEMPTS = 1
#: Longest time one actor run may take (ms); delivery chunks stay far below it.
ACTOR_TIME_LIMIT_MS = 10 * 60 * 1000
#: Dramatiq's own retries cover infrastructure failures (MongoDB down, a bug);
#: provider failures are retried by the delivery policy instead.
INFRASTRUCTURE_MAX_RETRIES = 20
#: Longest wait between two such retries (ms): well under RabbitMQ's 30-minute
#: consumer_timeout, since a delayed message is held unacknowledged by the worker.
INFRASTRUCTURE_MAX_BACKOFF_MS = 5 * 60 * 1000
#: RabbitMQ's ``consumer_timeout`` (ms) that every delay must stay under: its default, which the
#: cluster script and the compose and Kubernetes RabbitMQ configurations set explicitly.
RABBITMQ_CONSUMER_TIMEOUT_MS = 30 * 60 * 1000
#: Separates the URLs of a cluster's nodes in ``PUSH_AMQP_URL`` (Dramatiq's own convention).
AMQP_URL_SEPARATOR = ";"
#: AMQP reply code of a declaration whose arguments differ from the existing queue's.
PRECONDITION_FAILED = 406


def amqp_urls(setting: str) -> list[str]:
    """The node URLs of ``PUSH_AMQP_URL``: one, or a cluster's several separated by ``;``."""
    urls = [url.strip() for url in setting.split(AMQP_URL_SEPARATOR) if url.strip()]
    if not urls:
        raise ValueError("PUSH_AMQP_URL names no AMQP URL")
    return urls


def node_urls(setting: str, *, shuffle: bool = True) -> list[str]:
    """Every node URL of ``PUSH_AMQP_URL`` with fail-fast timeouts, in the order to try them.

    pika tries them in order and connects to the first that answers, so a
    node that is down costs one refused connection. ``shuffle``: each process
    takes the nodes in its own random order, spreading the connections (and,
    with RabbitMQ's ``client-local`` leader locator, the queue leaders).
    """
    urls = [amqp_url_with_timeouts(url) for url in amqp_urls(setting)]
    if shuffle:
        random.shuffle(urls)
    return urls


def connection_parameters(setting: str, *, shuffle: bool = True) -> list[pika.URLParameters]:
    """pika's parameters of :func:`node_urls`: ``pika.BlockingConnection(connection_parameters(...))``."""
    return [pika.URLParameters(url) for url in node_urls(setting, shuffle=shuffle)]


def amqp_url_with_timeouts(url: str) -> str:
    """Add fail-fast connection parameters to an AMQP URL unless it sets its own."""
    if "socket_timeout" in url or "connection_attempts" in url:
        return url
    separator = "&" if "?" in url else "?"
    return (
        f"{url}{separator}socket_timeout={CONNECT_TIMEOUT_SECONDS}"
        f"&connection_attempts={CONNECTION_ATTEMPTS}&blocked_connection_timeout=10"
    )


class QueueTypeBroker(RabbitmqBroker):
    """Dramatiq's RabbitMQ broker declaring every queue, its ``.DQ`` and its ``.XQ`` with one queue type.

    Dramatiq declares a queue the first time something is enqueued on it or
    consumed from it; every such declaration goes through here, so a queue
    added later (by an actor on a new queue name) gets the same type and
    arguments (``shared/queue_declarations.py``).

    Parameters:
      queue_type: ``classic`` or ``quorum``.
      **options: :class:`dramatiq.brokers.rabbitmq.RabbitmqBroker`'s.
    """

    def __init__(self, *, queue_type: str, **options):
        self.queue_type = checked_queue_type(queue_type)
        super().__init__(**options)

    def _build_queue_arguments(self, queue_name):
        return work_queue_arguments(self.queue_type, dead_letter_queue=xq_name(queue_name))

    def _declare_queue(self, queue_name):
        return self._declare(queue_name, self._build_queue_arguments(queue_name))

    def _declare_dq_queue(self, queue_name):
        return self._declare(dq_name(queue_name), self._build_queue_arguments(queue_name))

    def _declare_xq_queue(self, queue_name):
        return self._declare(xq_name(queue_name), dead_letter_queue_arguments(self.queue_type))

    def _declare(self, name: str, arguments: dict):
        try:
            return self.channel.queue_declare(queue=name, durable=True, arguments=arguments)
        except pika.exceptions.ChannelClosedByBroker as error:
            if error.reply_code == PRECONDITION_FAILED:
                # Dramatiq retries, then reports a connection error (a 503, a restarting consumer): say what it is.
                log.error(
                    "queue %s exists with other arguments than PUSH_RABBITMQ_QUEUE_TYPE=%s declares (%s); "
                    "switch the deployment's queues with `python -m ops.queue_type switch` (README \"Clusters\")",
                    name, self.queue_type, error.reply_text,
                )
            raise


def make_broker(settings: Settings, *, set_global: bool = True) -> QueueTypeBroker:
    """Build the RabbitMQ broker with the queue type, publisher confirms and the project's middleware.

    Parameters:
      settings: where RabbitMQ is.
      set_global: make it Dramatiq's global broker (the worker CLI needs that).
    """
    middleware = [
        AgeLimit(),
        TimeLimit(time_limit=ACTOR_TIME_LIMIT_MS),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(max_retries=INFRASTRUCTURE_MAX_RETRIES, max_backoff=INFRASTRUCTURE_MAX_BACKOFF_MS),
        AsyncIO(),
    ]
    broker = QueueTypeBroker(
        queue_type=settings.rabbitmq_queue_type,
        url=node_urls(settings.amqp_url),
        confirm_delivery=True,
        middleware=middleware,
    )
    if set_global:
        dramatiq.set_broker(broker)
    return broker
