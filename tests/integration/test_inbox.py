"""The PowerAuth inbox against the real stack: post, list, count, detail, read, read-all, errors."""
from __future__ import annotations

import uuid

import pymongo
import pytest

from shared import db as mongo
from shared.commands import command, new_id
from workers import inbox as handlers

#: A message body that passes the reference's length limits (at least 8 characters each).
SUBJECT = "Your statement"
SUMMARY = "The statement for March is ready"
BODY = "<p>Your statement for March is ready to download.</p>"


def error_of(answer, code: str = "ERROR_GENERIC", status: int = 400) -> str:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["status"] == "ERROR", body
    assert body["responseObject"]["code"] == code, body
    return body["responseObject"]["message"]


@pytest.fixture(scope="module")
def apps(stack, api) -> tuple[str, str]:
    """Two apps (no provider credentials needed: the inbox does not push)."""
    ids = (f"inbox-{uuid.uuid4().hex[:6]}", f"inbox-{uuid.uuid4().hex[:6]}")
    for app_id in ids:
        api.ok("/admin/app/create", {"appId": app_id})
    return ids


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def post(api, user_id: str, applications: list[str], *, subject: str = SUBJECT, message_type: str = "text") -> dict:
    request_object = {
        "userId": user_id,
        "type": message_type,
        "subject": subject,
        "summary": SUMMARY,
        "body": BODY,
        "applications": applications,
    }
    return api.ok("/inbox/messages", request_object)["responseObject"]


def listing(api, user_id: str, applications: list[str], **params) -> dict:
    answer = api.get("/inbox/messages/list", userId=user_id, applications=",".join(applications), **params)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "OK", body
    return body


def unread_count(api, user_id: str, app_id: str) -> int:
    answer = api.get("/inbox/messages/count", userId=user_id, appId=app_id)
    assert answer.status_code == 200, answer.text
    return answer.json()["responseObject"]["countUnread"]


def test_post_answers_the_detail_and_detail_reads_it_back(api, apps):
    user = new_user()
    posted = post(api, user, [apps[0]], message_type="HTML")
    assert len(posted["id"]) == 32
    assert posted["userId"] == user and posted["type"] == "html"
    assert (posted["subject"], posted["summary"], posted["body"]) == (SUBJECT, SUMMARY, BODY)
    assert posted["read"] is False and posted["timestampRead"] is None and posted["timestampCreated"]
    assert posted["applications"] == [apps[0]]
    detail = api.get("/inbox/messages/detail", id=posted["id"]).json()
    assert detail["status"] == "OK" and detail["responseObject"] == posted


def test_list_is_newest_first_paged_and_filtered_by_app(api, apps):
    user = new_user()
    first = post(api, user, [apps[0]], subject="First message")
    second = post(api, user, [apps[0], apps[1]], subject="Second message")
    third = post(api, user, [apps[1]], subject="Third message")
    post(api, new_user(), [apps[0]])  # another user's

    both = listing(api, user, list(apps))
    assert [m["id"] for m in both["responseObject"]] == [third["id"], second["id"], first["id"]]
    assert both["page"] == 0 and both["size"] == 20
    item = both["responseObject"][0]
    assert set(item) == {"id", "type", "subject", "summary", "read", "timestampCreated"}

    assert [m["id"] for m in listing(api, user, [apps[0]])["responseObject"]] == [second["id"], first["id"]]
    page = listing(api, user, list(apps), page=1, size=2)
    assert (page["page"], page["size"]) == (1, 2)
    assert [m["id"] for m in page["responseObject"]] == [first["id"]]


def test_read_marks_one_and_counts_follow(api, apps):
    user = new_user()
    one = post(api, user, [apps[0]])
    two = post(api, user, [apps[0], apps[1]])
    assert unread_count(api, user, apps[0]) == 2
    assert unread_count(api, user, apps[1]) == 1

    read = api.ok("/inbox/messages/read", {"inboxId": one["id"]})["responseObject"]
    assert read["id"] == one["id"] and read["read"] is True and read["timestampRead"]
    again = api.ok("/inbox/messages/read", {"inboxId": one["id"]})["responseObject"]
    assert again["timestampRead"] == read["timestampRead"]

    assert unread_count(api, user, apps[0]) == 1
    unread = listing(api, user, [apps[0]], onlyUnread="true")["responseObject"]
    assert [m["id"] for m in unread] == [two["id"]]
    everything = listing(api, user, [apps[0]], onlyUnread="false")["responseObject"]
    assert {m["id"]: m["read"] for m in everything} == {one["id"]: True, two["id"]: False}
    counts = api.get("/inbox/messages/count", userId=user, appId=apps[0]).json()["responseObject"]
    assert counts == {"countUnread": 1, "countAll": 2}


def test_read_all_marks_only_that_users_messages_in_that_app(api, apps):
    user, other = new_user(), new_user()
    post(api, user, [apps[0]])
    post(api, user, [apps[0], apps[1]])
    only_second_app = post(api, user, [apps[1]])
    post(api, other, [apps[0]])

    assert api.ok("/inbox/messages/read-all", {"userId": user, "appId": apps[0]}) == {"status": "OK"}
    assert unread_count(api, user, apps[0]) == 0
    assert unread_count(api, user, apps[1]) == 1
    assert unread_count(api, other, apps[0]) == 1
    unread = listing(api, user, list(apps), onlyUnread="true")["responseObject"]
    assert [m["id"] for m in unread] == [only_second_app["id"]]
    # Idempotent, and a message posted afterwards stays unread.
    api.ok("/inbox/messages/read-all", {"userId": user, "appId": apps[0]})
    post(api, user, [apps[0]])
    assert unread_count(api, user, apps[0]) == 1


def test_unknown_message(api):
    assert "nope" in error_of(api.get("/inbox/messages/detail", id="nope"), "ERROR_MESSAGE_NOT_FOUND")
    assert "nope" in error_of(api.post("/inbox/messages/read", {"inboxId": "nope"}), "ERROR_MESSAGE_NOT_FOUND")


def test_unknown_app(api, apps):
    user = new_user()
    answer = api.post(
        "/inbox/messages",
        {"userId": user, "type": "text", "subject": SUBJECT, "summary": SUMMARY, "body": BODY, "applications": [apps[0], "no-such-app"]},
    )
    assert "no-such-app" in error_of(answer, "ERROR_APP_NOT_FOUND")
    error_of(api.get("/inbox/messages/list", userId=user, applications=f"{apps[0]},no-such-app"), "ERROR_APP_NOT_FOUND")
    error_of(api.get("/inbox/messages/count", userId=user, appId="no-such-app"), "ERROR_APP_NOT_FOUND")
    error_of(api.post("/inbox/messages/read-all", {"userId": user, "appId": "no-such-app"}), "ERROR_APP_NOT_FOUND")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"userId": None}, "requestObject.userId"),
        ({"type": "markdown"}, "requestObject.type"),
        ({"subject": "short"}, "requestObject.subject"),
        ({"summary": 5}, "requestObject.summary"),
        ({"body": None}, "requestObject.body"),
        ({"applications": []}, "requestObject.applications"),
        ({"applications": ["a b"]}, "requestObject.applications[0]"),
    ],
)
def test_post_names_the_bad_field(api, apps, change, field):
    request_object = {"userId": "u1", "type": "text", "subject": SUBJECT, "summary": SUMMARY, "body": BODY, "applications": [apps[0]]}
    request_object.update(change)
    request_object = {k: val for k, val in request_object.items() if val is not None}
    assert field in error_of(api.post("/inbox/messages", request_object))


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"applications": "x"}, "userId"),
        ({"userId": "u"}, "applications"),
        ({"userId": "u", "applications": "APP", "onlyUnread": "maybe"}, "onlyUnread"),
        ({"userId": "u", "applications": "APP", "page": "-1"}, "page"),
        ({"userId": "u", "applications": "APP", "size": "0"}, "size"),
        ({"userId": "u", "applications": "APP", "size": "many"}, "size"),
    ],
)
def test_list_names_the_bad_parameter(api, apps, params, field):
    params = {key: (apps[0] if val == "APP" else val) for key, val in params.items()}
    assert field in error_of(api.get("/inbox/messages/list", **params))


def test_list_reads_flag_words_and_bounds_the_page(api, apps):
    user = new_user()
    first = post(api, user, [apps[0]])
    api.ok("/inbox/messages/read", {"inboxId": first["id"]})
    second = post(api, user, [apps[0]])
    assert [m["id"] for m in listing(api, user, [apps[0]], onlyUnread="1")["responseObject"]] == [second["id"]]
    assert len(listing(api, user, [apps[0]], onlyUnread="OFF")["responseObject"]) == 2
    spaced = api.get("/inbox/messages/list", userId=user, applications=f"{apps[0]}, {apps[0]}")
    assert spaced.status_code == 200 and len(spaced.json()["responseObject"]) == 2
    assert "page" in error_of(api.get("/inbox/messages/list", userId=user, applications=apps[0], page=str(10 ** 20)))
    many = ",".join(f"app-{i}" for i in range(101))
    assert error_of(api.get("/inbox/messages/list", userId=user, applications=many)).startswith("applications:")


def test_other_requests_name_the_missing_field(api, apps):
    assert "appId" in error_of(api.get("/inbox/messages/count", userId="u"))
    assert "id" in error_of(api.get("/inbox/messages/detail"))
    assert "requestObject.inboxId" in error_of(api.post("/inbox/messages/read", {}))
    assert "requestObject.appId" in error_of(api.post("/inbox/messages/read-all", {"userId": "u"}))
    assert "requestObject" in error_of(api.post("/inbox/messages", raw={"userId": "u"}))


def test_redelivered_commands_change_nothing_the_second_time(stack, api, apps):
    """A worker that dies after applying a command gets it again: the handlers are idempotent."""
    db = pymongo.MongoClient(stack.mongo_uri, tz_aware=True)["push"]
    user = new_user()
    post_command = command(
        "inbox.post", inbox_id=new_id(), user_id=user, type="text", subject=SUBJECT, summary=SUMMARY, body=BODY, applications=[apps[0]]
    )
    handlers.post_message(db, post_command)
    handlers.post_message(db, post_command)
    assert len(list(db[mongo.INBOX].find({"user_id": user}))) == 1

    read_command = command("inbox.read", inbox_id=post_command["inbox_id"])
    assert handlers.read_message(db, read_command) == {"changed": True}
    assert handlers.read_message(db, read_command) == {"changed": False}
    first_read = api.get("/inbox/messages/detail", id=post_command["inbox_id"]).json()["responseObject"]["timestampRead"]
    handlers.read_message(db, command("inbox.read", inbox_id=post_command["inbox_id"]))
    assert api.get("/inbox/messages/detail", id=post_command["inbox_id"]).json()["responseObject"]["timestampRead"] == first_read

    # A read-all received before a message was posted leaves it unread, whatever order they run in.
    read_all = command("inbox.read_all", user_id=user, app_id=apps[0])
    later = command(
        "inbox.post", inbox_id=new_id(), user_id=user, type="text", subject=SUBJECT, summary=SUMMARY, body=BODY, applications=[apps[0]]
    )
    handlers.post_message(db, later)
    assert handlers.read_all_messages(db, read_all) == {"marked": 0}
    assert handlers.read_all_messages(db, read_all) == {"marked": 0}
    assert unread_count(api, user, apps[0]) == 1
