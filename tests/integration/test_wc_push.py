"""WalletConnect push server API end to end: API → RabbitMQ → workers → MongoDB → simulators.

Tenant management and the authentication switches are settings of the API
process; the session's API runs with them off, so those tests drive
an in-process API (same RabbitMQ, same database, same workers) built with
them on.
"""
from __future__ import annotations

import base64
import io
import json
import random
import secrets
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import jwt as pyjwt
import pymongo
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from api.apns_certificates import parse_p12
from api.app import create_app
from api.wc_push_auth import did_key_for, signed_message
from devstack.credentials import apns_certificate_p12, make_credentials, register_with_simulators
from devstack.stack import free_port
from shared import db as mongo
from shared import ledger
from shared.sealed_credentials import CredentialKeys
from shared.settings import load
from shared.wc_push import client_key, notification_key, tenant_app_id
from tests.integration.conftest import TEST_SETTINGS, apns_token, fcm_token
from tests.unit.test_wc_push import client_jwt
from tests.waiting import wait_for
from workers import wc_push as handlers
from workers.writes import WriteContext

ADMIN_TOKEN = "wc-push-admin-" + secrets.token_hex(8)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
#: Seconds a delivery may take to reach a simulator.
DELIVERY_TIMEOUT = 30


def encrypted(topic: str = "topic-1", blob: str = "ZW5jcnlwdGVk") -> dict:
    return {"topic": topic, "flags": 1 | 16, "blob": blob}


def cleartext(title: str, body: str) -> dict:
    blob = base64.b64encode(json.dumps({"title": title, "body": body}).encode()).decode()
    return {"topic": "topic-clear", "flags": 16, "blob": blob}


def new_id() -> str:
    return uuid.uuid4().hex


# --- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def admin(stack):
    """An in-process API on the session's stack, with tenant management on."""
    app = create_app(load(stack.settings_env(), wc_push_admin_token=ADMIN_TOKEN))
    return app.test_client()


@pytest.fixture(scope="module")
def database(stack):
    return pymongo.MongoClient(stack.mongo_uri, tz_aware=True)["push"]


def upload_credentials(admin, tenant_id: str, credentials, *, apns: bool = True, fcm: bool = True, headers: dict = ADMIN) -> None:
    if apns:
        answer = admin.post(
            f"/tenants/{tenant_id}/apns",
            headers=headers,
            content_type="multipart/form-data",
            data={
                "apns_topic": credentials.bundle,
                "apns_key_id": credentials.key_id,
                "apns_team_id": credentials.team_id,
                "apns_pkcs8_pem": (io.BytesIO(credentials.apns_key_pem.encode()), "AuthKey.p8"),
            },
        )
        assert answer.status_code == 200, answer.get_data(as_text=True)
    if fcm:
        answer = upload_service_account(admin, tenant_id, credentials.service_account, headers=headers)
        assert answer.status_code == 200, answer.get_data(as_text=True)


def upload_service_account(admin, tenant_id: str, account: dict, *, headers: dict = ADMIN):
    return admin.post(
        f"/tenants/{tenant_id}/fcm_v1",
        headers=headers,
        content_type="multipart/form-data",
        data={"credentials": (io.BytesIO(json.dumps(account).encode()), "service-account.json")},
    )


def simulator_credentials(stack, apns_sim, fcm_sim, name: str, *, register: bool = True):
    credentials = make_credentials(
        name, fcm_origin=f"https://127.0.0.1:{stack.ports.fcm}", key_id=f"K{secrets.token_hex(4)}".upper()
    )
    if register:
        register_with_simulators(credentials, apns_control=apns_sim.base_url, fcm_control=fcm_sim.base_url)
    return credentials


@pytest.fixture(scope="module")
def new_tenant(stack, admin, apns_sim, fcm_sim):
    """Create a tenant whose credentials the simulators accept; answers its id."""

    def make() -> str:
        tenant_id = f"t-{uuid.uuid4().hex[:10]}"
        answer = admin.post("/tenants", json={"id": tenant_id}, headers=ADMIN)
        assert answer.status_code == 200, answer.get_data(as_text=True)
        upload_credentials(admin, tenant_id, simulator_credentials(stack, apns_sim, fcm_sim, tenant_id))
        return tenant_id

    return make


@pytest.fixture(scope="module")
def default_tenant(stack, admin, apns_sim, fcm_sim):
    """The tenant of the routes without a tenant id, with working credentials."""
    assert admin.post("/tenants", json={"id": "default"}, headers=ADMIN).status_code == 200
    upload_credentials(admin, "default", simulator_credentials(stack, apns_sim, fcm_sim, "wcp-default"))
    return "default"


class WcClient:
    """Calls of the WalletConnect push API on the session's API, for one tenant (None: default)."""

    def __init__(self, api, tenant: str | None = None):
        self.api = api
        self.prefix = f"/{tenant}" if tenant else ""

    def register(self, client_id: str, kind: str, token: str, **extra):
        return self.api.session.post(
            f"{self.api.base_url}{self.prefix}/clients", json={"client_id": client_id, "type": kind, "token": token, **extra}, timeout=60
        )

    def unregister(self, client_id: str):
        return self.api.session.delete(f"{self.api.base_url}{self.prefix}/clients/{client_id}", timeout=60)

    def send(self, client_id: str, notification_id: str | None, payload: dict | None = None, *, raw: dict | None = None, session=None):
        body = {"raw": raw} if raw is not None else {"payload": payload}
        if notification_id is not None:
            body["id"] = notification_id
        return (session or self.api.session).post(f"{self.api.base_url}{self.prefix}/clients/{client_id}", json=body, timeout=60)


def registered(wc: WcClient, kind: str, token: str, client_id: str | None = None, **extra) -> str:
    client_id = client_id or f"client-{uuid.uuid4().hex[:12]}"
    answer = wc.register(client_id, kind, token, **extra)
    assert answer.status_code == 200 and answer.json() == {"status": "OK"}, answer.text
    return client_id


def delivered(simulator, token: str, count: int = 1) -> int:
    """Wait until ``token`` got ``count`` pushes, then a little longer to catch extras; answer the count."""
    wait_for(lambda: simulator.delivered(token) >= count, timeout=DELIVERY_TIMEOUT, what=f"{count} pushes to {token[:12]}…")
    time.sleep(0.5)
    return simulator.delivered(token)


# --- 1. health ----------------------------------------------------------------------------------

def test_health_answers_version_line_and_live_checks(api):
    answer = api.get("/health")
    assert answer.status_code == 200 and answer.text.startswith("OK, push-server v")
    body = api.get("/health", format="json").json()
    assert body["status"] == "OK" and body["rabbitmq"] == "UP" and body["mongodb"] == "UP"


# --- 2. registration ----------------------------------------------------------------------------

def test_unknown_type_is_a_400_naming_the_type_field(api, default_tenant):
    answer = WcClient(api).register("c-1", "pager", "tok")
    assert answer.status_code == 400
    body = answer.json()
    assert body["status"] == "FAILED" and body["errors"][0]["name"] == "ProviderNotFound"
    assert [(f["field"], f["location"]) for f in body["fields"]] == [("type", "body")]


def test_every_type_registers(api, default_tenant):
    wc = WcClient(api)
    for kind, token in (("apns", apns_token()), ("apns-sandbox", apns_token()), ("fcm", fcm_token()), ("fcm_v1", fcm_token()), ("noop", "x")):
        registered(wc, kind, token)


# --- 3. sends, dedupe, payload mapping ----------------------------------------------------------

def test_first_send_202_repeat_200_and_delivered_once(api, default_tenant, apns_sim, fcm_sim):
    wc = WcClient(api)
    ios, android = apns_token(), fcm_token()
    ios_client, android_client = registered(wc, "apns", ios), registered(wc, "fcm", android)
    notification_id = new_id()

    for client in (ios_client, android_client):
        first = wc.send(client, notification_id, encrypted())
        assert first.status_code == 202 and first.json() == {"status": "OK"}, first.text
        repeat = wc.send(client, notification_id, encrypted())
        assert repeat.status_code == 200 and repeat.json() == {"status": "OK"}, repeat.text

    assert delivered(apns_sim, ios) == 1
    assert delivered(fcm_sim, android) == 1
    apns_body = apns_sim.received(ios)[-1]["body"]
    assert apns_body["aps"]["mutable-content"] == 1
    assert (apns_body["topic"], apns_body["blob"], apns_body["flags"]) == ("topic-1", "ZW5jcnlwdGVk", 17)
    message = fcm_sim.received(android)[-1]["body"]["message"]
    assert message["data"] == {"topic": "topic-1", "blob": "ZW5jcnlwdGVk", "flags": "17"}
    assert "notification" not in message.get("android", {}) and "notification" not in message


def test_cleartext_blob_becomes_a_visible_notification(api, default_tenant, apns_sim, fcm_sim):
    wc = WcClient(api)
    ios, android = apns_token(), fcm_token()
    for kind, token in (("apns", ios), ("fcm_v1", android)):
        assert wc.send(registered(wc, kind, token), new_id(), cleartext("Sign request", "Approve 1 ETH?")).status_code == 202
    assert delivered(apns_sim, ios) == 1 and delivered(fcm_sim, android) == 1
    assert apns_sim.received(ios)[-1]["body"]["aps"]["alert"] == {"title": "Sign request", "body": "Approve 1 ETH?"}
    android_message = fcm_sim.received(android)[-1]["body"]["message"]["android"]
    notification = android_message["notification"]
    assert notification.pop("tag").endswith(".0")  # its display id: a repeat replaces it on the device
    assert notification == {"title": "Sign request", "body": "Approve 1 ETH?"}
    assert apns_sim.received(ios)[-1]["headers"]["apns-collapse-id"].endswith(".0")


def test_same_id_to_two_clients_reaches_both(api, default_tenant, apns_sim):
    wc = WcClient(api)
    first, second = apns_token(), apns_token()
    notification_id = new_id()
    for token in (first, second):
        assert wc.send(registered(wc, "apns", token), notification_id, encrypted()).status_code == 202
    assert delivered(apns_sim, first) == 1 and delivered(apns_sim, second) == 1


def test_always_raw_client_takes_only_the_raw_form(api, default_tenant, fcm_sim):
    wc = WcClient(api)
    token = fcm_token()
    client = registered(wc, "fcm", token, always_raw=True)
    refused = wc.send(client, new_id(), encrypted())
    assert refused.status_code == 400 and refused.json()["errors"][0]["name"] == "RawOnlyClient"
    raw = {"topic": "topic-raw", "tag": 4002, "message": "Y2lwaGVydGV4dA"}
    assert wc.send(client, None, raw=raw).status_code == 202
    assert wc.send(client, None, raw=raw).status_code == 200  # same message: same derived id
    assert delivered(fcm_sim, token) == 1
    assert fcm_sim.received(token)[-1]["body"]["message"]["data"] == {"topic": "topic-raw", "tag": "4002", "message": "Y2lwaGVydGV4dA"}


def test_the_relays_raw_form_at_the_top_level_reaches_an_always_raw_client(api, default_tenant, fcm_sim):
    """The relay sends {topic, tag, message} unwrapped to always_raw clients, as the reference reads it."""
    wc = WcClient(api)
    token = fcm_token()
    client = registered(wc, "fcm", token, always_raw=True)
    raw = {"topic": "topic-relay", "tag": 4004, "message": "cmVsYXkgY2lwaGVydGV4dA"}
    url = f"{api.base_url}/clients/{client}"
    first = api.session.post(url, json=raw, timeout=60)
    assert first.status_code == 202 and first.json() == {"status": "OK"}, first.text
    assert api.session.post(url, json=raw, timeout=60).status_code == 200  # same message: same derived id
    assert delivered(fcm_sim, token) == 1
    assert fcm_sim.received(token)[-1]["body"]["message"]["data"] == {"topic": "topic-relay", "tag": "4004", "message": raw["message"]}


def test_noop_client_accepts_and_dedupes_without_delivering(api, default_tenant):
    wc = WcClient(api)
    client = registered(wc, "noop", "noop-token")
    notification_id = new_id()
    assert wc.send(client, notification_id, encrypted()).status_code == 202
    assert wc.send(client, notification_id, encrypted()).status_code == 200


def test_send_to_unknown_or_unregistered_client_is_a_202_delivering_nothing(api, default_tenant, fcm_sim, database):
    """As the reference answers (reown-com/push-server issue 84): the relay stops retrying; nothing is sent."""
    wc = WcClient(api)
    missing = wc.send("nobody-" + new_id(), new_id(), encrypted())
    assert missing.status_code == 202 and missing.json() == {"status": "OK"}, missing.text
    token = fcm_token()
    client = registered(wc, "fcm", token)
    assert wc.unregister(client).json() == {"status": "OK"}
    ignored = new_id()
    assert wc.send(client, ignored, encrypted()).status_code == 202
    assert database[mongo.WCP_NOTIFICATIONS].find_one({"_id": notification_key("default", client, ignored)}) is None
    registered(wc, "fcm", token, client_id=client)
    assert wc.send(client, new_id(), encrypted()).status_code == 202
    assert delivered(fcm_sim, token) == 1


def test_token_moves_to_the_new_client(api, default_tenant, apns_sim):
    wc = WcClient(api)
    token = apns_token()
    old = registered(wc, "apns", token)
    new = registered(wc, "apns", token)
    assert wc.send(old, new_id(), encrypted()).status_code == 202  # no longer a client: nothing is sent
    assert wc.send(new, new_id(), encrypted()).status_code == 202
    assert delivered(apns_sim, token) == 1


def test_exactly_once_under_20_concurrent_senders_repeating_the_same_ids(api, default_tenant, apns_sim, fcm_sim):
    wc = WcClient(api)
    targets = []
    for i in range(6):
        token = apns_token() if i % 2 == 0 else fcm_token()
        targets.append((registered(wc, "apns" if i % 2 == 0 else "fcm", token), token, apns_sim if i % 2 == 0 else fcm_sim))
    ids = [new_id() for _ in range(8)]
    work = [(client, notification_id) for client, _, _ in targets for notification_id in ids]
    answers: Counter = Counter()
    lock = threading.Lock()
    start = threading.Barrier(20)

    def sender(seed: int) -> None:
        mine = list(work)
        random.Random(seed).shuffle(mine)
        session = __import__("requests").Session()
        start.wait()
        for client, notification_id in mine:
            status = wc.send(client, notification_id, encrypted(), session=session).status_code
            with lock:
                answers[(client, notification_id, status)] += 1

    with ThreadPoolExecutor(20) as pool:
        list(pool.map(sender, range(20)))

    for client, notification_id in work:
        assert answers[(client, notification_id, 202)] == 1, (client, notification_id)
        assert answers[(client, notification_id, 200)] == 19, (client, notification_id)
    assert sum(answers.values()) == 20 * len(work)
    for _, token, simulator in targets:
        assert delivered(simulator, token, len(ids)) == len(ids), token


def test_dead_token_deletes_the_client(api, default_tenant, database, apns_sim, fcm_sim):
    wc = WcClient(api)
    for kind, token, simulator in (("apns", apns_token("dead"), apns_sim), ("fcm", fcm_token("dead"), fcm_sim)):
        client = registered(wc, kind, token)
        assert wc.send(client, new_id(), encrypted()).status_code == 202
        key = client_key("default", client)
        wait_for(lambda key=key: database[mongo.WCP_CLIENTS].find_one({"_id": key})["deleted"], timeout=DELIVERY_TIMEOUT, what=f"{kind} client deleted")
        attempts = simulator.counts(token)["attempts"]
        assert wc.send(client, new_id(), encrypted()).status_code == 202  # the client is gone: nothing more is tried
        time.sleep(1.0)
        assert simulator.counts(token)["attempts"] == attempts == 1


def test_bad_requests_answer_the_envelope_never_a_500(api, default_tenant):
    session, base = api.session, api.base_url
    client = registered(WcClient(api), "fcm", fcm_token())
    for method, path, kwargs in (
        ("POST", "/clients", {"data": "not json", "headers": {"Content-Type": "application/json"}}),
        ("POST", "/clients", {"json": ["a list"]}),
        ("POST", "/clients", {"json": {"client_id": 5, "type": "fcm", "token": "t"}}),
        ("POST", f"/clients/{client}", {"json": {"id": "x" * 1000, "payload": encrypted()}}),
        ("POST", f"/clients/{client}", {"json": {"id": "1", "payload": {"topic": "t", "flags": "1", "blob": "b"}}}),
        ("POST", f"/clients/{client}", {"json": {"id": "1", "payload": {"topic": "t", "flags": 0, "blob": "%%%"}}}),
        ("GET", f"/clients/{client}", {}),
        ("POST", "/no-such-tenant/clients", {"json": {"client_id": "c", "type": "fcm", "token": "t"}}),
        ("GET", "/tenants/x", {}),
    ):
        answer = session.request(method, base + path, timeout=30, **kwargs)
        assert 400 <= answer.status_code < 500, (path, answer.status_code, answer.text)
        body = answer.json()
        assert body["status"] == "FAILED" and body["errors"][0]["name"], body
        for field in body.get("fields", []):
            assert field["location"] in ("body", "query", "header", "path")


def test_schema_validation_on_the_running_api(api, default_tenant, fcm_sim):
    session, base = api.session, api.base_url
    bad_tenant = session.post(f"{base}/bad!tenant/clients", json={"client_id": "c", "type": "fcm", "token": "t"}, timeout=30)
    assert bad_tenant.status_code == 400
    assert [(f["field"], f["location"]) for f in bad_tenant.json()["fields"]] == [("tenant_id", "path")]
    untyped = session.post(f"{base}/clients", data=json.dumps({"client_id": "c", "type": "fcm", "token": "t"}),
                           headers={"Content-Type": "text/plain"}, timeout=30)
    assert untyped.status_code == 400 and untyped.json()["errors"][0]["name"] == "InvalidBody"
    missing = session.post(f"{base}/clients", json={"type": "fcm", "token": "t"}, timeout=30)
    assert missing.status_code == 400 and missing.json()["errors"][0]["name"] == "EmptyField"
    assert missing.json()["fields"][0]["field"] == "client_id"

    wc = WcClient(api)
    token = fcm_token()
    client = registered(wc, "fcm", token)
    raw = {"topic": "topic-raw", "tag": 4010, "message": "cmF3IGFzIHBheWxvYWQ"}
    assert wc.send(client, None, raw).status_code == 202  # the raw form under "payload": its id is the message's hash
    assert wc.send(client, None, raw).status_code == 200
    assert delivered(fcm_sim, token) == 1


def documented(document: dict, method: str, path: str, answer) -> None:
    """The answer's status, content type and body are ones the document lists for the operation."""
    responses = document["paths"][path][method]["responses"]
    status = str(answer.status_code)
    entry = responses.get(status) or responses[f"{status[0]}XX"]
    media_type = answer.headers["Content-Type"].split(";")[0]
    assert media_type in entry["content"], (path, status, media_type)
    if media_type == "application/json":
        body = answer.json() if hasattr(answer, "json") and callable(answer.json) else answer.get_json()
        jsonschema.validate(body, {"components": document["components"], **entry["content"][media_type]["schema"]})


def test_answers_on_the_running_api_are_as_documented(api, admin, new_tenant):
    document = api.get("/openapi.json").json()
    documented(document, "get", "/health", api.get("/health"))
    documented(document, "get", "/health", api.get("/health", format="json"))
    tenant = new_tenant()
    wc = WcClient(api, tenant)
    documented(document, "post", "/{tenant_id}/clients", wc.register("c-doc", "noop", "noop-doc"))
    notification_id = new_id()
    documented(document, "post", "/{tenant_id}/clients/{client_id}", wc.send("c-doc", notification_id, encrypted()))
    documented(document, "post", "/{tenant_id}/clients/{client_id}", wc.send("c-doc", notification_id, encrypted()))
    documented(document, "post", "/{tenant_id}/clients/{client_id}", wc.send("nobody", notification_id, encrypted()))
    documented(document, "delete", "/{tenant_id}/clients/{client_id}", wc.unregister("c-doc"))
    documented(document, "get", "/tenants/{tenant_id}", admin.get(f"/tenants/{tenant}", headers=ADMIN))
    documented(document, "get", "/tenants/{tenant_id}", admin.get("/tenants/nobody-here", headers=ADMIN))


# --- 5. tenants ---------------------------------------------------------------------------------

def test_tenant_lifecycle(api, admin, new_tenant, apns_sim, fcm_sim):
    tenant = new_tenant()
    body = admin.get(f"/tenants/{tenant}", headers=ADMIN).get_json()
    assert body["status"] == "OK" and body["enabled_providers"] == ["apns", "apns-sandbox", "fcm", "fcm_v1", "noop"]
    assert body["suspended"] is False and body["apns_topic"] == f"com.example.{tenant}"

    wc = WcClient(api, tenant)
    ios, sandbox, android = apns_token(), apns_token(), fcm_token()
    notification_id = new_id()
    for kind, token in (("apns", ios), ("apns-sandbox", sandbox), ("fcm_v1", android)):
        assert wc.send(registered(wc, kind, token), notification_id, encrypted()).status_code == 202
    assert delivered(apns_sim, ios) == 1 and delivered(apns_sim, sandbox) == 1 and delivered(fcm_sim, android) == 1

    assert admin.delete(f"/tenants/{tenant}/fcm_v1", headers=ADMIN).status_code == 200
    body = admin.get(f"/tenants/{tenant}", headers=ADMIN).get_json()
    assert body["enabled_providers"] == ["apns", "apns-sandbox", "noop"]
    refused = wc.register("c-fcm", "fcm", fcm_token())
    assert refused.status_code == 400 and refused.json()["errors"][0]["name"] == "ProviderNotAvailable"

    assert admin.delete(f"/tenants/{tenant}", headers=ADMIN).get_json() == {"status": "OK"}
    assert admin.get(f"/tenants/{tenant}", headers=ADMIN).status_code == 404
    gone = wc.register("c-1", "apns", apns_token())
    assert gone.status_code == 404 and gone.json()["errors"][0]["name"] == "TenantNotFound"


def test_tenant_management_needs_the_admin_token(admin, api):
    assert admin.post("/tenants", json={"id": "nope"}).status_code == 401
    assert admin.post("/tenants", json={"id": "nope"}, headers={"Authorization": "Bearer guess"}).status_code == 401
    disabled = api.session.post(f"{api.base_url}/tenants", json={"id": "nope"}, timeout=30)
    assert disabled.status_code == 403 and disabled.json()["errors"][0]["name"] == "TenantManagementDisabled"


#: The tenant JWT secret of the in-process API that takes tenant JWTs (HS256).
TENANT_JWT_SECRET = "wc-push-tenant-jwt-" + secrets.token_hex(16)


def tenant_jwt(sub: str) -> dict:
    """``Authorization`` with the reference's tenant JWT (HS256, ``sub`` = the tenant, an hour to live)."""
    token = pyjwt.encode({"sub": sub, "exp": int(time.time()) + 3600}, TENANT_JWT_SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def jwt_admin(stack):
    """An in-process API on the session's stack that takes tenant JWTs (and the admin token)."""
    app = create_app(load(stack.settings_env(), wc_push_admin_token=ADMIN_TOKEN, wc_push_tenant_jwt_secret=TENANT_JWT_SECRET))
    return app.test_client()


def test_a_tenant_jwt_manages_the_tenant_its_sub_names_and_no_other(stack, api, jwt_admin, apns_sim, fcm_sim):
    tenant, other = f"t-{uuid.uuid4().hex[:10]}", f"t-{uuid.uuid4().hex[:10]}"
    assert jwt_admin.post("/tenants", json={"id": other}, headers=ADMIN).status_code == 200
    own = tenant_jwt(tenant)
    created = jwt_admin.post("/tenants", json={"id": tenant}, headers=own)
    assert created.status_code == 200, created.get_data(as_text=True)
    upload_credentials(jwt_admin, tenant, simulator_credentials(stack, apns_sim, fcm_sim, tenant), headers=own)
    assert jwt_admin.get(f"/tenants/{tenant}", headers=own).get_json()["enabled_providers"] == ["apns", "apns-sandbox", "fcm", "fcm_v1", "noop"]

    for method, path in (("get", f"/tenants/{other}"), ("delete", f"/tenants/{other}/apns"), ("delete", f"/tenants/{other}")):
        refused = getattr(jwt_admin, method)(path, headers=own)
        assert refused.status_code == 403 and refused.get_json()["errors"][0]["name"] == "Forbidden", (path, refused.get_data(as_text=True))
    assert jwt_admin.post("/tenants", json={"id": f"t-{uuid.uuid4().hex[:10]}"}, headers=own).status_code == 403
    assert jwt_admin.get(f"/tenants/{other}", headers=ADMIN).status_code == 200  # untouched

    wc = WcClient(api, tenant)
    token = apns_token()
    assert wc.send(registered(wc, "apns", token), new_id(), encrypted()).status_code == 202
    assert delivered(apns_sim, token) == 1


def test_fcm_v1_credentials_are_proved_at_upload(stack, admin, apns_sim, fcm_sim):
    """As the reference's tenant_update_fcm_v1_invalidated: a service account that gets no token is a 400, not stored."""
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    assert admin.post("/tenants", json={"id": tenant}, headers=ADMIN).status_code == 200
    unknown = simulator_credentials(stack, apns_sim, fcm_sim, tenant, register=False).service_account
    unreachable = {**simulator_credentials(stack, apns_sim, fcm_sim, tenant).service_account,
                   "token_uri": f"https://127.0.0.1:{free_port()}/token"}
    for account, reason in ((unknown, "invalid_grant"), (unreachable, "")):
        answer = upload_service_account(admin, tenant, account)
        assert answer.status_code == 400, answer.get_data(as_text=True)
        body = answer.get_json()
        assert body["errors"][0]["name"] == "BadFcmV1Credentials" and reason in body["errors"][0]["description"]
        assert [(f["field"], f["location"]) for f in body["fields"]] == [("credentials", "body")]
        assert admin.get(f"/tenants/{tenant}", headers=ADMIN).get_json()["fcm_project_id"] is None

    proved = simulator_credentials(stack, apns_sim, fcm_sim, tenant).service_account
    assert upload_service_account(admin, tenant, proved).status_code == 200
    assert admin.get(f"/tenants/{tenant}", headers=ADMIN).get_json()["fcm_project_id"] == proved["project_id"]


def eventually_suspended(admin, tenant: str) -> dict:
    """``GET /tenants/<tenant>`` once it says suspended (fails the test if it does not within the delivery timeout)."""

    def suspended():
        body = admin.get(f"/tenants/{tenant}", headers=ADMIN).get_json()
        return body if body["suspended"] else None

    return wait_for(suspended, timeout=DELIVERY_TIMEOUT, what=f"tenant {tenant} suspended")


def test_bad_credentials_suspend_the_provider_until_new_ones_arrive(stack, api, admin, apns_sim, fcm_sim):
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    assert admin.post("/tenants", json={"id": tenant}, headers=ADMIN).status_code == 200
    unknown_key = simulator_credentials(stack, apns_sim, fcm_sim, tenant, register=False)
    upload_credentials(admin, tenant, unknown_key, fcm=False)
    wc = WcClient(api, tenant)
    token = apns_token()
    client = registered(wc, "apns", token)
    assert wc.send(client, new_id(), encrypted()).status_code == 202

    body = eventually_suspended(admin, tenant)
    assert body and "apns" in body["suspended_providers"] and body["suspended_reason"]
    assert apns_sim.delivered(token) == 0

    upload_credentials(admin, tenant, simulator_credentials(stack, apns_sim, fcm_sim, tenant), fcm=False)
    assert admin.get(f"/tenants/{tenant}", headers=ADMIN).get_json()["suspended"] is False
    assert wc.send(client, new_id(), encrypted()).status_code == 202
    assert delivered(apns_sim, token) == 1


def upload_certificate(admin, tenant_id: str, p12: bytes | str, password: str | None, topic: str | None = None):
    """POST a .p12 (bytes: as a file; str: as base64 text) to the tenant's APNs credentials."""
    data: dict = {"apns_certificate": (io.BytesIO(p12), "apns.p12") if isinstance(p12, bytes) else p12}
    if password is not None:
        data["apns_certificate_password"] = password
    if topic is not None:
        data["apns_topic"] = topic
    return admin.post(f"/tenants/{tenant_id}/apns", headers=ADMIN, content_type="multipart/form-data", data=data)


def no_secrets(text: str) -> bool:
    return "BEGIN" not in text and "PRIVATE KEY" not in text and "CERTIFICATE-----" not in text


def test_certificate_tenant_delivers_with_the_client_certificate_and_no_token(stack, api, admin, new_tenant, apns_sim, fcm_sim, database):
    tenant = new_tenant()  # token credentials first: the certificate replaces them
    topic = f"com.example.{tenant}"
    p12 = apns_certificate_p12(topic, "s3cret", cert_dir=stack.cert_dir)
    answer = upload_certificate(admin, tenant, p12, "s3cret")
    assert answer.status_code == 200, answer.get_data(as_text=True)

    stored = database[mongo.APPS].find_one({"_id": tenant_app_id(tenant)})["apns"]
    assert stored["auth"] == "certificate" and "key_id" not in stored and stored["bundle"] == topic
    assert no_secrets(str(stored))  # sealed at rest (shared/sealed_credentials.py); opened where a client is built
    opened = CredentialKeys.parse(TEST_SETTINGS["PUSH_CREDENTIAL_KEYS"]).open(tenant_app_id(tenant), "apns", stored)
    assert "PRIVATE KEY" in opened["private_key"] and "CERTIFICATE" in opened["certificate"]
    tenant_answer = admin.get(f"/tenants/{tenant}", headers=ADMIN)
    body = tenant_answer.get_json()
    assert body["apns_type"] == "certificate" and body["apns_topic"] == topic and body["suspended"] is False
    assert body["apns_certificate_expires_at"] == stored["not_after"]
    assert no_secrets(tenant_answer.get_data(as_text=True))
    detail = admin.get("/admin/app/detail", query_string={"appId": tenant_app_id(tenant)})
    assert detail.status_code == 200 and no_secrets(detail.get_data(as_text=True))
    assert no_secrets(admin.get("/admin/app/list").get_data(as_text=True))

    wc = WcClient(api, tenant)
    token = apns_token()
    assert wc.send(registered(wc, "apns", token), new_id(), encrypted()).status_code == 202
    assert delivered(apns_sim, token) == 1
    seen = apns_sim.received(token)[-1]
    assert seen["auth"] == "certificate" and seen["certificate_topic"] == topic and seen["headers"]["apns-topic"] == topic

    # Base64 text without apns_topic: the topic comes from the certificate's UID. Then back to a token key.
    other = f"com.example.{tenant}.second"
    answer = upload_certificate(admin, tenant, base64.b64encode(apns_certificate_p12(other, "pw", cert_dir=stack.cert_dir)).decode(), "pw")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert admin.get(f"/tenants/{tenant}", headers=ADMIN).get_json()["apns_topic"] == other
    upload_credentials(admin, tenant, simulator_credentials(stack, apns_sim, fcm_sim, tenant), fcm=False)
    stored = database[mongo.APPS].find_one({"_id": tenant_app_id(tenant)})["apns"]
    assert "certificate" not in stored and admin.get(f"/tenants/{tenant}", headers=ADMIN).get_json()["apns_type"] == "token"

    # The key never reaches a log line.
    key_line = p12_key_line(p12, "s3cret")
    for log_file in (stack.var_dir / "logs").glob("*.log"):
        assert key_line not in log_file.read_text(errors="replace"), log_file


def p12_key_line(p12: bytes, password: str) -> str:
    """A line of the base64 body of the key's PEM: present in any text that holds the key."""
    return parse_p12(p12, password).private_key_pem.splitlines()[2]


def test_certificate_upload_faults_name_their_field(stack, admin, new_tenant):
    tenant = new_tenant()
    good = apns_certificate_p12("com.example.faults", "right", cert_dir=stack.cert_dir)
    cases = [
        (upload_certificate(admin, tenant, good, "wrong"), "apns_certificate_password"),
        (upload_certificate(admin, tenant, good, None), "apns_certificate_password"),
        (upload_certificate(admin, tenant, b"garbage, not a p12", "pw"), "apns_certificate"),
        (upload_certificate(admin, tenant, "bm90IGEgcDEy", "pw"), "apns_certificate"),
        (upload_certificate(admin, tenant, apns_certificate_p12("com.x", "pw", cert_dir=stack.cert_dir, valid_days=-1), "pw"), "apns_certificate"),
    ]
    for answer, field in cases:
        body = answer.get_json()
        assert answer.status_code == 400 and body["status"] == "FAILED", body
        assert body["fields"][0]["field"] == field and body["errors"][0]["name"] == "BadApnsCredentials", body
    both = admin.post(
        f"/tenants/{tenant}/apns",
        headers=ADMIN,
        content_type="multipart/form-data",
        data={"apns_certificate": (io.BytesIO(good), "apns.p12"), "apns_certificate_password": "right", "apns_key_id": "K1"},
    )
    assert both.status_code == 400 and both.get_json()["fields"][0]["field"] == "apns_certificate"
    assert admin.get(f"/tenants/{tenant}", headers=ADMIN).get_json()["apns_type"] == "token"  # nothing changed


def test_a_certificate_the_provider_refuses_at_tls_suspends_apns_until_a_good_one(stack, api, admin, apns_sim):
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    assert admin.post("/tenants", json={"id": tenant}, headers=ADMIN).status_code == 200
    topic = f"com.example.{tenant}"
    self_signed = apns_certificate_p12(topic, "pw", cert_dir=None)
    assert upload_certificate(admin, tenant, self_signed, "pw").status_code == 200
    wc = WcClient(api, tenant)
    token = apns_token()
    client = registered(wc, "apns", token)
    assert wc.send(client, new_id(), encrypted()).status_code == 202

    body = eventually_suspended(admin, tenant)
    assert body and "BadCertificate" in body["suspended_providers"]["apns"], body
    assert apns_sim.counts(token) == {"delivered": 0, "attempts": 0, "shown": 0}  # refused at TLS: no request got through

    assert upload_certificate(admin, tenant, apns_certificate_p12(topic, "pw", cert_dir=stack.cert_dir), "pw").status_code == 200
    assert admin.get(f"/tenants/{tenant}", headers=ADMIN).get_json()["suspended"] is False
    assert wc.send(client, new_id(), encrypted()).status_code == 202
    assert delivered(apns_sim, token) == 1


# --- 6. authentication --------------------------------------------------------------------------

def test_client_jwt_and_relay_signature_when_switched_on(stack, default_tenant, apns_sim):
    relay = Ed25519PrivateKey.generate()
    settings = load(
        stack.settings_env(),
        wc_push_validate_client_jwt=True,
        wc_push_validate_signatures=True,
        wc_push_relay_public_key=relay.public_key().public_bytes_raw().hex(),
    )
    client = create_app(settings).test_client()
    key = Ed25519PrivateKey.generate()
    client_id = did_key_for(key.public_key())
    token = apns_token()
    registration = {"client_id": client_id, "type": "apns", "token": token}

    assert client.post("/clients", json=registration).status_code == 401
    stranger = did_key_for(Ed25519PrivateKey.generate().public_key())
    mismatch = client.post("/clients", json={**registration, "client_id": stranger}, headers={"Authorization": f"Bearer {client_jwt(key)}"})
    assert mismatch.status_code == 401 and mismatch.get_json()["errors"][0]["name"] == "JwtIssuerMismatch"
    assert client.post("/clients", json=registration, headers={"Authorization": f"Bearer {client_jwt(key)}"}).status_code == 200

    body = json.dumps({"id": new_id(), "payload": encrypted()}).encode()
    timestamp = str(int(time.time()))
    good = {"X-Ed25519-Timestamp": timestamp, "X-Ed25519-Signature": relay.sign(signed_message(timestamp, body)).hex()}
    forged = {**good, "X-Ed25519-Signature": Ed25519PrivateKey.generate().sign(signed_message(timestamp, body)).hex()}
    assert client.post(f"/clients/{client_id}", data=body, content_type="application/json").status_code == 401
    assert client.post(f"/clients/{client_id}", data=body, content_type="application/json", headers=forged).status_code == 401
    # Signed by the relay, but a replay of long ago or not a time at all: refused, nothing delivered.
    for stale in ("1", "not-a-timestamp", str(int(time.time()) - 3600)):
        replay = {"X-Ed25519-Timestamp": stale, "X-Ed25519-Signature": relay.sign(signed_message(stale, body)).hex()}
        answer = client.post(f"/clients/{client_id}", data=body, content_type="application/json", headers=replay)
        assert answer.status_code == 401 and answer.get_json()["fields"][0]["field"] == "X-Ed25519-Timestamp"
    assert client.post(f"/clients/{client_id}", data=body, content_type="application/json", headers=good).status_code == 202
    assert delivered(apns_sim, token) == 1
    # Unregistering needs the client's own JWT.
    assert client.delete(f"/clients/{client_id}").status_code == 401
    assert client.delete(f"/clients/{client_id}", headers={"Authorization": f"Bearer {client_jwt(key)}"}).status_code == 200


# --- worker handlers on the stack's database: orderings the HTTP tests cannot force -------------

def register_cmd(tenant: str, client: str, token: str, ts: int, kind: str = "noop") -> dict:
    return {"id": new_id(), "kind": "wcp.client.register", "received_at": ts, "tenant_id": tenant, "client_id": client, "type": kind, "token": token}


def test_token_owner_is_the_newest_registration_whatever_the_apply_order(database):
    tenant = f"h-{uuid.uuid4().hex[:8]}"
    now = time.time_ns()
    # newer first, then the older one arrives late: the older must lose the token
    handlers.register_client(database, register_cmd(tenant, "b", "tok", now + 2))
    handlers.register_client(database, register_cmd(tenant, "a", "tok", now + 1))
    clients = database[mongo.WCP_CLIENTS]
    assert not clients.find_one({"_id": client_key(tenant, "b")})["deleted"]
    assert clients.find_one({"_id": client_key(tenant, "a")})["deleted"]
    # in order: the previous owner is evicted
    handlers.register_client(database, register_cmd(tenant, "c", "tok", now + 3))
    assert clients.find_one({"_id": client_key(tenant, "b")})["deleted"]
    assert not clients.find_one({"_id": client_key(tenant, "c")})["deleted"]
    # a client that moved to another token keeps it when its old token is taken
    handlers.register_client(database, register_cmd(tenant, "c", "tok2", now + 4))
    handlers.register_client(database, register_cmd(tenant, "d", "tok", now + 5))
    assert not clients.find_one({"_id": client_key(tenant, "c")})["deleted"]


def test_eviction_and_unregister_cancel_pending_deliveries(database):
    tenant = f"h-{uuid.uuid4().hex[:8]}"
    now = time.time_ns()
    handlers.register_client(database, register_cmd(tenant, "a", "tok", now, kind="fcm"))
    message_id = new_id()
    database[mongo.WCP_NOTIFICATIONS].insert_one(
        {"_id": f"{tenant}\ta\tn1", "tenant_id": tenant, "client_key": client_key(tenant, "a"), "message_id": message_id, "token": "tok", "platform": "fcm"}
    )
    chunk = ledger.chunk_document(message_id, "app", "fcm", 0, [ledger.Delivery(f"{message_id}:0:tok", "d", "tok", 0, None)], now=time.time())
    chunk["s"] = ledger.CHAR[ledger.RETRY]
    database[mongo.LEDGER].insert_one(chunk)
    handlers.register_client(database, register_cmd(tenant, "b", "tok", now + 1, kind="fcm"))
    (delivery,) = ledger.rows(database, [message_id])
    assert (delivery["state"], delivery["platform"]) == ("failed", "fcm") and delivery["reason"].startswith("token registered")
    assert database[mongo.WCP_NOTIFICATIONS].find_one({"_id": f"{tenant}\ta\tn1"}) is None

    handlers.delete_client(database, {"id": new_id(), "received_at": now + 2, "tenant_id": tenant, "client_id": "b"})
    assert database[mongo.WCP_CLIENTS].find_one({"_id": client_key(tenant, "b")})["deleted"]
    # a registration acknowledged before the unregister but applied after it stays deleted
    handlers.register_client(database, register_cmd(tenant, "b", "tok", now + 1, kind="fcm"))
    assert database[mongo.WCP_CLIENTS].find_one({"_id": client_key(tenant, "b")})["deleted"]
    # registered again, then its token taken: evicted again
    handlers.register_client(database, register_cmd(tenant, "b", "tok", now + 3, kind="fcm"))
    assert not database[mongo.WCP_CLIENTS].find_one({"_id": client_key(tenant, "b")})["deleted"]
    handlers.register_client(database, register_cmd(tenant, "e", "tok", now + 4, kind="fcm"))
    assert database[mongo.WCP_CLIENTS].find_one({"_id": client_key(tenant, "b")})["deleted"]


def test_a_redelivered_accepting_command_is_still_new_and_another_is_a_repeat(database):
    tenant = f"h-{uuid.uuid4().hex[:8]}"
    handlers.register_client(database, register_cmd(tenant, "a", "tok", time.time_ns()))
    notify = {
        "id": new_id(),
        "kind": "wcp.notify",
        "received_at": time.time_ns(),
        "tenant_id": tenant,
        "client_id": "a",
        "app_id": tenant_app_id(tenant),
        "notification_id": "n1",
        "notification": {"form": "legacy", "topic": "t", "flags": 1, "blob": "b"},
    }
    assert handlers.accept_notification(WriteContext(database), notify) == {"outcome": "new"}
    assert handlers.accept_notification(WriteContext(database), notify) == {"outcome": "new"}
    assert handlers.accept_notification(WriteContext(database), {**notify, "id": new_id()}) == {"outcome": "repeat"}
    assert handlers.accept_notification(WriteContext(database), {**notify, "client_id": "zz"}) == {"outcome": "client_not_found"}


def test_purge_forgets_old_notifications_and_tombstones_only(database):
    tenant = f"h-{uuid.uuid4().hex[:8]}"
    old_ns = time.time_ns() - 3600 * 10**9
    handlers.register_client(database, register_cmd(tenant, "gone", "t1", old_ns))
    handlers.delete_client(database, {"id": new_id(), "received_at": old_ns + 1, "tenant_id": tenant, "client_id": "gone"})
    handlers.register_client(database, register_cmd(tenant, "live", "t2", old_ns))
    notify = {
        "id": new_id(), "kind": "wcp.notify", "received_at": time.time_ns(), "tenant_id": tenant, "client_id": "live",
        "app_id": tenant_app_id(tenant), "notification_id": "fresh", "notification": {"form": "legacy", "topic": "t", "flags": 1, "blob": "b"},
    }
    assert handlers.accept_notification(WriteContext(database), notify) == {"outcome": "new"}
    handlers.purge(database, older_than_seconds=60)
    clients = database[mongo.WCP_CLIENTS]
    assert clients.find_one({"_id": client_key(tenant, "gone")}) is None
    assert clients.find_one({"_id": client_key(tenant, "live")}) is not None
    assert handlers.accept_notification(WriteContext(database), {**notify, "id": new_id()}) == {"outcome": "repeat"}
