"""What a MongoDB primary step-down does to the API and the workers, with the wire errors injected by a proxy.

A stack of its own whose API and workers reach nx-27017 through
:class:`MongoWireProxy`, with the connection string a replica-set deployment
uses (``w=majority``, retryable writes and reads; nx-27017 accepts
``w: majority`` without effect). The proxy answers chosen operations with
``NotWritablePrimary`` (what a primary that stepped down answers) or cuts a
reply after the write landed. nx-27017 is a standalone server, so pymongo
retries reads once by itself (retryable reads) but not writes (retryable writes
need a replica set): a refused write reaches our code, which is the path a
second failure during a real election takes (README "Clusters").
"""
from __future__ import annotations

import secrets
import time
import uuid

import pymongo
import pytest
import requests

from devstack.credentials import configure_app, make_credentials, register_with_simulators
from devstack.stack import Ports
from tests import ledger_view, waiting
from tests.integration.conftest import apns_token, fcm_token
from tests.integration.mongo_wire_proxy import CUT_REPLY, MongoWireProxy, Rule
from tests.stacks import running_stack

#: The connection string options of a replica-set deployment (docker-compose.yml, docker/k8s).
REPLICA_SET_OPTIONS = "w=majority&retryWrites=true&retryReads=true"
#: Bearer token of the WalletConnect tenant routes in this stack.
TENANT_ADMIN_TOKEN = "failover-admin"


@pytest.fixture(scope="module")
def proxy():
    ports = Ports.free()
    proxy = MongoWireProxy(("127.0.0.1", ports.mongo))
    proxy.start()
    proxy.ports = ports
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, proxy):
    env = {
        "PUSH_MONGO_URI": f"mongodb://127.0.0.1:{proxy.port}/?{REPLICA_SET_OPTIONS}",
        "PUSH_DELIVERY_LEASE_SECONDS": "4",
        "PUSH_API_SYNC_WAIT_SECONDS": "60",
        "PUSH_WC_PUSH_ADMIN_TOKEN": TENANT_ADMIN_TOKEN,
    }
    with running_stack(tmp_path_factory.mktemp("failover-var"), "failover", env, ports=proxy.ports) as stack:
        yield stack


@pytest.fixture
def rules(proxy):
    yield proxy
    proxy.clear()


@pytest.fixture(scope="module")
def app_id(stack):
    app_id = f"failover-{uuid.uuid4().hex[:8]}"
    credentials = make_credentials(app_id, fcm_origin=f"https://127.0.0.1:{stack.ports.fcm}", key_id=f"K{secrets.token_hex(4)}".upper())
    register_with_simulators(credentials, apns_control=f"http://127.0.0.1:{stack.ports.apns_control}",
                             fcm_control=f"http://127.0.0.1:{stack.ports.fcm_control}")
    configure_app(stack.api_url, app_id, credentials)
    return app_id


def db(stack):
    """The stack's database straight, not through the proxy: what the tests check with."""
    return pymongo.MongoClient(stack.mongo_uri)["push"]


def on(collection: str, command: str):
    return lambda cmd: cmd.get(command) == collection


def outcome_write(cmd: dict) -> bool:
    """A delivery run's bulk write of outcomes (guarded by its claim id), not a claim or a lease renewal."""
    return cmd.get("update") == "ledger" and any(
        "c" in u["q"] and "s" in u["u"].get("$set", {}) for u in cmd.get("updates", [])
    )


def register(stack, app_id: str, token: str, platform: str, user: str) -> requests.Response:
    return requests.post(stack.api_url + "/push/device/create", timeout=60, json={
        "requestObject": {"appId": app_id, "token": token, "platform": platform, "userId": user}})


def delivered(stack, platform: str, token: str) -> int:
    port = stack.ports.apns_control if platform == "apns" else stack.ports.fcm_control
    return requests.get(f"http://127.0.0.1:{port}/counts/{token}", timeout=10).json()["delivered"]


def send_to_new_devices(stack, app_id: str, n: int) -> tuple[str, dict[str, str]]:
    """Register ``n`` devices of one user (half APNs, half FCM) directly and send them one message."""
    user = f"u-{uuid.uuid4().hex[:8]}"
    tokens = {apns_token() if i % 2 else fcm_token(): "apns" if i % 2 else "fcm" for i in range(n)}
    for token, platform in tokens.items():
        assert register(stack, app_id, token, platform, user).status_code == 200
    answer = requests.post(stack.api_url + "/push/message/send", timeout=60, json={
        "requestObject": {"appId": app_id, "mode": "ASYNCHRONOUS", "message": {"userId": user, "body": {"title": "failover"}}}})
    assert answer.status_code == 200, answer.text
    return answer.json()["responseObject"]["messageId"], tokens


@pytest.fixture(scope="module")
def sent(stack, app_id):
    """A send whose every delivery has its outcome (so no worker reads meanwhile), and a bridge session."""
    message_id, tokens = send_to_new_devices(stack, app_id, 2)
    waiting.wait_for(lambda: len(ledger_view.rows(db(stack), message_id, "sent")) == 2,
                     timeout=60, what="the send delivered")
    session = requests.post(stack.api_url + "/session/new", timeout=30)
    assert session.status_code == 200, session.text
    tenant = f"t{uuid.uuid4().hex[:8]}"
    created = requests.post(stack.api_url + "/tenants", json={"id": tenant}, timeout=30,
                            headers={"Authorization": f"Bearer {TENANT_ADMIN_TOKEN}"})
    assert created.status_code == 200, created.text
    return {"message": message_id, "session": session.json()["sessionId"], "tenant": tenant}


def read_of(collection: str, key: str):
    """The API's reads of one document of ``collection`` (its filter names ``key``)."""
    return lambda cmd: cmd.get("find") == collection and key in repr(cmd.get("filter"))


def test_a_read_refused_once_is_retried_by_the_driver(stack, rules, app_id):
    rule = rules.add(Rule(read_of("apps", app_id)))
    answer = requests.get(stack.api_url + "/admin/app/detail", params={"appId": app_id}, timeout=30)

    assert rule.hits == 1  # refused once, and pymongo's retryable read asked again
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("path, collection, key, envelope", [
    ("/admin/app/detail?appId={app}", "apps", "{app}", "powerauth"),
    ("/push/message/{message}/detail", "messages", "{message}", "powerauth"),
    ("/tenants/{tenant}", "apps", "{tenant}", "wc_push"),
    ("/session/{session}", "wc_sessions", "{session}", "wc_bridge"),
])
def test_reads_refused_through_an_election_answer_503_in_the_familys_envelope(stack, rules, app_id, sent, path, collection, key,
                                                                               envelope):
    values = {"app": app_id, **sent}
    url = stack.api_url + path.format(**values)
    headers = {"Authorization": f"Bearer {TENANT_ADMIN_TOKEN}"}
    rule = rules.add(Rule(read_of(collection, key.format(**values)), times=4))
    answer = requests.get(url, timeout=30, headers=headers)

    assert rule.hits >= 2  # the driver's retry was refused too
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"]
    if envelope == "powerauth":
        body = answer.json()
        assert body["status"] == "ERROR" and body["responseObject"]["code"] == "ERROR_SERVICE_UNAVAILABLE"
    elif envelope == "wc_push":
        body = answer.json()
        assert body["status"] == "FAILED" and body["errors"][0]["name"]
    rules.clear()
    again = requests.get(url, timeout=30, headers=headers)
    assert again.status_code in (200, 204), again.text  # the next read finds the primary again (204: a session without data)


def test_a_device_write_refused_by_a_stepped_down_primary_is_applied_on_retry(stack, rules, app_id):
    token = apns_token()
    rule = rules.add(Rule(on("devices", "update")))
    answer = register(stack, app_id, token, "apns", "u-stepdown")

    assert rule.hits == 1
    # Acknowledged once RabbitMQ had it, never answered as failed: 202 (accepted, X-Command-Id), since the retry that
    # applies it comes after the API's wait (api/accepted.py).
    assert answer.status_code == 202 and answer.headers["X-Command-Id"], answer.text
    waiting.wait_for(lambda: db(stack)["devices"].find_one({"_id": f"{app_id}:{token}"}), timeout=90,
                     what="the device written by the retried command (Dramatiq's retry: 15-30 s)")


def test_outcome_writes_refused_are_kept_and_written_once_the_primary_is_back(stack, rules, app_id):
    rule = rules.add(Rule(outcome_write, times=3))
    message_id, tokens = send_to_new_devices(stack, app_id, 6)
    waiting.wait_for(lambda: len(ledger_view.rows(db(stack), message_id, "sent")) == len(tokens),
                     timeout=60, what="every outcome recorded")

    assert rule.hits == 3
    assert all(delivered(stack, platform, token) == 1 for token, platform in tokens.items())


def test_a_reply_cut_after_the_outcome_write_landed_sends_nothing_twice(stack, rules, app_id):
    rule = rules.add(Rule(outcome_write, action=CUT_REPLY))
    message_id, tokens = send_to_new_devices(stack, app_id, 6)
    waiting.wait_for(lambda: len(ledger_view.rows(db(stack), message_id, "sent")) == len(tokens),
                     timeout=60, what="every outcome recorded")
    time.sleep(2)  # past a lease's grace: a repeat would have been sent by now

    assert rule.hits == 1
    assert all(delivered(stack, platform, token) == 1 for token, platform in tokens.items())
