"""Auth and limits without a stack: the app with fake services, each check tried from the wrong side."""
from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from api import auth
from api.errors import ApiError
from api.limits import TokenBuckets, check_payload
from shared import db as mongo
from shared.payload import Body
from shared.settings import load
from tests.unit import fakes
from workers.auth import RedactMessageArguments

ADMIN_KEY = "admin-" + "x" * 40


class FakeServices(fakes.FakeServices):
    """Documents by (collection, _id); API keys created and revoked by the writes."""

    def __init__(self, settings):
        super().__init__(settings)
        self.docs: dict = {}
        self.lookups = 0

    def find_one(self, collection, query, projection=None):
        self.lookups += collection == mongo.API_KEYS
        doc = self.docs.get((collection, query["_id"]))
        if doc is None or any(doc.get(k) != v for k, v in query.items() if k != "_id"):
            return None
        return dict(doc)

    def write(self, command):
        if command["kind"] == "auth.key.create":
            self.docs[(mongo.API_KEYS, command["key_id"])] = {
                "_id": command["key_id"], "app_id": command["app_id"], "hash": command["hash"], "revoked_at": None,
            }
        if command["kind"] == "auth.key.revoke":
            self.docs[(mongo.API_KEYS, command["key_id"])]["revoked_at"] = datetime.now(UTC)
        return super().write(command)


@pytest.fixture
def make_client():
    def make(**settings):
        # Keys and limits are tested here; what auth on requires besides (the WalletConnect relay checks, sealed
        # credentials) in test_wc_push.py and test_sealed_credentials.py.
        app, fake = fakes.app_with(FakeServices, wc_push_unauthenticated_allowed=True, credentials_unsealed_allowed=True, **settings)
        for app_id in ("app-a", "app-b"):
            fake.docs[(mongo.APPS, app_id)] = {
                "_id": app_id,
                "apns": {"bundle": "com.a", "key_id": "K", "team_id": "T", "private_key": "-----BEGIN PRIVATE KEY-----SECRET"},
                "fcm": {"project_id": "p", "service_account": {"private_key": "FCM-SECRET", "client_email": "x@y"}},
            }
        return app.test_client(), fake

    return make


@pytest.fixture
def secured(make_client):
    client, fake = make_client(auth_enabled=True, admin_key=ADMIN_KEY, auth_cache_seconds=0.0)
    return client, fake


def admin_headers() -> dict:
    return {"X-Api-Key": ADMIN_KEY}


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def create_key(client, app_id: str) -> str:
    answer = client.post("/admin/app/keys", json={"requestObject": {"appId": app_id, "name": "ci"}}, headers=admin_headers())
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_json()["responseObject"]["key"]


def powerauth_error(answer, status: int) -> dict:
    assert answer.status_code == status, answer.get_data(as_text=True)
    body = answer.get_json()
    assert body["status"] == "ERROR" and body["responseObject"]["code"], body
    return body["responseObject"]


def device(app_id: str = "app-a", token: str = "ab" * 32) -> dict:
    return {"requestObject": {"appId": app_id, "platform": "ios", "token": token, "userId": "u1"}}


# --- keys ---------------------------------------------------------------------------------------

def test_keys_have_an_id_and_only_their_digest_is_written(secured):
    client, fake = secured
    key = create_key(client, "app-a")
    key_id = auth.key_id_of(key)
    assert key_id and len(key) > 50
    command = fake.commands[-1]
    assert command["kind"] == "auth.key.create" and command["hash"] == auth.digest(key)
    assert key not in repr(command)
    assert auth.key_id_of("pk_nothex_x") is None and auth.key_id_of("eyJhbGciOi.jwt") is None


def test_missing_wrong_and_malformed_keys_are_401(secured):
    client, fake = secured
    key = create_key(client, "app-a")
    assert powerauth_error(client.post("/push/device/create", json=device()), 401)["code"] == "ERROR_UNAUTHORIZED"
    wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    powerauth_error(client.post("/push/device/create", json=device(), headers=bearer(wrong)), 401)
    powerauth_error(client.post("/push/device/create", json=device(), headers=bearer("pk_0000000000000000_guess")), 401)
    powerauth_error(client.post("/push/device/create", json=device(), headers={"Authorization": f"Basic {key}"}), 401)
    powerauth_error(client.post("/push/device/create", json=device(), headers=bearer("")), 401)
    assert not [c for c in fake.commands if c["kind"] == "device.register"]


def test_a_valid_key_works_in_either_header(secured):
    client, fake = secured
    key = create_key(client, "app-a")
    assert client.post("/push/device/create", json=device(), headers=bearer(key)).status_code == 200
    assert client.post("/push/device/create", json=device(), headers={"X-Api-Key": key}).status_code == 200
    assert [c["app_id"] for c in fake.commands if c["kind"] == "device.register"] == ["app-a", "app-a"]


def test_another_apps_key_is_403_and_writes_nothing(secured):
    client, fake = secured
    key_b = create_key(client, "app-b")
    error = powerauth_error(client.post("/push/device/create", json=device("app-a"), headers=bearer(key_b)), 403)
    assert "app-a" in error["message"]
    send = {"requestObject": {"appId": "app-a", "mode": "ASYNCHRONOUS", "message": {"userId": "u", "body": {"title": "x"}}}}
    powerauth_error(client.post("/push/message/send", json=send, headers=bearer(key_b)), 403)
    assert fake.published == []
    fake.docs[(mongo.MESSAGES, "m1")] = {"_id": "m1", "app_id": "app-a", "created_at": datetime.now(UTC)}
    powerauth_error(client.get("/push/message/m1/detail", headers=bearer(key_b)), 403)


def test_app_keys_do_not_open_admin_routes(secured):
    client, _ = secured
    key = create_key(client, "app-a")
    assert powerauth_error(client.get("/admin/app/list", headers=bearer(key)), 403)["code"] == "ERROR_FORBIDDEN"
    powerauth_error(client.post("/admin/app/keys", json={"requestObject": {"appId": "app-a"}}, headers=bearer(key)), 403)
    powerauth_error(client.get("/admin/app/detail?appId=app-a"), 401)
    powerauth_error(client.get("/admin/app/detail?appId=app-a", headers={"X-Api-Key": "not-the-admin-key"}), 401)


def test_rotation_two_keys_then_revoke_the_old_one(secured):
    client, fake = secured
    old, new = create_key(client, "app-a"), create_key(client, "app-a")
    for key in (old, new):
        assert client.post("/push/device/create", json=device(), headers=bearer(key)).status_code == 200
    revoke = {"requestObject": {"appId": "app-a", "keyId": auth.key_id_of(old)}}
    answer = client.delete("/admin/app/keys", json=revoke, headers=admin_headers())
    assert answer.status_code == 200 and answer.get_json()["responseObject"]["revoked"] is True
    powerauth_error(client.post("/push/device/create", json=device(), headers=bearer(old)), 401)
    assert client.post("/push/device/create", json=device(), headers=bearer(new)).status_code == 200
    # A key of another app cannot be revoked through this app.
    other = create_key(client, "app-b")
    revoke_other = {"requestObject": {"appId": "app-a", "keyId": auth.key_id_of(other)}}
    assert powerauth_error(client.post("/admin/app/keys/revoke", json=revoke_other, headers=admin_headers()), 400)["code"] == "ERROR_KEY_NOT_FOUND"


def test_auth_off_lets_everything_through_but_status_is_always_public(make_client, secured):
    client, _ = make_client()
    assert client.post("/push/device/create", json=device()).status_code == 200
    secured_client, _ = secured
    assert secured_client.get("/push/service/status").status_code == 200


def test_credentials_never_come_back_from_app_detail(secured):
    client, _ = secured
    answer = client.get("/admin/app/detail?appId=app-a", headers=admin_headers())
    assert answer.status_code == 200
    text = answer.get_data(as_text=True)
    assert "SECRET" not in text and "PRIVATE KEY" not in text
    assert answer.get_json()["responseObject"]["apnsPrivateKeyPresent"] is True


def test_tenant_management_takes_the_admin_key_too(make_client):
    client, fake = make_client(admin_key=ADMIN_KEY)
    answer = client.post("/tenants", json={"id": "acme"}, headers=bearer(ADMIN_KEY))
    assert answer.status_code == 200 and fake.commands[-1]["kind"] == "wcp.tenant.create"
    assert client.post("/tenants", json={"id": "acme"}, headers=bearer("nope")).status_code == 401
    both, _ = make_client(admin_key=ADMIN_KEY, wc_push_admin_token="s3cret")
    assert both.post("/tenants", json={"id": "acme"}, headers=bearer("s3cret")).status_code == 200


# --- limits -------------------------------------------------------------------------------------

def test_body_over_the_routes_limit_is_413_in_each_family(make_client):
    client, fake = make_client(api_max_small_body_bytes=1024)
    big = {"requestObject": {**device()["requestObject"], "userId": "u" * 2000}}
    assert powerauth_error(client.post("/push/device/create", json=big), 413)["code"] == "ERROR_HTTP_413"
    wc = client.post("/clients", json={"client_id": "c" * 2000, "type": "fcm", "token": "t"})
    assert wc.status_code == 413 and wc.get_json()["errors"][0]["name"] == "PayloadTooLarge"
    # The batch route takes the large limit.
    batch = {"requestObject": {"appId": "app-a", "mode": "ASYNCHRONOUS",
                               "batch": [{"userId": f"u{i}", "body": {"title": "x" * 50}} for i in range(30)]}}
    assert client.post("/push/message/batch/send", json=batch).status_code == 200
    assert not [c for c in fake.commands if c["kind"] == "device.register"]


def test_batch_and_campaign_users_over_their_limits_are_400(make_client):
    client, fake = make_client(max_batch_messages=3, max_campaign_users_per_request=5)
    batch = {"requestObject": {"appId": "app-a", "mode": "ASYNCHRONOUS", "batch": [{"userId": "u", "body": {"title": "x"}}] * 4}}
    error = powerauth_error(client.post("/push/message/batch/send", json=batch), 400)
    assert "requestObject.batch" in error["message"] and "3" in error["message"]
    assert fake.published == []
    batch["requestObject"]["batch"] = batch["requestObject"]["batch"][:3]
    assert client.post("/push/message/batch/send", json=batch).status_code == 200
    fake.docs[(mongo.CAMPAIGNS, "c1")] = {"_id": "c1", "app_id": "app-a", "body": {"title": "x"}}
    too_many = client.post("/push/campaign/c1/user/add", json={"requestObject": [f"u{i}" for i in range(6)]})
    assert "requestObject" in powerauth_error(too_many, 400)["message"]


def test_oversized_provider_payload_is_400_naming_the_field(make_client):
    client, fake = make_client()
    send = {"requestObject": {"appId": "app-a", "mode": "ASYNCHRONOUS",
                              "message": {"userId": "u", "body": {"title": "t", "body": "b" * 4000, "extras": {"k": "v" * 200}}}}}
    error = powerauth_error(client.post("/push/message/send", json=send), 400)
    assert error["message"].startswith("requestObject.message.body:") and "APNs" in error["message"]
    batch = {"requestObject": {"appId": "app-a", "mode": "ASYNCHRONOUS",
                               "batch": [{"userId": "u", "body": {"title": "ok"}}, {"userId": "u", "body": {"extras": {"k": "v" * 5000}}}]}}
    assert "requestObject.batch[1].body" in powerauth_error(client.post("/push/message/batch/send", json=batch), 400)["message"]
    campaign = {"requestObject": {"appId": "app-a", "message": {"title": "t", "body": "b" * 4096}}}
    assert "requestObject.message" in powerauth_error(client.post("/push/campaign/create", json=campaign), 400)["message"]
    assert fake.published == [] and not fake.commands


def test_a_batch_checks_each_distinct_body_once_and_still_names_the_oversized_one(make_client, monkeypatch):
    from api import limits  # noqa: PLC0415

    client, fake = make_client()
    checked = []
    real = limits.check_payload

    def counting(settings, body, field, **flags):
        checked.append(field)
        return real(settings, body, field, **flags)

    monkeypatch.setattr(limits, "check_payload", counting)
    same = [{"userId": f"u{i}", "body": {"title": "t", "body": "b"}} for i in range(50)]
    silent = {"userId": "s", "body": {"title": "t", "body": "b"}, "attributes": {"silent": True}}
    batch = {"requestObject": {"appId": "app-a", "mode": "ASYNCHRONOUS", "batch": [*same, silent, {"userId": "o", "body": {"title": "o"}}]}}
    assert client.post("/push/message/batch/send", json=batch).status_code == 200
    assert checked == ["requestObject.batch[0].body", "requestObject.batch[50].body", "requestObject.batch[51].body"]
    odd = {"userId": "x", "body": {"title": "t", "zz": [[-35603648108501380926846009344]]}}  # found by make fuzz: a 500
    batch["requestObject"]["batch"] = [odd, odd]
    checked.clear()
    assert client.post("/push/message/batch/send", json=batch).status_code == 200, "a body orjson cannot write: no 500"
    assert checked == ["requestObject.batch[0].body", "requestObject.batch[1].body"], "checked at each message"
    big = {"userId": "u", "body": {"extras": {"k": "v" * 5000}}}
    batch["requestObject"]["batch"] = [same[0], same[1], big, same[2]]
    published = len(fake.published)
    assert "requestObject.batch[2].body" in powerauth_error(client.post("/push/message/batch/send", json=batch), 400)["message"]
    assert len(fake.published) == published


def test_check_payload_measures_each_provider():
    settings = load({})
    check_payload(settings, Body(title="t", body="x" * 3800), "b", silent=False, high_priority=True)
    with pytest.raises(ApiError) as apns:
        check_payload(settings, Body(title="t", body="x" * 4100), "b", silent=False, high_priority=True)
    assert apns.value.status == 400 and apns.value.field == "b" and "APNs" in apns.value.message
    # FCM data values are strings: nested extras grow by escaping, APNs stays under its limit.
    nested = {"k": {"q": '"' * 1900}}
    with pytest.raises(ApiError) as fcm:
        check_payload(load({}, max_apns_payload_bytes=8192), Body(extras=nested), "b", silent=True, high_priority=False)
    assert "FCM" in fcm.value.message
    # HMS data is one string, the extras' JSON text: a string extra is escaped twice there, once on FCM and APNs.
    quoted = {"k": '"' * 1500}
    check_payload(load({}, max_hms_payload_bytes=8192), Body(title="t", extras=quoted), "b", silent=False, high_priority=True)
    with pytest.raises(ApiError) as hms:
        check_payload(settings, Body(title="t", extras=quoted), "b", silent=False, high_priority=True)
    assert hms.value.field == "b" and "HMS" in hms.value.message and "4096" in hms.value.message


def test_token_bucket_allows_a_burst_then_answers_the_wait():
    now = [100.0]
    buckets = TokenBuckets(rate=2.0, burst=3, clock=lambda: now[0])
    assert [buckets.take("ip") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = buckets.take("ip")
    assert 0.4 < wait <= 0.5
    assert buckets.take("other") == 0.0
    now[0] += 0.5
    assert buckets.take("ip") == 0.0


def test_registration_rate_limit_per_ip_is_429_with_retry_after(make_client):
    client, fake = make_client(rate_limit_ip_per_second=0.01, rate_limit_ip_burst=2)
    answers = [client.post("/push/device/create", json=device(token=f"{i:02x}" * 32)) for i in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 429, 429]
    error = powerauth_error(answers[2], 429)
    assert error["code"] == "ERROR_TOO_MANY_REQUESTS" and int(answers[2].headers["Retry-After"]) >= 1
    assert len([c for c in fake.commands if c["kind"] == "device.register"]) == 2
    wc = client.post("/clients", json={"client_id": "c1", "type": "fcm", "token": "t"})
    assert wc.status_code == 429 and wc.get_json()["errors"][0]["name"] == "TooManyRequests" and wc.headers["Retry-After"]
    # Other routes are not rate limited.
    assert client.get("/push/service/status").status_code == 200


def test_registration_rate_limit_per_key(make_client):
    client, fake = make_client(auth_enabled=True, admin_key=ADMIN_KEY, rate_limit_key_per_second=0.01, rate_limit_key_burst=2)
    key_a, key_b = create_key(client, "app-a"), create_key(client, "app-b")
    codes = [client.post("/push/device/create", json=device(), headers=bearer(key_a)).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert client.post("/push/device/create", json=device("app-b"), headers=bearer(key_b)).status_code == 200


def test_key_lookups_are_cached_for_the_setting(make_client):
    client, fake = make_client(auth_enabled=True, admin_key=ADMIN_KEY, auth_cache_seconds=60.0)
    key = create_key(client, "app-a")
    for _ in range(3):
        assert client.post("/push/device/create", json=device(), headers=bearer(key)).status_code == 200
    assert fake.lookups == 1


def test_dramatiq_message_logs_lose_their_arguments():
    class Message:
        actor_name, message_id = "apply_write", "m-1"

        def __str__(self):
            return "apply_write({'credentials': {'private_key': 'SECRET'}})"

    record = logging.LogRecord("dramatiq.worker.WorkerThread", logging.ERROR, __file__, 1, "Failed %s", (Message(),), None)
    RedactMessageArguments().filter(record)
    assert "SECRET" not in record.getMessage() and "m-1" in record.getMessage()


def test_secrets_stay_out_of_the_settings_repr():
    settings = load({"PUSH_ADMIN_KEY": "adm1n-secret", "PUSH_WC_PUSH_ADMIN_TOKEN": "wc-secret", "PUSH_AUTH_ENABLED": "true"})
    assert settings.auth_enabled and settings.admin_key == "adm1n-secret"
    assert "adm1n-secret" not in repr(settings) and "wc-secret" not in repr(settings)


# --- the audit log of admin actions -----------------------------------------------------------------

def test_admin_actions_are_audited_with_who_and_what_and_never_a_secret(secured):
    import base64
    import json as json_module

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    client, fake = secured
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    apns = {"appId": "app-a", "bundle": "com.a", "keyId": "K1", "teamId": "T1", "privateKeyBase64": base64.b64encode(pem).decode()}
    assert client.post("/admin/app/apns", json={"requestObject": apns}, headers={"X-Api-Key": ADMIN_KEY}).status_code == 200
    created = client.post("/admin/app/keys", json={"requestObject": {"appId": "app-a", "name": "ci"}}, headers={"X-Api-Key": ADMIN_KEY})
    app_key = created.get_json()["responseObject"]["key"]
    assert client.post("/admin/app/create", json={"requestObject": {"appId": "x"}}, headers={"X-Api-Key": app_key}).status_code == 403
    assert client.get("/admin/app/detail?appId=app-a", headers={"X-Api-Key": ADMIN_KEY}).status_code == 200  # reads are not audited

    entries = [(e["who"], e["action"], e["status"], e["target"]) for e in fake.audited]
    key_id = created.get_json()["responseObject"]["keyId"]
    assert entries == [
        ("admin", "POST /admin/app/apns", 200, {"appId": "app-a", "keyId": "K1"}),
        ("admin", "POST /admin/app/keys", 200, {"appId": "app-a", "name": "ci"}),
        (f"app:app-a:{key_id}", "POST /admin/app/create", 403, {"appId": "x"}),
    ]
    written = json_module.dumps(fake.audited)
    assert "PRIVATE KEY" not in written and apns["privateKeyBase64"] not in written and app_key not in written
    assert ADMIN_KEY not in written
