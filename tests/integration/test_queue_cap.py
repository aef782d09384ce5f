"""The cap per app on queued work (issue 15): a send beyond it is a 429 with Retry-After, nothing enqueued."""
from __future__ import annotations

import time
import uuid

import pymongo

from shared import ledger
from shared.backlog import BACKLOG_CACHE_SECONDS
from shared.budgets import BUDGET_REASON
from tests.integration.conftest import TEST_SETTINGS, fcm_token, register
from tests.waiting import wait_for

#: A little more than an API process reuses its count of waiting deliveries (``queued_cache_seconds``).
CACHE_WAIT = float(TEST_SETTINGS.get("PUSH_QUEUED_CACHE_SECONDS", 2.0)) + 0.3


def waiting_chunks(db, app_id: str, deliveries: int) -> str:
    """Open ledger chunks of ``deliveries`` pending deliveries for ``app_id`` (of a message no worker is sent)."""
    message_id = f"backlog-{uuid.uuid4().hex[:8]}"
    pending = [ledger.Delivery(ledger.delivery_id(message_id, 0, f"t{i}"), f"d{i}", f"t{i}", 0, None) for i in range(deliveries)]
    ledger.write_chunks(db, message_id, app_id, "fcm", pending, chunk_size=4)
    return message_id


def test_a_send_beyond_the_apps_cap_is_a_429_and_nothing_is_enqueued(api, new_app, stack, fcm_sim):
    db = pymongo.MongoClient(stack.mongo_uri)["push"]
    app_id, other = new_app(), new_app()
    alice, token = f"user-{uuid.uuid4().hex[:8]}", fcm_token()
    register(api, app_id, token, "fcm", alice)
    register(api, other, fcm_token(), "fcm", alice)
    api.ok("/admin/app/limits", {"appId": app_id, "maxQueuedDeliveries": 10})
    api.ok("/admin/app/limits", {"appId": other, "maxQueuedDeliveries": 10})
    backlog = waiting_chunks(db, app_id, 10)
    time.sleep(CACHE_WAIT)

    send = {"appId": app_id, "mode": "ASYNCHRONOUS", "message": {"userId": alice, "body": {"title": "hi"}}}
    refused = api.post("/push/message/send", send)
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    body = refused.json()
    assert body["status"] == "ERROR" and body["responseObject"]["code"] == "ERROR_TOO_MANY_QUEUED"
    assert "10 deliveries waiting" in body["responseObject"]["message"]
    batch = api.post("/push/message/batch/send", {"appId": app_id, "mode": "ASYNCHRONOUS",
                                                  "batch": [{"userId": alice, "body": {"title": "b"}}]})
    assert batch.status_code == 429, batch.text
    # Another app under its cap sends; the refused app's sends left nothing behind.
    assert api.ok("/push/message/send", {**send, "appId": other})["responseObject"]["messageId"]
    time.sleep(1.0)
    assert list(db["messages"].find({"app_id": app_id})) == [] and fcm_sim.delivered(token) == 0

    # The backlog drains below the cap: the app sends again.
    db["ledger"].update_many({"m": backlog}, {"$set": {"o": False, "s": "ssss"}})
    time.sleep(CACHE_WAIT)
    assert api.ok("/push/message/send", send)["responseObject"]["messageId"]
    wait_for(lambda: fcm_sim.delivered(token) == 1, timeout=30, what="the send after the backlog drained")


def test_a_cap_of_zero_is_no_cap_and_the_limits_route_names_a_bad_field(api, new_app, stack):
    db = pymongo.MongoClient(stack.mongo_uri)["push"]
    app_id = new_app()
    api.ok("/admin/app/limits", {"appId": app_id, "maxQueuedDeliveries": 0})
    waiting_chunks(db, app_id, 8)
    time.sleep(CACHE_WAIT)
    send = {"appId": app_id, "mode": "ASYNCHRONOUS", "message": {"userId": "nobody", "body": {"title": "hi"}}}
    assert api.ok("/push/message/send", send)["responseObject"]["messageId"]
    bad = api.post("/admin/app/limits", {"appId": app_id, "maxQueuedDeliveries": -1})
    assert bad.status_code == 400 and "requestObject.maxQueuedDeliveries" in bad.json()["responseObject"]["message"]


def test_the_backlog_per_app_lane_and_provider_is_in_admin_queues_and_metrics(api, new_app, stack):
    db = pymongo.MongoClient(stack.mongo_uri)["push"]
    app_id = new_app()
    backlog = waiting_chunks(db, app_id, 10)  # chunks of 4: 4 + 4 + 2
    db["ledger"].update_one({"_id": ledger.chunk_id(backlog, "fcm", 0)}, {"$set": {"c": "a-worker"}})
    # One of the two retries waits for the app's provider budget; the last chunk is parked until due (an hour away).
    db["ledger"].update_one({"_id": ledger.chunk_id(backlog, "fcm", 1)}, {"$set": {"s": "srrp", "r.1": BUDGET_REASON, "r.2": "503"}})
    db["scheduled"].insert_one({"_id": f"park:{backlog}", "parked": "throttled", "chunk": ledger.chunk_id(backlog, "fcm", 2),
                                "send_at": time.time() + 3600, "actor": "deliver_fcm", "payload": {}, "lease_until": 0.0, "claim": None})
    db["ledger"].update_many({"m": backlog}, {"$inc": {"at": -30.0}})
    time.sleep(BACKLOG_CACHE_SECONDS + 0.3)

    rows = [r for r in api.get("/admin/queues").json()["backlog"] if r["app"] == app_id]
    assert rows == [{"app": app_id, "lane": "bulk", "provider": "fcm", "waiting": 5, "in_flight": 4, "retry": 2,
                     "oldest_waiting_seconds": rows[0]["oldest_waiting_seconds"], "throttled": 1, "parked": 2, "paced": 0}]
    assert 30 <= rows[0]["oldest_waiting_seconds"] < 120
    text = api.get("/metrics").text
    assert f'push_app_deliveries_waiting{{app="{app_id}",lane="bulk",provider="fcm"}} 5.0' in text
    assert f'push_app_deliveries_in_flight{{app="{app_id}",lane="bulk",provider="fcm"}} 4.0' in text
    assert f'push_app_deliveries_throttled{{app="{app_id}",lane="bulk",provider="fcm"}} 1.0' in text
    assert f'push_app_deliveries_parked{{app="{app_id}",lane="bulk",provider="fcm"}} 2.0' in text
    db["scheduled"].delete_one({"_id": f"park:{backlog}"})
