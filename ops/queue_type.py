"""Switch a deployment's queues between classic and quorum: ``python -m ops.queue_type status|switch --to TYPE``.

A queue's type and arguments are fixed when it is declared: declaring it again
with others fails with ``PRECONDITION_FAILED``. So a switch re-declares every
queue of the deployment (each queue of ``shared/commands.py`` under
``PUSH_QUEUE_PREFIX``, with its ``.DQ`` and ``.XQ``): its messages are moved
aside into a holding queue ``<name>.switch``, the queue is deleted and declared
again as the workers declare it (:class:`shared.broker.QueueTypeBroker`), and
the messages are moved back. Every move publishes with publisher confirms
before it acknowledges, so an interrupted switch loses nothing (run it again:
it resumes from the holding queues; a message moved twice is run twice, which
the actors allow). Delayed messages keep their time (Dramatiq keeps it in the
message). The API and the workers must be stopped: ``switch`` refuses while a
queue has consumers. README "Clusters" has the whole procedure.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import pika
import pika.exceptions
from dramatiq.common import dq_name, xq_name

from shared import commands
from shared.broker import PRECONDITION_FAILED, connection_parameters
from shared.queue_declarations import QUORUM, checked_queue_type, dead_letter_queue_arguments, work_queue_arguments
from shared.settings import Settings, load

#: Suffix of the queue a switch keeps a queue's messages in while it re-declares it.
HOLDING_SUFFIX = ".switch"


class QueuesInUse(RuntimeError):
    """A queue still has consumers: its workers run, and its unacknowledged messages cannot be moved."""


@dataclass
class Switched:
    """What a switch did to one queue."""

    name: str
    redeclared: bool
    moved: int


def queue_names(settings: Settings) -> list[str]:
    """Every queue of the deployment: each project queue, its delay queue and its dead-letter queue."""
    names = []
    for queue in commands.QUEUES:
        base = commands.queue_name(settings, queue)
        names += [base, dq_name(base), xq_name(base)]
    return names


def _connect(settings: Settings) -> pika.BlockingConnection:
    return pika.BlockingConnection(connection_parameters(settings.amqp_url))


def _passive(connection: pika.BlockingConnection, name: str):
    """(messages ready, consumers) of a queue, or None when it does not exist."""
    channel = connection.channel()
    try:
        frame = channel.queue_declare(name, passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        return None  # 404: the channel is closed by the broker
    channel.close()
    return frame.method.message_count, frame.method.consumer_count


def _has_arguments(connection: pika.BlockingConnection, name: str, arguments: dict) -> bool:
    """Whether ``name`` exists with ``arguments`` (a declaration with them is accepted); creates it when missing."""
    channel = connection.channel()
    try:
        channel.queue_declare(name, durable=True, arguments=arguments)
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code == PRECONDITION_FAILED:
            return False
        raise
    channel.close()
    return True


def _move(connection: pika.BlockingConnection, source: str, target: str) -> int:
    """Move every message of ``source`` to ``target`` (confirmed publish, then ack); answers how many."""
    channel = connection.channel()
    channel.confirm_delivery()
    moved = 0
    while True:
        method, properties, body = channel.basic_get(source, auto_ack=False)
        if method is None:
            channel.close()
            return moved
        channel.basic_publish("", target, body, properties, mandatory=True)
        channel.basic_ack(method.delivery_tag)
        moved += 1


def _holding_arguments(queue_type: str) -> dict:
    return {"x-queue-type": QUORUM} if queue_type == QUORUM else {}


def declaration_arguments(queue_type: str, base: str) -> dict[str, dict]:
    """The arguments the workers declare a queue, its ``.DQ`` and its ``.XQ`` with (shared.broker.QueueTypeBroker)."""
    work = work_queue_arguments(queue_type, dead_letter_queue=xq_name(base))
    return {base: work, dq_name(base): work, xq_name(base): dead_letter_queue_arguments(queue_type)}


def _declare(connection: pika.BlockingConnection, name: str, arguments: dict) -> None:
    channel = connection.channel()
    channel.queue_declare(name, durable=True, arguments=arguments)
    channel.close()


def _delete_empty(connection: pika.BlockingConnection, name: str) -> None:
    """Delete a queue just emptied by a move; refuse if a message arrived since (quorum queues take no ``if_empty``)."""
    state = _passive(connection, name)
    if state is None:
        return
    if state[0]:
        raise RuntimeError(f"{name} received {state[0]} messages during the switch: is a publisher still running?")
    channel = connection.channel()
    channel.queue_delete(name)
    channel.close()


def switch(settings: Settings, *, to: str) -> list[Switched]:
    """Re-declare every queue of the deployment as ``to`` (``classic`` or ``quorum``), keeping its messages.

    Raises :class:`QueuesInUse` (before changing anything) while any of them has consumers.
    """
    to = checked_queue_type(to)
    wanted = {}
    for queue in commands.QUEUES:
        wanted.update(declaration_arguments(to, commands.queue_name(settings, queue)))
    connection = _connect(settings)
    try:
        in_use = {name: state[1] for name in wanted if (state := _passive(connection, name)) and state[1]}
        if in_use:
            raise QueuesInUse(f"stop the API and the workers first: consumers on {in_use}")
        done = []
        for name, arguments in wanted.items():
            holding = name + HOLDING_SUFFIX
            unfinished = _passive(connection, holding) is not None  # an interrupted switch left messages aside
            if not unfinished and _passive(connection, name) is not None and _has_arguments(connection, name, arguments):
                done.append(Switched(name, redeclared=False, moved=0))
                continue
            _declare(connection, holding, _holding_arguments(to))
            if _passive(connection, name) is not None:
                _move(connection, name, holding)
                _delete_empty(connection, name)
            _declare(connection, name, arguments)
            moved = _move(connection, holding, name)
            _delete_empty(connection, holding)
            done.append(Switched(name, redeclared=True, moved=moved))
        return done
    finally:
        connection.close()


def status(settings: Settings) -> list[dict]:
    """Each queue of the deployment: whether it exists, its ready messages and consumers."""
    connection = _connect(settings)
    try:
        rows = []
        for name in queue_names(settings):
            state = _passive(connection, name)
            held = _passive(connection, name + HOLDING_SUFFIX)
            rows.append({
                "name": name,
                "exists": state is not None,
                "ready": state[0] if state else 0,
                "consumers": state[1] if state else 0,
                "held_for_switch": held[0] if held else 0,
            })
        return rows
    finally:
        connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.queue_type", description=__doc__.splitlines()[0])
    commands_ = parser.add_subparsers(dest="command", required=True)
    commands_.add_parser("status", help="each queue: exists, ready messages, consumers, messages held by an unfinished switch")
    to = commands_.add_parser("switch", help="re-declare every queue as --to, keeping its messages (API and workers stopped)")
    to.add_argument("--to", required=True, help="classic or quorum (then set PUSH_RABBITMQ_QUEUE_TYPE to it)")
    args = parser.parse_args(argv)
    settings = load()
    if args.command == "status":
        for row in status(settings):
            print(f"{row['name']:40} exists={row['exists']!s:5} ready={row['ready']:<8} consumers={row['consumers']:<4} "
                  f"held={row['held_for_switch']}")
        return 0
    try:
        done = switch(settings, to=args.to)
    except QueuesInUse as error:
        print(f"not switched: {error}", file=sys.stderr)
        return 1
    for row in done:
        print(f"{row.name:40} {'re-declared' if row.redeclared else 'already ' + args.to:12} moved={row.moved}")
    print(f"every queue is {args.to}: start the workers and the API with PUSH_RABBITMQ_QUEUE_TYPE={args.to}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
