"""Failure lists: the token of a delivery id, and who sees a whole token."""
from __future__ import annotations

from types import SimpleNamespace

from flask import Flask

from api.failures import presents_admin_key, shown
from shared.failures import token_of


def test_token_of_keeps_colons_of_an_fcm_token():
    assert token_of("abc123:0:fcmpart:APA91bX") == "fcmpart:APA91bX"
    assert token_of("campaign:0:" + "d" * 64) == "d" * 64


def test_only_the_admin_key_sees_a_whole_token():
    app = Flask(__name__)
    app.extensions["push"] = SimpleNamespace(settings=SimpleNamespace(admin_key="the-admin-key"))
    for headers, whole in (({"Authorization": "Bearer the-admin-key"}, True), ({"X-Api-Key": "the-admin-key"}, True),
                           ({"Authorization": "Bearer push_0123_x"}, False), ({}, False)):
        with app.test_request_context(headers=headers):
            assert presents_admin_key() is whole
    app.extensions["push"].settings.admin_key = ""  # no admin key configured: nobody
    with app.test_request_context(headers={"Authorization": "Bearer "}):
        assert presents_admin_key() is False
    assert shown("0123456789abcdef", False) == "89abcdef" and shown("0123456789abcdef", True) == "0123456789abcdef"
