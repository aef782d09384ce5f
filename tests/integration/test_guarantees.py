"""The delivery guarantees (README "Guarantees and how they are kept"), each against the real broker, database and simulators."""
from __future__ import annotations

import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pymongo
import requests

from devstack.stack import free_port
from shared.broker import make_broker
from shared.commands import APPLY_WRITE, DELIVER_ACTOR_BY_PROVIDER, Publisher, command
from shared.ledger import chunk_message
from shared.payload import display_id
from shared.settings import load
from tests import ledger_view, waiting
from tests.integration.conftest import apns_token, fcm_token, register
from tests.integration.tcp_proxy import TcpProxy


def devices(stack):
    return pymongo.MongoClient(stack.mongo_uri)["push"]["devices"]


def wait_for(check, timeout: float = 60.0, what: str = "condition"):
    return waiting.wait_for(check, timeout=timeout, what=what)

def test_create_then_delete_ends_deleted_through_the_api(api, new_app, stack):
    app_id = new_app()
    token = apns_token()
    register(api, app_id, token, "apns", "u-del")
    api.ok("/push/device/delete", {"appId": app_id, "token": token})

    assert devices(stack).find_one({"_id": f"{app_id}:{token}"})["deleted"] in (True, 1)  # nx-27017 reads a $set boolean back as 1


def test_create_then_delete_ends_deleted_whatever_order_the_actors_run_in(api, new_app, stack):
    """The delete is acknowledged after the create, but its command reaches the workers first."""
    app_id = new_app()
    token = apns_token()
    create = command("device.register", app_id=app_id, token=token, platform="apns", environment=None, user_id="u", activation_ids=[])
    delete = command("device.delete", app_id=app_id, token=token)
    assert create["received_at"] < delete["received_at"]
    publisher = Publisher(make_broker(load(queue_prefix=stack.queue_prefix), set_global=False), load(queue_prefix=stack.queue_prefix))
    publisher.publish(APPLY_WRITE, delete)
    applied = pymongo.MongoClient(stack.mongo_uri)["push"]["commands"]
    wait_for(lambda: applied.find_one({"_id": delete["id"]}), what="delete applied")
    publisher.publish(APPLY_WRITE, create)
    wait_for(lambda: applied.find_one({"_id": create["id"]}), what="create applied")
    # Replaying both (a redelivery) changes nothing either.
    publisher.publish(APPLY_WRITE, create)
    publisher.publish(APPLY_WRITE, delete)
    time.sleep(1)

    assert devices(stack).find_one({"_id": f"{app_id}:{token}"})["deleted"] in (True, 1)  # nx-27017 reads a $set boolean back as 1
    answer = api.ok("/push/message/send", {"appId": app_id, "message": {"userId": "u", "body": {"title": "x"}}})
    assert answer["responseObject"]["result"]["apns"]["total"] == 0


def test_acknowledged_batch_survives_a_worker_killed_mid_batch_and_is_delivered_exactly_once(api, new_app, stack, apns_sim, fcm_sim):
    app_id = new_app()
    fast = [apns_token() if i % 2 else fcm_token() for i in range(300)]
    # Slow tokens (500 ms at the provider) keep requests in flight when the kill lands.
    slow = [apns_token("de1a5") if i % 2 else fcm_token("delay5-") for i in range(300)]
    tokens = fast + slow
    users = [f"k-{uuid.uuid4().hex[:8]}" for _ in tokens]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: register(api, app_id, tokens[i], "apns" if i % 2 else "fcm", users[i]), range(len(tokens))))

    answer = api.ok(
        "/push/message/batch/send",
        {"appId": app_id, "mode": "ASYNCHRONOUS", "batch": [{"userId": u, "body": {"title": "survive"}} for u in users]},
    )
    message_id = answer["responseObject"]["messageId"]
    db = ledger_view.database(stack)
    # Kill once the fast ones are recorded and the slow ones are in flight at the provider:
    # recorded outcomes must never be sent again, unanswered sends must be sent again, once.
    # (A send answered in the last instant before the kill, not yet recorded, would be sent
    # twice: the one at-least-once window, see README "Delivery guarantees".)
    wait_for(lambda: len(ledger_view.rows(db, message_id, "sent")) >= len(fast), what="fast deliveries sent")
    stack.stop_workers(["deliver"], kill=True)
    sent_before_kill = len(ledger_view.rows(db, message_id, "sent"))
    assert sent_before_kill < len(tokens), "the kill landed after the whole batch; nothing was tested"
    stack.start_workers(["deliver"])

    def all_sent():
        detail = api.get(f"/push/message/{message_id}/detail").json()["responseObject"]["result"]
        return detail["apns"]["sent"] + detail["fcm"]["sent"] == len(tokens)

    try:
        wait_for(all_sent, timeout=120, what="every delivery sent after restart")
    except AssertionError:
        states = Counter((d["token"].startswith(("de1a", "delay")), d["state"], d.get("reason")) for d in ledger_view.rows(db, message_id))
        raise AssertionError(f"not all sent: {sorted(states.items())}") from None
    apns_counts, fcm_counts = apns_sim.all_counts()["delivered"], fcm_sim.all_counts()["delivered"]
    for i, token in enumerate(tokens):
        assert (apns_counts if i % 2 else fcm_counts).get(token) == 1, token


def test_a_send_repeated_after_a_crash_reaches_the_device_again_but_shows_once(api, new_app, stack, apns_sim, fcm_sim):
    """The one at-least-once window: the provider took a send, the worker died before writing its outcome.

    The crash is made exactly: after a delivery, its documents are put back as a
    SIGKILL at that instant leaves them (claimed by a dead run, lease over, no
    outcome) and the chunk is delivered again, as RabbitMQ redelivers the
    unacknowledged message. The provider gets the notification twice; the device
    shows it once, because both sends carry the same display id.
    """
    app_id = new_app()
    user = f"r-{uuid.uuid4().hex[:8]}"
    tokens = {"apns": apns_token(), "fcm": fcm_token()}
    for platform, token in tokens.items():
        register(api, app_id, token, platform, user)
    body = {"title": "once on screen", "body": "even when sent twice"}
    answer = api.ok("/push/message/send", {"appId": app_id, "message": {"userId": user, "body": body}})
    message_id = answer["responseObject"]["messageId"]
    sims = {"apns": apns_sim, "fcm": fcm_sim}
    for platform, token in tokens.items():
        wait_for(lambda p=platform, t=token: sims[p].delivered(t) == 1, what=f"{platform} delivered")
    db = ledger_view.database(stack)
    wait_for(lambda: len(ledger_view.rows(db, message_id, "sent")) == 2, what="outcomes recorded")

    # Each chunk as a SIGKILL right after the provider's 200 leaves it: held by a dead run, no outcome recorded.
    chunks = db["ledger"]
    assert chunks.update_many({"m": message_id}, {"$set": {"c": "a-run-killed-after-the-providers-200", "hb": 7, "s": "p", "o": True}}).matched_count == 2
    settings = load(queue_prefix=stack.queue_prefix)
    publisher = Publisher(make_broker(settings, set_global=False), settings)
    entry = {"user_id": user, "activation_id": None, "personal": False, "silent": False, "high_priority": True, "body": body}
    for platform in tokens:
        # The redelivered message: the run finds the chunk held, waits one lease of a still heartbeat, takes it over.
        publisher.publish(DELIVER_ACTOR_BY_PROVIDER[platform],
                          chunk_message(message_id, app_id, platform, 0, {"0": entry}, [0], first_attempt_at=time.time()))

    for platform, token in tokens.items():
        wait_for(lambda p=platform, t=token: sims[p].delivered(t) == 2, what=f"{platform} sent again")
        assert sims[platform].counts(token)["shown"] == 1, f"{platform}: the repeat showed as a second notification"
    wait_for(lambda: len(ledger_view.rows(db, message_id, "sent")) == 2, what="outcomes recorded again")
    expected = display_id(message_id, 0)
    apns_sent, fcm_sent = apns_sim.received(tokens["apns"]), fcm_sim.received(tokens["fcm"])
    assert [r["headers"].get("apns-collapse-id") for r in apns_sent] == [expected, expected]
    assert [r["body"]["message"]["android"]["notification"]["tag"] for r in fcm_sent] == [expected, expected]


def test_broker_down_answers_503_and_loses_nothing_acknowledged(new_app, stack):
    app_id = new_app()
    settings = load()
    amqp_port = int(settings.amqp_url.rsplit(":", 1)[1].split("/")[0])
    proxy = TcpProxy(("127.0.0.1", amqp_port))
    proxy_port = proxy.start()
    url = stack.start_api(
        name="api-behind-proxy",
        port=free_port(),
        env={"PUSH_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{proxy_port}/%2F"},
    )
    try:
        acknowledged, refused = [], []

        def create(token: str) -> None:
            answer = requests.post(
                url + "/push/device/create",
                json={"requestObject": {"appId": app_id, "token": token, "platform": "apns", "userId": "u-broker"}},
                timeout=60,
            )
            if answer.status_code == 200:
                acknowledged.append(token)
            else:
                assert answer.status_code == 503, answer.text
                body = answer.json()
                assert body["status"] == "ERROR" and body["responseObject"]["code"] == "ERROR_SERVICE_UNAVAILABLE"
                assert answer.headers["Retry-After"]
                refused.append(token)

        for _ in range(5):
            create(apns_token())
        proxy.cut()
        for _ in range(5):
            create(apns_token())
        # Each API process reuses one live check for PUSH_HEALTH_CHECK_CACHE_SECONDS (2 s): DOWN within that.
        def status_when_down() -> dict | None:
            answer = requests.get(url + "/push/service/status", timeout=30)
            return answer.json()["responseObject"] if answer.status_code == 503 else None

        assert waiting.wait_for(status_when_down, timeout=10, what="status 503")["rabbitmq"] == "DOWN"
        proxy.restore()
        for _ in range(5):
            create(apns_token())

        assert len(refused) >= 5 and len(acknowledged) >= 5
        stored = devices(stack)
        for token in acknowledged:
            assert stored.find_one({"_id": f"{app_id}:{token}", "deleted": False}), token
    finally:
        proxy.cut()
        stack.stop("api-behind-proxy")
