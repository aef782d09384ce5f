"""PowerAuth sends end to end: API → RabbitMQ → workers → MongoDB → simulators."""
from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pymongo

from tests.integration.conftest import apns_token, fcm_token, register


def user() -> str:
    return f"user-{uuid.uuid4().hex[:10]}"


def send(api, app_id: str, message: dict, mode: str = "SYNCHRONOUS") -> dict:
    return api.ok("/push/message/send", {"appId": app_id, "mode": mode, "message": message})["responseObject"]


def test_send_right_after_create_reaches_both_devices_with_mapped_payloads(api, new_app, apns_sim, fcm_sim):
    app_id = new_app()
    alice = user()
    ios, android = apns_token(), fcm_token()
    register(api, app_id, ios, "ios", alice, "act-1")
    register(api, app_id, android, "android", alice, "act-2")

    result = send(
        api,
        app_id,
        {"userId": alice, "body": {"title": "Balance update", "body": "Now $745", "badge": 3, "extras": {"k": "v"}}},
    )["result"]

    assert result["apns"] == {"sent": 1, "pending": 0, "failed": 0, "total": 1}
    assert result["fcm"] == {"sent": 1, "pending": 0, "failed": 0, "total": 1}
    assert result["ios"] == result["apns"] and result["android"] == result["fcm"]
    assert apns_sim.delivered(ios) == 1 and fcm_sim.delivered(android) == 1
    apns_request = apns_sim.received(ios)[-1]
    assert apns_request["body"]["aps"]["alert"] == {"title": "Balance update", "body": "Now $745"}
    assert apns_request["body"]["aps"]["badge"] == 3 and apns_request["body"]["k"] == "v"
    fcm_request = fcm_sim.received(android)[-1]
    assert fcm_request["body"]["message"]["android"]["notification"]["title"] == "Balance update"
    assert fcm_request["body"]["message"]["data"] == {"k": "v"}


def test_synchronous_batch_of_1000_reaches_each_device_exactly_once(api, new_app, apns_sim, fcm_sim):
    app_id = new_app()
    users = [user() for _ in range(1000)]
    tokens = [apns_token() if i % 2 == 0 else fcm_token() for i in range(1000)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: register(api, app_id, tokens[i], "apns" if i % 2 == 0 else "fcm", users[i]), range(1000)))

    answer = api.ok(
        "/push/message/batch/send",
        {"appId": app_id, "batch": [{"userId": u, "body": {"title": "hi", "body": u}} for u in users]},
    )
    result = answer["responseObject"]["result"]

    assert result["apns"]["sent"] + result["fcm"]["sent"] == 1000
    assert result["apns"]["failed"] + result["fcm"]["failed"] == 0
    apns_counts, fcm_counts = apns_sim.all_counts()["delivered"], fcm_sim.all_counts()["delivered"]
    for i, token in enumerate(tokens):
        assert (apns_counts if i % 2 == 0 else fcm_counts).get(token) == 1, token


def test_dead_tokens_deactivate_their_devices(api, new_app, stack):
    app_id = new_app()
    bob = user()
    dead_ios, dead_android, alive = apns_token("dead"), fcm_token("dead"), apns_token()
    register(api, app_id, dead_ios, "apns", bob)
    register(api, app_id, dead_android, "fcm", bob)
    register(api, app_id, alive, "apns", bob)

    first = send(api, app_id, {"userId": bob, "body": {"title": "x"}})["result"]
    assert first["apns"] == {"sent": 1, "pending": 0, "failed": 1, "total": 2}
    assert first["fcm"] == {"sent": 0, "pending": 0, "failed": 1, "total": 1}

    devices = pymongo.MongoClient(stack.mongo_uri)["push"]["devices"]
    assert devices.find_one({"_id": f"{app_id}:{dead_ios}"})["active"] in (False, 0)  # nx-27017 reads a $set boolean back as 0
    assert devices.find_one({"_id": f"{app_id}:{dead_android}"})["active"] in (False, 0)  # nx-27017 reads a $set boolean back as 0
    assert devices.find_one({"_id": f"{app_id}:{alive}"})["active"] in (True, 1)

    second = send(api, app_id, {"userId": bob, "body": {"title": "y"}})["result"]
    assert second["apns"]["total"] == 1 and second["fcm"]["total"] == 0


def test_tokens_that_draw_503_are_retried_until_sent(api, new_app, apns_sim, fcm_sim):
    app_id = new_app()
    carol = user()
    ios, android = apns_token("f5032"), fcm_token("unavailable2-")
    register(api, app_id, ios, "apns", carol)
    register(api, app_id, android, "fcm", carol)

    result = send(api, app_id, {"userId": carol, "body": {"title": "retry me"}})["result"]

    assert result["apns"]["sent"] == 1 and result["fcm"]["sent"] == 1
    assert apns_sim.counts(ios) == {"delivered": 1, "attempts": 3, "shown": 1}
    assert fcm_sim.counts(android) == {"delivered": 1, "attempts": 3, "shown": 1}


def test_personal_messages_reach_only_active_activations(api, new_app, apns_sim):
    app_id = new_app()
    dave = user()
    active_token, blocked_token = apns_token(), apns_token()
    register(api, app_id, active_token, "apns", dave, "act-active")
    register(api, app_id, blocked_token, "apns", dave, "act-blocked")
    api.ok("/push/device/status/update", raw={"activationId": "act-blocked", "activationStatus": "BLOCKED"})

    personal = send(api, app_id, {"userId": dave, "attributes": {"personal": True}, "body": {"title": "p"}})["result"]
    assert personal["apns"]["total"] == 1
    assert apns_sim.delivered(active_token) == 1 and apns_sim.delivered(blocked_token) == 0

    broadcast = send(api, app_id, {"userId": dave, "body": {"title": "all"}})["result"]
    assert broadcast["apns"]["total"] == 2


def test_activation_id_targets_one_device_and_a_new_token_replaces_the_old(api, new_app, apns_sim):
    app_id = new_app()
    erin = user()
    old, new, other = apns_token(), apns_token(), apns_token()
    register(api, app_id, old, "apns", erin, "act-e1")
    register(api, app_id, other, "apns", erin, "act-e2")
    register(api, app_id, new, "apns", erin, "act-e1")

    result = send(api, app_id, {"userId": erin, "activationId": "act-e1", "body": {"title": "one"}})["result"]

    assert result["apns"]["total"] == 1
    assert apns_sim.delivered(new) == 1 and apns_sim.delivered(old) == 0 and apns_sim.delivered(other) == 0


def test_asynchronous_send_answers_at_once_and_reports_later(api, new_app):
    app_id = new_app()
    frank = user()
    register(api, app_id, apns_token(), "apns", frank)

    answer = send(api, app_id, {"userId": frank, "body": {"title": "later"}}, mode="ASYNCHRONOUS")
    assert answer["result"] is None

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        reply = api.get(f"/push/message/{answer['messageId']}/detail")
        # 404 until a worker stored the message (the expansion writes it): a loaded machine's first poll can come first.
        assert reply.status_code in (200, 404), reply.text
        detail = reply.json()["responseObject"]
        if reply.status_code == 200 and detail["expanded"] and detail["result"]["apns"]["sent"] == 1:
            break
        time.sleep(0.1)
    assert detail["result"]["apns"] == {"sent": 1, "pending": 0, "failed": 0, "total": 1}


def test_expired_valid_until_is_recorded_not_sent(api, new_app, apns_sim):
    app_id = new_app()
    gina = user()
    token = apns_token()
    register(api, app_id, token, "apns", gina)

    result = send(api, app_id, {"userId": gina, "body": {"title": "old", "validUntil": "2001-01-01T00:00:00Z"}})["result"]

    assert result["apns"] == {"sent": 0, "pending": 0, "failed": 1, "total": 1}
    assert apns_sim.counts(token)["attempts"] == 0


def test_a_retried_send_with_the_same_idempotency_key_is_one_message_delivered_once(api, new_app, apns_sim, fcm_sim):
    # A client that lost its answer (a 503 after RabbitMQ took the message, a timeout) sends again: the
    # fault test of a RabbitMQ outage once delivered a whole batch twice this way.
    app_id = new_app()
    dora, ios, android = user(), apns_token(), fcm_token()
    register(api, app_id, ios, "ios", dora)
    register(api, app_id, android, "android", dora)
    url = api.base_url + "/push/message/batch/send"
    body = {"requestObject": {"appId": app_id, "batch": [{"userId": dora, "body": {"title": "once"}}]}}
    answers = [api.session.post(url, json=body, headers={"Idempotency-Key": "order-42"}, timeout=60) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    ids = {a.json()["responseObject"]["messageId"] for a in answers}
    assert len(ids) == 1
    time.sleep(1.0)  # the second copy is expanded and its chunks claimed (and skipped) by now
    assert apns_sim.delivered(ios) == 1 and fcm_sim.delivered(android) == 1
    # Another key, or none, is another message.
    assert api.session.post(url, json=body, headers={"Idempotency-Key": "order-43"}, timeout=60).json()["responseObject"]["messageId"] not in ids
    bad = api.session.post(url, json=body, headers={"Idempotency-Key": "two words"}, timeout=60)
    assert bad.status_code == 400 and "Idempotency-Key" in bad.json()["responseObject"]["message"]
