"""WalletConnect push server routes: their declared schemas validate, name the field at fault, and document
what the routes answer (no stack: the services are faked)."""
from __future__ import annotations

import base64
import io
import json
import time

import jsonschema
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from api import openapi
from api.app import create_app
from shared import db as mongo
from shared.settings import load
from shared.wc_payload import raw_message_id
from tests.unit import fakes
from tests.unit.test_wc_push import FakeServices

ADMIN = {"Authorization": "Bearer s3cret"}
LEGACY = {"topic": "t", "flags": 1, "blob": "b"}
RAW = {"topic": "t", "tag": 1, "message": "m"}


@pytest.fixture
def make_client():
    def make(**settings):
        app, fake = fakes.app_with(FakeServices, **settings)
        return app, app.test_client(), fake

    return make


@pytest.fixture
def admin(make_client):
    """A client with tenant management on and a tenant ``acme`` (no credentials)."""
    app, client, fake = make_client(wc_push_admin_token="s3cret")
    fake.docs[(mongo.APPS, "wcp:acme")] = {"_id": "wcp:acme", "apns": None, "fcm": None}
    return app, client, fake


def failure(answer, status: int, name: str | None = None, field: str | None = None, location: str = "body") -> dict:
    assert answer.status_code == status, answer.get_data(as_text=True)
    body = answer.get_json()
    assert body["status"] == "FAILED" and body["errors"][0]["name"], body
    if name is not None:
        assert body["errors"][0]["name"] == name, body
    if field is not None:
        assert [(f["field"], f["location"]) for f in body["fields"]] == [(field, location)], body
    return body


# --- every route declares its operation, and the document says what the routes take -------------

def test_every_wc_push_route_has_an_operation():
    app = create_app(load({}))
    rules = [rule for rule in app.url_map.iter_rules() if rule.endpoint.startswith("wc_push.")]
    assert len(rules) >= 15
    for rule in rules:
        assert getattr(app.view_functions[rule.endpoint], "openapi", None) is not None, rule.rule


@pytest.fixture(scope="module")
def document():
    app = create_app(load({}))
    return json.loads(json.dumps(openapi.build(app, app.extensions["push"].settings)))


def parameters(operation: dict) -> dict:
    return {(p["name"], p["in"]): p for p in operation.get("parameters", [])}


def test_tenant_ids_in_paths_carry_the_pattern(document):
    for path in ("/{tenant_id}/clients", "/{tenant_id}/clients/{client_id}", "/tenants/{tenant_id}", "/tenants/{tenant_id}/apns"):
        for operation in document["paths"][path].values():
            assert parameters(operation)[("tenant_id", "path")]["schema"]["pattern"] == "^[A-Za-z0-9._-]{1,64}$", path


def test_auth_headers_are_documented_as_optional_header_parameters(document):
    send = parameters(document["paths"]["/clients/{client_id}"]["post"])
    for name in ("X-Ed25519-Signature", "X-Ed25519-Timestamp"):
        assert send[(name, "header")]["required"] is False
    assert ("Authorization", "header") in parameters(document["paths"]["/clients"]["post"])
    assert ("Authorization", "header") in parameters(document["paths"]["/tenants/{tenant_id}"]["get"])


def test_send_documents_both_forms_and_both_success_statuses(document):
    send = document["paths"]["/{tenant_id}/clients/{client_id}"]["post"]
    forms = send["requestBody"]["content"]["application/json"]["schema"]["anyOf"]
    assert [sorted(form["required"]) for form in forms] == [["id", "payload"], ["raw"], ["payload"], ["message", "tag", "topic"]]
    assert {"200", "202"} <= set(send["responses"])


def test_apns_form_declares_the_token_key_and_certificate_fields(document):
    form = document["paths"]["/tenants/{tenant_id}/apns"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"apns_topic", "apns_pkcs8_pem", "apns_key_id", "apns_team_id", "apns_certificate",
            "apns_certificate_password"} <= set(form["properties"])
    assert form["properties"]["apns_certificate"]["format"] == "binary"


def test_health_documents_text_and_json(document):
    responses = document["paths"]["/health"]["get"]["responses"]
    assert set(responses["200"]["content"]) == {"text/plain", "application/json"}
    assert parameters(document["paths"]["/health"]["get"])[("format", "query")]["schema"]["enum"] == ["text", "json"]


def conforms(document: dict, method: str, path: str, answer) -> None:
    """``answer`` is a status, content type and body the document lists for the operation."""
    responses = document["paths"][path][method]["responses"]
    status = str(answer.status_code)
    entry = responses.get(status) or responses[f"{status[0]}XX"]
    media_type = answer.mimetype
    assert media_type in entry["content"], (status, media_type)
    schema = entry["content"][media_type]["schema"]
    if media_type == "application/json":
        resolver = {"components": document["components"], **schema}
        jsonschema.validate(answer.get_json(), resolver)


def test_answers_match_the_documented_responses(admin, document):
    _, client, fake = admin
    conforms(document, "get", "/health", client.get("/health"))
    conforms(document, "get", "/health", client.get("/health?format=json"))
    conforms(document, "post", "/clients", client.post("/clients", json={"client_id": "c1", "type": "noop", "token": "t"}))
    fake.result = {"outcome": "new"}
    conforms(document, "post", "/clients/{client_id}", client.post("/clients/c1", json={"id": "n", "payload": LEGACY}))
    fake.result = {"outcome": "repeat"}
    conforms(document, "post", "/clients/{client_id}", client.post("/clients/c1", json={"raw": RAW}))
    conforms(document, "post", "/tenants", client.post("/tenants", json={"id": "acme"}, headers=ADMIN))
    conforms(document, "get", "/tenants/{tenant_id}", client.get("/tenants/acme", headers=ADMIN))
    conforms(document, "get", "/clients/{client_id}", client.get("/clients/c1"))
    conforms(document, "post", "/tenants/{tenant_id}/fcm", client.post("/tenants/acme/fcm", headers=ADMIN))
    conforms(document, "post", "/clients", client.post("/clients", json=[1]))


# --- validation by the schemas, in the seed's error names ---------------------------------------

@pytest.mark.parametrize(
    ("body", "name", "field"),
    [
        ({"type": "fcm", "token": "t"}, "EmptyField", "client_id"),
        ({"client_id": "did:key:", "type": "fcm", "token": "t"}, "EmptyField", "client_id"),
        ({"client_id": "c" * 300, "type": "fcm", "token": "t"}, "InvalidField", "client_id"),
        ({"client_id": "c", "type": "fcm", "token": "t" * 5000}, "InvalidField", "token"),
        ({"client_id": "c", "type": "fcm", "token": "t u"}, "InvalidField", "token"),
        ({"client_id": "c", "token": "t"}, "ProviderNotFound", "type"),
        ({"client_id": "c", "type": 7, "token": "t"}, "ProviderNotFound", "type"),
        ({"client_id": 5, "type": "fcm", "token": "t"}, "InvalidField", "client_id"),
        ([{"client_id": "c"}], "InvalidBody", "body"),
    ],
)
def test_registration_errors_keep_the_seed_names(make_client, body, name, field):
    _, client, fake = make_client()
    failure(client.post("/clients", json=body), 400, name, field)
    assert fake.commands == []


def test_a_body_without_json_content_type_or_nested_too_deeply_is_invalid(make_client):
    _, client, _ = make_client()
    registration = json.dumps({"client_id": "c", "type": "fcm", "token": "t"})
    failure(client.post("/clients", data=registration), 400, "InvalidBody", "body")
    failure(client.post("/clients", data="[" * 100_000, content_type="application/json"), 400, "InvalidBody", "body")
    failure(client.post("/clients", data=b"\xff\xfe", content_type="application/json"), 400, "InvalidBody", "body")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"id": "x" * 300, "payload": LEGACY}, "id"),
        ({"id": "", "raw": RAW}, "id"),
        ({"id": "1", "payload": {**LEGACY, "flags": 2**32}}, "payload.flags"),
        ({"id": "1", "payload": {**LEGACY, "flags": True}}, "payload.flags"),
        ({"id": "1", "payload": {**LEGACY, "blob": "b" * (64 * 1024 + 1)}}, "payload.blob"),
        ({"id": "1", "payload": "not an object"}, "payload"),
        ({"raw": 5}, "raw"),
        ({"raw": {**RAW, "tag": -1}}, "raw.tag"),
        ({"payload": {"topic": "t", "tag": 1.5, "message": "m"}}, "payload.tag"),
        ({"id": "1", "payload": {"topic": "t", "flags": 0, "blob": base64.b64encode(b"[" * 40_000).decode()}}, "payload.blob"),
    ],
)
def test_send_errors_name_the_field(make_client, body, field):
    _, client, fake = make_client()
    failure(client.post("/clients/c1", json=body), 400, field=field)
    assert fake.commands == []


def test_send_forms(make_client):
    _, client, fake = make_client()
    fake.result = {"outcome": "new"}
    # the raw form wins over a payload, whatever the payload is
    assert client.post("/clients/c1", json={"raw": RAW, "payload": "ignored"}).status_code == 202
    assert fake.commands[-1]["notification"] == {"form": "raw", **RAW}
    assert fake.commands[-1]["notification_id"] == raw_message_id("m")
    # a payload with message and no blob is the raw form; its id is optional
    assert client.post("/clients/c1", json={"payload": RAW}).status_code == 202
    assert fake.commands[-1]["notification"]["form"] == "raw"
    assert client.post("/clients/did:key:zABC", json={"id": "n1", "payload": LEGACY}).status_code == 202
    assert (fake.commands[-1]["client_id"], fake.commands[-1]["notification_id"]) == ("zABC", "n1")


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/bad!id/clients"), ("POST", "/bad!id/clients/c1"), ("DELETE", "/bad!id/clients/c1"), ("POST", "/" + "t" * 65 + "/clients")],
)
def test_a_tenant_id_outside_the_pattern_is_a_400_naming_the_path(make_client, method, path):
    _, client, _ = make_client()
    failure(client.open(path, method=method, json={"raw": RAW}), 400, "InvalidField", "tenant_id", "path")


def test_client_ids_in_paths(make_client):
    _, client, fake = make_client()
    failure(client.delete("/clients/a%20b"), 400, "InvalidField", "client_id", "path")
    failure(client.delete("/clients/" + "c" * 257), 400, "InvalidField", "client_id", "path")
    assert client.delete("/clients/did:key:" + "c" * 256).status_code == 200
    assert fake.commands[-1]["client_id"] == "c" * 256


def test_health_format(make_client):
    _, client, _ = make_client()
    assert client.get("/health?format=text").mimetype == "text/plain"
    assert client.get("/health?format=").mimetype == "text/plain"
    failure(client.get("/health?format=xml"), 400, "InvalidField", "format", "query")


# --- authentication comes before validation -----------------------------------------------------

def test_tenant_routes_check_the_admin_token_before_the_input(make_client):
    _, off, _ = make_client()
    failure(off.post("/tenants", json={"id": "bad id"}), 403, "TenantManagementDisabled")
    _, client, _ = make_client(wc_push_admin_token="s3cret")
    failure(client.post("/tenants", json=["x"]), 401, "MissingAdminToken")
    failure(client.get("/tenants/bad!id"), 401, "MissingAdminToken")
    failure(client.post("/tenants/bad!id/apns", data={"apns_topic": "x"}, headers={"Authorization": "Bearer no"}), 401)
    failure(client.get("/tenants/bad!id", headers=ADMIN), 400, "InvalidField", "tenant_id", "path")


#: The tenant JWT secret of the JWT tests (HS256; 32 bytes, as PyJWT asks of an HMAC key).
JWT_SECRET = "tenant-jwt-secret-" + "x" * 14


def tenant_jwt(sub, *, secret: str = JWT_SECRET, exp_in: float | None = 300, **claims) -> dict:
    """``Authorization: Bearer`` with the reference's tenant JWT for ``sub``."""
    if exp_in is not None:
        claims["exp"] = int(time.time() + exp_in)
    return {"Authorization": "Bearer " + jwt.encode({"sub": sub, **claims}, secret, algorithm="HS256")}


def test_a_tenant_jwt_manages_the_tenant_its_sub_names_and_no_other(make_client):
    _, client, fake = make_client(wc_push_tenant_jwt_secret=JWT_SECRET)
    fake.docs[(mongo.APPS, "wcp:acme")] = {"_id": "wcp:acme", "apns": None, "fcm": None}
    fake.docs[(mongo.APPS, "wcp:other")] = {"_id": "wcp:other", "apns": None, "fcm": None}
    assert client.get("/tenants/acme", headers=tenant_jwt("acme")).status_code == 200
    assert client.delete("/tenants/acme/apns", headers=tenant_jwt("acme", aud="authenticated")).status_code == 200
    # As the reference reads it, also without "Bearer ".
    assert client.get("/tenants/acme", headers={"Authorization": tenant_jwt("acme")["Authorization"][7:]}).status_code == 200
    assert client.post("/tenants", json={"id": "newco"}, headers=tenant_jwt("newco")).status_code == 200
    failure(client.get("/tenants/other", headers=tenant_jwt("acme")), 403, "Forbidden", "Authorization", "header")
    failure(client.delete("/tenants/other", headers=tenant_jwt("acme")), 403, "Forbidden")
    failure(client.post("/tenants", json={"id": "other"}, headers=tenant_jwt("acme")), 403, "Forbidden")
    # Authenticated: a body without an id is the route's 400.
    failure(client.post("/tenants", json={}, headers=tenant_jwt("acme")), 400, "EmptyField", "id")
    assert [c["kind"] for c in fake.commands] == ["app.provider", "wcp.tenant.create"]


@pytest.mark.parametrize(
    ("headers", "name"),
    [  # made when the test runs: a JWT made at collection could expire before its test
        (lambda: tenant_jwt("acme", exp_in=-3600), "ExpiredJwt"),
        (lambda: tenant_jwt("acme", exp_in=None), "InvalidJwt"),
        (lambda: tenant_jwt("acme", secret="another-secret-" + "y" * 17), "InvalidJwt"),
        (lambda: tenant_jwt(""), "InvalidJwt"),
        (lambda: {"Authorization": "Bearer a.b.c"}, "InvalidJwt"),
        (lambda: {"Authorization": "Bearer not-a-jwt"}, "InvalidAdminToken"),
    ],
)
def test_a_bad_tenant_jwt_is_a_401_naming_the_header(make_client, headers, name):
    _, client, fake = make_client(wc_push_tenant_jwt_secret=JWT_SECRET)
    fake.docs[(mongo.APPS, "wcp:acme")] = {"_id": "wcp:acme", "apns": None, "fcm": None}
    failure(client.get("/tenants/acme", headers=headers()), 401, name, "Authorization", "header")


def test_without_a_secret_a_tenant_jwt_is_not_taken(make_client):
    _, client, _ = make_client(wc_push_admin_token="s3cret")
    failure(client.get("/tenants/acme", headers=tenant_jwt("acme")), 401, "InvalidAdminToken")


def test_sends_check_the_relay_signature_before_the_input(make_client):
    _, client, _ = make_client(wc_push_validate_signatures=True, wc_push_relay_public_key="00" * 32)
    failure(client.post("/clients/c1", json={"nonsense": True}), 401, "MissingAllSignatureHeader")


# --- tenant management forms --------------------------------------------------------------------

def test_tenant_id_on_create(admin):
    _, client, fake = admin
    failure(client.post("/tenants", json={}, headers=ADMIN), 400, "EmptyField", "id")
    failure(client.post("/tenants", json={"id": "a b"}, headers=ADMIN), 400, "InvalidField", "id")
    failure(client.post("/tenants", json={"id": "t" * 65}, headers=ADMIN), 400, "InvalidField", "id")
    failure(client.post("/tenants", json={"id": "clients"}, headers=ADMIN), 400, "InvalidField", "id")
    assert fake.commands == []


def test_apns_form_fields(admin):
    _, client, fake = admin
    failure(client.post("/tenants/acme/apns", headers=ADMIN, data={"apns_key_id": (io.BytesIO(b"\xff\xfe"), "id.txt")}),
            400, "InvalidField", "apns_key_id")
    failure(client.post("/tenants/acme/apns", headers=ADMIN, data={"apns_team_id": "t" * 300}), 400, "InvalidField", "apns_team_id")
    # a key id sent as a file is read as text; without the key itself the upload is incomplete
    failure(client.post("/tenants/acme/apns", headers=ADMIN, data={"apns_key_id": (io.BytesIO(b" K1 \n"), "id.txt")}),
            400, "InvalidMultipartBody", "apns_pkcs8_pem")
    certificate = {"apns_topic": "com.x", "apns_certificate": base64.b64encode(b"p12").decode(), "apns_certificate_password": "pw"}
    failure(client.post("/tenants/acme/apns", headers=ADMIN, data=certificate), 400, "BadApnsCredentials", "apns_certificate")  # not a .p12
    failure(client.post("/tenants/acme/apns", headers=ADMIN, content_type="multipart/form-data; boundary=x", data=b"--x\r\njunk"),
            400, "InvalidMultipartBody")
    assert fake.commands == []


def test_fcm_v1_form(admin):
    _, client, fake = admin
    failure(client.post("/tenants/acme/fcm_v1", headers=ADMIN, data={}), 400, "EmptyField", "credentials")
    failure(client.post("/tenants/acme/fcm_v1", headers=ADMIN, data={"credentials": "[" * 50_000}), 400, "BadFcmV1Credentials", "credentials")
    failure(client.post("/tenants/acme/fcm_v1", headers=ADMIN, data={"credentials": (io.BytesIO(b"{}"), "sa.json")}),
            400, "BadFcmV1Credentials", "credentials")
    failure(client.post("/tenants/nobody/fcm_v1", headers=ADMIN, data={"credentials": "{}"}), 404, "TenantNotFound")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    internal = {"client_email": "x@y", "private_key": key, "project_id": "p", "token_uri": "http://169.254.169.254/token"}
    body = failure(client.post("/tenants/acme/fcm_v1", headers=ADMIN, data={"credentials": json.dumps(internal)}),
                   400, "BadFcmV1Credentials", "credentials")
    assert "token_uri is not allowed" in body["errors"][0]["description"]
    assert fake.commands == []


def test_form_parts_without_a_name_are_ignored_not_a_500(admin):
    # Found by schemathesis: a multipart part with no name (``form-data`` alone) is keyed None by werkzeug.
    _, client, fake = admin
    for disposition in ("form-data", 'form-data; filename="f.bin"'):
        body = f"--b\r\nContent-Disposition: {disposition}\r\n\r\nv\r\n--b--\r\n".encode()
        answer = client.post("/tenants/acme/fcm_v1", headers=ADMIN, data=body, content_type="multipart/form-data; boundary=b")
        failure(answer, 400, "EmptyField", "credentials")
    assert fake.commands == []


def test_tenant_management_takes_the_admin_token_or_key_in_either_header(make_client):
    """README: a key goes in ``Authorization: Bearer`` or ``X-Api-Key``; /tenants refused X-Api-Key."""
    _, client, fake = make_client(wc_push_admin_token="s3cret", admin_key="adm1n")
    fake.docs[(mongo.APPS, "wcp:acme")] = {"_id": "wcp:acme", "apns": None, "fcm": None}
    for headers in ({"X-Api-Key": "s3cret"}, {"X-Api-Key": "adm1n"}, {"Authorization": "Bearer adm1n"}, ADMIN):
        assert client.get("/tenants/acme", headers=headers).status_code == 200, headers
    for headers, field in (({"X-Api-Key": "wrong"}, "X-Api-Key"), ({"Authorization": "Basic s3cret"}, "Authorization"),
                           ({"Authorization": "Bearer wrong", "X-Api-Key": "s3cret"}, "Authorization")):
        failure(client.get("/tenants/acme", headers=headers), 401, "InvalidAdminToken", field, "header")
