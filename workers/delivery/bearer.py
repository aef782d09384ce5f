"""What the FCM and HMS clients share: an OAuth 2.0 bearer token on a pooled HTTP/2 ``POST`` per device.

A subclass names its send path and answers one attempt (:meth:`BearerClient._attempt`); this base keeps the
whole header list for the current access token (it changes about once an hour, so a send builds none), and
retries a request once, after dropping the cached token, when the provider answers 401.
"""
from __future__ import annotations

import ssl

from workers.delivery.answer import ProviderAnswer
from workers.delivery.http2 import Http2Pool


class BearerClient:
    """One provider project's sends with its token source ``auth`` (``await auth.token()``, ``auth.invalidate()``).

    Parameters:
      origin: the provider's origin or a simulator.
      path: the send path of the project.
      auth: the project's token source.
      ssl_context, connections, request_timeout: pool settings.
    """

    def __init__(self, *, origin: str, path: str, auth, ssl_context: ssl.SSLContext, connections: int = 2,
                 request_timeout: float = 10.0):
        self.path = path
        self.auth = auth
        self.pool = Http2Pool(origin, ssl_context, connections=connections, request_timeout=request_timeout)
        self._headers: tuple[tuple[bytes, bytes], ...] = ()
        self._headers_token: str | None = None

    async def _send_refreshing(self, *args) -> ProviderAnswer:
        """One attempt; on a 401, drop the cached token and try once more."""
        answer = await self._attempt(*args)
        if answer.status == 401:
            self.auth.invalidate()
            answer = await self._attempt(*args)
        return answer

    async def _attempt(self, *args) -> ProviderAnswer:
        raise NotImplementedError

    def headers(self, token: str) -> tuple[tuple[bytes, bytes], ...]:
        """The request's header list for access token ``token`` (built again only when the token changed)."""
        if token is not self._headers_token:
            self._headers_token = token
            self._headers = (
                (b":method", b"POST"), (b":scheme", b"https"), (b":authority", self.pool.authority), (b":path", self.path.encode()),
                (b"authorization", f"Bearer {token}".encode()), (b"content-type", b"application/json"),
            )
        return self._headers

    async def close(self) -> None:
        await self.pool.close()
