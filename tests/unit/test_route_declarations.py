"""A route's body-size class, rate limit and error format are declared with the route (issue 19, move 3)."""
from __future__ import annotations

import pytest
from flask import Blueprint, Flask

from api import errors, limits
from api import schema as sc
from api.errors import ApiError
from shared.settings import load


def _app() -> Flask:
    app = Flask(__name__)
    app.extensions["push"] = type("Services", (), {"settings": load({})})()
    family = Blueprint("some_family", __name__)
    errors.renders_errors(family, "wc_bridge", lambda error: ({"family": "some", "code": error.code}, error.status),
                          path_prefixes=("/some",))

    @family.post("/some/upload")
    @sc.operation("An upload under any view name", body=sc.Json(), body_size=sc.LARGE_BODY, rate_limit=sc.REGISTRATION)
    def a_name_no_list_knows():
        raise ApiError(409, "taken", code="ERROR_TAKEN")

    @family.post("/some/plain")
    @sc.operation("A plain route", body=sc.Json())
    def plain():
        raise RuntimeError("a bug")

    app.register_blueprint(family)
    errors.install_fallback(app, lambda error: ({"family": "default", "code": error.code}, error.status))
    return app


def test_the_body_limit_is_the_class_the_route_declares_whatever_its_name():
    app = _app()
    settings = app.extensions["push"].settings
    assert limits.body_limit_of(app, "POST", "/some/upload") == settings.api_max_body_bytes
    assert limits.body_limit_of(app, "POST", "/some/plain") == settings.api_max_small_body_bytes
    spec = limits.operation_of(app, "some_family.a_name_no_list_knows")
    assert spec.rate_limit == sc.REGISTRATION and limits.operation_of(app, "some_family.plain").rate_limit is None


def test_an_unknown_body_size_or_rate_limit_is_refused_when_the_route_is_declared():
    with pytest.raises(ValueError, match="body_size"):
        sc.operation("x", body_size="huge")
    with pytest.raises(ValueError, match="rate_limit"):
        sc.operation("x", rate_limit="per-minute")


def test_a_blueprint_renders_every_error_of_its_routes_and_of_its_unmatched_paths():
    client = _app().test_client()
    assert client.post("/some/upload", json={}).get_json() == {"family": "some", "code": "ERROR_TAKEN"}
    bug = client.post("/some/plain", json={})
    assert bug.status_code == 500 and bug.get_json() == {"family": "some", "code": "ERROR_INTERNAL"}
    missing = client.get("/some/where")
    assert missing.status_code == 404 and missing.get_json() == {"family": "some", "code": "ERROR_HTTP_404"}
    wrong_method = client.get("/some/plain")
    assert wrong_method.status_code == 405 and wrong_method.get_json()["family"] == "some"
    assert client.get("/elsewhere").get_json() == {"family": "default", "code": "ERROR_HTTP_404"}
    assert errors.family_of(_app().blueprints["some_family"]) == "wc_bridge" and errors.family_of(None) == "powerauth"
