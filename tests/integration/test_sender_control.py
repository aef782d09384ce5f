"""Sender control end to end (issue 18): validate-only sends, failure lists."""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pymongo

from shared.scheduling import RELEASE_LEASE_SECONDS
from tests.integration.conftest import apns_token, fcm_token, register, take_receiver_port


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


def wait_done(api, path: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        result = api.get(path).json()["responseObject"]
        counts = result.get("result") or result.get("progress")
        pending = sum(counts[p]["pending"] for p in ("apns", "fcm")) if "result" in result else counts["pending"]
        expanded = result.get("expanded", True) if "result" in result else counts["expanded"]
        if expanded and pending == 0:
            return result
        assert time.monotonic() < deadline, result
        time.sleep(0.3)


def test_failures_page_through_400_dead_tokens_with_last_8_characters(api, new_app):
    app_id = new_app()
    users = [user() for _ in range(401)]
    tokens = [apns_token("dead") if i % 2 else fcm_token("dead") for i in range(400)] + [apns_token()]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: register(api, app_id, tokens[i], "apns" if i % 2 or i == 400 else "fcm", users[i]), range(401)))
    message_id = api.ok("/push/message/batch/send", {"appId": app_id, "mode": "ASYNCHRONOUS", "batch": [
        {"userId": u, "body": {"title": "hi"}} for u in users]})["responseObject"]["messageId"]
    wait_done(api, f"/push/message/{message_id}/detail")

    seen = []
    for page in range(3):
        answer = api.get(f"/push/message/{message_id}/failures", page=page, size=150).json()["responseObject"]
        assert answer["total"] == 400 and answer["page"] == page and answer["size"] == 150
        assert len(answer["failures"]) == (150 if page < 2 else 100)
        seen += answer["failures"]
    assert api.get(f"/push/message/{message_id}/failures", page=3, size=150).json()["responseObject"]["failures"] == []

    assert sorted(f["token"] for f in seen) == sorted(t[-8:] for t in tokens[:400])  # each once, never the whole token
    assert {f["state"] for f in seen} == {"dead_token"} and not any(f["tokenComplete"] for f in seen)
    assert {f["platform"] for f in seen} == {"apns", "fcm"}
    assert {f["reason"] for f in seen if f["platform"] == "apns"} == {"Unregistered"}
    assert all(f["reason"] for f in seen) and all(f["timestamp"] for f in seen)


def test_campaign_failures_list_its_dead_tokens(api, new_app):
    app_id = new_app()
    users = [user() for _ in range(3)]
    tokens = [apns_token("dead"), fcm_token("dead"), apns_token()]
    for i, u in enumerate(users):
        register(api, app_id, tokens[i], "fcm" if i == 1 else "apns", u)
    campaign = api.ok("/push/campaign/create", {"appId": app_id, "message": {"title": "Sale"}})["responseObject"]["id"]
    api.ok(f"/push/campaign/{campaign}/user/add", users)
    api.ok(f"/push/campaign/send/live/{campaign}")
    wait_done(api, f"/push/campaign/{campaign}/detail")

    answer = api.get(f"/push/campaign/{campaign}/failures").json()["responseObject"]
    assert answer["campaignId"] == campaign and answer["total"] == 2
    assert sorted(f["token"] for f in answer["failures"]) == sorted(t[-8:] for t in tokens[:2])
    assert api.get("/push/campaign/nope/failures").status_code == 400
    missing = api.get("/push/message/nope/failures")
    assert missing.status_code == 404 and missing.json()["status"] == "ERROR"
    assert api.get(f"/push/campaign/{campaign}/failures", size=0).status_code == 400


def at(seconds_from_now: float) -> tuple[float, str]:
    due = time.time() + seconds_from_now
    return due, datetime.fromtimestamp(due, timezone(timedelta(hours=2))).isoformat()  # an offset other than UTC


def first_delivery_time(sim, token: str, *, not_before: float, timeout: float = 30) -> float:
    """When the simulator first had ``token`` (polled every 20 ms); asserts nothing arrived before ``not_before``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        now = time.time()
        if sim.delivered(token):
            assert now >= not_before, f"delivered {not_before - now:.2f} s early"
            return now
        time.sleep(0.02)
    raise AssertionError(f"{token} never delivered")


def test_a_send_scheduled_5_s_ahead_arrives_within_1_s_after_its_time(api, new_app, stack, apns_sim):
    app_id = new_app()
    alice, token = user(), apns_token()
    register(api, app_id, token, "apns", alice)
    due, send_at = at(5)

    answer = api.ok("/push/message/send", {"appId": app_id, "sendAt": send_at,
                                           "message": {"userId": alice, "body": {"title": "later"}}})["responseObject"]
    assert answer["mode"] == "ASYNCHRONOUS"
    detail = api.get(f"/push/message/{answer['messageId']}/detail").json()["responseObject"]
    assert detail["scheduled"] is True and abs(datetime.fromisoformat(detail["sendAt"]).timestamp() - due) < 0.01

    arrived = first_delivery_time(apns_sim, token, not_before=due)
    assert arrived - due <= 1.0, arrived - due
    wait_done(api, f"/push/message/{answer['messageId']}/detail")
    assert api.get(f"/push/message/{answer['messageId']}/detail").json()["responseObject"]["scheduled"] is False
    assert apns_sim.delivered(token) == 1


def test_a_schedule_claimed_by_a_killed_releaser_is_taken_over_after_the_lease(api, new_app, stack, apns_sim):
    """A releaser SIGKILLed at the due time, right after its claim, is made exactly (as test_guarantees makes its crash):
    the schedule is claimed at the due time by a run that never publishes."""
    app_id = new_app()
    alice, token = user(), apns_token()
    register(api, app_id, token, "apns", alice)
    due, send_at = at(4)
    message_id = api.ok("/push/message/send", {"appId": app_id, "sendAt": send_at, "mode": "ASYNCHRONOUS",
                                               "message": {"userId": alice, "body": {"title": "later"}}})["responseObject"]["messageId"]
    scheduled = pymongo.MongoClient(stack.mongo_uri)["push"]["scheduled"]
    claimed = scheduled.update_one({"_id": message_id}, {"$set": {"claim": "a-releaser-killed-at-the-due-time",
                                                                 "lease_until": due + RELEASE_LEASE_SECONDS}})
    assert claimed.modified_count == 1

    arrived = first_delivery_time(apns_sim, token, not_before=due + RELEASE_LEASE_SECONDS)
    assert arrived - due <= 1.0 + RELEASE_LEASE_SECONDS, arrived - due
    time.sleep(1.0)
    assert apns_sim.delivered(token) == 1 and scheduled.find_one({"_id": message_id}) is None


def test_a_releasing_worker_sigkilled_at_the_due_time_loses_and_repeats_nothing(api, new_app, stack, apns_sim):
    """A real SIGKILL of the worker process whose releaser claimed the due schedule (its pid is in the claim).

    Dramatiq stops the rest of that process's group; spare groups on the same queues keep consuming,
    and their releasers take the schedule over once the lease runs out (or the expansion's idempotence
    makes a repeat of an already published one nothing)."""
    stack.start_workers(suffix="-spare")
    killed_group = None
    try:
        app_id = new_app()
        alice, token = user(), apns_token()
        register(api, app_id, token, "apns", alice)
        time.sleep(4.0)  # the spare groups are up
        due, send_at = at(4)
        message_id = api.ok("/push/message/send", {"appId": app_id, "sendAt": send_at, "mode": "ASYNCHRONOUS",
                                                   "message": {"userId": alice, "body": {"title": "kill"}}})["responseObject"]["messageId"]
        scheduled = pymongo.MongoClient(stack.mongo_uri)["push"]["scheduled"]
        while time.time() < due - 0.3:
            time.sleep(0.05)
        claim = None
        while claim is None and time.time() < due + 2.0:
            doc = scheduled.find_one({"_id": message_id}, {"claim": 1}) or {}
            claim = doc.get("claim")
        assert claim, "no releaser claimed the schedule at its time"
        pid = int(claim.split("-", 1)[0])
        killed_group = next(name for name, process in stack.processes.items() if process.pid == os.getpgid(pid))
        os.kill(pid, signal.SIGKILL)
        killed_at = time.time()

        arrived = first_delivery_time(apns_sim, token, not_before=due)
        assert arrived - due <= 1.0 + RELEASE_LEASE_SECONDS, (arrived - due, killed_at - due)
        time.sleep(1.5)
        assert apns_sim.delivered(token) == 1 and scheduled.find_one({"_id": message_id}) is None
    finally:
        if killed_group is not None:  # stopped by Dramatiq once one of its processes died: start it again
            stack.stop(killed_group, kill=True)
            if not killed_group.endswith("-spare"):
                stack.start_workers([killed_group.removeprefix("workers-")])
        stack.stop_workers(suffix="-spare")


def test_scheduled_campaign_is_shown_scheduled_and_sent_at_its_time(api, new_app, apns_sim):
    app_id = new_app()
    users, tokens = [user(), user()], [apns_token(), apns_token()]
    for u, token in zip(users, tokens, strict=True):
        register(api, app_id, token, "apns", u)
    campaign = api.ok("/push/campaign/create", {"appId": app_id, "message": {"title": "Sale"}})["responseObject"]["id"]
    api.ok(f"/push/campaign/{campaign}/user/add", users)
    due, send_at = at(4)
    api.ok(f"/push/campaign/send/live/{campaign}", {"sendAt": send_at})
    detail = api.get(f"/push/campaign/{campaign}/detail").json()["responseObject"]
    assert detail["scheduled"] is True and detail["sent"] is False

    arrived = min(first_delivery_time(apns_sim, t, not_before=due) for t in tokens)
    assert arrived - due <= 1.5
    assert wait_done(api, f"/push/campaign/{campaign}/detail")["scheduled"] is False


def test_schedule_refusals_name_send_at(api, new_app):
    app_id = new_app()
    _, send_at = at(60)
    for options, body in (({"mode": "SYNCHRONOUS"}, {"title": "x"}),
                          ({}, {"title": "x", "validUntil": datetime.fromtimestamp(time.time() + 30, UTC).isoformat()})):
        answer = api.post("/push/message/send", {"appId": app_id, "sendAt": send_at, **options, "message": {"userId": user(), "body": body}})
        assert answer.status_code == 400, answer.text
        assert "requestObject.sendAt" in answer.json()["responseObject"]["message"]
    bad = api.post("/push/message/batch/send", {"appId": app_id, "sendAt": "tomorrow", "batch": [{"userId": "u", "body": {}}]})
    assert bad.status_code == 400 and "sendAt" in bad.json()["responseObject"]["message"]


class Receiver:
    """A webhook receiver on 127.0.0.1: refuses its first ``refuse`` POSTs with a 500, records every POST."""

    def __init__(self, refuse: int = 1):
        self.posts: list[tuple[int, dict, bytes]] = []  # (status answered, headers, body)
        self.refuse = refuse
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 500 if len(receiver.posts) < receiver.refuse else 200
                receiver.posts.append((status, dict(self.headers), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", take_receiver_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/push-events"

    def accepted_events(self) -> list[dict]:
        return [e for status, _, body in list(self.posts) if status == 200 for e in json.loads(body)["events"]]


def valid_signature(secret: str, headers: dict, body: bytes) -> bool:
    parts = dict(item.split("=", 1) for item in headers["X-Push-Signature"].split(","))
    expected = hmac.new(secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["sha256"]) and abs(time.time() - int(parts["t"])) < 300


def test_the_outcome_webhook_receives_every_dead_token_once_by_id_signed(api, new_app):
    receiver = Receiver(refuse=1)  # the first POST fails: its events come again
    secret = "s3cret-" + uuid.uuid4().hex
    app_id, quiet_app = new_app(), new_app()
    try:
        refused = api.post("/admin/app/webhook", {"appId": app_id, "url": "http://169.254.169.254/", "secret": secret,
                                                  "events": ["dead_token"]})
        assert refused.status_code == 400 and "requestObject.url" in refused.json()["responseObject"]["message"]
        api.ok("/admin/app/webhook", {"appId": app_id, "url": receiver.url, "secret": secret, "events": ["dead_token", "failed"]})
        users = [user() for _ in range(31)]
        tokens = [apns_token("dead") if i % 2 else fcm_token("dead") for i in range(30)] + [apns_token()]
        for i, u in enumerate(users):
            register(api, app_id, tokens[i], "apns" if i % 2 or i == 30 else "fcm", u)
        register(api, quiet_app, apns_token("dead"), "apns", users[0])  # an app without a feed: nobody is told
        for target in (app_id, quiet_app):
            api.ok("/push/message/batch/send", {"appId": target, "mode": "ASYNCHRONOUS", "batch": [
                {"userId": u, "body": {"title": "hi"}} for u in users]})

        deadline = time.monotonic() + 60
        while len({e["id"] for e in receiver.accepted_events()}) < 30:
            assert time.monotonic() < deadline, receiver.posts
            time.sleep(0.2)
        time.sleep(1.5)  # nothing more comes

        accepted = receiver.accepted_events()
        assert sorted(e["token"] for e in accepted) == sorted(tokens[:30])  # every dead token, once, of this app only
        assert len({e["id"] for e in accepted}) == len(accepted) == 30
        assert {e["type"] for e in accepted} == {"dead_token"} and {e["appId"] for e in accepted} == {app_id}
        assert receiver.posts[0][0] == 500 and len(receiver.posts) >= 2
        refused_ids = {e["id"] for e in json.loads(receiver.posts[0][2])["events"]}
        assert refused_ids <= {e["id"] for e in accepted}  # the refused batch was sent again
        assert all(valid_signature(secret, headers, body) for _, headers, body in receiver.posts)
        assert not valid_signature("another-secret-123", receiver.posts[0][1], receiver.posts[0][2])
    finally:
        receiver.server.shutdown()


def test_message_done_is_told_once_per_message_when_every_delivery_is_final(api, new_app, stack):
    """``message_done``: once per message (id from the message id), after its last delivery; only the events the feed asks for."""
    receiver = Receiver(refuse=0)
    secret = "s3cret-" + uuid.uuid4().hex
    app_id = new_app()
    try:
        api.ok("/admin/app/webhook", {"appId": app_id, "url": receiver.url, "secret": secret, "events": ["message_done"]})
        users = [user() for _ in range(12)]
        for i, u in enumerate(users):  # 4 dead APNs tokens, 4 good APNs, 4 good FCM: several chunks over two providers
            token = apns_token("dead") if i < 4 else apns_token() if i < 8 else fcm_token()
            register(api, app_id, token, "fcm" if i >= 8 else "apns", u)
        message_id = api.ok("/push/message/batch/send", {"appId": app_id, "mode": "ASYNCHRONOUS", "batch": [
            {"userId": u, "body": {"title": "done?"}} for u in users]})["responseObject"]["messageId"]
        empty_id = api.ok("/push/message/batch/send", {"appId": app_id, "mode": "ASYNCHRONOUS", "batch": [
            {"userId": user(), "body": {"title": "nobody"}}]})["responseObject"]["messageId"]

        deadline = time.monotonic() + 60
        while len({e["messageId"] for e in receiver.accepted_events()}) < 2:
            assert time.monotonic() < deadline, receiver.posts
            time.sleep(0.2)
        time.sleep(2.0)  # nothing more comes

        accepted = receiver.accepted_events()
        assert {e["type"] for e in accepted} == {"message_done"}  # dead tokens were not asked for
        assert sorted(e["id"] for e in accepted) == sorted([f"message_done:{message_id}", f"message_done:{empty_id}"])
        done = next(e for e in accepted if e["messageId"] == message_id)
        assert done["total"] == 12 and done["states"] == {"sent": 8, "dead_token": 4} and done["appId"] == app_id
        assert next(e for e in accepted if e["messageId"] == empty_id)["total"] == 0
        database = pymongo.MongoClient(stack.mongo_uri)["push"]
        assert database["ledger"].count_documents({"m": message_id, "o": {"$in": [True, 1]}}) == 0
        assert database["outbox"].count_documents({"app_id": app_id, "type": "dead_token"}) == 0  # not even written
        assert database["messages"].find_one({"_id": message_id})["done_told"] in (True, 1)  # marked, then told: the sweep is done
        stored = database["apps"].find_one({"_id": app_id})["webhook"]
        assert "secret" not in stored and "sealed" in stored and secret not in json.dumps(stored)  # sealed at rest
        assert secret not in api.get("/admin/app/list").text
        for collection, field in (("scheduled", "send_at"), ("outbox", "next_at")):  # the due look-ups' indexes
            assert [(field, 1)] in [list(map(tuple, i["key"])) for i in database[collection].index_information().values()], collection
        assert all(valid_signature(secret, headers, body) for _, headers, body in receiver.posts)
    finally:
        receiver.server.shutdown()


def test_a_message_done_a_killed_worker_did_not_write_is_told_once_by_the_sweep(api, new_app, stack):
    """The state a worker SIGKILLed between recording a message's last outcome and writing its ``message_done`` leaves:
    every delivery final, the message marked by its expansion, no event. The workers' sweep tells it, once."""
    receiver = Receiver(refuse=0)
    secret = "s3cret-" + uuid.uuid4().hex
    app_id = new_app()
    database = pymongo.MongoClient(stack.mongo_uri)["push"]
    try:
        api.ok("/admin/app/webhook", {"appId": app_id, "url": receiver.url, "secret": secret, "events": ["dead_token"]})
        users = [user() for _ in range(3)]
        for u in users:
            register(api, app_id, apns_token(), "apns", u)
        message_id = api.ok("/push/message/batch/send", {"appId": app_id, "mode": "ASYNCHRONOUS", "batch": [
            {"userId": u, "body": {"title": "told?"}} for u in users]})["responseObject"]["messageId"]
        deadline = time.monotonic() + 60
        while not (database["messages"].find_one({"_id": message_id, "expanded": True})
                   and database["ledger"].count_documents({"m": message_id, "o": {"$in": [True, 1]}}) == 0):
            assert time.monotonic() < deadline, "the message was not delivered"
            time.sleep(0.2)
        # What the kill leaves: the feed asks for message_done, the expansion marked the message, no event written.
        api.ok("/admin/app/webhook", {"appId": app_id, "url": receiver.url, "secret": secret, "events": ["message_done"]})
        database["messages"].update_one({"_id": message_id}, {"$set": {"done_told": False, "done_check_at": 0.0}})
        assert database["outbox"].count_documents({"_id": f"message_done:{message_id}"}) == 0

        deadline = time.monotonic() + 30
        while not receiver.accepted_events():
            assert time.monotonic() < deadline, "the sweep never told the message done"
            time.sleep(0.2)
        time.sleep(outbox_sweep_seconds() * 2 + 1)  # further sweeps add nothing
        accepted = receiver.accepted_events()
        assert [e["id"] for e in accepted] == [f"message_done:{message_id}"]
        assert accepted[0]["total"] == 3 and accepted[0]["states"] == {"sent": 3}
        assert database["messages"].find_one({"_id": message_id})["done_told"] in (True, 1)
        assert all(valid_signature(secret, headers, body) for _, headers, body in receiver.posts)
    finally:
        receiver.server.shutdown()


def outbox_sweep_seconds() -> float:
    from shared.outbox import DONE_SWEEP_SECONDS

    return DONE_SWEEP_SECONDS


def test_a_cancelled_scheduled_send_never_reaches_the_simulator(api, new_app, stack, apns_sim):
    """POST /push/message/{id}/cancel before the due time: the releaser drops the schedule unsent."""
    app_id = new_app()
    alice, token = user(), apns_token()
    register(api, app_id, token, "apns", alice)
    due, send_at = at(3)
    message_id = api.ok("/push/message/send", {"appId": app_id, "sendAt": send_at, "mode": "ASYNCHRONOUS",
                                               "message": {"userId": alice, "body": {"title": "never"}}})["responseObject"]["messageId"]
    database = pymongo.MongoClient(stack.mongo_uri)["push"]
    assert api.ok(f"/push/message/{message_id}/cancel")["responseObject"]["state"] == "cancelled"

    while time.time() < due + 2.0:
        assert apns_sim.delivered(token) == 0
        time.sleep(0.1)
    assert database["scheduled"].find_one({"_id": message_id}) is None  # released as cancelled: dropped
