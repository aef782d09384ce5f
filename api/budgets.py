"""An application's provider budgets (issue 15): ``POST /admin/app/budget`` ``{appId, platform, perMinute}``.

The send rate all workers together keep for the app on one provider (shared/budgets.py); without one, the
provider's documented quota (FCM v1: 600,000 messages per minute per project; APNs and HMS: none). A provider's
429 still lowers the rate below the setting for a while. ``perMinute`` absent or null goes back to the default.
``GET|POST /admin/app/budget/detail`` answers each provider's setting and what the workers hold now.
"""
from __future__ import annotations

from flask import Blueprint

from api import schema as sc
from api.context import services
from api.errors import renders_errors
from api.powerauth_envelope import APP_ID, OK, answer, existing_app, ok, render_error, wrapped
from shared import budgets
from shared.commands import command

blueprint = Blueprint("budgets", __name__)
renders_errors(blueprint, "powerauth", render_error)

PROVIDERS = ("apns", "fcm", "hms")
#: The highest budget accepted (per minute): far above any provider's quota, low enough to stay an integer.
MAX_PER_MINUTE = 1_000_000_000

BUDGET = wrapped({
    "appId": APP_ID,
    "platform": sc.Choice({p: p for p in PROVIDERS}, required=True, description="The provider", example="fcm"),
    "perMinute": sc.Int(minimum=1, maximum=MAX_PER_MINUTE, description="Requests per minute for the app on this provider, "
                        "shared by every worker; absent or null: the provider's default", example=300_000),
})
DETAIL = wrapped({"appId": APP_ID})
PROVIDER_BUDGET = sc.Obj({
    "platform": sc.Str(),
    "configuredPerMinute": sc.Json(description="Requests per minute: the setting, else the provider's default; null: none"),
    "ratePerMinute": sc.Json(description="Requests per minute the workers keep now (lower after a 429); null: not rationed yet"),
    "throttled": sc.Int(description="429s the provider answered (each lowers the rate, at most once a second)"),
    "blockedForMs": sc.Int(description="Milliseconds every worker still waits, from the provider's Retry-After"),
})


@blueprint.post("/admin/app/budget")
@sc.operation("Set an application's send rate on one provider, shared by all workers", body=BUDGET, responses={200: OK})
def set_budget():
    data = sc.body()
    app = existing_app(data)
    services().write(command("app.budget", app_id=app["_id"], platform=data["platform"], per_minute=data.get("perMinute")))
    return ok()


def _detail(app: dict):
    held = {b["provider"]: b for b in budgets.view(services().db, [app["_id"]])}
    rows = []
    for provider in PROVIDERS:
        configured = budgets.configured_per_second(app, provider)
        found = held.get(provider, {})
        rows.append({"platform": provider, "configuredPerMinute": None if configured is None else round(configured * 60),
                     "ratePerMinute": found.get("rate_per_minute"), "throttled": found.get("throttled", 0),
                     "blockedForMs": round(found.get("blocked_for", 0.0) * 1000)})
    return ok(rows)


@blueprint.get("/admin/app/budget/detail")
@sc.operation("An application's provider budgets: setting, current rate, 429s", query={"appId": sc.Str(required=True, example="demo")},
              responses={200: answer(sc.List(PROVIDER_BUDGET))})
def budget_detail():
    return _detail(existing_app(sc.query(), prefix="", location="query"))


@blueprint.post("/admin/app/budget/detail")
@sc.operation("An application's provider budgets: setting, current rate, 429s", body=DETAIL,
              responses={200: answer(sc.List(PROVIDER_BUDGET))})
def budget_detail_post():
    return _detail(existing_app(sc.body()))
