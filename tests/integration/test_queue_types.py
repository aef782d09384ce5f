"""Quorum queues on the machine's RabbitMQ (one node): declaration, actors, delays, dead letters, the switch.

A quorum queue on a single node has one replica: what it shows here is how
RabbitMQ treats the arguments (the same on a cluster); replication under a
node loss is ``make faults-cluster``'s. Every queue carries a unique prefix and
is deleted at the end.
"""
from __future__ import annotations

import logging
import time
import uuid
from urllib.parse import quote

import dramatiq
import pika
import pytest
import requests
from dramatiq.common import dq_name, xq_name

from ops import queue_type
from shared import commands
from shared.broker import make_broker
from shared.commands import APPLY_WRITE, Publisher
from shared.metrics import management_endpoint
from shared.queue_declarations import QUORUM_DELIVERY_LIMIT, work_queue_arguments
from shared.settings import load
from tests import waiting


@pytest.fixture
def prefix():
    prefix = f"qtype-{uuid.uuid4().hex[:8]}."
    yield prefix
    connection = pika.BlockingConnection(pika.URLParameters(load().amqp_url))
    channel = connection.channel()
    for queue in commands.QUEUES:
        base = prefix + queue
        for name in (base, dq_name(base), xq_name(base)):
            channel.queue_delete(name)
            channel.queue_delete(name + queue_type.HOLDING_SUFFIX)
    connection.close()


def management(name: str) -> dict:
    base, auth = management_endpoint(load().rabbitmq_management_url)
    answer = requests.get(f"{base}/api/queues/%2F/{quote(name, safe='')}", auth=auth, timeout=10)
    answer.raise_for_status()
    return answer.json()


def ready(name: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(load().amqp_url))
    try:
        return connection.channel().queue_declare(name, passive=True).method.message_count
    finally:
        connection.close()


def take(name: str):
    """The head message of a queue (acknowledged): (properties, body), or None."""
    connection = pika.BlockingConnection(pika.URLParameters(load().amqp_url))
    try:
        method, properties, body = connection.channel().basic_get(name, auto_ack=True)
        return (properties, body) if method else None
    finally:
        connection.close()


def test_actors_delays_and_dead_letters_run_on_quorum_queues(prefix):
    settings = load(queue_prefix=prefix, rabbitmq_queue_type="quorum")
    broker = make_broker(settings, set_global=False)
    queue = commands.queue_name(settings, commands.PERSIST)
    ran: list[str] = []
    failures: list[int] = []

    def work(label: str) -> None:
        ran.append(label)

    def fail() -> None:
        failures.append(1)
        raise RuntimeError("always fails")

    ok = dramatiq.actor(work, broker=broker, actor_name="qt_work", queue_name=queue)
    # One retry through the delay queue, then a reject into the dead-letter queue.
    broken = dramatiq.actor(fail, broker=broker, actor_name="qt_fail", queue_name=queue, max_retries=1, min_backoff=100, max_backoff=200)
    ok.send("now")
    ok.send_with_options(args=("later",), delay=500)
    broken.send()
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        waiting.wait_for(lambda: sorted(ran) == ["later", "now"] and len(failures) == 2, timeout=30, what="actors ran")
        waiting.wait_for(lambda: ready(xq_name(queue)) == 1, timeout=30, what="the failed message dead-lettered")
    finally:
        worker.stop()
        broker.close()

    for name in (queue, dq_name(queue)):
        info = management(name)
        assert info["type"] == "quorum"
        assert info["arguments"] == work_queue_arguments("quorum", dead_letter_queue=xq_name(queue))
    assert management(xq_name(queue))["type"] == "quorum"
    properties, body = take(xq_name(queue))
    assert dramatiq.Message.decode(body).actor_name == "qt_fail"
    assert properties.headers["x-death"][0]["reason"] == "rejected"


def test_a_message_returned_past_the_delivery_limit_goes_to_the_dead_letter_queue(prefix):
    """A message whose consumers keep dying (a poison message crashing workers) stops being redelivered."""
    settings = load(queue_prefix=prefix, rabbitmq_queue_type="quorum")
    broker = make_broker(settings, set_global=False)
    Publisher(broker, settings).publish(APPLY_WRITE, {"id": "poison"})
    broker.close()
    queue = commands.queue_name(settings, commands.PERSIST)
    deliveries = 0
    for _ in range(QUORUM_DELIVERY_LIMIT + 2):
        connection = pika.BlockingConnection(pika.URLParameters(load().amqp_url))
        channel = connection.channel()
        channel.basic_qos(prefetch_count=1)
        method, _, _ = next(channel.consume(queue, inactivity_timeout=1))
        connection.close()  # a worker killed before its ack
        if method is None:
            break
        deliveries += 1

    assert deliveries == QUORUM_DELIVERY_LIMIT + 1  # the first delivery and the limit's redeliveries
    waiting.wait_for(lambda: ready(xq_name(queue)) == 1, timeout=10, what="dead-lettered at the limit")
    properties, body = take(xq_name(queue))
    assert dramatiq.Message.decode(body).args == ({"id": "poison"},)
    assert properties.headers["x-death"][0]["reason"] == "delivery_limit"


def test_switching_a_deployment_from_classic_to_quorum_keeps_every_message(prefix, caplog):
    classic = load(queue_prefix=prefix, rabbitmq_queue_type="classic")
    quorum = load(queue_prefix=prefix, rabbitmq_queue_type="quorum")
    queue = commands.queue_name(classic, commands.PERSIST)
    old = make_broker(classic, set_global=False)
    for n in range(3):
        Publisher(old, classic).publish(APPLY_WRITE, {"id": f"w{n}"})
    Publisher(old, classic).publish(APPLY_WRITE, {"id": "delayed"}, delay_ms=60_000)
    old.channel.basic_publish("", xq_name(queue), b"a dead letter", pika.BasicProperties(delivery_mode=2))
    for other in commands.QUEUES:
        old.declare_queue(commands.queue_name(classic, other), ensure=True)
    old.close()

    # Workers or an API configured for quorum queues meet the classic ones: refused, and the log says why.
    new = make_broker(quorum, set_global=False)
    with caplog.at_level(logging.ERROR, logger="shared.broker"), pytest.raises(dramatiq.errors.ConnectionClosed):
        Publisher(new, quorum).publish(APPLY_WRITE, {"id": "refused"})
    assert "PRECONDITION_FAILED" in caplog.text and "ops.queue_type switch" in caplog.text

    # A worker still consuming: nothing is touched.
    connection = pika.BlockingConnection(pika.URLParameters(load().amqp_url))
    consumer = connection.channel()
    consumer.basic_consume(dq_name(queue), lambda *a: None)
    with pytest.raises(queue_type.QueuesInUse):
        queue_type.switch(quorum, to="quorum")
    connection.close()
    assert management(queue)["type"] == "classic"

    done = queue_type.switch(quorum, to="quorum")
    assert {d.name for d in done if d.redeclared} == set(queue_type.queue_names(quorum))
    moved = {d.name: d.moved for d in done}
    assert (moved[queue], moved[dq_name(queue)], moved[xq_name(queue)]) == (3, 1, 1)
    for name in queue_type.queue_names(quorum):
        assert management(name)["type"] == "quorum", name
    assert (ready(queue), ready(dq_name(queue)), ready(xq_name(queue))) == (3, 1, 1)
    delayed = dramatiq.Message.decode(take(dq_name(queue))[1])
    assert delayed.args == ({"id": "delayed"},) and delayed.options["eta"] > time.time() * 1000  # keeps its time
    assert take(xq_name(queue))[1] == b"a dead letter"

    Publisher(new, quorum).publish(APPLY_WRITE, {"id": "accepted"})  # the new declarations match
    new.close()
    assert ready(queue) == 4
    assert not any(d.redeclared for d in queue_type.switch(quorum, to="quorum"))  # done: a second run changes nothing


def test_an_interrupted_switch_resumes_from_the_holding_queue(prefix):
    """Messages moved aside before a crash are put back by the next run."""
    settings = load(queue_prefix=prefix, rabbitmq_queue_type="quorum")
    queue = commands.queue_name(settings, commands.EXPAND)
    connection = pika.BlockingConnection(pika.URLParameters(load().amqp_url))
    channel = connection.channel()
    channel.queue_declare(queue + queue_type.HOLDING_SUFFIX, durable=True, arguments={"x-queue-type": "quorum"})
    for n in range(2):
        channel.basic_publish("", queue + queue_type.HOLDING_SUFFIX, f"held {n}".encode(), pika.BasicProperties(delivery_mode=2))
    connection.close()

    done = {d.name: d for d in queue_type.switch(settings, to="quorum")}
    assert done[queue].redeclared and done[queue].moved == 2
    assert ready(queue) == 2
    rows = {r["name"]: r for r in queue_type.status(settings)}
    assert rows[queue]["exists"] and rows[queue]["held_for_switch"] == 0


def test_switch_command_line_prints_what_it_did(prefix, capsys, monkeypatch):
    monkeypatch.setenv("PUSH_QUEUE_PREFIX", prefix)
    assert queue_type.main(["switch", "--to", "quorum"]) == 0
    out = capsys.readouterr().out
    assert f"{prefix}persist" in out and "PUSH_RABBITMQ_QUEUE_TYPE=quorum" in out
    assert queue_type.main(["status"]) == 0
    assert f"{prefix}deliver.fcm.XQ" in capsys.readouterr().out
