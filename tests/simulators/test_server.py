"""The simulators' HTTP/2 server itself (``simulators/server.py``), in process, over TLS, with the delivery workers' client."""
from __future__ import annotations

import asyncio
import ssl

import pytest

from simulators.server import Connections, Response, serve
from simulators.tls import ensure_certificates, server_context
from workers.delivery.http2 import Http2Connection


def _serve_counting(tmp_path, *, engine: str, latency_seconds: float, awaited: bool):
    """Run bodyless and bodied requests against a handler that counts its calls; answer (calls, statuses)."""
    ca_file, cert_file, key_file = ensure_certificates(tmp_path / "certs")
    calls: list[tuple[str, str, bytes]] = []

    def handler(request):
        calls.append((request.method, request.path, request.body))
        response = Response.json(200, {"n": len(calls)})
        if not awaited:
            return response

        async def later():
            await asyncio.sleep(0.01)
            return response

        return later()

    async def main():
        server = await serve(handler, "127.0.0.1", 0, ssl_context=server_context(cert_file, key_file),
                             connections=Connections(latency_seconds=latency_seconds), engine=engine)
        port = server.sockets[0].getsockname()[1]
        context = ssl.create_default_context(cafile=str(ca_file))
        context.set_alpn_protocols(["h2"])
        connection = await Http2Connection.open("127.0.0.1", port, context)
        try:
            answers = [await connection.request("GET", "/health", [], b"", 5),
                       await connection.request("POST", "/empty", [], b"", 5),
                       await connection.request("POST", "/body", [("content-type", "application/json")], b"{}", 5)]
            await asyncio.sleep(3 * latency_seconds + 0.05)  # a second run of a handler would have happened by now
        finally:
            connection.close()
            server.close()
            await server.wait_closed()
        return calls, [answer.status for answer in answers]

    return asyncio.run(main())


@pytest.mark.parametrize("engine", ["ngh2", "h2"])
@pytest.mark.parametrize(("latency_seconds", "awaited"), [(0.0, False), (0.0, True), (0.05, False), (0.05, True)],
                         ids=["at-once", "awaited", "latency", "latency-awaited"])
def test_a_request_is_handled_once_with_or_without_a_body(tmp_path, engine, latency_seconds, awaited):
    # A bodyless request (END_STREAM on HEADERS) used to be handled twice when its answer did not go out at once:
    # h2 reports RequestReceived(stream_ended) and then StreamEnded for it, and each dispatched the stream.
    calls, statuses = _serve_counting(tmp_path, engine=engine, latency_seconds=latency_seconds, awaited=awaited)
    assert statuses == [200, 200, 200]
    assert calls == [("GET", "/health", b""), ("POST", "/empty", b""), ("POST", "/body", b"{}")]
