"""Lanes end to end: a SYNCHRONOUS send is answered while a campaign's thousands of chunks still wait.

The stack of this module delivers in chunks of two, so a campaign of a few
thousand users fills the bulk deliver queues with thousands of chunks; the
transactional send goes through ``expand.tx`` and ``deliver.*.tx``, served by
the ``tx`` worker group, and is answered before the bulk queues drain.
"""
from __future__ import annotations

import secrets
import time
import uuid

import pika
import pytest
import requests

from devstack import seed
from devstack.credentials import configure_app, make_credentials, register_with_simulators
from shared.broker import connection_parameters
from shared.commands import DELIVER_APNS, DELIVER_FCM, queue_name_for_prefix
from shared.settings import load
from tests import waiting
from tests.integration.conftest import TEST_SETTINGS, apns_token
from tests.stacks import running_stack

#: Campaign users (one device each, half APNs, half FCM): with chunks of two, thousands of chunks.
CAMPAIGN_USERS = 12_000
CHUNK_SIZE = 2
#: Chunks that must still wait in the bulk queues when the SYNCHRONOUS send is answered.
BACKLOG_AT_ANSWER = 1_000


@pytest.fixture(scope="module")
def lane_stack(tmp_path_factory):
    env = {**TEST_SETTINGS, "PUSH_DELIVERY_CHUNK_SIZE": str(CHUNK_SIZE), "PUSH_CAMPAIGN_USERS_PER_BATCH": "2000"}
    with running_stack(tmp_path_factory.mktemp("lanes"), "lanes", env) as stack:
        yield stack


def make_app(stack) -> str:
    app_id = f"lanes-{uuid.uuid4().hex[:8]}"
    credentials = make_credentials(app_id, fcm_origin=f"https://127.0.0.1:{stack.ports.fcm}", key_id=f"K{secrets.token_hex(4)}".upper())
    register_with_simulators(credentials, apns_control=f"http://127.0.0.1:{stack.ports.apns_control}",
                             fcm_control=f"http://127.0.0.1:{stack.ports.fcm_control}")
    configure_app(stack.api_url, app_id, credentials)
    return app_id


def ready_messages(stack, queues: tuple[str, ...]) -> int:
    """Messages ready in the stack's queues, counted by RabbitMQ (passive declare: exact, not the management's 5 s figure)."""
    connection = pika.BlockingConnection(connection_parameters(load().amqp_url))
    try:
        channel = connection.channel()
        total = 0
        for queue in queues:
            total += channel.queue_declare(queue_name_for_prefix(stack.queue_prefix, queue), passive=True).method.message_count
        return total
    finally:
        connection.close()


def test_a_synchronous_send_is_answered_while_a_campaign_has_thousands_of_chunks_waiting(lane_stack):
    import pymongo

    stack = lane_stack
    db = pymongo.MongoClient(stack.mongo_uri)["push"]
    campaign_app, tx_app = make_app(stack), make_app(stack)
    tag = uuid.uuid4().hex[:6]
    users = [f"cu-{tag}-{i:06d}" for i in range(CAMPAIGN_USERS)]
    seed.seed_devices(db, campaign_app, users, [apns_token() if i % 2 == 0 else f"f-{secrets.token_urlsafe(30)}" for i in range(CAMPAIGN_USERS)],
                      ["apns" if i % 2 == 0 else "fcm" for i in range(CAMPAIGN_USERS)])
    otp_token = apns_token()
    seed.seed_devices(db, tx_app, ["otp-user"], [otp_token], ["apns"])
    session = requests.Session()
    campaign = session.post(f"{stack.api_url}/push/campaign/create",
                            json={"requestObject": {"appId": campaign_app, "message": {"title": "Sale", "body": "for all"}}}, timeout=60)
    campaign_id = campaign.json()["responseObject"]["id"]
    session.put(f"{stack.api_url}/push/campaign/{campaign_id}/user/add", json={"requestObject": users}, timeout=300).raise_for_status()

    session.post(f"{stack.api_url}/push/campaign/send/live/{campaign_id}", timeout=60).raise_for_status()
    bulk = (DELIVER_APNS, DELIVER_FCM)
    waiting.wait_for(lambda: ready_messages(stack, bulk) >= 2 * BACKLOG_AT_ANSWER, timeout=120, every=0.1,
                     what="the campaign's chunks queued")

    started = time.monotonic()
    answer = session.post(f"{stack.api_url}/push/message/send", timeout=60, json={"requestObject": {
        "appId": tx_app, "mode": "SYNCHRONOUS", "message": {"userId": "otp-user", "body": {"title": "Your code", "body": "123456"}}}})
    seconds = time.monotonic() - started
    waiting_at_answer = ready_messages(stack, bulk)
    assert answer.status_code == 200, answer.text
    assert answer.json()["responseObject"]["result"]["apns"]["sent"] == 1
    assert waiting_at_answer >= BACKLOG_AT_ANSWER, f"only {waiting_at_answer} chunks still waited: the send waited behind the campaign"
    assert seconds < 10, f"answered after {seconds:.1f}s"
    stats = requests.get(f"http://127.0.0.1:{stack.ports.apns_control}/counts/{otp_token}", timeout=10).json()
    assert stats["delivered"] == 1
