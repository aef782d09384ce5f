"""Bad input gets a 400 in PowerAuth's envelope naming the field; never a 500."""
from __future__ import annotations

import pytest
import requests

from tests.integration.conftest import apns_token


def error_of(answer, status: int = 400) -> str:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["status"] == "ERROR"
    assert set(body["responseObject"]) >= {"code", "message"}
    return body["responseObject"]["message"]


@pytest.fixture(scope="module")
def app_id(stack, apns_sim, fcm_sim):
    from devstack.credentials import configure_app, make_credentials, register_with_simulators

    credentials = make_credentials("errors-app", fcm_origin=f"https://127.0.0.1:{stack.ports.fcm}", key_id="ERRKEY0001")
    register_with_simulators(credentials, apns_control=apns_sim.base_url, fcm_control=fcm_sim.base_url)
    configure_app(stack.api_url, "errors-app", credentials)
    return "errors-app"


def test_body_that_is_not_json(stack):
    answer = requests.post(stack.api_url + "/push/device/create", data="{nope", headers={"Content-Type": "application/json"}, timeout=10)
    assert "body" in error_of(answer)


def test_missing_request_object(api):
    assert "requestObject" in error_of(api.post("/push/device/create", raw={"appId": "x"}))


@pytest.mark.parametrize(
    ("request_object", "field"),
    [
        ({"token": "ab", "platform": "apns"}, "requestObject.appId"),
        ({"appId": "errors-app", "platform": "apns"}, "requestObject.token"),
        ({"appId": "errors-app", "token": "ab", "platform": "windows"}, "requestObject.platform"),
        ({"appId": "errors-app", "token": "not hex!", "platform": "apns"}, "requestObject.token"),
        ({"appId": "errors-app", "token": "ab", "platform": "apns", "activationId": 5}, "requestObject.activationId"),
        ({"appId": "no-such-app", "token": "ab", "platform": "apns"}, "requestObject.appId"),
    ],
)
def test_device_create_names_the_bad_field(api, app_id, request_object, field):
    assert field in error_of(api.post("/push/device/create", request_object))


def test_unknown_app_says_so(api):
    message = error_of(api.post("/push/device/create", {"appId": "no-such-app", "token": "ab", "platform": "apns"}))
    assert "Application not found" in message


def test_create_multi_needs_activation_ids(api, app_id):
    assert "activationIds" in error_of(api.post("/push/device/create/multi", {"appId": app_id, "token": apns_token(), "platform": "apns"}))


def test_status_update_checks_the_status(api):
    assert "activationStatus" in error_of(api.post("/push/device/status/update", raw={"activationId": "a", "activationStatus": "ASLEEP"}))


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"body": {"title": "x"}}, "requestObject.message.userId"),
        ({"userId": "u"}, "requestObject.message.body"),
        ({"userId": "u", "body": {"badge": "three"}}, "requestObject.message.body.badge"),
        ({"userId": "u", "body": {"validUntil": "tomorrow"}}, "requestObject.message.body.validUntil"),
        ({"userId": "u", "body": {"extras": [1]}}, "requestObject.message.body.extras"),
        ({"userId": "u", "body": {"titleLocArgs": "a"}}, "requestObject.message.body.titleLocArgs"),
        ({"userId": "u", "attributes": {"silent": "yes"}, "body": {}}, "requestObject.message.attributes.silent"),
        ({"userId": "u", "priority": "URGENT", "body": {}}, "requestObject.message.priority"),
    ],
)
def test_send_names_the_bad_field(api, app_id, message, field):
    assert field in error_of(api.post("/push/message/send", {"appId": app_id, "message": message}))


def test_send_mode_is_checked(api, app_id):
    answer = api.post("/push/message/send", {"appId": app_id, "mode": "LATER", "message": {"userId": "u", "body": {}}})
    assert "requestObject.mode" in error_of(answer)


def test_batch_must_be_a_list_and_names_the_entry(api, app_id):
    assert "requestObject.batch" in error_of(api.post("/push/message/batch/send", {"appId": app_id, "batch": {}}))
    answer = api.post("/push/message/batch/send", {"appId": app_id, "batch": [{"userId": "u", "body": {}}, {"body": {}}]})
    assert "requestObject.batch[1].userId" in error_of(answer)


def test_admin_credentials_are_validated(api, app_id):
    answer = api.post("/admin/app/apns", {"appId": app_id, "bundle": "b", "keyId": "k", "teamId": "t", "privateKeyBase64": "!!"})
    assert "privateKeyBase64" in error_of(answer)
    answer = api.post("/admin/app/fcm", {"appId": app_id, "projectId": "p", "privateKeyBase64": "e30="})
    assert "privateKeyBase64" in error_of(answer)
    assert "appId" in error_of(api.post("/admin/app/create", {"appId": "bad id with spaces"}))


def test_unknown_route_and_wrong_method_answer_in_the_envelope(api):
    error_of(api.get("/push/nothing-here"), 404)
    error_of(api.session.get(api.base_url + "/push/message/send", timeout=10), 405)


@pytest.mark.parametrize(
    ("path", "request_object", "field"),
    [
        ("/push/device/create/multi", {"appId": "errors-app", "token": "ab", "platform": "apns", "activationIds": []},
         "requestObject.activationIds"),
        ("/push/device/create/multi", {"appId": "errors-app", "token": "ab", "platform": "apns", "activationIds": ["a", 7]},
         "requestObject.activationIds[1]"),
        ("/push/device/remove", {"appId": "errors-app", "token": "a b"}, "requestObject.token"),
        ("/push/message/batch/send", {"appId": "errors-app", "batch": [{"userId": "u", "body": {}}, None]}, "requestObject.batch[1]"),
        ("/push/message/send", {"appId": "errors-app", "message": {"userId": "u", "attributes": [], "body": {}}},
         "requestObject.message.attributes"),
        ("/admin/app/create", {"appId": 10 ** 300}, "requestObject.appId"),
        ("/admin/app/detail", {"appId": ["errors-app"]}, "requestObject.appId"),
        ("/admin/app/keys/revoke", {"appId": "errors-app"}, "requestObject.keyId"),
        ("/admin/app/fcm/remove", {}, "requestObject.appId"),
    ],
)
def test_schemas_name_the_bad_field(api, app_id, path, request_object, field):
    assert error_of(api.post(path, request_object)).startswith(field + ":")


def test_query_parameters_are_validated(api, app_id):
    assert error_of(api.get("/admin/app/detail")).startswith("appId: is required")
    assert error_of(api.get("/admin/app/keys", appId="x" * 300)).startswith("appId:")
    assert error_of(api.get("/admin/dead-letters", limit="0")).startswith("limit:")
    assert error_of(api.get("/admin/queues", peek="maybe")).startswith("peek:")
    assert api.get("/admin/app/detail", appId=app_id).json()["responseObject"]["application"]["appId"] == app_id


def test_status_update_takes_a_bare_or_wrapped_body(api):
    assert api.post("/push/device/status/update", raw={"activationId": "act-bare", "activationStatus": "blocked"}).status_code == 200
    assert api.post("/push/device/status/update", {"activationId": "act-wrapped"}).status_code == 200
    assert "requestObject.activationId" in error_of(api.post("/push/device/status/update", raw={"activationStatus": "ACTIVE"}))
