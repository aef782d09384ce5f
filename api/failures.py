"""What failed in a send (issue 18): ``GET /push/message/{id}/failures`` and ``GET /push/campaign/{id}/failures``.

Each failed, dead-token, expired or given-up delivery with its token, platform, reason and time, a page at a
time (read by :func:`shared.failures.failures`). Tokens are shown by their last 8 characters; whole only to a
request presenting the admin key (``PUSH_ADMIN_KEY``), as a token is what reaches a user's device.
"""
from __future__ import annotations

from flask import Blueprint

from api import auth
from api import schema as sc
from api.context import services
from api.errors import ApiError, not_found, renders_errors
from api.powerauth_envelope import answer, ok, render_error
from shared import db as mongo
from shared.failures import FAILURE_STATES, failures

blueprint = Blueprint("failures", __name__)
renders_errors(blueprint, "powerauth", render_error)

#: Characters of a token shown to anyone but the admin key.
TOKEN_TAIL = 8
#: Largest page.
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100

PAGE = {"page": sc.Int(minimum=0, maximum=10_000_000, default=0, description="Page number, from 0"),
        "size": sc.Int(minimum=1, maximum=MAX_PAGE_SIZE, default=DEFAULT_PAGE_SIZE)}
FAILURE = sc.Obj({
    "token": sc.Str(description=f"The device token's last {TOKEN_TAIL} characters (whole to the admin key)"),
    "tokenComplete": sc.Bool(),
    "platform": sc.Str(),
    "state": sc.Str(enum=list(FAILURE_STATES)),
    "reason": sc.Json(description="The provider's reason, or null"),
    "timestamp": sc.Json(description="ISO 8601, or null"),
})


def failure_list(**ids) -> sc.Obj:
    return answer(sc.Obj({**{name: sc.Str() for name in ids}, "page": sc.Int(), "size": sc.Int(), "total": sc.Int(),
                          "failures": sc.List(FAILURE)}))


def presents_admin_key() -> bool:
    key = auth.presented_key()
    return key is not None and auth.is_admin_key(key, services().settings.admin_key)


def shown(token: str, whole: bool) -> str:
    return token if whole else token[-TOKEN_TAIL:]


def _page(message_id: str) -> dict:
    query = sc.query()
    page, size = query["page"], query["size"]
    svc = services()
    total, items = svc.guarded_read(lambda: failures(svc.db, [message_id], page, size))
    whole = presents_admin_key()
    return {
        "page": page,
        "size": size,
        "total": total,
        "failures": [
            {"token": shown(f["token"], whole), "tokenComplete": whole, "platform": f["platform"], "state": f["state"],
             "reason": f["reason"], "timestamp": f["at"].isoformat() if f["at"] else None}
            for f in items
        ],
    }


@blueprint.get("/push/message/<message_id>/failures")
@sc.operation("A send's failed and dead-token deliveries, a page at a time", path={"message_id": sc.Str()}, query=PAGE,
              responses={200: failure_list(messageId=True)})
def message_failures(message_id: str):
    message = services().find_one(mongo.MESSAGES, {"_id": message_id}, {"app_id": 1})
    if message is None:
        raise not_found(f"Message not found: {message_id}", field="messageId", location="path")
    auth.require_app(message["app_id"], "messageId")
    return ok({"messageId": message_id, **_page(message_id)})


@blueprint.get("/push/campaign/<campaign_id>/failures")
@sc.operation("A campaign's failed and dead-token deliveries (of its live send), a page at a time",
              path={"campaign_id": sc.Str()}, query=PAGE, responses={200: failure_list(campaignId=True)})
def campaign_failures(campaign_id: str):
    campaign = services().find_one(mongo.CAMPAIGNS, {"_id": campaign_id}, {"app_id": 1})
    if campaign is None:
        raise ApiError(400, f"Campaign with entered ID does not exist: {campaign_id} (path id)", field="id", location="path",
                       code="ERROR_CAMPAIGN_NOT_FOUND")
    auth.require_app(campaign["app_id"], "id")
    return ok({"campaignId": campaign_id, **_page(campaign_id)})
