"""Auth and limits on the real stack: a second API with auth on, and every check tried from the wrong side."""
from __future__ import annotations

import base64
import secrets
import threading
import time
import uuid

import pymongo
import pytest
import requests

from devstack.stack import free_port
from shared import db as mongo
from tests import waiting
from tests.integration.conftest import apns_token
from workers import auth as key_writes

ADMIN_KEY = secrets.token_urlsafe(32)
ADMIN = {"X-Api-Key": ADMIN_KEY}
SECURED_ENV = {
    "PUSH_AUTH_ENABLED": "true",
    # Keys and limits are tested here; the WalletConnect relay checks in test_wc_push.py.
    "PUSH_WC_PUSH_UNAUTHENTICATED_ALLOWED": "true",
    "PUSH_ADMIN_KEY": ADMIN_KEY,
    "PUSH_AUTH_CACHE_SECONDS": "0.5",
    "PUSH_MAX_BATCH_MESSAGES": "5",
    "PUSH_MAX_CAMPAIGN_USERS_PER_REQUEST": "10",
    "PUSH_API_MAX_SMALL_BODY_BYTES": "16384",
    "PUSH_API_SYNC_WAIT_SECONDS": "60",
}


class Client:
    def __init__(self, base_url: str):
        self.base_url = base_url
        self.session = requests.Session()

    def call(self, method: str, path: str, request_object=None, *, headers=None, raw=None, **kwargs):
        body = raw if raw is not None else ({"requestObject": request_object} if request_object is not None else None)
        return self.session.request(method, self.base_url + path, json=body, headers=headers or {}, timeout=90, **kwargs)

    def post(self, path: str, request_object=None, **kwargs):
        return self.call("POST", path, request_object, **kwargs)

    def new_key(self, app_id: str) -> str:
        answer = self.post("/admin/app/keys", {"appId": app_id, "name": "test"}, headers=ADMIN)
        assert answer.status_code == 200, answer.text
        return answer.json()["responseObject"]["key"]


@pytest.fixture(scope="module")
def secured(stack):
    name = f"api-auth-{uuid.uuid4().hex[:6]}"
    url = stack.start_api(name=name, port=free_port(), env=SECURED_ENV)
    try:
        yield Client(url)
    finally:
        stack.stop(name)


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def error_of(answer, status: int) -> dict:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["status"] == "ERROR" and body["responseObject"]["code"], body
    return body["responseObject"]


def device(app_id: str, token: str | None = None, user: str = "u-auth") -> dict:
    return {"appId": app_id, "platform": "ios", "token": token or apns_token(), "userId": user}


def test_app_keys_gate_the_device_and_sending_apis(secured, new_app, apns_sim):
    app_a, app_b = new_app(), new_app()
    key_a, key_b = secured.new_key(app_a), secured.new_key(app_b)
    token = apns_token()

    assert error_of(secured.post("/push/device/create", device(app_a, token)), 401)["code"] == "ERROR_UNAUTHORIZED"
    error_of(secured.post("/push/device/create", device(app_a, token), headers=bearer(key_a[:-3] + "xyz")), 401)
    error_of(secured.post("/push/device/create", device(app_a, token), headers={"X-Api-Key": ADMIN_KEY[:-1]}), 401)
    assert "app" in error_of(secured.post("/push/device/create", device(app_a, token), headers=bearer(key_b)), 403)["message"]

    assert secured.post("/push/device/create", device(app_a, token), headers={"X-Api-Key": key_a}).status_code == 200
    send = {"appId": app_a, "message": {"userId": "u-auth", "body": {"title": "keyed"}}}
    error_of(secured.post("/push/message/send", send, headers=bearer(key_b)), 403)
    answer = secured.post("/push/message/send", send, headers=bearer(key_a))
    assert answer.status_code == 200, answer.text
    body = answer.json()["responseObject"]
    assert body["result"]["apns"]["sent"] == 1
    assert apns_sim.delivered(token) == 1
    message_id = body["messageId"]
    error_of(secured.call("GET", f"/push/message/{message_id}/detail", headers=bearer(key_b)), 403)
    assert secured.call("GET", f"/push/message/{message_id}/detail", headers=bearer(key_a)).status_code == 200


def test_admin_routes_need_the_admin_key_and_never_answer_credentials(secured, new_app):
    app_id = new_app()
    key = secured.new_key(app_id)
    error_of(secured.call("GET", "/admin/app/list"), 401)
    assert error_of(secured.call("GET", "/admin/app/list", headers=bearer(key)), 403)["code"] == "ERROR_FORBIDDEN"
    error_of(secured.post("/admin/app/create", {"appId": "sneaky"}, headers=bearer(key)), 403)
    error_of(secured.post("/admin/app/keys", {"appId": app_id}, headers=bearer(key)), 403)
    for path in ("/admin/app/list", f"/admin/app/detail?appId={app_id}", f"/admin/app/keys?appId={app_id}"):
        answer = secured.call("GET", path, headers=ADMIN)
        assert answer.status_code == 200, answer.text
        assert "PRIVATE KEY" not in answer.text and "private_key" not in answer.text and '"hash"' not in answer.text
        assert key not in answer.text and key.split("_", 2)[2] not in answer.text
    # Tenant management (WalletConnect push API) takes the admin key too.
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    assert secured.post("/tenants", raw={"id": tenant}, headers=bearer(ADMIN_KEY)).status_code == 200
    assert secured.post("/tenants", raw={"id": tenant + "x"}, headers=bearer(key)).status_code == 401
    got = secured.call("GET", f"/tenants/{tenant}", headers=bearer(ADMIN_KEY))
    assert got.status_code == 200 and "private" not in got.text.lower()


def test_rotation_keeps_the_new_key_working_while_the_old_one_is_revoked(secured, new_app):
    app_id = new_app()
    old, new = secured.new_key(app_id), secured.new_key(app_id)
    failures: list = []
    stop = threading.Event()

    def keep_registering() -> None:
        session = requests.Session()
        while not stop.is_set():
            answer = session.post(
                secured.base_url + "/push/device/create", json={"requestObject": device(app_id)}, headers=bearer(new), timeout=60
            )
            if answer.status_code != 200:
                failures.append(answer.text)

    worker = threading.Thread(target=keep_registering)
    worker.start()
    try:
        assert secured.post("/push/device/create", device(app_id), headers=bearer(old)).status_code == 200
        revoked = secured.call("DELETE", "/admin/app/keys", {"appId": app_id, "keyId": old.split("_")[1]}, headers=ADMIN)
        assert revoked.status_code == 200, revoked.text
        deadline = time.monotonic() + 10
        status = None
        while time.monotonic() < deadline:
            status = secured.post("/push/device/create", device(app_id), headers=bearer(old)).status_code
            if status == 401:
                break
            time.sleep(0.1)
        assert status == 401
        time.sleep(1.0)  # every API process's cache has expired: the revoked key stays refused
        for _ in range(5):
            error_of(secured.post("/push/device/create", device(app_id), headers=bearer(old)), 401)
    finally:
        stop.set()
        worker.join()
    assert failures == []
    keys = secured.call("GET", f"/admin/app/keys?appId={app_id}", headers=ADMIN).json()["responseObject"]["keys"]
    assert sorted(k["revoked"] for k in keys) == [False, True]


def test_limits_answer_before_anything_is_enqueued(secured, new_app):
    app_id = new_app()
    key = secured.new_key(app_id)
    headers = bearer(key)

    big = device(app_id, user="u" * 20_000)
    assert error_of(secured.post("/push/device/create", big, headers=headers), 413)["code"] == "ERROR_HTTP_413"
    # No Content-Length (chunked): never read past the limit (413), or not read at all (werkzeug reads no
    # unterminated stream: the body is missing, 400). Either way nothing is written.
    chunk = b'{"requestObject": {"appId": "' + app_id.encode() + b'", "userId": "' + b"u" * 40_000 + b'"}}'
    chunked = requests.post(
        secured.base_url + "/push/device/create",
        data=(chunk[i:i + 4096] for i in range(0, len(chunk), 4096)),
        headers={**headers, "Content-Type": "application/json"},
        timeout=60,
    )
    assert error_of(chunked, chunked.status_code)["code"] in ("ERROR_HTTP_413", "ERROR_GENERIC") and chunked.status_code in (400, 413)
    # An admin route's oversized body: 413, also past the audit hook that reads admin writes' bodies (was a 500, make fuzz).
    admin_big = secured.post("/admin/app/android/update", {"appId": app_id, "projectId": "p" * 3_000_000}, headers=ADMIN)
    assert error_of(admin_big, 413)["code"] == "ERROR_HTTP_413"
    wc = secured.post("/clients", raw={"client_id": "c" * 20_000, "type": "fcm", "token": "t"})
    assert wc.status_code == 413 and wc.json()["errors"][0]["name"] == "PayloadTooLarge"

    batch = {"appId": app_id, "mode": "ASYNCHRONOUS", "batch": [{"userId": "u", "body": {"title": "x"}}] * 6}
    assert "at most 5" in error_of(secured.post("/push/message/batch/send", batch, headers=headers), 400)["message"]

    oversized = {"appId": app_id, "mode": "ASYNCHRONOUS", "message": {"userId": "u", "body": {"title": "t", "body": "é" * 2100}}}
    message = error_of(secured.post("/push/message/send", oversized, headers=headers), 400)["message"]
    assert message.startswith("requestObject.message.body:") and "APNs" in message
    data_heavy = {"appId": app_id, "mode": "ASYNCHRONOUS",
                  "batch": [{"userId": "u", "attributes": {"silent": True}, "body": {"extras": {"blob": base64.b64encode(b"x" * 3500).decode()}}}]}
    assert "requestObject.batch[0].body" in error_of(secured.post("/push/message/batch/send", data_heavy, headers=headers), 400)["message"]

    created = secured.post("/push/campaign/create", {"appId": app_id, "message": {"title": "c"}}, headers=headers)
    assert created.status_code == 200, created.text
    campaign = created.json()["responseObject"]["id"]
    too_many = secured.call("PUT", f"/push/campaign/{campaign}/user/add", raw={"requestObject": [f"u{i}" for i in range(11)]}, headers=headers)
    error_of(too_many, 400)
    fine = secured.call("PUT", f"/push/campaign/{campaign}/user/add", raw={"requestObject": [f"u{i}" for i in range(10)]}, headers=headers)
    assert fine.status_code == 200, fine.text
    other = secured.new_key(new_app())
    error_of(secured.call("GET", f"/push/campaign/{campaign}/detail", headers=bearer(other)), 403)
    error_of(secured.call("DELETE", f"/push/campaign/{campaign}/delete", headers=bearer(other)), 403)
    listed = secured.call("GET", "/push/campaign/list?all=true", headers=bearer(other)).json()["responseObject"]
    assert campaign not in [c["id"] for c in listed]
    assert campaign in [c["id"] for c in secured.call("GET", "/push/campaign/list?all=true", headers=headers).json()["responseObject"]]


def test_registration_rate_limit_answers_429_with_retry_after(stack, new_app):
    app_id = new_app()
    name = f"api-rate-{uuid.uuid4().hex[:6]}"
    url = stack.start_api(
        name=name, port=free_port(), env={"PUSH_RATE_LIMIT_IP_PER_SECOND": "0.5", "PUSH_RATE_LIMIT_IP_BURST": "3"}
    )
    try:
        client = Client(url)
        answers = [client.post("/push/device/create", device(app_id)) for _ in range(20)]
        codes = [a.status_code for a in answers]
        assert set(codes) <= {200, 429}, codes
        limited = [a for a in answers if a.status_code == 429]
        assert limited, codes
        # Buckets are per API process: at most burst × processes (plus what refilled meanwhile) got through.
        assert codes.count(200) <= 3 * stack.api_workers + 4, codes
        error = error_of(limited[0], 429)
        assert error["code"] == "ERROR_TOO_MANY_REQUESTS"
        retry_after = int(limited[0].headers["Retry-After"])
        assert 1 <= retry_after <= 2
        # Other routes are not limited; after Retry-After a registration passes again.
        assert client.call("GET", "/push/service/status").status_code == 200
        time.sleep(retry_after + 0.5)
        assert 200 in [client.post("/push/device/create", device(app_id)).status_code for _ in range(2 * stack.api_workers)]
    finally:
        stack.stop(name)


def test_credentials_are_never_logged(stack, new_app):
    new_app()
    logs = stack.var_dir / "logs"
    leaks = [path.name for path in logs.glob("*.log") if "PRIVATE KEY" in path.read_text(errors="replace")]
    assert leaks == []


def test_key_writes_are_idempotent_in_any_order(stack):
    # nx-27017 serves one database whatever the name: use the stack's, with fresh key ids.
    client = pymongo.MongoClient(stack.mongo_uri, tz_aware=True)
    db = client["push"]
    k1, k2 = f"t{uuid.uuid4().hex[:12]}", f"t{uuid.uuid4().hex[:12]}"
    try:
        create = {"key_id": k1, "app_id": "a", "hash": "h1", "name": None}
        key_writes.create_key(db, create)
        key_writes.create_key(db, create)  # redelivered
        assert [d["_id"] for d in db[mongo.API_KEYS].find({"_id": {"$in": [k1, k2]}})] == [k1]
        key_writes.revoke_key(db, {"key_id": k2, "app_id": "a"})  # the revoke lands first
        key_writes.create_key(db, {"key_id": k2, "app_id": "a", "hash": "h2"})
        doc = db[mongo.API_KEYS].find_one({"_id": k2})
        assert doc["revoked_at"] is not None and doc["hash"] is None
    finally:
        db[mongo.API_KEYS].delete_many({"_id": {"$in": [k1, k2]}})
        client.close()


def personal_send(app_id: str, user: str) -> dict:
    return {"appId": app_id, "message": {"userId": user, "attributes": {"personal": True}, "body": {"title": "personal"}}}


def test_an_apps_key_sets_activation_status_for_its_own_app_only(secured, new_app, apns_sim):
    """App A's key presetting BLOCKED for an activation does not block it for app B, which registers it later."""
    app_a, app_b = new_app(), new_app()
    key_a, key_b = secured.new_key(app_a), secured.new_key(app_b)
    activation, token_a, token_b = f"act-{uuid.uuid4().hex[:8]}", apns_token(), apns_token()
    status = {"activationId": activation, "activationStatus": "BLOCKED"}
    assert secured.post("/push/device/status/update", status, headers=bearer(key_a)).status_code == 200
    for app_id, key, token in ((app_a, key_a, token_a), (app_b, key_b, token_b)):
        registration = {**device(app_id, token, user="u-act"), "activationId": activation}
        assert secured.post("/push/device/create", registration, headers=bearer(key)).status_code == 200
    for app_id, key, reached in ((app_a, key_a, 0), (app_b, key_b, 1)):
        answer = secured.post("/push/message/send", personal_send(app_id, "u-act"), headers=bearer(key))
        assert answer.status_code == 200, answer.text
        assert answer.json()["responseObject"]["result"]["apns"]["total"] == reached, (app_id, answer.text)
    assert (apns_sim.delivered(token_a), apns_sim.delivered(token_b)) == (0, 1)
    # The admin's status applies to every app, and a newer app status overrides it again.
    assert secured.post("/push/device/status/update", status, headers=ADMIN).status_code == 200
    answer = secured.post("/push/message/send", personal_send(app_b, "u-act"), headers=bearer(key_b))
    assert answer.json()["responseObject"]["result"]["apns"]["total"] == 0
    active = {"activationId": activation, "activationStatus": "ACTIVE"}
    assert secured.post("/push/device/status/update", active, headers=bearer(key_a)).status_code == 403  # B's device holds it
    assert secured.post("/push/device/status/update", active, headers=bearer(key_b)).status_code == 403  # A's device holds it too


def test_the_audit_log_names_who_did_what_and_only_the_admin_reads_it(secured, new_app):
    app_id = new_app()
    created = secured.post("/admin/app/keys", {"appId": app_id, "name": "audited"}, headers=ADMIN)
    key, key_id = created.json()["responseObject"]["key"], created.json()["responseObject"]["keyId"]
    assert secured.post("/admin/app/keys/revoke", {"appId": app_id, "keyId": key_id}, headers=ADMIN).status_code == 200
    other_key = secured.new_key(app_id)
    error_of(secured.post("/admin/app/create", {"appId": "audit-sneaky"}, headers=bearer(other_key)), 403)
    error_of(secured.call("GET", "/admin/audit", headers=bearer(other_key)), 403)

    def entries() -> list[dict]:
        answer = secured.call("GET", "/admin/audit", headers=ADMIN, params={"limit": 50})
        assert answer.status_code == 200, answer.text
        return answer.json()["items"]

    wanted = {("POST /admin/app/keys", "admin", 200), ("POST /admin/app/keys/revoke", "admin", 200),
              ("POST /admin/app/create", f"app:{app_id}:{other_key.split('_')[1]}", 403)}
    def seen() -> set:
        return {(e["action"], e["who"], e["status"]) for e in entries() if e["target"].get("appId") in (app_id, "audit-sneaky")}

    waiting.wait_for(lambda: wanted <= seen(), timeout=30, what="the three audit entries")
    revoke = next(e for e in entries() if e["action"] == "POST /admin/app/keys/revoke" and e["target"].get("keyId") == key_id)
    assert revoke["target"] == {"appId": app_id, "keyId": key_id} and revoke["at"]
    log_text = secured.call("GET", "/admin/audit", headers=ADMIN, params={"limit": 1000}).text
    assert key not in log_text and other_key not in log_text and ADMIN_KEY not in log_text
