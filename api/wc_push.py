"""The WalletConnect push server API (seed 001; reference: WalletConnect/push-server).

Routes, each also under ``/<tenant_id>/…`` for a tenant (without it: the default tenant):

- ``GET /health``: ``OK, push-server v<version>`` (``?format=json``: live checks too);
- ``POST /clients`` registers ``{client_id, type, token, always_raw?}``; ``DELETE /clients/<id>`` unregisters;
- ``POST /clients/<id>`` sends ``{id, payload: {topic, flags, blob}}`` or the raw form
  ``{id?, raw: {topic, tag, message}}`` (also accepted as ``payload``): 202 the first
  time an id reaches a client, 200 for a repeat (nothing is delivered);
- ``POST /tenants``, ``GET|DELETE /tenants/<id>``, ``POST|DELETE /tenants/<id>/apns``
  and ``/tenants/<id>/fcm_v1`` (multipart, as the reference): admin token required.

Answers: ``{"status": "OK"}``; failures ``{"status": "FAILED", "errors": [{name,
description}], "fields": [{field, description, location}]}`` (``fields`` when an
input is at fault). The deduplication is the worker's: the API publishes the
notification and answers what the worker decided.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import platform as runtime
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import HTTPException

from api.apns_certificates import CertificateError, decode_upload, parse_p12
from api.auth import is_admin_key
from api.errors import ApiError
from api.powerauth import VERSION
from api.services import Services
from api.wc_push_auth import AuthError, relay_public_key, trim_did_key, verify_client_jwt, verify_relay_signature
from shared import db as collections
from shared.commands import command
from shared.wc_payload import LEGACY, RAW, Notification, PayloadError, decode_cleartext, raw_message_id
from shared.wc_push import CLIENT_NOT_FOUND, CLIENT_TYPES, INVALID, RAW_ONLY, REPEAT, tenant_app_id

blueprint = Blueprint("wc_push", __name__)

#: Paths (prefixes) whose errors are rendered in this family's format, whoever raises them.
PATH_PREFIXES = ("/health", "/clients", "/tenants")
#: The tenant of the routes without a tenant id.
DEFAULT_TENANT = "default"
#: Tenant ids: letters, digits, '.', '_' and '-'; these are taken by routes.
TENANT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
RESERVED_TENANT_IDS = {"health", "clients", "tenants", "session", "call-status", "push", "admin", "metrics"}
MAX_ID_LENGTH = 256
MAX_TOKEN_LENGTH = 4096
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


def services() -> Services:
    return current_app.extensions["push"]


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


@blueprint.errorhandler(ApiError)
def api_error(error: ApiError) -> Response:
    return render_error(error)


@blueprint.errorhandler(HTTPException)
def http_error(error: HTTPException) -> Response:
    return render_error(ApiError(error.code or 500, error.description or error.name, code=f"ERROR_HTTP_{error.code}"))


@blueprint.errorhandler(Exception)
def unexpected(error: Exception) -> Response:
    current_app.logger.exception("unexpected error on %s %s", request.method, request.path)
    return render_error(ApiError(500, "internal error", code="ERROR_INTERNAL"))


# --- inputs -------------------------------------------------------------------------------------

def json_body(raw: bytes | None = None) -> dict:
    raw = request.get_data(cache=True) if raw is None else raw
    try:
        data = json.loads(raw)
    except ValueError:
        raise fail(400, "InvalidBody", "the body must be a JSON object", field="body") from None
    if not isinstance(data, dict):
        raise fail(400, "InvalidBody", "the body must be a JSON object", field="body")
    return data


def text(data: dict, key: str, *, prefix: str = "", max_length: int = MAX_ID_LENGTH, spaces: bool = True) -> str:
    """A required non-empty string field."""
    value = data.get(key)
    field = prefix + key
    if value is None:
        raise fail(400, "EmptyField", f"{field} is required", field=field)
    if not isinstance(value, str):
        raise fail(400, "InvalidField", f"{field} must be a string", field=field)
    if not value.strip():
        raise fail(400, "EmptyField", f"{field} must not be empty", field=field)
    if len(value) > max_length:
        raise fail(400, "InvalidField", f"{field} must be at most {max_length} characters", field=field)
    if not spaces and any(c.isspace() for c in value):
        raise fail(400, "InvalidField", f"{field} must not contain white space", field=field)
    return value


def whole_number(data: dict, key: str, *, prefix: str = "") -> int:
    value = data.get(key)
    field = prefix + key
    if value is None:
        raise fail(400, "EmptyField", f"{field} is required", field=field)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**32:
        raise fail(400, "InvalidField", f"{field} must be an integer from 0 to 2^32-1", field=field)
    return value


def path_client_id(client_id: str) -> str:
    client_id = trim_did_key(client_id)
    if not client_id or len(client_id) > MAX_ID_LENGTH or any(c.isspace() for c in client_id):
        raise fail(400, "InvalidField", "the client id must be 1 to 256 characters without white space", field="client_id", location="path")
    return client_id


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
        app = svc.find_one(collections.APPS, {"_id": app_id}, collections.HIDDEN_CREDENTIALS)
        return Tenant(DEFAULT_TENANT, app_id, None if app and app.get("deleted") else app)
    if not TENANT_ID.match(tenant_id):
        raise fail(404, "TenantNotFound", f"tenant not found: {tenant_id}", field="tenant_id", location="path")
    app_id = tenant_app_id(tenant_id)
    app = svc.find_one(collections.APPS, {"_id": app_id}, collections.HIDDEN_CREDENTIALS)
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
def health():
    if request.args.get("format") != "json":
        return Response(f"OK, push-server v{VERSION}", mimetype="text/plain")
    svc = services()
    rabbitmq, mongodb = svc.check_broker(), svc.check_database()
    settings = svc.settings
    body = {
        "status": "OK" if rabbitmq and mongodb else "FAILED",
        "version": VERSION,
        "rabbitmq": "UP" if rabbitmq else "DOWN",
        "mongodb": "UP" if mongodb else "DOWN",
        "flags": {
            "multitenant": True,
            "tenant_management": bool(settings.wc_push_admin_token or settings.admin_key),
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
def register(tenant_id: str | None = None):
    data = json_body()
    client_id = trim_did_key(text(data, "client_id", spaces=False))
    if not client_id:
        raise fail(400, "EmptyField", "client_id must not be empty", field="client_id")
    kind = data.get("type")
    if not isinstance(kind, str) or kind.lower() not in CLIENT_TYPES:
        raise fail(
            400,
            "ProviderNotFound",
            f"type must be one of {', '.join(sorted(CLIENT_TYPES))}" + (f", not {kind!r}" if isinstance(kind, str) else ""),
            field="type",
        )
    kind = kind.lower()
    token = text(data, "token", max_length=MAX_TOKEN_LENGTH, spaces=False)
    if kind.startswith("apns") and not all(c in "0123456789abcdefABCDEF" for c in token):
        raise fail(400, "InvalidField", "an APNs device token is hexadecimal", field="token")
    always_raw = data.get("always_raw", False)
    if not isinstance(always_raw, bool):
        raise fail(400, "InvalidField", "always_raw must be true or false", field="always_raw")
    tenant = tenant_for(tenant_id)
    provider = CLIENT_TYPES[kind][0]
    if provider and tenant.app is not None and not tenant.app.get(provider):
        raise fail(400, "ProviderNotAvailable", f"the tenant has no {provider} credentials for type {kind}", field="type")
    svc = services()
    if svc.settings.wc_push_validate_client_jwt:
        try:
            verify_client_jwt(request.headers.get("Authorization"), client_id)
        except AuthError as error:
            raise fail(401, error.name, error.description, field=error.field, location="header") from None
    svc.write(
        command(
            "wcp.client.register", tenant_id=tenant.id, client_id=client_id, type=kind, token=token, always_raw=always_raw
        )
    )
    return ok()


@blueprint.delete("/clients/<client_id>")
@blueprint.delete("/<tenant_id>/clients/<client_id>")
def unregister(client_id: str, tenant_id: str | None = None):
    tenant = tenant_for(tenant_id)
    services().write(command("wcp.client.delete", tenant_id=tenant.id, client_id=path_client_id(client_id)))
    return ok()


def parse_notification(data: dict) -> tuple[str, Notification]:
    """(notification id, notification) of a send body, in either form."""
    if "raw" in data and data["raw"] is not None:
        payload, prefix = data["raw"], "raw."
    else:
        payload, prefix = data.get("payload"), "payload."
    if not isinstance(payload, dict):
        raise fail(400, "InvalidField", "payload must be an object {topic, flags, blob} (or raw {topic, tag, message})", field="payload")
    topic = text(payload, "topic", prefix=prefix)
    if prefix == "raw." or ("message" in payload and "blob" not in payload):
        notification = Notification(
            form=RAW,
            topic=topic,
            tag=whole_number(payload, "tag", prefix=prefix),
            message=text(payload, "message", prefix=prefix, max_length=MAX_BLOB_LENGTH),
        )
        notification_id = data.get("id")
        if notification_id is None:
            notification_id = raw_message_id(notification.message)
    else:
        notification = Notification(
            form=LEGACY,
            topic=topic,
            flags=whole_number(payload, "flags", prefix=prefix),
            blob=text(payload, "blob", prefix=prefix, max_length=MAX_BLOB_LENGTH),
        )
        if not notification.encrypted:
            try:
                decode_cleartext(notification.blob)
            except PayloadError as error:
                raise fail(400, "InvalidField", error.message, field=error.field) from None
        notification_id = data.get("id")
    if not isinstance(notification_id, str) or not notification_id.strip() or len(notification_id) > MAX_ID_LENGTH:
        raise fail(400, "InvalidField", f"id must be a non-empty string of at most {MAX_ID_LENGTH} characters", field="id")
    return notification_id, notification


@blueprint.post("/clients/<client_id>")
@blueprint.post("/<tenant_id>/clients/<client_id>")
def send(client_id: str, tenant_id: str | None = None):
    svc = services()
    raw = request.get_data(cache=True)
    if svc.settings.wc_push_validate_signatures:
        check_relay_signature(raw)
    client_id = path_client_id(client_id)
    notification_id, notification = parse_notification(json_body(raw))
    tenant = tenant_for(tenant_id, read_default=False)
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
    if outcome == CLIENT_NOT_FOUND:
        raise client_not_found(client_id)
    if outcome == RAW_ONLY:
        raise raw_only()
    if outcome == INVALID:
        raise fail(400, "InvalidField", result.get("message", "payload not deliverable"), field=result.get("field", "payload"))
    return ok(202)


def client_not_found(client_id: str) -> ApiError:
    return fail(404, "ClientNotFound", f"client not found: {client_id}", field="client_id", location="path")


def raw_only() -> ApiError:
    return fail(400, "RawOnlyClient", "this client was registered with always_raw: send the raw form {topic, tag, message}", field="payload")


def check_relay_signature(body: bytes) -> None:
    settings = services().settings
    try:
        key = relay_public_key(settings.wc_push_relay_public_key)
    except ValueError:
        raise fail(503, "RelayKeyNotConfigured", "signature checks are on but PUSH_WC_PUSH_RELAY_PUBLIC_KEY is not a valid key") from None
    try:
        verify_relay_signature(
            key, request.headers.get("X-Ed25519-Signature"), request.headers.get("X-Ed25519-Timestamp"), body
        )
    except AuthError as error:
        raise fail(401, error.name, error.description, field=error.field, location="header") from None


@blueprint.route("/<tenant_id>/clients", methods=["GET", "PUT", "PATCH", "DELETE"])
@blueprint.route("/<tenant_id>/clients/<client_id>", methods=["GET", "PUT", "PATCH"])
@blueprint.route("/clients/<client_id>", methods=["GET", "PUT", "PATCH"])
def method_not_allowed(**_):
    raise fail(405, "MethodNotAllowed", f"{request.method} is not allowed on {request.path}")


# --- tenant management --------------------------------------------------------------------------

def require_admin() -> None:
    """Tenant management takes ``PUSH_WC_PUSH_ADMIN_TOKEN`` or the server's admin key (``PUSH_ADMIN_KEY``)."""
    settings = services().settings
    if not settings.wc_push_admin_token and not settings.admin_key:
        raise fail(403, "TenantManagementDisabled", "tenant management is off: set PUSH_ADMIN_KEY or PUSH_WC_PUSH_ADMIN_TOKEN")
    header = request.headers.get("Authorization")
    if not header:
        raise fail(401, "MissingAdminToken", "tenant management needs Authorization: Bearer <admin token>", field="Authorization", location="header")
    scheme, _, given = header.partition(" ")
    given = given.strip()
    token = settings.wc_push_admin_token
    valid = bool(token) and hmac.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(token.encode()).digest())
    if scheme.lower() != "bearer" or not (valid or is_admin_key(given, settings.admin_key)):
        raise fail(401, "InvalidAdminToken", "the admin token is not valid", field="Authorization", location="header")


def tenant_url(tenant_id: str) -> str:
    return f"{request.host_url.rstrip('/')}/{tenant_id}"


@blueprint.post("/tenants")
def create_tenant():
    require_admin()
    data = json_body()
    tenant_id = text(data, "id", max_length=64)
    if not TENANT_ID.match(tenant_id):
        raise fail(400, "InvalidField", "id may contain letters, digits, '.', '_' and '-' only (at most 64)", field="id")
    if tenant_id in RESERVED_TENANT_IDS:
        raise fail(400, "InvalidField", f"id {tenant_id!r} is reserved", field="id")
    services().write(command("wcp.tenant.create", tenant_id=tenant_id, app_id=tenant_app_id(tenant_id)))
    return ok(id=tenant_id, url=tenant_url(tenant_id))


@blueprint.get("/tenants/<tenant_id>")
def get_tenant(tenant_id: str):
    require_admin()
    tenant = tenant_for(tenant_id)
    app = tenant.app or {}
    apns = app.get("apns") or {}
    suspended = {provider: reason for provider, reason in (app.get("suspended") or {}).items() if reason}
    return ok(
        id=tenant.id,
        url=tenant_url(tenant.id),
        enabled_providers=enabled_providers(app),
        apns_topic=apns.get("bundle"),
        apns_type=apns.get("auth", collections.APNS_TOKEN) if apns else None,
        apns_certificate_expires_at=apns.get("not_after"),
        fcm_project_id=(app.get("fcm") or {}).get("project_id"),
        suspended=bool(suspended),
        suspended_reason="; ".join(f"{provider}: {reason}" for provider, reason in sorted(suspended.items())) or None,
        suspended_providers=suspended,
    )


@blueprint.delete("/tenants/<tenant_id>")
def delete_tenant(tenant_id: str):
    require_admin()
    tenant = tenant_for(tenant_id)
    services().write(command("wcp.tenant.delete", tenant_id=tenant.id, app_id=tenant.app_id))
    return ok()


def form_fields() -> dict[str, str | bytes]:
    """Multipart (or urlencoded, or JSON) fields by lower-case name; files as bytes."""
    fields: dict[str, str | bytes] = {}
    if request.mimetype == "application/json":
        for key, value in json_body().items():
            if isinstance(value, str):
                fields[key.lower()] = value
        return fields
    for key, value in request.form.items():
        fields[key.lower()] = value
    for key, upload in request.files.items():
        fields[key.lower()] = upload.read()
    return fields


def as_text(value: str | bytes | None, field: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            raise fail(400, "InvalidField", f"{field} must be text", field=field) from None
    return value.strip() or None


def set_provider(tenant: Tenant, provider: str, credentials: dict | None) -> Response:
    services().write(command("app.provider", app_id=tenant.app_id, provider=provider, credentials=credentials))
    return ok()


@blueprint.post("/tenants/<tenant_id>/apns")
def update_apns(tenant_id: str):
    """Token key (``apns_pkcs8_pem``, ``apns_key_id``, ``apns_team_id``), or certificate
    (``apns_certificate``: a .p12, as a file or base64, with ``apns_certificate_password``),
    and/or ``apns_topic``. New credentials of either kind replace the old ones."""
    require_admin()
    tenant = tenant_for(tenant_id)
    fields = form_fields()
    topic = as_text(fields.get("apns_topic"), "apns_topic")
    pem = as_text(fields.get("apns_pkcs8_pem"), "apns_pkcs8_pem")
    key_id = as_text(fields.get("apns_key_id"), "apns_key_id")
    team_id = as_text(fields.get("apns_team_id"), "apns_team_id")
    if fields.get("apns_certificate") is not None:
        if pem is not None or key_id is not None or team_id is not None:
            raise fail(
                400, "InvalidMultipartBody", "send either apns_certificate or a token key (apns_pkcs8_pem…), not both", field="apns_certificate"
            )
        return set_provider(tenant, "apns", certificate_credentials(fields, topic))
    stored = (services().find_one(collections.APPS, {"_id": tenant.app_id}) or {}).get("apns") or {}
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
        "auth": collections.APNS_TOKEN,
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
        "auth": collections.APNS_CERTIFICATE,
        "bundle": topic,
        "environment": "production",
        "certificate": certificate.certificate_pem,
        "private_key": certificate.private_key_pem,
        "not_after": certificate.not_after.isoformat(),
    }


@blueprint.post("/tenants/<tenant_id>/fcm_v1")
def update_fcm_v1(tenant_id: str):
    """``credentials``: the service account JSON (text or file)."""
    require_admin()
    tenant = tenant_for(tenant_id)
    raw = as_text(form_fields().get("credentials"), "credentials")
    if raw is None:
        raise fail(400, "InvalidMultipartBody", "credentials (the service account JSON) is required", field="credentials")
    try:
        account = json.loads(raw)
    except ValueError:
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
    return set_provider(tenant, "fcm", {"project_id": account["project_id"], "service_account": account})


@blueprint.post("/tenants/<tenant_id>/fcm")
def update_fcm_legacy(tenant_id: str):
    require_admin()
    tenant_for(tenant_id)
    raise fail(400, "FcmLegacyUnsupported", "the legacy FCM API (server keys) is gone: upload a service account to /fcm_v1", field="api_key")


@blueprint.delete("/tenants/<tenant_id>/apns")
def delete_apns(tenant_id: str):
    require_admin()
    return set_provider(tenant_for(tenant_id), "apns", None)


@blueprint.route("/tenants/<tenant_id>/fcm_v1", methods=["DELETE"])
@blueprint.route("/tenants/<tenant_id>/fcm", methods=["DELETE"])
def delete_fcm(tenant_id: str):
    require_admin()
    return set_provider(tenant_for(tenant_id), "fcm", None)

