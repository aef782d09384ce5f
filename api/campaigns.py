"""PowerAuth campaigns (seed 002): create, delete, detail, list, users, test and live send.

Writes go through the persist queue like every write; a live send is one
command on the expand queue, where the campaign's users are streamed into
deliveries (workers/campaigns.py). Errors use PowerAuth's envelope (the
``/push`` renderer of api/app.py).
"""
from __future__ import annotations

from flask import Blueprint, request

from api import auth, limits
from api import validation as v
from api.errors import ApiError, bad_request
from api.powerauth import existing_app, json_response, ok, parse_body, request_body, request_object, result_object, services
from shared import commands
from shared import db as collections
from shared.commands import command

blueprint = Blueprint("campaigns", __name__)

#: Most user ids one add or delete request may carry: the setting ``max_campaign_users_per_request``
#: (PUSH_MAX_CAMPAIGN_USERS_PER_REQUEST, default 100,000; the reference sends campaigns in batches of 100,000).
#: Largest page of the user list.
MAX_PAGE_SIZE = 10_000
DEFAULT_PAGE_SIZE = 100


def _campaign(campaign_id: str) -> dict:
    campaign = services().find_one(collections.CAMPAIGNS, {"_id": campaign_id})
    if campaign is None:
        raise ApiError(400, f"Campaign with entered ID does not exist: {campaign_id} (path id)", field="id", location="path",
                       code="ERROR_CAMPAIGN_NOT_FOUND")
    auth.require_app(campaign["app_id"], "id")
    return campaign


def _timestamp(value) -> str | None:
    """A stored time as ISO 8601 (nx-27017 reads a datetime written by ``$set`` back as a string)."""
    if value is None or isinstance(value, str):
        return value
    return value.isoformat()


def campaign_object(campaign: dict, *, progress: bool = False) -> dict:
    result = {
        "id": campaign["_id"],
        "appId": campaign["app_id"],
        "sent": bool(campaign.get("sent")),
        "timestampCreated": _timestamp(campaign.get("created_at")),
        "timestampSent": _timestamp(campaign.get("timestamp_sent")),
        "message": campaign["body"],
    }
    if progress:
        svc = services()
        counts = svc.guarded_read(lambda: svc.message_counts(campaign["_id"]))
        per_platform = result_object(counts)
        totals = {k: sum(per_platform[p][k] for p in ("apns", "fcm")) for k in ("total", "sent", "failed", "pending")}
        result["state"] = campaign.get("state", "created")
        result["progress"] = {"expanded": counts is not None, **totals, "apns": per_platform["apns"], "fcm": per_platform["fcm"]}
    return result


def _write(kind: str, **fields) -> dict:
    applied = services().write(command(kind, **fields))
    return (applied or {}).get("result") or {}


@blueprint.post("/push/campaign/create")
def create_campaign():
    data = request_object()
    app = existing_app(data)
    body = parse_body(v.required(data, "message", "requestObject."), "requestObject.message.")
    limits.check_payload(services().settings, body, "requestObject.message", silent=False, high_priority=True)
    campaign_id = commands.new_id()
    _write("campaign.create", campaign_id=campaign_id, app_id=app["_id"], body=body.to_json())
    return ok({"id": campaign_id})


@blueprint.route("/push/campaign/<campaign_id>/delete", methods=["POST", "DELETE"])
def delete_campaign(campaign_id: str):
    if not auth.current().is_admin:
        existing = services().find_one(collections.CAMPAIGNS, {"_id": campaign_id}, {"app_id": 1})
        if existing is not None:
            auth.require_app(existing["app_id"], "id")
    result = _write("campaign.delete", campaign_id=campaign_id)
    return ok({"deleted": bool(result.get("deleted"))})


@blueprint.get("/push/campaign/<campaign_id>/detail")
def campaign_detail(campaign_id: str):
    return ok(campaign_object(_campaign(campaign_id), progress=True))


@blueprint.get("/push/campaign/list")
@blueprint.get("/push/campaign/list/")
def list_campaigns():
    everything = _query_boolean("all", default=False)
    query = {} if everything else {"sent": True}
    principal = auth.current()
    if not principal.is_admin:
        query["app_id"] = principal.app_id
    svc = services()
    campaigns = svc.guarded_read(lambda: list(svc.db[collections.CAMPAIGNS].find(query).sort("created_at", 1)))
    return ok([campaign_object(c) for c in campaigns])


def _query_boolean(name: str, *, default: bool) -> bool:
    value = request.args.get(name)
    if value is None:
        return default
    if value.lower() not in ("true", "false"):
        raise bad_request(name, "must be true or false", location="query")
    return value.lower() == "true"


def _query_int(name: str, *, default: int, minimum: int, maximum: int) -> int:
    value = request.args.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise bad_request(name, "must be an integer", location="query") from None
    if not minimum <= number <= maximum:
        raise bad_request(name, f"must be between {minimum} and {maximum}", location="query")
    return number


def _user_list() -> list[str]:
    """The body's user ids: ``requestObject`` as a list (seed 002) or ``{"list": [...]}`` (newer reference)."""
    data = request_body()
    users = data.get("requestObject")
    if isinstance(users, dict):
        users = users.get("list")
    return v.string_list({"requestObject": users}, "requestObject", required_=True,
                         max_items=services().settings.max_campaign_users_per_request)


@blueprint.route("/push/campaign/<campaign_id>/user/add", methods=["PUT", "POST"])
def add_users(campaign_id: str):
    _campaign(campaign_id)
    users = _user_list()
    result = _write("campaign.users_add", campaign_id=campaign_id, users=users)
    if result.get("error"):
        _campaign(campaign_id)  # deleted meanwhile: answer as unknown
    return ok()


@blueprint.get("/push/campaign/<campaign_id>/user/list")
def list_users(campaign_id: str):
    _campaign(campaign_id)
    page = _query_int("page", default=0, minimum=0, maximum=10_000_000)
    size = _query_int("size", default=DEFAULT_PAGE_SIZE, minimum=1, maximum=MAX_PAGE_SIZE)
    svc = services()
    docs = svc.guarded_read(
        lambda: list(
            svc.db[collections.CAMPAIGN_USERS].find({"c": campaign_id}, {"u": 1}).sort("u", 1).skip(page * size).limit(size)
        )
    )
    body = {"status": "OK", "page": page, "size": size, "responseObject": {"campaignId": campaign_id, "users": [d["u"] for d in docs]}}
    return json_response(body)


@blueprint.route("/push/campaign/<campaign_id>/user/delete", methods=["POST", "DELETE"])
def delete_users(campaign_id: str):
    _campaign(campaign_id)
    users = _user_list()
    _write("campaign.users_delete", campaign_id=campaign_id, users=users)
    return ok()


@blueprint.post("/push/campaign/send/test/<campaign_id>")
def send_test(campaign_id: str):
    campaign = _campaign(campaign_id)
    data = request_object()
    user_id = v.string(data, "userId", "requestObject.", required_=True)
    entry = {"user_id": user_id, "activation_id": None, "personal": False, "silent": False, "high_priority": True, "body": campaign["body"]}
    send = command("send", app_id=campaign["app_id"], mode="ASYNCHRONOUS", entries=[entry], campaign_test=campaign_id)
    services().publish(commands.EXPAND_SEND, send)
    return ok({"messageId": send["id"]})


@blueprint.post("/push/campaign/send/live/<campaign_id>")
def send_live(campaign_id: str):
    campaign = _campaign(campaign_id)
    if not campaign.get("sent"):
        services().publish(commands.EXPAND_CAMPAIGN, command("campaign.send", campaign_id=campaign_id))
    return ok()
