"""The HTTP/2 pool against the real APNs simulator server (in-process, TLS on 127.0.0.1)."""
from __future__ import annotations

import asyncio
import ssl

from devstack.credentials import make_credentials
from simulators.apns import ApnsSimulator
from simulators.server import Request, serve
from simulators.tls import ensure_certificates, server_context
from workers.delivery import http2
from workers.delivery.apns import ApnsClient, ApnsRequest, ApnsTokenSigner


async def _run(tmp_path, requests: int, *, budget: int, monkeypatch) -> tuple[list[int], list[int], int]:
    monkeypatch.setattr(http2, "MAX_REQUESTS_PER_CONNECTION", budget, raising=False)
    ca, cert, key = ensure_certificates(tmp_path)
    simulator = ApnsSimulator()
    credentials = make_credentials("pool", fcm_origin="https://127.0.0.1:1")
    simulator.add_key(Request("POST", "/keys", {}, (
        b'{"key_id": "%s", "team_id": "%s", "public_key_pem": %s}'
        % (credentials.key_id.encode(), credentials.team_id.encode(), __import__("json").dumps(credentials.apns_public_pem).encode())
    ), http2=False))
    server = await serve(simulator.handle, "127.0.0.1", 0, ssl_context=server_context(cert, key))
    port = server.sockets[0].getsockname()[1]
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    client = ApnsClient(
        origin=f"https://127.0.0.1:{port}",
        signer=ApnsTokenSigner(key_id=credentials.key_id, team_id=credentials.team_id, private_key_pem=credentials.apns_key_pem),
        topic="com.example.pool", ssl_context=context, connections=2,
    )
    seen: dict[int, http2.Http2Connection] = {}
    closed_streams: list[int] = []

    async def one(i: int) -> int:
        answer = await client.send(ApnsRequest(token=f"0{i:063x}", payload=b'{"aps":{"alert":"x"}}'))
        for connection in client.pool.connections:
            seen[id(connection)] = connection
            closed_streams.append(connection.requests_started)
        return answer.status

    statuses = []
    for start in range(0, requests, 20):
        statuses += await asyncio.gather(*(one(i) for i in range(start, start + 20)))
    await client.close()
    server.close()
    return statuses, closed_streams, len(seen)


def test_connections_are_replaced_after_their_request_budget_and_nothing_is_lost(tmp_path, monkeypatch):
    statuses, closed_streams, connections = asyncio.run(_run(tmp_path, 300, budget=50, monkeypatch=monkeypatch))
    assert statuses == [200] * 300
    assert connections >= 300 // 50  # replaced as they spent their budget
    # No connection carries more than its budget (the h2 state machine once remembered every one of them).
    assert max(closed_streams) <= 50


def test_the_default_budget_is_large_enough_to_amortise_the_handshake():
    assert 1_000 <= getattr(http2, "MAX_REQUESTS_PER_CONNECTION", 0) <= 1_000_000
