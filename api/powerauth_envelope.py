"""PowerAuth's request and answer envelopes, shared by every family that speaks it (push, API keys, inbox, campaigns).

A request body is ``{"requestObject": {...}}``; a success answer is
``{"status": "OK", "responseObject": ...}``; an error
``{"status": "ERROR", "responseObject": {"code": ..., "message": ...}}``.
"""
from __future__ import annotations

import json

from flask import Response

from api import auth
from api import schema as sc
from api.context import services
from api.errors import ApiError
from shared import db as mongo

#: A string in an answer: any length, possibly empty (answers are not bounded like requests).
TEXT = sc.Str(max_length=None, allow_empty=True)
#: An application id in a request body: a string, or PowerAuth's numeric id.
APP_ID = sc.Id(required=True, description="The application's id", example="demo")


def answer(result: sc.Field | None = None) -> sc.Obj:
    """The schema of PowerAuth's success envelope around ``result`` (for the document)."""
    return sc.Obj({"status": sc.Str(enum=["OK"]), **({"responseObject": result} if result is not None else {})})


#: The success envelope without a result.
OK = answer()


def wrapped(properties: dict, **options) -> sc.Wrapped:
    """A PowerAuth request body: ``{"requestObject": {...properties}}``."""
    return sc.Wrapped(sc.Obj(properties), **options)


#: ``{"requestObject": {"appId": ...}}``.
APP_REQUEST = wrapped({"appId": APP_ID})


def ok(response_object=None, status: int = 200) -> Response:
    body = {"status": "OK"}
    if response_object is not None:
        body["responseObject"] = response_object
    return json_response(body, status)


def json_response(body, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json", headers=headers)


def render_error(error: ApiError) -> Response:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    return json_response(
        {"status": "ERROR", "responseObject": {"code": error.code, "message": error.message}}, error.status, headers
    )


def existing_app(data: dict, prefix: str = "requestObject.", *, location: str = "body") -> dict:
    """The app ``data["appId"]`` names (cleaned by the route's schema), if the request's key may act for it."""
    app_id = sc.check(APP_ID, data.get("appId"), prefix + "appId", location=location)
    auth.require_app(app_id, prefix + "appId")
    app = services().find_one(mongo.APPS, {"_id": app_id})
    if app is None:
        raise ApiError(400, f"Application not found: {app_id} ({prefix}appId)", field=prefix + "appId", location=location)
    return app
