"""The WalletConnect v1 push/bridge API end to end: API → RabbitMQ → workers → MongoDB → webhook / simulators."""
from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pymongo
import pytest
import requests

from devstack.credentials import configure_app, make_credentials, register_with_simulators
from devstack.stack import free_port
from shared import db as mongo
from shared.broker import make_broker
from shared.commands import APPLY_WRITE, DELIVER_CHUNK_WEBHOOK, Publisher, command
from shared.settings import load
from tests import waiting
from tests.integration.conftest import apns_token, fcm_token, take_receiver_port
from tests.unit.test_wc_bridge import assert_payload_answer

#: Seconds a push may take to reach the webhook or a simulator.
PUSH_WAIT_SECONDS = 20
#: The SDK flow's Node script and its npm packages (scripts/ensure-node-deps.sh installs them; `make test` runs it).
SDK_FLOW = Path(__file__).resolve().parents[1] / "node" / "wc_v1_flow.mjs"
#: Seconds the SDK flow may take (its listeners poll every 200 ms and give up after 30 s).
SDK_FLOW_TIMEOUT = 120
#: The short TTLs of the expiry tests' API (seconds).
SHORT_SESSION_TTL = 4.0
SHORT_CALL_TTL = 2.0

PAYLOAD = {"data": "5f2a", "hmac": "9c1e", "iv": "00ff"}
#: The stack's session and call TTLs (the defaults), seconds.
SESSION_TTL = 86400
CALL_TTL = 3600


def eventually(check, *, timeout: float = PUSH_WAIT_SECONDS, what: str = "condition"):
    return waiting.wait_for(check, timeout=timeout, what=what, every=0.05)

# --- a real webhook receiver ----------------------------------------------------------------------

class WebhookReceiver:
    """An HTTP server on 127.0.0.1 (on an allow-listed port) that records every POST; ``script`` sets the statuses a path answers."""

    def __init__(self):
        self.received: list[tuple[str, dict]] = []
        self.script: dict[str, list[int]] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.received.append((self.path, json.loads(body)))
                    statuses = receiver.script.get(self.path) or []
                    status = statuses.pop(0) if statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", take_receiver_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def posts_to(self, path: str) -> list[dict]:
        with self.lock:
            return [body for p, body in self.received if p == path]


@pytest.fixture(scope="module")
def receiver():
    server = WebhookReceiver()
    server.thread.start()
    yield server
    server.server.shutdown()


# --- clients --------------------------------------------------------------------------------------

class Bridge:
    """A client of the bridge API at ``base_url``."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.http = requests.Session()

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        return self.http.request(method, self.base_url + path, timeout=60, **kwargs)

    def new_session(self) -> str:
        answer = self.request("POST", "/session/new")
        assert answer.status_code == 200, answer.text
        return answer.json()["sessionId"]

    def put_session(self, session_id: str, payload=PAYLOAD, push: dict | None = None) -> requests.Response:
        body = {"encryptionPayload": payload}
        if push is not None:
            body["push"] = push
        return self.request("PUT", f"/session/{session_id}", json=body)

    def new_call(self, session_id: str, payload=PAYLOAD, dapp_name: str | None = "Example Dapp") -> str:
        body = {"encryptionPayload": payload}
        if dapp_name is not None:
            body["dappName"] = dapp_name
        answer = self.request("POST", f"/session/{session_id}/call/new", json=body)
        assert answer.status_code == 200, answer.text
        return answer.json()["callId"]

    def wallet_session(self, push: dict | None = None) -> str:
        session_id = self.new_session()
        answer = self.put_session(session_id, push=push)
        assert answer.status_code == 200, answer.text
        return session_id


@pytest.fixture(scope="module")
def bridge(stack) -> Bridge:
    return Bridge(stack.api_url)


@pytest.fixture(scope="module")
def database(stack):
    client = pymongo.MongoClient(stack.mongo_uri, tz_aware=True)
    yield client["push"]
    client.close()


def start_api(stack, name: str, env: dict) -> Bridge:
    return Bridge(stack.start_api(name=name, port=free_port(), env=env))


@pytest.fixture(scope="module")
def wallet_app(stack) -> str:
    """An app with APNs and FCM credentials for the simulators, used for wallets' apns/fcm pushes."""
    app_id = f"wc-wallets-{uuid.uuid4().hex[:8]}"
    credentials = make_credentials(app_id, fcm_origin=f"https://127.0.0.1:{stack.ports.fcm}", key_id=f"K{secrets.token_hex(4)}".upper())
    register_with_simulators(
        credentials,
        apns_control=f"http://127.0.0.1:{stack.ports.apns_control}",
        fcm_control=f"http://127.0.0.1:{stack.ports.fcm_control}",
    )
    configure_app(stack.api_url, app_id, credentials)
    return app_id


@pytest.fixture(scope="module")
def push_bridge(stack, wallet_app) -> Bridge:
    """A second API whose wallets' apns/fcm pushes go through ``wallet_app``."""
    bridge = start_api(stack, "api-wc-push", {"PUSH_WC_BRIDGE_PUSH_APP_ID": wallet_app})
    yield bridge
    stack.stop("api-wc-push")


@pytest.fixture(scope="module")
def short_bridge(stack) -> Bridge:
    """A second API with TTLs of seconds (the workers take the TTL from the command)."""
    env = {
        "PUSH_WC_BRIDGE_SESSION_TTL_SECONDS": str(SHORT_SESSION_TTL),
        "PUSH_WC_BRIDGE_CALL_TTL_SECONDS": str(SHORT_CALL_TTL),
        "PUSH_WC_BRIDGE_MAX_PAYLOAD_BYTES": "1024",
    }
    bridge = start_api(stack, "api-wc-short", env)
    yield bridge
    stack.stop("api-wc-short")


# --- sessions -------------------------------------------------------------------------------------

def test_session_is_204_until_the_wallet_puts_its_details_then_200(bridge):
    session_id = bridge.new_session()
    uuid.UUID(session_id)

    assert bridge.request("GET", f"/session/{session_id}").status_code == 204
    assert bridge.put_session(session_id, push={"type": "fcm", "token": "t"}).status_code == 200

    answer = bridge.request("GET", f"/session/{session_id}")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("application/json")
    assert_payload_answer(answer.json(), PAYLOAD, ttl_seconds=SESSION_TTL)


def test_a_second_put_replaces_the_session_details(bridge):
    session_id = bridge.wallet_session()
    assert bridge.put_session(session_id, payload={"data": "new", "hmac": "h", "iv": "i"}).status_code == 200
    assert bridge.request("GET", f"/session/{session_id}").json()["encryptionPayload"] == {"data": "new", "hmac": "h", "iv": "i"}


def test_deleted_session_is_gone_and_cannot_be_revived(bridge):
    session_id = bridge.wallet_session()
    call_id = bridge.new_call(session_id)

    assert bridge.request("DELETE", f"/session/{session_id}").status_code == 200

    assert bridge.request("GET", f"/session/{session_id}").status_code == 204
    assert bridge.put_session(session_id).status_code == 404
    assert bridge.request("GET", f"/session/{session_id}/calls").status_code == 404
    assert bridge.request("GET", f"/session/{session_id}/call/{call_id}").status_code == 404
    assert bridge.request("POST", f"/session/{session_id}/call/new", json={"encryptionPayload": PAYLOAD}).status_code == 404
    assert bridge.request("DELETE", f"/session/{session_id}").status_code == 200


# --- call requests and statuses -------------------------------------------------------------------

def test_call_request_is_stored_and_pushed_to_the_wallets_webhook(bridge, receiver, database):
    push = {"type": "fcm", "token": f"wallet-{uuid.uuid4().hex}", "webhook": receiver.url("/push/ok")}
    session_id = bridge.wallet_session(push)

    call_id = bridge.new_call(session_id, dapp_name="Uniswap")

    posts = eventually(lambda: [b for b in receiver.posts_to("/push/ok") if b["callId"] == call_id], what="webhook POST")
    assert posts == [{"sessionId": session_id, "callId": call_id, "pushType": "fcm", "pushToken": push["token"], "dappName": "Uniswap"}]
    record = eventually(lambda: database[mongo.WC_PUSHES].find_one({"_id": call_id, "state": "sent"}), what="sent record")
    assert record["attempts"] == 1 and record["last_status"] == 200

    answer = bridge.request("GET", f"/session/{session_id}/call/{call_id}")
    assert answer.status_code == 200
    assert_payload_answer(answer.json(), PAYLOAD, ttl_seconds=CALL_TTL)


def test_all_calls_of_a_session_are_listed_by_id(bridge):
    session_id = bridge.wallet_session()
    assert bridge.request("GET", f"/session/{session_id}/calls").json() == {"data": {}}
    payloads = [{"data": f"call-{i}", "hmac": "h", "iv": "i"} for i in range(3)]
    call_ids = [bridge.new_call(session_id, payload, dapp_name=None) for payload in payloads]
    other = bridge.wallet_session()
    bridge.new_call(other)

    answer = bridge.request("GET", f"/session/{session_id}/calls")

    assert answer.status_code == 200
    calls = answer.json()
    # The seed's map by call id, and the same map under the reference's "data" (call ids are UUIDs, never "data").
    by_id = {call_id: calls[call_id] for call_id in call_ids}
    assert calls == {**by_id, "data": by_id}
    for call_id, payload in zip(call_ids, payloads, strict=True):
        assert set(by_id[call_id]) == {"encryptionPayload", "expires", "ttlInSeconds"}
        assert by_id[call_id]["encryptionPayload"] == payload and CALL_TTL - 60 < by_id[call_id]["ttlInSeconds"] <= CALL_TTL
    assert bridge.request("GET", f"/session/{other}/call/{call_ids[0]}").status_code == 404


def test_call_status_is_204_until_the_wallet_answers_then_200(bridge):
    session_id = bridge.wallet_session()
    call_id = bridge.new_call(session_id)
    assert bridge.request("GET", f"/call-status/{call_id}").status_code == 204

    status = {"data": "approved", "hmac": "h", "iv": "i"}
    answer = bridge.request("POST", f"/call-status/{call_id}/new", json={"encryptionPayload": status})
    assert answer.status_code == 200, answer.text

    answer = bridge.request("GET", f"/call-status/{call_id}")
    assert answer.status_code == 200
    assert_payload_answer(answer.json(), status, ttl_seconds=CALL_TTL)


def test_webhook_failures_are_retried_with_backoff_and_recorded(bridge, receiver, database):
    receiver.script["/push/flaky"] = [503, 503]
    session_id = bridge.wallet_session({"type": "apns", "token": "tok", "webhook": receiver.url("/push/flaky")})

    call_id = bridge.new_call(session_id)

    record = eventually(lambda: database[mongo.WC_PUSHES].find_one({"_id": call_id, "state": "sent"}), what="sent record")
    assert record["attempts"] == 3
    assert [b["callId"] for b in receiver.posts_to("/push/flaky")] == [call_id] * 3


def test_a_failing_webhook_never_loses_the_call_request(bridge, receiver, database):
    receiver.script["/push/gone"] = [410]
    refused = bridge.wallet_session({"type": "fcm", "token": "tok", "webhook": receiver.url("/push/gone")})
    # An allowed target where nothing listens: the connection is refused, a transient failure.
    unreachable = bridge.wallet_session({"type": "fcm", "token": "tok", "webhook": f"http://127.0.0.1:{take_receiver_port()}/push"})

    refused_call = bridge.new_call(refused)
    unreachable_call = bridge.new_call(unreachable)

    record = eventually(lambda: database[mongo.WC_PUSHES].find_one({"_id": refused_call, "state": "failed"}), what="failed record")
    assert record["last_status"] == 410 and record["attempts"] == 1
    record = eventually(
        lambda: database[mongo.WC_PUSHES].find_one({"_id": unreachable_call, "state": "retry"}), what="retry record"
    )
    assert record["attempts"] >= 1 and "ConnectionError" in record["last_error"]
    for session_id, call_id in ((refused, refused_call), (unreachable, unreachable_call)):
        assert bridge.request("GET", f"/session/{session_id}/call/{call_id}").json()["encryptionPayload"] == PAYLOAD


def test_a_webhook_to_a_host_not_allowed_is_refused_and_nothing_is_stored(bridge, receiver, stack):
    session_id = bridge.new_session()
    # 127.0.0.2 is this machine too, but only 127.0.0.1 and localhost are allow-listed with the receiver's port.
    port = receiver.server.server_address[1]
    for webhook in (f"http://127.0.0.2:{port}/push/other", f"http://localhost:{stack.ports.apns_control}/reset"):
        answer = bridge.put_session(session_id, push={"type": "fcm", "token": "t", "webhook": webhook})
        body = assert_error(answer, 400, "push.webhook")
        assert "not allowed" in body["message"]
    assert bridge.request("GET", f"/session/{session_id}").status_code == 204
    allowed = bridge.put_session(session_id, push={"type": "fcm", "token": "t", "webhook": f"http://localhost:{port}/push/ok"})
    assert allowed.status_code == 200, allowed.text


@pytest.fixture(scope="module")
def publisher(stack) -> Publisher:
    settings = load(queue_prefix=stack.queue_prefix)
    return Publisher(make_broker(settings, set_global=False), settings)


def test_a_webhook_push_published_twice_is_posted_once(receiver, database, publisher):
    push_id = f"dup-{uuid.uuid4().hex}"
    job = {
        "id": push_id,
        "url": receiver.url("/push/dup"),
        "body": {"callId": push_id},
        "call_id": push_id,
        "session_id": "s",
        "first_attempt_at": time.time(),
        "attempts": 0,
    }
    publisher.publish(DELIVER_CHUNK_WEBHOOK, job)
    publisher.publish(DELIVER_CHUNK_WEBHOOK, job)

    eventually(lambda: database[mongo.WC_PUSHES].find_one({"_id": push_id, "state": "sent"}), what="sent record")
    time.sleep(1.0)
    assert receiver.posts_to("/push/dup") == [{"callId": push_id}]


def test_the_worker_does_not_post_a_queued_webhook_whose_host_is_not_allowed(receiver, database, publisher):
    push_id = f"refused-{uuid.uuid4().hex}"
    job = {
        "id": push_id,
        # Queued before the settings changed, say: 127.0.0.2 is loopback and not allow-listed (nor does the receiver listen there).
        "url": f"http://127.0.0.2:{receiver.server.server_address[1]}/push/refused",
        "body": {"callId": push_id},
        "call_id": push_id,
        "session_id": "s",
        "first_attempt_at": time.time(),
        "attempts": 0,
    }
    publisher.publish(DELIVER_CHUNK_WEBHOOK, job)

    record = eventually(lambda: database[mongo.WC_PUSHES].find_one({"_id": push_id, "state": "failed"}), what="failed record")
    assert record["attempts"] == 0 and "not allowed" in record["last_error"]
    assert receiver.posts_to("/push/refused") == []


def test_answers_without_a_body_carry_the_documented_content_type(bridge):
    session_id = bridge.new_session()
    polled = bridge.request("GET", f"/session/{session_id}")
    assert polled.status_code == 204 and polled.headers["Content-Type"].startswith("text/plain")
    put = bridge.put_session(session_id)
    assert put.status_code == 200 and put.headers["Content-Type"].startswith("text/plain") and put.content == b""
    assert bridge.request("GET", f"/call-status/{uuid.uuid4()}").headers["Content-Type"].startswith("text/plain")
    deleted = bridge.request("DELETE", f"/session/{session_id}")
    assert deleted.status_code == 200 and deleted.headers["Content-Type"].startswith("text/plain")


def test_a_body_without_a_json_content_type_is_still_read_as_json(bridge):
    session_id = bridge.new_session()
    answer = bridge.request("PUT", f"/session/{session_id}", data=json.dumps({"encryptionPayload": PAYLOAD}))
    assert answer.status_code == 200, answer.text
    assert bridge.request("GET", f"/session/{session_id}").json()["encryptionPayload"] == PAYLOAD


def test_session_writes_applied_out_of_order_end_as_the_api_acknowledged_them(bridge, database, publisher):
    session_id = bridge.wallet_session()
    update = command("wc.session.update", session_id=session_id, payload={"data": "late"}, push=None, ttl_seconds=3600.0)
    delete = command("wc.session.delete", session_id=session_id, ttl_seconds=3600.0)
    # The delete was received last but is applied first.
    publisher.publish(APPLY_WRITE, delete)
    eventually(lambda: database[mongo.COMMANDS].find_one({"_id": delete["id"]}), what="delete applied")
    publisher.publish(APPLY_WRITE, update)
    eventually(lambda: database[mongo.COMMANDS].find_one({"_id": update["id"]}), what="update applied")

    assert bridge.request("GET", f"/session/{session_id}").status_code == 204
    # Truthy rather than True: nx-27017 answers a boolean $set on an existing document as 1.
    assert database[mongo.WC_SESSIONS].find_one({"_id": session_id, "deleted": True}) is not None


def test_apns_and_fcm_wallets_are_pushed_through_the_delivery_pipeline(push_bridge, apns_sim, fcm_sim):
    ios, android = apns_token(), fcm_token()
    ios_session = push_bridge.wallet_session({"type": "apns", "token": ios})
    android_session = push_bridge.wallet_session({"type": "fcm", "token": android})

    ios_call = push_bridge.new_call(ios_session, dapp_name="Example Dapp")
    android_call = push_bridge.new_call(android_session, dapp_name=None)

    eventually(lambda: apns_sim.delivered(ios) == 1, what="APNs push")
    eventually(lambda: fcm_sim.delivered(android) == 1, what="FCM push")
    apns_body = apns_sim.received(ios)[-1]["body"]
    assert apns_body["sessionId"] == ios_session and apns_body["callId"] == ios_call and apns_body["dappName"] == "Example Dapp"
    assert apns_body["aps"]["alert"]["body"] == "New call request from Example Dapp"
    fcm_message = fcm_sim.received(android)[-1]["body"]["message"]
    assert fcm_message["data"] == {"sessionId": android_session, "callId": android_call}


def test_an_empty_webhook_is_no_webhook_the_push_goes_through_the_pipeline(push_bridge, fcm_sim, receiver):
    token = fcm_token()
    session_id = push_bridge.new_session()
    answer = push_bridge.put_session(session_id, push={"type": "fcm", "token": token, "webhook": ""})
    assert answer.status_code == 200, answer.text
    before = len(receiver.received)

    call_id = push_bridge.new_call(session_id, dapp_name=None)

    eventually(lambda: fcm_sim.delivered(token) == 1, what="FCM push")
    assert fcm_sim.received(token)[-1]["body"]["message"]["data"] == {"sessionId": session_id, "callId": call_id}
    assert len(receiver.received) == before


def test_the_walletconnect_v1_sdk_runs_the_whole_flow_unchanged(push_bridge, fcm_sim):
    """walletconnect@0.7.28 (the dapp) and js-walletconnect-core@0.7.28 (the wallet's Connector), as published on npm."""
    node = shutil.which("node")
    assert node, "Node 20 is needed: scripts/ensure-node-deps.sh installs it (make test runs it)"
    assert (SDK_FLOW.parent / "node_modules" / "walletconnect").is_dir(), "run scripts/ensure-node-deps.sh (make test runs it)"
    token = fcm_token()

    flow = subprocess.run([node, str(SDK_FLOW), push_bridge.base_url, "fcm", token], capture_output=True, text=True,
                          timeout=SDK_FLOW_TIMEOUT, check=False)

    assert flow.returncode == 0, flow.stderr
    summary = json.loads(flow.stdout.strip().splitlines()[-1])
    assert summary["accounts"] == ["0x5fd8d8c4a1cd7c8e0f9e2a6f5a0c3b0d9e7a1b22"] and summary["result"] == "0x" + "ab" * 32
    assert summary["resumed"] is True
    # The wallet's push target got the call request, through the delivery pipeline, once.
    eventually(lambda: fcm_sim.delivered(token) == 1, what="the wallet's FCM push")
    data = fcm_sim.received(token)[-1]["body"]["message"]["data"]
    assert data == {"sessionId": summary["sessionId"], "callId": summary["callId"], "dappName": "Example Dapp"}
    time.sleep(0.5)
    assert fcm_sim.delivered(token) == 1


def test_hello_and_info_answer_as_the_reference(bridge):
    hello = bridge.request("GET", "/hello")
    assert hello.status_code == 200 and hello.headers["Content-Type"].startswith("text/plain")
    assert hello.text.startswith("Hello World, this is WalletConnect v")
    info = bridge.request("GET", "/info")
    assert info.status_code == 200
    assert set(info.json()) == {"name", "repository", "version"} and info.json()["name"] == "WalletConnect Bridge Server"


def test_a_new_session_answers_when_it_expires(bridge):
    before = time.time()
    answer = bridge.request("POST", "/session/new")
    assert answer.status_code == 200
    expires = answer.json()["expires"] / 1000
    assert before + SESSION_TTL - 5 <= expires <= time.time() + SESSION_TTL


def test_without_a_push_target_the_call_is_stored_and_nothing_is_sent(push_bridge, receiver):
    session_id = push_bridge.wallet_session()
    before = len(receiver.received)
    call_id = push_bridge.new_call(session_id)
    assert push_bridge.request("GET", f"/session/{session_id}/call/{call_id}").status_code == 200
    assert len(receiver.received) == before


# --- expiry ---------------------------------------------------------------------------------------

def test_call_data_expires_after_the_call_ttl(short_bridge, database):
    session_id = short_bridge.wallet_session()
    call_id = short_bridge.new_call(session_id)
    assert short_bridge.request("POST", f"/call-status/{call_id}/new", json={"encryptionPayload": PAYLOAD}).status_code == 200
    assert short_bridge.request("GET", f"/call-status/{call_id}").status_code == 200
    assert short_bridge.request("GET", f"/session/{session_id}/calls").json()[call_id]["encryptionPayload"] == PAYLOAD

    time.sleep(SHORT_CALL_TTL + 0.5)

    assert short_bridge.request("GET", f"/session/{session_id}/call/{call_id}").status_code == 404
    assert short_bridge.request("GET", f"/call-status/{call_id}").status_code == 204
    assert short_bridge.request("GET", f"/session/{session_id}/calls").json() == {"data": {}}
    assert short_bridge.request("POST", f"/call-status/{call_id}/new", json={"encryptionPayload": PAYLOAD}).status_code == 404
    # The TTL index removes them from MongoDB (nx-27017 when the collection is read).
    eventually(lambda: database[mongo.WC_CALLS].find_one({"_id": call_id}) is None, timeout=90, what="call removed")
    eventually(lambda: database[mongo.WC_CALL_STATUS].find_one({"_id": call_id}) is None, timeout=90, what="status removed")


def test_a_session_lives_for_the_session_ttl_from_its_last_write(short_bridge, database):
    session_id = short_bridge.wallet_session()
    started = time.monotonic()
    time.sleep(SHORT_SESSION_TTL / 2)
    assert short_bridge.put_session(session_id).status_code == 200
    # Past the first write's expiry, within the second's.
    time.sleep(max(0.0, SHORT_SESSION_TTL + 0.5 - (time.monotonic() - started)))
    assert short_bridge.request("GET", f"/session/{session_id}").status_code == 200

    time.sleep(SHORT_SESSION_TTL / 2 + 0.5)

    assert short_bridge.request("GET", f"/session/{session_id}").status_code == 204
    assert short_bridge.put_session(session_id).status_code == 404
    answer = short_bridge.request("POST", f"/session/{session_id}/call/new", json={"encryptionPayload": PAYLOAD})
    assert answer.status_code == 404 and "message" in answer.json()
    eventually(lambda: database[mongo.WC_SESSIONS].find_one({"_id": session_id}) is None, timeout=90, what="session removed")


def test_expiring_collections_have_ttl_indexes(database, bridge):
    bridge.wallet_session()
    for collection in mongo.TTL_COLLECTIONS:
        indexes = {tuple(index["key"].items()): index for index in database[collection].list_indexes()}
        assert indexes[(("expires_at", 1),)]["expireAfterSeconds"] == 0, collection


# --- errors ---------------------------------------------------------------------------------------

def assert_error(answer: requests.Response, status: int, field: str | None = None) -> dict:
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    body = answer.json()
    assert body["message"]
    if field is not None:
        assert body["field"] == field, body
    return body


def test_call_on_an_unknown_session_is_a_404(bridge):
    answer = bridge.request("POST", f"/session/{uuid.uuid4()}/call/new", json={"encryptionPayload": PAYLOAD})
    assert_error(answer, 404, "sessionId")
    assert_error(bridge.request("PUT", f"/session/{uuid.uuid4()}", json={"encryptionPayload": PAYLOAD}), 404, "sessionId")
    assert_error(bridge.request("GET", f"/session/{uuid.uuid4()}/calls"), 404, "sessionId")
    assert_error(bridge.request("GET", f"/session/{uuid.uuid4()}/call/{uuid.uuid4()}"), 404, "callId")
    assert_error(bridge.request("POST", f"/call-status/{uuid.uuid4()}/new", json={"encryptionPayload": PAYLOAD}), 404, "callId")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b"", "body"),
        (b"[1, 2]", "body"),
        (b"{}", "encryptionPayload"),
        (b'{"encryptionPayload": null}', "encryptionPayload"),
        (b'{"encryptionPayload": 7}', "encryptionPayload"),
        (b'{"encryptionPayload": {"data": "x"}, "push": "fcm"}', "push"),
        (b'{"encryptionPayload": {"data": "x"}, "push": {"type": "fcm"}}', "push.token"),
        (b'{"encryptionPayload": {"data": "x"}, "push": {"type": "fcm", "token": "t", "webhook": "file:///etc/passwd"}}', "push.webhook"),
        (b'{"encryptionPayload": {"data": "x"}, "push": {"type": "fcm", "token": "t", "webhook": "http://[::1"}}', "push.webhook"),
        (b'{"encryptionPayload": {"data": 18446744073709551615}}', "encryptionPayload"),
        (b'{"encryptionPayload": {"a\\u0000b": "x"}}', "encryptionPayload"),
        (b'{"encryptionPayload": "\\ud800"}', "body"),
        (b"[" * 1000 + b"]" * 1000, "body"),
    ],
)
def test_a_bad_session_update_is_a_400_naming_the_field(bridge, body, field):
    session_id = bridge.new_session()
    answer = bridge.request("PUT", f"/session/{session_id}", data=body, headers={"Content-Type": "application/json"})
    assert_error(answer, 400, field)


def test_bad_call_and_status_bodies_are_400s_naming_the_field(bridge):
    session_id = bridge.wallet_session()
    assert_error(bridge.request("POST", f"/session/{session_id}/call/new", data=b"{"), 400, "body")
    assert_error(bridge.request("POST", f"/session/{session_id}/call/new", json={"dappName": "x"}), 400, "encryptionPayload")
    assert_error(bridge.request("POST", f"/session/{session_id}/call/new", json={"encryptionPayload": PAYLOAD, "dappName": 5}), 400, "dappName")
    call_id = bridge.new_call(session_id)
    assert_error(bridge.request("POST", f"/call-status/{call_id}/new", json={"payload": 1}), 400, "encryptionPayload")


def test_a_body_over_the_size_limit_is_a_413(bridge, short_bridge):
    session_id = bridge.new_session()
    big = {"encryptionPayload": {"data": "a" * (64 * 1024), "hmac": "h", "iv": "i"}}
    assert_error(bridge.request("PUT", f"/session/{session_id}", json=big), 413)
    assert_error(bridge.request("POST", f"/session/{session_id}/call/new", json=big), 413)
    chunked = bridge.request("PUT", f"/session/{session_id}", data=iter([json.dumps(big).encode()]))
    assert_error(chunked, 413)
    # The limit is a setting: 1 KiB on the short API.
    short_session = short_bridge.new_session()
    small = {"encryptionPayload": {"data": "a" * 2000}}
    assert_error(short_bridge.request("PUT", f"/session/{short_session}", json=small), 413)
    assert short_bridge.put_session(short_session).status_code == 200


def test_unknown_routes_and_methods_answer_json(bridge):
    assert_error(bridge.request("GET", "/session/x/unknown/route"), 404)
    assert_error(bridge.request("PATCH", f"/session/{uuid.uuid4()}"), 405)
    assert_error(bridge.request("GET", "/call-status/x/new"), 405)
    long_id = "x" * 1000
    assert bridge.request("GET", f"/session/{long_id}").status_code == 204
    assert_error(bridge.request("POST", f"/session/{long_id}/call/new", json={"encryptionPayload": PAYLOAD}), 404)
