"""PowerAuth campaigns (seed 002): create, delete, detail, list, users, test and live send.

Writes go through the persist queue like every write; a live send is one
command on the expand queue, where the campaign's users are streamed into
deliveries (workers/campaigns.py). Errors use PowerAuth's envelope
(api/powerauth_envelope.py).
"""
from __future__ import annotations

from flask import Blueprint

from api import auth, limits, queue_cap, sender_control
from api import schema as sc
from api.context import services
from api.errors import ApiError, renders_errors
from api.powerauth import MESSAGE_BODY, parse_body, result_object
from api.powerauth_envelope import OK, existing_app, json_response, ok, render_error
from shared import commands, halt
from shared import db as mongo
from shared.commands import PUSH_PROVIDERS, command
from shared.send_entry import SendEntry

blueprint = Blueprint("campaigns", __name__)
renders_errors(blueprint, "powerauth", render_error)

#: Largest page of the user list.
MAX_PAGE_SIZE = 10_000
DEFAULT_PAGE_SIZE = 100


def _campaign(campaign_id: str) -> dict:
    campaign = services().find_one(mongo.CAMPAIGNS, {"_id": campaign_id})
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
        totals = {k: sum(per_platform[p][k] for p in PUSH_PROVIDERS) for k in ("total", "sent", "failed", "pending")}
        halted = svc.find_one(halt.HALTS, {"_id": campaign["_id"]}, {"state": 1})
        result["state"] = halt.shown_state(halted, campaign.get("state", "created"))
        result["progress"] = {"expanded": counts is not None, **totals, **{p: per_platform[p] for p in PUSH_PROVIDERS}}
        result.update(sender_control.schedule_detail(svc, campaign["_id"], campaign.get("send_at")))
    return result


def _write(kind: str, **fields) -> dict:
    applied = services().write(command(kind, **fields))
    return (applied or {}).get("result") or {}


def _max_users(settings) -> int:
    """Most user ids one add or delete request may carry: the setting ``max_campaign_users_per_request``
    (PUSH_MAX_CAMPAIGN_USERS_PER_REQUEST, default 100,000; the reference sends campaigns in batches of 100,000)."""
    return settings.max_campaign_users_per_request


CAMPAIGN_ID = {"campaign_id": sc.Str(description="The campaign's id (answered by create)")}
USER_IDS = sc.List(sc.Str(), max_items=_max_users)
#: A user list: ``requestObject`` as a list (seed 002) or ``{"list": [...]}`` (newer reference).
USER_LIST = sc.Wrapped(sc.Either(USER_IDS, sc.Obj({"list": sc.List(sc.Str(), max_items=_max_users, required=True)})))
COUNTS = sc.Obj({k: sc.Int() for k in ("total", "sent", "failed", "pending")})
CAMPAIGN = sc.Obj({
    "id": sc.Str(), "appId": sc.Str(), "sent": sc.Bool(), "timestampCreated": sc.Str(),
    "timestampSent": sc.Json(description="ISO 8601, or null until the campaign is sent"),
    "message": sc.Json(object_only=True),
})
CAMPAIGN_DETAIL = sc.Obj({**CAMPAIGN.properties, "state": sc.Str(), "progress": sc.Obj({
    "expanded": sc.Bool(), **COUNTS.properties, "apns": COUNTS, "fcm": COUNTS, "hms": COUNTS}), **sender_control.SCHEDULE_DETAIL})


def answer(result: sc.Field | None = None) -> sc.Obj:
    """PowerAuth's success envelope around ``result``."""
    return sc.Obj({"status": sc.Str(enum=["OK"]), **({"responseObject": result} if result is not None else {})})


@blueprint.post("/push/campaign/create")
@sc.operation("Create a campaign", body=sc.Wrapped(sc.Obj({"appId": sc.Id(required=True), "message": MESSAGE_BODY})),
             responses={200: answer(sc.Obj({"id": sc.Str()}))})
def create_campaign():
    data = sc.body()
    app = existing_app(data)
    body = parse_body(data["message"])
    limits.check_payload(services().settings, body, "requestObject.message", silent=False, high_priority=True)
    campaign_id = commands.new_id()
    _write("campaign.create", campaign_id=campaign_id, app_id=app["_id"], body=body.to_json())
    return ok({"id": campaign_id})


@blueprint.route("/push/campaign/<campaign_id>/delete", methods=["POST", "DELETE"])
@sc.operation("Delete a campaign and its users", path=CAMPAIGN_ID, responses={200: answer(sc.Obj({"deleted": sc.Bool()}))})
def delete_campaign(campaign_id: str):
    if not auth.current().is_admin:
        existing = services().find_one(mongo.CAMPAIGNS, {"_id": campaign_id}, {"app_id": 1})
        if existing is not None:
            auth.require_app(existing["app_id"], "id")
    result = _write("campaign.delete", campaign_id=campaign_id)
    return ok({"deleted": bool(result.get("deleted"))})


@blueprint.get("/push/campaign/<campaign_id>/detail")
@sc.operation("A campaign, with its delivery progress", path=CAMPAIGN_ID, responses={200: answer(CAMPAIGN_DETAIL)})
def campaign_detail(campaign_id: str):
    return ok(campaign_object(_campaign(campaign_id), progress=True))


@blueprint.get("/push/campaign/list")
@blueprint.get("/push/campaign/list/")
@sc.operation("Campaigns: all, or (all=false) only those sent", query={"all": sc.Bool(default=False)},
             responses={200: answer(sc.List(CAMPAIGN))})
def list_campaigns():
    everything = sc.query()["all"]
    query = {} if everything else {"sent": True}
    principal = auth.current()
    if not principal.is_admin:
        query["app_id"] = principal.app_id
    svc = services()
    campaigns = svc.guarded_read(lambda: list(svc.db[mongo.CAMPAIGNS].find(query).sort("created_at", 1)))
    return ok([campaign_object(c) for c in campaigns])


def _user_list() -> list[str]:
    users = sc.body()
    return users["list"] if isinstance(users, dict) else users


@blueprint.route("/push/campaign/<campaign_id>/user/add", methods=["PUT", "POST"])
@sc.operation("Add users to a campaign (a user added twice is kept once)", path=CAMPAIGN_ID, body=USER_LIST, responses={200: OK},
             body_size=sc.LARGE_BODY)
def add_users(campaign_id: str):
    _campaign(campaign_id)
    users = _user_list()
    result = _write("campaign.users_add", campaign_id=campaign_id, users=users)
    if result.get("error"):
        _campaign(campaign_id)  # deleted meanwhile: answer as unknown
    return ok()


@blueprint.get("/push/campaign/<campaign_id>/user/list")
@sc.operation("A page of a campaign's users, in a stable order", path=CAMPAIGN_ID,
             query={"page": sc.Int(minimum=0, maximum=10_000_000, default=0),
                    "size": sc.Int(minimum=1, maximum=MAX_PAGE_SIZE, default=DEFAULT_PAGE_SIZE)},
             responses={200: sc.Obj({"status": sc.Str(enum=["OK"]), "page": sc.Int(), "size": sc.Int(),
                                    "responseObject": sc.Obj({"campaignId": sc.Str(), "users": sc.List(sc.Str())})})})
def list_users(campaign_id: str):
    _campaign(campaign_id)
    page, size = sc.query()["page"], sc.query()["size"]
    svc = services()
    docs = svc.guarded_read(
        lambda: list(
            svc.db[mongo.CAMPAIGN_USERS].find({"c": campaign_id}, {"u": 1}).sort(mongo.CAMPAIGN_USERS_ORDER).skip(page * size).limit(size)
        )
    )
    body = {"status": "OK", "page": page, "size": size, "responseObject": {"campaignId": campaign_id, "users": [d["u"] for d in docs]}}
    return json_response(body)


@blueprint.route("/push/campaign/<campaign_id>/user/delete", methods=["POST", "DELETE"])
@sc.operation("Remove users from a campaign", path=CAMPAIGN_ID, body=USER_LIST, responses={200: OK}, body_size=sc.LARGE_BODY)
def delete_users(campaign_id: str):
    _campaign(campaign_id)
    users = _user_list()
    _write("campaign.users_delete", campaign_id=campaign_id, users=users)
    return ok()


#: The answer of a campaign send with ``validateOnly`` (api/sender_control.py).
VALIDATION_ANSWER = {"validateOnly": sc.Bool(), "validation": sender_control.VALIDATION}


def _validation(campaign: dict, user_ids: list[str] | None = None):
    svc = services()
    app = svc.find_one(mongo.APPS, {"_id": campaign["app_id"]}) or {"_id": campaign["app_id"]}
    return ok({"validateOnly": True, "validation": sender_control.validate_campaign(svc, app, campaign, user_ids)})


@blueprint.post("/push/campaign/send/test/<campaign_id>")
@sc.operation("Send the campaign to one user, as a test", path=CAMPAIGN_ID,
             body=sc.Wrapped(sc.Obj({"userId": sc.Str(required=True), "validateOnly": sender_control.VALIDATE_ONLY})),
             responses={200: answer(sc.Obj({"messageId": sc.Str(), **VALIDATION_ANSWER}))})
def send_test(campaign_id: str):
    campaign = _campaign(campaign_id)
    user_id = sc.body()["userId"]
    if sc.body()["validateOnly"]:
        return _validation(campaign, [user_id])
    entry = SendEntry.for_user(user_id, campaign["body"]).to_json()
    send = command("send", app_id=campaign["app_id"], mode="ASYNCHRONOUS", entries=[entry], campaign_test=campaign_id,
                   lane=commands.send_lane("ASYNCHRONOUS", [entry]))
    services().publish(commands.EXPAND_SEND, send)
    return ok({"messageId": send["id"]})


@blueprint.post("/push/campaign/send/live/<campaign_id>")
@sc.operation("Send the campaign to all its users' devices (once each, however often called); an optional body "
             "{\"requestObject\": {\"validateOnly\": true}} checks and reports instead", path=CAMPAIGN_ID,
             body=sc.Wrapped(sc.Obj({"validateOnly": sender_control.VALIDATE_ONLY, "sendAt": sender_control.SEND_AT}), bare_ok=True),
             body_required=False, responses={200: answer(sc.Obj({**VALIDATION_ANSWER, "sendAt": sc.Str()}))})
def send_live(campaign_id: str):
    campaign = _campaign(campaign_id)
    options = sc.body() or {}
    send_at = options.get("sendAt")
    if send_at is not None:
        sender_control.check_send_at(send_at, [campaign["body"]], explicit_mode=None)
    if options.get("validateOnly"):
        return _validation(campaign)
    if send_at is not None:
        if not campaign.get("sent"):
            sender_control.schedule(services(), campaign_id, campaign["app_id"], send_at, commands.EXPAND_CAMPAIGN,
                                    command("campaign.send", campaign_id=campaign_id), kind="campaign")
        return ok({"sendAt": send_at.isoformat()})
    if not campaign.get("sent"):
        queue_cap.check(services().find_one(mongo.APPS, {"_id": campaign["app_id"]}) or {"_id": campaign["app_id"]})
        services().publish(commands.EXPAND_CAMPAIGN, command("campaign.send", campaign_id=campaign_id))
    return ok()
