"""Key management (admin): create, list and revoke the per-app API keys that :mod:`api.auth` checks.

Rotation without downtime: an app holds any number of keys; create the new
one (``POST /admin/app/keys``, the key is answered once), switch the clients,
then revoke the old one (``DELETE /admin/app/keys`` or ``POST /admin/app/keys/revoke``).
Key writes go through the queue like every write (workers/auth.py).
"""
from __future__ import annotations

from flask import Blueprint

from api import auth
from api import schema as sc
from api.context import services
from api.errors import ApiError, renders_errors
from api.powerauth_envelope import APP_ID, APP_REQUEST, TEXT, answer, existing_app, ok, render_error, wrapped
from shared import db as mongo
from shared.commands import command

MAX_KEY_NAME = 128

#: Named "auth" as when these routes were in api/auth.py: the endpoint names, and so the operationIds, stay.
blueprint = Blueprint("auth", __name__)
renders_errors(blueprint, "powerauth", render_error)


def _key_object(doc: dict) -> dict:
    created = doc.get("created_at")
    revoked = doc.get("revoked_at")
    return {
        "keyId": doc["_id"],
        "appId": doc.get("app_id"),
        "name": doc.get("name"),
        "timestampCreated": created.isoformat() if hasattr(created, "isoformat") else created,
        "revoked": bool(revoked),
    }


KEY = sc.Obj({"keyId": TEXT, "appId": TEXT, "revoked": sc.Bool()})


@blueprint.post("/admin/app/keys")
@blueprint.post("/admin/app/keys/create")
@sc.operation(
    "Create an API key for an application (the key is answered only here)",
    body=wrapped({"appId": APP_ID, "name": sc.Str(max_length=MAX_KEY_NAME, description="A label for the key")}),
    responses={200: answer(sc.Obj({"appId": TEXT, "keyId": TEXT, "key": TEXT}))},
)
def create_key():
    auth.require_admin()
    data = sc.body()
    app = existing_app(data)
    name = data.get("name")
    key_id, key = auth.new_key()
    services().write(command("auth.key.create", key_id=key_id, app_id=app["_id"], hash=auth.digest(key), name=name))
    return ok({"appId": app["_id"], "keyId": key_id, "name": name, "key": key})


KEY_LIST = answer(sc.Obj({"appId": TEXT, "keys": sc.List(KEY)}))


def _keys_of(app: dict):
    svc = services()
    docs = svc.guarded_read(
        lambda: list(svc.db[mongo.API_KEYS].find({"app_id": app["_id"]}, {"hash": 0}).sort("_id", 1))
    )
    return ok({"appId": app["_id"], "keys": [_key_object(d) for d in docs]})


@blueprint.get("/admin/app/keys")
@sc.operation("An application's API keys (never the keys themselves)", query={"appId": sc.Str(required=True, example="demo")},
              responses={200: KEY_LIST})
def list_keys():
    auth.require_admin()
    return _keys_of(existing_app(sc.query(), prefix="", location="query"))


@blueprint.post("/admin/app/keys/list")
@sc.operation("An application's API keys (never the keys themselves)", body=APP_REQUEST,
              responses={200: KEY_LIST})
def list_keys_post():
    auth.require_admin()
    return _keys_of(existing_app(sc.body()))


@blueprint.delete("/admin/app/keys")
@blueprint.post("/admin/app/keys/revoke")
@sc.operation(
    "Revoke an API key",
    body=wrapped({"appId": APP_ID, "keyId": sc.Str(required=True, max_length=64)}),
    responses={200: answer(sc.Obj({"appId": TEXT, "keyId": TEXT, "revoked": sc.Bool()}))},
)
def revoke_key():
    auth.require_admin()
    data = sc.body()
    app = existing_app(data)
    key_id = data["keyId"]
    doc = services().find_one(mongo.API_KEYS, {"_id": key_id, "app_id": app["_id"]}, {"hash": 0})
    if doc is None:
        raise ApiError(400, f"API key not found: {key_id} (requestObject.keyId)", field="requestObject.keyId", code="ERROR_KEY_NOT_FOUND")
    services().write(command("auth.key.revoke", key_id=key_id, app_id=app["_id"]))
    auth.key_cache().forget(key_id)
    return ok({"appId": app["_id"], "keyId": key_id, "revoked": True})
