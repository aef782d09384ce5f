"""A small asyncio server for the simulators: HTTP/2 (h2) over TLS, HTTP/1.1 beside it.

One protocol class serves both: after the TLS handshake it looks at ALPN and
speaks HTTP/2 when the client chose ``h2``, HTTP/1.1 otherwise (the OAuth token
endpoint is called by google-auth over HTTP/1.1; the control port is plain
HTTP/1.1 without TLS). Handlers are ``handle(request)`` answering a :class:`Response`, or an awaitable
of one when they must wait (a coordinator's answer, a delay): most answers need
no task. A response's ``on_written`` runs only when the response went out on a
live connection, so a simulator counts a notification as delivered only if the
client could have seen the answer. Answers wait ``Connections.latency_seconds``
(a WAN's round trip) on a timer, never blocking other streams. A TLS client
that offers no ALPN but opens with the HTTP/2 preface is served HTTP/2 (aioapns
does so).

Per request, h2's own HPACK coder was the largest cost (Huffman-decoding the
never-indexed provider token each time): connections use
:mod:`simulators.hpack_codec` instead. Everything a loop turn answers goes out
in one write.

TLS is asyncio's, with one change (:class:`AlertingTlsProtocol`): a handshake the
server refuses (a client certificate its CA did not sign) sends its TLS alert
before closing, as a TLS server does; asyncio drops it and just closes the socket.
A client then reads why (``TLSV1_ALERT_UNKNOWN_CA``) instead of a bare reset.
"""
from __future__ import annotations

import asyncio
import logging
import os
import ssl
from asyncio import sslproto
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import ngh2
import orjson

from simulators.hpack_codec import CachingDecoder, LiteralEncoder

log = logging.getLogger(__name__)

#: Receive window granted to clients, per stream and for the connection.
RECEIVE_WINDOW = 1 << 24
#: Largest HTTP/1.1 request head or body accepted.
MAX_HTTP1_REQUEST = 1 << 24
#: What an HTTP/2 client sends first (RFC 9113 §3.4); seen on a connection without ALPN, it means HTTP/2.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: Seconds between a GOAWAY and closing the connection: streams already received are answered meanwhile.
GOAWAY_CLOSE_SECONDS = 0.5


@dataclass(slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    http2: bool = True
    #: The verified client certificate of the connection (``SSLSocket.getpeercert()``), or None.
    client_certificate: dict | None = None

    def json(self):
        return orjson.loads(self.body) if self.body else None


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    on_written: Callable[[], None] | None = None

    @classmethod
    def json(cls, status: int, data, headers: list[tuple[str, str]] | None = None, on_written=None) -> Response:
        return cls(status, orjson.dumps(data), [("content-type", "application/json"), *(headers or [])], on_written)


Handler = Callable[[Request], Response | Awaitable[Response]]


class Connections:
    """The live HTTP/2 connections of a server (so a fault can GOAWAY them all) and how long answers wait.

    Parameters:
      latency_seconds: time from a request's end to its answer (0: at once), for every stream.
    """

    def __init__(self, *, latency_seconds: float = 0.0):
        self.live: set[ServerProtocol] = set()
        self.latency_seconds = latency_seconds

    def goaway_all(self) -> int:
        for protocol in list(self.live):
            protocol.goaway()
        return len(self.live)


class ServerProtocol(asyncio.Protocol):
    """Serves one client connection with ``handler``."""

    def __init__(self, handler: Handler, *, max_concurrent_streams: int = 1000, connections: Connections | None = None):
        self.handler = handler
        self.max_concurrent_streams = max_concurrent_streams
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.h2: h2.connection.H2Connection | None = None
        #: Streams being received: their headers and body so far.
        self.streams: dict[int, tuple[dict, bytearray]] = {}
        #: Streams received whole and handed to the handler, not yet answered.
        self.answering: set[int] = set()
        self.waiting_window: dict[int, tuple[bytes, Callable | None]] = {}
        self.buffer = bytearray()
        self.tls = False
        self.http1_busy = False
        self.flush_scheduled = False
        self.receiving = False
        self.client_certificate: dict | None = None

    # --- connection --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.client_certificate = ssl_object.getpeercert() or None
        self.tls = ssl_object is not None
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            self._start_h2()

    def _start_h2(self) -> None:
        # Headers arrive as bytes and are decoded once here (h2's own pass builds a tuple object per header);
        # the answers' headers are the simulators' own, lower-case and valid, so h2 need not check them again.
        config = h2.config.H2Configuration(client_side=False, header_encoding=None, validate_inbound_headers=False,
                                           normalize_inbound_headers=False, validate_outbound_headers=False,
                                           normalize_outbound_headers=False)
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.encoder, self.h2.decoder = LiteralEncoder(), CachingDecoder()
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_concurrent_streams,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: RECEIVE_WINDOW,
            },
        )
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(RECEIVE_WINDOW)
        self._flush()
        if self.connections is not None:
            self.connections.live.add(self)

    def connection_lost(self, exc) -> None:
        if self.connections is not None:
            self.connections.live.discard(self)

    def alive(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def goaway(self) -> None:
        """Send GOAWAY: streams already received are answered, new ones are refused, then close."""
        if self.h2 is None or not self.alive():
            return
        self.h2.close_connection(last_stream_id=self.h2.highest_inbound_stream_id)
        self._flush()
        asyncio.get_running_loop().call_later(GOAWAY_CLOSE_SECONDS, self.transport.close)

    def data_received(self, data: bytes) -> None:
        if self.h2 is not None:
            self._h2_received(data)
            return
        self.buffer.extend(data)
        if self.tls and self.buffer[: len(HTTP2_PREFACE)] == HTTP2_PREFACE[: len(self.buffer)]:
            if len(self.buffer) < len(HTTP2_PREFACE):
                return  # the rest of the preface is on its way
            received = bytes(self.buffer)
            self.buffer.clear()
            self._start_h2()
            self._h2_received(received)
            return
        self._http1_next()

    # --- HTTP/2 -------------------------------------------------------------------------------

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.alive():
            data = self.h2.data_to_send()
            if data:
                self.transport.write(data)

    def _schedule_flush(self) -> None:
        if not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _h2_received(self, data: bytes) -> None:
        self.receiving = True
        try:
            self._h2_events(data)
        finally:
            self.receiving = False
        self._flush()

    def _h2_events(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()
            self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                headers = {name.decode("utf-8", "replace"): value.decode("utf-8", "replace") for name, value in event.headers}
                self.streams[event.stream_id] = (headers, bytearray())
                # END_STREAM on HEADERS: h2 reports a StreamEnded after this event too; that one dispatches.
            elif isinstance(event, h2.events.DataReceived):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream[1].extend(event.data)
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self._dispatch(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self.streams.pop(event.stream_id, None)
                self.answering.discard(event.stream_id)
                self.waiting_window.pop(event.stream_id, None)
            elif isinstance(event, h2.events.WindowUpdated):
                self._send_waiting()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.transport.close()

    def _dispatch(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        self.answering.add(stream_id)
        headers, body = stream
        request = Request(headers.get(":method", ""), headers.get(":path", ""), headers, bytes(body), client_certificate=self.client_certificate)
        answer = self._handle(request)
        if isinstance(answer, Response):
            self._answer_h2_later(stream_id, answer)
        else:
            asyncio.ensure_future(self._await_h2(stream_id, answer))

    async def _await_h2(self, stream_id: int, answer: Awaitable[Response]) -> None:
        self._answer_h2_later(stream_id, await self._awaited(answer))

    def _answer_h2_later(self, stream_id: int, response: Response) -> None:
        latency = self.connections.latency_seconds if self.connections is not None else 0.0
        if latency > 0:
            asyncio.get_running_loop().call_later(latency, self._answer_h2, stream_id, response)
        else:
            self._answer_h2(stream_id, response)

    def _request_received(self, event) -> None:
        stream_id = event.stream_id
        if stream_id > self.highest_stream_id:
            self.highest_stream_id = stream_id
        known = _FIELDS.get
        headers = dict([known(field) or _decoded(field) for field in event.headers])
        self.streams[stream_id] = (headers, bytearray())
        if event.end_stream:
            self._dispatch(stream_id)

    def _stream_ended(self, event, kind) -> None:
        self.streams.pop(event.stream_id, None)
        self.answering.discard(event.stream_id)
        on_written = self.queued.pop(event.stream_id, None)
        if kind is ngh2.StreamClosed and event.error_code == 0 and on_written is not None:
            self._written(on_written)

    def _answer_h2(self, stream_id: int, response: Response) -> None:
        if stream_id not in self.answering or not self.alive():
            log.warning("stream %s gone before its answer (alive %s)", stream_id, self.alive())
            return  # reset by the client, or the connection went away meanwhile
        self.answering.remove(stream_id)
        headers = [(":status", str(response.status)), ("content-length", str(len(response.body))), *response.headers]
        try:
            self.h2.send_headers(stream_id, headers, end_stream=not response.body)
            if response.body:
                self._send_body(stream_id, response.body, response.on_written)
            else:
                self._written(response.on_written)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as error:
            log.warning("answer on stream %s failed: %r", stream_id, error)
            return
        if not self.receiving:  # an answer made while receiving goes out with the receive's own write
            self._schedule_flush()

    def _send_body(self, stream_id: int, body: bytes, on_written) -> None:
        if self.h2.local_flow_control_window(stream_id) < len(body):
            self.waiting_window[stream_id] = (body, on_written)
            return
        self.h2.send_data(stream_id, body, end_stream=True)
        self._written(on_written)

    def _send_waiting(self) -> None:
        for stream_id, (body, on_written) in list(self.waiting_window.items()):
            try:
                if self.h2.local_flow_control_window(stream_id) >= len(body):
                    del self.waiting_window[stream_id]
                    self.h2.send_data(stream_id, body, end_stream=True)
                    self._written(on_written)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                self.waiting_window.pop(stream_id, None)

    def _written(self, on_written) -> None:
        if on_written is not None and self.alive():
            on_written()

    def _handle(self, request: Request) -> Response | Awaitable[Response]:
        try:
            return self.handler(request)
        except Exception:  # noqa: BLE001 - a simulator bug must answer 500, not hang the stream
            log.exception("handler failed for %s %s", request.method, request.path)
            return Response.json(500, {"reason": "InternalServerError"})

    async def _awaited(self, answer: Awaitable[Response]) -> Response:
        try:
            return await answer
        except Exception:  # noqa: BLE001 - a simulator bug must answer 500, not hang the stream
            log.exception("handler failed")
            return Response.json(500, {"reason": "InternalServerError"})

    # --- HTTP/1.1 -----------------------------------------------------------------------------

    def _http1_next(self) -> None:
        if self.http1_busy:
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HTTP1_REQUEST:
                self.transport.close()
            return
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        try:
            method, target, _version = head[0].split(" ", 2)
        except ValueError:
            self.transport.close()
            return
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        if length > MAX_HTTP1_REQUEST:
            self.transport.close()
            return
        if len(self.buffer) < end + 4 + length:
            return
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        self.http1_busy = True
        request = Request(method, target, headers, body, http2=False, client_certificate=self.client_certificate)
        asyncio.ensure_future(self._answer_http1(request, headers))

    async def _answer_http1(self, request: Request, headers: dict) -> None:
        answer = self._handle(request)
        response = answer if isinstance(answer, Response) else await self._awaited(answer)
        latency = self.connections.latency_seconds if self.connections is not None else 0.0
        if latency > 0:
            await asyncio.sleep(latency)
        self.http1_busy = False
        if not self.alive():
            return
        lines = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Status')}", f"content-length: {len(response.body)}"]
        lines += [f"{name}: {value}" for name, value in response.headers]
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body)
        self._written(response.on_written)
        if headers.get("connection", "").lower() == "close":
            self.transport.close()
            return
        self._http1_next()



#: Header fields as received (bytes) → as handlers read them (text): the same few repeat on every request.
_FIELDS: dict[tuple[bytes, bytes], tuple[str, str]] = {}
#: Fields remembered at most (then forgotten all at once: a flood of distinct values stays bounded).
FIELDS_KEPT = 4096
#: Fields that differ on every request (the device token in the path, a notification's id): never remembered.
_UNIQUE_FIELDS = frozenset({b":path", b"apns-id", b"apns-collapse-id", b"apns-expiration"})


def _decoded(field: tuple[bytes, bytes]) -> tuple[str, str]:
    decoded = (field[0].decode("utf-8", "replace"), field[1].decode("utf-8", "replace"))
    if field[0] not in _UNIQUE_FIELDS:
        if len(_FIELDS) >= FIELDS_KEPT:
            _FIELDS.clear()
        _FIELDS[field] = decoded
    return decoded


#: ``:status`` values, encoded once.
_STATUS = {status: str(status).encode() for status in range(100, 600)}


class Ngh2ServerProtocol(ServerProtocol):
    """The same server with its HTTP/2 on libnghttp2 (``ngh2``'s server role): framing, HPACK, flow control in C.

    What stays in Python per request: one event for its headers (one more per DATA frame), the handler, and one
    call each for the answer's headers and body. nghttp2 validates what it receives (RFC 9113 §8) and queues
    a body the client's window does not take yet; ``on_written`` runs when the body was taken whole, or for a
    queued one when its stream closed normally (the last byte went out).
    """

    def _start_h2(self) -> None:
        self.h2 = ngh2.Connection(ngh2.Role.SERVER, ngh2.Configuration(peer_max_concurrent_streams=self.max_concurrent_streams))
        self.h2.initiate_connection({ngh2.Setting.MAX_CONCURRENT_STREAMS: self.max_concurrent_streams,
                                     ngh2.Setting.INITIAL_WINDOW_SIZE: RECEIVE_WINDOW, ngh2.Setting.ENABLE_PUSH: 0})
        self.h2.set_local_window_size(RECEIVE_WINDOW)
        self.highest_stream_id = 0
        #: Answered streams whose body nghttp2 still holds (the client's window): their ``on_written``.
        self.queued: dict[int, Callable | None] = {}
        self._flush()
        if self.connections is not None:
            self.connections.live.add(self)

    def goaway(self) -> None:
        if self.h2 is None or not self.alive():
            return
        try:
            self.h2.send_goaway(last_stream_id=self.highest_stream_id)
        except ngh2.NGH2Error as error:
            log.warning("GOAWAY failed: %r", error)
        self._flush()
        asyncio.get_running_loop().call_later(GOAWAY_CLOSE_SECONDS, self.transport.close)

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.alive():
            data = self.h2.data_to_send()
            if data:
                self.transport.write(data)
            if self.queued:
                self._closed_events(self.h2.events())

    def _closed_events(self, events) -> None:
        for event in events:
            if type(event) is ngh2.StreamClosed:
                on_written = self.queued.pop(event.stream_id, None)
                if event.error_code == 0 and on_written is not None:
                    self._written(on_written)
            elif type(event) is ngh2.ConnectionClosed:
                self.transport.close()

    def _h2_events(self, data: bytes) -> None:
        h2_connection = self.h2
        try:
            h2_connection.receive_data(data)
        except ngh2.NGH2Error:
            self._flush()  # nghttp2's GOAWAY, if it queued one
            self.transport.close()
            return
        streams = self.streams
        for event in h2_connection.events():
            kind = type(event)
            if kind is ngh2.RequestReceived:
                self._request_received(event)
            elif kind is ngh2.DataReceived:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream[1].extend(event.data)
                    if event.end_stream:
                        self._dispatch(event.stream_id)
            elif kind is ngh2.TrailersReceived:
                self._dispatch(event.stream_id)
            elif kind is ngh2.StreamReset or kind is ngh2.StreamClosed:
                self._stream_ended(event, kind)
            elif kind is ngh2.ConnectionClosed:
                self._flush()
                self.transport.close()
                return

    def _answer_h2(self, stream_id: int, response: Response) -> None:
        if stream_id not in self.answering or not self.alive():
            log.warning("stream %s gone before its answer (alive %s)", stream_id, self.alive())
            return  # reset by the client, or the connection went away meanwhile
        self.answering.remove(stream_id)
        body = response.body
        headers = [(b":status", _STATUS[response.status]), (b"content-length", str(len(body)).encode()),
                   *((name.encode(), value.encode()) for name, value in response.headers)]
        h2_connection = self.h2
        try:
            h2_connection.send_response(stream_id, headers, end_stream=not body)
            if body:
                h2_connection.send_data(stream_id, body, end_stream=True)
                if len(body) > h2_connection.stream_remote_window_size(stream_id) or len(body) > h2_connection.remote_window_size:
                    self.queued[stream_id] = response.on_written  # runs once the body went out (its stream closed)
                    if not self.receiving:
                        self._schedule_flush()
                    return
        except ngh2.NGH2Error as error:
            log.warning("answer on stream %s failed: %r", stream_id, error)
            return
        self._written(response.on_written)
        if not self.receiving:  # an answer made while receiving goes out with the receive's own write
            self._schedule_flush()

_REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 410: "Gone", 413: "Payload Too Large", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}


class AlertingTlsProtocol(sslproto.SSLProtocol):
    """asyncio's server-side TLS, sending the alert of a refused handshake before it closes.

    asyncio (3.11) leaves the alert OpenSSL wrote in its outgoing buffer and
    force-closes the socket, so a client refused over its certificate sees only
    a reset. Real servers (APNs among them) send the alert; so does this.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, app_protocol: asyncio.Protocol, context: ssl.SSLContext):
        super().__init__(loop, app_protocol, context, None, server_side=True)

    def _on_handshake_complete(self, handshake_exc) -> None:
        if handshake_exc is not None:
            self._process_outgoing()  # the alert, written before the transport is closed
        super()._on_handshake_complete(handshake_exc)


#: The HTTP/2 engine of the provider ports: ``ngh2`` (libnghttp2, the default) or ``h2`` (pure Python, as before; to compare).
HTTP2_ENGINE = os.environ.get("SIMULATOR_HTTP2_ENGINE", "ngh2")
PROTOCOLS = {"ngh2": Ngh2ServerProtocol, "h2": ServerProtocol}


async def serve(handler: Handler, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None,
                max_concurrent_streams: int = 1000, connections: Connections | None = None, reuse_port: bool = False,
                engine: str | None = None) -> asyncio.Server:
    """Listen on ``host:port``; ``reuse_port`` lets several processes listen on one port (``SO_REUSEPORT``).

    ``engine``: ``"ngh2"`` or ``"h2"`` (default: ``SIMULATOR_HTTP2_ENGINE``, else ngh2).
    """
    loop = asyncio.get_running_loop()
    kind = PROTOCOLS[engine or HTTP2_ENGINE]

    def protocol() -> asyncio.Protocol:
        served = kind(handler, max_concurrent_streams=max_concurrent_streams, connections=connections)
        return served if ssl_context is None else AlertingTlsProtocol(loop, served, ssl_context)

    return await loop.create_server(protocol, host, port, backlog=1024, reuse_port=reuse_port or None)
