"""Sender control end to end (issue 18): validate-only sends, failure lists."""
from __future__ import annotations

import time
import uuid

import pymongo

from tests.integration.conftest import apns_token, fcm_token, register


def user() -> str:
    return f"user-{uuid.uuid4().hex[:10]}"


def messages_of(stack, app_id: str) -> list:
    return list(pymongo.MongoClient(stack.mongo_uri)["push"]["messages"].find({"app_id": app_id}))


def test_validate_only_reports_payloads_per_platform_and_sends_nothing(api, new_app, stack, apns_sim, fcm_sim):
    app_id = new_app()
    alice = user()
    ios, android = apns_token(), fcm_token()
    register(api, app_id, ios, "apns", alice)
    register(api, app_id, android, "fcm", alice)

    answer = api.ok("/push/message/send", {"appId": app_id, "validateOnly": True, "message": {
        "userId": alice, "body": {"title": "Balance", "body": "Now $745", "badge": 3, "extras": {"k": "v"}}}})["responseObject"]

    assert answer["validateOnly"] is True and "messageId" not in answer
    report = answer["validation"]
    assert report["valid"] is True and report["devices"] == 2
    apns, fcm = report["platforms"]["apns"], report["platforms"]["fcm"]
    assert apns["devices"] == 1 and apns["ready"] and apns["problem"] is None
    assert apns["payloads"][0]["payload"]["aps"]["alert"] == {"title": "Balance", "body": "Now $745"}
    assert apns["payloads"][0]["payload"]["k"] == "v" and apns["payloads"][0]["headers"]["apns-priority"] == "10"
    assert fcm["payloads"][0]["message"]["android"]["notification"]["title"] == "Balance"
    assert fcm["payloads"][0]["message"]["data"] == {"k": "v"} and fcm["payloads"][0]["bytes"] > 0
    assert report["platforms"]["hms"]["devices"] == 0
    time.sleep(1.0)  # a send would have reached the simulators by now
    assert apns_sim.delivered(ios) == 0 and fcm_sim.delivered(android) == 0
    assert messages_of(stack, app_id) == []


def test_validate_only_batch_names_a_platform_without_credentials(api, new_app, stack, fcm_sim):
    app_id = new_app()
    users = [user() for _ in range(3)]
    tokens = [fcm_token() for _ in users]
    for u, token in zip(users, tokens, strict=True):
        register(api, app_id, token, "fcm", u)
    answer = api.post(f"/admin/app/fcm?appId={app_id}", method="DELETE")
    assert answer.status_code == 200, answer.text

    report = api.ok("/push/message/batch/send", {"appId": app_id, "validateOnly": True, "mode": "ASYNCHRONOUS", "batch": [
        {"userId": u, "body": {"title": "hi", "body": u}} for u in [*users, user()]]})["responseObject"]["validation"]

    fcm = report["platforms"]["fcm"]
    assert report["valid"] is False and fcm["ready"] is False and "not configured" in fcm["problem"]
    assert fcm["devices"] == 3 and fcm["entries"] == 3 and [p["entry"] for p in fcm["payloads"]] == [0, 1, 2]
    assert fcm["payloads"][1]["message"]["android"]["notification"]["body"] == users[1]
    assert all(fcm_sim.delivered(t) == 0 for t in tokens) and messages_of(stack, app_id) == []


def test_validate_only_payload_too_large_is_a_400_naming_the_field(api, new_app):
    app_id = new_app()
    answer = api.post("/push/message/send", {"appId": app_id, "validateOnly": True,
                                             "message": {"userId": user(), "body": {"extras": {"k": "x" * 4090}}}})
    assert answer.status_code == 400
    assert "requestObject.message.body" in answer.json()["responseObject"]["message"]


def test_validate_only_campaign_counts_each_device_once_and_sends_nothing(api, new_app, stack, apns_sim):
    app_id = new_app()
    users = [user() for _ in range(4)]
    shared, own = apns_token(), apns_token()
    register(api, app_id, shared, "apns", users[3])
    register(api, app_id, own, "apns", users[0])
    campaign = api.ok("/push/campaign/create", {"appId": app_id, "message": {"title": "Sale"}})["responseObject"]["id"]
    api.ok(f"/push/campaign/{campaign}/user/add", users)

    live = api.ok(f"/push/campaign/send/live/{campaign}", {"validateOnly": True})["responseObject"]["validation"]
    test = api.ok(f"/push/campaign/send/test/{campaign}", {"userId": users[0], "validateOnly": True})["responseObject"]["validation"]

    assert live["valid"] and live["platforms"]["apns"]["devices"] == 2
    assert live["platforms"]["apns"]["payloads"][0]["payload"]["aps"]["alert"] == {"title": "Sale"}
    assert test["platforms"]["apns"]["devices"] == 1
    time.sleep(1.0)
    assert apns_sim.delivered(shared) == 0 and apns_sim.delivered(own) == 0
    assert messages_of(stack, app_id) == []
    detail = api.get(f"/push/campaign/{campaign}/detail").json()["responseObject"]
    assert detail["sent"] is False and detail["state"] == "created"
