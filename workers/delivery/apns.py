"""APNs provider client: token auth (ES256 JWT) over a pooled HTTP/2 connection.

The provider token is reused for :data:`TOKEN_REUSE_SECONDS` and never
regenerated more often than :data:`MIN_REFRESH_SECONDS` (Apple answers
``TooManyProviderTokenUpdates`` otherwise). On ``ExpiredProviderToken`` the
client regenerates once, if allowed, and retries the request once.
"""
from __future__ import annotations

import ssl
import time
from dataclasses import dataclass

import jwt
import orjson

from workers.delivery.answer import ProviderAnswer, parse_retry_after
from workers.delivery.http2 import Http2Pool

#: A provider token is reused this long (Apple: refresh between 20 and 60 minutes).
TOKEN_REUSE_SECONDS = 40 * 60
#: The shortest time between two regenerations.
MIN_REFRESH_SECONDS = 20 * 60
REFRESH_ON = ("ExpiredProviderToken",)


class ApnsTokenSigner:
    """Makes and caches the ES256 provider token of one key."""

    def __init__(self, *, key_id: str, team_id: str, private_key_pem: str, clock=time.time):
        self.key_id, self.team_id = key_id, team_id
        self._key = private_key_pem
        self._clock = clock
        self._token: str | None = None
        self._issued_at = 0.0

    def token(self) -> str:
        now = self._clock()
        if self._token is None or now - self._issued_at >= TOKEN_REUSE_SECONDS:
            self._sign(now)
        return self._token

    def refresh(self) -> bool:
        """Regenerate now if the last one is old enough; answer whether it did."""
        now = self._clock()
        if self._token is not None and now - self._issued_at < MIN_REFRESH_SECONDS:
            return False
        self._sign(now)
        return True

    def _sign(self, now: float) -> None:
        self._token = jwt.encode({"iss": self.team_id, "iat": int(now)}, self._key, algorithm="ES256", headers={"kid": self.key_id})
        self._issued_at = now


@dataclass(frozen=True)
class ApnsRequest:
    token: str
    payload: bytes
    push_type: str = "alert"
    priority: int = 10
    expiration: int | None = None
    collapse_id: str | None = None
    apns_id: str | None = None


class ApnsClient:
    """Sends to one APNs endpoint (production or development) for one app.

    Parameters:
      origin: ``https://api.push.apple.com`` or the sandbox, or a simulator.
      signer: the app's provider token signer.
      topic: the app's bundle id (``apns-topic``).
      ssl_context: TLS settings; connections, request_timeout: pool settings.
    """

    def __init__(self, *, origin: str, signer: ApnsTokenSigner, topic: str, ssl_context: ssl.SSLContext,
                 connections: int = 2, request_timeout: float = 10.0):
        self.signer = signer
        self.topic = topic
        self.pool = Http2Pool(origin, ssl_context, connections=connections, request_timeout=request_timeout)

    async def send(self, request: ApnsRequest) -> ProviderAnswer:
        answer = await self._send(request)
        if answer.status == 403 and answer.reason in REFRESH_ON and self.signer.refresh():
            answer = await self._send(request)
        return answer

    async def _send(self, request: ApnsRequest) -> ProviderAnswer:
        headers = [
            ("authorization", f"bearer {self.signer.token()}"),
            ("apns-topic", self.topic + (".voip" if request.push_type == "voip" else "")),
            ("apns-push-type", request.push_type),
            ("apns-priority", str(request.priority)),
        ]
        if request.expiration is not None:
            headers.append(("apns-expiration", str(request.expiration)))
        if request.collapse_id:
            headers.append(("apns-collapse-id", request.collapse_id))
        if request.apns_id:
            headers.append(("apns-id", request.apns_id))
        answer = await self.pool.request("POST", f"/3/device/{request.token}", headers, request.payload)
        reason = None
        if answer.status != 200:
            try:
                reason = orjson.loads(answer.body).get("reason") if answer.body else None
            except (orjson.JSONDecodeError, AttributeError):
                reason = None
            reason = reason or f"HTTP {answer.status}"
        return ProviderAnswer(
            status=answer.status,
            reason=reason,
            retry_after=parse_retry_after(answer.headers.get("retry-after")),
            provider_id=answer.headers.get("apns-id"),
        )

    async def close(self) -> None:
        await self.pool.close()
