"""The Flask app factory: one blueprint per API family, configuration passed in.

Served by granian through the RSGI app of :mod:`api.rsgi` (bodies read in its
event loop, polls answered there, Flask in threads); each granian worker
process builds its own app, broker connection and MongoDB client.
"""
from __future__ import annotations

from flask import Flask

from api import (
    accepted,
    admin_ops,
    api_keys,
    audit,
    campaigns,
    control,
    errors,
    inbox,
    limits,
    openapi,
    powerauth,
    powerauth_envelope,
    queue_cap,
    wc_bridge,
    wc_push,
    wc_push_auth,
)
from api import budgets as budget_routes
from api import failures as failure_lists
from api import outcome_feed as outcome_feeds
from api.services import Services
from shared import sealed_credentials
from shared.broker import make_broker
from shared.db import connect
from shared.settings import Settings, load


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
    app.register_blueprint(api_keys.blueprint)
    app.register_blueprint(inbox.blueprint)
    app.register_blueprint(campaigns.blueprint)
    app.register_blueprint(control.blueprint)
    app.register_blueprint(failure_lists.blueprint)
    app.register_blueprint(outcome_feeds.blueprint)
    app.register_blueprint(budget_routes.blueprint)
    app.register_blueprint(queue_cap.blueprint)
    app.register_blueprint(wc_bridge.blueprint)
    app.register_blueprint(wc_push.blueprint)
    wc_bridge.install(app, app.extensions["push"])
    app.register_blueprint(admin_ops.blueprint)
    app.register_blueprint(audit.blueprint)
    admin_ops.install(app, app.extensions["push"])
    app.register_blueprint(openapi.blueprint)
    # Each blueprint renders its own errors (api/errors.renders_errors); a path no route matches is answered in
    # the format of the family whose path prefixes it is under, else PowerAuth's.
    errors.install_fallback(app, powerauth_envelope.render_error)
    return app

