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
#: The campaigns' pacing bound (deliveries open before the expansion waits): 3,000 chunks of two.
DELIVERIES_AHEAD = 6_000
#: Users of another app's batch posted while the campaign runs (bulk, like the campaign).
OTHER_BATCH = 100
#: The stack's campaign users expanded per batch (``PUSH_CAMPAIGN_USERS_PER_BATCH``).
USERS_PER_BATCH = 2_000
#: The stack's bound per app on open deliveries of bulk sends (``PUSH_APP_BULK_DELIVERIES_AHEAD``: shared/pacing.py).
APP_BULK_AHEAD = 400
#: Batches and their size that one app posts at once in the fair-share test (2.5 × the bound).
BIG_SENDER_BATCHES, BIG_SENDER_BATCH = 10, 100


@pytest.fixture(scope="module")
def lane_stack(tmp_path_factory):
    env = {**TEST_SETTINGS, "PUSH_DELIVERY_CHUNK_SIZE": str(CHUNK_SIZE), "PUSH_CAMPAIGN_USERS_PER_BATCH": str(USERS_PER_BATCH),
           "PUSH_CAMPAIGN_DELIVERIES_AHEAD": str(DELIVERIES_AHEAD), "PUSH_APP_BULK_DELIVERIES_AHEAD": str(APP_BULK_AHEAD)}
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


def seeded_campaign_users(db, app_id: str, count: int) -> list[str]:
    tag = uuid.uuid4().hex[:6]
    users = [f"cu-{tag}-{i:06d}" for i in range(count)]
    seed.seed_devices(db, app_id, users, [apns_token() if i % 2 == 0 else f"f-{secrets.token_urlsafe(30)}" for i in range(count)],
                      ["apns" if i % 2 == 0 else "fcm" for i in range(count)])
    return users


def apps_with_users(stack, db, *counts: int) -> list[tuple[str, list[str]]]:
    """A new app per count, each with that many users of one device (half APNs, half FCM)."""
    apps = [make_app(stack) for _ in counts]
    return [(app_id, seeded_campaign_users(db, app_id, count)) for app_id, count in zip(apps, counts, strict=True)]


def test_a_synchronous_send_is_answered_while_a_campaign_has_thousands_of_chunks_waiting(lane_stack):
    import pymongo

    stack = lane_stack
    db = pymongo.MongoClient(stack.mongo_uri)["push"]
    campaign_app, tx_app = make_app(stack), make_app(stack)
    users = seeded_campaign_users(db, campaign_app, CAMPAIGN_USERS)
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


def test_another_apps_batch_is_delivered_while_a_paced_campaign_still_has_most_of_its_deliveries_to_send(lane_stack):
    """Fair share in bulk: the campaign's expansion waits while DELIVERIES_AHEAD of it are open, so a batch of another
    app posted after it started waits behind those, not behind the whole campaign (which it did before the pacing)."""
    import pymongo

    from shared import ledger

    stack = lane_stack
    db = pymongo.MongoClient(stack.mongo_uri)["push"]
    (campaign_app, users), (other_app, others) = apps_with_users(stack, db, CAMPAIGN_USERS, OTHER_BATCH)
    session = requests.Session()
    campaign_id = session.post(f"{stack.api_url}/push/campaign/create", timeout=60, json={"requestObject": {
        "appId": campaign_app, "message": {"title": "Sale", "body": "for all"}}}).json()["responseObject"]["id"]
    session.put(f"{stack.api_url}/push/campaign/{campaign_id}/user/add", json={"requestObject": users}, timeout=300).raise_for_status()
    stack.stop_workers(["deliver"])  # nothing of the campaign is sent for now: only the pacing stops its expansion
    try:
        session.post(f"{stack.api_url}/push/campaign/send/live/{campaign_id}", timeout=60).raise_for_status()
        waiting.wait_for(lambda: db["ledger"].count_documents({"m": campaign_id}) * CHUNK_SIZE >= DELIVERIES_AHEAD, timeout=120,
                         every=0.1, what="the campaign's first deliveries expanded")
        time.sleep(5)  # an unpaced expansion goes on to the whole campaign meanwhile
        expanded = db["ledger"].count_documents({"m": campaign_id}) * CHUNK_SIZE
        assert expanded <= DELIVERIES_AHEAD + USERS_PER_BATCH, f"{expanded} deliveries expanded: the expansion was not paced"
        batch_id = session.post(f"{stack.api_url}/push/message/batch/send", timeout=60, json={"requestObject": {
            "appId": other_app, "mode": "ASYNCHRONOUS", "batch": [{"userId": u, "body": {"title": "news"}} for u in others]}}
        ).json()["responseObject"]["messageId"]
    finally:
        stack.start_workers(["deliver"])
    waiting.wait_for(lambda: ledger.state_counts(db, [batch_id]).get("sent", 0) == OTHER_BATCH, timeout=180, every=0.2,
                     what="the other app's batch delivered")
    campaign_sent = ledger.state_counts(db, [campaign_id]).get("sent", 0)
    assert campaign_sent <= CAMPAIGN_USERS - 2_000, f"the batch waited for the campaign: {campaign_sent} of it sent first"
    waiting.wait_for(lambda: ledger.state_counts(db, [campaign_id]).get("sent", 0) == CAMPAIGN_USERS, timeout=300, every=0.5,
                     what="the paced campaign delivered whole")


def post_batch(session, stack, app_id: str, users: list[str]) -> str:
    answer = session.post(f"{stack.api_url}/push/message/batch/send", timeout=60, json={"requestObject": {
        "appId": app_id, "mode": "ASYNCHRONOUS", "batch": [{"userId": u, "body": {"title": "news"}} for u in users]}})
    assert answer.status_code == 200, answer.text
    return answer.json()["responseObject"]["messageId"]


def test_one_apps_many_batches_wait_in_mongodb_and_another_apps_batch_goes_between_them(lane_stack):
    """Fair share in bulk for batches (shared/pacing.py): an app posting 2.5 × its bound of batches at once has only its
    bound (plus at most one batch, whatever ran at once) expanded; the rest wait in ``paced_sends``, another app's batch
    posted after them is expanded at once and delivered while most of the first app's still wait, and every batch is
    delivered whole, each delivery once. Without the bound, all ten batches are expanded ahead of the other app's."""
    import pymongo

    from shared import ledger, pacing

    stack = lane_stack
    db = pymongo.MongoClient(stack.mongo_uri)["push"]
    (big_app, big_users), (small_app, small_users) = apps_with_users(stack, db, BIG_SENDER_BATCH, OTHER_BATCH)
    session = requests.Session()
    stack.stop_workers(["deliver"])  # nothing is sent for now: only the bound stops the expansions
    try:
        big = [post_batch(session, stack, big_app, big_users) for _ in range(BIG_SENDER_BATCHES)]
        waiting.wait_for(lambda: db["messages"].count_documents({"_id": {"$in": big}, "expanded": True}) + db[
            pacing.PACED_SENDS].count_documents({"app": big_app}) >= BIG_SENDER_BATCHES, timeout=60, every=0.1,
            what="each of the big sender's batches expanded or waiting")
        time.sleep(3)  # an unbounded expansion (or a pacer releasing without room) goes on meanwhile
        expanded = sum(ledger.state_counts(db, big).values())
        assert expanded <= APP_BULK_AHEAD + BIG_SENDER_BATCH, f"{expanded} deliveries expanded: the batches were not held"
        assert db[pacing.PACED_SENDS].count_documents({"app": big_app}) >= 3
        small = post_batch(session, stack, small_app, small_users)
        waiting.wait_for(lambda: sum(ledger.state_counts(db, [small]).values()) == OTHER_BATCH, timeout=60, every=0.1,
                         what="the other app's batch expanded without waiting")
    finally:
        stack.start_workers(["deliver"])
    waiting.wait_for(lambda: ledger.state_counts(db, [small]).get("sent", 0) == OTHER_BATCH, timeout=180, every=0.2,
                     what="the other app's batch delivered")
    big_sent = ledger.state_counts(db, big).get("sent", 0)
    assert big_sent <= (BIG_SENDER_BATCHES - 2) * BIG_SENDER_BATCH, f"the batch waited for the big sender's: {big_sent} sent first"
    waiting.wait_for(lambda: ledger.state_counts(db, big).get("sent", 0) == BIG_SENDER_BATCHES * BIG_SENDER_BATCH, timeout=300,
                     every=0.5, what="every batch of the big sender delivered")
    assert db[pacing.PACED_SENDS].count_documents({"app": big_app}) == 0
    control = {"apns": stack.ports.apns_control, "fcm": stack.ports.fcm_control}
    for device in db["devices"].find({"app_id": big_app}, {"token": 1, "platform": 1}):
        got = requests.get(f"http://127.0.0.1:{control[device['platform']]}/counts/{device['token']}", timeout=10).json()
        assert got["delivered"] == BIG_SENDER_BATCHES, (device, got)
