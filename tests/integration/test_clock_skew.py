"""Writes keep the order the API acknowledged them in, whatever the hosts' clocks say (real clock skew, libfaketime).

Two more APIs run with their clocks 120 s behind and 120 s ahead, and two more
core worker groups (persist, expand) on the same queues with the same skews,
all under Debian's libfaketime (``apt-get install faketime``). Before writes
were ordered by the database's counter (shared/write_order.py) they were
ordered by the API host's clock: a delete or a re-registration answered 200 by
the API 120 s behind was silently dropped, and the deleted device kept
receiving.
"""
from __future__ import annotations

import glob
import time
import uuid
from datetime import datetime
from pathlib import Path

import pymongo
import pytest
import requests

from devstack.stack import ROOT, free_port
from shared import db as mongo
from shared.broker import make_broker
from shared.commands import APPLY_WRITE, Publisher, command
from shared.settings import load
from shared.wc_push import client_key
from shared.write_order import WriteClock
from tests import waiting
from tests.integration.conftest import Api, apns_token, register

#: How far the skewed hosts' clocks are off.
SKEW_SECONDS = 120
#: libfaketime for multi-threaded programs (Debian's ``faketime`` package).
FAKETIME_LIBRARIES = glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1")
#: Suffixes of the skewed processes, and their clock offsets.
SKEWS = {"behind": f"-{SKEW_SECONDS}s", "ahead": f"+{SKEW_SECONDS}s"}
#: The ``sitecustomize`` of the skewed processes: a time.sleep libfaketime does not break (see its docstring).
FAKETIME_SITE = Path(__file__).resolve().parent / "faketime"


def faketime_env(offset: str) -> dict:
    assert FAKETIME_LIBRARIES, "libfaketime is missing: apt-get install faketime (README set-up)"
    # Only the wall clock is skewed; monotonic time stays real, so timeouts and heartbeats do not jump.
    return {"LD_PRELOAD": FAKETIME_LIBRARIES[0], "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "PYTHONPATH": f"{FAKETIME_SITE}:{ROOT}"}


def targets(api: Api, app_id: str, user: str) -> int:
    """How many devices a SYNCHRONOUS send to ``user`` reached."""
    answer = api.ok("/push/message/send", {"appId": app_id, "message": {"userId": user, "body": {"title": "t"}}})
    return answer["responseObject"]["result"]["apns"]["total"]


# --- rolling upgrade: commands queued by an older API carry received_at only -------------------------
# (first in this module: the API whose clock is ahead moves the counter 120 s ahead, and a command of an
# older API received after that loses to every newer write for those 120 s, as README "Security" says)

@pytest.fixture(scope="module")
def publisher(stack) -> Publisher:
    settings = load(queue_prefix=stack.queue_prefix)
    return Publisher(make_broker(settings, set_global=False), settings)


def applied(database, command_id: str) -> dict:
    return waiting.wait_for(lambda: database[mongo.COMMANDS].find_one({"_id": command_id}), timeout=30, what=f"{command_id} applied")


def test_a_command_queued_by_an_older_api_is_ordered_by_its_receive_time(api, new_app, stack, publisher):
    database = pymongo.MongoClient(stack.mongo_uri)["push"]
    app_id, token, user = new_app(), apns_token(), f"old-api-{uuid.uuid4().hex[:6]}"
    old_register = command("device.register", app_id=app_id, token=token, platform="apns", environment=None, user_id=user,
                           activation_ids=[])
    assert "order" not in old_register
    publisher.publish(APPLY_WRITE, old_register)
    applied(database, old_register["id"])
    assert targets(api, app_id, user) == 1
    # A delete through the new API, after: its order is above the old command's receive time.
    api.ok("/push/device/delete", {"appId": app_id, "token": token})
    assert targets(api, app_id, user) == 0
    # An older API's registration received later still lands, as it did before the upgrade.
    late_register = command("device.register", app_id=app_id, token=token, platform="apns", environment=None, user_id=user,
                            activation_ids=[])
    publisher.publish(APPLY_WRITE, late_register)
    applied(database, late_register["id"])
    assert targets(api, app_id, user) == 1


# --- skewed APIs and workers -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def skewed(stack) -> dict[str, Api]:
    """The skewed APIs by name (``behind``, ``ahead``), their worker groups running beside the stack's own."""
    apis = {}
    try:
        for name, offset in SKEWS.items():
            env = faketime_env(offset)
            apis[name] = Api(stack.start_api(name=f"api-{name}", port=free_port(), env=env))
            stack.start_workers(("core",), suffix=f"-{name}", env={**env, "PUSH_WORKER_METRICS_PORT": "0"})
        yield apis
    finally:
        for name in SKEWS:
            stack.stop(f"api-{name}")
            stack.stop_workers(("core",), suffix=f"-{name}")


def host_time(api: Api) -> datetime:
    return datetime.fromisoformat(api.get("/push/service/status").json()["responseObject"]["timestamp"])


def test_the_skewed_apis_really_run_on_skewed_clocks(api, skewed):
    now = host_time(api)
    assert abs((now - host_time(skewed["behind"])).total_seconds() - SKEW_SECONDS) < 10
    assert abs((host_time(skewed["ahead"]) - now).total_seconds() - SKEW_SECONDS) < 10


@pytest.mark.parametrize(("first", "then"), [("normal", "behind"), ("ahead", "normal"), ("ahead", "behind")])
def test_a_delete_answered_after_a_registration_wins_whatever_the_clocks(api, skewed, new_app, apns_sim, first, then):
    apis = {"normal": api, **skewed}
    app_id, token, user = new_app(), apns_token(), f"u-{uuid.uuid4().hex[:6]}"
    register(apis[first], app_id, token, "ios", user)
    assert targets(api, app_id, user) == 1
    apis[then].ok("/push/device/delete", {"appId": app_id, "token": token})
    assert targets(api, app_id, user) == 0
    assert apns_sim.delivered(token) == 1  # the send before the delete only


@pytest.mark.parametrize(("first", "then"), [("normal", "behind"), ("ahead", "normal")])
def test_a_re_registration_answered_after_another_wins_whatever_the_clocks(api, skewed, new_app, first, then):
    apis = {"normal": api, **skewed}
    app_id, token = new_app(), apns_token()
    old_user, new_user = f"old-{uuid.uuid4().hex[:6]}", f"new-{uuid.uuid4().hex[:6]}"
    register(apis[first], app_id, token, "ios", old_user)
    register(apis[then], app_id, token, "ios", new_user)
    assert targets(api, app_id, new_user) == 1
    assert targets(api, app_id, old_user) == 0


def test_read_all_marks_the_messages_posted_before_it_across_skewed_hosts(api, skewed, new_app):
    app_id, user = new_app(), f"inbox-{uuid.uuid4().hex[:6]}"
    post = {"userId": user, "type": "text", "subject": "subject 1", "summary": "summary 1", "body": "body of it", "applications": [app_id]}
    skewed["ahead"].ok("/inbox/messages", post)
    api.ok("/inbox/messages/read-all", {"userId": user, "appId": app_id})
    counts = skewed["behind"].get("/inbox/messages/count", userId=user, appId=app_id).json()["responseObject"]
    assert counts == {"countUnread": 0, "countAll": 1}
    skewed["behind"].ok("/inbox/messages", {**post, "subject": "subject 2"})
    counts = api.get("/inbox/messages/count", userId=user, appId=app_id).json()["responseObject"]
    assert counts == {"countUnread": 1, "countAll": 2}


def test_a_walletconnect_unregister_answered_after_the_registration_wins(api, skewed, stack):
    client_id = f"c-{uuid.uuid4().hex[:8]}"
    registered = requests.post(f"{stack.api_url}/clients", json={"client_id": client_id, "type": "noop", "token": "t" + client_id}, timeout=60)
    assert registered.status_code == 200, registered.text
    gone = requests.delete(f"{skewed['behind'].base_url}/clients/{client_id}", timeout=60)
    assert gone.status_code == 200, gone.text
    client = pymongo.MongoClient(stack.mongo_uri)["push"][mongo.WCP_CLIENTS].find_one({"_id": client_key("default", client_id)})
    assert client["deleted"] in (True, 1), client  # nx-27017 answers a $set boolean as 1


# --- the clock itself, on the stack's database ----------------------------------------------------

@pytest.fixture
def scratch(stack):
    client = pymongo.MongoClient(stack.mongo_uri)
    name = f"clock-{uuid.uuid4().hex[:8]}"
    yield client[name]
    client.drop_database(name)


def test_orders_increase_in_claim_order_across_clocks_120_s_apart(scratch):
    behind = WriteClock(scratch, clock=lambda: time.time_ns() - SKEW_SECONDS * 10**9)
    ahead = WriteClock(scratch, clock=lambda: time.time_ns() + SKEW_SECONDS * 10**9)
    normal = WriteClock(scratch)
    claimed = [clock.next() for clock in (normal, behind, ahead, behind, normal, behind, ahead, normal)]
    assert claimed == sorted(claimed) and len(set(claimed)) == len(claimed)
    assert claimed[0] >= time.time_ns() - 10**9  # close to nanoseconds since the epoch: comparable with older received_at
