"""The API worker's ASGI side without a server: the polls answered in the loop, the WSGI bridge's environ and exchange."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import orjson
import pytest

from api import wc_bridge
from api.poll_worker import PollFrontend
from api.wsgi_bridge import WsgiBridge
from shared import db as collections
from tests.unit.test_wc_bridge import assert_payload_answer, polled_db

#: gunicorn settings the bridge's base environ reads.
CFG = SimpleNamespace(errorlog="-", workers=2)


def scope(method: str, path: str, *, raw_path: bytes | None = None, query: bytes = b"", headers=()) -> dict:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": raw_path if raw_path is not None else path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": list(headers),
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.7", 50123),
    }


def body_messages(*pieces: bytes):
    """An ASGI receive that hands out ``pieces`` as the request body."""
    messages = [{"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1} for i, piece in enumerate(pieces)]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return receive


async def call(app, request_scope: dict, receive=None) -> list[dict]:
    sent = []

    async def send(message):
        sent.append(message)

    await app(request_scope, receive or body_messages(b""), send)
    return sent


class Fallback:
    """Stands in for the WSGI bridge: records what reached it."""

    def __init__(self):
        self.paths = []

    async def __call__(self, request_scope, receive, send):
        self.paths.append(request_scope["path"])
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b"flask"})


def frontend(db=None, fresh_seconds: float = 0.0):
    fallback = Fallback()
    db = db or polled_db()
    return PollFrontend(wc_bridge.PollReader(db, fresh_seconds=fresh_seconds), fallback), db, fallback


# --- the polls --------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/session/ready", 200, {"data": "d"}),
        ("/session/waiting", 204, None),
        ("/session/old", 204, None),
        ("/call-status/c1", 200, "s"),
        ("/call-status/unknown", 204, None),
    ],
)
def test_polls_are_answered_in_the_loop_as_the_routes_answer(path, status, body):
    app, _, fallback = frontend()
    start, answer = asyncio.run(call(app, scope("GET", path)))
    headers = dict(start["headers"])
    assert start["status"] == status and not fallback.paths
    if body is None:
        assert answer["body"] == b"" and headers[b"Content-Type"] == b"text/plain"
    else:
        assert_payload_answer(orjson.loads(answer["body"]), body, ttl_seconds=3600)
        assert headers[b"Content-Type"] == b"application/json"
        assert headers[b"Content-Length"] == str(len(answer["body"])).encode()


@pytest.mark.parametrize(
    ("method", "path"),
    [("PUT", "/session/ready"), ("HEAD", "/session/ready"), ("GET", "/session/ready/calls"), ("GET", "/health"), ("GET", "/session/" + "x" * 300)],
)
def test_everything_else_goes_to_the_fallback(method, path):
    app, _, fallback = frontend()
    assert asyncio.run(call(app, scope(method, path)))[0]["status"] == 418
    assert fallback.paths == [path]


def test_a_failed_read_goes_to_the_fallback():
    app, db, fallback = frontend()

    def broken(query, projection=None):
        raise ConnectionError("database down")

    db[collections.WC_SESSIONS].find = broken
    assert asyncio.run(call(app, scope("GET", "/session/ready")))[0]["status"] == 418
    assert fallback.paths == ["/session/ready"]


def test_polls_waiting_in_one_loop_share_batched_reads():
    app, db, _ = frontend(polled_db(delay=0.05))
    keys = ["ready", "waiting", "unknown"] * 20

    async def main():
        return await asyncio.gather(*(call(app, scope("GET", f"/session/{key}")) for key in keys))

    answers = asyncio.run(main())
    assert [start["status"] for start, _ in answers] == [200, 204, 204] * 20
    queries = db[collections.WC_SESSIONS].queries
    assert len(queries) <= 3 and sum(len(q["_id"]["$in"]) for q, _ in queries) <= 9


# --- the WSGI bridge --------------------------------------------------------------------------------

def test_the_environ_is_the_one_gunicorns_wsgi_workers_build():
    bridge = WsgiBridge(None, None, CFG)
    headers = [(b"host", b"api"), (b"content-type", b"application/json"), (b"content-length", b"12"), (b"x-tag", b"a"), (b"x-tag", b"b")]
    environ = bridge.environ(
        scope("POST", "/session/é x", raw_path=b"/session/%C3%A9%20x", query=b"a=1&b=%20", headers=headers), body=None
    )
    assert environ["PATH_INFO"] == "/session/é x".encode().decode("latin-1")
    assert environ["RAW_URI"] == "/session/%C3%A9%20x?a=1&b=%20" and environ["QUERY_STRING"] == "a=1&b=%20"
    assert environ["CONTENT_TYPE"] == "application/json" and environ["CONTENT_LENGTH"] == "12"
    assert "HTTP_CONTENT_TYPE" not in environ and environ["HTTP_X_TAG"] == "a,b" and environ["HTTP_HOST"] == "api"
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("127.0.0.7", "50123")
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"], environ["SERVER_PROTOCOL"]) == ("127.0.0.1", "8080", "HTTP/1.1")
    assert environ["wsgi.input_terminated"] is True and environ["wsgi.url_scheme"] == "http"


def run_bridge(app, request_scope: dict, receive) -> list[dict]:
    with ThreadPoolExecutor(2) as pool:
        return asyncio.run(call(WsgiBridge(app, pool, CFG), request_scope, receive))


def test_the_body_is_read_piece_by_piece_as_the_app_asks():
    read = {}

    def app(environ, start_response):
        stream = environ["wsgi.input"]
        read["line"] = stream.readline()
        read["five"] = stream.read(5)
        read["rest"] = stream.read()
        read["after"] = stream.read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    sent = run_bridge(app, scope("POST", "/x"), body_messages(b"first ", b"line\nsec", b"ond and ", b"the rest"))
    assert read == {"line": b"first line\n", "five": b"secon", "rest": b"d and the rest", "after": b""}
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0] == {"type": "http.response.start", "status": 200, "headers": [(b"Content-Type", b"text/plain")]}
    assert sent[1] == {"type": "http.response.body", "body": b"done", "more_body": False}


def test_a_client_gone_mid_body_ends_the_body():
    def app(environ, start_response):
        body = environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [str(len(body)).encode()]

    async def receive_then_gone(pieces=[{"type": "http.request", "body": b"abc", "more_body": True}]):  # noqa: B006
        return pieces.pop() if pieces else {"type": "http.disconnect"}

    assert run_bridge(app, scope("PUT", "/x"), receive_then_gone)[-1]["body"] == b"3"


def test_a_streamed_answer_goes_out_piece_by_piece_and_closes_the_iterable():
    closed = []

    class Pieces:
        def __iter__(self):
            yield b"one"
            yield b""
            yield b"two"
            yield b"three"

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("404 NOT FOUND", [("X-A", "1")])
        return Pieces()

    sent = run_bridge(app, scope("GET", "/x"), body_messages(b""))
    assert sent[0]["status"] == 404 and sent[0]["headers"] == [(b"X-A", b"1")]
    assert [(m["body"], m["more_body"]) for m in sent[1:]] == [(b"one", True), (b"two", True), (b"three", False)]
    assert closed == [True]


def test_an_empty_answer_still_sends_its_headers():
    def app(environ, start_response):
        start_response("204 NO CONTENT", [("Content-Type", "text/plain")])
        return []

    sent = run_bridge(app, scope("DELETE", "/x"), body_messages(b""))
    assert sent[0]["status"] == 204 and sent[1] == {"type": "http.response.body", "body": b"", "more_body": False}
