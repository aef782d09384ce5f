"""A stand-in for api.services.Services, for unit tests of the API through Flask's test client.

Only for what the API decides by itself (validation, auth, envelopes): anything
that claims to test queueing, persistence or delivery runs on the real stack
(tests/integration).
"""
from __future__ import annotations

from api.app import create_app
from shared import audit
from shared.outbound import OutboundPolicy
from shared.sealed_credentials import CredentialKeys
from shared.settings import load


class FakeServices:
    """Writes and publishes recorded, reads answered from what a test puts in; subclasses add documents."""

    def __init__(self, settings):
        self.settings = settings
        self.outbound = OutboundPolicy.from_settings(settings)
        self.credential_keys = CredentialKeys.from_settings(settings)
        self.commands: list = []
        self.published: list = []
        self.audited: list = []

    def write(self, command):
        self.commands.append(command)
        return {"_id": command["id"], "result": {}}

    def publish(self, actor, payload):
        if payload.get("kind") == audit.RECORD:
            self.audited.append(payload)  # the audit log's entry of an admin request, kept apart from the request's own writes
            return
        self.published.append((actor, payload))

    def guarded_read(self, read):
        return read()

    def health(self):
        return True, True

    def message_counts(self, message_id):
        return None

    def waiting_deliveries(self, app_id):
        return 0

    def wait_for_outcome(self, message_id):
        return None


def app_with(fake_class: type[FakeServices], **settings):
    """The API built with ``settings`` (on top of the defaults), its services replaced by ``fake_class``: (app, fake)."""
    app = create_app(load({}, **settings))
    fake = fake_class(app.extensions["push"].settings)
    app.extensions["push"] = fake
    return app, fake
