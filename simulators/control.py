"""The control port (plain HTTP/1.1, for tests and benchmarks), the same for one process or several.

  GET  /health                 -> {"ok": true}
  GET  /counts                 -> {"delivered": {token: n}, "attempts": {token: n}, "shown": {token: n}}
  GET  /counts/<token>         -> {"delivered": n, "attempts": n, "shown": n}
  GET  /stats                  -> totals without the per-token maps, ``throttled_total`` (429s answered),
                                  each simulator's own totals, and ``processes`` (what each served)
  GET  /received/<token>       -> the last requests for the token: [{headers, body, status, at}]
                                  (APNs adds auth: "token" | "certificate" | null, and certificate_topic)
  POST /reset                  -> forget counts, received requests, quota use and fault switches
  POST /faults                 -> {"unavailable_seconds": s} answer 503 to everything for s seconds;
                                  {"goaway": true} send GOAWAY on every open connection of every process
  GET  /settings               -> {"latency_ms", "quota_per_second", "quota_per_minute"}
  POST /settings               -> change any of them (a quota: null turns it off)
plus each simulator's own (APNs: POST /keys; FCM: POST /service-accounts; HMS: POST /apps).

:class:`Control` answers the port from the :class:`~simulators.ledger.Hub` and the
serving processes' :class:`NodeControl` (each holds its own request log,
connections and registrations): a read of counts first has every process send
what it counted; a write is applied by every process before it is answered.
"""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable

import orjson

from simulators.channel import Channel
from simulators.ledger import Hub
from simulators.recorder import RECEIVED_PER_TOKEN, Recorder
from simulators.server import Connections, Request, Response

#: Internal route: send the counts held back, answer this process's own figures.
FLUSH_PATH = "/_flush"
#: The settings ``POST /settings`` takes.
SETTINGS = ("latency_ms", "quota_per_second", "quota_per_minute")


class NodeControl:
    """The control requests one serving process answers about its own state.

    Parameters:
      recorder: the process's recorder.
      connections: its live provider connections and answer latency.
      routes: the simulator's own routes, ``(method, path) -> handler(request) -> Response``.
      own_stats: the simulator's own totals of this process (summed over processes in ``/stats``).
    """

    def __init__(self, recorder: Recorder, connections: Connections, *, routes: dict | None = None,
                 own_stats: Callable[[], dict] | None = None):
        self.recorder, self.connections = recorder, connections
        self.routes = routes or {}
        self.own_stats = own_stats or dict

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        path = request.path.split("?", 1)[0]
        route = self.routes.get((request.method, path))
        if route is not None:
            return route(request)
        if path.startswith("/received/"):
            return Response.json(200, self.recorder.received.get(path[len("/received/"):]))
        if path == FLUSH_PATH:
            self.recorder.ledger.flush()
            return Response.json(200, {"pid": os.getpid(), "attempts_total": self.recorder.attempts_total,
                                       "throttled_total": self.recorder.throttled_total,
                                       "connections": len(self.connections.live), **self.own_stats()})
        if path == "/reset" and request.method == "POST":
            self.recorder.reset()
            return Response.json(200, {"ok": True})
        if path == "/faults" and request.method == "POST":
            faults = request.json() or {}
            if "unavailable_seconds" in faults:
                self.recorder.unavailable_until = time.monotonic() + float(faults["unavailable_seconds"])
            closed = self.connections.goaway_all() if faults.get("goaway") else 0
            return Response.json(200, {"ok": True, "goaway_connections": closed})
        if path == "/settings" and request.method == "POST":
            settings = request.json() or {}
            if "latency_ms" in settings:
                self.connections.latency_seconds = float(settings["latency_ms"]) / 1000
            if "quota_on" in settings:
                self.recorder.quota_on = bool(settings["quota_on"])
            return Response.json(200, {"ok": True})
        return Response.json(404, {"error": "no such control route"})


class LocalNode:
    """A serving process that is this one."""

    def __init__(self, control: NodeControl):
        self.control = control

    async def call(self, request: Request) -> tuple[int, object]:
        answer = self.control.handle(request)
        response = answer if isinstance(answer, Response) else await answer
        return response.status, orjson.loads(response.body) if response.body else None


class RemoteNode:
    """A serving process reached through its channel (``--processes N``)."""

    def __init__(self, channel: Channel):
        self.channel = channel

    async def call(self, request: Request) -> tuple[int, object]:
        reply = await self.channel.request({"op": "control", "request": request_message(request)})
        return reply["status"], reply["body"]


def request_message(request: Request) -> dict:
    return {"method": request.method, "path": request.path, "body": request.body.decode("utf-8", "replace")}


def message_request(message: dict) -> Request:
    return Request(message["method"], message["path"], {}, message["body"].encode(), http2=False)


async def answer_message(control: NodeControl, message: dict) -> dict:
    """A control request from the coordinator, answered by this process's :class:`NodeControl`."""
    status, body = await LocalNode(control).call(message_request(message))
    return {"status": status, "body": body}


def _bad(field: str, why: str) -> Response:
    return Response.json(400, {"error": f"{field}: {why}", "field": field})


def _non_negative_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


class Control:
    """The public control port of a simulator.

    Parameters:
      hub: the tally and quota of all processes.
      nodes: the serving processes (:class:`LocalNode` or :class:`RemoteNode`).
      latency_ms: the answer latency they were started with (for ``GET /settings``).
    """

    def __init__(self, hub: Hub, nodes: list, *, latency_ms: float = 0.0):
        self.hub, self.nodes = hub, nodes
        self.latency_ms = latency_ms

    async def _all(self, request: Request) -> list[tuple[int, object]]:
        return list(await asyncio.gather(*(node.call(request) for node in self.nodes)))

    async def _flush(self) -> list[dict]:
        return [body for _status, body in await self._all(Request("GET", FLUSH_PATH, {}, b"", http2=False))]

    async def handle(self, request: Request) -> Response:
        path = request.path.split("?", 1)[0]
        get, post = request.method == "GET", request.method == "POST"
        tally = self.hub.tally
        if path == "/health":
            return Response.json(200, {"ok": True})
        if path == "/counts" and get:
            await self._flush()
            return Response.json(200, tally.counts())
        if path.startswith("/counts/") and get:
            await self._flush()
            return Response.json(200, tally.counts_of(path[len("/counts/"):]))
        if path == "/stats" and get:
            return Response.json(200, self._stats(await self._flush()))
        if path.startswith("/received/") and get:
            kept = [entry for _status, entries in await self._all(request) for entry in entries]
            return Response.json(200, sorted(kept, key=lambda entry: entry["at"])[-RECEIVED_PER_TOKEN:])
        if path == "/reset" and post:
            await self._all(request)
            self.hub.reset()
            return Response.json(200, {"ok": True})
        if path == "/faults" and post:
            return await self._faults(request)
        if path == "/settings":
            if post:
                return await self._settings(request)
            return Response.json(200, {"latency_ms": self.latency_ms, **self.hub.quota.setting()})
        answers = await self._all(request)
        status, body = answers[0]  # every process ran the same route on the same request
        return Response.json(status, body)

    def _stats(self, processes: list[dict]) -> dict:
        stats = self.hub.tally.stats()
        for process in processes:
            for name, value in process.items():
                if name not in ("pid", "attempts_total", "connections") and isinstance(value, int | float):
                    stats[name] = stats.get(name, 0) + value
        stats.setdefault("throttled_total", 0)
        stats["processes"] = [{"pid": p["pid"], "attempts_total": p["attempts_total"], "connections": p["connections"]} for p in processes]
        return stats

    async def _faults(self, request: Request) -> Response:
        faults = request.json() if request.body else {}
        if not isinstance(faults, dict):
            return _bad("body", "a JSON object is expected")
        if "unavailable_seconds" in faults and not _non_negative_number(faults["unavailable_seconds"]):
            return _bad("unavailable_seconds", "a number of seconds ≥ 0 is expected")
        if "goaway" in faults and not isinstance(faults["goaway"], bool):
            return _bad("goaway", "true or false is expected")
        answers = await self._all(request)
        return Response.json(200, {"ok": True, "goaway_connections": sum(body["goaway_connections"] for _status, body in answers)})

    async def _settings(self, request: Request) -> Response:
        settings = request.json() if request.body else {}
        if not isinstance(settings, dict):
            return _bad("body", "a JSON object is expected")
        for name in settings:
            if name not in SETTINGS:
                return _bad(name, f"unknown setting (known: {', '.join(SETTINGS)})")
        if "latency_ms" in settings and not _non_negative_number(settings["latency_ms"]):
            return _bad("latency_ms", "a number of milliseconds ≥ 0 is expected")
        for name in ("quota_per_second", "quota_per_minute"):
            value = settings.get(name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                return _bad(name, "a whole number of requests > 0, or null, is expected")
        if settings.get("quota_per_second") is not None and settings.get("quota_per_minute") is not None:
            return _bad("quota_per_second", "set either quota_per_second or quota_per_minute, not both")
        node_settings = {}
        if "latency_ms" in settings:
            self.latency_ms = float(settings["latency_ms"])
            node_settings["latency_ms"] = self.latency_ms
        if "quota_per_second" in settings or "quota_per_minute" in settings:
            limit, period = quota_limit(settings.get("quota_per_second"), settings.get("quota_per_minute"))
            self.hub.quota.configure(limit=limit, period_seconds=period)
            node_settings["quota_on"] = limit is not None
        await self._all(Request("POST", "/settings", {}, orjson.dumps(node_settings), http2=False))
        return Response.json(200, {"ok": True, "latency_ms": self.latency_ms, **self.hub.quota.setting()})


def quota_limit(per_second: int | None, per_minute: int | None) -> tuple[int | None, float]:
    """(limit, period seconds) of a quota given per second or per minute (None: no quota)."""
    if per_second is not None:
        return per_second, 1.0
    return per_minute, 60.0
