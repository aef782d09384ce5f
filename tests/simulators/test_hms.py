"""The HMS (Huawei Push Kit) simulator: its token endpoint, send endpoint, result codes, behaviour tokens and counts."""
from __future__ import annotations

import asyncio
import secrets
import time

import orjson
import pytest
import requests

from devstack.credentials import make_hms_credentials, register_with_hms_simulator
from tests.simulators.conftest import running


@pytest.fixture(scope="module")
def hms(tmp_path_factory):
    with running("hms", tmp_path_factory.mktemp("certs"), "--processes", "2") as simulator:
        yield simulator


@pytest.fixture(scope="module")
def app(hms):
    credentials = make_hms_credentials("hmstest")
    register_with_hms_simulator(credentials, hms_control=hms.control)
    return credentials


def token_request(hms, **form) -> requests.Response:
    return requests.post(f"https://127.0.0.1:{hms.port}/oauth2/v3/token", data=form, verify=str(hms.ca_file), timeout=10)


def access_token(hms, app) -> str:
    answer = token_request(hms, grant_type="client_credentials", client_id=app.client_id, client_secret=app.client_secret)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    return body["access_token"]


def send(hms, project_id: str, bearer: str | None, body, *, raw: bytes | None = None) -> tuple[int, dict]:
    async def main():
        (connection,) = await hms.connections(1)
        headers = [("content-type", "application/json")] + ([("authorization", f"Bearer {bearer}")] if bearer else [])
        answer = await connection.request("POST", f"/v2/{project_id}/messages:send", headers,
                                          raw if raw is not None else orjson.dumps(body), 10)
        connection.close()
        return answer.status, orjson.loads(answer.body)

    return asyncio.run(main())


def notification(*tokens: str, tag: str | None = None, **android) -> dict:
    android_notification = {"title": "t", "body": "b", "click_action": {"type": 3}, **({"tag": tag} if tag else {})}
    return {"validate_only": False, "message": {"token": list(tokens), "android": {"notification": android_notification, **android}}}


def hms_token(prefix: str = "") -> str:
    return prefix + secrets.token_hex(30)


def test_token_endpoint_issues_tokens_and_refuses_a_wrong_secret(hms, app):
    assert access_token(hms, app).startswith("hms-sim.")
    wrong = token_request(hms, grant_type="client_credentials", client_id=app.client_id, client_secret="nope")
    assert wrong.status_code == 400 and wrong.json()["error"] == 1101
    unknown = token_request(hms, grant_type="client_credentials", client_id="123", client_secret=app.client_secret)
    assert unknown.status_code == 400 and unknown.json()["error"] == 1101
    grant = token_request(hms, grant_type="password", client_id=app.client_id, client_secret=app.client_secret)
    assert grant.status_code == 400 and grant.json()["error"] == 1102


def test_send_success_counts_and_shown_collapse_by_tag(hms, app):
    bearer, device = access_token(hms, app), hms_token()
    for _ in range(3):
        status, body = send(hms, app.project_id, bearer, notification(device, tag="message-1.0"))
        assert (status, body["code"], body["msg"]) == (200, "80000000", "Success")
        assert body["requestId"]
    status, body = send(hms, app.project_id, bearer, {"message": {"token": [device], "data": '{"k": "v"}'}})
    assert (status, body["code"]) == (200, "80000000")
    assert hms.get(f"/counts/{device}") == {"delivered": 4, "attempts": 4, "shown": 2}  # the tag shows once; data shows each
    received = hms.get(f"/received/{device}")
    assert received[-1]["body"]["message"]["data"] == '{"k": "v"}' and "authorization" not in received[-1]["headers"]


def test_partial_success_and_all_tokens_invalid(hms, app):
    bearer, good, dead = access_token(hms, app), hms_token(), hms_token("dead")
    status, body = send(hms, app.project_id, bearer, notification(good, dead))
    assert (status, body["code"]) == (200, "80100000")
    assert orjson.loads(body["msg"]) == {"success": 1, "failure": 1, "illegal_tokens": [dead]}
    status, body = send(hms, app.project_id, bearer, notification(dead))
    assert (status, body["code"]) == (400, "80300007")
    assert hms.get(f"/counts/{good}")["delivered"] == 1 and hms.get(f"/counts/{dead}")["delivered"] == 0


@pytest.mark.parametrize(("bearer", "project", "code"), [
    (None, None, "80200001"),
    ("hms-sim.unknown", None, "80200001"),
    ("own", "another-project", "80200001"),
])
def test_authentication_errors(hms, app, bearer, project, code):
    token = access_token(hms, app) if bearer == "own" else bearer
    status, body = send(hms, project or app.project_id, token, notification(hms_token()))
    assert (status, body["code"]) == (401, code)


def test_an_expired_access_token(hms, app):
    expired = "hms-sim.expired-" + secrets.token_hex(4)
    body = orjson.dumps({"token": expired, "project_id": app.project_id, "expires_at": time.time() - 1}).decode()
    assert hms.post("/_access-tokens", orjson.loads(body)).status_code == 200
    status, answer = send(hms, app.project_id, expired, notification(hms_token()))
    assert (status, answer["code"]) == (401, "80200003")


@pytest.mark.parametrize(("message", "code"), [
    ({"message": {"token": [], "data": "x"}}, "80300010"),
    ({"message": {"token": ["t"] * 1001, "data": "x"}}, "80300010"),
    ({"message": {"token": ["t"], "data": {"not": "a string"}}}, "80100003"),
    ({"message": {"token": ["t"]}}, "80100003"),
    ({"nothing": True}, "80100003"),
    ({"message": {"token": ["t"], "data": "x" * 5000}}, "80300008"),
    ({"message": {"token": ["t"], "data": "x", "android": {"urgency": "LOUD"}}}, "80100001"),
    ({"message": {"token": ["t"], "data": "x", "android": {"ttl": "soon"}}}, "80100001"),
])
def test_bad_messages_get_hms_codes(hms, app, message, code):
    status, body = send(hms, app.project_id, access_token(hms, app), message)
    assert (status, body["code"]) == (400, code)
    if code == "80100001":
        assert "android." in body["msg"]


def test_bad_json_is_a_structure_error(hms, app):
    status, body = send(hms, app.project_id, access_token(hms, app), None, raw=b"{not json")
    assert (status, body["code"]) == (400, "80100003")


def test_behaviour_tokens_and_validate_only(hms, app):
    bearer = access_token(hms, app)
    flow, internal = hms_token("flow2-"), hms_token("internal1-")
    assert [send(hms, app.project_id, bearer, notification(flow))[0] for _ in range(3)] == [503, 503, 200]
    status, body = send(hms, app.project_id, bearer, notification(internal))
    assert (status, body["code"]) == (500, "81000001")
    assert send(hms, app.project_id, bearer, notification(internal))[0] == 200
    device = hms_token()
    status, body = send(hms, app.project_id, bearer, {**notification(device), "validate_only": True})
    assert (status, body["code"]) == (200, "80000000")
    assert hms.get(f"/counts/{device}") == {"delivered": 0, "attempts": 1, "shown": 0}


def test_quota_answers_flow_control(hms, app):
    bearer = access_token(hms, app)
    assert hms.post("/settings", {"quota_per_minute": 2}).status_code == 200
    try:
        statuses = [send(hms, app.project_id, bearer, notification(hms_token()))[0] for _ in range(4)]
    finally:
        hms.post("/settings", {"quota_per_minute": None})
    assert statuses == [200, 200, 503, 503]


def test_app_registration_is_checked(hms):
    answer = hms.post("/apps", {"client_id": "1", "client_secret": ""})
    assert answer.status_code == 400 and answer.json()["field"] == "client_secret"


def test_a_notification_message_may_carry_data(hms, app):
    """HMS documents message.data for notification messages too (a JSON string); only neither is a structure error."""
    device = hms_token()
    message = notification(device)
    message["message"]["data"] = '{"k": "v"}'
    status, body = send(hms, app.project_id, access_token(hms, app), message)
    assert (status, body["code"]) == (200, "80000000")
    assert hms.get(f"/counts/{device}")["delivered"] == 1
