"""URLs given to the server cannot reach its own network: bridge webhooks and token_uri on the real stack.

Each form of issue 14 item 1 is tried at the API (a 400 naming the field) and
at the webhook worker (a push queued with it, as if stored before the settings
changed: recorded failed, nothing sent). The targets are real HTTP servers on
this machine that count every request reaching them: ``internal`` on
127.0.0.1 and ``internal_v6`` on [::1], on ports no allow-list names (like the
APNs simulator's control port, which a webhook once reset), and ``allowed`` on
an allow-listed receiver port (TEST_SETTINGS), which redirects to ``internal``.
"""
from __future__ import annotations

import base64
import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pymongo
import pytest
import requests

from devstack.credentials import make_credentials, register_with_simulators
from devstack.stack import free_port
from shared import db as mongo
from shared.broker import make_broker
from shared.commands import DELIVER_CHUNK_WEBHOOK, Publisher
from shared.settings import load
from tests import waiting
from tests.integration.conftest import fcm_token, register, take_receiver_port

#: Seconds a queued push may take to get its outcome.
OUTCOME_WAIT_SECONDS = 30
#: Seconds to wait after an outcome, for a request that would arrive late.
LATE_REQUEST_SECONDS = 1.0


class CountingServer(ThreadingHTTPServer):
    """Counts every request; answers 200, or ``redirect`` status with ``Location`` ``redirect_to``."""

    def __init__(self, address: tuple[str, int], *, ipv6: bool = False):
        if ipv6:
            self.address_family = socket.AF_INET6
        self.hits: list[str] = []
        self.redirect: tuple[int, str] | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.hits.append(self.path)
                if server.redirect:
                    self.send_response(server.redirect[0])
                    self.send_header("Location", server.redirect[1])
                else:
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST  # noqa: N815 - http.server's naming

            def log_message(self, *args):
                pass

        super().__init__(address, Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server_address[1]


@pytest.fixture(scope="module")
def servers():
    made = {
        "internal": CountingServer(("127.0.0.1", free_port())),
        "internal_v6": CountingServer(("::1", 0), ipv6=True),
        "allowed": CountingServer(("127.0.0.1", take_receiver_port())),
    }
    yield made
    for server in made.values():
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def no_hits_before(servers):
    for server in servers.values():
        server.hits.clear()
        server.redirect = None


def refused_forms(servers) -> list[str]:
    """Issue 14 item 1's forms, aimed at this machine's unlisted servers (and userinfo at the listed one)."""
    internal, v6, allowed = servers["internal"].port, servers["internal_v6"].port, servers["allowed"].port
    return [
        f"http://[::1]:{v6}\\@127.0.0.1:{allowed}/push",
        f"http://169.254.169.254\\@127.0.0.1:{allowed}/latest/meta-data",
        f"http://[::1]:{v6}/push",
        f"http://[::ffff:127.0.0.1]:{internal}/push",
        f"http://2130706433:{internal}/push",
        f"http://127.1:{internal}/push",
        f"http://0x7f.1:{internal}/push",
        f"http://localhost:{internal}/reset",
        f"http://127.0.0.1:{internal}/reset",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        f"http://admin:secret@127.0.0.1:{allowed}/push",
        f"ftp://127.0.0.1:{allowed}/push",
    ]


FORM_IDS = ["backslash-v6", "backslash-metadata", "v6-loopback", "v4-mapped", "decimal", "short", "hex", "localhost",
            "loopback", "metadata", "metadata-v6", "userinfo", "ftp"]


def assert_nothing_reached(servers) -> None:
    time.sleep(LATE_REQUEST_SECONDS)
    assert {name: server.hits for name, server in servers.items()} == {name: [] for name in servers}


def bridge_session(api_url: str) -> str:
    answer = requests.post(f"{api_url}/session/new", timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["sessionId"]


@pytest.mark.parametrize("index", range(len(FORM_IDS)), ids=FORM_IDS)
def test_the_api_refuses_each_form_as_a_webhook_naming_push_webhook(stack, servers, index):
    webhook = refused_forms(servers)[index]
    session_id = bridge_session(stack.api_url)
    answer = requests.put(
        f"{stack.api_url}/session/{session_id}",
        json={"encryptionPayload": {"data": "x"}, "push": {"type": "fcm", "token": "t", "webhook": webhook}},
        timeout=30,
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == "push.webhook"
    assert requests.get(f"{stack.api_url}/session/{session_id}", timeout=30).status_code == 204  # nothing stored
    assert_nothing_reached(servers)


@pytest.fixture(scope="module")
def database(stack):
    client = pymongo.MongoClient(stack.mongo_uri, tz_aware=True)
    yield client["push"]
    client.close()


@pytest.fixture(scope="module")
def publisher(stack) -> Publisher:
    settings = load(queue_prefix=stack.queue_prefix)
    return Publisher(make_broker(settings, set_global=False), settings)


def queue_push(publisher: Publisher, url: str) -> str:
    push_id = f"ssrf-{uuid.uuid4().hex}"
    job = {"id": push_id, "url": url, "body": {"callId": push_id}, "call_id": push_id, "session_id": "s",
           "first_attempt_at": time.time(), "attempts": 0}
    publisher.publish(DELIVER_CHUNK_WEBHOOK, job)
    return push_id


def final_record(database, push_id: str) -> dict:
    return waiting.wait_for(
        lambda: database[mongo.WC_PUSHES].find_one({"_id": push_id, "state": {"$in": ["sent", "failed", "dead_letter"]}}),
        timeout=OUTCOME_WAIT_SECONDS, what=f"outcome of push {push_id}",
    )


def test_the_worker_records_a_queued_push_of_each_form_failed_and_sends_nothing(servers, database, publisher):
    pushes = {url: queue_push(publisher, url) for url in refused_forms(servers)}
    for url, push_id in pushes.items():
        record = final_record(database, push_id)
        assert record["state"] == "failed", (url, record)
        assert record["attempts"] == 0 and record["last_status"] is None, (url, record)
        assert "not allowed" in record["last_error"], (url, record)
    assert_nothing_reached(servers)


@pytest.mark.parametrize("status", [302, 307])
def test_a_redirect_of_an_allowed_webhook_is_recorded_failed_and_not_followed(servers, database, publisher, status):
    servers["allowed"].redirect = (status, f"http://127.0.0.1:{servers['internal'].port}/reset")
    push_id = queue_push(publisher, f"http://127.0.0.1:{servers['allowed'].port}/push")
    record = final_record(database, push_id)
    assert (record["state"], record["last_status"], record["attempts"]) == ("failed", status, 1)
    assert "redirect not followed" in record["last_error"]
    time.sleep(LATE_REQUEST_SECONDS)
    assert servers["allowed"].hits == ["/push"] and servers["internal"].hits == [] and servers["internal_v6"].hits == []


def test_an_allowed_webhook_is_posted(servers, database, publisher):
    push_id = queue_push(publisher, f"http://localhost:{servers['allowed'].port}/push")
    assert final_record(database, push_id)["state"] == "sent"
    assert servers["allowed"].hits == ["/push"]


# --- a service account's token_uri --------------------------------------------------------------------

def service_account_b64(stack, app_id: str, token_uri: str) -> str:
    account = make_credentials(app_id, fcm_origin=f"https://127.0.0.1:{stack.ports.fcm}").service_account
    return base64.b64encode(json.dumps({**account, "token_uri": token_uri}).encode()).decode()


def test_an_fcm_service_account_whose_token_uri_is_internal_is_refused_at_upload(stack, servers, api):
    api.ok("/admin/app/create", {"appId": "ssrf-upload"})
    for token_uri in (f"http://127.0.0.1:{servers['internal'].port}/token", "http://169.254.169.254/computeMetadata/v1/token",
                      f"https://[::1]:{servers['internal_v6'].port}/token"):
        answer = api.post("/admin/app/fcm", {"appId": "ssrf-upload", "privateKeyBase64": service_account_b64(stack, "ssrf-upload", token_uri)})
        assert answer.status_code == 400, answer.text
        assert "requestObject.privateKeyBase64" in answer.json()["responseObject"]["message"]
        assert "token_uri" in answer.json()["responseObject"]["message"]
    assert_nothing_reached(servers)


def test_the_worker_refuses_an_internal_token_uri_stored_earlier_and_suspends_fcm(stack, servers, api, database, fcm_sim):
    """Stored by an API whose allow-list named the target (the settings changed since): the workers refuse it."""
    internal = servers["internal"]
    app_id = f"ssrf-{uuid.uuid4().hex[:8]}"
    credentials = make_credentials(app_id, fcm_origin=f"https://127.0.0.1:{stack.ports.fcm}")
    register_with_simulators(credentials, apns_control=f"http://127.0.0.1:{stack.ports.apns_control}",
                             fcm_control=f"http://127.0.0.1:{stack.ports.fcm_control}")
    lax_url = stack.start_api(name="api-lax-outbound", port=free_port(),
                              env={"PUSH_OUTBOUND_ALLOWED_TARGETS": f"127.0.0.1:{internal.port}"})
    try:
        lax = requests.Session()
        for path, body in (
            ("/admin/app/create", {"appId": app_id}),
            ("/admin/app/fcm", {"appId": app_id, "projectId": credentials.project_id,
                                "privateKeyBase64": service_account_b64(stack, app_id, f"http://127.0.0.1:{internal.port}/token")}),
        ):
            answer = lax.post(lax_url + path, json={"requestObject": body}, timeout=60)
            assert answer.status_code == 200, answer.text
    finally:
        stack.stop("api-lax-outbound")
    token = fcm_token()
    register(api, app_id, token, "android", "ssrf-user")
    sent = api.ok("/push/message/send", {"appId": app_id, "message": {"userId": "ssrf-user", "body": {"title": "t"}}})
    assert sent["responseObject"]["result"]["fcm"]["failed"] == 1, sent
    app = database[mongo.APPS].find_one({"_id": app_id}, {"suspended": 1})
    assert "not allowed" in (app.get("suspended") or {}).get("fcm", ""), app
    assert fcm_sim.delivered(token) == 0
    assert_nothing_reached(servers)
