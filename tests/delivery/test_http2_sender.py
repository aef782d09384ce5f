"""What the HTTP/2 sender must keep doing, against real HTTP/2 servers over TLS on 127.0.0.1.

The simulators' server (``simulators.server.serve``) with handlers of the test's
own, and for GOAWAY with a chosen last stream id a few lines of ``h2`` server
(the simulators' GOAWAY names the highest stream they received, so which
streams it leaves unprocessed would be a race).
"""
from __future__ import annotations

import asyncio
import ssl

import h2.config
import h2.connection
import h2.events
import pytest

from simulators import server as simulator_server
from simulators.server import Connections, Response, serve
from simulators.tls import ensure_certificates, server_context
from workers.delivery import http2
from workers.delivery.http2 import Http2Pool, TransportError

#: Every request carries a body, as the providers' do (the simulators' server dispatches a request
#: without one twice: h2 reports its end both in RequestReceived and as StreamEnded).
BODY = b"{}"


def _headers(pool: Http2Pool, path: str) -> list[tuple[bytes, bytes]]:
    return [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", pool.authority), (b":path", path.encode())]


def _client_context(ca) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    return context


async def _serving(tmp_path, handler, **options):
    """(server, origin, client TLS context) for ``handler`` behind the simulators' HTTP/2 server."""
    ca, cert, key = ensure_certificates(tmp_path)
    server = await serve(handler, "127.0.0.1", 0, ssl_context=server_context(cert, key), **options)
    return server, f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}", _client_context(ca)


def test_a_body_larger_than_the_servers_window_arrives_whole(tmp_path, monkeypatch):
    # The server grants 1,000 bytes per stream and per connection: the body goes out as WINDOW_UPDATEs come.
    monkeypatch.setattr(simulator_server, "RECEIVE_WINDOW", 1_000)
    body = bytes(range(256)) * 800  # 204,800 bytes

    async def handler(request):
        return Response(200, str(len(request.body)).encode() + b" " + request.body[-4:])

    async def main():
        server, origin, context = await _serving(tmp_path, handler)
        pool = Http2Pool(origin, context, connections=1)
        try:
            answers = await asyncio.gather(*(pool.request(_headers(pool, f"/{i}"), body) for i in range(3)))
        finally:
            await pool.close()
            server.close()
        return answers

    answers = asyncio.run(main())
    assert [(a.status, a.body) for a in answers] == [(200, b"204800 " + body[-4:])] * 3


def test_streams_stay_within_the_servers_max_concurrent_streams_over_the_pools_connections(tmp_path):
    load = {"now": 0, "most": 0}

    async def handler(request):
        load["now"] += 1
        load["most"] = max(load["most"], load["now"])
        await asyncio.sleep(0.05)
        load["now"] -= 1
        return Response(200)

    async def main():
        server, origin, context = await _serving(tmp_path, handler, max_concurrent_streams=5)
        pool = Http2Pool(origin, context, connections=2)
        try:
            answers = await asyncio.gather(*(pool.request(_headers(pool, f"/{i}"), BODY) for i in range(60)))
            return answers, [c.max_streams for c in pool.connections], [len(c.streams) for c in pool.connections]
        finally:
            await pool.close()
            server.close()

    answers, max_streams, streams = asyncio.run(main())
    assert [a.status for a in answers] == [200] * 60
    assert max_streams == [5, 5]  # two connections, each taking the server's limit
    assert load["most"] == 10  # both full, never more (the server would refuse the excess streams)
    assert streams == [0, 0]


def test_a_request_past_its_timeout_fails_as_transport_error_and_the_connection_serves_on(tmp_path):
    async def handler(request):
        if request.path == "/slow":
            await asyncio.sleep(3)
        return Response(200, b"ok")

    async def main():
        server, origin, context = await _serving(tmp_path, handler)
        pool = Http2Pool(origin, context, connections=1, request_timeout=0.3)
        try:
            slow = asyncio.ensure_future(pool.request(_headers(pool, "/slow"), BODY))
            quick = await pool.request(_headers(pool, "/quick"), BODY)
            with pytest.raises(TransportError, match="no answer within 0.3s"):
                await slow
            after = await pool.request(_headers(pool, "/after"), BODY)
            return quick, after, len(pool.connections)
        finally:
            await pool.close()
            server.close()

    quick, after, connections = asyncio.run(main())
    assert (quick.status, quick.body, after.status) == (200, b"ok", 200)
    assert connections == 1  # the timed-out stream was reset, not the connection


def test_a_lost_connection_fails_its_requests_and_the_next_request_opens_a_new_one(tmp_path):
    connections = Connections()

    async def handler(request):
        if request.path == "/drop":
            await asyncio.sleep(0.1)
            for protocol in list(connections.live):
                protocol.transport.abort()
            await asyncio.sleep(1)
        return Response(200)

    async def main():
        server, origin, context = await _serving(tmp_path, handler, connections=connections)
        pool = Http2Pool(origin, context, connections=1)
        try:
            with pytest.raises(TransportError):
                await pool.request(_headers(pool, "/drop"), BODY)
            after = await pool.request(_headers(pool, "/after"), BODY)
            return after, len([c for c in pool.connections if not c.closed])
        finally:
            await pool.close()
            server.close()

    after, live = asyncio.run(main())
    assert after.status == 200 and live == 1


class _GoawayServer(asyncio.Protocol):
    """An ``h2`` server that, once it has ``requests`` requests, answers the first and says GOAWAY naming it."""

    def __init__(self, requests: int):
        self.requests = requests
        self.received: list[int] = []
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))

    def connection_made(self, transport):
        self.transport = transport
        self.h2.initiate_connection()
        transport.write(self.h2.data_to_send())

    def data_received(self, data):
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                self.received.append(event.stream_id)
        if len(self.received) >= self.requests and self.h2.state_machine.state != h2.connection.ConnectionState.CLOSED:
            first = self.received[0]
            self.h2.send_headers(first, [(":status", "200")], end_stream=True)
            self.h2.close_connection(last_stream_id=first)
        self.transport.write(self.h2.data_to_send())


def test_goaway_fails_the_unprocessed_streams_as_retryable_and_the_processed_one_finishes(tmp_path):
    ca, cert, key = ensure_certificates(tmp_path)

    async def main():
        loop = asyncio.get_running_loop()
        servers: list[_GoawayServer] = []

        def protocol():
            servers.append(_GoawayServer(requests=3))
            return servers[-1]

        tls = server_context(cert, key)
        server = await loop.create_server(protocol, "127.0.0.1", 0, ssl=tls)
        pool = Http2Pool(f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}", _client_context(ca), connections=1)
        try:
            results = await asyncio.gather(*(pool.request(_headers(pool, f"/{i}")) for i in range(3)), return_exceptions=True)
            return results, servers
        finally:
            await pool.close()
            server.close()

    results, servers = asyncio.run(main())
    assert results[0].status == 200
    assert all(isinstance(r, TransportError) and "GOAWAY" in str(r) for r in results[1:])
    assert servers[0].received == [1, 3, 5]


def test_a_connection_is_retired_after_its_request_budget_without_failing_a_request(tmp_path, monkeypatch):
    monkeypatch.setattr(http2, "MAX_REQUESTS_PER_CONNECTION", 25)

    async def handler(request):
        return Response(200)

    async def main():
        server, origin, context = await _serving(tmp_path, handler)
        pool = Http2Pool(origin, context, connections=2)
        seen = {}
        try:
            for start in range(0, 200, 40):
                answers = await asyncio.gather(*(pool.request(_headers(pool, f"/{i}"), BODY) for i in range(start, start + 40)))
                assert [a.status for a in answers] == [200] * 40
                seen.update({id(c): c for c in pool.connections})
        finally:
            await pool.close()
            server.close()
        return list(seen.values())

    connections = asyncio.run(main())
    assert len(connections) >= 200 // 25
    assert max(c.requests_started for c in connections) <= 25


def test_a_single_connections_request_times_out_alone_and_the_connection_serves_on(tmp_path):
    async def handler(request):
        if request.path == "/slow":
            await asyncio.sleep(3)
        return Response(200, b"ok")

    async def main():
        server, origin, context = await _serving(tmp_path, handler)
        port = int(origin.rsplit(":", 1)[1])
        connection = await http2.Http2Connection.open("127.0.0.1", port, context)
        try:
            with pytest.raises(TransportError, match="no answer within 0.3s"):
                await connection.request("POST", "/slow", [("content-type", "application/json")], BODY, 0.3)
            answer = await connection.request("POST", "/quick", [("content-type", "application/json")], BODY, 5)
            return answer, len(connection.streams), connection.closed
        finally:
            connection.close()
            server.close()

    answer, streams, closed = asyncio.run(main())
    assert (answer.status, answer.body, streams, closed) == (200, b"ok", 0, False)
