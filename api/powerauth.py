"""The PowerAuth Push Server REST API: service status, devices, messages, apps.

Request and response shapes follow seed 002 and the current reference
(wultra/powerauth-push-server), as its clients call it. Where the two differ
both forms are accepted; the choices are listed in the README ("Compatibility
with the reference servers"). Platforms are apns, fcm and hms, with the older
names ios, android and huawei as aliases; each is delivered to by its provider
(workers/delivery/: APNs, FCM, HMS Push Kit with ``/admin/app/hms`` credentials).
"""
from __future__ import annotations

import base64
import binascii
import json
import platform as runtime
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from flask import Blueprint, Response

from api import auth, idempotency, limits, queue_cap, sender_control
from api import schema as sc
from api.context import services
from api.errors import bad_request, not_found, renders_errors
from api.powerauth_envelope import APP_ID, APP_REQUEST, OK, TEXT, answer, existing_app, json_response, ok, render_error, wrapped
from shared import commands, halt
from shared import db as mongo
from shared import device_lookup as lookup
from shared.commands import ACTIVATION_STATES, command
from shared.outbound import OutboundRefused
from shared.payload import Body
from shared.send_entry import SendEntry

#: Platform names accepted and the provider each maps to (aliases of the older API).
PLATFORMS = {"apns": "apns", "ios": "apns", "fcm": "fcm", "android": "fcm", "hms": "hms", "huawei": "hms"}
#: The providers a send's result reports, each also under its older name (the seed's ios and android, and huawei).
RESULT_ALIASES = {"apns": "ios", "fcm": "android", "hms": "huawei"}
ENVIRONMENTS = {"development": "development", "production": "production"}
PRIORITIES = {"high": "HIGH", "normal": "NORMAL"}
MODES = {"synchronous": "SYNCHRONOUS", "asynchronous": "ASYNCHRONOUS"}
#: Most activations one multi-registration may carry.
MAX_ACTIVATIONS = 100
APPLICATION_NAME = "powerauth-push"
APPLICATION_DISPLAY_NAME = "Push Server (PowerAuth API)"
VERSION = "1.0.0"
#: Body keys that may be strings at most this long.
MAX_TEXT = 4096

blueprint = Blueprint("powerauth", __name__)
renders_errors(blueprint, "powerauth", render_error)


class Extras(sc.Json):
    """Custom data: a JSON object the providers' payloads can carry (orjson: integers within 64 bits, valid
    Unicode, at most 254 levels deep)."""

    def clean(self, value, path):
        value = super().clean(value, path)
        try:
            orjson.dumps(value)
        except orjson.JSONEncodeError:
            raise sc.Invalid("must be encodable: integers within 64 bits, valid Unicode, at most 254 levels deep") from None
        return value


#: Largest badge: FCM's notification_count is a 32-bit integer.
MAX_BADGE = 2**31 - 1


#: A PowerAuth message body (``PushMessageBody``); every value can go into an APNs payload and an FCM message.
MESSAGE_BODY = sc.FastObj(
    {
        "title": sc.Str(max_length=MAX_TEXT, allow_empty=True),
        "body": sc.Str(max_length=MAX_TEXT, allow_empty=True),
        "badge": sc.Int(minimum=0, maximum=MAX_BADGE),
        "sound": sc.Str(),
        "icon": sc.Str(),
        "category": sc.Str(),
        "collapseKey": sc.Str(max_length=64),
        "validUntil": sc.Timestamp(description="Not delivered after this time"),
        "extras": Extras(object_only=True, description="Custom data, delivered with the notification"),
        "titleLocKey": sc.Str(),
        "titleLocArgs": sc.List(sc.Str(allow_empty=True, max_length=MAX_TEXT)),
        "bodyLocKey": sc.Str(),
        "bodyLocArgs": sc.List(sc.Str(allow_empty=True, max_length=MAX_TEXT)),
    },
    required=True,
    name="PushMessageBody",
)


# --- schemas --------------------------------------------------------------------------------------

#: A device token: no white space; an APNs token must also be hexadecimal (checked against the platform).
TOKEN = sc.Str(required=True, max_length=sc.MAX_TOKEN_LENGTH, no_spaces=True, description="The device's push token",
               example="0123456789abcdef" * 4)
DEVICE = {
    "appId": APP_ID,
    "token": TOKEN,
    "platform": sc.Choice(PLATFORMS, required=True, description="apns (ios), fcm (android) or hms (huawei)"),
    "environment": sc.Choice(ENVIRONMENTS, description="APNs environment of the token (default: the app's)"),
    "userId": sc.Str(),
}
#: One PowerAuth ``PushMessage``.
MESSAGE = sc.FastObj(
    {
        "userId": sc.Str(required=True),
        "activationId": sc.Str(),
        "priority": sc.Choice(PRIORITIES, description="Default: the request's priority"),
        "attributes": sc.FastObj({"silent": sc.Bool(default=False), "personal": sc.Bool(default=False)}),
        "body": MESSAGE_BODY,
    },
    required=True,
    name="PushMessage",
)
SEND_OPTIONS = {
    "appId": APP_ID,
    "mode": sc.Choice(MODES, default="SYNCHRONOUS", description="SYNCHRONOUS waits for the outcome"),
    "priority": sc.Choice(PRIORITIES, default="HIGH"),
    "validateOnly": sender_control.VALIDATE_ONLY,
    "sendAt": sender_control.SEND_AT,
}


def _max_batch(settings) -> int:
    """Most messages one batch request may carry: the setting ``max_batch_messages`` (PUSH_MAX_BATCH_MESSAGES, default 10,000)."""
    return settings.max_batch_messages


COUNTS = sc.Obj({k: sc.Int() for k in ("sent", "pending", "failed", "total")})
RESULT = sc.Obj({name: COUNTS for provider, alias in RESULT_ALIASES.items() for name in (provider, alias)})
SEND_ANSWER = answer(sc.Obj({"messageId": TEXT, "mode": sc.Str(enum=list(MODES.values())), "validateOnly": sc.Bool(),
                             "validation": sender_control.VALIDATION, "sendAt": TEXT}))
APP_SUMMARY = sc.Obj({"appId": TEXT, **{name: sc.Bool() for provider, alias in RESULT_ALIASES.items() for name in (provider, alias)}})
APP_DETAIL = sc.Obj({"application": APP_SUMMARY, "apnsPrivateKeyPresent": sc.Bool(), "fcmPrivateKeyPresent": sc.Bool(),
                     "hmsProjectId": sc.Json(description="The HMS project, or null"), "hmsClientSecretPresent": sc.Bool()})


# --- service ------------------------------------------------------------------------------------

STATUS = sc.Obj(
    {
        **{k: TEXT for k in ("applicationName", "applicationDisplayName", "applicationEnvironment", "version", "timestamp", "python")},
        "rabbitmq": sc.Str(enum=["UP", "DOWN"]),
        "mongodb": sc.Str(enum=["UP", "DOWN"]),
    }
)


@blueprint.get("/push/service/status")
@sc.operation(
    "Service status: up when RabbitMQ is reachable and MongoDB takes a write (live checks reused for "
    "PUSH_HEALTH_CHECK_CACHE_SECONDS per API process)",
    responses={
        200: answer(STATUS),
        503: sc.Obj({"status": sc.Str(enum=["ERROR"]), "responseObject": sc.Obj({"code": TEXT, "message": TEXT, **STATUS.properties})}),
    },
)
def service_status():
    svc = services()
    rabbitmq, mongodb = svc.health()
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

def _register(data: dict, activation_ids: list[str]) -> Response:
    app = existing_app(data)
    platform = data["platform"]
    if platform == "apns" and not all(c in "0123456789abcdefABCDEF" for c in data["token"]):
        raise bad_request("requestObject.token", "an APNs device token is hexadecimal")
    services().write(
        command(
            "device.register",
            app_id=app["_id"],
            token=data["token"],
            platform=platform,
            environment=data.get("environment"),
            user_id=data.get("userId"),
            activation_ids=activation_ids,
        )
    )
    return ok()


@blueprint.post("/push/device/create")
@sc.operation("Register a device (its token), optionally for one activation",
              body=wrapped({**DEVICE, "activationId": sc.Str()}), responses={200: OK}, rate_limit=sc.REGISTRATION)
def create_device():
    data = sc.body()
    activation = data.get("activationId")
    return _register(data, [activation] if activation else [])


@blueprint.post("/push/device/create/multi")
@sc.operation(
    "Register a device for several activations",
    body=wrapped({**DEVICE, "activationIds": sc.List(sc.Str(), min_items=1, max_items=MAX_ACTIVATIONS, unique=True, required=True)}),
    responses={200: OK},
    rate_limit=sc.REGISTRATION,
)
def create_device_multi():
    data = sc.body()
    return _register(data, data["activationIds"])


@blueprint.route("/push/device/delete", methods=["POST", "DELETE"])
@blueprint.route("/push/device/remove", methods=["POST", "DELETE"])
@sc.operation("Remove a device (its token)", body=wrapped({"appId": APP_ID, "token": TOKEN}), responses={200: OK})
def delete_device():
    data = sc.body()
    app = existing_app(data)
    services().write(command("device.delete", app_id=app["_id"], token=data["token"]))
    return ok()


@blueprint.route("/push/device/status/update", methods=["POST", "PUT"])
@sc.operation(
    "Change an activation's status (a bare body without requestObject is accepted too)",
    body=wrapped(
        {
            "activationId": sc.Str(required=True),
            "activationStatus": sc.Choice({s.lower(): s for s in ACTIVATION_STATES}, default="ACTIVE"),
        },
        bare_ok=True,
    ),
    responses={200: OK},
)
def update_status():
    data = sc.body()
    activation = data["activationId"]
    _require_activation(activation)
    # An app's key sets the status for its app only; the admin key (or auth off) for every app (shared/activation_status.py).
    principal = auth.current()
    app_id = None if principal.is_admin else principal.app_id
    services().write(command("activation.status", activation_id=activation, status=data["activationStatus"], app_id=app_id))
    return ok()


def _require_activation(activation_id: str) -> None:
    """An app key may change an activation's status unless a device of another app holds it."""
    principal = auth.current()
    if principal.is_admin:
        return
    svc = services()
    holders = svc.guarded_read(lambda: lookup.devices_holding_activation(svc.db, activation_id, {"app_id": 1}, limit=100))
    other = [d for d in holders if d.get("app_id") != principal.app_id]
    if other:
        raise auth.forbidden(f"the API key is not valid for activation {activation_id} (activationId)")


# --- messages -----------------------------------------------------------------------------------

def parse_body(body: dict) -> Body:
    """The :class:`Body` of a message body already cleaned by :data:`MESSAGE_BODY` (the route's schema checked it)."""
    title_loc_args, body_loc_args = body.get("titleLocArgs"), body.get("bodyLocArgs")
    return Body(
        title=body.get("title"),
        body=body.get("body"),
        badge=body.get("badge"),
        sound=body.get("sound"),
        icon=body.get("icon"),
        category=body.get("category"),
        collapse_key=body.get("collapseKey"),
        valid_until=body.get("validUntil"),
        extras=body.get("extras"),
        title_loc_key=body.get("titleLocKey"),
        title_loc_args=tuple(title_loc_args) if title_loc_args is not None else None,
        body_loc_key=body.get("bodyLocKey"),
        body_loc_args=tuple(body_loc_args) if body_loc_args is not None else None,
    )


def parse_message(message: dict, prefix: str, default_priority: str, settings=None, checked: set | None = None) -> dict:
    """One PowerAuth ``PushMessage``, already cleaned by :data:`MESSAGE`, as a send entry.

    Only what the schema cannot know is checked: the provider payload sizes (named ``<prefix>body``).
    ``checked``: the bodies (with their flags) of a batch already found within the sizes, so a batch of one body
    builds its provider payloads once, not once per message (a body over a size is refused at its first message).
    """
    attributes = message.get("attributes") or {}
    body = parse_body(message["body"])
    high_priority = (message.get("priority") or default_priority) == "HIGH"
    silent = attributes.get("silent", False)
    key = _checked_key(message["body"], silent, high_priority) if checked is not None else None
    if key is None or key not in checked:
        limits.check_payload(settings or services().settings, body, prefix + "body", silent=silent, high_priority=high_priority)
        if key is not None:
            checked.add(key)
    return SendEntry.for_user(
        message["userId"], body.to_json(), activation_id=message.get("activationId"),
        personal=attributes.get("personal", False), silent=silent, high_priority=high_priority,
    ).to_json()


def _checked_key(body: dict, silent: bool, high_priority: bool) -> tuple | None:
    """What a batch remembers of a body found within the sizes; None for a body orjson cannot write (an integer
    beyond 64 bits, a lone surrogate): it is checked at each of its messages, as before."""
    try:
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS), silent, high_priority
    except orjson.JSONEncodeError:
        return None


def message_id(app_id: str) -> str | None:
    """The message id a send's ``Idempotency-Key`` names (None without one): the same for the same app and key.

    A client's retry of a send whose answer it lost (a timeout, a connection cut) carries the same key and
    becomes the same message, sent once; the key with another body is a 422 (api/idempotency.py).
    """
    return idempotency.claim(services(), app_id)


def _send(entries: list[dict], app: dict, mode: str, *, validate_only: bool = False, send_at: datetime | None = None) -> Response:
    svc = services()
    if send_at is not None:  # a scheduled send (api/sender_control.py)
        sender_control.check_send_at(send_at, [e["body"] for e in entries], explicit_mode=sender_control.explicit_mode())
        mode = "ASYNCHRONOUS"
    if validate_only:  # every check of a send, nothing published (api/sender_control.py)
        return ok({"mode": mode, "validateOnly": True, "validation": sender_control.validate_send(svc, app, entries)})
    queue_cap.check(app)
    send = command("send", app_id=app["_id"], mode=mode, entries=entries, lane=commands.send_lane(mode, entries))
    send["id"] = message_id(app["_id"]) or send["id"]
    if send_at is not None:
        sender_control.schedule(svc, send["id"], app["_id"], send_at, commands.EXPAND_SEND, send, kind="send")
        return ok({"messageId": send["id"], "mode": mode, "sendAt": send_at.isoformat(), "result": None})
    svc.publish(commands.EXPAND_SEND, send)
    if mode == "ASYNCHRONOUS":
        return ok({"messageId": send["id"], "mode": mode, "result": None})
    counts = svc.wait_for_outcome(send["id"])
    return ok({"messageId": send["id"], "mode": mode, "result": result_object(counts)})


def result_object(counts: dict | None) -> dict:
    """PowerAuth's ``result``: counts per provider (apns, fcm, hms) and under its older name (ios, android, huawei).

    A provider the message did not reach counts 0.
    """
    empty = {"sent": 0, "pending": 0, "failed": 0, "total": 0}
    counts = counts or {}
    result = {provider: counts.get(provider, empty) for provider in RESULT_ALIASES}
    result.update({alias: result[provider] for provider, alias in RESULT_ALIASES.items()})
    return result


@blueprint.post("/push/message/send")
@sc.operation("Send one message to a user's devices", body=wrapped({**SEND_OPTIONS, "message": MESSAGE}),
              headers=idempotency.HEADERS, responses={200: SEND_ANSWER})
def send_message():
    data = sc.body()
    app = existing_app(data)
    entry = parse_message(data["message"], "requestObject.message.", data["priority"])
    return _send([entry], app, data["mode"], validate_only=data["validateOnly"], send_at=data.get("sendAt"))


@blueprint.post("/push/message/batch/send")
@sc.operation(
    "Send a batch of messages (each to one user's devices) as one send",
    body=wrapped(
        # The example is the whole body: schemathesis builds the rest of a body around a property's example with
        # Hypothesis, which for this deep shape trips a CPython 3.11 ast race (SystemError) under --workers 2.
        {**SEND_OPTIONS, "appId": sc.Id(required=True, description="The application's id"),
         "batch": sc.List(MESSAGE, min_items=1, max_items=_max_batch, required=True)},
        example={"requestObject": {"appId": "demo", "mode": "ASYNCHRONOUS", "batch": [{"userId": "user-1", "body": {"title": "Hello"}}]}},
    ),
    headers=idempotency.HEADERS,
    responses={200: SEND_ANSWER},
    body_size=sc.LARGE_BODY,
)
def send_batch():
    data = sc.body()
    app = existing_app(data)
    settings, priority = services().settings, data["priority"]
    checked: set = set()
    entries = [parse_message(item, f"requestObject.batch[{i}].", priority, settings, checked) for i, item in enumerate(data["batch"])]
    return _send(entries, app, data["mode"], validate_only=data["validateOnly"], send_at=data.get("sendAt"))


@blueprint.get("/push/message/<message_id>/detail")
@sc.operation(
    "Where a send stands: per-platform counts",
    path={"message_id": sc.Str(description="The send's messageId")},
    responses={200: answer(sc.Obj({"messageId": TEXT, "appId": TEXT, "timestampCreated": sc.Json(), "expanded": sc.Bool(),
                                   "result": RESULT, "state": sc.Str(description="running, or cancelled"),
                                   **sender_control.SCHEDULE_DETAIL}))},
)
def message_detail(message_id: str):
    """Where an (ASYNCHRONOUS) send stands: per-platform counts."""
    svc = services()
    message = svc.find_one(mongo.MESSAGES, {"_id": message_id}, {"app_id": 1, "created_at": 1, "send_at": 1})
    if message is None:
        raise not_found(f"Message not found: {message_id}", field="messageId", location="path")
    auth.require_app(message["app_id"], "messageId")
    counts = svc.guarded_read(lambda: svc.message_counts(message_id))
    created = message.get("created_at")
    return ok(
        {
            "messageId": message_id,
            "appId": message["app_id"],
            "timestampCreated": created.isoformat() if hasattr(created, "isoformat") else created,
            "expanded": counts is not None,
            "result": result_object(counts),
            "state": halt.shown_state(svc.find_one(halt.HALTS, {"_id": message_id}, {"state": 1}), halt.RUNNING),
            **sender_control.schedule_detail(svc, message_id, message.get("send_at")),
        }
    )


# --- apps ---------------------------------------------------------------------------------------

def app_summary(app: dict) -> dict:
    """An app in a list: which providers it has credentials for, under their names and their older ones."""
    configured = {provider: bool(app.get(provider)) for provider in RESULT_ALIASES}
    return {
        "appId": app["_id"],
        **configured,
        **{alias: configured[provider] for provider, alias in RESULT_ALIASES.items()},
        "suspended": app.get("suspended", {}),
    }


APP_LIST = answer(sc.Obj({"applicationList": sc.List(APP_SUMMARY)}))


def all_apps() -> list[dict]:
    svc = services()
    return svc.guarded_read(lambda: list(svc.db[mongo.APPS].find({}, mongo.HIDDEN_CREDENTIALS).sort("_id", 1)))


@blueprint.route("/admin/app/list", methods=["GET", "POST"])
@sc.operation("Applications, with the providers each has credentials for", responses={200: APP_LIST})
def list_apps():
    return ok({"applicationList": [app_summary(a) for a in all_apps()]})


@blueprint.route("/admin/app/unconfigured/list", methods=["GET", "POST"])
@sc.operation("Applications not yet configured: without credentials for any provider (the reference lists the "
              "PowerAuth server's applications it has no credentials for)", responses={200: APP_LIST})
def list_unconfigured_apps():
    summaries = [app_summary(a) for a in all_apps()]
    return ok({"applicationList": [s for s in summaries if not any(s[provider] for provider in RESULT_ALIASES)]})


def _app_detail(app: dict) -> Response:
    apns, fcm, hms = app.get("apns") or {}, app.get("fcm") or {}, app.get("hms") or {}
    return ok(
        {
            "application": app_summary(app),
            "apnsBundle": apns.get("bundle"),
            "apnsKeyId": apns.get("key_id"),
            "apnsTeamId": apns.get("team_id"),
            "apnsEnvironment": apns.get("environment"),
            "apnsPrivateKeyPresent": bool(apns.get("private_key") or apns.get("sealed")),
            "fcmProjectId": fcm.get("project_id"),
            "fcmPrivateKeyPresent": bool(fcm.get("service_account") or fcm.get("sealed")),
            "hmsProjectId": hms.get("project_id"),
            "hmsClientSecretPresent": bool(hms.get("client_secret") or hms.get("sealed")),
            "suspended": app.get("suspended", {}),
        }
    )


@blueprint.get("/admin/app/detail")
@sc.operation("An application's provider settings (never its keys)", query={"appId": sc.Str(required=True, example="demo")},
              responses={200: answer(APP_DETAIL)})
def app_detail():
    return _app_detail(existing_app(sc.query(), prefix="", location="query"))


@blueprint.post("/admin/app/detail")
@sc.operation("An application's provider settings (never its keys)", body=APP_REQUEST, responses={200: answer(APP_DETAIL)})
def app_detail_post():
    return _app_detail(existing_app(sc.body()))


@blueprint.post("/admin/app/create")
@sc.operation(
    "Create an application (creating one that exists changes nothing)",
    body=wrapped({"appId": sc.Id(required=True, pattern=r"[A-Za-z0-9._-]+",
                                 pattern_help="may contain letters, digits, '.', '_' and '-' only")}),
    responses={200: answer(sc.Obj({"appId": TEXT}))},
)
def create_app_route():
    app_id = sc.body()["appId"]
    if len(app_id) > sc.MAX_ID_LENGTH:  # a numeric appId is not bounded by the schema's string length
        raise bad_request("requestObject.appId", f"must be at most {sc.MAX_ID_LENGTH} characters")
    services().write(command("app.create", app_id=app_id))
    return ok({"appId": app_id})


#: Longest base64 credential accepted.
MAX_CREDENTIAL = 64 * 1024


def _decode_base64(data: dict, key: str, prefix: str) -> bytes:
    try:
        return base64.b64decode(data[key], validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(prefix + key, "must be base64") from None


def _set_provider(app: dict, provider: str, credentials: dict | None) -> Response:
    svc = services()
    sealed = svc.credential_keys.seal(app["_id"], provider, credentials)  # sealed before it crosses RabbitMQ
    svc.write(command("app.provider", app_id=app["_id"], provider=provider, credentials=sealed))
    return ok()


#: ``appId`` of a credentials removal in the query (the reference's ``DELETE /admin/app/<provider>?appId=…``).
REMOVAL_QUERY = {"appId": sc.Id(description="The application's id (the reference's form; else requestObject.appId in the body)",
                                example="demo")}


def _removal(provider: str) -> Response:
    """Remove ``provider``'s credentials of the app named in the query or, as older clients send it, the body."""
    query, body = sc.query(), sc.body()
    if query.get("appId") is not None:
        app = existing_app(query, prefix="", location="query")
    elif body is not None:
        app = existing_app(body)
    else:
        raise bad_request("appId", "is required: ?appId=… (or a body {\"requestObject\": {\"appId\": …}})", location="query")
    return _set_provider(app, provider, None)


def removal_operation(provider: str) -> Callable:
    """The declaration of ``DELETE /admin/app/<provider>`` (and ``POST …/remove``): the app id in the query or the body."""
    return sc.operation(
        f"Remove an application's {provider.upper()} credentials: ?appId=… with no body (the reference's form), "
        "or the app id in the body",
        query=REMOVAL_QUERY, body=APP_REQUEST, body_required=False, responses={200: OK},
    )


def deprecated_removal(provider: str) -> Callable:
    """The declaration of a deprecated removal route (``/admin/app/ios/remove`` …): the app id in the body."""
    return sc.operation(f"Remove an application's {provider.upper()} credentials (deprecated: DELETE /admin/app/{provider}?appId=…)",
                        body=APP_REQUEST, responses={200: OK}, deprecated=True)


# --- APNs ---

APNS_CREDENTIALS = wrapped(
    {
        "appId": APP_ID,
        "bundle": sc.Str(required=True, description="The app's bundle id (the APNs topic)"),
        "keyId": sc.Str(required=True, max_length=32),
        "teamId": sc.Str(required=True, max_length=32),
        "environment": sc.Choice(ENVIRONMENTS, default="production"),
        "privateKeyBase64": sc.Str(required=True, max_length=MAX_CREDENTIAL, format="byte",
                                   description="The .p8 token key (PEM), base64-encoded"),
    }
)


def _set_apns(data: dict) -> Response:
    prefix = "requestObject."
    app = existing_app(data)
    key_pem = _decode_base64(data, "privateKeyBase64", prefix)
    try:
        key = load_pem_private_key(key_pem, password=None)
        pem = key_pem.decode()
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise bad_request(prefix + "privateKeyBase64", "must be a base64-encoded .p8 (PEM) private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise bad_request(prefix + "privateKeyBase64", "must be an APNs token key (EC P-256)")
    credentials = {
        "bundle": data["bundle"],
        "key_id": data["keyId"],
        "team_id": data["teamId"],
        "environment": data["environment"],
        "private_key": pem,
    }
    return _set_provider(app, "apns", credentials)


@blueprint.route("/admin/app/apns", methods=["POST", "PUT"])
@sc.operation("Set an application's APNs credentials (token key)", body=APNS_CREDENTIALS, responses={200: OK},
              body_size=sc.MEDIUM_BODY)
def set_apns():
    return _set_apns(sc.body())


@blueprint.route("/admin/app/ios/update", methods=["POST", "PUT"])
@sc.operation("Set an application's APNs credentials (deprecated: POST /admin/app/apns)", body=APNS_CREDENTIALS,
              responses={200: OK}, deprecated=True)
def update_ios():
    return _set_apns(sc.body())


@blueprint.route("/admin/app/apns", methods=["DELETE"])
@blueprint.route("/admin/app/apns/remove", methods=["POST"])
@removal_operation("apns")
def remove_apns():
    return _removal("apns")


@blueprint.route("/admin/app/ios/remove", methods=["POST", "DELETE"])
@deprecated_removal("apns")
def remove_ios():
    return _set_provider(existing_app(sc.body()), "apns", None)


# --- FCM ---

FCM_CREDENTIALS = wrapped(
    {
        "appId": APP_ID,
        "projectId": sc.Str(description="Default: the service account's project_id"),
        "privateKeyBase64": sc.Str(required=True, max_length=MAX_CREDENTIAL, format="byte",
                                   description="The service account JSON, base64-encoded"),
    }
)


def _set_fcm(data: dict) -> Response:
    prefix = "requestObject."
    app = existing_app(data)
    raw = _decode_base64(data, "privateKeyBase64", prefix)
    try:
        account = json.loads(raw)
    except (ValueError, RecursionError):
        raise bad_request(prefix + "privateKeyBase64", "must be a base64-encoded service account JSON") from None
    if not isinstance(account, dict):
        raise bad_request(prefix + "privateKeyBase64", "must be a base64-encoded service account JSON object")
    for key in ("client_email", "private_key", "token_uri"):
        if not isinstance(account.get(key), str) or not account[key]:
            raise bad_request(prefix + "privateKeyBase64", f"the service account lacks '{key}'")
    try:
        load_pem_private_key(account["private_key"].encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise bad_request(prefix + "privateKeyBase64", "the service account's private_key is not a PEM key") from None
    try:
        services().outbound.check(account["token_uri"], at_intake=True)
    except OutboundRefused as refused:
        raise bad_request(prefix + "privateKeyBase64", f"the service account's token_uri is not allowed: {refused}") from None
    project_id = data.get("projectId") or account.get("project_id")
    if not isinstance(project_id, str) or not project_id.strip():
        raise bad_request(prefix + "projectId", "is required")
    return _set_provider(app, "fcm", {"project_id": project_id, "service_account": account})


@blueprint.route("/admin/app/fcm", methods=["POST", "PUT"])
@sc.operation("Set an application's FCM credentials (service account)", body=FCM_CREDENTIALS, responses={200: OK},
              body_size=sc.MEDIUM_BODY)
def set_fcm():
    return _set_fcm(sc.body())


@blueprint.route("/admin/app/android/update", methods=["POST", "PUT"])
@sc.operation("Set an application's FCM credentials (deprecated: POST /admin/app/fcm)", body=FCM_CREDENTIALS,
              responses={200: OK}, deprecated=True)
def update_android():
    return _set_fcm(sc.body())


@blueprint.route("/admin/app/fcm", methods=["DELETE"])
@blueprint.route("/admin/app/fcm/remove", methods=["POST"])
@removal_operation("fcm")
def remove_fcm():
    return _removal("fcm")


@blueprint.route("/admin/app/android/remove", methods=["POST", "DELETE"])
@deprecated_removal("fcm")
def remove_android():
    return _set_provider(existing_app(sc.body()), "fcm", None)


# --- HMS (stored for the HMS delivery; never answered) ---

#: Longest HMS client secret accepted (Huawei's are 64 hex characters).
MAX_HMS_SECRET = 1024
HMS_CREDENTIALS = wrapped(
    {
        "appId": APP_ID,
        "projectId": sc.Str(required=True, description="The HMS project id"),
        "clientId": sc.Str(required=True, description="The HMS OAuth 2.0 client id"),
        "clientSecret": sc.Str(required=True, max_length=MAX_HMS_SECRET, description="The HMS OAuth 2.0 client secret (never answered)"),
    }
)


def _set_hms(data: dict) -> Response:
    credentials = {"project_id": data["projectId"], "client_id": data["clientId"], "client_secret": data["clientSecret"]}
    return _set_provider(existing_app(data), "hms", credentials)


@blueprint.route("/admin/app/hms", methods=["POST", "PUT"])
@sc.operation("Set an application's HMS (Huawei Push Kit) credentials: project, OAuth 2.0 client id and secret",
              body=HMS_CREDENTIALS, responses={200: OK})
def set_hms():
    return _set_hms(sc.body())


@blueprint.route("/admin/app/huawei/update", methods=["POST", "PUT"])
@sc.operation("Set an application's HMS credentials (deprecated: POST /admin/app/hms)", body=HMS_CREDENTIALS,
              responses={200: OK}, deprecated=True)
def update_huawei():
    return _set_hms(sc.body())


@blueprint.route("/admin/app/hms", methods=["DELETE"])
@blueprint.route("/admin/app/hms/remove", methods=["POST"])
@removal_operation("hms")
def remove_hms():
    return _removal("hms")


@blueprint.route("/admin/app/huawei/remove", methods=["POST", "DELETE"])
@deprecated_removal("hms")
def remove_huawei():
    return _set_provider(existing_app(sc.body()), "hms", None)
