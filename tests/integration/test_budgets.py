"""Provider budgets shared by every worker (issue 15, shared/budgets.py) on a real stack.

The stack of this module delivers in chunks of four, so a batch's chunks are
spread over both deliver worker processes: one budget holds them together.
"""
from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from devstack.credentials import SimulatorControls, provision_app
from tests import waiting
from tests.integration.conftest import TEST_SETTINGS, Api, Simulator, fcm_token, register
from tests.stacks import running_stack

CHUNK_SIZE = 4


@pytest.fixture(scope="module")
def budget_stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("budgets"), "budgets", {**TEST_SETTINGS, "PUSH_DELIVERY_CHUNK_SIZE": str(CHUNK_SIZE)}) as stack:
        yield stack


@pytest.fixture(scope="module")
def api(budget_stack) -> Api:
    return Api(budget_stack.api_url)


@pytest.fixture(scope="module")
def fcm(budget_stack) -> Simulator:
    return Simulator(f"http://127.0.0.1:{budget_stack.ports.fcm_control}")


def make_app(stack) -> str:
    app_id = f"budget-{uuid.uuid4().hex[:8]}"
    provision_app(stack.api_url, app_id, SimulatorControls.of(stack.ports), hms=False)
    return app_id


def send_to_fcm_devices(api: Api, app_id: str, count: int) -> list[str]:
    tokens, users = [fcm_token() for _ in range(count)], [f"u-{uuid.uuid4().hex[:8]}" for _ in range(count)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: register(api, app_id, tokens[i], "android", users[i]), range(count)))
    api.ok("/push/message/batch/send", {"appId": app_id, "mode": "ASYNCHRONOUS",
                                         "batch": [{"userId": u, "body": {"title": "budget"}} for u in users]})
    return tokens


def first_receipts(fcm: Simulator, tokens: list[str]) -> list[float]:
    return sorted(min(r["at"] for r in fcm.received(t) if r["status"] == 200) for t in tokens)


def test_two_worker_processes_share_one_budget(api, budget_stack, fcm):
    app_id = make_app(budget_stack)
    api.ok("/admin/app/budget", {"appId": app_id, "platform": "fcm", "perMinute": 600})  # 10 per second
    waiting.wait_for(lambda: api.ok("/admin/app/budget/detail", {"appId": app_id})["responseObject"][1]["configuredPerMinute"] == 600,
                     timeout=30, what="the budget stored")
    tokens = send_to_fcm_devices(api, app_id, 40)  # ten chunks of four, taken by both deliver processes
    waiting.wait_for(lambda: all(fcm.delivered(t) == 1 for t in tokens), timeout=60, what="every device reached")
    at = first_receipts(fcm, tokens)
    # 40 at 10/s for the whole app: ~3.9 s. Each process on its own budget (2 x 10/s) would take ~1.9 s, none ~0.1 s.
    assert at[-1] - at[0] >= 3.0, at[-1] - at[0]
    assert max(fcm.delivered(t) for t in tokens) == 1


def test_a_quota_below_the_budget_is_learnt_from_429s_by_every_worker(api, budget_stack, fcm):
    app_id = make_app(budget_stack)  # no setting: FCM's default 600,000 per minute, far above this quota
    requests.post(fcm.base_url + "/settings", json={"quota_per_second": 20}, timeout=10).raise_for_status()
    try:
        before = requests.get(fcm.base_url + "/stats", timeout=10).json()["throttled_total"]
        tokens = send_to_fcm_devices(api, app_id, 200)
        waiting.wait_for(lambda: all(fcm.delivered(t) == 1 for t in tokens), timeout=90, what="every device reached")
        throttled = requests.get(fcm.base_url + "/stats", timeout=10).json()["throttled_total"] - before
    finally:
        requests.post(fcm.base_url + "/settings", json={"quota_per_second": None}, timeout=10).raise_for_status()
    # The first burst meets the quota (up to 180 refused); after it every worker keeps the learnt rate and waits the
    # Retry-After. Each delivery retrying on its own after each 1 s Retry-After would be refused ~900 times.
    assert 0 < throttled < 400, throttled
    detail = {b["platform"]: b for b in api.ok("/admin/app/budget/detail", {"appId": app_id})["responseObject"]}["fcm"]
    assert detail["throttled"] >= 1 and detail["ratePerMinute"] < 600_000


def test_budget_settings_are_checked_and_answered(api, budget_stack):
    app_id = make_app(budget_stack)
    bad = api.post("/admin/app/budget", {"appId": app_id, "platform": "mms", "perMinute": 10})
    assert bad.status_code == 400 and "requestObject.platform" in bad.text
    bad = api.post("/admin/app/budget", {"appId": app_id, "platform": "fcm", "perMinute": 0})
    assert bad.status_code == 400 and "requestObject.perMinute" in bad.text
    bad = api.post("/admin/app/budget", {"appId": "no-such-app", "platform": "fcm", "perMinute": 10})
    assert bad.status_code == 400 and "requestObject.appId" in bad.text
    detail = {b["platform"]: b for b in api.ok("/admin/app/budget/detail", {"appId": app_id})["responseObject"]}
    assert detail["fcm"]["configuredPerMinute"] == 600_000 and detail["apns"]["configuredPerMinute"] is None
    api.ok("/admin/app/budget", {"appId": app_id, "platform": "apns", "perMinute": 1200})
    waiting.wait_for(lambda: requests.get(api.base_url + "/admin/app/budget/detail", params={"appId": app_id}, timeout=10)
                     .json()["responseObject"][0]["configuredPerMinute"] == 1200, timeout=30, what="the APNs budget stored")
    api.ok("/admin/app/budget", {"appId": app_id, "platform": "apns"})  # back to the default: none
    waiting.wait_for(lambda: api.ok("/admin/app/budget/detail", {"appId": app_id})["responseObject"][0]["configuredPerMinute"] is None,
                     timeout=30, what="the APNs budget removed")


def test_a_long_budget_wait_is_parked_in_mongodb_and_released_when_due(api, budget_stack, fcm):
    import pymongo

    db = pymongo.MongoClient(budget_stack.mongo_uri)["push"]
    app_id = make_app(budget_stack)
    api.ok("/admin/app/budget", {"appId": app_id, "platform": "fcm", "perMinute": 3})  # one every 20 s
    waiting.wait_for(lambda: api.ok("/admin/app/budget/detail", {"appId": app_id})["responseObject"][1]["configuredPerMinute"] == 3,
                     timeout=30, what="the budget stored")
    tokens = send_to_fcm_devices(api, app_id, 2)  # one chunk: the first is sent, the second must wait ~20 s
    # Parked (no worker thread, nothing unacknowledged in RabbitMQ), recorded as waiting for the budget.
    parked = waiting.wait_for(lambda: db["scheduled"].find_one({"app_id": app_id, "parked": "throttled"}), timeout=30,
                              what="the chunk parked")
    assert parked["send_at"] - time.time() > 10
    assert sum(fcm.delivered(t) for t in tokens) == 1
    waiting.wait_for(lambda: all(fcm.delivered(t) == 1 for t in tokens), timeout=60, what="the parked delivery released")
    at = first_receipts(fcm, tokens)
    assert at[1] - at[0] >= 15, at
    assert db["scheduled"].find_one({"app_id": app_id}) is None
