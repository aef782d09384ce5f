"""Operational figures: RabbitMQ queue depth, and the Prometheus metrics of the API and the workers.

Queue depth comes from the RabbitMQ management HTTP API
(``PUSH_RABBITMQ_MANAGEMENT_URL``): ready and unacknowledged messages,
consumers, publish/deliver/ack rates, per project queue and its Dramatiq delay
(``.DQ``) and dead-letter (``.XQ``) queues. When the management API does not
answer, a passive declare over AMQP still gives ready messages and consumers.

``prometheus_client`` is imported inside functions only: in multi-process mode
(the API's granian workers, Dramatiq worker processes) it must be imported after
``PROMETHEUS_MULTIPROC_DIR`` is set, which Dramatiq's Prometheus middleware
does at process boot. Metric objects are made on first use for the same reason.
Recording a metric never raises into the caller.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import requests

from shared import commands, logs
from shared.settings import Settings

log = logging.getLogger(__name__)
#: Delivery outcomes, one line each (DEBUG for sent, INFO for the rest).
delivery_log = logging.getLogger("push.delivery")
#: API enqueues, one line each, with the command id.
enqueue_log = logging.getLogger("push.enqueue")

#: Dramatiq's queues next to each project queue: suffix → kind.
QUEUE_KINDS = {"": "main", ".DQ": "delay", ".XQ": "dead"}
#: Seconds one management API request may take (a scrape must stay quick).
MANAGEMENT_TIMEOUT_SECONDS = 2.0
#: Delivery latency buckets (seconds): accepted for delivery → provider answered.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 86400)
#: Enqueue latency buckets (seconds): publish → RabbitMQ confirmed.
ENQUEUE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
#: HTTP request duration buckets (seconds).
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: Delivery states that are a provider's answer (they have a latency).
ANSWERED_STATES = ("sent", "dead_token", "failed")


# --- queue depth ----------------------------------------------------------------------------------


@dataclass
class QueueStats:
    """One broker queue's figures; rates are messages per second (None when unknown)."""

    name: str
    queue: str
    kind: str
    #: The lane the queue serves (shared/commands.py LANES): ``tx`` or ``bulk``.
    lane: str = commands.BULK
    exists: bool = False
    ready: int = 0
    unacked: int = 0
    consumers: int = 0
    publish_rate: float | None = None
    deliver_rate: float | None = None
    ack_rate: float | None = None
    oldest_age_seconds: float | None = None

    @property
    def depth(self) -> int:
        return self.ready + self.unacked

    def as_json(self) -> dict:
        return {**asdict(self), "depth": self.depth}


class QueuesUnavailable(Exception):
    """Neither the management API nor AMQP answered."""


def expected_queues(settings: Settings) -> list[QueueStats]:
    """Every queue the deployment uses (project queues and Dramatiq's delay and dead-letter queues), empty."""
    out = []
    for queue in commands.QUEUES:
        base = commands.queue_name(settings, queue)
        for suffix, kind in QUEUE_KINDS.items():
            out.append(QueueStats(name=base + suffix, queue=queue, kind=kind, lane=commands.lane_of_queue(queue)))
    return out


def vhost_of(amqp_url: str) -> str:
    """The virtual host of ``PUSH_AMQP_URL`` (a cluster's node URLs all name the same one: the first's)."""
    from shared.broker import amqp_urls

    path = urlsplit(amqp_urls(amqp_url)[0]).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def management_endpoint(url: str) -> tuple[str, tuple[str, str] | None]:
    """The management base URL without credentials, and the credentials it carried."""
    parts = urlsplit(url)
    auth = (unquote(parts.username or ""), unquote(parts.password or "")) if parts.username else None
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", "")), auth


def _rate(stats: dict, key: str) -> float | None:
    details = stats.get(f"{key}_details")
    return float(details["rate"]) if isinstance(details, dict) and "rate" in details else None


def queue_stats(settings: Settings, *, peek: bool = False) -> tuple[list[QueueStats], str]:
    """Figures of every expected queue, and where they came from (``management`` or ``amqp``).

    ``peek``: read the head message of each non-empty queue (and requeue it at
    once) for the oldest message's age when the broker does not give it.
    Raises :class:`QueuesUnavailable` when the broker answers neither way.
    """
    try:
        return _from_management(settings, peek=peek), "management"
    except (requests.RequestException, ValueError, KeyError) as error:
        log.info("management API unavailable (%s); passive declare instead", error)
    try:
        return _from_amqp(settings), "amqp"
    except Exception as error:  # noqa: BLE001 - any failure of the broker means "unavailable"
        raise QueuesUnavailable(str(error)) from None


def _from_management(settings: Settings, *, peek: bool) -> list[QueueStats]:
    base, auth = management_endpoint(settings.rabbitmq_management_url)
    vhost = quote(vhost_of(settings.amqp_url), safe="")
    session = requests.Session()
    session.auth = auth
    columns = "name,messages_ready,messages_unacknowledged,consumers,message_stats,head_message_timestamp"
    answer = session.get(f"{base}/api/queues/{vhost}", params={"columns": columns}, timeout=MANAGEMENT_TIMEOUT_SECONDS)
    answer.raise_for_status()
    found = {q["name"]: q for q in answer.json()}
    now = time.time()
    out = expected_queues(settings)
    for stats in out:
        q = found.get(stats.name)
        if q is None:
            continue
        message_stats = q.get("message_stats") or {}
        stats.exists = True
        stats.ready = int(q.get("messages_ready") or 0)
        stats.unacked = int(q.get("messages_unacknowledged") or 0)
        stats.consumers = int(q.get("consumers") or 0)
        stats.publish_rate = _rate(message_stats, "publish") or 0.0
        stats.deliver_rate = _rate(message_stats, "deliver_get") or 0.0
        stats.ack_rate = _rate(message_stats, "ack") or 0.0
        head = q.get("head_message_timestamp")
        if head:
            stats.oldest_age_seconds = max(0.0, now - float(head))
        elif peek and stats.ready:
            stats.oldest_age_seconds = _peek_age(session, base, vhost, stats.name, now)
    return out


def _peek_age(session: requests.Session, base: str, vhost: str, name: str, now: float) -> float | None:
    """Age of the head message from Dramatiq's ``message_timestamp`` (ms); the message is requeued."""
    try:
        answer = session.post(
            f"{base}/api/queues/{vhost}/{quote(name, safe='')}/get",
            json={"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 1_000_000},
            timeout=MANAGEMENT_TIMEOUT_SECONDS,
        )
        answer.raise_for_status()
        messages = answer.json()
        if not messages:
            return None
        body = json.loads(messages[0]["payload"])
        return max(0.0, now - body["message_timestamp"] / 1000)
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return None


def _from_amqp(settings: Settings) -> list[QueueStats]:
    import pika
    import pika.exceptions

    from shared.broker import connection_parameters

    connection = pika.BlockingConnection(connection_parameters(settings.amqp_url))
    try:
        channel = connection.channel()
        out = expected_queues(settings)
        for stats in out:
            try:
                frame = channel.queue_declare(stats.name, passive=True)
            except pika.exceptions.ChannelClosedByBroker:
                channel = connection.channel()  # 404: the queue does not exist (yet)
                continue
            stats.exists = True
            stats.ready = frame.method.message_count
            stats.consumers = frame.method.consumer_count
        return out
    finally:
        try:
            connection.close()
        except Exception:  # noqa: BLE001 - closing a broken connection
            pass


# --- Prometheus: shared helpers -------------------------------------------------------------------

_lock = threading.Lock()
_made: dict[str, object] = {}


def _once(name: str, make):
    """The process's one metric object ``name``, made on first use."""
    metric = _made.get(name)
    if metric is None:
        with _lock:
            metric = _made.get(name)
            if metric is None:
                metric = _made[name] = make()
    return metric


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir") or None


def _safe(fn):
    """Metrics must never break the work they measure."""

    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception:  # noqa: BLE001
            log.debug("metric %s failed", fn.__name__, exc_info=True)
            return None

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


# --- Prometheus: workers ---------------------------------------------------------------------------


def _counter(name: str, doc: str, labels: tuple[str, ...]):
    def make():
        from prometheus_client import Counter

        return Counter(name, doc, labels)

    return _once(name, make)


def _histogram(name: str, doc: str, labels: tuple[str, ...], buckets):
    def make():
        from prometheus_client import Histogram

        return Histogram(name, doc, labels, buckets=buckets)

    return _once(name, make)


def deliveries_counter():
    return _counter("push_deliveries_total", "Delivery outcomes recorded, by provider, app and outcome.", ("provider", "app", "outcome"))


def retries_counter():
    return _counter("push_delivery_retries_total", "Deliveries sent back to the queue to be retried later.", ("provider", "app"))


def dead_letters_counter():
    return _counter("push_dead_letters_total", "Deliveries given up after retries (dead letters).", ("provider", "app"))


def dead_tokens_counter():
    return _counter("push_dead_tokens_total", "Device tokens the provider reported dead (device deactivated).", ("provider", "app"))


def delivery_latency():
    return _histogram(
        "push_delivery_latency_seconds",
        "Seconds from a delivery being queued for its provider to the provider's final answer (retries included).",
        ("provider",),
        LATENCY_BUCKETS,
    )


@_safe
def record_result(
    provider: str, app_id: str, state: str, queued_at: float | None = None, *, delivery_id: str | None = None, reason: str | None = None
) -> None:
    """Count (and log) one delivery's outcome in this run (``state`` as recorded: sent, failed, dead_token, expired, retry)."""
    level = logging.DEBUG if state == "sent" else logging.INFO
    if delivery_id is not None and delivery_log.isEnabledFor(level):
        shown = logs.redacted_delivery_id(delivery_id)  # a log line never holds a whole device token
        delivery_log.log(
            level,
            "delivery %s: %s",
            shown,
            state,
            extra={"delivery_id": shown, "message_id": delivery_id.split(":", 1)[0], "provider": provider, "app_id": app_id,
                   "outcome": state, "reason": reason},
        )
    deliveries_counter().labels(provider, app_id, state).inc()
    if state == "retry":
        retries_counter().labels(provider, app_id).inc()
    elif state == "dead_token":
        dead_tokens_counter().labels(provider, app_id).inc()
    if queued_at and state in ANSWERED_STATES:
        delivery_latency().labels(provider).observe(max(0.0, time.time() - queued_at))


@_safe
def record_dead_letters(provider: str, app_id: str, count: int) -> None:
    deliveries_counter().labels(provider, app_id, "dead_letter").inc(count)
    dead_letters_counter().labels(provider, app_id).inc(count)


# --- Prometheus: API ------------------------------------------------------------------------------


def http_requests_counter():
    return _counter("push_http_requests_total", "HTTP requests answered, by route, method and status.", ("route", "method", "status"))


def http_duration():
    return _histogram("push_http_request_duration_seconds", "Seconds to answer an HTTP request, by route.", ("route", "method"), REQUEST_BUCKETS)


def enqueue_latency():
    return _histogram(
        "push_enqueue_latency_seconds", "Seconds from publishing a command to RabbitMQ's confirm, by queue.", ("queue",), ENQUEUE_BUCKETS
    )


def enqueue_failures_counter():
    return _counter("push_enqueue_failures_total", "Publishes RabbitMQ did not confirm, by queue.", ("queue",))


@_safe
def record_request(route: str, method: str, status: int, seconds: float) -> None:
    http_requests_counter().labels(route, method, str(status)).inc()
    http_duration().labels(route, method).observe(seconds)


def enqueue_timer_middleware():
    """A Dramatiq middleware timing each enqueue (publish → confirm) on the broker it is added to."""
    from dramatiq import Middleware

    class EnqueueTimer(Middleware):
        def __init__(self):
            self.local = threading.local()

        def before_enqueue(self, broker, message, delay):
            self.local.started = time.perf_counter()

        def after_enqueue(self, broker, message, delay):
            started = getattr(self.local, "started", None)
            if started is not None:
                self.local.started = None
                seconds = time.perf_counter() - started
                _observe_enqueue(message.queue_name, seconds)
                payload = message.args[0] if message.args and isinstance(message.args[0], dict) else {}
                enqueue_log.info(
                    "enqueued %s %s", payload.get("kind", message.actor_name), payload.get("id", ""),
                    extra={"command_id": payload.get("id"), "kind": payload.get("kind"), "queue": message.queue_name,
                           "actor": message.actor_name, "enqueue_ms": round(seconds * 1000, 2)},
                )

    return EnqueueTimer()


@_safe
def _observe_enqueue(queue: str, seconds: float) -> None:
    enqueue_latency().labels(queue).observe(seconds)


class QueueCollector:
    """Collects queue depth, consumers and rates per queue from RabbitMQ at scrape time, and suspended providers."""

    def __init__(self, settings: Settings, db=None):
        self.settings = settings
        self.db = db

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        labels = ["queue", "kind", "lane"]
        up = GaugeMetricFamily("push_queue_stats_up", "1 when RabbitMQ answered the queue figures (management API or AMQP).", labels=["source"])
        families = {
            "ready": GaugeMetricFamily("push_queue_messages_ready", "Messages ready for delivery, per queue.", labels=labels),
            "unacked": GaugeMetricFamily("push_queue_messages_unacked", "Messages delivered to a worker and not yet acknowledged.", labels=labels),
            "consumers": GaugeMetricFamily("push_queue_consumers", "Consumers of the queue.", labels=labels),
            "publish_rate": GaugeMetricFamily("push_queue_publish_rate", "Messages published per second (RabbitMQ's rate).", labels=labels),
            "deliver_rate": GaugeMetricFamily("push_queue_deliver_rate", "Messages delivered to workers per second.", labels=labels),
            "oldest_age_seconds": GaugeMetricFamily("push_queue_oldest_message_age_seconds", "Age of the queue's head message.", labels=labels),
        }
        try:
            stats, source = queue_stats(self.settings)
            up.add_metric([source], 1)
        except QueuesUnavailable:
            stats = []
            up.add_metric(["none"], 0)
        for q in stats:
            if not q.exists:
                continue
            for key, family in families.items():
                value = getattr(q, key)
                if value is not None:
                    family.add_metric([q.name, q.kind, q.lane], float(value))
        yield up
        yield from families.values()
        expiries = self._certificate_expiries()
        if expiries is not None:
            family = GaugeMetricFamily("push_apns_certificate_not_after_timestamp_seconds",
                                       "End of validity of each app's APNs client certificate (Unix time).", labels=["app"])
            for app_id, not_after in sorted(expiries.items()):
                family.add_metric([app_id], not_after)
            yield family
        yield from self._backlog()
        suspended = self._suspended()
        if suspended is not None:
            family = GaugeMetricFamily("push_suspended_providers", "Apps whose provider is suspended (credentials refused).", labels=["provider"])
            for provider, count in sorted(suspended.items()):
                family.add_metric([provider], count)
            yield family

    def _certificate_expiries(self) -> dict | None:
        """App id → its APNs certificate's ``not_after`` (Unix time), for the apps that authenticate with one."""
        if self.db is None:
            return None
        from datetime import datetime

        from shared import db as mongo

        try:
            out = {}
            for app in self.db[mongo.APPS].find({"apns.auth": mongo.APNS_CERTIFICATE}, {"apns.not_after": 1}):
                not_after = (app.get("apns") or {}).get("not_after")
                if isinstance(not_after, str):
                    out[app["_id"]] = datetime.fromisoformat(not_after).timestamp()
                elif isinstance(not_after, datetime):
                    out[app["_id"]] = not_after.timestamp()
            return out
        except Exception:  # noqa: BLE001 - a scrape answers what it can
            return None

    def _backlog(self):
        """Per app, lane and provider: deliveries waiting, in flight, in retry, throttled, parked, and the oldest waiting age
        (shared/backlog.py)."""
        if self.db is None:
            return
        from prometheus_client.core import GaugeMetricFamily

        from shared import backlog

        try:
            rows = backlog.cached(self.db)
        except Exception:  # noqa: BLE001 - a scrape answers what it can
            return
        labels = ["app", "lane", "provider"]
        families = {
            "waiting": GaugeMetricFamily("push_app_deliveries_waiting", "Open deliveries of chunks no worker holds.", labels=labels),
            "in_flight": GaugeMetricFamily("push_app_deliveries_in_flight", "Open deliveries of chunks a worker holds.", labels=labels),
            "retry": GaugeMetricFamily("push_app_deliveries_retry", "Open deliveries waiting for a retry.", labels=labels),
            "oldest_waiting_seconds": GaugeMetricFamily("push_app_oldest_waiting_seconds", "Age of the oldest open chunk.", labels=labels),
            "throttled": GaugeMetricFamily("push_app_deliveries_throttled", "Open deliveries waiting for the app's provider budget.",
                                           labels=labels),
            "parked": GaugeMetricFamily("push_app_deliveries_parked", "Open deliveries of chunks parked in MongoDB until due.",
                                        labels=labels),
            "paced": GaugeMetricFamily("push_app_entries_paced", "Entries of bulk sends waiting for room under the app's bound "
                                       "(not expanded yet: provider '-').", labels=labels),
        }
        for row in rows:
            for key, family in families.items():
                family.add_metric([row.app, row.lane, row.provider], float(getattr(row, key)))
        yield from families.values()

    def _suspended(self) -> dict | None:
        if self.db is None:
            return None
        from shared import db as mongo

        try:
            counts = dict.fromkeys(commands.PUSH_PROVIDERS, 0)
            for app in self.db[mongo.APPS].find({}, {"suspended": 1}):
                for provider, reason in (app.get("suspended") or {}).items():
                    if reason:
                        counts[provider] = counts.get(provider, 0) + 1
            return counts
        except Exception:  # noqa: BLE001 - a scrape answers what it can
            return None


def exposition(settings: Settings, db=None) -> tuple[bytes, str]:
    """The API's ``/metrics``: this process's (or, multi-process, every API process's) metrics and the queue gauges."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

    directory = multiprocess_dir()
    if directory:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
    else:
        registry = REGISTRY
    scrape = CollectorRegistry()
    scrape.register(QueueCollector(settings, db))
    return generate_latest(registry) + generate_latest(scrape), CONTENT_TYPE_LATEST


# --- Prometheus: worker process groups ------------------------------------------------------------


def worker_metrics_dir(settings: Settings) -> str:
    """Where a worker group's processes keep their metric files (one directory per group: per port)."""
    import tempfile

    return os.environ.get("dramatiq_prom_db") or os.path.join(tempfile.gettempdir(), f"push-worker-metrics-{settings.worker_metrics_port}")


def add_worker_prometheus(broker, settings: Settings) -> None:
    """Dramatiq's Prometheus middleware on a worker broker, served on ``worker_metrics_port``.

    Every process of the group writes its metrics (Dramatiq's ``dramatiq_*``
    and this module's ``push_*``) to one multi-process directory; a fork
    process of the Dramatiq CLI serves them all at ``http://host:port/metrics``.
    The directory should be empty when the group starts (a fresh container; the
    dev stack clears it), or counters carry over from the previous run.
    """
    directory = worker_metrics_dir(settings)
    os.makedirs(directory, exist_ok=True)
    # Read by Dramatiq's middleware module at import and by prometheus_client at its import: set both first.
    os.environ["dramatiq_prom_db"] = directory
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from dramatiq.middleware.prometheus import Prometheus

    class GroupPrometheus(Prometheus):
        @property
        def forks(self):
            return [serve_worker_metrics]

    broker.add_middleware(GroupPrometheus())


def serve_worker_metrics() -> int:
    """Fork process of the Dramatiq CLI: serve the group's metrics (all its processes) until stopped."""
    from http.server import ThreadingHTTPServer

    from shared.settings import load

    settings = load()
    directory = worker_metrics_dir(settings)
    os.makedirs(directory, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from prometheus_client import CollectorRegistry, multiprocess
    from prometheus_client.exposition import MetricsHandler

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    host = os.environ.get("dramatiq_prom_host", "0.0.0.0")
    handler = MetricsHandler.factory(registry)
    handler.log_message = lambda *args, **kwargs: None
    try:
        server = ThreadingHTTPServer((host, settings.worker_metrics_port), handler)
    except OSError as error:
        log.error("worker metrics: cannot listen on %s:%s: %s", host, settings.worker_metrics_port, error)
        return 1
    log.info("worker metrics on http://%s:%s/metrics", host, settings.worker_metrics_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0
