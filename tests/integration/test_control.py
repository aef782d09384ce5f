"""Control of running bulk work, end to end: a paused campaign sends nothing until resumed; a cancelled send sends nothing more."""
from __future__ import annotations

import time
import uuid

import pymongo
import requests

from api.idempotency import HEADER, derived_id
from devstack import seed
from tests import ledger_view, waiting
from tests.integration.conftest import apns_token, fcm_token, register


def campaign_detail(api, campaign_id: str) -> dict:
    return api.get(f"/push/campaign/{campaign_id}/detail").json()["responseObject"]


def test_a_paused_campaign_sends_nothing_until_resumed(stack, api, new_app, apns_sim):
    db = pymongo.MongoClient(stack.mongo_uri)["push"]
    app_id = new_app()
    tag = uuid.uuid4().hex[:6]
    users = [f"pu-{tag}-{i:04d}" for i in range(300)]
    tokens = [apns_token() for _ in users]
    seed.seed_devices(db, app_id, users, tokens, ["apns"] * len(users))
    campaign_id = api.ok("/push/campaign/create", {"appId": app_id, "message": {"title": "Paused", "body": "b"}})["responseObject"]["id"]
    requests.put(f"{api.base_url}/push/campaign/{campaign_id}/user/add", json={"requestObject": users}, timeout=120).raise_for_status()

    paused = api.ok(f"/push/campaign/{campaign_id}/pause")["responseObject"]
    assert paused == {"id": campaign_id, "state": "paused"}
    assert api.ok(f"/push/campaign/{campaign_id}/pause")["responseObject"]["state"] == "paused"  # idempotent
    api.ok(f"/push/campaign/send/live/{campaign_id}")
    time.sleep(4)
    assert sum(apns_sim.delivered(t) for t in tokens[:20]) == 0
    assert campaign_detail(api, campaign_id)["state"] == "paused"

    assert api.ok(f"/push/campaign/{campaign_id}/resume")["responseObject"]["state"] == "running"
    done = waiting.wait_for(lambda: (d := campaign_detail(api, campaign_id))["sent"] and d, timeout=120, what="campaign sent")
    assert done["state"] == "sent" and done["progress"]["sent"] == len(users)
    assert all(apns_sim.delivered(t) == 1 for t in tokens[:20])


def test_a_cancelled_batch_sends_nothing_more_and_its_detail_says_so(stack, api, new_app, fcm_sim):
    app_id = new_app()
    tag = uuid.uuid4().hex[:6]
    quick, retried = fcm_token(), fcm_token("unavailable5-")
    register(api, app_id, quick, "fcm", f"q-{tag}")
    register(api, app_id, retried, "fcm", f"r-{tag}")
    message_id = api.ok("/push/message/batch/send", {"appId": app_id, "mode": "ASYNCHRONOUS", "batch": [
        {"userId": f"q-{tag}", "body": {"title": "one"}}, {"userId": f"r-{tag}", "body": {"title": "two"}}]})["responseObject"]["messageId"]
    waiting.wait_for(lambda: fcm_sim.delivered(quick) == 1 and fcm_sim.counts(retried)["attempts"] >= 1, timeout=60, what="first sends")

    assert api.ok(f"/push/message/{message_id}/cancel")["responseObject"] == {"id": message_id, "state": "cancelled"}
    assert api.ok(f"/push/message/{message_id}/cancel")["responseObject"]["state"] == "cancelled"  # idempotent
    database = ledger_view.database(stack)
    waiting.wait_for(lambda: ledger_view.rows(database, message_id, "cancelled"), timeout=60, what="the rest cancelled")
    attempts = fcm_sim.counts(retried)["attempts"]
    time.sleep(3)
    assert fcm_sim.delivered(retried) == 0 and fcm_sim.counts(retried)["attempts"] == attempts
    detail = api.get(f"/push/message/{message_id}/detail").json()["responseObject"]
    assert detail["state"] == "cancelled"
    assert detail["result"]["fcm"]["sent"] == 1 and detail["result"]["fcm"]["pending"] == 0  # what was sent stays recorded


def test_a_send_cancelled_before_it_is_expanded_sends_nothing(api, new_app, apns_sim):
    app_id = new_app()
    token, user = apns_token(), f"s-{uuid.uuid4().hex[:6]}"
    register(api, app_id, token, "apns", user)
    key = uuid.uuid4().hex
    message_id = derived_id(app_id, key)  # the id the send will have (a scheduler knows its message's id the same way)
    assert api.ok(f"/push/message/{message_id}/cancel")["responseObject"]["state"] == "cancelled"
    answer = api.session.post(f"{api.base_url}/push/message/send", headers={HEADER: key}, timeout=60, json={"requestObject": {
        "appId": app_id, "mode": "ASYNCHRONOUS", "message": {"userId": user, "body": {"title": "late"}}}})
    assert answer.status_code == 200 and answer.json()["responseObject"]["messageId"] == message_id
    detail = waiting.wait_for(lambda: (d := api.get(f"/push/message/{message_id}/detail").json()["responseObject"])["expanded"] and d,
                              timeout=60, what="expanded")
    assert detail["state"] == "cancelled" and detail["result"]["apns"]["total"] == 0
    time.sleep(1)
    assert apns_sim.delivered(token) == 0
