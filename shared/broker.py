"""One Dramatiq broker set-up for the API and the workers.

The API only enqueues; the workers consume. Both build the broker here so the
queue names, the publisher confirms and the middleware are the same on both
sides.
"""
from __future__ import annotations

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import AgeLimit, AsyncIO, Callbacks, Pipelines, Retries, ShutdownNotifications, TimeLimit

from shared.settings import Settings

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


def amqp_url_with_timeouts(url: str) -> str:
    """Add fail-fast connection parameters to an AMQP URL unless it sets its own."""
    if "socket_timeout" in url or "connection_attempts" in url:
        return url
    separator = "&" if "?" in url else "?"
    return (
        f"{url}{separator}socket_timeout={CONNECT_TIMEOUT_SECONDS}"
        f"&connection_attempts={CONNECTION_ATTEMPTS}&blocked_connection_timeout=10"
    )


def make_broker(settings: Settings, *, set_global: bool = True) -> RabbitmqBroker:
    """Build the RabbitMQ broker with publisher confirms and the project's middleware.

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
    broker = RabbitmqBroker(
        url=amqp_url_with_timeouts(settings.amqp_url),
        confirm_delivery=True,
        middleware=middleware,
    )
    if set_global:
        dramatiq.set_broker(broker)
    return broker
