"""HMS (Huawei Push Kit) delivery end to end on the real stack: API, RabbitMQ, workers, nx-27017 and the HMS simulator."""
from __future__ import annotations

import time
import uuid

import orjson
import pymongo
import pytest

from shared import db as mongo
from shared.broker import make_broker
from shared.commands import EXPAND_SEND, Publisher, command
from shared.settings import load
from tests import ledger_view, waiting
from tests.integration.conftest import apns_token, hms_token, register
from tests.integration.test_ops import scrape, value

SENT_ONE = {"sent": 1, "pending": 0, "failed": 0, "total": 1}
FAILED_ONE = {"sent": 0, "pending": 0, "failed": 1, "total": 1}


@pytest.fixture(scope="module")
def database(stack):
    client = pymongo.MongoClient(stack.mongo_uri, tz_aware=True)
    yield client["push"]
    client.close()


def user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def send(api, app_id: str, user_id: str, body: dict, **message_options) -> dict:
    return api.ok("/push/message/send", {"appId": app_id, "message": {"userId": user_id, "body": body, **message_options}})["responseObject"]


def test_a_send_reaches_hms_devices_and_the_result_reports_hms_and_huawei(api, new_app, hms_sim, apns_sim):
    app_id, ann = new_app(), user()
    phone, tablet, ios = hms_token(), hms_token(), apns_token()
    register(api, app_id, phone, "hms", ann)
    register(api, app_id, tablet, "huawei", ann)
    register(api, app_id, ios, "apns", ann)

    answer = send(api, app_id, ann, {"title": "Hi", "body": "there", "extras": {"k": "v", "gone": None}, "validUntil": "2099-01-01T00:00:00Z"})

    assert answer["result"]["hms"] == answer["result"]["huawei"] == {"sent": 2, "pending": 0, "failed": 0, "total": 2}
    assert answer["result"]["apns"] == SENT_ONE
    assert hms_sim.counts(phone) == {"delivered": 1, "attempts": 1, "shown": 1}
    assert hms_sim.delivered(tablet) == 1 and apns_sim.delivered(ios) == 1
    message = hms_sim.received(phone)[-1]["body"]["message"]
    assert message["token"] == [phone]  # one token per request: per-device outcomes
    android = message["android"]
    assert android["urgency"] == "HIGH" and android["ttl"] == "1296000s"  # HMS's 15 days at most
    assert android["notification"]["title"] == "Hi" and android["notification"]["tag"] == f"{answer['messageId']}.0"
    assert orjson.loads(message["data"]) == {"k": "v"}


def test_a_dead_hms_token_deactivates_the_registration(api, new_app, hms_sim, database):
    app_id, bob = new_app(), user()
    dead = hms_token("dead")
    register(api, app_id, dead, "hms", bob)

    answer = send(api, app_id, bob, {"title": "gone"})

    assert answer["result"]["hms"] == FAILED_ONE
    device = database[mongo.DEVICES].find_one({"_id": f"{app_id}:{dead}"})
    assert device["active"] in (False, 0)  # nx-27017 answers a $set boolean as 0
    assert hms_sim.counts(dead) == {"delivered": 0, "attempts": 1, "shown": 0}
    (delivery,) = ledger_view.rows(database, answer["messageId"])
    assert delivery["state"] == "dead_token" and delivery["reason"].startswith("80300007")


def test_flow_control_and_internal_errors_are_retried_until_delivered(api, new_app, hms_sim):
    app_id, cleo = new_app(), user()
    throttled, failing = hms_token("flow2-"), hms_token("internal1-")
    register(api, app_id, throttled, "hms", cleo)
    register(api, app_id, failing, "hms", cleo)

    answer = send(api, app_id, cleo, {"title": "retry me"})

    assert answer["result"]["hms"] == {"sent": 2, "pending": 0, "failed": 0, "total": 2}
    assert hms_sim.counts(throttled) == {"delivered": 1, "attempts": 3, "shown": 1}
    assert hms_sim.counts(failing) == {"delivered": 1, "attempts": 2, "shown": 1}


def test_a_silent_send_is_a_data_message(api, new_app, hms_sim):
    app_id, dana = new_app(), user()
    token = hms_token()
    register(api, app_id, token, "hms", dana)

    answer = send(api, app_id, dana, {"extras": {"n": 1}}, attributes={"silent": True}, priority="NORMAL")

    assert answer["result"]["hms"] == SENT_ONE
    message = hms_sim.received(token)[-1]["body"]["message"]
    assert "notification" not in message["android"] and orjson.loads(message["data"]) == {"n": 1}
    assert message["android"]["urgency"] == "NORMAL"


def test_a_message_hms_refuses_is_failed_without_retry_and_the_device_stays(api, new_app, hms_sim, database, stack):
    """A body past the API's check (published straight to the expand queue): HMS answers 80300008, a bad message."""
    app_id, eve = new_app(), user()
    token = hms_token()
    register(api, app_id, token, "hms", eve)
    settings = load(queue_prefix=stack.queue_prefix)
    publisher = Publisher(make_broker(settings, set_global=False), settings)
    entry = {"user_id": eve, "activation_id": None, "personal": False, "silent": False, "high_priority": True,
             "body": {"title": "big", "extras": {"blob": "x" * 5000}}}
    cmd = command("send", app_id=app_id, mode="ASYNCHRONOUS", entries=[entry])
    publisher.publish(EXPAND_SEND, cmd)

    delivery = waiting.wait_for(
        lambda: next(iter(ledger_view.rows(database, cmd["id"], ("failed", "sent", "dead_token"))), None),
        timeout=60, what="the oversized HMS delivery's outcome")

    assert delivery["state"] == "failed" and delivery["reason"].startswith("80300008")
    assert hms_sim.counts(token) == {"delivered": 0, "attempts": 1, "shown": 0}
    assert database[mongo.DEVICES].find_one({"_id": f"{app_id}:{token}"})["active"] in (True, 1)


def test_refused_hms_credentials_fail_the_send_and_suspend_hms_for_the_app(api, new_app, hms_sim, database):
    app_id, finn = new_app(), user()
    token = hms_token()
    register(api, app_id, token, "hms", finn)
    # Credentials the simulator's token endpoint does not know (never registered there).
    api.ok("/admin/app/hms", {"appId": app_id, "projectId": "unknown-project", "clientId": "999", "clientSecret": "nope"})

    answer = send(api, app_id, finn, {"title": "no"})

    assert answer["result"]["hms"] == FAILED_ONE
    assert hms_sim.counts(token)["attempts"] == 0
    app = database[mongo.APPS].find_one({"_id": app_id})
    assert "token endpoint refused" in app["suspended"]["hms"]


def test_the_api_refuses_a_body_over_the_hms_limit_naming_the_field(api, new_app):
    app_id = new_app()
    answer = api.post("/push/message/send", {"appId": app_id, "message": {"userId": user(), "body": {"title": "t", "extras": {"x": "y" * 4100}}}})
    assert answer.status_code == 400
    assert "requestObject.message.body" in answer.text


def test_a_campaign_reaches_hms_devices(api, new_app, hms_sim):
    app_id, gus = new_app(), user()
    token = hms_token()
    register(api, app_id, token, "hms", gus)
    campaign_id = api.ok("/push/campaign/create", {"appId": app_id, "message": {"title": "Campaign"}})["responseObject"]["id"]
    api.ok(f"/push/campaign/{campaign_id}/user/add", [gus], method="PUT")

    api.ok(f"/push/campaign/send/live/{campaign_id}")

    done = waiting.wait_for(lambda: (d := api.get(f"/push/campaign/{campaign_id}/detail").json()["responseObject"])["sent"] and d,
                            timeout=90, what="campaign sent")
    assert done["progress"]["hms"] == {"total": 1, "sent": 1, "failed": 0, "pending": 0}
    assert done["progress"]["total"] == 1
    deadline = time.monotonic() + 10
    while hms_sim.delivered(token) != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert hms_sim.delivered(token) == 1


def test_hms_deliveries_are_counted_by_provider_in_the_worker_metrics(stack, api, new_app):
    app_id, hana = new_app(), user()
    register(api, app_id, hms_token(), "hms", hana)
    register(api, app_id, hms_token("dead"), "hms", hana)

    assert send(api, app_id, hana, {"title": "counted"})["result"]["hms"] == {"sent": 1, "pending": 0, "failed": 1, "total": 2}

    def counted():  # a SYNCHRONOUS send of one message takes the transactional lane: the tx workers count it
        families = scrape(stack.worker_metrics_url("tx"))
        return families if value(families, "push_dead_tokens_total", provider="hms", app=app_id) == 1 else None

    families = waiting.wait_for(counted, timeout=60, what="hms metrics", every=0.25)
    assert value(families, "push_deliveries_total", provider="hms", app=app_id, outcome="sent") == 1
    assert value(families, "push_deliveries_total", provider="hms", app=app_id, outcome="dead_token") == 1
    assert value(families, "push_delivery_latency_seconds_count", provider="hms") >= 2
