"""The API as granian's RSGI app: polls answered in the event loop, bodies read whole before Flask runs.

``granian --interface rsgi --factory api.rsgi:create_app``

granian parses HTTP (keep-alive, pipelining, chunked bodies,
``Expect: 100-continue``, HEAD, its request-size refusals and header read
timeout) and calls this app in an asyncio loop per worker process. The app
adds what granian leaves to the application (README "HTTP server"):

- **A body is read whole before the request takes a thread**
  (:mod:`api.request_body`): at most one byte past the route's limit
  (:func:`api.limits.body_limit_of`), so a chunked body over it reaches Flask
  as a body of that length and is the route's 413; within
  ``api_body_timeout_seconds``, else Flask answers 408. Either way the rest
  of the body is not read and the connection is closed after the answer.
  A declared ``Content-Length`` over the limit reads nothing (Flask's 413).
- **The two short-polled GETs** (``/session/<id>``, ``/call-status/<id>``) are
  answered in the loop from the process's :class:`api.wc_bridge.PollReader`
  (a read that is not fresh is awaited; the loop never blocks). When the read
  fails, the Flask route answers (in the bridge's error format).
- Everything else runs in Flask, in a pool of ``api_threads`` threads plus
  ``api_sync_waiters`` for SYNCHRONOUS sends waiting for their outcome
  (:mod:`api.outcome_waiter`), with the environ PEP 3333 describes.
"""
from __future__ import annotations

import asyncio
import io
import logging
import sys
from concurrent.futures import ThreadPoolExecutor

from flask import Flask

from api import limits, request_body, wc_bridge
from api.app import create_app as create_flask_app
from shared.settings import Settings, load

log = logging.getLogger(__name__)

#: Methods whose requests carry no body unless they declare one.
BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
#: Added to an answer after which the connection must not be reused (the rest of its body was not read).
CLOSE = ("connection", "close")
#: What answers when Flask itself failed to answer (it renders its own errors, so this is a bug's last resort).
FAILED = (500, [("content-type", "text/plain")], b"internal error")
#: Request headers that are not passed on as ``HTTP_*`` (CGI names them, or the body was read here).
SPECIAL_HEADERS = {"content-type": "CONTENT_TYPE", "content-length": None, "transfer-encoding": None}


class ApiFront:
    """The RSGI app: polls in the loop; every other request to Flask in a thread once its body is in.

    Parameters:
      app: the Flask app (``api.app.create_app``).
      threads: the threads Flask runs in.
      body_timeout: seconds a request body may take to arrive in full.
    """

    def __init__(self, app: Flask, *, threads: int, body_timeout: float):
        self.app = app
        self.reader: wc_bridge.PollReader = app.extensions["wc_bridge_poll"]
        self.body_timeout = body_timeout
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="flask")
        self.base = {
            "SCRIPT_NAME": "",
            "wsgi.version": (1, 0),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }

    async def __rsgi__(self, scope, protocol) -> None:
        if scope.proto != "http":
            return  # no route speaks WebSocket (granian runs with --no-ws)
        method = scope.method
        if method == "GET":
            target = wc_bridge.poll_target(scope.path)
            if target is not None and await self.poll(target, protocol):
                return
        headers = scope.headers
        declared = request_body.declared_length(headers.get("content-length"))
        body, outcome = b"", request_body.COMPLETE
        if declared or "transfer-encoding" in headers or (declared is None and method not in BODYLESS):
            limit = limits.body_limit_of(self.app, method, scope.path)
            if declared is not None and declared > limit:
                outcome = request_body.NOT_READ
            else:
                body, outcome = await request_body.read_whole(protocol, declared=declared, limit=limit, seconds=self.body_timeout)
        if outcome == request_body.CUT_SHORT:
            protocol.response_empty(400, [CLOSE])  # nobody is there to read a page
            return
        environ = self.environ(scope, body, outcome)
        loop = asyncio.get_running_loop()
        status, response_headers, answer = await loop.run_in_executor(self.pool, self.call_flask, environ)
        if outcome != request_body.COMPLETE:
            response_headers = [*response_headers, CLOSE]
        protocol.response_bytes(status, response_headers, answer)

    async def poll(self, target: tuple[str, str], protocol) -> bool:
        """Answer a poll; False when its read failed (the Flask route answers it then)."""
        doc = self.reader.cached(*target)
        if doc is wc_bridge.MISSING:
            try:
                doc = await asyncio.wait_for(self.reader.read_soon(*target, asyncio.get_running_loop()), wc_bridge.POLL_WAIT_SECONDS)
            except Exception:  # noqa: BLE001 - the database unreachable or slow: the route answers in the bridge's format
                return False
        status, headers, body = wc_bridge.poll_answer(doc)
        protocol.response_bytes(status, headers, body)
        return True

    def environ(self, scope, body: bytes, outcome: str) -> dict:
        """The WSGI environ of a request whose body is in (PEP 3333); the body has a known length."""
        path, query = scope.path, scope.query_string
        server_host, _, server_port = scope.server.rpartition(":")
        client_host, _, client_port = scope.client.rpartition(":")
        environ = {
            **self.base,
            "REQUEST_METHOD": scope.method,
            # PEP 3333: the path's bytes as latin-1 (granian hands it percent-decoded, as UTF-8 text).
            "PATH_INFO": path.encode("utf-8", "surrogateescape").decode("latin-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": server_host.strip("[]"),
            "SERVER_PORT": server_port,
            "SERVER_PROTOCOL": f"HTTP/{scope.http_version}",
            "REMOTE_ADDR": client_host.strip("[]"),
            "REMOTE_PORT": client_port,
            "wsgi.url_scheme": scope.scheme,
            "wsgi.input": io.BytesIO(body),
        }
        for name, value in scope.headers.items():
            if name in SPECIAL_HEADERS:
                if SPECIAL_HEADERS[name] is not None:
                    environ[SPECIAL_HEADERS[name]] = value
                continue
            key = "HTTP_" + name.upper().replace("-", "_")
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        if outcome == request_body.NOT_READ:
            environ["CONTENT_LENGTH"] = scope.headers.get("content-length")  # over the limit: Flask's 413
        else:
            environ["CONTENT_LENGTH"] = str(len(body))
        if outcome == request_body.TIMED_OUT:
            environ[limits.BODY_TIMED_OUT] = True
        return environ

    def call_flask(self, environ: dict) -> tuple[int, list[tuple[str, str]], bytes]:
        """In a pool thread: Flask's answer, whole (its answers are small, or files it reads itself)."""
        started: dict = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info=None):
            started["status"], started["headers"] = int(status[:3]), headers

        try:
            result = self.app(environ, start_response)
            try:
                body = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            return started["status"], started["headers"], body
        except Exception:  # noqa: BLE001 - Flask renders its own errors: this is a failure around it
            log.exception("the Flask app failed on %s %s", environ["REQUEST_METHOD"], environ["PATH_INFO"])
            return FAILED

    def __rsgi_del__(self, loop) -> None:
        """granian's worker stops: let the threads finish what they run."""
        self.pool.shutdown(wait=False)


def create_app(settings: Settings | None = None) -> ApiFront:
    """The API's RSGI app (granian calls this factory in each worker process)."""
    settings = settings or load()
    threads = settings.api_threads + settings.api_sync_waiters
    return ApiFront(create_flask_app(settings), threads=threads, body_timeout=settings.api_body_timeout_seconds)
