"""Slow clients cannot stall the API (issue 14 item 2), on the real stack.

Before: 16 connections sending a request body one byte every 5 s held every
Flask thread (gunicorn, 2 workers × 8 threads) and every route timed out;
connections sending their headers slowly, or nothing, were never closed. Now
the body is read whole in granian's event loop before the request takes a
thread (api/rsgi.py), with a deadline (408), and granian closes a connection
whose headers do not arrive within its header timeout.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
import requests

from devstack.stack import free_port
from tests.integration.test_http_serving import Connection, request

#: The load of the issue: bodies trickling, headers trickling, for this long.
SLOW_BODIES = 64
SLOW_HEADERS = 300
LOAD_SECONDS = 30.0
#: Seconds between two bytes of a slow client.
BYTE_EVERY_SECONDS = 5.0
#: What the status route must keep meanwhile (milliseconds, 99th percentile of its answers).
STATUS_P99_MS = 200.0
#: Seconds between two status requests while the load runs.
STATUS_EVERY_SECONDS = 0.1
#: The short timeouts of the second API (seconds), so a test sees them act.
SHORT_TIMEOUT_SECONDS = 2


async def trickle(port: int, head: bytes, stop: asyncio.Event, opened: list) -> None:
    """Open a connection, send ``head`` a byte every BYTE_EVERY_SECONDS until ``stop``, then close."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    opened.append(writer)
    try:
        for byte in head:
            writer.write(bytes([byte]))
            await writer.drain()
            try:
                await asyncio.wait_for(stop.wait(), BYTE_EVERY_SECONDS)
                return
            except TimeoutError:
                continue
    except OSError:
        pass  # the server closed it (header or body deadline): that is allowed
    finally:
        writer.close()


def run_slow_clients(port: int, session_id: str, stop_after: float, opened: list) -> None:
    body_head = (
        f"POST /session/{session_id}/call/new HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n"
    ).encode()

    async def main():
        stop = asyncio.Event()
        slow = []
        for _ in range(SLOW_BODIES):
            # The headers go at once; the body then arrives a byte at a time.
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(body_head)
            await writer.drain()
            opened.append(writer)
            slow.append(asyncio.create_task(trickle_body(writer, stop)))
        for _ in range(SLOW_HEADERS):
            slow.append(asyncio.create_task(trickle(port, request("GET", "/health"), stop, opened)))
        await asyncio.sleep(stop_after)
        stop.set()
        await asyncio.gather(*slow, return_exceptions=True)

    asyncio.run(main())


async def trickle_body(writer: asyncio.StreamWriter, stop: asyncio.Event) -> None:
    try:
        while not stop.is_set():
            writer.write(b" ")
            await writer.drain()
            try:
                await asyncio.wait_for(stop.wait(), BYTE_EVERY_SECONDS)
            except TimeoutError:
                continue
    except OSError:
        pass
    finally:
        writer.close()


@pytest.mark.timeout(180)
def test_slow_bodies_and_slow_headers_do_not_stall_the_status_route(stack):
    session_id = requests.post(f"{stack.api_url}/session/new", timeout=60).json()["sessionId"]
    port = int(stack.api_url.rsplit(":", 1)[1])
    opened: list = []
    load = threading.Thread(target=run_slow_clients, args=(port, session_id, LOAD_SECONDS, opened), daemon=True)
    load.start()
    deadline = time.monotonic() + 20
    while len(opened) < SLOW_BODIES + SLOW_HEADERS and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(opened) == SLOW_BODIES + SLOW_HEADERS, "the slow clients could not all connect"
    http = requests.Session()
    latencies, statuses = [], set()
    until = time.monotonic() + LOAD_SECONDS - 2
    while time.monotonic() < until:
        started = time.perf_counter()
        answer = http.get(f"{stack.api_url}/push/service/status", timeout=10)
        latencies.append((time.perf_counter() - started) * 1000)
        statuses.add(answer.status_code)
        time.sleep(STATUS_EVERY_SECONDS)
    load.join(LOAD_SECONDS + 30)
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    print(f"\nstatus while slow clients: {len(latencies)} requests, p50 {latencies[len(latencies) // 2]:.1f} ms, p99 {p99:.1f} ms")
    assert statuses == {200}
    assert p99 <= STATUS_P99_MS


@pytest.fixture(scope="module")
def short_timeouts(stack):
    """A second API whose header timeout and body deadline are SHORT_TIMEOUT_SECONDS."""
    name = "api-short-timeouts"
    url = stack.start_api(
        name=name, port=free_port(), env={"PUSH_API_BODY_TIMEOUT_SECONDS": str(SHORT_TIMEOUT_SECONDS)},
        header_timeout_ms=SHORT_TIMEOUT_SECONDS * 1000,
    )
    yield url
    stack.stop(name)


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(short_timeouts):
    connection = Connection(short_timeouts)
    started = time.monotonic()
    try:
        assert connection.closed_by_server(timeout=SHORT_TIMEOUT_SECONDS + 5)
        assert time.monotonic() - started >= SHORT_TIMEOUT_SECONDS - 0.5
    finally:
        connection.close()


def test_headers_sent_slowly_are_cut_off_at_the_header_timeout(short_timeouts):
    connection = Connection(short_timeouts)
    started = time.monotonic()
    closed = False
    try:
        for byte in request("GET", "/health"):
            try:
                connection.send(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.5)
        assert closed or connection.closed_by_server(timeout=1)
        assert time.monotonic() - started < SHORT_TIMEOUT_SECONDS + 3
    finally:
        connection.close()


def test_a_body_that_trickles_past_the_deadline_is_a_408_in_the_familys_envelope_and_closed(short_timeouts):
    session_id = requests.post(f"{short_timeouts}/session/new", timeout=60).json()["sessionId"]
    connection = Connection(short_timeouts)
    try:
        connection.send(request("POST", f"/session/{session_id}/call/new", headers={"Content-Type": "application/json"}, body=b"")
                        .replace(b"Content-Length: 0", b"Content-Length: 100"))
        started = time.monotonic()
        answered = threading.Event()

        def keep_trickling():
            while not answered.is_set():
                try:
                    connection.send(b" ")
                except OSError:
                    return
                time.sleep(0.5)

        threading.Thread(target=keep_trickling, daemon=True).start()
        status, headers, body = connection.answer()
        answered.set()
        assert status == 408 and json.loads(body)["message"]  # the bridge's envelope
        assert SHORT_TIMEOUT_SECONDS - 0.5 <= time.monotonic() - started < SHORT_TIMEOUT_SECONDS + 5
        assert headers["connection"] == "close"
    finally:
        connection.close()


def test_a_keep_alive_connection_idle_past_the_header_timeout_is_closed(short_timeouts):
    """granian's header timeout also bounds the idle time between two requests (so: the keep-alive time)."""
    connection = Connection(short_timeouts)
    try:
        connection.send(request("GET", "/health"))
        assert connection.answer()[0] == 200
        assert connection.closed_by_server(timeout=SHORT_TIMEOUT_SECONDS + 5)
    except (TimeoutError, ConnectionResetError):
        pytest.fail("not closed after the header timeout")
    finally:
        connection.close()
