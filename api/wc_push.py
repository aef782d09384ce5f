"""The WalletConnect push server API (seed 001; reference: WalletConnect/push-server).

Routes, each also under ``/<tenant_id>/…`` for a tenant (without it: the default tenant):

- ``GET /health``: ``OK, push-server v<version>`` (``?format=json``: live checks too);
- ``POST /clients`` registers ``{client_id, type, token, always_raw?}``; ``DELETE /clients/<id>`` unregisters;
- ``POST /clients/<id>`` sends ``{id, payload: {topic, flags, blob}}`` or the raw form:
  the relay's ``{topic, tag, message}`` at the top level (as the reference reads it),
  also accepted as ``{id?, raw: {…}}`` and ``{id?, payload: {…}}``: 202 the first
  time an id reaches a client, 200 for a repeat (nothing is delivered), and 202
  for a client that is not (or no longer) registered, as the reference answers so
  that the relay stops retrying (nothing is delivered);
- ``POST /tenants``, ``GET|DELETE /tenants/<id>``, ``POST|DELETE /tenants/<id>/apns``
  and ``/tenants/<id>/fcm_v1`` (multipart, as the reference): the admin token, or the
  reference's tenant JWT for the one tenant its ``sub`` names. FCM v1 credentials are
  proved at upload: a token is fetched from the service account's ``token_uri``.

Answers: ``{"status": "OK"}``; failures ``{"status": "FAILED", "errors": [{name,
description}], "fields": [{field, description, location}]}`` (``fields`` when an
input is at fault). The deduplication is the worker's: the API publishes the
notification and answers what the worker decided.

Each route declares what it reads with :func:`operation` (api/schema.py, which
also builds its part of ``/openapi.json``); shape failures keep the seed's
error names (``EmptyField``, ``InvalidField``, ``InvalidBody``).
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import json
import platform as runtime
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from flask import Blueprint, Response, g, request

from api import schema as sc
from api.apns_certificates import CertificateError, decode_upload, parse_p12
from api.auth import is_admin_key
from api.context import services
from api.errors import ApiError, renders_errors
from api.powerauth import VERSION
from api.service_accounts import ServiceAccountRefused, prove_service_account
from api.wc_push_auth import (
    DID_KEY_PREFIX,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AuthError,
    relay_public_key,
    trim_did_key,
    verify_client_jwt,
    verify_relay_signature,
    verify_tenant_jwt,
)
from shared import db as mongo
from shared.commands import command
from shared.outbound import OutboundRefused
from shared.wc_payload import LEGACY, RAW, Notification, PayloadError, decode_cleartext, raw_message_id
from shared.wc_push import CLIENT_TYPES, INVALID, RAW_ONLY, REPEAT, tenant_app_id

blueprint = Blueprint("wc_push", __name__)

#: Paths (prefixes) whose errors are rendered in this family's format, whoever raises them.
PATH_PREFIXES = ("/health", "/clients", "/tenants")
#: The tenant of the routes without a tenant id.
DEFAULT_TENANT = "default"
#: Tenant ids: letters, digits, '.', '_' and '-'; these are taken by routes.
TENANT_ID_PATTERN = r"[A-Za-z0-9._-]{1,64}"
TENANT_ID = re.compile(rf"^{TENANT_ID_PATTERN}$")
RESERVED_TENANT_IDS = {"health", "clients", "tenants", "session", "call-status", "push", "admin", "metrics"}
#: Longest blob or raw message (APNs refuses payloads over 4 KB anyway; FCM allows 4 KB of data).
MAX_BLOB_LENGTH = 64 * 1024
#: Error names for the generic codes of api.errors.
NAMES = {
    "ERROR_GENERIC": "BadRequest",
    "ERROR_NOT_FOUND": "NotFound",
    "ERROR_SERVICE_UNAVAILABLE": "ServiceUnavailable",
    "ERROR_INTERNAL": "InternalServerError",
    "ERROR_HTTP_400": "BadRequest",
    "ERROR_HTTP_401": "Unauthorized",
    "ERROR_HTTP_403": "Forbidden",
    "ERROR_HTTP_404": "NotFound",
    "ERROR_HTTP_405": "MethodNotAllowed",
    "ERROR_HTTP_413": "PayloadTooLarge",
    "ERROR_HTTP_415": "UnsupportedMediaType",
    "ERROR_HTTP_429": "TooManyRequests",
    "ERROR_TOO_MANY_REQUESTS": "TooManyRequests",
    "ERROR_UNAUTHORIZED": "Unauthorized",
    "ERROR_FORBIDDEN": "Forbidden",
}


# --- answers ------------------------------------------------------------------------------------

def json_response(body: dict, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json", headers=headers)


def ok(status: int = 200, **extra) -> Response:
    return json_response({"status": "OK", **extra}, status)


def fail(status: int, name: str, description: str, *, field: str | None = None, location: str = "body") -> ApiError:
    return ApiError(status, description, field=field, location=location, code=name)


def render_error(error: ApiError) -> Response:
    """The seed's failure envelope."""
    name = NAMES.get(error.code, error.code)
    if error.code.startswith("ERROR_HTTP_") and error.code not in NAMES:
        name = "HttpError"
    body: dict = {"status": "FAILED", "errors": [{"name": name, "description": error.message}]}
    if error.field:
        body["fields"] = [{"field": error.field, "description": error.message, "location": error.location}]
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    return json_response(body, error.status, headers)


renders_errors(blueprint, "wc_push", render_error, path_prefixes=PATH_PREFIXES)


# --- inputs: what each route reads --------------------------------------------------------------

#: Name of a schema failure by the field at fault (else EmptyField or InvalidField; InvalidBody for the body).
FIELD_ERROR_NAMES = {"type": "ProviderNotFound"}


def seed_error(error: ApiError) -> ApiError:
    """A schema failure (api/schema.py's generic 400) under the name the seed gives it."""
    if error.field == "body":
        name = "InvalidBody"
    elif error.field in FIELD_ERROR_NAMES and error.location == "body":
        name = FIELD_ERROR_NAMES[error.field]
    elif error.message.endswith(("is required", "must not be empty")):
        name = "EmptyField"
    else:
        name = "InvalidField"
    return ApiError(error.status, error.message, field=error.field, location=error.location, code=name)


def operation(summary: str, *, guard: Callable[[], None] | None = None, **options) -> Callable:
    """:func:`api.schema.operation` for this family (put it under the route decorators).

    ``guard`` (the admin token, the relay signature) runs before the request is
    validated: an unauthenticated caller learns nothing from validation. The
    schema's failures keep the seed's error names (:func:`seed_error`).
    """
    declare = sc.operation(summary, **options)

    def decorate(view: Callable) -> Callable:
        validated = declare(view)

        @functools.wraps(validated)
        def guarded(*args, **kwargs):
            if guard is not None:
                guard()
            try:
                request.get_json(silent=True)  # parsed once here (cached for the schema): JSON nested too deeply is a 400
            except RecursionError:
                raise fail(400, "InvalidBody", "the body is nested too deeply", field="body") from None
            try:
                return validated(*args, **kwargs)
            except ApiError as error:
                if error.status == 400 and error.code == "ERROR_GENERIC":
                    raise seed_error(error) from None
                raise

        return guarded

    return decorate


class FormText(sc.Str):
    """A form field's text, sent as a field or as a file (UTF-8); surrounding white space is dropped."""

    def clean(self, value, path):
        if isinstance(value, bytes):
            try:
                value = value.decode()
            except UnicodeDecodeError:
                raise sc.Invalid("must be UTF-8 text") from None
        return super().clean(value, path).strip()


class Picked(sc.Field):
    """An object in one of several shapes its JSON type cannot tell apart: ``pick(value)`` answers the index."""

    json_type = "object"

    def __init__(self, pick: Callable[[dict], int], *alternatives: sc.Field, **options):
        super().__init__(**options)
        self.pick = pick
        self.alternatives = alternatives

    def clean(self, value, path):
        if not isinstance(value, dict):
            raise sc.Invalid("must be a JSON object")
        return self.alternatives[self.pick(value)].clean(value, path)

    def _schema(self, settings):
        # anyOf: an object may fit more than one shape (the server takes the one ``pick`` answers)
        return {"anyOf": [alternative.schema(settings) for alternative in self.alternatives]}


class ClientType(sc.Choice):
    """A client type; a refusal quotes the type sent."""

    def clean(self, value, path):
        try:
            return super().clean(value, path)
        except sc.Invalid as invalid:
            if isinstance(value, str):
                invalid.message += f", not {value[:64]!r}"
            raise


def _client_id_problem(value: str) -> str | None:
    client_id = trim_did_key(value)
    if not client_id:
        return "must not be empty"
    if len(client_id) > sc.MAX_ID_LENGTH:
        return f"must be at most {sc.MAX_ID_LENGTH} characters after {DID_KEY_PREFIX}"
    return None


#: No white space (as a pattern, so that the document says so too).
NO_SPACES = {"pattern": r"\S+", "pattern_help": "must not contain white space"}


def client_id_field(**options) -> sc.Str:
    return sc.Str(max_length=sc.MAX_ID_LENGTH + len(DID_KEY_PREFIX), **NO_SPACES, check=_client_id_problem,
                 description="The client's id: its did:key (the did:key: prefix is optional)", **options)


def legacy_payload(**options) -> sc.Obj:
    return sc.Obj({
        "topic": sc.Str(required=True),
        "flags": sc.Int(required=True, minimum=0, maximum=2**32 - 1,
                       description="Bitmask: 1 encrypted, 2 sign, 4 auth, 8 chat, 16 notify"),
        "blob": sc.Str(required=True, max_length=MAX_BLOB_LENGTH,
                      description="Ciphertext; without the encrypted flag, base64 of a JSON object {title, body}"),
    }, **options)


def raw_payload(**options) -> sc.Obj:
    return sc.Obj({
        "topic": sc.Str(required=True),
        "tag": sc.Int(required=True, minimum=0, maximum=2**32 - 1),
        "message": sc.Str(required=True, max_length=MAX_BLOB_LENGTH, description="Ciphertext"),
    }, **options)


def _send_form(data: dict) -> int:
    """Which form a send body has: 0 ``{id, payload: {topic, flags, blob}}``, 1 ``{id?, raw: {topic, tag, message}}``,
    2 ``{id?, payload: {topic, tag, message}}`` (a payload with ``message`` and no ``blob``), 3 the relay's
    ``{topic, tag, message, id?}`` at the top level (no ``payload`` or ``raw``; the reference's form)."""
    if data.get("raw") is not None:
        return 1
    payload = data.get("payload")
    if payload is None and "message" in data:
        return 3
    return 2 if isinstance(payload, dict) and "message" in payload and "blob" not in payload else 0


RAW_ID = sc.Str(description="The notification's id; by default the SHA-256 of the message")
SEND = Picked(
    _send_form,
    # payload first: a body without either names the payload
    sc.Obj({"payload": legacy_payload(required=True),
           "id": sc.Str(required=True, description="The notification's id: a repeat to the same client is not delivered")}),
    sc.Obj({"raw": raw_payload(required=True), "id": RAW_ID}),
    sc.Obj({"payload": raw_payload(required=True), "id": RAW_ID}),
    sc.Obj({**raw_payload().properties, "id": RAW_ID}),
)
REGISTRATION = sc.Obj({
    "client_id": client_id_field(required=True),
    "type": ClientType(sorted(CLIENT_TYPES), required=True, description="How the client's token is reached"),
    "token": sc.Str(required=True, max_length=sc.MAX_TOKEN_LENGTH, **NO_SPACES, description="The device token (hexadecimal for APNs)"),
    "always_raw": sc.Bool(default=False, description="The client takes only the raw form {topic, tag, message}"),
})


def tenant_id_field(**options) -> sc.Str:
    return sc.Str(max_length=64, pattern=TENANT_ID_PATTERN,
                 pattern_help="may contain letters, digits, '.', '_' and '-' only (at most 64)", **options)


TENANT_PATH = {"tenant_id": tenant_id_field(description="The tenant's id (routes without it address the default tenant)")}
CLIENT_PATH = {**TENANT_PATH, "client_id": client_id_field()}

#: Answers' text, of any length.
TEXT = sc.Str(max_length=None, allow_empty=True)
OK = sc.Obj({"status": sc.Str(enum=["OK"], required=True)})
FAILED = sc.Obj({
    "status": sc.Str(enum=["FAILED"], required=True),
    "errors": sc.List(sc.Obj({"name": TEXT, "description": TEXT}), min_items=1, required=True),
})
HEALTH = sc.Obj({
    "status": sc.Str(enum=["OK", "FAILED"], required=True),
    "version": TEXT, "rabbitmq": sc.Str(enum=["UP", "DOWN"]), "mongodb": sc.Str(enum=["UP", "DOWN"]),
    "flags": sc.Obj({k: sc.Bool() for k in ("multitenant", "tenant_management", "validate_client_jwt", "validate_signatures")}),
    "client_types": sc.List(TEXT), "python": TEXT, "timestamp": TEXT,
})
TENANT = sc.Obj({"status": sc.Str(enum=["OK"], required=True), "id": TEXT, "url": TEXT})
TENANT_DETAIL = sc.Obj({
    **TENANT.properties,
    "enabled_providers": sc.List(sc.Str(enum=sorted(CLIENT_TYPES))),
    "apns_topic": sc.Json(description="The APNs topic (bundle id), or null"),
    "apns_type": sc.Json(description="'token' when APNs credentials are set, else null"),
    "fcm_project_id": sc.Json(description="The FCM project, or null"),
    "suspended": sc.Bool(),
    "suspended_reason": sc.Json(description="Why providers are suspended (bad credentials), or null"),
    "suspended_providers": sc.Json(object_only=True, description="Reason by suspended provider"),
})

ADMIN_HEADERS = {
    "Authorization": sc.Str(max_length=None, description=(
        "Bearer <PUSH_WC_PUSH_ADMIN_TOKEN or PUSH_ADMIN_KEY>, or Bearer <tenant JWT>: HS256 with "
        "PUSH_WC_PUSH_TENANT_JWT_SECRET, exp required, sub = the one tenant it manages")),
    "X-Api-Key": sc.Str(max_length=None, description="<PUSH_WC_PUSH_ADMIN_TOKEN or PUSH_ADMIN_KEY>, instead of Authorization"),
}
JWT_HEADERS = {"Authorization": sc.Str(
    max_length=None, description="Bearer <relay client JWT issued by the client_id>, when PUSH_WC_PUSH_VALIDATE_CLIENT_JWT is on"
)}
SIGNATURE_HEADERS = {
    SIGNATURE_HEADER: sc.Str(max_length=None, description="Hex Ed25519 signature of '<timestamp>.<body length>.<body>' by the "
                                                         "relay, when PUSH_WC_PUSH_VALIDATE_SIGNATURES is on"),
    TIMESTAMP_HEADER: sc.Str(max_length=None, description="The Unix time (seconds) the signature covers; refused when more than "
                                                         "PUSH_WC_PUSH_SIGNATURE_MAX_AGE_SECONDS (300) from the server's"),
}
ADMIN_NOTE = ("Needs Authorization: Bearer <PUSH_WC_PUSH_ADMIN_TOKEN or PUSH_ADMIN_KEY> (or X-Api-Key: <the same>), or a "
              "tenant JWT whose sub is the tenant (403 for another tenant); 403 while none of the three is set.")


# --- tenants ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tenant:
    """Whose clients a route addresses, and the app document holding its credentials (if any)."""

    id: str
    app_id: str
    app: dict | None


def tenant_for(tenant_id: str | None, *, read_default: bool = True) -> Tenant:
    """The route's tenant; an unknown tenant is a 404 (the default tenant always exists, its app is read on demand)."""
    svc = services()
    if tenant_id is None:
        app_id = svc.settings.wc_push_default_app or tenant_app_id(DEFAULT_TENANT)
        if not read_default:
            return Tenant(DEFAULT_TENANT, app_id, None)
        app = svc.find_one(mongo.APPS, {"_id": app_id}, mongo.HIDDEN_CREDENTIALS)
        return Tenant(DEFAULT_TENANT, app_id, None if app and app.get("deleted") else app)
    if not TENANT_ID.match(tenant_id):
        raise fail(404, "TenantNotFound", f"tenant not found: {tenant_id}", field="tenant_id", location="path")
    app_id = tenant_app_id(tenant_id)
    app = svc.find_one(mongo.APPS, {"_id": app_id}, mongo.HIDDEN_CREDENTIALS)
    if app is None or app.get("deleted"):
        raise fail(404, "TenantNotFound", f"tenant not found: {tenant_id}", field="tenant_id", location="path")
    return Tenant(tenant_id, app_id, app)


def enabled_providers(app: dict | None) -> list[str]:
    """Client types the tenant can deliver to (``noop`` always)."""
    providers = []
    if app and app.get("apns"):
        providers += ["apns", "apns-sandbox"]
    if app and app.get("fcm"):
        providers += ["fcm", "fcm_v1"]
    return providers + ["noop"]


# --- health -------------------------------------------------------------------------------------

@blueprint.get("/health")
@operation("Liveness line (text), or with format=json the live checks of RabbitMQ and MongoDB",
           query={"format": sc.Str(enum=["text", "json"], default="text")},
           responses={200: [("text/plain", None), ("application/json", HEALTH)], 503: HEALTH})
def health():
    if sc.query()["format"] != "json":
        return Response(f"OK, push-server v{VERSION}", mimetype="text/plain")
    svc = services()
    rabbitmq, mongodb = svc.health()
    settings = svc.settings
    body = {
        "status": "OK" if rabbitmq and mongodb else "FAILED",
        "version": VERSION,
        "rabbitmq": "UP" if rabbitmq else "DOWN",
        "mongodb": "UP" if mongodb else "DOWN",
        "flags": {
            "multitenant": True,
            "tenant_management": bool(settings.wc_push_admin_token or settings.admin_key or settings.wc_push_tenant_jwt_secret),
            "validate_client_jwt": settings.wc_push_validate_client_jwt,
            "validate_signatures": settings.wc_push_validate_signatures,
        },
        "client_types": sorted(CLIENT_TYPES),
        "python": runtime.python_version(),
        "timestamp": datetime.now(UTC).isoformat(),
    }
    return json_response(body, 200 if rabbitmq and mongodb else 503)


# --- clients ------------------------------------------------------------------------------------

@blueprint.post("/clients")
@blueprint.post("/<tenant_id>/clients")
@operation("Register a client's device token (again: the token and type are replaced)", path=TENANT_PATH,
           body=REGISTRATION, headers=JWT_HEADERS, responses={200: OK}, rate_limit=sc.REGISTRATION)
def register(tenant_id: str | None = None):
    data = sc.body()
    client_id = trim_did_key(data["client_id"])
    kind, token, always_raw = data["type"], data["token"], data["always_raw"]
    if kind.startswith("apns") and not all(c in "0123456789abcdefABCDEF" for c in token):
        raise fail(400, "InvalidField", "an APNs device token is hexadecimal", field="token")
    tenant = tenant_for(sc.path().get("tenant_id"))
    provider = CLIENT_TYPES[kind][0]
    if provider and tenant.app is not None and not tenant.app.get(provider):
        raise fail(400, "ProviderNotAvailable", f"the tenant has no {provider} credentials for type {kind}", field="type")
    svc = services()
    check_client_jwt(client_id)
    svc.write(
        command(
            "wcp.client.register", tenant_id=tenant.id, client_id=client_id, type=kind, token=token, always_raw=always_raw
        )
    )
    return ok()


@blueprint.delete("/clients/<client_id>")
@blueprint.delete("/<tenant_id>/clients/<client_id>")
@operation("Unregister a client (unknown clients too: the answer is the same)", path=CLIENT_PATH, headers=JWT_HEADERS,
           responses={200: OK})
def unregister(client_id: str, tenant_id: str | None = None):
    path = sc.path()
    tenant = tenant_for(path.get("tenant_id"))
    client_id = trim_did_key(path["client_id"])
    check_client_jwt(client_id)
    services().write(command("wcp.client.delete", tenant_id=tenant.id, client_id=client_id))
    return ok()


def check_client_jwt(client_id: str) -> None:
    """The relay client JWT issued by ``client_id`` (registering or unregistering it), when the setting asks for it."""
    if not services().settings.wc_push_validate_client_jwt:
        return
    try:
        verify_client_jwt(request.headers.get("Authorization"), client_id)
    except AuthError as error:
        raise fail(401, error.name, error.description, field=error.field, location="header") from None


def parse_notification(data: dict) -> tuple[str, Notification]:
    """(notification id, notification) of a send body the schema cleaned (:data:`SEND`), in any of its forms."""
    raw = data.get("raw")
    payload = raw if raw is not None else data.get("payload", data)
    if raw is not None or "blob" not in payload:
        notification = Notification(form=RAW, topic=payload["topic"], tag=payload["tag"], message=payload["message"])
        return data.get("id") or raw_message_id(notification.message), notification
    notification = Notification(form=LEGACY, topic=payload["topic"], flags=payload["flags"], blob=payload["blob"])
    if not notification.encrypted:
        try:
            decode_cleartext(notification.blob)
        except PayloadError as error:
            raise fail(400, "InvalidField", error.message, field=error.field) from None
        except RecursionError:
            raise fail(400, "InvalidField", "the cleartext blob's JSON is nested too deeply", field="payload.blob") from None
    return data["id"], notification


def check_relay_signature() -> None:
    """The relay's signature over the send's body, when the setting asks for it."""
    settings = services().settings
    if not settings.wc_push_validate_signatures:
        return
    try:
        key = relay_public_key(settings.wc_push_relay_public_key)
    except ValueError:
        raise fail(503, "RelayKeyNotConfigured", "signature checks are on but PUSH_WC_PUSH_RELAY_PUBLIC_KEY is not a valid key") from None
    try:
        verify_relay_signature(
            key, request.headers.get(SIGNATURE_HEADER), request.headers.get(TIMESTAMP_HEADER), request.get_data(cache=True),
            max_age=settings.wc_push_signature_max_age_seconds,
        )
    except AuthError as error:
        raise fail(401, error.name, error.description, field=error.field, location="header") from None


@blueprint.post("/clients/<client_id>")
@blueprint.post("/<tenant_id>/clients/<client_id>")
@operation("Send a notification to a client: 202 the first time its id reaches the client (and, delivering nothing, "
           "when no such client is registered, as the reference answers), 200 for a repeat (not delivered again); "
           "the raw form also as the relay sends it, {topic, tag, message} at the top level", path=CLIENT_PATH, body=SEND, headers=SIGNATURE_HEADERS, guard=check_relay_signature,
           responses={200: OK, 202: OK})
def send(client_id: str, tenant_id: str | None = None):
    svc = services()
    path = sc.path()
    client_id = trim_did_key(path["client_id"])
    notification_id, notification = parse_notification(sc.body())
    tenant = tenant_for(path.get("tenant_id"), read_default=False)
    # Whether the client exists, takes this form, and has had this id already: the worker decides, in one place.
    applied = svc.write(
        command(
            "wcp.notify",
            tenant_id=tenant.id,
            client_id=client_id,
            app_id=tenant.app_id,
            notification_id=notification_id,
            notification=notification.to_json(),
        )
    )
    result = (applied or {}).get("result") or {}
    outcome = result.get("outcome")
    if outcome == REPEAT:
        return ok(200)
    if outcome == RAW_ONLY:
        raise raw_only()
    if outcome == INVALID:
        raise fail(400, "InvalidField", result.get("message", "payload not deliverable"), field=result.get("field", "payload"))
    # New, or a client not (or no longer) registered: 202 either way, as the reference answers (reown-com/push-server
    # issue 84), so that the relay stops retrying a send no client will take; the worker delivered nothing for the latter.
    return ok(202)


def raw_only() -> ApiError:
    return fail(400, "RawOnlyClient", "this client was registered with always_raw: send the raw form {topic, tag, message}", field="payload")


@blueprint.route("/<tenant_id>/clients", methods=["GET", "PUT", "PATCH", "DELETE"])
@blueprint.route("/<tenant_id>/clients/<client_id>", methods=["GET", "PUT", "PATCH"])
@blueprint.route("/clients/<client_id>", methods=["GET", "PUT", "PATCH"])
@operation("Not allowed: answers 405 in this API's envelope", path=CLIENT_PATH, responses={405: FAILED})
def method_not_allowed(**_):
    raise fail(405, "MethodNotAllowed", f"{request.method} is not allowed on {request.path}")


# --- tenant management --------------------------------------------------------------------------

def require_admin() -> None:
    """Tenant management takes ``PUSH_WC_PUSH_ADMIN_TOKEN`` or the server's admin key (``PUSH_ADMIN_KEY``), as
    ``Authorization: Bearer <token>`` or ``X-Api-Key: <token>`` (as every admin route does), or the reference's
    tenant JWT (``PUSH_WC_PUSH_TENANT_JWT_SECRET``) for the one tenant it names."""
    settings = services().settings
    if not settings.wc_push_admin_token and not settings.admin_key and not settings.wc_push_tenant_jwt_secret:
        raise fail(403, "TenantManagementDisabled",
                   "tenant management is off: set PUSH_ADMIN_KEY, PUSH_WC_PUSH_ADMIN_TOKEN or PUSH_WC_PUSH_TENANT_JWT_SECRET")
    header, api_key = request.headers.get("Authorization"), request.headers.get("X-Api-Key")
    field = "Authorization" if header or not api_key else "X-Api-Key"
    if not header and not api_key:
        raise fail(401, "MissingAdminToken", "tenant management needs Authorization: Bearer <admin token> or X-Api-Key: <admin token>",
                   field=field, location="header")
    scheme, _, given = (header or "").partition(" ")
    given = (given.strip() if scheme.lower() == "bearer" else "") if header else api_key.strip()
    token = settings.wc_push_admin_token
    valid = bool(given and token) and hmac.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(token.encode()).digest())
    admin_key = bool(given) and is_admin_key(given, settings.admin_key)
    if valid or admin_key:
        g.wc_push_admin = "admin" if admin_key else "wc-push-admin-token"  # who, for the audit log (api/audit.py)
        return
    # Three dot-separated parts: a JWT (the reference takes it with or without "Bearer ").
    if header and settings.wc_push_tenant_jwt_secret and (given or scheme).count(".") == 2:
        g.wc_push_admin = f"tenant-jwt:{require_tenant_jwt(header, settings.wc_push_tenant_jwt_secret)}"
        return
    raise fail(401, "InvalidAdminToken", "the admin token is not valid", field=field, location="header")


def require_tenant_jwt(header: str, secret: str) -> str:
    """A tenant JWT manages the tenant its ``sub`` names and no other (403): the route's, or the one POST /tenants creates.

    Answers that tenant."""
    try:
        tenant = verify_tenant_jwt(header, secret)
    except AuthError as error:
        raise fail(401, error.name, error.description, field=error.field, location="header") from None
    managed = (request.view_args or {}).get("tenant_id")
    if managed is None:
        try:
            body = request.get_json(silent=True)
        except RecursionError:
            body = None  # the route's validation answers it
        managed = body.get("id") if isinstance(body, dict) and isinstance(body.get("id"), str) else None
    if managed is not None and managed != tenant:
        raise fail(403, "Forbidden", f"the tenant JWT manages tenant {tenant!r} only, not {managed[:64]!r}",
                   field="Authorization", location="header")
    return tenant


def admin_operation(summary: str, **options) -> Callable:
    """:func:`operation` of a tenant management route: the admin token is checked first."""
    return operation(summary, guard=require_admin, headers=ADMIN_HEADERS, description=ADMIN_NOTE, **options)


def tenant_url(tenant_id: str) -> str:
    return f"{request.host_url.rstrip('/')}/{tenant_id}"


@blueprint.post("/tenants")
@admin_operation("Create a tenant (again: no change); its clients are under /<id>/clients",
                 body=sc.Obj({"id": tenant_id_field(required=True, description="The tenant's id", example="acme")}),
                 responses={200: TENANT})
def create_tenant():
    tenant_id = sc.body()["id"]
    if tenant_id in RESERVED_TENANT_IDS:
        raise fail(400, "InvalidField", f"id {tenant_id!r} is reserved", field="id")
    services().write(command("wcp.tenant.create", tenant_id=tenant_id, app_id=tenant_app_id(tenant_id)))
    return ok(id=tenant_id, url=tenant_url(tenant_id))


@blueprint.get("/tenants/<tenant_id>")
@admin_operation("A tenant: its providers, APNs topic, FCM project and suspension", path=TENANT_PATH,
                 responses={200: TENANT_DETAIL})
def get_tenant(tenant_id: str):
    tenant = tenant_for(sc.path()["tenant_id"])
    app = tenant.app or {}
    apns = app.get("apns") or {}
    suspended = {provider: reason for provider, reason in (app.get("suspended") or {}).items() if reason}
    return ok(
        id=tenant.id,
        url=tenant_url(tenant.id),
        enabled_providers=enabled_providers(app),
        apns_topic=apns.get("bundle"),
        apns_type=apns.get("auth", mongo.APNS_TOKEN) if apns else None,
        apns_certificate_expires_at=apns.get("not_after"),
        fcm_project_id=(app.get("fcm") or {}).get("project_id"),
        suspended=bool(suspended),
        suspended_reason="; ".join(f"{provider}: {reason}" for provider, reason in sorted(suspended.items())) or None,
        suspended_providers=suspended,
    )


@blueprint.delete("/tenants/<tenant_id>")
@admin_operation("Delete a tenant, its credentials and clients", path=TENANT_PATH, responses={200: OK})
def delete_tenant(tenant_id: str):
    tenant = tenant_for(sc.path()["tenant_id"])
    services().write(command("wcp.tenant.delete", tenant_id=tenant.id, app_id=tenant.app_id))
    return ok()


def as_text(value: str | bytes | None, field: str) -> str | None:
    """A form field sent as a file or as text, as text without surrounding white space (None when blank)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            raise fail(400, "InvalidField", f"{field} must be text", field=field) from None
    return value.strip() or None


def set_provider(tenant: Tenant, provider: str, credentials: dict | None) -> Response:
    svc = services()
    sealed = svc.credential_keys.seal(tenant.app_id, provider, credentials)  # sealed before it crosses RabbitMQ
    svc.write(command("app.provider", app_id=tenant.app_id, provider=provider, credentials=sealed))
    return ok()


APNS_FORM = {
    "apns_topic": FormText(description="The app's bundle id (alone: changes the topic of the stored key)"),
    "apns_pkcs8_pem": sc.Binary(description="The .p8 token key (PKCS#8 PEM, EC P-256), as a file or text"),
    "apns_key_id": FormText(description="The key's id"),
    "apns_team_id": FormText(description="The team id"),
    "apns_certificate": sc.Binary(description="A .p12 certificate (file or base64 text), instead of a token key"),
    "apns_certificate_password": FormText(max_length=1024, description="The certificate's password"),
}


@blueprint.post("/tenants/<tenant_id>/apns")
@admin_operation("Set the tenant's APNs token key (apns_pkcs8_pem, apns_key_id, apns_team_id) or certificate "
                 "(apns_certificate, apns_certificate_password), and/or topic",
                 path=TENANT_PATH, form=APNS_FORM, responses={200: OK}, body_size=sc.MEDIUM_BODY)
def update_apns(tenant_id: str):
    """Token key (``apns_pkcs8_pem``, ``apns_key_id``, ``apns_team_id``), or certificate
    (``apns_certificate``: a .p12, as a file or base64, with ``apns_certificate_password``),
    and/or ``apns_topic``. New credentials of either kind replace the old ones."""
    tenant = tenant_for(sc.path()["tenant_id"])
    fields = sc.form()
    topic = fields.get("apns_topic")
    pem = as_text(fields.get("apns_pkcs8_pem"), "apns_pkcs8_pem")
    key_id = fields.get("apns_key_id")
    team_id = fields.get("apns_team_id")
    if fields.get("apns_certificate") is not None:
        if pem is not None or key_id is not None or team_id is not None:
            raise fail(
                400, "InvalidMultipartBody", "send either apns_certificate or a token key (apns_pkcs8_pem…), not both", field="apns_certificate"
            )
        return set_provider(tenant, "apns", certificate_credentials(fields, topic))
    stored = (services().find_one(mongo.APPS, {"_id": tenant.app_id}) or {}).get("apns") or {}
    if pem is None and key_id is None and team_id is None:
        if topic is None or not stored:
            raise fail(
                400,
                "InvalidMultipartBody",
                "send apns_topic with apns_pkcs8_pem, apns_key_id and apns_team_id, or apns_certificate",
                field="apns_pkcs8_pem",
            )
        return set_provider(tenant, "apns", {**stored, "bundle": topic})
    for name, value in (("apns_pkcs8_pem", pem), ("apns_key_id", key_id), ("apns_team_id", team_id)):
        if value is None:
            raise fail(400, "InvalidMultipartBody", f"{name} is required with a token key", field=name)
    topic = topic or stored.get("bundle")
    if topic is None:
        raise fail(400, "InvalidMultipartBody", "apns_topic (the app's bundle id) is required", field="apns_topic")
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise fail(400, "BadApnsCredentials", "apns_pkcs8_pem must be a .p8 (PKCS#8 PEM) private key", field="apns_pkcs8_pem") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise fail(400, "BadApnsCredentials", "apns_pkcs8_pem must be an APNs token key (EC P-256)", field="apns_pkcs8_pem")
    credentials = {
        "auth": mongo.APNS_TOKEN,
        "bundle": topic,
        "key_id": key_id,
        "team_id": team_id,
        "environment": "production",
        "private_key": pem + "\n",
    }
    return set_provider(tenant, "apns", credentials)


def certificate_credentials(fields: dict[str, str | bytes], topic: str | None) -> dict:
    """The stored form of an uploaded .p12: certificate and key PEMs (the key hidden as a token key is)."""
    password = fields.get("apns_certificate_password")
    if isinstance(password, bytes):
        try:
            password = password.decode()
        except UnicodeDecodeError:
            raise fail(400, "InvalidField", "apns_certificate_password must be text", field="apns_certificate_password") from None
    try:
        certificate = parse_p12(decode_upload(fields["apns_certificate"]), password or None)
    except CertificateError as error:
        raise fail(400, "BadApnsCredentials", error.description, field=error.field) from None
    topic = topic or certificate.topic
    if topic is None:
        raise fail(400, "InvalidMultipartBody", "apns_topic is required: the certificate's subject names no UID (bundle id)", field="apns_topic")
    return {
        "auth": mongo.APNS_CERTIFICATE,
        "bundle": topic,
        "environment": "production",
        "certificate": certificate.certificate_pem,
        "private_key": certificate.private_key_pem,
        "not_after": certificate.not_after.isoformat(),
    }


@blueprint.post("/tenants/<tenant_id>/fcm_v1")
@admin_operation("Set the tenant's FCM HTTP v1 service account, proved by fetching an access token from its token_uri "
                 "(400 BadFcmV1Credentials when none comes)", path=TENANT_PATH,
                 form={"credentials": sc.Binary(required=True, description="The service account JSON, as a file or text")},
                 responses={200: OK}, body_size=sc.MEDIUM_BODY)
def update_fcm_v1(tenant_id: str):
    """``credentials``: the service account JSON (text or file)."""
    tenant = tenant_for(sc.path()["tenant_id"])
    raw = as_text(sc.form()["credentials"], "credentials")
    if raw is None:
        raise fail(400, "InvalidMultipartBody", "credentials (the service account JSON) is required", field="credentials")
    try:
        account = json.loads(raw)
    except (ValueError, RecursionError):
        raise fail(400, "BadFcmV1Credentials", "credentials must be a service account JSON", field="credentials") from None
    if not isinstance(account, dict):
        raise fail(400, "BadFcmV1Credentials", "credentials must be a service account JSON object", field="credentials")
    for key in ("client_email", "private_key", "token_uri", "project_id"):
        if not isinstance(account.get(key), str) or not account[key]:
            raise fail(400, "BadFcmV1Credentials", f"the service account lacks '{key}'", field="credentials")
    try:
        load_pem_private_key(account["private_key"].encode(), password=None)
    except (ValueError, TypeError):
        raise fail(400, "BadFcmV1Credentials", "the service account's private_key is not a PEM key", field="credentials") from None
    try:
        services().outbound.check(account["token_uri"], at_intake=True)
    except OutboundRefused as refused:
        raise fail(400, "BadFcmV1Credentials", f"the service account's token_uri is not allowed: {refused}", field="credentials") from None
    try:
        prove_service_account(account, services().settings, outbound=services().outbound)
    except ServiceAccountRefused as refused:
        raise fail(400, "BadFcmV1Credentials", f"no access token from the service account's token_uri: {refused}",
                   field="credentials") from None
    return set_provider(tenant, "fcm", {"project_id": account["project_id"], "service_account": account})


@blueprint.post("/tenants/<tenant_id>/fcm")
@admin_operation("Legacy FCM server key: not supported, always refused (use /fcm_v1)", path=TENANT_PATH,
                 form={"api_key": FormText(max_length=None, description="The legacy server key")}, responses={400: FAILED},
                 body_size=sc.MEDIUM_BODY)
def update_fcm_legacy(tenant_id: str):
    tenant_for(sc.path()["tenant_id"])
    raise fail(400, "FcmLegacyUnsupported", "the legacy FCM API (server keys) is gone: upload a service account to /fcm_v1", field="api_key")


@blueprint.delete("/tenants/<tenant_id>/apns")
@admin_operation("Remove the tenant's APNs credentials", path=TENANT_PATH, responses={200: OK})
def delete_apns(tenant_id: str):
    return set_provider(tenant_for(sc.path()["tenant_id"]), "apns", None)


@blueprint.route("/tenants/<tenant_id>/fcm_v1", methods=["DELETE"])
@blueprint.route("/tenants/<tenant_id>/fcm", methods=["DELETE"])
@admin_operation("Remove the tenant's FCM credentials", path=TENANT_PATH, responses={200: OK})
def delete_fcm(tenant_id: str):
    return set_provider(tenant_for(sc.path()["tenant_id"]), "fcm", None)
