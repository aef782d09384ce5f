"""FCM HTTP v1 client: OAuth2 from a service account (google-auth), pooled HTTP/2 sends.

The access token comes from the service account's ``token_uri`` (google-auth
honours it; the simulator's token endpoint is reached that way), requested
through the outbound check (shared/outbound.py: a token_uri must be public or
an allowed host:port; a refused one is a credentials failure), is cached
until google-auth considers it near expiry, and is fetched by one caller at a
time. A 401 drops the cached token and retries the request once.
"""
from __future__ import annotations

import asyncio
import ssl

import google.auth.exceptions
import google.auth.transport.requests
import orjson
from google.oauth2 import service_account

from shared.outbound import OutboundPolicy, OutboundRefused, OutboundSession
from workers.delivery.answer import ProviderAnswer, parse_retry_after
from workers.delivery.bearer import BearerClient
from workers.delivery.http2 import TransportError

SCOPES = ("https://www.googleapis.com/auth/firebase.messaging",)
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
TOKEN_TIMEOUT_SECONDS = 10


class _TokenRequest(google.auth.transport.requests.Request):
    """google-auth's requests transport over an outbound session, trusting ``ca_file``.

    A token_uri the outbound policy refuses is google-auth's RefreshError (the token endpoint refused the
    service account), not a transport error that would be retried.
    """

    def __init__(self, ca_file: str | None, outbound: OutboundPolicy):
        super().__init__(OutboundSession(outbound))
        self.ca_file = ca_file

    def __call__(self, url, method="GET", body=None, headers=None, timeout=None, **kwargs):
        if self.ca_file:
            kwargs.setdefault("verify", self.ca_file)
        try:
            return super().__call__(url, method=method, body=body, headers=headers, timeout=timeout or TOKEN_TIMEOUT_SECONDS, **kwargs)
        except OutboundRefused as refused:
            raise google.auth.exceptions.RefreshError(f"token_uri not allowed: {refused}") from None


class FcmAuth:
    """Access tokens for one service account.

    Parameters:
      service_account_info: the service account JSON, as a dict.
      outbound: what the service account's token_uri may reach (shared/outbound.py).
      ca_file: CA bundle to trust for the token endpoint (None: the system's).
    """

    def __init__(self, *, service_account_info: dict, outbound: OutboundPolicy, ca_file: str | None = None):
        self.credentials = service_account.Credentials.from_service_account_info(service_account_info, scopes=list(SCOPES))
        self._request = _TokenRequest(ca_file, outbound)
        self._lock = asyncio.Lock()
        self.refreshes = 0

    async def token(self) -> str:
        if self.credentials.valid:
            return self.credentials.token
        async with self._lock:
            if not self.credentials.valid:
                await asyncio.to_thread(self.credentials.refresh, self._request)
                self.refreshes += 1
        return self.credentials.token

    def invalidate(self) -> None:
        self.credentials.token = None


class FcmClient(BearerClient):
    """Sends to FCM HTTP v1 for one project.

    Parameters:
      origin: ``https://fcm.googleapis.com`` or a simulator.
      project_id: the Firebase project.
      auth: its :class:`FcmAuth`.
      ssl_context, connections, request_timeout: pool settings.
    """

    def __init__(self, *, origin: str, project_id: str, auth: FcmAuth, ssl_context: ssl.SSLContext,
                 connections: int = 2, request_timeout: float = 10.0):
        super().__init__(origin=origin, path=f"/v1/projects/{project_id}/messages:send", auth=auth, ssl_context=ssl_context,
                         connections=connections, request_timeout=request_timeout)

    async def send(self, body: bytes) -> ProviderAnswer:
        """Send one request body (``{"message": {...}}``, already serialised)."""
        return await self._send_refreshing(body)

    async def _attempt(self, body: bytes) -> ProviderAnswer:
        try:
            token = await self.auth.token()
        except google.auth.exceptions.TransportError as error:
            raise TransportError(f"token endpoint unreachable: {error}") from error
        except google.auth.exceptions.GoogleAuthError as error:
            # The token endpoint answered and refused the service account.
            return ProviderAnswer(status=401, reason=f"token endpoint refused: {error}")
        answer = await self.pool.request(self.headers(token), body)
        retry_after = parse_retry_after(answer.headers.get("retry-after"))
        if answer.status == 200:
            try:
                name = orjson.loads(answer.body).get("name")
            except (orjson.JSONDecodeError, AttributeError):
                name = None
            return ProviderAnswer(status=200, provider_id=name)
        reason, token_field = parse_error(answer.body)
        return ProviderAnswer(status=answer.status, reason=reason or f"HTTP {answer.status}", retry_after=retry_after, token_field=token_field)


def parse_error(body: bytes) -> tuple[str | None, bool]:
    """An FCM v1 error body → (errorCode, else status; whether it names ``message.token``)."""
    try:
        error = orjson.loads(body)["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None, False
    if not isinstance(error, dict):
        return None, False
    code, token_field = None, False
    for detail in error.get("details") or []:
        if not isinstance(detail, dict):
            continue
        if detail.get("@type") == FCM_ERROR_TYPE:
            code = detail.get("errorCode") or code
        if detail.get("@type") == BAD_REQUEST_TYPE:
            token_field = token_field or any(v.get("field") == "message.token" for v in detail.get("fieldViolations") or [] if isinstance(v, dict))
    return code or error.get("status"), token_field
