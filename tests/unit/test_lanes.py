"""Lanes: which sends are transactional, and which queue each command or chunk is published on."""
from __future__ import annotations

from pathlib import Path

import yaml

from devstack.stack import WORKER_GROUPS
from shared import commands
from shared.settings import load
from workers.expand import Delivery, chunk_payload

ROOT = Path(__file__).resolve().parents[2]


class RecordingBroker:
    """Keeps what was enqueued (the queue naming is what is under test, not RabbitMQ)."""

    def __init__(self):
        self.enqueued = []

    def enqueue(self, message, delay=None):
        self.enqueued.append((message.queue_name, message.actor_name, delay))
        return message


def entry(high_priority: bool) -> dict:
    return {"user_id": "u", "high_priority": high_priority, "body": {}}


def test_single_synchronous_or_high_priority_sends_are_transactional_batches_are_bulk():
    assert commands.send_lane("SYNCHRONOUS", [entry(False)]) == commands.TX
    assert commands.send_lane("ASYNCHRONOUS", [entry(True)]) == commands.TX
    assert commands.send_lane("ASYNCHRONOUS", [entry(False)]) == commands.BULK
    assert commands.send_lane("SYNCHRONOUS", [entry(True), entry(True)]) == commands.BULK


def test_a_command_and_its_chunks_are_published_in_their_lane():
    broker = RecordingBroker()
    publisher = commands.Publisher(broker, load({}, queue_prefix="p."))
    publisher.publish(commands.EXPAND_SEND, commands.command("send", lane=commands.TX))
    publisher.publish(commands.EXPAND_SEND, commands.command("send", lane=commands.BULK))
    publisher.publish(commands.EXPAND_CAMPAIGN, commands.command("campaign.send"))
    tx_chunk = chunk_payload("m", "a", {"0": {}}, [Delivery("m:0:t", "d", "t", 0, None)], first_attempt_at=0.0, lane=commands.TX)
    publisher.publish(commands.DELIVER_CHUNK_FCM, tx_chunk, delay_ms=5)
    bulk_chunk = chunk_payload("m", "a", {"0": {}}, [Delivery("m:0:t", "d", "t", 0, None)], first_attempt_at=0.0)
    publisher.publish(commands.DELIVER_CHUNK_APNS, bulk_chunk)
    publisher.publish(commands.APPLY_WRITE, {"lane": commands.TX})  # a queue without a transactional twin
    assert [queue for queue, _, _ in broker.enqueued] == [
        "p.expand.tx", "p.expand", "p.expand", "p.deliver.fcm.tx", "p.deliver.apns", "p.persist",
    ]
    assert bulk_chunk["lane"] == commands.BULK


def test_every_lane_queue_is_declared_consumed_and_deployed():
    assert set(commands.TX_QUEUES.values()) <= set(commands.QUEUES)
    assert set(WORKER_GROUPS["tx"]) == set(commands.TX_QUEUES.values())
    assert all(commands.lane_of_queue(q) == commands.TX for q in commands.TX_QUEUES.values())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    command = compose["workers-tx"]["command"]
    assert set(command[command.index("--queues") + 1 :]) == set(commands.TX_QUEUES.values())
