"""The PowerAuth Push Server inbox: messages posted to a user's inbox in one or more apps.

Shapes follow the current reference (wultra/powerauth-push-server,
``InboxController``): ``POST /inbox/messages`` answers the new message's
detail, ``GET /inbox/messages/list`` a page of summaries (``page`` and
``size`` beside ``responseObject``), ``GET /inbox/messages/count`` the unread
count, ``GET /inbox/messages/detail`` and ``POST /inbox/messages/read`` one
message's detail, ``POST /inbox/messages/read-all`` a bare OK.

Writes go through the queue like every other write (the API waits for the
worker, so a read that follows sees them; a write not seen applied in time is
answered 202 with what it will store, never as failed); reads come straight
from MongoDB. A post with an ``Idempotency-Key`` is posted once however often
it is retried (api/idempotency.py).
Errors use PowerAuth's envelope: ``ERROR_APP_NOT_FOUND`` for an unknown app,
``ERROR_MESSAGE_NOT_FOUND`` for an unknown message, ``ERROR_GENERIC`` naming
the field for bad input; all 400, as the reference answers them.
"""
from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Response

from api import auth, idempotency
from api import schema as sc
from api.context import services
from api.errors import ApiError, renders_errors
from api.powerauth_envelope import TEXT, answer, json_response, ok, render_error, wrapped
from shared import db as mongo
from shared.commands import command, new_id

#: Message types and their canonical (lower-case) names, as the reference's ``MessageType``.
MESSAGE_TYPES = {"text": "text", "html": "html"}
#: Length limits of the reference's ``CreateInboxMessageRequest``.
MAX_USER_ID = 255
MIN_TEXT = 8
MAX_SUBJECT = 255
MAX_SUMMARY = 255
MAX_BODY = 65_536
#: An application id in an inbox message (the reference's pattern).
APPLICATION_ID = r"[a-zA-Z0-9_-]{3,255}"
APPLICATION_ID_HELP = "must be 3 to 255 letters, digits, '_' or '-'"
#: Most applications one message may name.
MAX_APPLICATIONS = 100
#: Paging as Spring's ``Pageable`` does it: page from 0, 20 a page, at most 2,000.
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 2000
#: Error codes of the reference.
APP_NOT_FOUND = "ERROR_APP_NOT_FOUND"
MESSAGE_NOT_FOUND = "ERROR_MESSAGE_NOT_FOUND"

blueprint = Blueprint("inbox", __name__)
renders_errors(blueprint, "powerauth", render_error)


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


# --- schemas ------------------------------------------------------------------------------------

USER_ID = sc.Str(required=True, max_length=MAX_USER_ID, description="The user's id")
POST = wrapped(
    {
        "userId": USER_ID,
        "type": sc.Choice(MESSAGE_TYPES, required=True),
        "subject": sc.Text(required=True, min_length=MIN_TEXT, max_length=MAX_SUBJECT),
        "summary": sc.Text(required=True, min_length=MIN_TEXT, max_length=MAX_SUMMARY),
        "body": sc.Text(required=True, min_length=MIN_TEXT, max_length=MAX_BODY),
        "applications": sc.List(
            sc.Str(max_length=255, pattern=APPLICATION_ID, pattern_help=APPLICATION_ID_HELP, example="demo"),
            min_items=1, max_items=MAX_APPLICATIONS, unique=True, required=True,
            description="The apps whose inbox shows the message (each must exist)",
        ),
    }
)
SUMMARY = sc.Obj({"id": TEXT, "type": TEXT, "subject": TEXT, "summary": TEXT, "read": sc.Bool()})
DETAIL = sc.Obj({**SUMMARY.properties, "userId": TEXT, "body": TEXT, "applications": sc.List(TEXT)})


# --- checks -------------------------------------------------------------------------------------

def require_apps(app_ids: list[str], field: str, *, location: str = "body") -> None:
    """Every app in ``app_ids`` must exist (and be the API key's); otherwise the reference's ERROR_APP_NOT_FOUND."""
    for app_id in app_ids:
        auth.require_app(app_id, field)
    svc = services()
    found = svc.guarded_read(lambda: {doc["_id"] for doc in svc.db[mongo.APPS].find({"_id": {"$in": app_ids}}, {"_id": 1})})
    missing = [app_id for app_id in app_ids if app_id not in found]
    if missing:
        raise ApiError(
            400,
            f"Application was not found: {', '.join(missing)} ({field})",
            field=field,
            location=location,
            code=APP_NOT_FOUND,
        )


def existing_message(inbox_id: str) -> dict:
    message = services().find_one(mongo.INBOX, {"_id": inbox_id})
    if message is None:
        raise ApiError(400, f"Inbox message not found: {inbox_id}", code=MESSAGE_NOT_FOUND)
    principal = auth.current()
    if not principal.is_admin and principal.app_id not in (message.get("applications") or []):
        raise auth.forbidden(f"the API key is not valid for inbox message {inbox_id}")
    return message


# --- routes -------------------------------------------------------------------------------------

@blueprint.post("/inbox/messages")
@sc.operation("Post a message to a user's inbox in one or more apps (a retry with the same Idempotency-Key posts it once)",
              body=POST, headers=idempotency.HEADERS, responses={200: answer(DETAIL)}, body_size=sc.MEDIUM_BODY)
def post_message() -> Response:
    data = sc.body()
    app_ids = data["applications"]
    require_apps(app_ids, "requestObject.applications")
    svc = services()
    principal = auth.current()
    inbox_id = idempotency.claim(svc, f"inbox\x00{principal.app_id or principal.kind}") or new_id()
    post = command(
        "inbox.post",
        inbox_id=inbox_id,
        user_id=data["userId"],
        type=data["type"],
        subject=data["subject"],
        summary=data["summary"],
        body=data["body"],
        applications=app_ids,
    )
    applied = svc.write(post)
    stored = svc.find_one(mongo.INBOX, {"_id": post["inbox_id"]}) if applied else None
    if stored is None:
        # Not seen applied (a 202: the write is durable all the same): answer what will be stored.
        stored = {"_id": post["inbox_id"], "created_at": created_time(post), "read": False, "read_at": None, **post}
    return ok(detail_of(stored))


def created_time(cmd: dict) -> datetime:
    """A message's creation time: the API's receive time of its command, to the millisecond (as stored)."""
    return datetime.fromtimestamp(cmd["received_at"] // 1_000_000 / 1000, UTC)


@blueprint.get("/inbox/messages/list")
@sc.operation(
    "A page of a user's messages in the given apps, newest first",
    query={
        "userId": USER_ID,
        "applications": sc.List(sc.Str(max_length=255, example="demo"), max_items=MAX_APPLICATIONS, required=True,
                                 description="App ids, comma-separated (each must exist)"),
        "onlyUnread": sc.Flag(default=False),
        "page": sc.Int(minimum=0, maximum=10_000_000, default=0),
        "size": sc.Int(minimum=1, maximum=MAX_PAGE_SIZE, default=DEFAULT_PAGE_SIZE),
    },
    responses={
        200: sc.Obj({"status": sc.Str(enum=["OK"]), "responseObject": sc.List(SUMMARY), "page": sc.Int(), "size": sc.Int()}),
    },
)
def list_messages() -> Response:
    params = sc.query()
    app_ids = list(dict.fromkeys(app.strip() for app in params["applications"]))
    require_apps(app_ids, "applications", location="query")
    page, size = params["page"], params["size"]
    query = {"user_id": params["userId"], "applications": {"$in": app_ids}}
    if params["onlyUnread"]:
        query["read"] = False
    svc = services()
    messages = svc.guarded_read(
        lambda: list(
            svc.db[mongo.INBOX]
            .find(query, {"body": 0})
            .sort([("created_at", -1), ("_id", -1)])
            .skip(page * size)
            .limit(size)
        )
    )
    return json_response({"status": "OK", "responseObject": [summary_of(m) for m in messages], "page": page, "size": size})


@blueprint.get("/inbox/messages/count")
@sc.operation(
    "How many of a user's messages in an app are unread, and in all",
    query={"userId": USER_ID, "appId": sc.Str(required=True, max_length=255, pattern=APPLICATION_ID, pattern_help=APPLICATION_ID_HELP,
                                                example="demo")},
    responses={200: answer(sc.Obj({"countUnread": sc.Int(), "countAll": sc.Int()}))},
)
def count_messages() -> Response:
    params = sc.query()
    user_id, app_id = params["userId"], params["appId"]
    require_apps([app_id], "appId", location="query")
    svc = services()
    rows = svc.guarded_read(
        lambda: list(
            svc.db[mongo.INBOX].aggregate(
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
@sc.operation("One message", query={"id": sc.Str(required=True, max_length=MAX_USER_ID, description="The message's id")},
              responses={200: answer(DETAIL)})
def message_detail() -> Response:
    return ok(detail_of(existing_message(sc.query()["id"])))


@blueprint.post("/inbox/messages/read")
@sc.operation("Mark one message read; answers its detail",
              body=wrapped({"inboxId": sc.Str(required=True, max_length=MAX_USER_ID)}), responses={200: answer(DETAIL)})
def read_message() -> Response:
    inbox_id = sc.body()["inboxId"]
    message = existing_message(inbox_id)
    if not message.get("read"):
        read = command("inbox.read", inbox_id=inbox_id)
        if services().write(read):
            message = existing_message(inbox_id)
        else:  # not seen applied (a 202): answer what it will be
            message = {**message, "read": True, "read_at": created_time(read)}
    return ok(detail_of(message))


@blueprint.post("/inbox/messages/read-all")
@sc.operation("Mark all of a user's messages in an app read",
              body=wrapped({"userId": USER_ID, "appId": sc.Id(required=True, example="demo")}), responses={200: answer()})
def read_all_messages() -> Response:
    data = sc.body()
    require_apps([data["appId"]], "requestObject.appId")
    services().write(command("inbox.read_all", user_id=data["userId"], app_id=data["appId"]))
    return ok()
