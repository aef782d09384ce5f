"""What both simulators share: per-token counts, the control endpoints, start-up.

Control port (plain HTTP/1.1, for tests and benchmarks):
  GET  /health                 -> {"ok": true}
  GET  /counts                 -> {"delivered": {token: n}, "attempts": {token: n}, "shown": {token: n}}
  GET  /counts/<token>         -> {"delivered": n, "attempts": n, "shown": n}
  GET  /stats                  -> totals, without the per-token maps
  GET  /received/<token>       -> the last requests for the token: [{headers, body, status}]
                                  (APNs adds auth: "token" | "certificate" | null, and certificate_topic)
  POST /reset                  -> forget counts and received requests
  POST /faults                 -> {"unavailable_seconds": s} answer 503 to everything for s seconds;
                                  {"goaway": true} send GOAWAY on every open connection
plus each simulator's own (APNs: POST /keys; FCM: POST /service-accounts).

"shown" is what the device presents: every delivered push, except one carrying
a collapse identifier (APNs ``apns-collapse-id``, FCM ``android.notification.tag``)
the device already presented, which replaces that one instead of showing again.
"""
from __future__ import annotations

import argparse
import asyncio
import re
import signal
import time
from collections import OrderedDict, defaultdict, deque
from pathlib import Path

import orjson

from simulators.server import Connections, Request, Response, serve
from simulators.tls import ensure_certificates, server_context

#: Tokens whose last requests are kept for ``/received``; the oldest are forgotten.
RECEIVED_TOKENS = 20_000
RECEIVED_PER_TOKEN = 5


def number_after(token: str, prefix: str, *, digits: int | None = None) -> int | None:
    """The number right after ``prefix`` at the start of ``token``, or None.

    ``digits`` fixes how many digits it has (APNs tokens are hex, so "f5032" + "58…"
    must read 2, not 258); without it the number ends at the first non-digit ("delay5-" → 5).
    """
    if not token.startswith(prefix):
        return None
    pattern = rf"\d{{{digits}}}" if digits else r"\d+"
    match = re.match(pattern, token[len(prefix):])
    return int(match.group()) if match else None


class Recorder:
    """Per-token attempts and deliveries, and the last requests of recent tokens."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.attempts: dict[str, int] = defaultdict(int)
        self.delivered: dict[str, int] = defaultdict(int)
        self.shown: dict[str, int] = defaultdict(int)
        #: Per token, the hash of the collapse identifier it presented (a set once there are several).
        self.presented: dict[str, int | set[int]] = {}
        self.shown_total = 0
        self.received: OrderedDict[str, deque] = OrderedDict()
        self.attempts_total = 0
        self.delivered_total = 0
        self.first_at: float | None = None
        self.last_delivered_at: float | None = None
        self.unavailable_until = 0.0
        #: APNs: per dead token, when it was first answered 410 (ms): Apple's ``timestamp``, the same on every answer.
        self.invalid_since: dict[str, int] = {}

    def attempt(self, token: str) -> int:
        """Count an attempt; answer its number for this token (1 for the first)."""
        self.attempts_total += 1
        if self.first_at is None:
            self.first_at = time.time()
        self.attempts[token] += 1
        return self.attempts[token]

    def deliverer(self, token: str, collapse_id: str | None = None):
        """What runs once the 200 went out: count the delivery, and what the device shows."""

        def delivered() -> None:
            self.delivered[token] += 1
            self.delivered_total += 1
            self.last_delivered_at = time.time()
            if collapse_id is None or self._first_presentation(token, hash(collapse_id)):
                self.shown[token] += 1
                self.shown_total += 1

        return delivered

    def _first_presentation(self, token: str, key: int) -> bool:
        presented = self.presented.get(token)
        if presented is None:
            self.presented[token] = key
            return True
        if isinstance(presented, int):
            if presented == key:
                return False
            self.presented[token] = {presented, key}
            return True
        if key in presented:
            return False
        presented.add(key)
        return True

    def keep(self, token: str, request: Request, status: int, **extra) -> None:
        """Keep the request for ``/received`` (without its ``authorization``); ``extra`` adds what the simulator saw."""
        kept = self.received.get(token)
        if kept is None:
            kept = self.received[token] = deque(maxlen=RECEIVED_PER_TOKEN)
            if len(self.received) > RECEIVED_TOKENS:
                self.received.popitem(last=False)
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            body = request.body.decode("utf-8", "replace")
        kept.append({"headers": {k: v for k, v in request.headers.items() if k != "authorization"}, "body": body, "status": status, **extra})

    def unavailable(self) -> bool:
        return time.monotonic() < self.unavailable_until

    def stats(self) -> dict:
        return {
            "attempts_total": self.attempts_total,
            "delivered_total": self.delivered_total,
            "shown_total": self.shown_total,
            "tokens": len(self.attempts),
            "first_at": self.first_at,
            "last_delivered_at": self.last_delivered_at,
        }


def control_handler(recorder: Recorder, connections: Connections, extra: dict):
    """The control port's handler; ``extra`` maps (method, path) to a simulator's own routes."""

    async def handle(request: Request) -> Response:
        path = request.path.split("?", 1)[0]
        route = extra.get((request.method, path))
        if route is not None:
            return route(request)
        if path == "/health":
            return Response.json(200, {"ok": True})
        if path == "/counts" and request.method == "GET":
            return Response.json(200, {"delivered": recorder.delivered, "attempts": recorder.attempts, "shown": recorder.shown})
        if path.startswith("/counts/"):
            token = path[len("/counts/"):]
            return Response.json(200, {"delivered": recorder.delivered.get(token, 0), "attempts": recorder.attempts.get(token, 0),
                                       "shown": recorder.shown.get(token, 0)})
        if path == "/stats":
            return Response.json(200, recorder.stats())
        if path.startswith("/received/"):
            return Response.json(200, list(recorder.received.get(path[len("/received/"):], ())))
        if path == "/reset" and request.method == "POST":
            recorder.reset()
            return Response.json(200, {"ok": True})
        if path == "/faults" and request.method == "POST":
            faults = request.json() or {}
            if "unavailable_seconds" in faults:
                recorder.unavailable_until = time.monotonic() + float(faults["unavailable_seconds"])
            closed = connections.goaway_all() if faults.get("goaway") else 0
            return Response.json(200, {"ok": True, "goaway_connections": closed})
        return Response.json(404, {"error": "no such control route"})

    return handle


def parse_args(name: str, default_port: int, default_control: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m simulators.{name}", description=f"The {name.upper()} simulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument("--control-port", type=int, default=default_control)
    parser.add_argument("--cert-dir", type=Path, default=Path("var/simulators"))
    return parser.parse_args()


def run(name: str, args: argparse.Namespace, handler, control, *, connections: Connections, max_concurrent_streams: int,
        client_certificates: bool = False) -> None:
    """Serve the provider port (TLS) and the control port until SIGINT/SIGTERM; print "ready" once listening.

    ``client_certificates``: ask clients for a certificate signed by the simulators' CA (optional; another CA's fails the handshake).
    """
    ca_file, cert_file, key_file = ensure_certificates(args.cert_dir)

    async def main() -> None:
        context = server_context(cert_file, key_file, client_ca=ca_file if client_certificates else None)
        provider = await serve(handler, args.host, args.port, ssl_context=context,
                               max_concurrent_streams=max_concurrent_streams, connections=connections)
        control_server = await serve(control, args.host, args.control_port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"{name} simulator ready on {args.host}:{args.port} (control {args.control_port})", flush=True)
        await stop.wait()
        provider.close()
        control_server.close()

    try:
        import uvloop  # noqa: PLC0415 - optional speed-up

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())


def json_body(request: Request):
    try:
        return orjson.loads(request.body)
    except orjson.JSONDecodeError:
        return None
