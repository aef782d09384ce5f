"""The cap per app on queued work (issue 15; counting in shared/queue_cap.py).

``POST /admin/app/limits {appId, maxQueuedDeliveries}`` sets an app's cap (omitted: the default
``PUSH_MAX_QUEUED_DELIVERIES_PER_APP``). A send (single, batch, campaign live) of an app whose waiting
deliveries are at or above its cap is refused before anything is published: 429, ``Retry-After``,
code ``ERROR_TOO_MANY_QUEUED``, in the PowerAuth envelope.
"""
from __future__ import annotations

from flask import Blueprint

from api import schema as sc
from api.context import services
from api.errors import ApiError, renders_errors
from api.powerauth_envelope import APP_ID, OK, existing_app, ok, render_error, wrapped
from shared import queue_cap
from shared.commands import command

blueprint = Blueprint("queue_cap", __name__)
renders_errors(blueprint, "powerauth", render_error)

#: Seconds a refused sender is told to wait.
RETRY_AFTER_SECONDS = 5
#: Largest cap one app may be given.
MAX_CAP = 1_000_000_000

LIMITS = wrapped({
    "appId": APP_ID,
    "maxQueuedDeliveries": sc.Int(minimum=0, maximum=MAX_CAP,
                                  description="Most deliveries waiting for this app (0: no cap; omitted: the server's default)",
                                  example=1_000_000),
})


def check(app: dict) -> None:
    """Refuse (429) a send of ``app`` while its waiting deliveries are at or above its cap."""
    cap = queue_cap.cap_of(app, services().settings.max_queued_deliveries_per_app)
    if cap <= 0:
        return
    waiting = services().waiting_deliveries(app["_id"])
    if waiting >= cap:
        raise ApiError(429, f"application {app['_id']} has {waiting} deliveries waiting, its cap is {cap}: try again later",
                       field="requestObject.appId", code="ERROR_TOO_MANY_QUEUED", retry_after=RETRY_AFTER_SECONDS)


@blueprint.post("/admin/app/limits")
@sc.operation("Set an application's cap on queued deliveries (sends beyond it are refused with 429)", body=LIMITS,
              responses={200: OK})
def set_limits():
    data = sc.body()
    app = existing_app(data)
    services().write(command("app.limits", app_id=app["_id"], max_queued_deliveries=data.get("maxQueuedDeliveries")))
    return ok()
