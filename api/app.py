"""The Flask app factory: one blueprint per API family, configuration passed in.

Served by granian through the RSGI app of :mod:`api.rsgi` (bodies read in its
event loop, polls answered there, Flask in threads); each granian worker
process builds its own app, broker connection and MongoDB client.
"""
from __future__ import annotations

import logging

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from api import accepted, admin_ops, audit, auth, campaigns, inbox, limits, openapi, powerauth, wc_bridge, wc_push, wc_push_auth
from api import failures as failure_lists
from api import outcome_feed as outcome_feeds
from api.errors import ApiError
from api.services import Services
from shared import sealed_credentials
from shared.broker import make_broker
from shared.db import connect
from shared.settings import Settings, load

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Flask:
    """Build the API. ``settings`` default to the environment's."""
    settings = settings or load()
    wc_push_auth.check_settings(settings)  # a stack with API keys on refuses to run an open WalletConnect relay
    sealed_credentials.check_settings(settings)  # ... or to keep provider credentials in clear
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.api_max_body_bytes
    app.extensions["push"] = Services(
        settings=settings, broker=make_broker(settings, set_global=False), db=connect(settings), on_unapplied=accepted.note
    )
    # after_request hooks run last-registered first: the audit entry records the final status.
    app.after_request(audit.after_request)  # every admin action recorded (shared/audit.py)
    app.after_request(accepted.after_request)  # a confirmed write not seen applied is a 202, never a failure
    app.extensions["push"].outbound  # noqa: B018 - parse the outbound allow-list now: a bad entry stops the start
    # Body size per route, registration rate limits, API keys (README "Security").
    app.before_request(limits.before_request)
    app.register_blueprint(powerauth.blueprint)
    app.register_blueprint(auth.blueprint)
    app.register_blueprint(inbox.blueprint)
    app.register_blueprint(campaigns.blueprint)
    app.register_blueprint(failure_lists.blueprint)
    app.register_blueprint(outcome_feeds.blueprint)
    app.register_blueprint(wc_bridge.blueprint)
    app.register_blueprint(wc_push.blueprint)
    wc_bridge.install(app, app.extensions["push"])
    app.register_blueprint(admin_ops.blueprint)
    app.register_blueprint(audit.blueprint)
    admin_ops.install(app, app.extensions["push"])
    app.register_blueprint(openapi.blueprint)

    @app.errorhandler(ApiError)
    def api_error(error: ApiError) -> Response:
        return render(error)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        return render(ApiError(error.code or 500, error.description or error.name, code=f"ERROR_HTTP_{error.code}"))

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return render(ApiError(500, "internal error", code="ERROR_INTERNAL"))

    return app


#: Error renderer of each API family by path prefix; the first match wins, PowerAuth's is the fallback.
RENDERERS: list[tuple[str, object]] = [
    *((prefix, wc_bridge.render_error) for prefix in wc_bridge.PATH_PREFIXES),
    *((prefix, wc_push.render_error) for prefix in wc_push.PATH_PREFIXES),
]


def render(error: ApiError) -> Response:
    """Render an error in the format of the API family of the route (by its blueprint), else of its path."""
    family = openapi.FAMILY_OF_BLUEPRINT.get(request.blueprint or "")
    if family == "wc_push":
        return wc_push.render_error(error)
    if family == "wc_bridge":
        return wc_bridge.render_error(error)
    if family is not None:
        return powerauth.render_error(error)
    for prefix, renderer in RENDERERS:
        if request.path.startswith(prefix):
            return renderer(error)
    return powerauth.render_error(error)
