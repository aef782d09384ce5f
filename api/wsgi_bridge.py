"""A WSGI app served from an asyncio (ASGI) server: each call runs in a thread pool.

The event loop keeps the connection (gunicorn's ASGI protocol: HTTP/1.1
parsing, keep-alive, pipelining, ``Expect: 100-continue``, chunked request
bodies, request line and header limits, ``HEAD``, flow control); the WSGI app
runs in a thread and talks to the loop only through ``receive`` and ``send``:

- ``wsgi.input`` asks the loop for the next piece of the body when the app
  reads it, so a ``100 Continue`` goes out only if the app reads the body, and
  a large body never sits in memory whole; it ends where the body ends
  (``wsgi.input_terminated``, as under gunicorn's WSGI workers).
- The answer's headers go out with its first piece of body; each piece waits
  until the connection takes it (a slow client holds the app's thread, not
  the process's memory). A one-piece answer (what Flask gives) is one hand-over.

The environ is the one gunicorn's WSGI workers build (its ``base_environ``,
``HTTP_*`` headers with repeated fields joined, ``PATH_INFO`` decoded to
latin-1 bytes, ``RAW_URI``, ``REMOTE_*``, ``SERVER_*``), less what only a
blocking socket can give (``gunicorn.socket``, ``wsgi.early_hints``).
"""
from __future__ import annotations

import asyncio
import os
from concurrent.futures import Executor
from urllib.parse import unquote_to_bytes, urlsplit

from gunicorn.http.wsgi import base_environ


class RequestBody:
    """``wsgi.input``: the request body, read from the event loop as the app asks for it (blocking, in its thread).

    Parameters:
      loop: the connection's event loop.
      receive: the ASGI receive callable of the request.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, receive):
        self.loop = loop
        self.receive = receive
        self.buffer = bytearray()
        self.ended = False

    def _fetch(self) -> None:
        message = asyncio.run_coroutine_threadsafe(self.receive(), self.loop).result()
        if message["type"] != "http.request":
            # The client went away (or stopped sending): the body ends here; werkzeug
            # turns a body shorter than its Content-Length into a 400.
            self.ended = True
            return
        self.buffer += message.get("body", b"")
        if not message.get("more_body", False):
            self.ended = True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while not self.ended:
                self._fetch()
            size = len(self.buffer)
        else:
            while len(self.buffer) < size and not self.ended:
                self._fetch()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        while b"\n" not in self.buffer and not self.ended and (size is None or size < 0 or len(self.buffer) < size):
            self._fetch()
        end = self.buffer.find(b"\n") + 1 or len(self.buffer)
        if size is not None and size >= 0:
            end = min(end, size)
        return self.read(end)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines, total = [], 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self):
        while line := self.readline():
            yield line


async def _send_all(send, messages: list[dict]) -> None:
    for message in messages:
        await send(message)


class Exchange:
    """One WSGI call: the app's ``start_response`` and body, handed to the loop's ``send``.

    Parameters:
      loop: the connection's event loop.
      send: the ASGI send callable of the request.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, send):
        self.loop = loop
        self.send = send
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.started = False

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info=None):
        if exc_info is not None:
            try:
                if self.started:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called twice without exc_info")
        self.status, self.headers = status, headers
        return self.write

    def write(self, data: bytes) -> None:
        """PEP 3333's write callable (and each piece of the app's answer but the last)."""
        self._send(data, more=True)

    def _send(self, body: bytes, *, more: bool) -> None:
        messages = []
        if not self.started:
            if self.status is None:
                raise AssertionError("the WSGI app answered before start_response")
            headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in self.headers]
            messages.append({"type": "http.response.start", "status": int(self.status[:3]), "headers": headers})
            self.started = True
        messages.append({"type": "http.response.body", "body": body, "more_body": more})
        asyncio.run_coroutine_threadsafe(_send_all(self.send, messages), self.loop).result()

    def run(self, app, environ: dict) -> None:
        """Call the app and send its answer (in a pool thread)."""
        result = app(environ, self.start_response)
        try:
            held = None
            for piece in result:
                if not piece:
                    continue
                if held is not None:
                    self.write(held)
                held = bytes(piece)
            self._send(held or b"", more=False)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()


class WsgiBridge:
    """An ASGI app that answers each HTTP request with a WSGI app run in ``executor``.

    Parameters:
      app: the WSGI app.
      executor: the thread pool the app's calls run in.
      cfg: gunicorn's configuration (for the base environ).
    """

    def __init__(self, app, executor: Executor, cfg):
        self.app = app
        self.executor = executor
        self.base = {**base_environ(cfg), "wsgi.multithread": True}
        self.script_name = os.environ.get("SCRIPT_NAME", "")

    async def __call__(self, scope: dict, receive, send) -> None:
        loop = asyncio.get_running_loop()
        environ = self.environ(scope, RequestBody(loop, receive))
        await loop.run_in_executor(self.executor, Exchange(loop, send).run, self.app, environ)

    def environ(self, scope: dict, body: RequestBody) -> dict:
        """The WSGI environ of an ASGI HTTP scope, as gunicorn's WSGI workers build it."""
        environ = dict(self.base)
        raw_path = scope.get("raw_path") or scope["path"].encode()
        if not raw_path.startswith(b"/") and raw_path != b"*":
            raw_path = urlsplit(raw_path).path or b"/"  # absolute-form request target
        query = scope.get("query_string", b"").decode("latin-1")
        path_info = unquote_to_bytes(raw_path).decode("latin-1")
        script_name = scope.get("root_path") or self.script_name
        if script_name and path_info.startswith(script_name):
            path_info = path_info[len(script_name):]
        environ.update(
            {
                "wsgi.input": body,
                "wsgi.url_scheme": scope.get("scheme", "http"),
                "REQUEST_METHOD": scope["method"],
                "SCRIPT_NAME": script_name,
                "PATH_INFO": path_info,
                "QUERY_STRING": query,
                "RAW_URI": raw_path.decode("latin-1") + (f"?{query}" if query else ""),
                "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
            }
        )
        server, client = scope.get("server"), scope.get("client")
        if server:
            environ["SERVER_NAME"], environ["SERVER_PORT"] = str(server[0]), str(server[1] if server[1] is not None else "")
        if client:
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = str(client[0]), str(client[1])
        repeated: dict[str, list[str]] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").upper(), raw_value.decode("latin-1")
            if name == "CONTENT-TYPE":
                environ["CONTENT_TYPE"] = value
                continue
            if name == "CONTENT-LENGTH":
                environ["CONTENT_LENGTH"] = value
                continue
            key = "HTTP_" + name.replace("-", "_")
            if key in environ:
                repeated.setdefault(key, [environ[key]]).append(value)
            else:
                environ[key] = value
        for key, values in repeated.items():
            environ[key] = ",".join(values)
        return environ
