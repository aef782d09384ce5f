"""An asyncio HTTP/2 client pool on the ``h2`` state machine, for the provider clients.

One pool per provider endpoint and credentials holds a few TLS connections;
each connection multiplexes requests up to the server's
``MAX_CONCURRENT_STREAMS``. Requests wait for a free stream rather than open
more connections than configured. A connection that gets GOAWAY takes no new
streams; its streams the server did not process fail with
:class:`TransportError` (safe to retry), the others finish. Lost connections
are replaced on the next request. A server that refuses the TLS client
certificate (its alert, during the handshake or, with TLS 1.3, right after it)
fails the request with :class:`CertificateRefused`, not a plain transport error.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

log = logging.getLogger(__name__)

#: Receive window we grant the server, per stream and for the connection.
RECEIVE_WINDOW = 1 << 24
READ_SIZE = 1 << 16
#: Requests one connection carries before the pool replaces it. The h2 state machine
#: remembers every closed stream id (``_closed_streams``), so a connection that lives
#: forever grows forever (measured: +48 MB over a 1M-device campaign); stream ids also
#: run out at 2^31.
MAX_REQUESTS_PER_CONNECTION = 20_000
CONNECT_TIMEOUT_SECONDS = 10.0


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
    status: int
    headers: dict[str, str]
    body: bytes


class _Stream:
    __slots__ = ("future", "status", "headers", "body")

    def __init__(self, future: asyncio.Future):
        self.future = future
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = bytearray()


class Http2Connection:
    """One HTTP/2 connection: a reader task, a map of open streams, flow control for request bodies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, authority: str):
        self.reader, self.writer, self.authority = reader, writer, authority
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8", validate_inbound_headers=False)
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: RECEIVE_WINDOW, h2.settings.SettingCodes.ENABLE_PUSH: 0}
        )
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(RECEIVE_WINDOW)
        self.streams: dict[int, _Stream] = {}
        self.window_waiters: list[asyncio.Future] = []
        self.closed = False
        self.draining = False  # GOAWAY received: no new streams
        self.settings_received = asyncio.Event()
        self.flush_scheduled = False
        self.requests_started = 0
        self.failure: BaseException | None = None  # why the connection was lost, if it was
        self._flush()
        self.reader_task = asyncio.ensure_future(self._read_loop())

    @classmethod
    async def open(cls, host: str, port: int, ssl_context: ssl.SSLContext, server_hostname: str | None = None) -> Http2Connection:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ssl_context, server_hostname=server_hostname or host, limit=READ_SIZE),
                CONNECT_TIMEOUT_SECONDS,
            )
        except (OSError, TimeoutError, ssl.SSLError) as error:
            alert = _certificate_alert(error)
            if alert:
                raise CertificateRefused(f"{host}:{port} refused the client certificate: {alert}", alert) from error
            raise TransportError(f"connect to {host}:{port} failed: {error!r}") from error
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            writer.close()
            raise TransportError(f"{host}:{port} did not negotiate HTTP/2")
        connection = cls(reader, writer, f"{host}:{port}" if port != 443 else host)
        try:
            await asyncio.wait_for(connection.settings_received.wait(), CONNECT_TIMEOUT_SECONDS)
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

    @property
    def max_streams(self) -> int:
        return self.h2.remote_settings.max_concurrent_streams

    @property
    def free_streams(self) -> int:
        if self.closed or self.draining:
            return 0
        return self.max_streams - len(self.streams)

    @property
    def usable(self) -> bool:
        return not self.closed and not self.draining

    def _retire_if_spent(self) -> None:
        """Past its request budget: take no new streams; close once the last one is answered."""
        if not self.draining and self.requests_started >= MAX_REQUESTS_PER_CONNECTION:
            self.draining = True
        if self.draining and not self.streams and not self.closed:
            self.close()

    def _flush(self) -> None:
        self.flush_scheduled = False
        data = self.h2.data_to_send()
        if data and not self.closed:
            self.writer.write(data)

    def _schedule_flush(self) -> None:
        """Write once per event-loop turn: requests started together leave in one TLS write."""
        if not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def request(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes, timeout: float) -> Answer:
        if not self.usable:
            raise TransportError("connection not usable")
        stream_id = self.h2.get_next_available_stream_id()
        self.requests_started += 1
        future = asyncio.get_running_loop().create_future()
        self.streams[stream_id] = _Stream(future)
        request_headers = [(":method", method), (":scheme", "https"), (":authority", self.authority), (":path", path), *headers]
        try:
            self.h2.send_headers(stream_id, request_headers, end_stream=not body)
            if body:
                await self._send_body(stream_id, body)
            self._schedule_flush()
            return await asyncio.wait_for(future, timeout)
        except TimeoutError as error:
            self._reset(stream_id)
            raise TransportError(f"no answer within {timeout}s") from error
        except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError) as error:
            self.streams.pop(stream_id, None)
            raise TransportError(f"HTTP/2 error: {error!r}") from error
        finally:
            self.streams.pop(stream_id, None)
            self._retire_if_spent()

    async def _send_body(self, stream_id: int, body: bytes) -> None:
        view = memoryview(body)
        while view:
            window = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)
            if window <= 0:
                waiter = asyncio.get_running_loop().create_future()
                self.window_waiters.append(waiter)
                self._flush()
                await waiter
                if self.closed:
                    raise TransportError("connection closed while sending")
                continue
            chunk, view = view[:window], view[window:]
            self.h2.send_data(stream_id, bytes(chunk), end_stream=not view)

    def _reset(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)
        if not self.closed:
            try:
                self.h2.reset_stream(stream_id, error_code=h2.errors.ErrorCodes.CANCEL)
                self._flush()
            except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError):
                pass

    async def _read_loop(self) -> None:
        try:
            while not self.closed:
                data = await self.reader.read(READ_SIZE)
                if not data:
                    break
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError as error:
                    log.warning("HTTP/2 protocol error from %s: %r", self.authority, error)
                    break
                for event in events:
                    self._on_event(event)
                self._flush()
        except (OSError, ssl.SSLError) as error:
            self.failure = error
            log.info("connection to %s lost: %r", self.authority, error)
        except asyncio.CancelledError:
            pass
        finally:
            self._fail_all(TransportError(f"connection to {self.authority} closed"))

    def _on_event(self, event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.headers = dict(event.headers)
                stream.status = int(stream.headers.get(":status", 0))
        elif isinstance(event, h2.events.DataReceived):
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.body.extend(event.data)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None and not stream.future.done():
                stream.future.set_result(Answer(stream.status, stream.headers, bytes(stream.body)))
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None and not stream.future.done():
                stream.future.set_exception(TransportError(f"stream reset by server (error {event.error_code})"))
        elif isinstance(event, h2.events.WindowUpdated):
            self._wake_window_waiters()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.settings_received.set()
            self._wake_window_waiters()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.draining = True
            last = event.last_stream_id if event.last_stream_id is not None else 0
            for stream_id in [s for s in self.streams if s > last]:
                stream = self.streams.pop(stream_id)
                if not stream.future.done():
                    stream.future.set_exception(TransportError("GOAWAY: stream not processed by the server"))
            if not self.streams:
                self.close()

    def _wake_window_waiters(self) -> None:
        waiters, self.window_waiters = self.window_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _fail_all(self, error: Exception) -> None:
        self.closed = True
        for stream in self.streams.values():
            if not stream.future.done():
                stream.future.set_exception(error)
        self.streams.clear()
        self._wake_window_waiters()
        self.settings_received.set()
        try:
            self.writer.close()
        except (OSError, RuntimeError):
            pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.h2.close_connection()
                self.writer.write(self.h2.data_to_send())
            except (h2.exceptions.ProtocolError, OSError, RuntimeError):
                pass
            self.reader_task.cancel()


class Http2Pool:
    """Up to ``connections`` HTTP/2 connections to one origin, streams spread over them.

    Parameters:
      origin: ``https://host[:port]``.
      ssl_context: TLS settings (ALPN ``h2`` is set here).
      connections: the most connections the pool opens.
      request_timeout: seconds a request may wait for its answer.
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
        self.changed = asyncio.Condition()
        self.closed = False

    async def request(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"") -> Answer:
        connection = await self._acquire()
        try:
            return await connection.request(method, path, headers, body, self.request_timeout)
        finally:
            async with self.changed:
                self.changed.notify()

    async def _acquire(self) -> Http2Connection:
        async with self.changed:
            while True:
                if self.closed:
                    raise TransportError("pool closed")
                self.connections = [c for c in self.connections if not c.closed]
                best = max(self.connections, key=lambda c: c.free_streams, default=None)
                if best is not None and best.free_streams > 0 and (best.free_streams > best.max_streams // 2 or self._full()):
                    return best
                if not self._full():
                    self.opening += 1
                    break
                await self.changed.wait()
        try:
            connection = await Http2Connection.open(self.host, self.port, self.ssl_context)
        finally:
            async with self.changed:
                self.opening -= 1
                self.changed.notify_all()
        async with self.changed:
            self.connections.append(connection)
            self.changed.notify_all()
        return connection

    def _full(self) -> bool:
        usable = [c for c in self.connections if c.usable]
        return len(usable) + self.opening >= self.size

    async def close(self) -> None:
        self.closed = True
        for connection in self.connections:
            connection.close()
        self.connections = []
