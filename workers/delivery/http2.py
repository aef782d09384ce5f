"""An asyncio HTTP/2 client pool on libnghttp2 (through ``ngh2``), for the provider clients.

One pool per provider endpoint and credentials holds a few TLS connections;
each connection multiplexes requests up to the server's
``MAX_CONCURRENT_STREAMS``. Requests wait for a free stream rather than open
more connections than configured. A connection that gets GOAWAY takes no new
streams; its streams the server did not process fail with
:class:`TransportError` (safe to retry), the others finish. Lost connections
are replaced on the next request. A server that refuses the TLS client
certificate (its alert, during the handshake or, with TLS 1.3, right after it)
fails the request with :class:`CertificateRefused`, not a plain transport error.

Why nghttp2 (README "HTTP/2 stack"): framing, HPACK (the headers that repeat on
every request, ``authorization`` among them, go as a few bytes of dynamic-table
index), flow control and stream state run in C; what is left in Python is one
call to start a request and one event to finish it. Each connection is an
``asyncio.Protocol``: no reader task, no per-request timer (deadlines are kept
in send order and one timer per connection serves them all), and the bytes of
all requests started in one event-loop turn leave in one TLS write.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import ngh2

log = logging.getLogger(__name__)

#: Receive window we grant the server, per stream and for the connection.
RECEIVE_WINDOW = 1 << 24
#: Requests one connection carries before the pool replaces it. nghttp2 frees a stream
#: once it closes (the ``h2`` state machine before it kept every closed stream: +48 MB
#: over a 1M-device campaign), but stream ids run out at 2^31, and a connection that
#: never ends pins its load to one server front-end however the provider balances.
MAX_REQUESTS_PER_CONNECTION = 20_000
CONNECT_TIMEOUT_SECONDS = 10.0
#: Seconds a started request may wait for its answer when the opener names no timeout (the workers' default too).
DEFAULT_REQUEST_TIMEOUT_SECONDS = 10.0
#: Streams a connection may open before the server's SETTINGS say how many it allows (RFC 9113's advice: 100).
INITIAL_MAX_STREAMS = 100
#: The largest stream count the pool believes in, whatever a server advertises ("unlimited" is 2^32 - 1).
MAX_STREAMS_CAP = 10_000
#: Header blocks larger than this (before HPACK) are refused locally rather than sent.
MAX_HEADER_BLOCK = 65_536

#: TLS alerts (OpenSSL reasons) a server sends about the client's certificate: missing, unknown CA, expired, revoked…
CERTIFICATE_ALERTS = frozenset(
    {
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "TLSV1_ALERT_UNKNOWN_CA",
        "TLSV1_ALERT_ACCESS_DENIED",
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
    }
)

Headers = Sequence[tuple[bytes, bytes]]


class TransportError(Exception):
    """The request got no answer: connection failure, reset, GOAWAY or timeout. Retryable."""


class CertificateRefused(TransportError):
    """The server refused the TLS client certificate (a credentials problem: retrying cannot help).

    A :class:`TransportError` to callers that do not tell it apart.
    """

    def __init__(self, message: str, alert: str):
        super().__init__(message)
        self.alert = alert


def _certificate_alert(error: BaseException | None) -> str | None:
    """The alert's name if ``error`` is the server's TLS alert about our certificate."""
    reason = getattr(error, "reason", None) if isinstance(error, ssl.SSLError) else None
    return reason if reason in CERTIFICATE_ALERTS else None


@dataclass
class Answer:
    """A server's answer to one request.

    Attributes:
      status: the HTTP status.
      headers: the response headers (names lower case), pseudo-headers left out.
      body: the response body.
    """

    status: int
    headers: dict[str, str]
    body: bytes


class _Stream:
    """One request in flight: its future, and the answer as it arrives."""

    __slots__ = ("future", "status", "headers", "body")

    def __init__(self, future: asyncio.Future):
        self.future = future
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""

    def answer(self) -> None:
        if not self.future.done():
            self.future.set_result(Answer(self.status, self.headers, self.body))

    def fail(self, error: Exception) -> None:
        if not self.future.done():
            self.future.set_exception(error)


class Http2Connection(asyncio.Protocol):
    """One HTTP/2 connection: the nghttp2 session, the streams in flight, their deadlines.

    Parameters:
      authority: the ``:authority`` requests carry.
      request_timeout: seconds a started request may wait for its answer.
      on_stream_freed: called when a stream ends (a waiting request may take its place).
    """

    def __init__(self, *, authority: str, request_timeout: float, on_stream_freed=None):
        self.authority = authority.encode()
        self.request_timeout = request_timeout
        self.on_stream_freed = on_stream_freed
        self.loop = asyncio.get_running_loop()
        config = ngh2.Configuration(peer_max_concurrent_streams=INITIAL_MAX_STREAMS, max_send_header_block_length=MAX_HEADER_BLOCK)
        self.h2 = ngh2.Connection(ngh2.Role.CLIENT, config)
        self.h2.initiate_connection({ngh2.Setting.INITIAL_WINDOW_SIZE: RECEIVE_WINDOW, ngh2.Setting.ENABLE_PUSH: 0})
        self.h2.set_local_window_size(RECEIVE_WINDOW)
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Stream] = {}
        #: (deadline, stream id) in the order requests started: with one timeout for all, also deadline order.
        self.deadlines: deque[tuple[float, int]] = deque()
        self.deadline_timer: asyncio.TimerHandle | None = None
        self.max_streams = INITIAL_MAX_STREAMS
        self.closed = False
        self.draining = False  # GOAWAY received, or past its request budget: no new streams
        self.settings_received = self.loop.create_future()
        self.flush_scheduled = False
        self.requests_started = 0
        self.failure: BaseException | None = None  # why the connection was lost, if it was

    @classmethod
    async def open(cls, host: str, port: int, ssl_context: ssl.SSLContext, *, request_timeout: float = DEFAULT_REQUEST_TIMEOUT_SECONDS,
                   server_hostname: str | None = None, on_stream_freed=None) -> Http2Connection:
        authority = f"{host}:{port}" if port != 443 else host
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    lambda: cls(authority=authority, request_timeout=request_timeout, on_stream_freed=on_stream_freed),
                    host, port, ssl=ssl_context, server_hostname=server_hostname or host,
                ),
                CONNECT_TIMEOUT_SECONDS,
            )
        except (OSError, TimeoutError, ssl.SSLError) as error:
            alert = _certificate_alert(error)
            if alert:
                raise CertificateRefused(f"{host}:{port} refused the client certificate: {alert}", alert) from error
            raise TransportError(f"connect to {host}:{port} failed: {error!r}") from error
        ssl_object = connection.transport.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            error = TransportError(f"{host}:{port} did not negotiate HTTP/2")
            connection._lost(error)  # closed without a GOAWAY: the server does not speak HTTP/2 here
            raise error
        try:
            await asyncio.wait_for(asyncio.shield(connection.settings_received), CONNECT_TIMEOUT_SECONDS)
        except TimeoutError as error:
            connection.close()
            raise TransportError(f"{host}:{port} sent no HTTP/2 settings") from error
        if connection.closed:
            # With TLS 1.3 the server checks the client certificate after the client's handshake is done.
            alert = _certificate_alert(connection.failure)
            if alert:
                raise CertificateRefused(f"{host}:{port} refused the client certificate: {alert}", alert) from connection.failure
            raise TransportError(f"{host}:{port} closed the connection before its HTTP/2 settings")
        return connection

    # --- state -------------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return not self.closed and not self.draining

    # --- requests ----------------------------------------------------------------------------

    def start(self, headers: Headers, body: bytes) -> asyncio.Future:
        """Start one request (``headers`` with the pseudo-headers first); answer the future of its :class:`Answer`.

        The caller checked that the connection is usable and has a free stream.
        The request leaves with the others started in this event-loop turn.
        """
        return self._start(headers, body)[1]

    async def request(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes, timeout: float) -> Answer:
        """One request with text headers and a timeout of its own, for callers that hold a connection, not a pool."""
        if not self.usable:
            raise TransportError("connection not usable")
        block = [(b":method", method.encode()), (b":scheme", b"https"), (b":authority", self.authority), (b":path", path.encode()),
                 *((name.encode(), value.encode()) for name, value in headers)]
        stream_id, future = self._start(block, body)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError as error:
            self._cancel(stream_id, TransportError(f"no answer within {timeout}s"))
            self._flush()
            raise TransportError(f"no answer within {timeout}s") from error

    def _start(self, headers: Headers, body: bytes) -> tuple[int, asyncio.Future]:
        try:
            stream_id = self.h2.send_request(headers, end_stream=not body)
            if body:
                # nghttp2 queues what the server's flow-control window does not take yet, and
                # sends it as WINDOW_UPDATEs arrive.
                self.h2.send_data(stream_id, body, end_stream=True)
        except ngh2.NGH2Error as error:
            self.draining = True  # stream ids spent, or the session is shutting down
            if not self.streams:
                self.close()
            raise TransportError(f"HTTP/2 error: {error!r}") from error
        self.requests_started += 1
        if self.requests_started >= MAX_REQUESTS_PER_CONNECTION:
            self.draining = True
        future = self.loop.create_future()
        streams, deadlines = self.streams, self.deadlines
        streams[stream_id] = _Stream(future)
        while deadlines and deadlines[0][1] not in streams:
            deadlines.popleft()  # answered: the queue stays about as long as the streams in flight
        deadlines.append((self.loop.time() + self.request_timeout, stream_id))
        if self.deadline_timer is None:
            self.deadline_timer = self.loop.call_at(self.deadlines[0][0], self._expire)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)
        return stream_id, future

    def _expire(self) -> None:
        """Reset the streams past their deadline; re-arm for the next one still in flight."""
        self.deadline_timer = None
        now = self.loop.time()
        deadlines, streams = self.deadlines, self.streams
        while deadlines and (deadlines[0][1] not in streams or deadlines[0][0] <= now):
            _, stream_id = deadlines.popleft()
            self._cancel(stream_id, TransportError(f"no answer within {self.request_timeout}s"))
        if deadlines:
            self.deadline_timer = self.loop.call_at(deadlines[0][0], self._expire)
        self._flush()

    def _cancel(self, stream_id: int, error: TransportError) -> None:
        """Fail a request still in flight and reset its stream (the connection serves on)."""
        if stream_id in self.streams:
            self._end_stream(stream_id, error)
            if not self.closed:
                try:
                    self.h2.reset_stream(stream_id, ngh2.ErrorCode.CANCEL)
                except ngh2.NGH2Error:
                    pass  # the stream closed meanwhile

    def _end_stream(self, stream_id: int, error: Exception | None = None) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        if error is None:
            stream.answer()
        else:
            stream.fail(error)
        if self.draining and not self.streams:
            self.close()
        if self.on_stream_freed is not None:
            self.on_stream_freed()

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            self.h2.receive_data(data)
        except ngh2.NGH2Error as error:
            log.warning("HTTP/2 protocol error from %s: %r", self.authority.decode(), error)
            self._flush()
            self._lost(TransportError(f"HTTP/2 protocol error from {self.authority.decode()}: {error!r}"))
            return
        streams = self.streams
        for event in self.h2.events():
            kind = type(event)
            if kind is ngh2.ResponseReceived:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    headers = event.headers
                    stream.status = int(headers[0][1])  # :status, the only response pseudo-header, comes first
                    stream.headers = {name.decode(): value.decode() for name, value in headers[1:]}
                    if event.end_stream:
                        self._end_stream(event.stream_id)
            elif kind is ngh2.DataReceived:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.body += event.data
                    if event.end_stream:
                        self._end_stream(event.stream_id)
            elif self._other_event(event, kind):
                return  # the connection is gone
        self._flush()

    def _other_event(self, event, kind) -> bool:
        """Every event but a response's headers and data (the per-answer hot path stays in ``data_received``); True when the
        connection is lost."""
        if kind is ngh2.TrailersReceived:
            if event.stream_id in self.streams:
                self._end_stream(event.stream_id)  # trailers end the stream; the answer is complete
        elif kind is ngh2.StreamClosed or kind is ngh2.StreamReset:
            if event.stream_id in self.streams:
                self._end_stream(event.stream_id, TransportError(f"stream reset (error {event.error_code})"))
        elif kind is ngh2.SettingsReceived:
            self.max_streams = min(self.h2.remote_settings[ngh2.Setting.MAX_CONCURRENT_STREAMS], MAX_STREAMS_CAP)
            if not self.settings_received.done():
                self.settings_received.set_result(None)
            if self.on_stream_freed is not None:
                self.on_stream_freed()
        elif kind is ngh2.GoAwayReceived:
            self._goaway(event.last_stream_id)
        elif kind is ngh2.ConnectionClosed:
            self._lost(TransportError(f"connection to {self.authority.decode()} closed by the server (error {event.error_code})"))
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.failure = exc
        if exc is not None:
            log.info("connection to %s lost: %r", self.authority.decode(), exc)
        self._lost(TransportError(f"connection to {self.authority.decode()} closed"))

    def _goaway(self, last_stream_id: int) -> None:
        """The server processes no stream above ``last_stream_id``: those fail (retryable), the others finish."""
        self.draining = True
        for stream_id in [s for s in self.streams if s > last_stream_id]:
            self._end_stream(stream_id, TransportError("GOAWAY: stream not processed by the server"))
        if not self.streams:
            self.close()

    def _lost(self, error: Exception) -> None:
        self.closed = True
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream.fail(error)
        if self.deadline_timer is not None:
            self.deadline_timer.cancel()
            self.deadline_timer = None
        self.deadlines.clear()
        if not self.settings_received.done():
            self.settings_received.set_result(None)
        if self.transport is not None:
            self.transport.close()
        if self.on_stream_freed is not None:
            self.on_stream_freed()

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.transport is None or self.transport.is_closing():
            return
        data = self.h2.data_to_send()
        if data:
            self.transport.write(data)

    def close(self) -> None:
        """Say GOAWAY and close; requests still in flight fail."""
        if self.closed:
            return
        try:
            self.h2.terminate_connection()
        except ngh2.NGH2Error:
            pass
        self._flush()
        self._lost(TransportError(f"connection to {self.authority.decode()} closed"))


class Http2Pool:
    """Up to ``connections`` HTTP/2 connections to one origin, streams spread over them.

    Parameters:
      origin: ``https://host[:port]``.
      ssl_context: TLS settings (ALPN ``h2`` must be among its protocols).
      connections: the most connections the pool opens.
      request_timeout: seconds a request may wait for its answer once started.
    """

    def __init__(self, origin: str, ssl_context: ssl.SSLContext, *, connections: int = 2, request_timeout: float = 10.0):
        parts = urlsplit(origin)
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 443
        self.ssl_context = ssl_context
        self.size = max(1, connections)
        self.request_timeout = request_timeout
        self.connections: list[Http2Connection] = []
        self.opening = 0
        #: Requests waiting for a free stream or a new connection, woken one per freed stream.
        self.waiters: deque[asyncio.Future] = deque()
        self.closed = False

    @property
    def authority(self) -> bytes:
        return (f"{self.host}:{self.port}" if self.port != 443 else self.host).encode()

    async def request(self, headers: Headers, body: bytes = b"") -> Answer:
        """Send one request: ``headers`` are the whole header list, pseudo-headers first (see :meth:`authority`)."""
        connection = self._pick()
        if connection is None:
            connection = await self._acquire()
        return await connection.start(headers, body)

    def _pick(self) -> Http2Connection | None:
        """A connection with a free stream, if the pool need not (or cannot) open another; else None."""
        best, best_free = None, 0
        for connection in self.connections:
            if connection.closed or connection.draining:
                continue
            free = connection.max_streams - len(connection.streams)
            if free > best_free:
                best, best_free = connection, free
        # Spread the load: past half its streams, a connection shares with a new one while the pool may open one.
        if best is not None and (best_free > best.max_streams // 2 or self._full()):
            return best
        return None

    async def _acquire(self) -> Http2Connection:
        while True:
            if self.closed:
                raise TransportError("pool closed")
            self.connections = [c for c in self.connections if not c.closed]
            connection = self._pick()
            if connection is not None:
                return connection
            if not self._full():
                return await self._open()
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            await waiter

    async def _open(self) -> Http2Connection:
        self.opening += 1
        try:
            connection = await Http2Connection.open(
                self.host, self.port, self.ssl_context, request_timeout=self.request_timeout, on_stream_freed=self._wake_one
            )
        finally:
            self.opening -= 1
            self._wake_all()  # a new connection's streams, or a failed opening another may retry
        if self.closed:
            connection.close()
            raise TransportError("pool closed")
        self.connections.append(connection)
        return connection

    def _full(self) -> bool:
        usable = sum(1 for c in self.connections if c.usable)
        return usable + self.opening >= self.size

    def _wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _wake_all(self) -> None:
        waiters, self.waiters = self.waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def close(self) -> None:
        self.closed = True
        for connection in self.connections:
            connection.close()
        self.connections = []
        self._wake_all()
