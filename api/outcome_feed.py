"""The outcome feed of an app (issue 18): ``POST /admin/app/webhook {appId, url, secret, events}``.

The server POSTs batched JSON events of the chosen types (``dead_token``, ``failed``, ``message_done``) to
``url``, at least once, each with an ``id`` to dedupe by, retried with backoff, signed
``X-Push-Signature: t=<unix time>,sha256=<HMAC-SHA256(secret, t + "." + body)>`` (receivers refuse anything
older than 300 s). The URL passes the one outbound-URL check (shared/outbound.py) here and at every send.
"""
from __future__ import annotations

from flask import Blueprint

from api import schema as sc
from api.context import services
from api.errors import bad_request, renders_errors
from api.powerauth_envelope import APP_ID, OK, existing_app, ok, render_error, wrapped
from shared.commands import command
from shared.outbound import OutboundRefused
from shared.outbox import EVENT_TYPES

blueprint = Blueprint("outcome_feed", __name__)
renders_errors(blueprint, "powerauth", render_error)

#: Shortest and longest signing secret.
MIN_SECRET, MAX_SECRET = 16, 256
MAX_URL = 2048

WEBHOOK = wrapped({
    "appId": APP_ID,
    "url": sc.Str(required=True, max_length=MAX_URL, no_spaces=True, description="Where events are POSTed (http or https)",
                  example="https://example.com/push-events"),
    "secret": sc.Str(required=True, max_length=MAX_SECRET, description=f"The HMAC-SHA256 signing secret, at least {MIN_SECRET} characters",
                     example="0123456789abcdef0123"),
    "events": sc.List(sc.Choice({e: e for e in EVENT_TYPES}), min_items=1, unique=True, required=True,
                      description="Which events to send. Each event has id, type, appId, createdAt and: "
                                  "dead_token / failed: messageId, token, platform, reason, at; "
                                  "message_done (once per message, when every delivery of it is final): "
                                  "messageId, total, states (deliveries by final state), at"),
})


@blueprint.post("/admin/app/webhook")
@sc.operation("Set an application's outcome feed: events POSTed to a webhook, signed with X-Push-Signature",
              body=WEBHOOK, responses={200: OK})
def set_webhook():
    data = sc.body()
    app = existing_app(data)
    if len(data["secret"]) < MIN_SECRET:
        raise bad_request("requestObject.secret", f"must be at least {MIN_SECRET} characters")
    try:
        services().outbound.check(data["url"], at_intake=True)
    except OutboundRefused as refused:
        raise bad_request("requestObject.url", f"is not allowed: {refused}") from None
    webhook = {"url": data["url"], "secret": data["secret"], "events": sorted(data["events"])}
    webhook = services().credential_keys.seal(app["_id"], "webhook", webhook)  # sealed in the command and at rest, never answered
    services().write(command("app.webhook", app_id=app["_id"], webhook=webhook))
    return ok()
