"""Request limits: body size per route, registration rate limits, provider payload size.

- **Body size per route**, the class each route declares in its ``@operation(body_size=...)``
  (api/schema.py): ``large`` (the batch send, campaign user and dead-letter requeue routes) takes
  ``PUSH_API_MAX_BODY_BYTES`` (16 MB), ``medium`` (credential uploads, inbox messages)
  ``PUSH_API_MAX_MEDIUM_BODY_BYTES`` (512 KB), ``small`` (every other route)
  ``PUSH_API_MAX_SMALL_BODY_BYTES`` (128 KB). A larger declared
  ``Content-Length`` is a 413 before anything is read; a chunked body is read
  by the ASGI app (:mod:`api.asgi`) to at most one byte past the route's limit
  (:func:`body_limit_of`) and reaches Flask with that length, so it is the
  same 413. A body that did not arrive within ``PUSH_API_BODY_TIMEOUT_SECONDS``
  is a 408.
- **Rate limits on registration routes** (``@operation(rate_limit="registration")``: PowerAuth
  device create, WalletConnect client registration): a token bucket per client IP and one per API key, in
  each API process (granian worker; so a deployment's effective limit is the
  setting times its API processes). Over the limit: 429 with ``Retry-After``.
  No shared counter: a MongoDB counter would add a write to every
  registration; the per-process bucket costs a dict look-up.
- **Provider payload size**: a send's body is mapped to the real APNs payload
  and FCM message (shared/payload.py) and refused with a 400 naming the body
  field when either is over the provider's 4 KB, before anything is enqueued.
"""
from __future__ import annotations

import math
import threading
import time

import orjson
from flask import Flask, current_app, request
from werkzeug.exceptions import HTTPException

from api import auth
from api import schema as sc
from api.errors import ApiError
from shared.payload import APNS_COLLAPSE_ID_MAX_BYTES, HMS_MAX_TTL_SECONDS, Body, HmsTemplate, apns_push, fcm_message, hms_message
from shared.settings import Settings

#: Most buckets one limiter keeps; idle (full) buckets are dropped beyond it.
MAX_BUCKETS = 100_000
#: WSGI environ key the ASGI app sets when a request's body did not arrive in time.
BODY_TIMED_OUT = "push.body_timed_out"


class TokenBuckets:
    """Token buckets by key: ``rate`` tokens a second, at most ``burst``; thread-safe."""

    def __init__(self, rate: float, burst: int, *, clock=time.monotonic):
        self.rate = rate
        self.burst = max(burst, 1)
        self.clock = clock
        self.lock = threading.Lock()
        self.buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """Take one token: 0.0 when allowed, else the seconds until one is available."""
        now = self.clock()
        with self.lock:
            tokens, last = self.buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self.buckets[key] = (tokens - 1.0, now)
                if len(self.buckets) > MAX_BUCKETS:
                    self._drop_full(now)
                return 0.0
            self.buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def _drop_full(self, now: float) -> None:
        full = [k for k, (tokens, last) in self.buckets.items() if tokens + (now - last) * self.rate >= self.burst]
        for k in full:
            del self.buckets[k]


def operation_of(app: Flask, endpoint: str | None) -> sc.Operation | None:
    """The :class:`~api.schema.Operation` the view of ``endpoint`` declares (None: no route, or none declared)."""
    view = app.view_functions.get(endpoint) if endpoint is not None else None
    return getattr(view, "openapi", None)


def body_limit(settings: Settings, spec: sc.Operation | None) -> int:
    """The body limit of a route's declared body-size class (a route without a declaration takes small bodies)."""
    size = spec.body_size if spec is not None else sc.SMALL_BODY
    if size == sc.LARGE_BODY:
        return settings.api_max_body_bytes
    if size == sc.MEDIUM_BODY:
        return settings.api_max_medium_body_bytes
    return min(settings.api_max_small_body_bytes, settings.api_max_body_bytes)


def body_limit_of(app: Flask, method: str, path: str) -> int:
    """The body limit of the route ``method path`` would reach (the smallest for an unknown route), before Flask runs."""
    adapter = app.extensions.get("push.route_adapter")
    if adapter is None:
        adapter = app.extensions["push.route_adapter"] = app.url_map.bind("")
    try:
        endpoint, _ = adapter.match(path, method)
    except HTTPException:  # not found, method not allowed, a redirect: none takes a body
        endpoint = None
    return body_limit(app.extensions["push"].settings, operation_of(app, endpoint))


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is larger than {limit} bytes, the limit of this route", field="body", code="ERROR_HTTP_413")


def check_body_size(settings: Settings, spec: sc.Operation | None) -> None:
    limit = body_limit(settings, spec)
    request.max_content_length = limit
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)


def _limiters(settings: Settings) -> tuple[TokenBuckets | None, TokenBuckets | None]:
    limiters = current_app.extensions.get("push.rate_limiters")
    if limiters is None:
        by_ip = TokenBuckets(settings.rate_limit_ip_per_second, settings.rate_limit_ip_burst) if settings.rate_limit_ip_per_second > 0 else None
        by_key = TokenBuckets(settings.rate_limit_key_per_second, settings.rate_limit_key_burst) if settings.rate_limit_key_per_second > 0 else None
        limiters = current_app.extensions["push.rate_limiters"] = (by_ip, by_key)
    return limiters


def too_many(wait: float, what: str) -> ApiError:
    return ApiError(
        429,
        f"too many registrations from this {what}, try again later",
        code="ERROR_TOO_MANY_REQUESTS",
        retry_after=max(1, math.ceil(wait)),
    )


def check_rate(settings: Settings, limiter: TokenBuckets | None, key: str | None, what: str) -> None:
    if limiter is None or key is None:
        return
    wait = limiter.take(key)
    if wait > 0:
        raise too_many(wait, what)


def before_request() -> None:
    """The app's before_request hook: body size, per-IP rate, auth, per-key rate (unknown routes pass to their 404)."""
    if request.environ.get(BODY_TIMED_OUT):
        raise ApiError(408, "the request body did not arrive in time", field="body", code="ERROR_HTTP_408")
    if request.url_rule is None:
        return
    settings = current_app.extensions["push"].settings
    spec = operation_of(current_app, request.endpoint)
    check_body_size(settings, spec)
    registration = spec is not None and spec.rate_limit == sc.REGISTRATION and request.method == "POST"
    by_ip, by_key = _limiters(settings) if registration else (None, None)
    check_rate(settings, by_ip, request.remote_addr or "unknown", "address")
    principal = auth.check_request()
    if principal is not None and principal.key_id not in (None, "auth-off"):
        check_rate(settings, by_key, principal.key_id, "API key")


# --- payload size -------------------------------------------------------------------------------

def check_payload(settings: Settings, body: Body, field: str, *, silent: bool, high_priority: bool) -> None:
    """Refuse (400 naming ``field``) a body whose APNs payload, FCM or HMS message is over the provider's limit."""
    apns = len(apns_push(body, silent=silent, high_priority=high_priority).payload)
    if apns > settings.max_apns_payload_bytes:
        raise ApiError(
            400,
            f"{field}: the APNs payload would be {apns} bytes, more than the {settings.max_apns_payload_bytes} APNs accepts",
            field=field,
            code="ERROR_PAYLOAD_TOO_LARGE",
        )
    # The worker adds the notification's display_id as its tag: count the longest one.
    display = "0" * APNS_COLLAPSE_ID_MAX_BYTES
    fcm = len(orjson.dumps({"message": fcm_message(body, silent=silent, high_priority=high_priority, display=display)}))
    if fcm > settings.max_fcm_payload_bytes:
        raise ApiError(
            400,
            f"{field}: the FCM message would be {fcm} bytes, more than the {settings.max_fcm_payload_bytes} FCM accepts",
            field=field,
            code="ERROR_PAYLOAD_TOO_LARGE",
        )
    # HMS counts its message without the token, with the longest TTL the worker sets.
    hms = HmsTemplate(hms_message(body, silent=silent, high_priority=high_priority, display=display),
                      ttl_seconds=HMS_MAX_TTL_SECONDS).message_bytes
    if hms > settings.max_hms_payload_bytes:
        raise ApiError(
            400,
            f"{field}: the HMS message would be {hms} bytes, more than the {settings.max_hms_payload_bytes} HMS accepts",
            field=field,
            code="ERROR_PAYLOAD_TOO_LARGE",
        )
