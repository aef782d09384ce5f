"""APNs provider client over a pooled HTTP/2 connection: token auth (ES256 JWT) or certificate auth.

Token auth: the provider token is reused for :data:`TOKEN_REUSE_SECONDS` and never
regenerated more often than :data:`MIN_REFRESH_SECONDS` (Apple answers
``TooManyProviderTokenUpdates`` otherwise). On ``ExpiredProviderToken`` the
client regenerates once, if allowed, and retries the request once.

Certificate auth: the app's certificate is the TLS client certificate of the
pool's connections (:func:`certificate_context`) and requests carry no
``authorization``. A server that refuses the certificate during the TLS
handshake is answered as APNs answers a bad certificate, ``403
BadCertificate``: a credentials outcome, not a transport error to retry.
"""
from __future__ import annotations

import os
import ssl
import tempfile
import time
from dataclasses import dataclass

import jwt
import orjson

from workers.delivery.answer import ProviderAnswer, parse_retry_after
from workers.delivery.http2 import CertificateRefused, Http2Pool

#: A provider token is reused this long (Apple: refresh between 20 and 60 minutes).
TOKEN_REUSE_SECONDS = 40 * 60
#: The shortest time between two regenerations.
MIN_REFRESH_SECONDS = 20 * 60
REFRESH_ON = ("ExpiredProviderToken",)
#: The reason recorded when the TLS handshake refused the client certificate (Apple's 403 reason for a bad certificate).
CERTIFICATE_REFUSED_REASON = "BadCertificate"


def certificate_context(*, ca_file: str | None, certificate_pem: str, private_key_pem: str) -> ssl.SSLContext:
    """A TLS context presenting an APNs client certificate (ALPN ``h2``; servers verified against ``ca_file`` or the system's).

    ``ssl`` loads a certificate only from a file: the PEMs go to a temporary file
    only this process's user can read (``mkstemp`` makes it 0600), removed as soon
    as they are loaded.
    """
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["h2"])
    descriptor, path = tempfile.mkstemp(prefix="apns-credentials-", suffix=".pem")
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(certificate_pem.rstrip("\n") + "\n" + private_key_pem)
        context.load_cert_chain(path)
    finally:
        os.unlink(path)
    return context


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
      signer: the app's provider token signer; None for certificate auth, whose
        certificate is in ``ssl_context`` (:func:`certificate_context`).
      topic: the app's bundle id (``apns-topic``).
      ssl_context: TLS settings; connections, request_timeout: pool settings.
    """

    def __init__(self, *, origin: str, signer: ApnsTokenSigner | None, topic: str, ssl_context: ssl.SSLContext,
                 connections: int = 2, request_timeout: float = 10.0):
        self.signer = signer
        self.topic = topic
        self.pool = Http2Pool(origin, ssl_context, connections=connections, request_timeout=request_timeout)
        #: The answer to every send once the server refused the client certificate: these credentials
        #: cannot succeed, and new ones make a new client.
        self.refused: ProviderAnswer | None = None

    async def send(self, request: ApnsRequest) -> ProviderAnswer:
        if self.refused is not None:
            return self.refused
        try:
            answer = await self._send(request)
            if answer.status == 403 and answer.reason in REFRESH_ON and self.signer is not None and self.signer.refresh():
                answer = await self._send(request)
        except CertificateRefused as error:
            self.refused = ProviderAnswer(status=403, reason=f"{CERTIFICATE_REFUSED_REASON} (TLS handshake refused: {error.alert})")
            return self.refused
        return answer

    async def _send(self, request: ApnsRequest) -> ProviderAnswer:
        # Certificate auth: no authorization header; the TLS connection is the credential.
        headers = [("authorization", f"bearer {self.signer.token()}")] if self.signer is not None else []
        headers += [
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
        reason, invalid_since = None, None
        if answer.status != 200:
            try:
                error = orjson.loads(answer.body) if answer.body else {}
            except orjson.JSONDecodeError:
                error = {}
            if isinstance(error, dict):
                reason = error.get("reason")
                stamp = error.get("timestamp")
                # 410: when APNs last confirmed the token invalid (ms); a registration written later is a new one.
                if answer.status == 410 and isinstance(stamp, int) and not isinstance(stamp, bool):
                    invalid_since = stamp
            reason = reason or f"HTTP {answer.status}"
        return ProviderAnswer(
            status=answer.status,
            reason=reason,
            retry_after=parse_retry_after(answer.headers.get("retry-after")),
            provider_id=answer.headers.get("apns-id"),
            token_invalid_since=invalid_since,
        )

    async def close(self) -> None:
        await self.pool.close()
