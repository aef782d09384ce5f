"""The declarative schemas of the PowerAuth push, app, key, inbox and operations routes (no stack).

Requests are validated by each route's ``@operation`` before its handler runs:
a bad request is a 400 in PowerAuth's envelope naming the field, and nothing is
written. Answers match the schemas the OpenAPI document gives for them.
"""
from __future__ import annotations

import base64
import copy
import functools
import json
from datetime import UTC, datetime

import jsonschema
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from api import openapi
from api import schema as sc
from api.app import create_app
from api.powerauth import MESSAGE, MESSAGE_BODY
from shared import db as mongo
from shared.settings import load
from tests.unit import fakes

#: The blueprints converted here (api/powerauth.py, api/auth.py, api/inbox.py, api/admin_ops.py).
BLUEPRINTS = ("powerauth", "auth", "inbox", "admin_ops")
CREATED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MESSAGE_KEYS = sorted({*MESSAGE_BODY.properties, *MESSAGE.properties})


class FakeCursor(list):
    def sort(self, *args, **kwargs):
        return self

    def skip(self, n):
        return self

    def limit(self, n):
        return self


class FakeCollection:
    def __init__(self, docs: dict, queries: list):
        self.docs = docs
        self.queries = queries

    def find(self, query=None, projection=None):
        self.queries.append(query)
        ids = (query or {}).get("_id")
        if isinstance(ids, dict):
            return FakeCursor(d for key, d in self.docs.items() if key in ids["$in"])
        return FakeCursor(self.docs.values())

    def find_one(self, query, projection=None):
        return self.docs.get(query.get("_id"))

    def aggregate(self, pipeline):
        return []


class FakeServices(fakes.FakeServices):
    """Documents by collection and id, readable through ``db`` too; the queries made are recorded."""

    def __init__(self, settings):
        super().__init__(settings)
        self.collections: dict[str, dict] = {}
        self.queries: list = []
        self.app("app-a")

    def app(self, app_id: str, **fields) -> None:
        self.collections.setdefault(mongo.APPS, {})[app_id] = {"_id": app_id, **fields}

    @property
    def db(self):
        return {name: FakeCollection(self.collections.setdefault(name, {}), self.queries) for name in (
            mongo.APPS, mongo.API_KEYS, mongo.INBOX, mongo.DEAD_LETTERS, mongo.DEVICES,
            mongo.MESSAGES, mongo.DELIVERIES)}

    def find_one(self, collection, query, projection=None):
        doc = self.collections.get(collection, {}).get(query["_id"])
        if doc is None or any(doc.get(k) != v for k, v in query.items() if k != "_id"):
            return None
        return dict(doc)


@pytest.fixture
def make_client():
    def make(**settings):
        app, fake = fakes.app_with(FakeServices, **settings)
        return app, app.test_client(), fake

    return make


@pytest.fixture
def client(make_client):
    _, http, fake = make_client()
    return http, fake


def wrapped(request_object) -> dict:
    return {"requestObject": request_object}


def error_of(answer, status: int = 400, code: str = "ERROR_GENERIC") -> str:
    assert answer.status_code == status, answer.get_data(as_text=True)
    body = answer.get_json()
    assert body["status"] == "ERROR" and body["responseObject"]["code"] == code, body
    return body["responseObject"]["message"]


def device(**change) -> dict:
    request_object = {"appId": "app-a", "platform": "ios", "token": "ab" * 32, "userId": "u1", **change}
    return {k: v for k, v in request_object.items() if v is not None}


def message(**change) -> dict:
    return {"userId": "u1", "body": {"title": "Hello", "body": "World"}, **change}


# --- every route is declared ----------------------------------------------------------------------

def test_every_route_of_these_blueprints_has_an_operation():
    app = create_app(load({}))
    rules = [rule for rule in app.url_map.iter_rules() if rule.endpoint.split(".")[0] in BLUEPRINTS]
    assert len(rules) >= 35
    missing = [rule.rule for rule in rules if getattr(app.view_functions[rule.endpoint], "openapi", None) is None]
    assert missing == []


def test_the_document_carries_the_configured_batch_size():
    app = create_app(load({}, max_batch_messages=1234))
    document = openapi.build(app, app.extensions["push"].settings)
    body = document["paths"]["/push/message/batch/send"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["requestObject"]["properties"]["batch"]["maxItems"] == 1234
    detail = document["paths"]["/admin/app/detail"]
    assert [p["name"] for p in detail["get"]["parameters"]] == ["appId"] and "requestBody" in detail["post"]
    assert document["paths"]["/metrics"]["get"]["responses"]["200"]["content"] == {"text/plain": {"schema": {}}}


# --- request validation ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/push/device/create", device(appId=None), "requestObject.appId"),
        ("/push/device/create", device(appId=True), "requestObject.appId"),
        ("/push/device/create", device(token=None), "requestObject.token"),
        ("/push/device/create", device(token="a b"), "requestObject.token"),
        ("/push/device/create", device(token="x" * 4097), "requestObject.token"),
        ("/push/device/create", device(token="not-hex"), "requestObject.token"),
        ("/push/device/create", device(platform="windows"), "requestObject.platform"),
        ("/push/device/create", device(platform=None), "requestObject.platform"),
        ("/push/device/create", device(environment="staging"), "requestObject.environment"),
        ("/push/device/create", device(activationId=5), "requestObject.activationId"),
        ("/push/device/create", device(userId=["u"]), "requestObject.userId"),
        ("/push/device/create", device(appId="app-z"), "requestObject.appId"),
        ("/push/device/create/multi", device(), "requestObject.activationIds"),
        ("/push/device/create/multi", device(activationIds=[]), "requestObject.activationIds"),
        ("/push/device/create/multi", device(activationIds=["a", ""]), "requestObject.activationIds[1]"),
        ("/push/device/create/multi", device(activationIds=[f"a{i}" for i in range(101)]), "requestObject.activationIds"),
        ("/push/device/delete", {"appId": "app-a"}, "requestObject.token"),
        ("/push/device/status/update", {"activationId": "a", "activationStatus": "ASLEEP"}, "requestObject.activationStatus"),
        ("/push/device/status/update", {}, "requestObject.activationId"),
        ("/push/message/send", {"appId": "app-a"}, "requestObject.message"),
        ("/push/message/send", {"appId": "app-a", "mode": "LATER", "message": message()}, "requestObject.mode"),
        ("/push/message/send", {"appId": "app-a", "priority": 1, "message": message()}, "requestObject.priority"),
        ("/push/message/send", {"appId": "app-a", "message": message(attributes=[])}, "requestObject.message.attributes"),
        ("/push/message/send", {"appId": "app-a", "message": message(body={"badge": -1})}, "requestObject.message.body.badge"),
        ("/push/message/send", {"appId": "app-a", "message": message(body={"collapseKey": "k" * 65})},
         "requestObject.message.body.collapseKey"),
        ("/push/message/send", {"appId": "app-a", "message": message(body={"bodyLocArgs": ["a", 2]})},
         "requestObject.message.body.bodyLocArgs[1]"),
        ("/push/message/send", {"appId": "app-a", "message": message(body={"badge": 2**31})}, "requestObject.message.body.badge"),
        ("/push/message/send", {"appId": "app-a", "message": message(body={"title": "caf\u00e9 \ud800"})},
         "requestObject.message.body.title"),
        ("/push/message/send", {"appId": "app-a", "message": message(body={"bodyLocArgs": ["\udfff"]})},
         "requestObject.message.body.bodyLocArgs[0]"),
        ("/push/message/send", {"appId": "app-a", "message": message(body={"extras": {"n": 2**64}})}, "requestObject.message.body.extras"),
        ("/push/message/send", {"appId": "app-a", "message": message(body={"extras": {"\ud800": 1}})}, "requestObject.message.body.extras"),
        ("/push/campaign/create", {"appId": "app-a", "message": {"extras": {"n": -(2**70)}}}, "requestObject.message.extras"),
        ("/push/message/batch/send", {"appId": "app-a", "batch": []}, "requestObject.batch"),
        ("/push/message/batch/send", {"appId": "app-a", "batch": [message(), None]}, "requestObject.batch[1]"),
        ("/push/message/batch/send", {"appId": "app-a", "batch": [message(), message(userId=None)]}, "requestObject.batch[1].userId"),
        ("/push/message/batch/send", {"appId": "app-a", "batch": [message(body={"validUntil": "soon"})]},
         "requestObject.batch[0].body.validUntil"),
        ("/admin/app/create", {"appId": "a/b"}, "requestObject.appId"),
        ("/admin/app/create", {"appId": 10 ** 300}, "requestObject.appId"),
        ("/admin/app/apns", {"appId": "app-a", "bundle": "b", "keyId": "k", "teamId": "t"}, "requestObject.privateKeyBase64"),
        ("/admin/app/apns", {"appId": "app-a", "bundle": "b", "keyId": "k" * 33, "teamId": "t", "privateKeyBase64": "AA=="},
         "requestObject.keyId"),
        ("/admin/app/fcm", {"appId": "app-a", "privateKeyBase64": "!!"}, "requestObject.privateKeyBase64"),
        ("/admin/app/apns/remove", {}, "requestObject.appId"),
        ("/admin/app/keys", {"appId": "app-a", "name": "n" * 129}, "requestObject.name"),
        ("/admin/app/keys/revoke", {"appId": "app-a"}, "requestObject.keyId"),
        ("/admin/app/keys/list", {"appId": None}, "requestObject.appId"),
        ("/inbox/messages/read", {"inboxId": 7}, "requestObject.inboxId"),
        ("/inbox/messages/read-all", {"userId": "u" * 256, "appId": "app-a"}, "requestObject.userId"),
    ],
)
def test_a_bad_request_object_is_a_400_naming_the_field_and_writes_nothing(client, path, body, field):
    http, fake = client
    error = error_of(http.post(path, json=wrapped(body)))
    assert error.startswith(field + ":") or error.endswith(f"({field})"), error
    assert fake.commands == [] and fake.published == []


@pytest.mark.parametrize("path", ["/push/device/create", "/push/message/batch/send", "/admin/app/fcm", "/admin/app/keys",
                                  "/inbox/messages", "/inbox/messages/read-all"])
def test_a_body_that_is_not_a_json_object_is_a_400(client, path):
    http, _ = client
    assert error_of(http.post(path, data="{nope", content_type="application/json")).startswith("body:")
    assert error_of(http.post(path, data="appId=x")).startswith("body:")
    assert error_of(http.post(path, json=[1, 2])).startswith("body:")
    assert error_of(http.post(path, json={"appId": "app-a"})).startswith("requestObject:")
    assert error_of(http.post(path, json={"requestObject": "x"})).startswith("requestObject:")


def test_extras_deeper_than_the_providers_encode_are_refused(client):
    http, fake = client
    deep: list = []
    for _ in range(300):
        deep = [deep]
    answer = http.post("/push/message/send", json=wrapped({"appId": "app-a", "message": message(body={"extras": {"d": deep}})}))
    assert error_of(answer).startswith("requestObject.message.body.extras:")
    assert fake.published == []


@pytest.mark.parametrize("platform", ["hms", "HMS", "huawei"])
def test_hms_and_its_alias_huawei_register_as_hms(client, platform):
    http, fake = client
    assert http.post("/push/device/create", json=wrapped(device(platform=platform, token="hms-token"))).status_code == 200
    assert fake.commands[-1]["platform"] == "hms"


def test_the_batch_size_is_the_setting(make_client):
    _, http, fake = make_client(max_batch_messages=3)
    answer = http.post("/push/message/batch/send", json=wrapped({"appId": "app-a", "batch": [message()] * 4}))
    assert error_of(answer) == "requestObject.batch: must have at most 3 items"
    answer = http.post("/push/message/batch/send", json=wrapped({"appId": "app-a", "mode": "ASYNCHRONOUS", "batch": [message()] * 3}))
    assert answer.status_code == 200, answer.get_data(as_text=True)


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/admin/app/detail", "appId"),
        ("/admin/app/detail?appId=", "appId"),
        ("/admin/app/detail?appId=" + "a" * 257, "appId"),
        ("/admin/app/keys", "appId"),
        ("/admin/dead-letters?limit=0", "limit"),
        ("/admin/dead-letters?limit=lots", "limit"),
        ("/admin/dead-letters?limit=99999999999999999999999", "limit"),
        ("/admin/dead-letters?all=maybe", "all"),
        ("/admin/queues?peek=maybe", "peek"),
        ("/inbox/messages/list?userId=u1&applications=app-a&page=10000001", "page"),
        ("/inbox/messages/list?userId=u1&applications=app-a&size=-5", "size"),
        ("/inbox/messages/count?userId=u1", "appId"),
    ],
)
def test_a_bad_query_parameter_is_a_400_naming_it(client, url, field):
    http, _ = client
    assert error_of(http.get(url)).startswith(field + ":")


def test_unknown_apps_and_messages(client):
    http, _ = client
    assert "Application not found: app-z" in error_of(http.get("/admin/app/detail?appId=app-z"))
    assert "Application not found" in error_of(http.post("/admin/app/detail", json=wrapped({"appId": "app-z"})))
    assert "Message not found" in error_of(http.get("/push/message/nope/detail"), 404, "ERROR_NOT_FOUND")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("not json", "body"),
        ({"ids": "x"}, "ids"),
        ({"ids": []}, "ids"),
        ({"ids": ["a", 3]}, "ids[1]"),
        ({"all": "yes"}, "all"),
        ({}, "ids"),
        ({"ids": ["a"], "all": True}, "ids"),
        ({"requestObject": {"ids": "x"}}, "requestObject.ids"),
        ({"requestObject": []}, "requestObject"),
    ],
)
def test_dead_letter_requeue_validates(client, body, field):
    http, fake = client
    answer = http.post("/admin/dead-letters/requeue", **({"data": body} if isinstance(body, str) else {"json": body}))
    assert error_of(answer).startswith(field + ":")
    assert fake.commands == []


def test_inbox_list_flags_and_paging(client):
    http, fake = client
    for word, unread in (("1", True), ("YES", True), ("on", True), ("false", False), ("0", False), ("", False)):
        answer = http.get(f"/inbox/messages/list?userId=u1&applications=app-a&onlyUnread={word}")
        assert answer.status_code == 200, (word, answer.get_data(as_text=True))
        assert ("read" in fake.queries[-1]) is unread, word
    answer = http.get("/inbox/messages/list?userId=u1&applications=app-a,%20app-a&page=3&size=7").get_json()
    assert (answer["page"], answer["size"]) == (3, 7)


# --- cleaned values reach the handlers ------------------------------------------------------------

def test_send_builds_the_entry_from_the_cleaned_message(client):
    http, fake = client
    request_object = {
        "appId": "app-a",
        "mode": "asynchronous",
        "priority": "normal",
        "message": {
            "userId": "u1",
            "activationId": "a1",
            "attributes": {"silent": True},
            "body": {"title": "t", "validUntil": "2030-01-01T12:00:00+01:00", "titleLocArgs": ["x"], "extras": {"k": 1}},
        },
    }
    answer = http.post("/push/message/send", json=wrapped(request_object))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["responseObject"]["mode"] == "ASYNCHRONOUS"
    (_, send), = fake.published
    (entry,) = send["entries"]
    assert entry == {
        "user_id": "u1", "activation_id": "a1", "personal": False, "silent": True, "high_priority": False,
        "body": {"title": "t", "validUntil": "2030-01-01T11:00:00+00:00", "titleLocArgs": ["x"], "extras": {"k": 1}},
    }


def test_a_batch_message_priority_overrides_the_requests(client):
    http, fake = client
    batch = [message(), message(priority="HIGH")]
    answer = http.post("/push/message/batch/send", json=wrapped({"appId": 7, "mode": "ASYNCHRONOUS", "priority": "NORMAL", "batch": batch}))
    assert "Application not found: 7" in error_of(answer)
    fake.app("7")
    answer = http.post("/push/message/batch/send", json=wrapped({"appId": 7, "mode": "ASYNCHRONOUS", "priority": "NORMAL", "batch": batch}))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    (_, send), = fake.published
    assert send["app_id"] == "7" and [e["high_priority"] for e in send["entries"]] == [False, True]


def test_a_campaign_message_with_valid_until_is_accepted(client):
    """The campaign body is cleaned once by its schema; parse_body builds from it (a second check refused the datetime)."""
    http, fake = client
    answer = http.post("/push/campaign/create", json=wrapped({"appId": "app-a", "message": {"title": "c", "validUntil": "2030-01-01T00:00:00Z"}}))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    (command,) = fake.commands
    assert command["body"] == {"title": "c", "validUntil": "2030-01-01T00:00:00+00:00"}


def test_device_registration_and_status_update(client):
    http, fake = client
    multi = device(platform="Android", token="fcm-token", activationIds=["a", "b", "a"])
    assert http.post("/push/device/create/multi", json=wrapped(multi)).status_code == 200
    assert fake.commands[-1]["platform"] == "fcm" and fake.commands[-1]["activation_ids"] == ["a", "b"]
    assert http.put("/push/device/status/update", json={"activationId": "a"}).status_code == 200
    assert fake.commands[-1]["status"] == "ACTIVE"
    assert http.post("/push/device/status/update", json=wrapped({"activationId": "a", "activationStatus": "removed"})).status_code == 200
    assert fake.commands[-1]["status"] == "REMOVED"


def pem_base64(key) -> str:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return base64.b64encode(pem).decode()


def test_provider_credentials(make_client):
    _, http, fake = make_client(outbound_allowed_targets="oauth2.test:443")
    apns = {"appId": "app-a", "bundle": "com.a", "keyId": "K1", "teamId": "T1"}
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert "EC P-256" in error_of(http.post("/admin/app/apns", json=wrapped({**apns, "privateKeyBase64": pem_base64(rsa_key)})))
    ec_pem = pem_base64(ec.generate_private_key(ec.SECP256R1()))
    garbled = base64.b64encode(b"\xff\xfe\n" + base64.b64decode(ec_pem)).decode()
    assert "privateKeyBase64" in error_of(http.post("/admin/app/apns", json=wrapped({**apns, "privateKeyBase64": garbled})))
    assert http.put("/admin/app/apns", json=wrapped({**apns, "privateKeyBase64": ec_pem})).status_code == 200
    assert fake.commands[-1]["credentials"]["environment"] == "production"

    def account(**fields) -> str:
        return base64.b64encode(json.dumps(fields).encode()).decode()

    nested = base64.b64encode(b"[" * 40_000).decode()
    assert "privateKeyBase64" in error_of(http.post("/admin/app/fcm", json=wrapped({"appId": "app-a", "privateKeyBase64": nested})))
    good = {"client_email": "x@y", "token_uri": "https://oauth2.test/token", "private_key": base64.b64decode(pem_base64(rsa_key)).decode()}
    for token_uri in ("http://169.254.169.254/computeMetadata/v1/token", "https://127.0.0.1:8446/token", "http://u:p@oauth2.test/"):
        refused = http.post("/admin/app/fcm", json=wrapped({"appId": "app-a", "privateKeyBase64": account(**{**good, "token_uri": token_uri}, project_id="p")}))
        assert error_of(refused).startswith("requestObject.privateKeyBase64: the service account's token_uri is not allowed")
    answer = http.post("/admin/app/fcm", json=wrapped({"appId": "app-a", "privateKeyBase64": account(**good, project_id=["p"])}))
    assert error_of(answer).startswith("requestObject.projectId:")
    assert http.post("/admin/app/fcm", json=wrapped({"appId": "app-a", "privateKeyBase64": account(**good, project_id="p")})).status_code == 200
    assert http.delete("/admin/app/fcm", json=wrapped({"appId": "app-a"})).status_code == 200
    assert fake.commands[-1]["credentials"] is None


def test_credentials_are_removed_with_the_app_id_in_the_query_and_no_body(client):
    http, fake = client
    for provider in ("apns", "fcm", "hms"):
        answer = http.delete(f"/admin/app/{provider}?appId=app-a")
        assert answer.status_code == 200, answer.get_data(as_text=True)
        assert (fake.commands[-1]["provider"], fake.commands[-1]["app_id"], fake.commands[-1]["credentials"]) == (provider, "app-a", None)
    assert "appId: is required" in error_of(http.delete("/admin/app/apns"))
    assert "Application not found: nobody (appId)" in error_of(http.delete("/admin/app/fcm?appId=nobody"))


@pytest.mark.parametrize(
    ("path", "method", "provider"),
    [("/admin/app/ios/remove", "post", "apns"), ("/admin/app/ios/remove", "delete", "apns"),
     ("/admin/app/android/remove", "post", "fcm"), ("/admin/app/android/remove", "delete", "fcm"),
     ("/admin/app/huawei/remove", "post", "hms"), ("/admin/app/huawei/remove", "delete", "hms"),
     ("/admin/app/hms/remove", "post", "hms")],
)
def test_the_deprecated_removals_take_the_app_id_in_the_body(client, path, method, provider):
    http, fake = client
    assert getattr(http, method)(path, json=wrapped({"appId": "app-a"})).status_code == 200
    assert (fake.commands[-1]["provider"], fake.commands[-1]["credentials"]) == (provider, None)
    assert "requestObject" in error_of(getattr(http, method)(path, json={}))


def test_hms_credentials_and_the_deprecated_update_routes(make_client):
    _, http, fake = make_client(outbound_allowed_targets="oauth2.test:443")
    hms = {"appId": "app-a", "projectId": "101", "clientId": "1010", "clientSecret": "s" * 64}
    for path in ("/admin/app/hms", "/admin/app/huawei/update"):
        assert http.post(path, json=wrapped(hms)).status_code == 200
        assert fake.commands[-1]["provider"] == "hms"
        assert fake.commands[-1]["credentials"] == {"project_id": "101", "client_id": "1010", "client_secret": "s" * 64}
    for field in ("projectId", "clientId", "clientSecret"):
        assert error_of(http.put("/admin/app/hms", json=wrapped({**hms, field: " "}))) == f"requestObject.{field}: must not be empty"
    ec_pem = pem_base64(ec.generate_private_key(ec.SECP256R1()))
    ios = {"appId": "app-a", "bundle": "com.a", "keyId": "K1", "teamId": "T1", "privateKeyBase64": ec_pem}
    assert http.put("/admin/app/ios/update", json=wrapped(ios)).status_code == 200 and fake.commands[-1]["provider"] == "apns"
    android = {"appId": "app-a", "projectId": "p", "privateKeyBase64": base64.b64encode(json.dumps({
        "client_email": "x@y", "token_uri": "https://oauth2.test/token",
        "private_key": base64.b64decode(pem_base64(rsa.generate_private_key(public_exponent=65537, key_size=2048))).decode(),
    }).encode()).decode()}
    assert http.post("/admin/app/android/update", json=wrapped(android)).status_code == 200 and fake.commands[-1]["provider"] == "fcm"


def test_app_answers_report_hms_and_hide_its_secret(client):
    http, fake = client
    fake.app("app-h", hms={"project_id": "101", "client_id": "1010", "client_secret": "secret-" + "s" * 57})
    fake.app("app-none")
    detail = http.get("/admin/app/detail?appId=app-h").get_json()["responseObject"]
    assert detail["application"]["hms"] is detail["application"]["huawei"] is True
    assert detail["hmsProjectId"] == "101" and detail["hmsClientSecretPresent"] is True
    assert "secret-" not in http.get("/admin/app/detail?appId=app-h").get_data(as_text=True)
    unconfigured = http.get("/admin/app/unconfigured/list").get_json()["responseObject"]["applicationList"]
    assert [a["appId"] for a in unconfigured] == ["app-a", "app-none"]


def test_the_deprecated_routes_are_marked_in_the_document():
    app = create_app(load({}))
    paths = openapi.build(app, app.extensions["push"].settings)["paths"]
    for path in ("/admin/app/ios/update", "/admin/app/android/update", "/admin/app/huawei/update"):
        assert paths[path]["post"]["deprecated"] is True and paths[path]["put"]["deprecated"] is True
    for path in ("/admin/app/ios/remove", "/admin/app/android/remove", "/admin/app/huawei/remove"):
        assert paths[path]["delete"]["deprecated"] is True
    assert "deprecated" not in paths["/admin/app/hms"]["post"]
    delete = paths["/admin/app/apns"]["delete"]
    assert [(p["name"], p["in"]) for p in delete["parameters"]] == [("appId", "query")] and delete["requestBody"]["required"] is False


# --- answers match the document -------------------------------------------------------------------

def answer_schema(document: dict, path: str, method: str, status: int | str) -> dict:
    schema = document["paths"][path][method]["responses"][str(status)]["content"]["application/json"]["schema"]
    return json.loads(json.dumps(schema).replace("#/components/schemas/", "#/definitions/")) | {
        "definitions": document["components"]["schemas"]}


def test_answers_match_their_documented_schemas(make_client):
    app, http, fake = make_client()
    document = openapi.build(app, fake.settings)
    fake.collections[mongo.MESSAGES] = {"m1": {"_id": "m1", "app_id": "app-a", "created_at": CREATED}}
    fake.collections[mongo.INBOX] = {"i1": {
        "_id": "i1", "user_id": "u1", "type": "text", "subject": "Subject!", "summary": "Summary!", "body": "Body!!!!",
        "applications": ["app-a"], "read": False, "created_at": CREATED}}
    fake.collections[mongo.API_KEYS] = {"k1": {"_id": "k1", "app_id": "app-a", "name": None, "created_at": CREATED}}
    fake.collections[mongo.DEAD_LETTERS] = {"d1": {"delivery_id": "d1", "app_id": "app-a", "delivery": {}, "entry": {}}}
    inbox_post = {"userId": "u1", "type": "text", "subject": "Subject!", "summary": "Summary!", "body": "Body!!!!", "applications": ["app-a"]}
    calls = [
        ("get", "/push/service/status", None, "/push/service/status"),
        ("post", "/push/device/create", wrapped(device()), "/push/device/create"),
        ("post", "/push/message/send", wrapped({"appId": "app-a", "message": message()}), "/push/message/send"),
        ("post", "/push/message/batch/send", wrapped({"appId": "app-a", "mode": "ASYNCHRONOUS", "batch": [message()]}),
         "/push/message/batch/send"),
        ("get", "/push/message/m1/detail", None, "/push/message/{message_id}/detail"),
        ("get", "/admin/app/list", None, "/admin/app/list"),
        ("get", "/admin/app/detail?appId=app-a", None, "/admin/app/detail"),
        ("post", "/admin/app/create", wrapped({"appId": 42}), "/admin/app/create"),
        ("post", "/admin/app/keys", wrapped({"appId": "app-a"}), "/admin/app/keys"),
        ("get", "/admin/app/keys?appId=app-a", None, "/admin/app/keys"),
        ("post", "/admin/app/keys/revoke", wrapped({"appId": "app-a", "keyId": "k1"}), "/admin/app/keys/revoke"),
        ("post", "/inbox/messages", wrapped(inbox_post), "/inbox/messages"),
        ("get", "/inbox/messages/list?userId=u1&applications=app-a", None, "/inbox/messages/list"),
        ("get", "/inbox/messages/count?userId=u1&appId=app-a", None, "/inbox/messages/count"),
        ("get", "/inbox/messages/detail?id=i1", None, "/inbox/messages/detail"),
        ("post", "/inbox/messages/read", wrapped({"inboxId": "i1"}), "/inbox/messages/read"),
        ("get", "/admin/dead-letters", None, "/admin/dead-letters"),
        ("post", "/admin/dead-letters/requeue", {"ids": ["d1"]}, "/admin/dead-letters/requeue"),
    ]
    for method, url, body, path in calls:
        answer = http.open(url, method=method.upper(), json=body)
        assert answer.status_code == 200, (url, answer.get_data(as_text=True))
        jsonschema.validate(answer.get_json(), answer_schema(document, path, method, 200))
    error = http.post("/push/device/create", json={})
    jsonschema.validate(error.get_json(), answer_schema(document, "/push/device/create", "post", "4XX"))


# --- FastObj cleans as Obj does -------------------------------------------------------------------

def _same_outcome(fast, slow, value):
    def outcome(spec):
        try:
            return ("ok", spec.clean(value, "x"))
        except sc.Invalid as invalid:
            return ("invalid", invalid.path, invalid.message)

    return outcome(fast), outcome(slow)


def as_obj(field):
    """``field`` with every FastObj in it an Obj."""
    if isinstance(field, sc.Obj):
        return sc.Obj({k: as_obj(f) for k, f in field.properties.items()}, closed=field.closed, required=field.required)
    if isinstance(field, sc.List):
        return sc.List(as_obj(field.items), min_items=field.min_items, max_items=field.max_items, unique=field.unique)
    return field


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2**65) | st.sampled_from(["", " ", "a", "HIGH", "normal", "2030-01-01T00:00:00Z", "x" * 70]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "silent"]), children, max_size=3),
    max_leaves=6,
)


@functools.cache
def _app():
    return create_app(load({}))


SOME_VALUE = st.booleans() | JSON_VALUES
MESSAGES = st.fixed_dictionaries(
    {"userId": st.sampled_from(["u", "u", "", None, 5]),
     "body": st.dictionaries(st.sampled_from([*MESSAGE_BODY.properties, "extra"]), SOME_VALUE, max_size=5) | SOME_VALUE},
    optional={"attributes": st.dictionaries(st.sampled_from(["silent", "personal", "x"]), SOME_VALUE) | SOME_VALUE,
              "priority": SOME_VALUE, "activationId": SOME_VALUE, "extra": SOME_VALUE},
)


@settings(max_examples=300, deadline=None)
@given(MESSAGES | st.dictionaries(st.sampled_from([*MESSAGE_KEYS, "extra"]), JSON_VALUES, max_size=8))
def test_fast_obj_cleans_and_fails_exactly_as_obj(value):
    sent = copy.deepcopy(value)
    with _app().test_request_context():
        for fast in (MESSAGE_BODY, MESSAGE):
            first, second = _same_outcome(fast, as_obj(fast), value)
            assert first == second
        closed_fast = sc.FastObj({"a": sc.Int(required=True), "b": sc.Bool(default=False)}, closed=True)
        closed_slow = sc.Obj({"a": sc.Int(required=True), "b": sc.Bool(default=False)}, closed=True)
        first, second = _same_outcome(closed_fast, closed_slow, value)
        assert first == second
    assert value == sent  # the request's JSON is never changed (an unchanged object is answered as it is)
