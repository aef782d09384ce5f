"""The API's HTTP serving (granian, api/rsgi.py: polls in its event loop, Flask in threads), on raw sockets.

What a client of the one public port relies on: pipelined and kept-alive
requests answered in order, request bodies sent chunked or after ``100
Continue``, ``HEAD``, refusals of oversized requests, body limits that hold
for chunked bodies, a graceful stop, a poll that sees a write as soon as the
write was answered, and clients that send slowly (or nothing) not stalling
anyone else (tests/integration/test_slow_clients.py).
"""
from __future__ import annotations

import json
import socket
import threading
import time
import uuid

import pytest
import requests

from devstack.stack import free_port

PAYLOAD = {"data": "5f2a", "hmac": "9c1e", "iv": "00ff"}
#: Seconds a raw read waits before the test fails (a hang is a failure, not a wait).
READ_TIMEOUT = 10.0


class Connection:
    """One raw HTTP/1.1 connection: write bytes, read answers one by one (Content-Length or chunked)."""

    def __init__(self, url: str):
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=READ_TIMEOUT)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def _take_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            if not self._fill():
                raise ConnectionError(f"closed before {marker!r}; read {self.buffer!r}")
        head, self.buffer = self.buffer.split(marker, 1)
        return head

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise ConnectionError("closed in the middle of a body")
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def answer(self, *, head_request: bool = False) -> tuple[int, dict, bytes]:
        """The next answer: status, headers (lower-case names), body."""
        lines = self._take_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if head_request or status in (100, 204, 304):
            return status, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int(self._take_until(b"\r\n"), 16):
                body += self._take(size)
                self._take(2)
            self._take(2)
            return status, headers, body
        return status, headers, self._take(int(headers.get("content-length", 0)))

    def closed_by_server(self, timeout: float = READ_TIMEOUT) -> bool:
        """Whether the server closes the connection (nothing more is read) within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            return not self._fill() and self.buffer == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        finally:
            self.sock.settimeout(READ_TIMEOUT)

    def close(self) -> None:
        self.sock.close()


def request(method: str, path: str, *, body: bytes | None = None, headers: dict | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def put_body(payload: dict) -> bytes:
    return json.dumps({"encryptionPayload": payload}).encode()


@pytest.fixture
def connection(stack):
    opened = Connection(stack.api_url)
    yield opened
    opened.close()


def new_session(stack) -> str:
    return requests.post(f"{stack.api_url}/session/new", timeout=60).json()["sessionId"]


def session_with_details(stack) -> str:
    session_id = new_session(stack)
    requests.put(f"{stack.api_url}/session/{session_id}", json={"encryptionPayload": PAYLOAD}, timeout=60).raise_for_status()
    return session_id


# --- the polls --------------------------------------------------------------------------------------

def test_pipelined_polls_and_other_requests_on_one_connection_are_answered_in_order(stack, connection):
    full, empty = session_with_details(stack), new_session(stack)
    connection.send(
        request("GET", f"/session/{full}")
        + request("GET", f"/session/{empty}")
        + request("GET", "/health")  # a Flask route between two polls
        + request("GET", f"/call-status/{uuid.uuid4()}")
        + request("GET", f"/session/{full}")
    )
    answers = [connection.answer() for _ in range(5)]
    assert [status for status, _, _ in answers] == [200, 204, 200, 204, 200]
    assert json.loads(answers[0][2])["encryptionPayload"] == json.loads(answers[4][2])["encryptionPayload"] == PAYLOAD
    assert answers[2][2].startswith(b"OK")
    assert answers[1][2] == answers[3][2] == b""


def test_poll_answers_carry_the_routes_headers(stack, connection):
    full, empty = session_with_details(stack), new_session(stack)
    connection.send(request("GET", f"/session/{full}"))
    status, headers, body = connection.answer()
    assert status == 200 and headers["content-type"] == "application/json" and int(headers["content-length"]) == len(body)
    connection.send(request("GET", f"/session/{empty}"))
    status, headers, body = connection.answer()
    # A 204 carries no Content-Length (RFC 9110 section 8.6).
    assert status == 204 and headers["content-type"].startswith("text/plain") and "content-length" not in headers


def test_a_kept_alive_connection_serves_many_requests(stack, connection):
    session_id = session_with_details(stack)
    for n in range(50):
        path = f"/session/{session_id}" if n % 2 else "/health"
        connection.send(request("GET", path))
        status, headers, _ = connection.answer()
        assert status == 200 and headers.get("connection", "keep-alive").lower() != "close", n


def test_a_poll_sees_a_put_as_soon_as_the_put_was_answered(stack, connection):
    session_id = new_session(stack)
    connection.send(request("GET", f"/session/{session_id}"))
    assert connection.answer()[0] == 204  # now in this process's poll cache
    for n in range(10):
        payload = {**PAYLOAD, "data": f"write-{n}"}
        connection.send(request("PUT", f"/session/{session_id}", body=put_body(payload), headers={"Content-Type": "application/json"}))
        assert connection.answer()[0] == 200
        connection.send(request("GET", f"/session/{session_id}"))
        status, _, body = connection.answer()
        assert status == 200 and json.loads(body)["encryptionPayload"] == payload, n


def test_a_large_answer_read_slowly_arrives_whole_before_the_next_one(stack, connection):
    """/openapi.json is far larger than the socket's buffers: the app's thread waits for the client, nothing is lost."""
    session_id = session_with_details(stack)
    connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    connection.send(request("GET", "/openapi.json") + request("GET", f"/session/{session_id}"))
    time.sleep(1.0)  # the server fills the buffers and has to wait
    status, headers, document = connection.answer()
    assert status == 200 and len(document) > 100_000
    assert json.loads(document)["paths"]
    status, _, polled = connection.answer()
    assert status == 200 and json.loads(polled)["encryptionPayload"] == PAYLOAD


# --- request bodies ---------------------------------------------------------------------------------

def test_a_chunked_body_is_read(stack, connection):
    session_id = new_session(stack)
    body = put_body(PAYLOAD)
    chunked = b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (body[:10], body[10:])) + b"0\r\n\r\n"
    head = f"PUT /session/{session_id} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
    connection.send(head.encode() + chunked + request("GET", f"/session/{session_id}"))
    assert connection.answer()[0] == 200
    status, _, polled = connection.answer()
    assert status == 200 and json.loads(polled)["encryptionPayload"] == PAYLOAD


def test_expect_100_continue_is_answered_before_the_body_is_sent(stack, connection):
    session_id = new_session(stack)
    body = put_body(PAYLOAD)
    head = request("PUT", f"/session/{session_id}", headers={"Expect": "100-continue", "Content-Type": "application/json"}, body=b"")
    head = head.replace(b"Content-Length: 0", f"Content-Length: {len(body)}".encode())
    connection.send(head)
    assert connection.answer()[0] == 100
    connection.send(body)
    assert connection.answer()[0] == 200
    assert requests.get(f"{stack.api_url}/session/{session_id}", timeout=10).json()["encryptionPayload"] == PAYLOAD


def test_head_answers_the_gets_headers_without_a_body(stack, connection):
    session_id = session_with_details(stack)
    connection.send(request("GET", f"/session/{session_id}"))
    _, _, get_body = connection.answer()
    connection.send(request("HEAD", f"/session/{session_id}") + request("GET", "/health"))
    status, headers, _ = connection.answer(head_request=True)
    assert status == 200 and int(headers["content-length"]) == len(get_body)
    # No body followed the HEAD answer: the next answer is the pipelined GET's.
    status, _, body = connection.answer()
    assert status == 200 and body.startswith(b"OK")


# --- limits -----------------------------------------------------------------------------------------

def test_a_long_request_line_within_the_servers_buffer_is_served(stack, connection):
    """gunicorn refused request lines over 4094 bytes (414); granian serves any that fits its 8 KB buffer."""
    connection.send(request("GET", "/session/" + "a" * 7000))
    assert connection.answer()[0] == 204  # an id longer than any session's: absent


@pytest.mark.parametrize(
    "data",
    [
        request("GET", "/session/" + "a" * 9000),
        request("GET", "/health", headers={"X-Big": "b" * 9000}),
        request("GET", "/health", headers={f"X-Many-{n}": "v" for n in range(200)}),
    ],
    ids=["request-line", "header-size", "header-count"],
)
def test_oversized_requests_are_refused_with_a_431_and_closed(stack, connection, data):
    connection.send(data)
    status, headers, page = connection.answer()
    # granian's own refusal, as the API document describes it: no body, no Content-Type, connection closed.
    assert status == 431 and headers["content-length"] == "0" and "content-type" not in headers and page == b""
    assert headers["connection"] == "close" and connection.closed_by_server()
    document = requests.get(f"{stack.api_url}/openapi.json", timeout=30).json()
    assert "content" not in document["paths"]["/health"]["get"]["responses"]["431"]


def test_a_malformed_request_is_the_servers_400_and_closed(stack, connection):
    connection.send(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: x\r\n\r\n")
    status, headers, page = connection.answer()
    assert status == 400 and page == b"" and connection.closed_by_server()


# --- body limits ------------------------------------------------------------------------------------

def chunked_head(path: str) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n".encode()


def test_a_2mb_chunked_body_is_a_413_in_the_familys_envelope(stack, connection):
    """Issue 14: this answered 400 (the body was cut at the limit and parsed); the route's limit is 128 KB."""
    body = json.dumps({"requestObject": {"appId": "demo", "platform": "ios", "token": "t" * (2 * 1024 * 1024)}}).encode()
    chunks = b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (body[i:i + 65536] for i in range(0, len(body), 65536)))
    connection.send(chunked_head("/push/device/create"))
    try:
        connection.send(chunks + b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed before the rest arrived, which is allowed
    status, headers, answer = connection.answer()
    assert status == 413 and json.loads(answer)["status"] == "ERROR"
    assert json.loads(answer)["responseObject"]["code"] == "ERROR_HTTP_413"


def test_a_chunked_body_over_the_limit_is_refused_without_reading_the_rest(stack, connection):
    """Only the limit (+1 byte) is read: the 413 comes although the body never ends."""
    connection.send(chunked_head("/push/device/create") + f"{200 * 1024:x}\r\n".encode() + b"x" * 200 * 1024 + b"\r\n")
    status, headers, answer = connection.answer()
    assert status == 413 and json.loads(answer)["responseObject"]["code"] == "ERROR_HTTP_413"
    assert headers["connection"] == "close" and connection.closed_by_server()


def test_a_chunked_body_within_the_limit_of_a_large_route_is_read_whole(stack, connection):
    """The batch route takes 16 MB: a 1 MB chunked batch is read whole and validated (an unknown app: 400 naming it)."""
    batch = [{"userId": f"u{n}", "body": {"title": "t" * 900}} for n in range(1000)]
    body = json.dumps({"requestObject": {"appId": "no-such-app", "mode": "ASYNCHRONOUS", "batch": batch}}).encode()
    assert len(body) > 900_000
    chunks = b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (body[i:i + 4000] for i in range(0, len(body), 4000)))
    connection.send(chunked_head("/push/message/batch/send") + chunks + b"0\r\n\r\n")
    status, _, answer = connection.answer()
    assert status in (400, 404) and "no-such-app" in answer.decode(), answer[:300]


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(stack, connection):
    head = request("POST", "/session/new", headers={"Content-Type": "application/json"}, body=b"")
    connection.send(head.replace(b"Content-Length: 0", f"Content-Length: {2 * 1024 * 1024}".encode()))
    status, headers, answer = connection.answer()
    assert status == 413 and "message" in json.loads(answer)  # the bridge's envelope
    assert connection.closed_by_server()


# --- stopping ---------------------------------------------------------------------------------------

def test_a_stop_finishes_the_request_in_flight_and_closes_idle_connections(stack):
    """SIGTERM: the PUT whose body is still arriving is answered, the idle connection closed, the process exits 0."""
    url = stack.start_api(name="api-stop", port=free_port())
    process = stack.processes["api-stop"]
    session_id = requests.post(f"{url}/session/new", timeout=60).json()["sessionId"]
    idle, busy = Connection(url), Connection(url)
    try:
        idle.send(request("GET", f"/session/{session_id}"))
        assert idle.answer()[0] == 204
        body = put_body(PAYLOAD)
        rest = len(body) // 2
        busy.send(request("PUT", f"/session/{session_id}", body=body, headers={"Content-Type": "application/json"})[:-rest])
        time.sleep(0.5)  # the app is reading the body
        stopping = threading.Thread(target=stack.stop, args=("api-stop",))
        started = time.monotonic()
        stopping.start()
        assert idle.closed_by_server(timeout=5)
        busy.send(body[-rest:])
        status, headers, _ = busy.answer()
        assert status == 200 and headers.get("connection", "").lower() == "close"
        stopping.join()
        assert process.returncode == 0 and time.monotonic() - started < 8
    finally:
        idle.close()
        busy.close()
        stack.stop("api-stop")
    assert requests.get(f"{stack.api_url}/session/{session_id}", timeout=10).json()["encryptionPayload"] == PAYLOAD
