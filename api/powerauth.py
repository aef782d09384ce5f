"""The PowerAuth Push Server REST API: service status, devices, messages, apps.

Request and response shapes follow seed 002 and the current reference
(wultra/powerauth-push-server). Where the two differ both forms are accepted;
the choices are listed in docs/api.md.
"""
from __future__ import annotations

import base64
import binascii
import json
import platform as runtime
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from flask import Blueprint, Response, current_app, request

from api import auth, limits
from api import validation as v
from api.errors import ApiError, bad_request, not_found
from api.services import Services
from shared import commands
from shared import db as collections
from shared.commands import ACTIVATION_STATES, command
from shared.payload import Body

#: Platform names accepted and the provider each maps to (aliases of the older API).
PLATFORMS = {"apns": "apns", "ios": "apns", "fcm": "fcm", "android": "fcm"}
#: Platforms PowerAuth knows but this server does not deliver to.
UNSUPPORTED_PLATFORMS = ("hms", "huawei")
ENVIRONMENTS = {"development": "development", "production": "production"}
PRIORITIES = {"high": "HIGH", "normal": "NORMAL"}
MODES = {"synchronous": "SYNCHRONOUS", "asynchronous": "ASYNCHRONOUS"}
#: Most messages one batch request may carry: the setting ``max_batch_messages`` (PUSH_MAX_BATCH_MESSAGES, default 10,000).
#: Most activations one multi-registration may carry.
MAX_ACTIVATIONS = 100
APPLICATION_NAME = "powerauth-push"
APPLICATION_DISPLAY_NAME = "Push Server (PowerAuth API)"
VERSION = "1.0.0"
#: Body keys that may be strings at most this long.
MAX_TEXT = 4096

blueprint = Blueprint("powerauth", __name__)


def services() -> Services:
    return current_app.extensions["push"]


def ok(response_object=None, status: int = 200) -> Response:
    body = {"status": "OK"}
    if response_object is not None:
        body["responseObject"] = response_object
    return json_response(body, status)


def json_response(body, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json", headers=headers)


@blueprint.errorhandler(ApiError)
def render_error(error: ApiError) -> Response:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    return json_response(
        {"status": "ERROR", "responseObject": {"code": error.code, "message": error.message}}, error.status, headers
    )


def request_body() -> dict:
    """The JSON body; a body that is not a JSON object is a 400 naming it."""
    data = request.get_json(silent=True)
    if data is None:
        raise bad_request("body", "must be a JSON object (Content-Type: application/json)")
    return v.json_object(data, "body")


def request_object(*, wrapped_only: bool = True) -> dict:
    """``requestObject`` of the body; with ``wrapped_only`` False a bare body is accepted too."""
    data = request_body()
    if "requestObject" in data:
        return v.json_object(data["requestObject"], "requestObject")
    if wrapped_only:
        raise bad_request("requestObject", "is required")
    return data


def existing_app(data: dict, prefix: str = "requestObject.") -> dict:
    app_id = v.identifier(data, "appId", prefix, required_=True)
    auth.require_app(app_id, prefix + "appId")
    app = services().find_one(collections.APPS, {"_id": app_id})
    if app is None:
        raise ApiError(400, f"Application not found: {app_id} ({prefix}appId)", field=prefix + "appId")
    return app


# --- service ------------------------------------------------------------------------------------

@blueprint.get("/push/service/status")
def service_status():
    svc = services()
    rabbitmq, mongodb = svc.check_broker(), svc.check_database()
    details = {
        "applicationName": APPLICATION_NAME,
        "applicationDisplayName": APPLICATION_DISPLAY_NAME,
        "applicationEnvironment": svc.settings.queue_prefix or "",
        "version": VERSION,
        "buildTime": None,
        "timestamp": datetime.now(UTC).isoformat(),
        "python": runtime.python_version(),
        "rabbitmq": "UP" if rabbitmq else "DOWN",
        "mongodb": "UP" if mongodb else "DOWN",
    }
    if rabbitmq and mongodb:
        return ok(details)
    down = ", ".join(name for name, up in (("RabbitMQ", rabbitmq), ("MongoDB", mongodb)) if not up)
    return json_response(
        {"status": "ERROR", "responseObject": {"code": "ERROR_SERVICE_UNAVAILABLE", "message": f"{down} unreachable", **details}},
        503,
        {"Retry-After": "5"},
    )


# --- devices ------------------------------------------------------------------------------------

def _platform(data: dict, prefix: str) -> str:
    value = data.get("platform")
    if isinstance(value, str) and value.lower() in UNSUPPORTED_PLATFORMS:
        raise bad_request(prefix + "platform", f"{value} is not supported by this server (apns, fcm)")
    return v.choice(data, "platform", PLATFORMS, prefix)


def _token(data: dict, prefix: str, platform: str | None = None) -> str:
    token = v.string(data, "token", prefix, required_=True, max_length=v.MAX_TOKEN_LENGTH)
    if any(c.isspace() for c in token):
        raise bad_request(prefix + "token", "must not contain white space")
    if platform == "apns" and not all(c in "0123456789abcdefABCDEF" for c in token):
        raise bad_request(prefix + "token", "an APNs device token is hexadecimal")
    return token


def _register(activation_ids: list[str]) -> Response:
    data = request_object()
    prefix = "requestObject."
    app = existing_app(data)
    platform = _platform(data, prefix)
    token = _token(data, prefix, platform)
    environment = data.get("environment")
    if environment is not None:
        environment = v.choice(data, "environment", ENVIRONMENTS, prefix)
    services().write(
        command(
            "device.register",
            app_id=app["_id"],
            token=token,
            platform=platform,
            environment=environment,
            user_id=v.string(data, "userId", prefix),
            activation_ids=activation_ids,
        )
    )
    return ok()


@blueprint.post("/push/device/create")
def create_device():
    data = request_object()
    activation = v.string(data, "activationId", "requestObject.")
    return _register([activation] if activation else [])


@blueprint.post("/push/device/create/multi")
def create_device_multi():
    data = request_object()
    activations = v.string_list(data, "activationIds", "requestObject.", required_=True, max_items=MAX_ACTIVATIONS)
    if not activations:
        raise bad_request("requestObject.activationIds", "must not be empty")
    return _register(list(dict.fromkeys(activations)))


@blueprint.route("/push/device/delete", methods=["POST", "DELETE"])
@blueprint.route("/push/device/remove", methods=["POST", "DELETE"])
def delete_device():
    data = request_object()
    app = existing_app(data)
    token = _token(data, "requestObject.")
    services().write(command("device.delete", app_id=app["_id"], token=token))
    return ok()


@blueprint.route("/push/device/status/update", methods=["POST", "PUT"])
def update_status():
    data = request_object(wrapped_only=False)
    activation = v.string(data, "activationId", required_=True)
    _require_activation(activation)
    status = v.choice(data, "activationStatus", {s.lower(): s for s in ACTIVATION_STATES}, default="ACTIVE")
    services().write(command("activation.status", activation_id=activation, status=status))
    return ok()


def _require_activation(activation_id: str) -> None:
    """An app key may change an activation's status unless a device of another app holds it."""
    principal = auth.current()
    if principal.is_admin:
        return
    svc = services()
    holders = svc.guarded_read(
        lambda: list(svc.db[collections.DEVICES].find({"activation_ids": {"$in": [activation_id]}}, {"app_id": 1}).limit(100))
    )
    other = [d for d in holders if d.get("app_id") != principal.app_id]
    if other:
        raise auth.forbidden(f"the API key is not valid for activation {activation_id} (activationId)")


# --- messages -----------------------------------------------------------------------------------

def parse_body(data: dict, prefix: str) -> Body:
    """A PowerAuth message body, validated field by field."""
    body = v.json_object(data, prefix.rstrip("."))
    extras = body.get("extras")
    if extras is not None:
        v.json_object(extras, prefix + "extras")
    return Body(
        title=v.string(body, "title", prefix, max_length=MAX_TEXT, allow_empty=True),
        body=v.string(body, "body", prefix, max_length=MAX_TEXT, allow_empty=True),
        badge=v.integer(body, "badge", prefix, minimum=0),
        sound=v.string(body, "sound", prefix),
        icon=v.string(body, "icon", prefix),
        category=v.string(body, "category", prefix),
        collapse_key=v.string(body, "collapseKey", prefix, max_length=64),
        valid_until=v.timestamp(body, "validUntil", prefix),
        extras=extras,
        title_loc_key=v.string(body, "titleLocKey", prefix),
        title_loc_args=_loc_args(body, "titleLocArgs", prefix),
        body_loc_key=v.string(body, "bodyLocKey", prefix),
        body_loc_args=_loc_args(body, "bodyLocArgs", prefix),
    )


def _loc_args(body: dict, key: str, prefix: str):
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise bad_request(prefix + key, "must be a list of strings")
    return tuple(value)


def parse_message(data: dict, prefix: str, default_priority: str) -> dict:
    """One PowerAuth ``PushMessage`` as a send entry."""
    message = v.json_object(data, prefix.rstrip("."))
    attributes = message.get("attributes") or {}
    v.json_object(attributes, prefix + "attributes")
    body = parse_body(v.required(message, "body", prefix), prefix + "body.")
    priority = v.choice(message, "priority", PRIORITIES, prefix, default=default_priority)
    silent = v.boolean(attributes, "silent", prefix + "attributes.")
    limits.check_payload(services().settings, body, prefix + "body", silent=silent, high_priority=priority == "HIGH")
    return {
        "user_id": v.string(message, "userId", prefix, required_=True),
        "activation_id": v.string(message, "activationId", prefix),
        "personal": v.boolean(attributes, "personal", prefix + "attributes."),
        "silent": silent,
        "high_priority": priority == "HIGH",
        "body": body.to_json(),
    }


def _send(entries: list[dict], app: dict, mode: str) -> Response:
    svc = services()
    send = command("send", app_id=app["_id"], mode=mode, entries=entries)
    svc.publish(commands.EXPAND_SEND, send)
    if mode == "ASYNCHRONOUS":
        return ok({"messageId": send["id"], "mode": mode, "result": None})
    counts = svc.wait_for_outcome(send["id"])
    return ok({"messageId": send["id"], "mode": mode, "result": result_object(counts)})


def result_object(counts: dict | None) -> dict:
    """PowerAuth's ``result``: counts under the current names (apns, fcm) and the seed's (ios, android)."""
    empty = {"sent": 0, "pending": 0, "failed": 0, "total": 0}
    counts = counts or {}
    apns, fcm = counts.get("apns", empty), counts.get("fcm", empty)
    return {"apns": apns, "fcm": fcm, "ios": apns, "android": fcm}


@blueprint.post("/push/message/send")
def send_message():
    data = request_object()
    app = existing_app(data)
    mode = v.choice(data, "mode", MODES, "requestObject.", default="SYNCHRONOUS")
    default_priority = v.choice(data, "priority", PRIORITIES, "requestObject.", default="HIGH")
    entry = parse_message(v.required(data, "message", "requestObject."), "requestObject.message.", default_priority)
    return _send([entry], app, mode)


@blueprint.post("/push/message/batch/send")
def send_batch():
    data = request_object()
    app = existing_app(data)
    mode = v.choice(data, "mode", MODES, "requestObject.", default="SYNCHRONOUS")
    default_priority = v.choice(data, "priority", PRIORITIES, "requestObject.", default="HIGH")
    batch = v.required(data, "batch", "requestObject.")
    if not isinstance(batch, list) or not batch:
        raise bad_request("requestObject.batch", "must be a non-empty list of messages")
    max_batch = services().settings.max_batch_messages
    if len(batch) > max_batch:
        raise bad_request("requestObject.batch", f"must have at most {max_batch} messages")
    entries = [parse_message(item, f"requestObject.batch[{i}].", default_priority) for i, item in enumerate(batch)]
    return _send(entries, app, mode)


@blueprint.get("/push/message/<message_id>/detail")
def message_detail(message_id: str):
    """Where an (ASYNCHRONOUS) send stands: per-platform counts."""
    svc = services()
    message = svc.find_one(collections.MESSAGES, {"_id": message_id}, {"app_id": 1, "created_at": 1})
    if message is None:
        raise not_found(f"Message not found: {message_id}", field="messageId", location="path")
    auth.require_app(message["app_id"], "messageId")
    counts = svc.guarded_read(lambda: svc.message_counts(message_id))
    return ok(
        {
            "messageId": message_id,
            "appId": message["app_id"],
            "timestampCreated": message["created_at"].isoformat(),
            "expanded": counts is not None,
            "result": result_object(counts),
        }
    )


# --- apps ---------------------------------------------------------------------------------------

def app_summary(app: dict) -> dict:
    return {
        "appId": app["_id"],
        "apns": bool(app.get("apns")),
        "fcm": bool(app.get("fcm")),
        "hms": False,
        "ios": bool(app.get("apns")),
        "android": bool(app.get("fcm")),
        "suspended": app.get("suspended", {}),
    }


@blueprint.route("/admin/app/list", methods=["GET", "POST"])
def list_apps():
    svc = services()
    apps = svc.guarded_read(lambda: list(svc.db[collections.APPS].find({}, collections.HIDDEN_CREDENTIALS).sort("_id", 1)))
    return ok({"applicationList": [app_summary(a) for a in apps]})


@blueprint.route("/admin/app/detail", methods=["GET", "POST"])
def app_detail():
    if request.method == "GET":
        data = {"appId": request.args.get("appId")}
        app = existing_app(data, prefix="")
    else:
        app = existing_app(request_object())
    apns, fcm = app.get("apns") or {}, app.get("fcm") or {}
    return ok(
        {
            "application": app_summary(app),
            "apnsBundle": apns.get("bundle"),
            "apnsKeyId": apns.get("key_id"),
            "apnsTeamId": apns.get("team_id"),
            "apnsEnvironment": apns.get("environment"),
            "apnsPrivateKeyPresent": bool(apns.get("private_key")),
            "fcmProjectId": fcm.get("project_id"),
            "fcmPrivateKeyPresent": bool(fcm.get("service_account")),
            "suspended": app.get("suspended", {}),
        }
    )


@blueprint.post("/admin/app/create")
def create_app_route():
    data = request_object()
    app_id = v.identifier(data, "appId", "requestObject.", required_=True)
    if not all(c.isalnum() or c in "._-" for c in app_id):
        raise bad_request("requestObject.appId", "may contain letters, digits, '.', '_' and '-' only")
    services().write(command("app.create", app_id=app_id))
    return ok({"appId": app_id})


def _decode_base64(data: dict, key: str, prefix: str) -> bytes:
    raw = v.string(data, key, prefix, required_=True, max_length=64 * 1024)
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(prefix + key, "must be base64") from None


def _set_provider(app: dict, provider: str, credentials: dict | None) -> Response:
    services().write(command("app.provider", app_id=app["_id"], provider=provider, credentials=credentials))
    return ok()


@blueprint.route("/admin/app/apns", methods=["POST", "PUT"])
def set_apns():
    data = request_object()
    prefix = "requestObject."
    app = existing_app(data)
    key_pem = _decode_base64(data, "privateKeyBase64", prefix)
    try:
        key = load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise bad_request(prefix + "privateKeyBase64", "must be a base64-encoded .p8 (PEM) private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise bad_request(prefix + "privateKeyBase64", "must be an APNs token key (EC P-256)")
    credentials = {
        "bundle": v.string(data, "bundle", prefix, required_=True),
        "key_id": v.string(data, "keyId", prefix, required_=True, max_length=32),
        "team_id": v.string(data, "teamId", prefix, required_=True, max_length=32),
        "environment": v.choice(data, "environment", ENVIRONMENTS, prefix, default="production"),
        "private_key": key_pem.decode(),
    }
    return _set_provider(app, "apns", credentials)


@blueprint.route("/admin/app/fcm", methods=["POST", "PUT"])
def set_fcm():
    data = request_object()
    prefix = "requestObject."
    app = existing_app(data)
    raw = _decode_base64(data, "privateKeyBase64", prefix)
    try:
        account = json.loads(raw)
    except ValueError:
        raise bad_request(prefix + "privateKeyBase64", "must be a base64-encoded service account JSON") from None
    if not isinstance(account, dict):
        raise bad_request(prefix + "privateKeyBase64", "must be a base64-encoded service account JSON object")
    for key in ("client_email", "private_key", "token_uri"):
        if not isinstance(account.get(key), str) or not account[key]:
            raise bad_request(prefix + "privateKeyBase64", f"the service account lacks '{key}'")
    try:
        load_pem_private_key(account["private_key"].encode(), password=None)
    except (ValueError, TypeError):
        raise bad_request(prefix + "privateKeyBase64", "the service account's private_key is not a PEM key") from None
    project_id = v.string(data, "projectId", prefix) or account.get("project_id")
    if not project_id:
        raise bad_request(prefix + "projectId", "is required")
    return _set_provider(app, "fcm", {"project_id": project_id, "service_account": account})


@blueprint.route("/admin/app/apns", methods=["DELETE"])
@blueprint.route("/admin/app/apns/remove", methods=["POST"])
def remove_apns():
    return _set_provider(existing_app(request_object()), "apns", None)


@blueprint.route("/admin/app/fcm", methods=["DELETE"])
@blueprint.route("/admin/app/fcm/remove", methods=["POST"])
def remove_fcm():
    return _set_provider(existing_app(request_object()), "fcm", None)
