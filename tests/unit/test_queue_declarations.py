"""Queue declarations: the arguments of each queue type, and that every queue Dramatiq declares gets them."""
from __future__ import annotations

import pytest
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL, RabbitmqBroker

from ops.queue_type import declaration_arguments
from shared import commands
from shared.broker import (
    INFRASTRUCTURE_MAX_BACKOFF_MS,
    RABBITMQ_CONSUMER_TIMEOUT_MS,
    QueueTypeBroker,
    amqp_urls,
    make_broker,
    node_urls,
)
from shared.queue_declarations import (
    QUORUM_DELIVERY_LIMIT,
    UnknownQueueType,
    dead_letter_queue_arguments,
    work_queue_arguments,
)
from shared.settings import Settings, load
from workers import campaigns, deliver, wc_bridge


class RecordingChannel:
    """Stands in for a pika channel: records the declarations (no broker in a unit test)."""

    def __init__(self):
        self.declared: dict[str, dict] = {}

    def queue_declare(self, queue, durable, arguments):
        assert durable
        self.declared[queue] = arguments


def declarations(queue_type: str, queue: str) -> dict[str, dict]:
    broker = QueueTypeBroker(queue_type=queue_type, url="amqp://g:g@127.0.0.1:1/%2F", confirm_delivery=True)
    channel = RecordingChannel()
    broker.state.channel = channel
    broker.declare_queue(queue, ensure=True)
    return channel.declared


def test_classic_declarations_are_dramatiqs_own_so_existing_queues_stay_valid():
    dramatiq_own = RabbitmqBroker(url="amqp://g:g@127.0.0.1:1/%2F")
    declared = declarations("classic", "persist")
    assert declared == {
        "persist": dramatiq_own._build_queue_arguments("persist"),
        "persist.DQ": dramatiq_own._build_queue_arguments("persist"),
        "persist.XQ": {"x-message-ttl": DEAD_MESSAGE_TTL},
    }


def test_quorum_declares_the_queue_its_delay_queue_and_its_dead_letter_queue_as_quorum_queues():
    declared = declarations("quorum", "deliver.apns")
    assert set(declared) == {"deliver.apns", "deliver.apns.DQ", "deliver.apns.XQ"}
    assert all(args["x-queue-type"] == "quorum" for args in declared.values())
    for name in ("deliver.apns", "deliver.apns.DQ"):
        args = declared[name]
        assert args["x-dead-letter-exchange"] == "" and args["x-dead-letter-routing-key"] == "deliver.apns.XQ"
        # At-least-once dead-lettering needs reject-publish; without it RabbitMQ falls back to at-most-once.
        assert args["x-dead-letter-strategy"] == "at-least-once" and args["x-overflow"] == "reject-publish"
        assert args["x-delivery-limit"] == QUORUM_DELIVERY_LIMIT
        assert "x-max-priority" not in args  # quorum queues have no priorities on RabbitMQ 3.x
    assert declared["deliver.apns.XQ"] == {"x-queue-type": "quorum", "x-message-ttl": DEAD_MESSAGE_TTL}


def test_a_queue_added_later_gets_the_queue_type_without_being_listed_anywhere():
    declared = declarations("quorum", "deliver.apns.tx")
    assert {name: args["x-queue-type"] for name, args in declared.items()} == {
        "deliver.apns.tx": "quorum", "deliver.apns.tx.DQ": "quorum", "deliver.apns.tx.XQ": "quorum",
    }


def test_every_project_queue_is_declared_by_the_actors_broker():
    settings = load({}, rabbitmq_queue_type="quorum", queue_prefix="p.")
    broker = make_broker(settings, set_global=False)
    assert isinstance(broker, QueueTypeBroker) and broker.queue_type == "quorum"
    for queue in commands.QUEUES:
        assert work_queue_arguments("quorum", dead_letter_queue=f"p.{queue}.XQ") == broker._build_queue_arguments(f"p.{queue}")


def test_an_unknown_queue_type_is_refused_naming_the_setting():
    with pytest.raises(UnknownQueueType, match="PUSH_RABBITMQ_QUEUE_TYPE"):
        make_broker(load({"PUSH_RABBITMQ_QUEUE_TYPE": "stream"}), set_global=False)
    with pytest.raises(UnknownQueueType):
        dead_letter_queue_arguments("mirrored")
    assert work_queue_arguments(" Quorum ", dead_letter_queue="q.XQ")["x-queue-type"] == "quorum"


def test_cluster_urls_are_all_tried_each_with_fail_fast_timeouts():
    setting = "amqp://g:g@n1:5681/%2F; amqp://g:g@n2:5682/%2F;amqp://g:g@n3:5683/%2F"
    assert amqp_urls(setting) == ["amqp://g:g@n1:5681/%2F", "amqp://g:g@n2:5682/%2F", "amqp://g:g@n3:5683/%2F"]
    urls = node_urls(setting, shuffle=False)
    assert [u.split("?")[0] for u in urls] == amqp_urls(setting)
    assert all("socket_timeout=" in u and "connection_attempts=1" in u for u in urls)
    assert sorted(node_urls(setting)) == sorted(urls)  # shuffled: the same nodes
    broker = make_broker(load({}, amqp_url=setting), set_global=False)
    assert sorted(p.port for p in broker.parameters) == [5681, 5682, 5683]
    with pytest.raises(ValueError, match="PUSH_AMQP_URL"):
        amqp_urls(" ; ")


def test_every_delay_stays_under_the_consumer_timeout():
    """A delayed message is held unacknowledged until its time: past consumer_timeout RabbitMQ closes the channel."""
    defaults = Settings()
    delays_ms = [
        INFRASTRUCTURE_MAX_BACKOFF_MS,
        defaults.delivery_max_backoff * 1000,
        (defaults.delivery_lease_seconds + deliver.LEASE_GRACE_SECONDS) * 1000,
        (defaults.delivery_lease_seconds + wc_bridge.LEASE_GRACE_SECONDS) * 1000,
        campaigns.CHECK_INTERVAL_SECONDS * 1000,
    ]
    assert max(delays_ms) < RABBITMQ_CONSUMER_TIMEOUT_MS / 2


def test_the_switch_declares_each_queue_as_the_workers_broker_does():
    for queue_type in ("classic", "quorum"):
        assert declaration_arguments(queue_type, "p.deliver.fcm") == declarations(queue_type, "p.deliver.fcm")
