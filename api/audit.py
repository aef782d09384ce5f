"""Admin actions recorded in the audit log (shared/audit.py), and ``GET /admin/audit`` to read it.

:func:`after_request` records every request to an admin route that is not a
read, after it was answered (refused attempts too), as an ``audit.record``
write published to RabbitMQ without waiting for it to be applied. If the
broker refuses it, the action is logged instead (without its body): the
action's own answer stands.
"""
from __future__ import annotations

import logging

from flask import Blueprint, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from api import auth
from api import schema as sc
from api.context import services
from api.errors import renders_errors
from api.powerauth_envelope import render_error
from shared import audit, commands
from shared import db as mongo
from shared.commands import command

log = logging.getLogger(__name__)

blueprint = Blueprint("audit", __name__)
renders_errors(blueprint, "powerauth", render_error)

#: Path prefixes of admin routes (the PowerAuth admin API and operations, WalletConnect tenant management).
ADMIN_PREFIXES = ("/admin/", "/tenants")
#: Methods that only read (not recorded).
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Most entries one read answers.
MAX_ENTRIES = 1000
#: Who a request acted as when auth is off (``make run``, the tests).
AUTH_OFF = "auth-off"


def actor() -> str:
    """Who the request acted as: ``admin``, ``app:<app>:<key id>``, the WalletConnect admin token, or nobody known."""
    wc_admin = g.get("wc_push_admin")
    if wc_admin:
        return wc_admin
    principal = g.get("principal")
    if principal is None:
        return "unauthenticated"
    if principal.key_id == "auth-off":
        return AUTH_OFF
    return "admin" if principal.is_admin else f"app:{principal.app_id}:{principal.key_id}"


def _body():
    """The request's JSON body, or None: unparsable, or past the route's size limit (the answer was a 413; reading it
    here raises ``RequestEntityTooLarge``, which an after-request hook would turn into a 500)."""
    try:
        return request.get_json(silent=True)
    except HTTPException:
        return None


def after_request(response: Response) -> Response:
    """Record an admin action (the app's after_request hook)."""
    if request.method in READ_METHODS or not request.path.startswith(ADMIN_PREFIXES) or request.url_rule is None:
        return response
    entry = command(
        audit.RECORD,
        who=actor(),
        action=f"{request.method} {request.url_rule.rule}",
        path=request.path,
        status=response.status_code,
        target=audit.target_of(_body()),
    )
    try:
        services().publish(commands.APPLY_WRITE, entry)
    except Exception:  # noqa: BLE001 - the action's answer stands; its audit entry goes to the log instead
        log.warning("audit entry not queued: %s %s by %s answered %s", entry["action"], entry["target"], entry["who"], entry["status"])
    return response


ENTRY = sc.Obj({"id": sc.Str(max_length=None), "at": sc.Str(max_length=None), "who": sc.Str(max_length=None),
                "action": sc.Str(max_length=None), "path": sc.Str(max_length=None), "status": sc.Int(),
                "target": sc.Json(object_only=True)})


@blueprint.get("/admin/audit")
@sc.operation(
    "The audit log of admin actions, newest first (who, when, what, the answer; never a secret)",
    query={"limit": sc.Int(minimum=1, maximum=MAX_ENTRIES, default=100),
           "before": sc.Str(max_length=128, description="An entry id: only older entries (the next page)")},
    responses={200: sc.Obj({"items": sc.List(ENTRY), "next": sc.Json(description="Pass it as the before parameter for the next page, or null")})},
)
def read_audit() -> Response:
    auth.require_admin()
    params = sc.query()
    query = {"_id": {"$lt": params["before"]}} if params.get("before") else {}
    svc = services()
    docs = svc.guarded_read(
        lambda: list(svc.db[mongo.AUDIT_LOG].find(query).sort("_id", -1).limit(params["limit"]))
    )
    items = [
        {"id": doc["_id"], "at": _iso(doc.get("at")), **{name: doc.get(name) for name in ("who", "action", "path", "status")},
         "target": doc.get("target") or {}}
        for doc in docs
    ]
    return jsonify({"items": items, "next": items[-1]["id"] if len(items) == params["limit"] else None})


def _iso(value) -> str | None:
    """A stored time as ISO 8601 (nx-27017 may answer a naive string)."""
    if value is None or isinstance(value, str):
        return value
    return value.isoformat()


