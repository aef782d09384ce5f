"""Control of running bulk work: pause, resume and cancel a campaign; cancel a message.

Each route records a halt state (shared/halt.py) through the persist queue,
like every write, and answers once it is applied: from then on no stage
starts a provider request for it later than the halt cache's age (0.5 s) plus
one send. The routes are idempotent (the same call again answers the same
state); a cancel is final. Errors and answers use PowerAuth's envelope.
"""
from __future__ import annotations

from flask import Blueprint

from api import auth
from api import schema as sc
from api.campaigns import CAMPAIGN_ID, _campaign, _write, answer
from api.context import services
from api.errors import renders_errors
from api.powerauth_envelope import ok, render_error
from shared import db as mongo
from shared import halt

blueprint = Blueprint("control", __name__)
renders_errors(blueprint, "powerauth", render_error)

#: What each campaign action asks for.
CAMPAIGN_ACTIONS = {"pause": halt.PAUSED, "resume": halt.RUNNING, "cancel": halt.CANCELLED}
HALT_ANSWER = answer(sc.Obj({"id": sc.Str(), "state": sc.Str(enum=list(halt.STATES))}))
MESSAGE_ID = {"message_id": sc.Str(description="The send's messageId")}


def _halt(message_id: str, app_id: str | None, state: str) -> dict:
    result = _write("halt.set", message_id=message_id, app_id=app_id, state=state)
    return ok({"id": message_id, "state": result.get("state", state)})


def _campaign_action(campaign_id: str, action: str):
    campaign = _campaign(campaign_id)
    return _halt(campaign_id, campaign["app_id"], CAMPAIGN_ACTIONS[action])


@blueprint.post("/push/campaign/<campaign_id>/pause")
@sc.operation("Pause a campaign: nothing more of it is sent until it is resumed", path=CAMPAIGN_ID, responses={200: HALT_ANSWER})
def pause_campaign(campaign_id: str):
    return _campaign_action(campaign_id, "pause")


@blueprint.post("/push/campaign/<campaign_id>/resume")
@sc.operation("Resume a paused campaign (a cancelled one stays cancelled)", path=CAMPAIGN_ID, responses={200: HALT_ANSWER})
def resume_campaign(campaign_id: str):
    return _campaign_action(campaign_id, "resume")


@blueprint.post("/push/campaign/<campaign_id>/cancel")
@sc.operation("Cancel a campaign: nothing more is sent; what was not sent is recorded cancelled", path=CAMPAIGN_ID,
             responses={200: HALT_ANSWER})
def cancel_campaign(campaign_id: str):
    return _campaign_action(campaign_id, "cancel")


@blueprint.post("/push/message/<message_id>/cancel")
@sc.operation("Cancel a send (batch or message), also one not expanded or scheduled yet", path=MESSAGE_ID,
             responses={200: HALT_ANSWER})
def cancel_message(message_id: str):
    svc = services()
    message = svc.find_one(mongo.MESSAGES, {"_id": message_id}, {"app_id": 1})
    if message is not None:
        auth.require_app(message["app_id"], "messageId")
        app_id = message["app_id"]
    else:
        # Not expanded yet (queued or scheduled): the cancel is recorded for the caller's app (any app for the admin).
        principal = auth.current()
        app_id = None if principal.is_admin else principal.app_id
    return _halt(message_id, app_id, halt.CANCELLED)
