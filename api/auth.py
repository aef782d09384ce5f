"""Authentication with API keys: per-app keys for the PowerAuth sending, device, campaign and inbox APIs; an admin key for ``/admin/…``.

A key is ``pk_<key id>_<secret>`` (the secret: 32 random bytes, URL-safe
base64). MongoDB holds only its SHA-256 digest (``api_keys``: ``_id`` the key
id, ``app_id``, ``hash``, ``revoked_at``); the digest of a presented key is
compared with :func:`hmac.compare_digest`. The admin key is the setting
``PUSH_ADMIN_KEY``, also compared by digest. Keys are presented as
``Authorization: Bearer <key>`` or ``X-Api-Key: <key>``.

Keys are created, listed and revoked by the admin routes of :mod:`api.api_keys`.

With ``PUSH_AUTH_ENABLED`` off every request acts with admin rights (the demo
of ``make run`` and the test stack); the WalletConnect tenant management keeps
its own token check either way (api/wc_push.py), which accepts the admin key
as well as ``PUSH_WC_PUSH_ADMIN_TOKEN``.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from flask import current_app, g, request

from api.context import services
from api.errors import ApiError
from shared import db as mongo

KEY_PREFIX = "pk"
#: Paths that need an app's key (or the admin key), and paths that need the admin key. Every other path
#: (``/metrics``, the WalletConnect families with their own schemes) and PUBLIC_PATHS need none.
APP_PREFIXES = ("/push/", "/inbox/")
ADMIN_PREFIXES = ("/admin/",)
#: The dashboard page holds no data (its calls are admin routes).
PUBLIC_PATHS = frozenset({"/push/service/status", "/admin/dashboard"})
#: Most keys one cache holds; beyond it the cache starts over.
CACHE_MAX_ENTRIES = 10_000


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh (key id, key)."""
    key_id = secrets.token_hex(8)
    return key_id, f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(key: str) -> str | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not all(c in "0123456789abcdef" for c in parts[1]):
        return None
    return parts[1]


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: ``admin`` (the admin key, or auth off) or ``app`` (an app's key)."""

    kind: str
    app_id: str | None = None
    key_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"


OPEN = Principal("admin", key_id="auth-off")


class KeyCache:
    """Key documents by key id, each reused for ``ttl`` seconds (only keys that exist are kept)."""

    def __init__(self, ttl: float):
        self.ttl = ttl
        self.lock = threading.Lock()
        self.entries: dict[str, tuple[float, dict]] = {}

    def get(self, key_id: str, load):
        now = time.monotonic()
        with self.lock:
            hit = self.entries.get(key_id)
        if hit and hit[0] > now:
            return hit[1]
        doc = load(key_id)
        if doc is not None and self.ttl > 0:
            with self.lock:
                if len(self.entries) >= CACHE_MAX_ENTRIES:
                    self.entries.clear()
                self.entries[key_id] = (now + self.ttl, doc)
        return doc

    def forget(self, key_id: str) -> None:
        with self.lock:
            self.entries.pop(key_id, None)


def key_cache() -> KeyCache:
    """The process's :class:`KeyCache` (made on first use)."""
    cache = current_app.extensions.get("push.auth_cache")
    if cache is None:
        cache = current_app.extensions["push.auth_cache"] = KeyCache(services().settings.auth_cache_seconds)
    return cache


def presented_key() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    value = request.headers.get("X-Api-Key", "").strip()
    return value or None


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, field="Authorization", location="header", code="ERROR_UNAUTHORIZED")


def forbidden(message: str) -> ApiError:
    return ApiError(403, message, field="Authorization", location="header", code="ERROR_FORBIDDEN")


def is_admin_key(key: str, admin_key: str) -> bool:
    return bool(admin_key) and hmac.compare_digest(digest(key), digest(admin_key))


def authenticate(key: str) -> Principal | None:
    """The principal of a presented key, or None if it is not a valid key."""
    settings = services().settings
    if is_admin_key(key, settings.admin_key):
        return Principal("admin", key_id="admin")
    key_id = key_id_of(key)
    if key_id is None:
        return None
    svc = services()
    doc = key_cache().get(key_id, lambda kid: svc.find_one(mongo.API_KEYS, {"_id": kid}))
    if not doc or doc.get("revoked_at") or not doc.get("hash"):
        return None
    if not hmac.compare_digest(digest(key).encode(), str(doc["hash"]).encode()):
        return None
    return Principal("app", app_id=doc["app_id"], key_id=key_id)


def route_class(path: str) -> str | None:
    """``admin``, ``app`` or None (no key needed) for a path."""
    if path in PUBLIC_PATHS:
        return None
    if path.startswith(ADMIN_PREFIXES):
        return "admin"
    if path.startswith(APP_PREFIXES):
        return "app"
    return None


def check_request() -> Principal:
    """Authenticate the request (a before_request step); sets and answers ``g.principal``."""
    settings = services().settings
    needed = route_class(request.path)
    if not settings.auth_enabled or needed is None:
        g.principal = OPEN if not settings.auth_enabled else None
        if g.principal is None:
            key = presented_key()
            g.principal = authenticate(key) if key else None
        return g.principal
    key = presented_key()
    if key is None:
        raise unauthorized("an API key is required (Authorization: Bearer <key> or X-Api-Key: <key>)")
    principal = authenticate(key)
    if principal is None:
        raise unauthorized("the API key is not valid")
    g.principal = principal  # set before the refusal below, so the audit log names who was refused
    if needed == "admin" and not principal.is_admin:
        raise forbidden("this route needs the admin key")
    return principal


def current() -> Principal:
    return getattr(g, "principal", None) or OPEN


def require_app(app_id: str, field: str = "requestObject.appId") -> None:
    """The request's key may act for ``app_id`` (the admin key, or auth off, may act for any app)."""
    if not services().settings.auth_enabled:
        return
    principal = getattr(g, "principal", None)
    if principal is None:
        raise unauthorized("an API key is required (Authorization: Bearer <key> or X-Api-Key: <key>)")
    if not principal.is_admin and principal.app_id != app_id:
        raise forbidden(f"the API key is not valid for application {app_id} ({field})")


def require_admin() -> None:
    if services().settings.auth_enabled and not current().is_admin:
        raise forbidden("this route needs the admin key")
