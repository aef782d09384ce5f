"""The PowerAuth Push Server inbox: messages posted to a user's inbox in one or more apps.

Shapes follow the current reference (wultra/powerauth-push-server,
``InboxController``): ``POST /inbox/messages`` answers the new message's
detail, ``GET /inbox/messages/list`` a page of summaries (``page`` and
``size`` beside ``responseObject``), ``GET /inbox/messages/count`` the unread
count, ``GET /inbox/messages/detail`` and ``POST /inbox/messages/read`` one
message's detail, ``POST /inbox/messages/read-all`` a bare OK.

Writes go through the queue like every other write (the API waits for the
worker, so a read that follows sees them); reads come straight from MongoDB.
Errors use PowerAuth's envelope: ``ERROR_APP_NOT_FOUND`` for an unknown app,
``ERROR_MESSAGE_NOT_FOUND`` for an unknown message, ``ERROR_GENERIC`` naming
the field for bad input; all 400, as the reference answers them.
"""
from __future__ import annotations

import re
from datetime import UTC, datetime

from flask import Blueprint, Response, request

from api import auth
from api import validation as v
from api.errors import ApiError, bad_request
from api.powerauth import json_response, ok, render_error, request_object, services
from shared import db as collections
from shared.commands import command, new_id

#: Message types and their canonical (lower-case) names, as the reference's ``MessageType``.
MESSAGE_TYPES = {"text": "text", "html": "html"}
#: Length limits of the reference's ``CreateInboxMessageRequest``.
MAX_USER_ID = 255
MIN_TEXT = 8
MAX_SUBJECT = 255
MAX_SUMMARY = 255
MAX_BODY = 65_536
#: An application id in an inbox request (the reference's pattern).
APPLICATION_ID = re.compile(r"^[a-zA-Z0-9_-]{3,255}$")
#: Most applications one message may name.
MAX_APPLICATIONS = 100
#: Paging as Spring's ``Pageable`` does it: page from 0, 20 a page, at most 2,000.
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 2000
#: Error codes of the reference.
APP_NOT_FOUND = "ERROR_APP_NOT_FOUND"
MESSAGE_NOT_FOUND = "ERROR_MESSAGE_NOT_FOUND"
#: Query values read as true / false for ``onlyUnread``.
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off", "")

blueprint = Blueprint("inbox", __name__)
blueprint.register_error_handler(ApiError, render_error)


# --- rendering ----------------------------------------------------------------------------------

def timestamp(value: datetime | str | None) -> str | None:
    """ISO-8601 in UTC, to the millisecond.

    nx-27017 reads a date written by ``$set`` back as a naive string
    ('2026-11-25 17:00:00.123000', UTC); MongoDB answers a datetime.
    """
    if not value:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds")


def summary_of(message: dict) -> dict:
    """A message as the reference's ``InboxMessage`` (list items)."""
    return {
        "id": message["_id"],
        "type": message["type"],
        "subject": message["subject"],
        "summary": message["summary"],
        "read": bool(message.get("read")),
        "timestampCreated": timestamp(message.get("created_at")),
    }


def detail_of(message: dict) -> dict:
    """A message as the reference's ``GetInboxMessageDetailResponse``."""
    return {
        "id": message["_id"],
        "userId": message["user_id"],
        "type": message["type"],
        "subject": message["subject"],
        "summary": message["summary"],
        "body": message["body"],
        "read": bool(message.get("read")),
        "timestampCreated": timestamp(message.get("created_at")),
        "timestampRead": timestamp(message.get("read_at")),
        "applications": list(message.get("applications") or []),
    }


# --- validation ---------------------------------------------------------------------------------

def text(data: dict, key: str, prefix: str, *, min_length: int, max_length: int) -> str:
    value = v.string(data, key, prefix, required_=True, max_length=max_length, allow_empty=True)
    if len(value) < min_length:
        raise bad_request(prefix + key, f"must be at least {min_length} characters")
    return value


def applications(data: dict, prefix: str) -> list[str]:
    """The message's applications: a non-empty list of app ids, each an existing app."""
    field = prefix + "applications"
    value = v.required(data, "applications", prefix)
    if not isinstance(value, list) or not value:
        raise bad_request(field, "must be a non-empty list of application ids")
    if len(value) > MAX_APPLICATIONS:
        raise bad_request(field, f"must have at most {MAX_APPLICATIONS} items")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not APPLICATION_ID.match(item):
            raise bad_request(f"{field}[{index}]", "must be 3 to 255 letters, digits, '_' or '-'")
    app_ids = list(dict.fromkeys(value))
    require_apps(app_ids, field)
    return app_ids


def require_apps(app_ids: list[str], field: str, *, location: str = "body") -> None:
    """Every app in ``app_ids`` must exist (and be the API key's); otherwise the reference's ERROR_APP_NOT_FOUND."""
    for app_id in app_ids:
        auth.require_app(app_id, field)
    svc = services()
    found = svc.guarded_read(lambda: {doc["_id"] for doc in svc.db[collections.APPS].find({"_id": {"$in": app_ids}}, {"_id": 1})})
    missing = [app_id for app_id in app_ids if app_id not in found]
    if missing:
        raise ApiError(
            400,
            f"Application was not found: {', '.join(missing)} ({field})",
            field=field,
            location=location,
            code=APP_NOT_FOUND,
        )


def query_string(key: str, *, max_length: int = MAX_USER_ID) -> str:
    """A required query parameter."""
    value = request.args.get(key)
    if value is None or not value.strip():
        raise bad_request(key, "is required", location="query")
    if len(value) > max_length:
        raise bad_request(key, f"must be at most {max_length} characters", location="query")
    return value


def query_flag(key: str) -> bool:
    value = request.args.get(key, "").strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise bad_request(key, "must be true or false", location="query")


def query_int(key: str, *, default: int, minimum: int, maximum: int | None = None) -> int:
    raw = request.args.get(key)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(key, "must be an integer", location="query") from None
    if value < minimum:
        raise bad_request(key, f"must be at least {minimum}", location="query")
    if maximum is not None and value > maximum:
        raise bad_request(key, f"must be at most {maximum}", location="query")
    return value


def existing_message(inbox_id: str) -> dict:
    message = services().find_one(collections.INBOX, {"_id": inbox_id})
    if message is None:
        raise ApiError(400, f"Inbox message not found: {inbox_id}", code=MESSAGE_NOT_FOUND)
    principal = auth.current()
    if not principal.is_admin and principal.app_id not in (message.get("applications") or []):
        raise auth.forbidden(f"the API key is not valid for inbox message {inbox_id}")
    return message


# --- routes -------------------------------------------------------------------------------------

@blueprint.post("/inbox/messages")
def post_message() -> Response:
    data = request_object()
    prefix = "requestObject."
    user_id = v.string(data, "userId", prefix, required_=True, max_length=MAX_USER_ID)
    message_type = v.choice(data, "type", MESSAGE_TYPES, prefix)
    subject = text(data, "subject", prefix, min_length=MIN_TEXT, max_length=MAX_SUBJECT)
    summary = text(data, "summary", prefix, min_length=MIN_TEXT, max_length=MAX_SUMMARY)
    body = text(data, "body", prefix, min_length=MIN_TEXT, max_length=MAX_BODY)
    app_ids = applications(data, prefix)
    post = command(
        "inbox.post",
        inbox_id=new_id(),
        user_id=user_id,
        type=message_type,
        subject=subject,
        summary=summary,
        body=body,
        applications=app_ids,
    )
    svc = services()
    svc.write(post)
    stored = svc.find_one(collections.INBOX, {"_id": post["inbox_id"]})
    if stored is None:
        # Not applied within the wait (the write is durable all the same): answer what will be stored.
        stored = {"_id": post["inbox_id"], "created_at": created_time(post), "read": False, "read_at": None, **post}
    return ok(detail_of(stored))


def created_time(cmd: dict) -> datetime:
    """A message's creation time: the API's receive time of its command, to the millisecond (as stored)."""
    return datetime.fromtimestamp(cmd["received_at"] // 1_000_000 / 1000, UTC)


@blueprint.get("/inbox/messages/list")
def list_messages() -> Response:
    user_id = query_string("userId")
    raw_apps = query_string("applications", max_length=MAX_APPLICATIONS * 256)
    app_ids = list(dict.fromkeys(app.strip() for app in raw_apps.split(",") if app.strip()))
    if not app_ids:
        raise bad_request("applications", "must name at least one application", location="query")
    require_apps(app_ids, "applications", location="query")
    only_unread = query_flag("onlyUnread")
    page = query_int("page", default=0, minimum=0)
    size = query_int("size", default=DEFAULT_PAGE_SIZE, minimum=1, maximum=MAX_PAGE_SIZE)
    query = {"user_id": user_id, "applications": {"$in": app_ids}}
    if only_unread:
        query["read"] = False
    svc = services()
    messages = svc.guarded_read(
        lambda: list(
            svc.db[collections.INBOX]
            .find(query, {"body": 0})
            .sort([("created_at", -1), ("_id", -1)])
            .skip(page * size)
            .limit(size)
        )
    )
    return json_response({"status": "OK", "responseObject": [summary_of(m) for m in messages], "page": page, "size": size})


@blueprint.get("/inbox/messages/count")
def count_messages() -> Response:
    user_id = query_string("userId")
    app_id = query_string("appId")
    require_apps([app_id], "appId", location="query")
    svc = services()
    rows = svc.guarded_read(
        lambda: list(
            svc.db[collections.INBOX].aggregate(
                [
                    {"$match": {"user_id": user_id, "applications": {"$in": [app_id]}}},
                    {"$group": {"_id": "$read", "n": {"$sum": 1}}},
                ]
            )
        )
    )
    count_all = sum(row["n"] for row in rows)
    count_unread = sum(row["n"] for row in rows if not row["_id"])
    return ok({"countUnread": count_unread, "countAll": count_all})


@blueprint.get("/inbox/messages/detail")
def message_detail() -> Response:
    inbox_id = query_string("id")
    return ok(detail_of(existing_message(inbox_id)))


@blueprint.post("/inbox/messages/read")
def read_message() -> Response:
    data = request_object()
    inbox_id = v.string(data, "inboxId", "requestObject.", required_=True, max_length=MAX_USER_ID)
    message = existing_message(inbox_id)
    if not message.get("read"):
        services().write(command("inbox.read", inbox_id=inbox_id))
        message = existing_message(inbox_id)
    return ok(detail_of(message))


@blueprint.post("/inbox/messages/read-all")
def read_all_messages() -> Response:
    data = request_object()
    prefix = "requestObject."
    user_id = v.string(data, "userId", prefix, required_=True, max_length=MAX_USER_ID)
    app_id = v.identifier(data, "appId", prefix, required_=True)
    require_apps([app_id], prefix + "appId")
    services().write(command("inbox.read_all", user_id=user_id, app_id=app_id))
    return ok()
