"""A real stack for a test session (integration, faults, fuzz): its own var dir, free ports and queue prefix.

RabbitMQ is the machine's and others use it, so each stack's queues carry a
unique prefix and are deleted when the stack stops.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pika

from devstack.stack import WORKER_GROUPS, Ports, Stack
from shared.broker import connection_parameters
from shared.commands import queue_name_for_prefix
from shared.settings import load


@contextmanager
def running_stack(var_dir: Path, name: str, env: dict, *, ports: Ports | None = None, broker_url: str | None = None) -> Iterator[Stack]:
    """Start a stack named ``name`` (its queue prefix) with ``env`` settings; stop it and delete its queues after.

    ``ports``: where it listens (free ones when not given). ``broker_url``: where its queues are
    deleted (a cluster's nodes); the machine's RabbitMQ when not given.
    """
    prefix = f"{name}-{uuid.uuid4().hex[:8]}."
    stack = Stack(var_dir=var_dir, ports=ports or Ports.free(), queue_prefix=prefix, env=dict(env))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop_all()
        delete_queues(prefix, amqp_url=broker_url)


def queue_names(prefix: str) -> list[str]:
    """Every queue of the workers under ``prefix``, with Dramatiq's delay (.DQ) and dead-letter (.XQ) queues."""
    return [
        queue_name_for_prefix(prefix, queue) + suffix
        for queues in WORKER_GROUPS.values()
        for queue in queues
        for suffix in ("", ".DQ", ".XQ")
    ]


def delete_queues(prefix: str, *, amqp_url: str | None = None) -> None:
    connection = pika.BlockingConnection(connection_parameters(amqp_url or load().amqp_url))
    try:
        channel = connection.channel()
        for name in queue_names(prefix):
            channel.queue_delete(name)
    finally:
        connection.close()
