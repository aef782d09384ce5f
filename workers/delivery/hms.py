"""HMS (Huawei Push Kit) client: an OAuth 2.0 client-credentials token, pooled HTTP/2 sends.

The access token comes from Huawei's token endpoint (``PUSH_HMS_TOKEN_URL``,
``grant_type=client_credentials`` with the app's client id and secret), is
requested through the outbound check (shared/outbound.py: the endpoint must be
public or an allowed host:port; a refused one is a credentials failure, as an
endpoint that refuses the client is), is cached until
:data:`TOKEN_EXPIRY_MARGIN_SECONDS` before its ``expires_in`` runs out, and is
fetched by one caller at a time. A 401 (``80200003`` token expired, or
``80200001``) drops the cached token and retries the request once.

Sends are ``POST /v2/<project id>/messages:send`` over the same HTTP/2 pool as
APNs and FCM (workers/delivery/http2.py), one token per request, so each answer
is that device's outcome (workers/delivery/outcomes.py ``classify_hms``).
"""
from __future__ import annotations

import asyncio
import ssl
import time

import orjson
import requests

from shared.outbound import OutboundPolicy, OutboundRefused, OutboundSession
from workers.delivery.answer import ProviderAnswer, parse_retry_after
from workers.delivery.bearer import BearerClient
from workers.delivery.http2 import TransportError
from workers.delivery.outcomes import HMS_PARTIAL_SUCCESS

TOKEN_TIMEOUT_SECONDS = 10
#: A token is renewed this long before it expires (at most half its lifetime), so no send carries one that lapses in flight.
TOKEN_EXPIRY_MARGIN_SECONDS = 300
#: The token's lifetime when the endpoint names none (HMS issues 3600 s).
DEFAULT_TOKEN_SECONDS = 3600
#: Longest part of a token endpoint's or send's error body kept in a reason.
MAX_REASON_CHARS = 200


class HmsTokenRefused(Exception):
    """The token endpoint refused the app's client id or secret (or may not be reached): a credentials failure."""


class HmsAuth:
    """Access tokens for one HMS app (OAuth 2.0 client credentials).

    Parameters:
      token_url: Huawei's token endpoint (``https://oauth-login.cloud.huawei.com/oauth2/v3/token``) or a simulator.
      client_id, client_secret: the app's OAuth 2.0 client.
      outbound: what the token endpoint may reach (shared/outbound.py).
      ca_file: CA bundle to trust for the token endpoint (None: the system's).
    """

    def __init__(self, *, token_url: str, client_id: str, client_secret: str, outbound: OutboundPolicy, ca_file: str | None = None):
        self.token_url = token_url
        self._form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret}
        self._session = OutboundSession(outbound)
        self._verify: str | bool = ca_file or True
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._renew_at = 0.0
        self.refreshes = 0

    @property
    def valid(self) -> bool:
        return self._token is not None and time.monotonic() < self._renew_at

    async def token(self) -> str:
        if self.valid:
            return self._token
        async with self._lock:
            if not self.valid:
                token, lifetime = await asyncio.to_thread(self._fetch)
                self._token = token
                self._renew_at = time.monotonic() + lifetime - min(TOKEN_EXPIRY_MARGIN_SECONDS, lifetime / 2)
                self.refreshes += 1
        return self._token

    def invalidate(self) -> None:
        self._token = None

    def _fetch(self) -> tuple[str, float]:
        try:
            answer = self._session.post(self.token_url, data=self._form, verify=self._verify, timeout=TOKEN_TIMEOUT_SECONDS)
        except OutboundRefused as refused:
            raise HmsTokenRefused(f"token endpoint not allowed: {refused}") from None
        except requests.RequestException as error:
            raise TransportError(f"HMS token endpoint unreachable: {error}") from error
        if answer.status_code >= 500 or answer.status_code == 429:
            raise TransportError(f"HMS token endpoint answered {answer.status_code}")
        try:
            body = orjson.loads(answer.content)
        except orjson.JSONDecodeError:
            body = None
        token = body.get("access_token") if isinstance(body, dict) else None
        if answer.status_code != 200 or not isinstance(token, str) or not token:
            described = body.get("error_description") or body.get("error") if isinstance(body, dict) else None
            raise HmsTokenRefused(f"token endpoint refused the client: {answer.status_code} {described or answer.text[:MAX_REASON_CHARS]}")
        lifetime = body.get("expires_in")
        return token, float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else DEFAULT_TOKEN_SECONDS


class HmsClient(BearerClient):
    """Sends to HMS Push Kit for one project.

    Parameters:
      origin: ``https://push-api.cloud.huawei.com`` or a simulator.
      project_id: the HMS project (the ``<project id>`` of the send path).
      auth: its :class:`HmsAuth`.
      ssl_context, connections, request_timeout: pool settings.
    """

    def __init__(self, *, origin: str, project_id: str, auth: HmsAuth, ssl_context: ssl.SSLContext,
                 connections: int = 2, request_timeout: float = 10.0):
        super().__init__(origin=origin, path=f"/v2/{project_id}/messages:send", auth=auth, ssl_context=ssl_context,
                         connections=connections, request_timeout=request_timeout)

    async def send(self, body: bytes, token: str) -> ProviderAnswer:
        """Send one request body (``{"validate_only": false, "message": {...}}``, already serialised) to ``token``."""
        return await self._send_refreshing(body, token)

    async def _attempt(self, body: bytes, device_token: str) -> ProviderAnswer:
        try:
            token = await self.auth.token()
        except HmsTokenRefused as refused:
            return ProviderAnswer(status=401, reason=str(refused))
        answer = await self.pool.request(self.headers(token), body)
        return read_answer(answer.status, answer.body, answer.headers.get("retry-after"), device_token)


def read_answer(status: int, body: bytes, retry_after: str | None, device_token: str) -> ProviderAnswer:
    """An HMS answer (``{"code", "msg", "requestId"}``) → a :class:`ProviderAnswer` for the table."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        return ProviderAnswer(status=status, reason=f"HTTP {status}", retry_after=parse_retry_after(retry_after))
    code = str(parsed.get("code")) if parsed.get("code") is not None else None
    msg = parsed.get("msg") if isinstance(parsed.get("msg"), str) else ""
    request_id = parsed.get("requestId") if isinstance(parsed.get("requestId"), str) else None
    illegal = code == HMS_PARTIAL_SUCCESS and device_token in _illegal_tokens(msg)
    if status == 200 and not illegal:
        return ProviderAnswer(status=200, provider_id=request_id, code=code)
    reason = " ".join(filter(None, (code, msg[:MAX_REASON_CHARS]))) or f"HTTP {status}"
    return ProviderAnswer(status=status, reason=reason, retry_after=parse_retry_after(retry_after), provider_id=request_id,
                          token_field=illegal, code=code)


def _illegal_tokens(msg: str) -> list:
    """The ``illegal_tokens`` of a partial success's ``msg`` (the JSON text ``{"success", "failure", "illegal_tokens"}``)."""
    try:
        summary = orjson.loads(msg)
    except orjson.JSONDecodeError:
        return []
    tokens = summary.get("illegal_tokens") if isinstance(summary, dict) else None
    return tokens if isinstance(tokens, list) else []
