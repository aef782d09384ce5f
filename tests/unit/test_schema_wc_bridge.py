"""The WalletConnect v1 bridge's request schemas, through Flask's test client (no RabbitMQ, no MongoDB).

Every route declares its operation; bodies are validated by the schemas in the
bridge's error envelope (``{"message", "field"}``); a webhook's host must be
allowed, by the API and again by the webhook worker.
"""
from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from api import wc_bridge as api
from api.app import create_app
from shared import db as mongo
from shared.outbound import OutboundPolicy, OutboundSession
from shared.settings import load
from tests.unit.test_wc_bridge import assert_payload_answer
from workers import wc_bridge as workers

PAYLOAD = {"data": "5f2a", "hmac": "9c1e", "iv": "00ff"}
SESSION = "3f1e0d2c-0000-4000-8000-000000000001"
CALL = "3f1e0d2c-0000-4000-8000-000000000002"


class FakeServices:
    """What the bridge's handlers use of api.services.Services: one live session and call, writes recorded."""

    def __init__(self, settings):
        self.settings = settings
        self.outbound = OutboundPolicy.from_settings(settings)
        self.commands: list[dict] = []
        self.published: list[tuple[str, dict]] = []
        self.docs = {
            mongo.WC_SESSIONS: {SESSION: {"_id": SESSION, "deleted": False, "payload": None, "push": None}},
            mongo.WC_CALLS: {CALL: {"_id": CALL, "session_id": SESSION, "payload": PAYLOAD,
                                     "expires_at": datetime.now(UTC) + timedelta(hours=1)}},
        }

    def find_one(self, collection, query, projection=None):
        return self.docs.get(collection, {}).get(query["_id"])

    def write(self, command):
        self.commands.append(command)
        return {"_id": command["id"]}

    def publish(self, actor_name, payload):
        self.published.append((actor_name, payload))

    def guarded_read(self, read):
        return read()


@pytest.fixture(scope="module")
def app():
    return create_app(load({}, outbound_allowed_targets="127.0.0.1:9, LocalHost:9", outbound_allowed_only=True, wc_bridge_max_payload_bytes=16384))


@pytest.fixture
def client(app):
    fake = FakeServices(app.extensions["push"].settings)
    real = app.extensions["push"]
    app.extensions["push"] = fake
    yield app.test_client(), fake
    app.extensions["push"] = real


def error(answer, status: int) -> dict:
    assert answer.status_code == status, answer.get_data(as_text=True)
    assert answer.mimetype == "application/json"
    body = answer.get_json()
    assert set(body) <= {"message", "field"} and body["message"]
    return body


def test_every_bridge_route_declares_its_operation(app):
    rules = [rule for rule in app.url_map.iter_rules() if rule.endpoint.startswith("wc_bridge.")]
    assert len(rules) == 11
    for rule in rules:
        assert getattr(app.view_functions[rule.endpoint], "openapi", None) is not None, rule.rule


def test_answers_without_a_body_are_documented_with_their_content_type(app):
    from api import openapi

    paths = openapi.build(app, app.extensions["push"].settings)["paths"]
    assert set(paths["/session/{session_id}"]["get"]["responses"]["204"]["content"]) == {"text/plain"}
    assert set(paths["/session/{session_id}"]["put"]["responses"]["200"]["content"]) == {"text/plain"}
    assert set(paths["/call-status/{call_id}"]["get"]["responses"]["204"]["content"]) == {"text/plain"}
    put = paths["/session/{session_id}"]["put"]["requestBody"]["content"]["application/json"]["schema"]
    assert put["required"] == ["encryptionPayload"] and set(put["properties"]["push"]["required"]) == {"type", "token"}


LONG = "x" * 5000
DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"not json", "body"),
        (b"", "body"),
        (b"null", "body"),
        (b"[1, 2]", "body"),
        (DEEP.encode(), "body"),
        (b'{"encryptionPayload": ' + b"[" * 1000 + b"]" * 1000 + b"}", "body"),
        (b'{"encryptionPayload": "\\ud800"}', "body"),
        (b'{"encryptionPayload": {"data": NaN}}', "body"),
        (b"{}", "encryptionPayload"),
        (b'{"encryptionPayload": null}', "encryptionPayload"),
        (b'{"encryptionPayload": 7}', "encryptionPayload"),
        (b'{"encryptionPayload": ""}', "encryptionPayload"),
        (b'{"encryptionPayload": {}}', "encryptionPayload"),
        (b'{"encryptionPayload": {"data": 18446744073709551615}}', "encryptionPayload"),
        (b'{"encryptionPayload": {"a\\u0000b": "x"}}', "encryptionPayload"),
        (b'{"encryptionPayload": {"d": ' + b"[" * 40 + b"1" + b"]" * 40 + b"}}", "encryptionPayload"),
        (b'{"encryptionPayload": {"data": "x"}, "push": "fcm"}', "push"),
        (b'{"encryptionPayload": {"data": "x"}, "push": {"token": "t"}}', "push.type"),
        (b'{"encryptionPayload": {"data": "x"}, "push": {"type": "fcm"}}', "push.token"),
        (b'{"encryptionPayload": {"data": "x"}, "push": {"type": "", "token": "t"}}', "push.type"),
        (b'{"encryptionPayload": {"data": "x"}, "push": {"type": "fcm", "token": 5}}', "push.token"),
        (json.dumps({"encryptionPayload": "x", "push": {"type": "fcm", "token": LONG}}).encode(), "push.token"),
        (b'{"encryptionPayload": "x", "push": {"type": "fcm", "token": "t", "webhook": "file:///etc/passwd"}}', "push.webhook"),
        (b'{"encryptionPayload": "x", "push": {"type": "fcm", "token": "t", "webhook": "http://[::1"}}', "push.webhook"),
        (b'{"encryptionPayload": "x", "push": {"type": "fcm", "token": "t", "webhook": 3}}', "push.webhook"),
    ],
)
def test_a_bad_session_update_is_a_400_naming_the_field(client, raw, field):
    http, fake = client
    answer = http.put(f"/session/{SESSION}", data=raw, content_type="application/json")
    assert error(answer, 400).get("field") == field
    assert fake.commands == []


@pytest.mark.parametrize(
    "webhook", ["http://example.org/push", "https://127.0.0.2:9/push", "http://localhost.example.org/", "http://[::1]:9/"]
)
def test_a_webhook_to_a_host_not_allowed_is_a_400_naming_push_webhook(client, webhook):
    http, fake = client
    answer = http.put(f"/session/{SESSION}", json={"encryptionPayload": PAYLOAD, "push": {"type": "fcm", "token": "t", "webhook": webhook}})
    body = error(answer, 400)
    assert body["field"] == "push.webhook" and "not allowed" in body["message"]
    assert fake.commands == []


def test_a_session_update_stores_what_the_schema_cleaned(client):
    http, fake = client
    push = {"type": "fcm", "token": "tok", "webhook": "http://LOCALHOST:9/push", "extra": 1}
    answer = http.put(f"/session/{SESSION}", json={"encryptionPayload": PAYLOAD, "push": push, "other": True})
    assert answer.status_code == 200 and answer.mimetype == "text/plain" and answer.get_data() == b""
    [cmd] = fake.commands
    assert cmd["kind"] == "wc.session.update" and cmd["session_id"] == SESSION and cmd["payload"] == PAYLOAD
    assert cmd["push"] == {"type": "fcm", "token": "tok", "webhook": "http://LOCALHOST:9/push"}


def test_a_body_without_a_json_content_type_is_read_as_json_as_in_the_reference(client):
    http, fake = client
    answer = http.put(f"/session/{SESSION}", data=json.dumps({"encryptionPayload": "opaque"}), content_type="text/plain")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    answer = http.post(f"/session/{SESSION}/call/new", data=json.dumps({"encryptionPayload": PAYLOAD, "dappName": "Uniswap"}))
    assert answer.status_code == 200 and answer.get_json()["callId"]
    assert [c["payload"] for c in fake.commands] == ["opaque", PAYLOAD]
    assert fake.commands[1]["dapp_name"] == "Uniswap"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (f"/session/{SESSION}/call/new", {"dappName": "x"}, "encryptionPayload"),
        (f"/session/{SESSION}/call/new", {"encryptionPayload": PAYLOAD, "dappName": 5}, "dappName"),
        (f"/session/{SESSION}/call/new", {"encryptionPayload": PAYLOAD, "dappName": " "}, "dappName"),
        (f"/session/{SESSION}/call/new", {"encryptionPayload": PAYLOAD, "dappName": LONG}, "dappName"),
        (f"/call-status/{CALL}/new", {"payload": 1}, "encryptionPayload"),
        (f"/call-status/{CALL}/new", {"encryptionPayload": [1]}, "encryptionPayload"),
    ],
)
def test_bad_call_and_status_bodies_are_400s_naming_the_field(client, path, body, field):
    http, fake = client
    assert error(http.post(path, json=body), 400)["field"] == field
    assert fake.commands == []


def test_a_body_over_the_bridge_limit_is_a_413(client):
    http, fake = client
    answer = http.put(f"/session/{SESSION}", json={"encryptionPayload": {"data": "a" * 20000}})
    body = error(answer, 413)
    assert body["field"] == "body" and "16384" in body["message"]
    assert fake.commands == []


def test_unknown_ids_answer_in_the_bridge_envelope(client):
    http, _ = client
    assert error(http.put("/session/unknown", json={"encryptionPayload": PAYLOAD}), 404)["field"] == "sessionId"
    assert error(http.post("/call-status/%20/new", json={"encryptionPayload": PAYLOAD}), 404)["field"] == "callId"
    assert error(http.get(f"/session/other/call/{CALL}"), 404)["field"] == "callId"
    assert error(http.post(f"/session/{'x' * 1000}/call/new", json={"encryptionPayload": PAYLOAD}), 404)["field"] == "sessionId"
    deleted = http.delete("/session/unknown")
    assert deleted.status_code == 200 and deleted.mimetype == "text/plain"


def test_a_call_is_answered_with_its_payload(client):
    http, _ = client
    answer = http.get(f"/session/{SESSION}/call/{CALL}")
    assert answer.status_code == 200
    assert_payload_answer(answer.get_json(), PAYLOAD, ttl_seconds=3600)


def test_a_polls_204_has_the_documented_content_type():
    status, headers, _ = api.poll_answer(None)
    assert status == 204 and dict(headers)["Content-Type"] == "text/plain"


class FakePushes:
    """The ``wc_pushes`` collection as deliver_webhook uses it: every update recorded, the claim granted."""

    def __init__(self):
        self.updates = []

    def update_one(self, query, update, upsert=False):
        self.updates.append((query, update))

    def find_one(self, query, projection=None):
        return {"_id": query["_id"], "state": "sending", "claim": "claim-1", "lease_until": 0, "attempts": 0}


def test_the_worker_records_a_webhook_the_outbound_check_refuses_as_failed_without_retrying(monkeypatch):
    monkeypatch.setattr(workers, "new_id", lambda: "claim-1")
    pushes = FakePushes()
    settings = load({}, delivery_in_process_tries=3)
    session = OutboundSession(OutboundPolicy(allowed_only=True))  # refuses every target before any connection
    ctx = workers.WebhookContext(db={mongo.WC_PUSHES: pushes}, publisher=None, settings=settings, session=session)
    job = {"id": "p1", "url": "http://example.org/push", "body": {}, "call_id": "p1", "session_id": "s", "first_attempt_at": 0.0, "attempts": 0}

    assert workers.deliver_webhook(ctx, job) == workers.FAILED

    query, update = pushes.updates[-1]
    assert query == {"_id": "p1", "claim": "claim-1"}
    assert update["$set"]["state"] == workers.FAILED and update["$set"]["attempts"] == 0
    assert "not allowed" in update["$set"]["last_error"]


def test_the_worker_does_not_follow_a_redirect():
    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(307)
            self.send_header("Location", "http://127.0.0.2:9/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        session = OutboundSession(OutboundPolicy(allowed=frozenset({("127.0.0.1", port), ("127.0.0.2", 9)})))
        ctx = workers.WebhookContext(db=None, publisher=None, settings=load({}), session=session)
        attempt = workers.post_once(ctx, f"http://127.0.0.1:{port}/push", {"a": 1})
    finally:
        server.shutdown()
    assert attempt.status == 307 and not attempt.sent and not attempt.retryable
    assert "redirect not followed" in attempt.error
