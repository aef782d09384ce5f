"""Operations endpoints: ``/metrics``, ``/admin/queues``, ``/admin/stats``, dead letters, ``/admin/dashboard``.

Errors answer in the PowerAuth envelope (api/powerauth_envelope.py). Writes go through the queue like every other API write: a dead
letter requeue is a ``dead_letter.requeue`` command applied by a worker
(workers/dead_letters.py), which resets the deliveries and publishes them again.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from flask import Blueprint, Flask, Response, g, jsonify, request
from pymongo.errors import PyMongoError

from api import schema as sc
from api.context import services
from api.errors import ApiError, bad_request, renders_errors, unavailable
from api.powerauth_envelope import render_error
from api.services import Services
from shared import backlog, commands, ledger, logs, metrics
from shared import db as mongo

blueprint = Blueprint("admin_ops", __name__)
renders_errors(blueprint, "powerauth", render_error)

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Write command kind of a dead letter requeue (handled in workers/dead_letters.py).
REQUEUE_KIND = "dead_letter.requeue"
#: Most dead letters listed, or requeued by one ``all`` request.
MAX_LIST = 1000
MAX_REQUEUE = 10_000
#: Seconds the delivery outcome counts of /admin/stats are reused by one API process.
STATS_FRESH_SECONDS = 5.0


def install(app: Flask, services_: Services) -> None:
    """Count every request by route and status, time (and log) every enqueue of the API's broker; JSON logs if asked."""
    logs.configure(services_.settings.log_format)
    directory = metrics.multiprocess_dir()
    if directory:
        os.makedirs(directory, exist_ok=True)
    services_.broker.add_middleware(metrics.enqueue_timer_middleware())

    @app.before_request
    def _start_timer() -> None:
        g.push_request_started = time.perf_counter()

    @app.after_request
    def _count_request(response: Response) -> Response:
        started = g.get("push_request_started")
        if started is not None:
            route = request.url_rule.rule if request.url_rule is not None else "unmatched"
            metrics.record_request(route, request.method, response.status_code, time.perf_counter() - started)
        return response


# --- metrics and queues ---------------------------------------------------------------------------


#: A string in an answer: any length, possibly empty.
TEXT = sc.Str(max_length=None, allow_empty=True)


@blueprint.get("/metrics")
@sc.operation("Prometheus metrics of this API process, queue depths (read from RabbitMQ) and delivery outcomes",
              responses={200: ("text/plain", None)})
def prometheus_metrics() -> Response:
    s = services()
    body, content_type = metrics.exposition(s.settings, s.db)
    return Response(body, content_type=content_type)


def _queues(peek: bool) -> tuple[list[dict], str]:
    try:
        stats, source = metrics.queue_stats(services().settings, peek=peek)
    except metrics.QueuesUnavailable:
        raise unavailable("the message broker") from None
    return [q.as_json() for q in stats], source


COUNT = sc.Int(minimum=0)


@blueprint.get("/admin/queues")
@sc.operation(
    "Every queue's depth, unacknowledged messages and consumers (RabbitMQ management API, else AMQP)",
    query={"peek": sc.Flag(default=False, description="Also the age of each queue's oldest message")},
    responses={200: sc.Obj({"queues": sc.List(sc.Json(object_only=True)), "source": TEXT,
                            "totals": sc.Obj({"ready": COUNT, "unacked": COUNT, "dead": COUNT}),
                            "backlog": sc.List(sc.Json(object_only=True))})},
)
def admin_queues() -> Response:
    rows, source = _queues(sc.query()["peek"])
    totals = {
        "ready": sum(r["ready"] for r in rows),
        "unacked": sum(r["unacked"] for r in rows),
        "dead": sum(r["depth"] for r in rows if r["kind"] == "dead"),
    }
    try:  # the queue figures answer without MongoDB
        apps = [b.as_json() for b in backlog.cached(services().db)]
    except PyMongoError:
        apps = None
    return jsonify({"queues": rows, "source": source, "totals": totals, "backlog": apps, "at": time.time()})


_stats_cache: dict = {}


def _delivery_counts() -> dict:
    """Delivery outcome counts ``{platform: {state: n}}`` (cached briefly per process: dashboards poll)."""
    cached = _stats_cache.get("counts")
    if cached and time.monotonic() - cached[0] < STATS_FRESH_SECONDS:
        return cached[1]
    s = services()

    def read():
        return {platform: dict(states) for platform, states in ledger.all_counts(s.db).items()}

    counts = s.guarded_read(read)
    _stats_cache["counts"] = (time.monotonic(), counts)
    return counts


@blueprint.get("/admin/stats")
@sc.operation(
    "Deliveries by platform and outcome, and how many dead letters wait",
    responses={200: sc.Obj({"deliveries": sc.Json(object_only=True), "by_outcome": sc.Json(object_only=True), "dead_letters": COUNT})},
)
def admin_stats() -> Response:
    """Deliveries by platform and outcome (all recorded), and how many dead letters wait."""
    counts = _delivery_counts()
    by_outcome: dict = {}
    for states in counts.values():
        for state, n in states.items():
            by_outcome[state] = by_outcome.get(state, 0) + n

    return jsonify(
        {
            "deliveries": counts,
            "by_outcome": by_outcome,
            "dead_letters": sum(_dead_letter_reasons({}).values()),
            "at": time.time(),
        }
    )


# --- dead letters ---------------------------------------------------------------------------------


def _dead_letter_json(doc: dict) -> dict:
    delivery = doc.get("delivery")
    return {
        "id": doc["delivery_id"],
        "delivery_id": doc["delivery_id"],
        "message_id": doc.get("message_id"),
        "app_id": doc.get("app_id"),
        "platform": doc.get("platform"),
        "reason": doc.get("reason"),
        "attempts": doc.get("attempts"),
        "at": doc.get("at"),
        "requeued_at": doc.get("requeued_at"),
        "requeueable": bool(delivery and doc.get("entry") is not None),
    }


#: Dead letters not requeued yet.
WAITING = {"requeued_at": {"$exists": False}}


def _dead_letter_reasons(query: dict) -> dict:
    """``{reason: count}`` of the dead letters matching ``query``."""
    s = services()
    rows = s.guarded_read(
        lambda: list(s.db[mongo.DEAD_LETTERS].aggregate([{"$match": {**WAITING, **query}}, {"$group": {"_id": "$reason", "n": {"$sum": 1}}}]))
    )
    return {row["_id"] or "?": row["n"] for row in rows}


DEAD_LETTER = sc.Obj({"id": TEXT, "delivery_id": TEXT, "requeueable": sc.Bool()})


@blueprint.get("/admin/dead-letters")
@sc.operation(
    "Dead letters waiting, newest first, with counts by reason",
    query={
        "limit": sc.Int(minimum=1, maximum=MAX_LIST, default=100),
        "all": sc.Flag(default=False, description="List requeued dead letters too"),
        "app_id": sc.Str(description="Only this application's"),
        "platform": sc.Str(max_length=32, description="Only this platform's (apns, fcm, hms, webhook)"),
    },
    responses={200: sc.Obj({"items": sc.List(DEAD_LETTER), "total": COUNT, "reasons": sc.Json(object_only=True)})},
)
def dead_letters() -> Response:
    """Dead letters waiting, newest first, with reason counts; ``?all=1`` lists requeued ones too; ``app_id`` / ``platform`` filter."""
    s = services()
    params = sc.query()
    limit, include_requeued = params["limit"], params["all"]
    query = {k: params[k] for k in ("app_id", "platform") if params.get(k)}
    listed = query if include_requeued else {**WAITING, **query}
    docs = s.guarded_read(lambda: list(s.db[mongo.DEAD_LETTERS].find(listed).sort("at", -1).limit(limit)))
    reasons = _dead_letter_reasons(query)
    return jsonify({"items": [_dead_letter_json(d) for d in docs], "total": sum(reasons.values()), "reasons": reasons})


#: What to requeue: some dead letters by id, or all that wait.
REQUEUE = {
    "ids": sc.List(sc.Str(), min_items=1, max_items=MAX_REQUEUE, description="Dead letter (delivery) ids"),
    "all": sc.Bool(description="Requeue every dead letter waiting (at most 10,000)"),
}
REQUEUED = sc.Obj({"applied": sc.Bool(), "skipped": sc.List(sc.Json())})


@blueprint.post("/admin/dead-letters/requeue")
@sc.operation(
    "Put dead letters back on their deliver queue: {\"ids\": [...]} or {\"all\": true} (or the same in requestObject)",
    body=sc.Obj({**REQUEUE, "requestObject": sc.Obj(REQUEUE)}),
    responses={200: REQUEUED, 202: REQUEUED},
    body_size=sc.LARGE_BODY,
)
def requeue_dead_letters() -> Response:
    """Put dead letters back on their deliver queue: ``{"ids": [delivery id, ...]}`` or ``{"all": true}``.

    The write is a command applied by a worker (state back to ``retry``, chunk
    published); the answer says how many were requeued once it was applied.
    """
    s = services()
    data = sc.body()
    data = data.get("requestObject", data)
    ids, everything = data.get("ids"), data.get("all")
    if everything:
        if ids is not None:
            raise bad_request("ids", "give either ids or all, not both")
        docs = s.guarded_read(lambda: list(s.db[mongo.DEAD_LETTERS].find(WAITING, {"delivery_id": 1}).limit(MAX_REQUEUE)))
        ids = sorted({d["delivery_id"] for d in docs})
    else:
        if ids is None:
            raise bad_request("ids", "must be a non-empty list of dead letter ids (or give all: true)")
        known = s.guarded_read(
            lambda: {d["delivery_id"] for d in s.db[mongo.DEAD_LETTERS].find({"delivery_id": {"$in": ids}}, {"delivery_id": 1})}
        )
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise ApiError(404, f"ids: no dead letter {unknown[0]!r}", field="ids", code="ERROR_NOT_FOUND")
    if not ids:
        return jsonify({"requeued": 0, "skipped": [], "applied": True})
    cmd = commands.command(REQUEUE_KIND, delivery_ids=ids)
    applied = s.write(cmd)
    result = (applied or {}).get("result") or {}
    return jsonify(
        {
            "commandId": cmd["id"],
            "applied": bool(applied),
            "requeued": result.get("requeued", 0 if applied else None),
            "skipped": result.get("skipped", []),
        }
    ), (200 if applied else 202)


# --- dashboard ------------------------------------------------------------------------------------


@blueprint.get("/admin/dashboard")
@sc.operation("The operations dashboard (a page; its data comes from the admin routes)", responses={200: ("text/html", None)})
def dashboard() -> Response:
    html = (STATIC_DIR / "dashboard.html").read_bytes()
    return Response(html, content_type="text/html; charset=utf-8", headers={"Cache-Control": "no-store"})
