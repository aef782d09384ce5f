"""The API's gunicorn worker: the WalletConnect polls answered in an event loop, the rest by Flask in threads.

``gunicorn --worker-class api.poll_worker.PollWorker --threads 8 'api.app:create_app()'``

Dapps short-poll ``GET /session/<id>`` and ``GET /call-status/<id>``. Under
gunicorn's threaded worker every poll paid for its pure-Python HTTP handling
and two thread hand-offs (≈ 0.26 ms of CPU, even answered from the cache).
This worker runs gunicorn's asyncio HTTP/1.1 server (its ASGI protocol:
keep-alive, pipelining, request limits, ``Expect: 100-continue``, chunked
bodies, flow control, graceful stop) on the same listening sockets and:

- answers the two polls in the loop, through the process's
  :class:`api.wc_bridge.PollReader` (a poll that needs a read waits on a
  future its reading thread settles; the loop never blocks);
- hands every other request, and any poll whose read failed or timed out, to
  the Flask app in a pool of ``--threads`` threads
  (:class:`api.wsgi_bridge.WsgiBridge`), which answers as before.

One port and one URL for every route, as before; the polls answer exactly
what the Flask routes answer (:func:`api.wc_bridge.poll_answer`), and a write
through this process is seen by the next poll (:func:`api.wc_bridge.forget_polled`).
"""
from __future__ import annotations

import asyncio
import html
import os
from concurrent.futures import ThreadPoolExecutor

from gunicorn.asgi.protocol import ASGIProtocol
from gunicorn.workers.gasgi import ASGIWorker

from api import wc_bridge
from api.wsgi_bridge import WsgiBridge

#: Seconds between two heartbeats to the gunicorn arbiter (and checks of the parent).
HEARTBEAT_SECONDS = 1.0
#: gunicorn's error page (gunicorn.util.write_error), for the refusals its HTTP server writes itself.
ERROR_PAGE = """<html>
  <head>
    <title>{reason}</title>
  </head>
  <body>
    <h1><p>{reason}</p></h1>
    {message}
  </body>
</html>
"""
#: Connections accepted per wake-up of the listening socket (see _serve).
ACCEPTS_PER_WAKEUP = 1
#: Seconds between two looks for idle connections while the worker stops.
STOP_CHECK_SECONDS = 0.05


class PollFrontend:
    """The worker's ASGI app: the two polls answered here, everything else by the WSGI bridge.

    Parameters:
      reader: the process's poll reader.
      fallback: the ASGI app (the WSGI bridge) for everything else.
    """

    def __init__(self, reader: wc_bridge.PollReader, fallback):
        self.reader = reader
        self.fallback = fallback

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "http":
            target = wc_bridge.poll_target(scope["path"]) if scope["method"] == "GET" else None
            if target is None or not await self.poll(target, send):
                await self.fallback(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close"})  # no route speaks WebSocket

    async def poll(self, target: tuple[str, str], send) -> bool:
        """Answer a poll; False when its read failed (Flask's direct read answers it then)."""
        doc = self.reader.cached(*target)
        if doc is wc_bridge.MISSING:
            try:
                doc = await asyncio.wait_for(
                    self.reader.read_soon(*target, asyncio.get_running_loop()), wc_bridge.POLL_WAIT_SECONDS
                )
            except Exception:  # noqa: BLE001 - the database unreachable or slow: the fallback answers
                return False
        status, headers, body = wc_bridge.poll_answer(doc)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(name.encode(), value.encode()) for name, value in headers],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return True


class _Connection(ASGIProtocol):
    """gunicorn's HTTP/1.1 connection, known to the worker so that a stop can close it while it is idle."""

    def connection_made(self, transport):
        self.worker.connections.add(self)
        super().connection_made(transport)

    def connection_lost(self, exc):
        self.worker.connections.discard(self)
        super().connection_lost(exc)

    def _send_error_response(self, status, message, extra_headers=()):
        """gunicorn's own refusals (414, 431, 400, 500 …) as its WSGI workers write them: an HTML page
        (the API document says text/html), where its ASGI server writes plain text."""
        reason = self._get_reason_phrase(status)
        page = ERROR_PAGE.format(reason=html.escape(reason), message=html.escape(message if status < 500 else ""))
        body = page.encode("latin-1", "replace")
        extra = "".join(f"{name}: {value}\r\n" for name, value in extra_headers)
        head = f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: text/html\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
        self._safe_write(head.encode("latin-1") + body)

    def idle(self) -> bool:
        """Waiting for a next request that has not begun to arrive, with no call of the app running."""
        ready = self._request_ready  # None until the connection committed to HTTP/1
        return self._awaiting_request and not self._finishing_calls and ready is not None and not ready.is_set()

    def close_idle(self) -> None:
        self._keepalive_timeout()


class PollWorker(ASGIWorker):
    """gunicorn worker class: an asyncio loop serving the polls, a thread pool (``--threads``) serving Flask.

    gunicorn's contract: a heartbeat (``notify``) every second; SIGTERM stops
    accepting, closes idle keep-alive connections at once, lets the requests
    in flight finish (at most ``--graceful-timeout``) and exits; SIGINT and
    SIGQUIT stop at once. The app is the WSGI app gunicorn loads (Flask's);
    its poll reader is the one :func:`api.wc_bridge.install` put in its
    extensions.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.connections: set[_Connection] = set()
        self.executor: ThreadPoolExecutor | None = None

    @classmethod
    def check_config(cls, cfg, log):
        """``--threads`` sizes the pool that runs Flask (ASGIWorker would warn that it is unused)."""

    def load_wsgi(self):
        self.wsgi = self.app.wsgi()
        reader = getattr(self.wsgi, "extensions", {}).get("wc_bridge_poll")
        if reader is not None and isinstance(self.wsgi.wsgi_app, wc_bridge.PollFastPath):
            # The loop takes the WSGI fast path's place: a poll that reaches Flask is one whose read
            # failed, for the route's own direct read to answer (not the same reader a second time).
            self.wsgi.wsgi_app = self.wsgi.wsgi_app.app
        self.executor = ThreadPoolExecutor(max_workers=max(1, self.cfg.threads), thread_name_prefix="wsgi")
        fallback = WsgiBridge(self.wsgi, self.executor, self.cfg)
        self.asgi = PollFrontend(reader, fallback) if reader is not None else fallback

    async def _serve(self):
        servers = []
        ssl_context = self._get_ssl_context()
        for sock in self.sockets:
            # asyncio accepts up to ``backlog`` connections per wake-up: one at a time, the workers
            # sharing the socket take turns (100, asyncio's default, let one worker take a burst of
            # new connections whole). It also listen()s with it: the socket's own backlog is restored.
            server = await self.loop.create_server(
                lambda: _Connection(self), sock=sock.sock, ssl=ssl_context, backlog=ACCEPTS_PER_WAKEUP, start_serving=True
            )
            sock.sock.listen(self.cfg.backlog)
            servers.append(server)
        try:
            while self.alive:
                self.notify()
                if self.ppid != os.getppid():
                    self.log.info("Parent changed, shutting down: %s", self)
                    break
                await asyncio.sleep(HEARTBEAT_SECONDS)
        except asyncio.CancelledError:
            pass
        self.alive = False
        for server in servers:
            server.close()
        await self._finish_connections()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def _finish_connections(self) -> None:
        """Close idle connections; give the others until ``graceful_timeout`` to finish what they serve."""
        deadline = self.loop.time() + self.cfg.graceful_timeout
        while self.connections and not self._quick_shutdown and self.loop.time() < deadline:
            for connection in list(self.connections):
                if connection.idle():
                    connection.close_idle()
            self.notify()
            await asyncio.sleep(STOP_CHECK_SECONDS)
        if self.connections:
            self.log.warning("Stopping with %d connections still open", len(self.connections))
