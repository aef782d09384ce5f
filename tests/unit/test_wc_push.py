"""WalletConnect push server API: payload mapping, authentication, and the routes' validation (no stack)."""
from __future__ import annotations

import base64
import json
import time

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from api.app import create_app
from api.wc_push_auth import (
    AuthError,
    base58_decode,
    base58_encode,
    did_key_for,
    did_key_public_key,
    signed_message,
    verify_client_jwt,
    verify_relay_signature,
)
from shared import db as mongo
from shared.payload import Body, apns_push, fcm_message
from shared.settings import load
from shared.wc_payload import (
    ENCRYPTED,
    LEGACY,
    NOTIFY,
    PLACEHOLDER_TITLE,
    RAW,
    Notification,
    PayloadError,
    body_for,
    decode_cleartext,
    flag_names,
    raw_message_id,
)
from shared.wc_push import client_key, device_id, notification_key, tenant_app_id
from tests.unit import fakes


def cleartext(title="Hello", body="World", **extra) -> str:
    return base64.b64encode(json.dumps({"title": title, "body": body, **extra}).encode()).decode()


# --- payload mapping ----------------------------------------------------------------------------

def apns_payload(notification: Notification) -> dict:
    body, silent = body_for(notification, "apns")
    return orjson.loads(apns_push(Body.from_json(body.to_json()), silent=silent, high_priority=True).payload)


def fcm_payload(notification: Notification) -> dict:
    body, silent = body_for(notification, "fcm")
    return fcm_message(Body.from_json(body.to_json()), silent=silent, high_priority=True)


def test_flags_are_the_seed_bitmask():
    assert flag_names(ENCRYPTED | NOTIFY) == ["encrypted", "notify"]
    assert flag_names(0b11111) == ["encrypted", "sign", "auth", "chat", "notify"]


def test_encrypted_legacy_goes_as_data_for_the_app_to_decrypt():
    notification = Notification(form=LEGACY, topic="t1", flags=ENCRYPTED | NOTIFY, blob="c2VjcmV0")
    apns = apns_payload(notification)
    assert apns["aps"]["mutable-content"] == 1
    assert apns["aps"]["alert"] == {"title": PLACEHOLDER_TITLE}
    assert (apns["topic"], apns["blob"], apns["flags"]) == ("t1", "c2VjcmV0", 17)
    fcm = fcm_payload(notification)
    assert "notification" not in fcm["android"]
    assert fcm["data"] == {"topic": "t1", "blob": "c2VjcmV0", "flags": "17"}


def test_cleartext_legacy_shows_the_blobs_title_and_body():
    notification = Notification(form=LEGACY, topic="t1", flags=NOTIFY, blob=cleartext("Sign request", "Approve?"))
    apns = apns_payload(notification)
    assert apns["aps"]["alert"] == {"title": "Sign request", "body": "Approve?"}
    assert apns["aps"]["mutable-content"] == 1 and apns["topic"] == "t1"
    fcm = fcm_payload(notification)
    assert fcm["android"]["notification"] == {"title": "Sign request", "body": "Approve?"}
    assert fcm["data"]["topic"] == "t1"


def test_raw_form_carries_topic_tag_and_message():
    notification = Notification(form=RAW, topic="t2", tag=4000, message="ciphertext")
    apns = apns_payload(notification)
    assert (apns["topic"], apns["tag"], apns["message"]) == ("t2", 4000, "ciphertext")
    assert apns["aps"]["mutable-content"] == 1
    assert fcm_payload(notification)["data"] == {"topic": "t2", "tag": "4000", "message": "ciphertext"}


def test_a_cleartext_blob_must_be_base64_json_with_title_and_body():
    assert decode_cleartext(cleartext("a", "b", url="https://x"))["url"] == "https://x"
    for bad in ("not base64!", base64.b64encode(b"[1]").decode(), base64.b64encode(b'{"title": 1}').decode()):
        with pytest.raises(PayloadError) as error:
            decode_cleartext(bad)
        assert error.value.field == "payload.blob"


def test_notification_round_trips_and_raw_ids_are_the_message_hash():
    for notification in (Notification(form=RAW, topic="t", tag=1, message="m"), Notification(form=LEGACY, topic="t", flags=1, blob="b")):
        assert Notification.from_json(notification.to_json()) == notification
    assert raw_message_id("m") == raw_message_id("m") != raw_message_id("n")


def test_keys_split_back_unambiguously():
    key = client_key("tenant", "client:with:colons")
    assert device_id(key, "tok").rpartition("\t") == (key, "\t", "tok")
    assert notification_key("t", "c", "a\tb").split("\t", 2) == ["t", "c", "a\tb"]
    assert tenant_app_id("acme") == "wcp:acme"


# --- authentication -----------------------------------------------------------------------------

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def client_jwt(key: Ed25519PrivateKey, *, iss: str | None = None, exp: float | None = None, alg: str = "EdDSA") -> str:
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    claims = {"iss": iss or did_key_for(key.public_key()), "sub": "s", "aud": "https://push", "iat": int(time.time())}
    claims["exp"] = int(exp if exp is not None else time.time() + 3600)
    payload = b64url(json.dumps(claims).encode())
    return f"{header}.{payload}.{b64url(key.sign(f'{header}.{payload}'.encode()))}"


def test_base58_round_trip_and_did_key():
    for data in (b"", b"\x00\x00abc", bytes(range(40))):
        assert base58_decode(base58_encode(data)) == data
    key = Ed25519PrivateKey.generate()
    did = did_key_for(key.public_key())
    assert did.startswith("did:key:z6Mk")
    assert did_key_public_key(did).public_bytes_raw() == key.public_key().public_bytes_raw()


def test_client_jwt_issuer_must_be_the_client_id():
    key = Ed25519PrivateKey.generate()
    did = did_key_for(key.public_key())
    token = client_jwt(key)
    assert verify_client_jwt(f"Bearer {token}", did)["iss"] == did
    assert verify_client_jwt(f"Bearer {token}", did.removeprefix("did:key:"))
    other = did_key_for(Ed25519PrivateKey.generate().public_key())
    with pytest.raises(AuthError) as error:
        verify_client_jwt(f"Bearer {token}", other)
    assert error.value.name == "JwtIssuerMismatch"


@pytest.mark.parametrize(
    ("authorization", "name"),
    [
        (None, "MissingJwt"),
        ("Basic abc", "InvalidJwt"),
        ("Bearer a.b", "InvalidJwt"),
    ],
)
def test_client_jwt_refusals(authorization, name):
    with pytest.raises(AuthError) as error:
        verify_client_jwt(authorization, "z6Mk")
    assert error.value.name == name and error.value.field == "Authorization"


def test_client_jwt_signed_by_another_key_or_expired_is_refused():
    key, impostor = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    did = did_key_for(key.public_key())
    with pytest.raises(AuthError, match="signature"):
        verify_client_jwt(f"Bearer {client_jwt(impostor, iss=did)}", did)
    with pytest.raises(AuthError) as error:
        verify_client_jwt(f"Bearer {client_jwt(key, exp=time.time() - 3600)}", did)
    assert error.value.name == "ExpiredJwt"
    with pytest.raises(AuthError, match="EdDSA"):
        verify_client_jwt(f"Bearer {client_jwt(key, alg='HS256')}", did)


def test_relay_signature_covers_timestamp_length_and_body():
    relay = Ed25519PrivateKey.generate()
    body = b'{"id":"1","payload":{"topic":"t","flags":1,"blob":"b"}}'
    now = 1_800_000_000
    signature = relay.sign(signed_message(str(now), body)).hex()
    assert signed_message(str(now), body).startswith(f"{now}.{len(body)}.".encode())
    verify_relay_signature(relay.public_key(), signature, str(now), body, max_age=300, now=now + 299)
    for sig, ts, data, name in (
        (signature, str(now + 1), body, "InvalidSignature"),
        (signature, str(now), body + b" ", "InvalidSignature"),
        ("zz", str(now), body, "InvalidSignature"),
        (None, None, body, "MissingAllSignatureHeader"),
        (None, "1", body, "MissingSignatureHeader"),
        (signature, None, body, "MissingTimestampHeader"),
    ):
        with pytest.raises(AuthError) as error:
            verify_relay_signature(relay.public_key(), sig, ts, data, max_age=300, now=now)
        assert error.value.name == name


@pytest.mark.parametrize("timestamp", ["not-a-timestamp", "", "1e9", "-5", " 1800000000", "1800000000.5", "١٨٠٠٠٠٠٠٠٠", "9" * 13])
def test_a_relay_timestamp_that_is_not_unix_seconds_is_refused_even_when_signed(timestamp):
    relay = Ed25519PrivateKey.generate()
    body = b'{"id":"1"}'
    signature = relay.sign(signed_message(timestamp, body)).hex()
    with pytest.raises(AuthError) as error:
        verify_relay_signature(relay.public_key(), signature, timestamp, body, max_age=300, now=1_800_000_000)
    assert (error.value.name, error.value.field) == ("InvalidTimestamp", "X-Ed25519-Timestamp")


@pytest.mark.parametrize("offset", [-301, 301, -1_799_999_999])
def test_a_signed_send_outside_the_window_is_refused(offset):
    """A captured send replays only within the window: ``1`` (1970) and five minutes off either way are refused."""
    relay = Ed25519PrivateKey.generate()
    body = b'{"id":"1"}'
    now = 1_800_000_000
    timestamp = str(now + offset)
    signature = relay.sign(signed_message(timestamp, body)).hex()
    with pytest.raises(AuthError) as error:
        verify_relay_signature(relay.public_key(), signature, timestamp, body, max_age=300, now=now)
    assert error.value.name == "StaleTimestamp"


# --- routes, against a fake of the services -----------------------------------------------------

class FakeServices(fakes.FakeServices):
    """Documents by (collection, _id); every write answers ``result``."""

    def __init__(self, settings):
        super().__init__(settings)
        self.docs: dict = {}
        self.result: dict | None = None

    def find_one(self, collection, query, projection=None):
        return self.docs.get((collection, query["_id"]))

    def write(self, command):
        super().write(command)
        return {"_id": command["id"], "result": self.result}


@pytest.fixture
def make_client():
    def make(**settings):
        app, fake = fakes.app_with(FakeServices, **settings)
        return app.test_client(), fake

    return make


def failure(answer, status: int) -> dict:
    assert answer.status_code == status, answer.get_data(as_text=True)
    body = answer.get_json()
    assert body["status"] == "FAILED" and body["errors"][0]["name"], body
    return body


def test_health_answers_the_seeds_line_and_json(make_client):
    client, _ = make_client()
    answer = client.get("/health")
    assert answer.status_code == 200 and answer.get_data(as_text=True).startswith("OK, push-server v")
    body = client.get("/health?format=json").get_json()
    assert body["status"] == "OK" and body["rabbitmq"] == "UP" and body["flags"]["multitenant"] is True


def test_unknown_type_is_a_400_naming_the_field(make_client):
    client, fake = make_client()
    body = failure(client.post("/clients", json={"client_id": "c1", "type": "carrier-pigeon", "token": "t"}), 400)
    assert body["fields"] == [{"field": "type", "description": body["fields"][0]["description"], "location": "body"}]
    assert "carrier-pigeon" in body["fields"][0]["description"]
    assert fake.commands == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "fcm", "token": "t"}, "client_id"),
        ({"client_id": "c", "type": "fcm"}, "token"),
        ({"client_id": "c", "type": "apns", "token": "not-hex"}, "token"),
        ({"client_id": "c d", "type": "fcm", "token": "t"}, "client_id"),
        ({"client_id": "c", "type": "fcm", "token": "t", "always_raw": "yes"}, "always_raw"),
    ],
)
def test_registration_field_errors(make_client, body, field):
    client, _ = make_client()
    assert failure(client.post("/clients", json=body), 400)["fields"][0]["field"] == field


def test_registration_trims_did_key_and_publishes_one_write(make_client):
    client, fake = make_client()
    answer = client.post("/clients", json={"client_id": "did:key:z6MkA", "type": "FCM", "token": "tok", "always_raw": True})
    assert answer.status_code == 200 and answer.get_json() == {"status": "OK"}
    (command,) = fake.commands
    assert (command["kind"], command["tenant_id"], command["client_id"], command["type"], command["always_raw"]) == (
        "wcp.client.register", "default", "z6MkA", "fcm", True,
    )


def test_body_that_is_not_json_is_a_400_in_the_envelope(make_client):
    client, _ = make_client()
    failure(client.post("/clients", data="nope", content_type="application/json"), 400)


def test_send_to_an_unknown_client_is_a_202_as_the_reference_answers(make_client):
    client, fake = make_client()
    fake.result = {"outcome": "client_not_found"}
    answer = client.post("/clients/nobody", json={"id": "1", "payload": {"topic": "t", "flags": 1, "blob": "b"}})
    assert answer.status_code == 202 and answer.get_json() == {"status": "OK"}


def with_client(fake, client_id="c1", tenant="default", **fields):
    fake.docs[(mongo.WCP_CLIENTS, client_key(tenant, client_id))] = {"deleted": False, **fields}


@pytest.mark.parametrize(
    ("outcome", "status"),
    [("new", 202), ("repeat", 200), (None, 202)],
)
def test_send_answers_what_the_worker_decided(make_client, outcome, status):
    client, fake = make_client()
    with_client(fake)
    fake.result = {"outcome": outcome} if outcome else None
    answer = client.post("/clients/c1", json={"id": "n1", "payload": {"topic": "t", "flags": 1, "blob": "b"}})
    assert answer.status_code == status and answer.get_json() == {"status": "OK"}
    assert fake.commands[0]["notification"] == {"form": "legacy", "topic": "t", "flags": 1, "blob": "b"}


def test_raw_form_and_always_raw(make_client):
    client, fake = make_client()
    with_client(fake, always_raw=True)
    fake.result = {"outcome": "raw_only"}
    legacy = {"id": "n1", "payload": {"topic": "t", "flags": 1, "blob": "b"}}
    assert failure(client.post("/clients/c1", json=legacy), 400)["errors"][0]["name"] == "RawOnlyClient"
    fake.result = {"outcome": "new"}
    assert client.post("/clients/c1", json={"raw": {"topic": "t", "tag": 1, "message": "m"}}).status_code == 202
    assert fake.commands[-1]["notification_id"] == raw_message_id("m")
    assert client.post("/clients/c1", json={"id": "x", "payload": {"topic": "t", "tag": 1, "message": "m"}}).status_code == 202
    assert fake.commands[-1]["notification"]["form"] == "raw"
    # The relay's own form: {topic, tag, message} at the top level, its id the message's hash.
    assert client.post("/clients/c1", json={"topic": "t", "tag": 1, "message": "m2"}).status_code == 202
    assert fake.commands[-1]["notification"] == {"form": "raw", "topic": "t", "tag": 1, "message": "m2"}
    assert fake.commands[-1]["notification_id"] == raw_message_id("m2")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"payload": {"topic": "t", "flags": 1, "blob": "b"}}, "id"),
        ({"id": "1"}, "payload"),
        ({"id": "1", "payload": {"flags": 1, "blob": "b"}}, "payload.topic"),
        ({"id": "1", "payload": {"topic": "t", "flags": -1, "blob": "b"}}, "payload.flags"),
        ({"id": "1", "payload": {"topic": "t", "flags": 16, "blob": "not base64 json"}}, "payload.blob"),
        ({"raw": {"topic": "t", "message": "m"}}, "raw.tag"),
        ({"topic": "t", "message": "m"}, "tag"),
        ({"topic": "t", "tag": "1", "message": "m"}, "tag"),
    ],
)
def test_send_field_errors(make_client, body, field):
    client, fake = make_client()
    with_client(fake)
    assert failure(client.post("/clients/c1", json=body), 400)["fields"][0]["field"] == field


def test_unknown_tenant_is_a_404(make_client):
    client, _ = make_client()
    body = failure(client.post("/acme/clients", json={"client_id": "c", "type": "fcm", "token": "t"}), 404)
    assert body["errors"][0]["name"] == "TenantNotFound"


def test_tenant_registration_needs_the_providers_credentials(make_client):
    client, fake = make_client()
    fake.docs[(mongo.APPS, "wcp:acme")] = {"_id": "wcp:acme", "apns": None, "fcm": {"project_id": "p"}}
    body = failure(client.post("/acme/clients", json={"client_id": "c", "type": "apns", "token": "ab"}), 400)
    assert body["errors"][0]["name"] == "ProviderNotAvailable"
    assert client.post("/acme/clients", json={"client_id": "c", "type": "fcm_v1", "token": "t"}).status_code == 200
    assert fake.commands[-1]["tenant_id"] == "acme"


def test_tenant_management_needs_the_admin_token(make_client):
    client, _ = make_client()
    assert failure(client.post("/tenants", json={"id": "acme"}), 403)["errors"][0]["name"] == "TenantManagementDisabled"
    client, fake = make_client(wc_push_admin_token="s3cret")
    assert failure(client.post("/tenants", json={"id": "acme"}), 401)["fields"][0]["location"] == "header"
    failure(client.post("/tenants", json={"id": "acme"}, headers={"Authorization": "Bearer wrong"}), 401)
    answer = client.post("/tenants", json={"id": "acme"}, headers={"Authorization": "Bearer s3cret"})
    assert answer.status_code == 200 and answer.get_json()["url"].endswith("/acme")
    assert fake.commands[-1]["kind"] == "wcp.tenant.create"
    failure(client.post("/tenants", json={"id": "bad id"}, headers={"Authorization": "Bearer s3cret"}), 400)


def test_get_tenant_shows_providers_and_suspension(make_client):
    client, fake = make_client(wc_push_admin_token="s3cret")
    fake.docs[(mongo.APPS, "wcp:acme")] = {
        "_id": "wcp:acme",
        "apns": {"bundle": "com.acme"},
        "fcm": None,
        "suspended": {"apns": "InvalidProviderToken"},
    }
    body = client.get("/tenants/acme", headers={"Authorization": "Bearer s3cret"}).get_json()
    assert body["enabled_providers"] == ["apns", "apns-sandbox", "noop"]
    assert body["suspended"] is True and "InvalidProviderToken" in body["suspended_reason"]
    assert body["apns_topic"] == "com.acme"


def test_signatures_when_switched_on(make_client):
    relay = Ed25519PrivateKey.generate()
    client, fake = make_client(wc_push_validate_signatures=True, wc_push_relay_public_key=relay.public_key().public_bytes_raw().hex())
    with_client(fake)
    fake.result = {"outcome": "new"}
    raw = json.dumps({"id": "n1", "payload": {"topic": "t", "flags": 1, "blob": "b"}}).encode()
    body = failure(client.post("/clients/c1", data=raw, content_type="application/json"), 401)
    assert body["errors"][0]["name"] == "MissingAllSignatureHeader"
    now = str(int(time.time()))
    headers = {"X-Ed25519-Timestamp": now, "X-Ed25519-Signature": relay.sign(signed_message(now, raw)).hex()}
    assert client.post("/clients/c1", data=raw, content_type="application/json", headers=headers).status_code == 202
    headers["X-Ed25519-Timestamp"] = str(int(now) + 1)
    failure(client.post("/clients/c1", data=raw, content_type="application/json", headers=headers), 401)
    for stale in ("1", "not-a-timestamp", str(int(now) - 3600)):
        old = {"X-Ed25519-Timestamp": stale, "X-Ed25519-Signature": relay.sign(signed_message(stale, raw)).hex()}
        body = failure(client.post("/clients/c1", data=raw, content_type="application/json", headers=old), 401)
        assert body["fields"][0]["field"] == "X-Ed25519-Timestamp"


def test_client_jwt_when_switched_on(make_client):
    client, fake = make_client(wc_push_validate_client_jwt=True)
    key = Ed25519PrivateKey.generate()
    did = did_key_for(key.public_key())
    registration = {"client_id": did, "type": "fcm", "token": "t"}
    assert failure(client.post("/clients", json=registration), 401)["errors"][0]["name"] == "MissingJwt"
    other = {"client_id": did_key_for(Ed25519PrivateKey.generate().public_key()), "type": "fcm", "token": "t"}
    headers = {"Authorization": f"Bearer {client_jwt(key)}"}
    assert failure(client.post("/clients", json=other, headers=headers), 401)["errors"][0]["name"] == "JwtIssuerMismatch"
    assert client.post("/clients", json=registration, headers=headers).status_code == 200
    # Unregistering takes the client's JWT too (a stranger cannot remove someone's client).
    assert failure(client.delete(f"/clients/{did}"), 401)["errors"][0]["name"] == "MissingJwt"
    stranger = {"Authorization": f"Bearer {client_jwt(Ed25519PrivateKey.generate())}"}
    assert failure(client.delete(f"/clients/{did}", headers=stranger), 401)["errors"][0]["name"] == "JwtIssuerMismatch"
    assert client.delete(f"/clients/{did}", headers=headers).status_code == 200


def test_wrong_method_and_unknown_path_keep_the_envelope(make_client):
    client, _ = make_client()
    failure(client.get("/acme/clients"), 405)
    failure(client.get("/clients/c1"), 405)
    failure(client.put("/tenants"), 405)


# --- safe defaults ------------------------------------------------------------------------------

RELAY_KEY = "11" * 32


@pytest.mark.parametrize(
    "checks",
    [
        {},
        {"wc_push_validate_client_jwt": True},
        {"wc_push_validate_signatures": True, "wc_push_relay_public_key": RELAY_KEY},
        {"wc_push_validate_client_jwt": True, "wc_push_validate_signatures": True, "wc_push_relay_public_key": "not-hex"},
    ],
)
def test_a_stack_with_auth_on_refuses_to_start_with_an_open_walletconnect_relay(checks):
    with pytest.raises(ValueError, match="PUSH_WC_PUSH"):
        create_app(load({}, auth_enabled=True, credentials_unsealed_allowed=True, **checks))


def test_auth_on_starts_with_both_relay_checks_or_with_the_open_relay_asked_for_explicitly():
    create_app(load({}, auth_enabled=True, wc_push_validate_client_jwt=True, wc_push_validate_signatures=True,
                    wc_push_relay_public_key=RELAY_KEY, credentials_unsealed_allowed=True))
    create_app(load({}, auth_enabled=True, wc_push_unauthenticated_allowed=True, credentials_unsealed_allowed=True))
    create_app(load({}))  # auth off (make run, the tests): no relay checks needed
