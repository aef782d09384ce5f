"""PowerAuth inbox: request validation, error envelopes and rendering (no stack)."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from api.app import create_app
from api.inbox import created_time, detail_of, timestamp
from shared import db as mongo
from shared.settings import load
from workers.inbox import received_time

SUBJECT = "Your statement"
SUMMARY = "The statement for March is ready"
BODY = "Your statement for March is ready to download."


class FakeCollection:
    """Answers ``find({"_id": {"$in": ids}})`` over a set of ids: enough for the app lookups."""

    def __init__(self, ids: set[str]):
        self.ids = ids

    def find(self, query, projection=None):
        return [{"_id": _id} for _id in query["_id"]["$in"] if _id in self.ids]


class FakeServices:
    """Stands in for api.services.Services: apps known, inbox messages by id, writes recorded."""

    def __init__(self, settings):
        self.settings = settings
        self.apps = {"app-one", "app-two"}
        self.messages: dict = {}
        self.commands: list = []
        self.db = {mongo.APPS: FakeCollection(self.apps)}

    def find_one(self, collection, query, projection=None):
        return self.messages.get(query["_id"]) if collection == mongo.INBOX else None

    def write(self, command):
        self.commands.append(command)
        return {"_id": command["id"]}

    def guarded_read(self, read):
        return read()


@pytest.fixture
def client():
    app = create_app(load({}))
    fake = FakeServices(app.extensions["push"].settings)
    app.extensions["push"] = fake
    return app.test_client(), fake


def valid_message(**change) -> dict:
    message = {"userId": "u1", "type": "text", "subject": SUBJECT, "summary": SUMMARY, "body": BODY, "applications": ["app-one"]}
    message.update(change)
    return {key: value for key, value in message.items() if value is not None}


def error_of(answer, code: str = "ERROR_GENERIC") -> str:
    assert answer.status_code == 400, answer.get_data(as_text=True)
    body = answer.get_json()
    assert body["status"] == "ERROR" and body["responseObject"]["code"] == code, body
    return body["responseObject"]["message"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"userId": None}, "requestObject.userId"),
        ({"userId": ""}, "requestObject.userId"),
        ({"userId": "u" * 256}, "requestObject.userId"),
        ({"type": None}, "requestObject.type"),
        ({"type": "markdown"}, "requestObject.type"),
        ({"subject": None}, "requestObject.subject"),
        ({"subject": "short"}, "requestObject.subject"),
        ({"subject": "s" * 256}, "requestObject.subject"),
        ({"summary": 12345678}, "requestObject.summary"),
        ({"body": "tiny"}, "requestObject.body"),
        ({"body": "b" * 65_537}, "requestObject.body"),
        ({"applications": None}, "requestObject.applications"),
        ({"applications": []}, "requestObject.applications"),
        ({"applications": "app-one"}, "requestObject.applications"),
        ({"applications": ["app-one", "ab"]}, "requestObject.applications[1]"),
        ({"applications": ["app one"]}, "requestObject.applications[0]"),
        ({"applications": [7]}, "requestObject.applications[0]"),
    ],
)
def test_post_names_the_bad_field_and_writes_nothing(client, change, field):
    http, fake = client
    assert field in error_of(http.post("/inbox/messages", json={"requestObject": valid_message(**change)}))
    assert fake.commands == []


def test_post_needs_the_request_object(client):
    http, _ = client
    assert "requestObject" in error_of(http.post("/inbox/messages", json=valid_message()))
    assert "body" in error_of(http.post("/inbox/messages", data="{nope", headers={"Content-Type": "application/json"}))


def test_post_with_an_unknown_app_is_app_not_found(client):
    http, fake = client
    answer = http.post("/inbox/messages", json={"requestObject": valid_message(applications=["app-one", "app-nine"])})
    assert "app-nine" in error_of(answer, "ERROR_APP_NOT_FOUND")
    assert fake.commands == []


def test_post_enqueues_one_command_with_an_api_made_id(client):
    http, fake = client
    answer = http.post("/inbox/messages", json={"requestObject": valid_message(type="HTML", applications=["app-one", "app-two", "app-one"])})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    (command,) = fake.commands
    assert command["kind"] == "inbox.post" and command["type"] == "html"
    assert command["applications"] == ["app-one", "app-two"]
    detail = answer.get_json()["responseObject"]
    # The fake never applies the write: the answer is what the worker will store.
    assert detail["id"] == command["inbox_id"] and detail["read"] is False and detail["timestampRead"] is None
    assert detail["timestampCreated"] == timestamp(received_time(command))


@pytest.mark.parametrize(
    ("query", "field", "code"),
    [
        ("applications=app-one", "userId", "ERROR_GENERIC"),
        ("userId=u1", "applications", "ERROR_GENERIC"),
        ("userId=u1&applications=,", "applications", "ERROR_GENERIC"),
        ("userId=u1&applications=app-one&onlyUnread=maybe", "onlyUnread", "ERROR_GENERIC"),
        ("userId=u1&applications=app-one&page=-1", "page", "ERROR_GENERIC"),
        ("userId=u1&applications=app-one&page=x", "page", "ERROR_GENERIC"),
        ("userId=u1&applications=app-one&size=0", "size", "ERROR_GENERIC"),
        ("userId=u1&applications=app-one&size=2001", "size", "ERROR_GENERIC"),
        ("userId=u1&applications=app-one,app-nine", "applications", "ERROR_APP_NOT_FOUND"),
    ],
)
def test_list_names_the_bad_parameter(client, query, field, code):
    http, _ = client
    assert field in error_of(http.get(f"/inbox/messages/list?{query}"), code)


def test_count_detail_read_and_read_all_validate(client):
    http, fake = client
    assert "appId" in error_of(http.get("/inbox/messages/count?userId=u1"))
    assert "userId" in error_of(http.get("/inbox/messages/count?appId=app-one"))
    assert "app-nine" in error_of(http.get("/inbox/messages/count?userId=u1&appId=app-nine"), "ERROR_APP_NOT_FOUND")
    assert "id" in error_of(http.get("/inbox/messages/detail"))
    assert "m1" in error_of(http.get("/inbox/messages/detail?id=m1"), "ERROR_MESSAGE_NOT_FOUND")
    assert "requestObject.inboxId" in error_of(http.post("/inbox/messages/read", json={"requestObject": {}}))
    assert "m1" in error_of(http.post("/inbox/messages/read", json={"requestObject": {"inboxId": "m1"}}), "ERROR_MESSAGE_NOT_FOUND")
    assert "requestObject.userId" in error_of(http.post("/inbox/messages/read-all", json={"requestObject": {"appId": "app-one"}}))
    assert "requestObject.appId" in error_of(http.post("/inbox/messages/read-all", json={"requestObject": {"userId": "u1"}}))
    answer = http.post("/inbox/messages/read-all", json={"requestObject": {"userId": "u1", "appId": "app-nine"}})
    assert "app-nine" in error_of(answer, "ERROR_APP_NOT_FOUND")
    assert fake.commands == []


def test_reading_a_read_message_writes_nothing(client):
    http, fake = client
    read_at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    fake.messages["m1"] = {
        "_id": "m1", "user_id": "u1", "type": "text", "subject": SUBJECT, "summary": SUMMARY, "body": BODY,
        "applications": ["app-one"], "read": 1, "created_at": read_at, "read_at": "2026-03-01 12:00:00.000000",
    }
    answer = http.post("/inbox/messages/read", json={"requestObject": {"inboxId": "m1"}})
    assert answer.status_code == 200
    detail = answer.get_json()["responseObject"]
    assert detail["read"] is True and detail["timestampRead"] == "2026-03-01T12:00:00.000+00:00"
    assert fake.commands == []


def test_timestamps_render_from_datetimes_and_from_nx_strings():
    moment = datetime(2026, 11, 25, 17, 0, 0, 123456, tzinfo=UTC)
    assert timestamp(moment) == "2026-11-25T17:00:00.123+00:00"
    assert timestamp("2026-11-25 17:00:00.123000") == "2026-11-25T17:00:00.123+00:00"
    assert timestamp(None) is None


def test_api_and_worker_agree_on_the_creation_time():
    command = {"received_at": 1_764_090_000_123_456_789}
    assert created_time(command) == received_time(command) == datetime(2025, 11, 25, 17, 0, 0, 123000, tzinfo=UTC)


def test_detail_of_answers_booleans():
    message = {"_id": "m", "user_id": "u", "type": "text", "subject": "s", "summary": "s", "body": "b", "read": 0, "applications": ["a"]}
    assert detail_of(message)["read"] is False
