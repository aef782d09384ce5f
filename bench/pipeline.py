"""End-to-end figures of the PowerAuth pipeline: e2e delivery rate, ingest rate, SYNCHRONOUS latency.

Runnable alone: ``python -m bench.pipeline [--devices N]``.
"""
from __future__ import annotations

import argparse
import secrets
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.delivered import delivered_total, wait_delivered
from bench.figures import line
from bench.harness import (
    bench_stack,
    cpu_seconds,
    create_app,
    database_pids,
    median,
    medians,
    percentile,
    project_pids,
    purge_queues,
    rabbitmq_pid,
    seed_devices,
)
from devstack.stack import Stack

#: Messages per batch request, as high-volume senders post them.
BATCH_SIZE = 1000
#: Concurrent batch senders.
SENDERS = 8
#: Requests per second of the SYNCHRONOUS latency run, and how many.
SYNC_RATE = 20
SYNC_REQUESTS = 200


def tokens_for(count: int) -> tuple[list[str], list[str], list[str]]:
    users = [f"bu-{i}-{uuid.uuid4().hex[:6]}" for i in range(count)]
    tokens = ["0" + secrets.token_hex(32)[1:] if i % 2 == 0 else f"fcm-{secrets.token_urlsafe(30)}" for i in range(count)]
    platforms = ["apns" if i % 2 == 0 else "fcm" for i in range(count)]
    return users, tokens, platforms


def post_batches(stack: Stack, app_id: str, users: list[str], *, senders: int = SENDERS) -> list[str]:
    """Post ASYNCHRONOUS batches of BATCH_SIZE from ``senders`` threads; answer the message ids."""
    batches = [users[i : i + BATCH_SIZE] for i in range(0, len(users), BATCH_SIZE)]
    local = threading.local()

    def post(batch: list[str]) -> str:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        answer = session.post(
            f"{stack.api_url}/push/message/batch/send",
            json={"requestObject": {"appId": app_id, "mode": "ASYNCHRONOUS", "batch": [{"userId": u, "body": {"title": "bench", "body": u}} for u in batch]}},
            timeout=120,
        )
        answer.raise_for_status()
        return answer.json()["responseObject"]["messageId"]

    with ThreadPoolExecutor(senders) as pool:
        return list(pool.map(post, batches))


def db_operations(stack: Stack) -> tuple[float, float] | None:
    """(database round trips, documents written) so far by every worker group, from their /metrics; None without them."""
    from shared.db_counters import DOCUMENTS_WRITTEN, ROUND_TRIPS

    trips = written = 0.0
    seen = False
    for group in list(getattr(stack, "worker_metrics_ports", {})):
        try:
            text = requests.get(stack.worker_metrics_url(group), timeout=10).text
        except requests.RequestException:
            continue
        for row in text.splitlines():
            if row.startswith(ROUND_TRIPS + "_total"):
                trips += float(row.rsplit(" ", 1)[1])
                seen = True
            elif row.startswith(DOCUMENTS_WRITTEN + "_total"):
                written += float(row.rsplit(" ", 1)[1])
    return (trips, written) if seen else None


class E2eBench:
    """The e2e figure on one stack: ``devices`` seeded devices, each :meth:`round` sends one notification to every one.

    Parameters:
      stack: a started stack (the current tree's or a baseline's).
      devices: devices seeded (half APNs, half FCM, all deliverable).

    A round's figures: ``e2e_per_s`` (posted to last delivery, by the simulators'
    counts), and CPU per delivered notification from /proc: ``cpu_us_per_notification``
    (API + workers), ``db_cpu_us_per_notification`` (nx-27017) and
    ``server_cpu_us_per_notification`` (API, workers, the machine's RabbitMQ and
    nx-27017: everything the server runs; RabbitMQ also serves whatever else uses it).
    """

    def __init__(self, stack: Stack, *, devices: int):
        self.stack = stack
        self.app_id = create_app(stack, f"bench-e2e-{uuid.uuid4().hex[:6]}")
        self.users, tokens, platforms = tokens_for(devices)
        seed_devices(stack, self.app_id, self.users, tokens, platforms)
        self.rabbitmq_pid = rabbitmq_pid()
        self._run(self.users[: min(devices, 5 * BATCH_SIZE)])  # warm-up: connections, JWTs, OAuth tokens

    def _run(self, users: list[str]) -> dict:
        stack = self.stack
        project, db = project_pids(stack), database_pids(stack)
        broker = [self.rabbitmq_pid] if self.rabbitmq_pid else []
        cpu_before, db_before, broker_before = cpu_seconds(project), cpu_seconds(db), cpu_seconds(broker)
        delivered_before = delivered_total(stack)
        db_ops_before = db_operations(stack)
        start = time.time()
        post_batches(stack, self.app_id, users)
        last = wait_delivered(stack, len(users), delivered_before=delivered_before, what="e2e")
        cpu_used = cpu_seconds(project_pids(stack)) - cpu_before
        db_used = cpu_seconds(db) - db_before
        broker_used = cpu_seconds(broker) - broker_before
        per_notification = 1e6 / len(users)
        db_ops = db_operations(stack)
        counted = db_ops is not None and db_ops_before is not None
        return {
            # Counted by the workers' code that issues them (shared/db_counters.py); None for a tree without the counters.
            "db_round_trips_per_notification": (db_ops[0] - db_ops_before[0]) / len(users) if counted else None,
            "db_documents_written_per_notification": (db_ops[1] - db_ops_before[1]) / len(users) if counted else None,
            "e2e_per_s": len(users) / (last - start),
            "cpu_us_per_notification": cpu_used * per_notification,
            "db_cpu_us_per_notification": db_used * per_notification,
            "server_cpu_us_per_notification": (cpu_used + db_used + broker_used) * per_notification if broker else None,
        }

    def round(self) -> dict:
        return self._run(self.users)


def measure_e2e(stack: Stack, *, devices: int, repeats: int = 3) -> dict:
    """Median figures of ``repeats`` rounds of ``devices`` notifications posted as batches (after a warm-up run)."""
    bench = E2eBench(stack, devices=devices)
    return medians([bench.round() for _ in range(repeats)])


def measure_ingest(stack: Stack, *, notifications: int = 80_000, repeats: int = 3) -> dict:
    """Notifications accepted per second by the batch API with the workers stopped."""
    app_id = create_app(stack, f"bench-ingest-{uuid.uuid4().hex[:6]}")
    users = [f"iu-{i}" for i in range(notifications)]
    stack.stop_workers()
    try:
        post_batches(stack, app_id, users[: 8 * BATCH_SIZE])  # warm-up
        rates = []
        for _ in range(repeats):
            start = time.perf_counter()
            post_batches(stack, app_id, users)
            rates.append(notifications / (time.perf_counter() - start))
    finally:
        purge_queues(stack)
        stack.start_workers()
    return {"ingest_per_s": median(rates)}


def measure_sync(stack: Stack) -> dict:
    """SYNCHRONOUS single sends at SYNC_RATE per second: latency percentiles."""
    app_id = create_app(stack, f"bench-sync-{uuid.uuid4().hex[:6]}")
    users, tokens, platforms = tokens_for(100)
    seed_devices(stack, app_id, users, tokens, platforms)
    session = requests.Session()
    latencies = []
    db_pids = database_pids(stack)
    db_cpu_before = 0.0
    for i in range(SYNC_REQUESTS + 20):
        if i == 20:
            db_cpu_before = cpu_seconds(db_pids)
        started = time.perf_counter()
        answer = session.post(
            f"{stack.api_url}/push/message/send",
            json={"requestObject": {"appId": app_id, "message": {"userId": users[i % len(users)], "body": {"title": "sync"}}}},
            timeout=60,
        )
        took = time.perf_counter() - started
        answer.raise_for_status()
        assert answer.json()["responseObject"]["result"]["apns"]["pending"] == 0
        if i >= 20:  # the first ones warm up
            latencies.append(took * 1000)
        time.sleep(max(0.0, 1 / SYNC_RATE - took))
    return {
        "sync_send_p50_ms": percentile(latencies, 0.5),
        "sync_send_p99_ms": percentile(latencies, 0.99),
        "sync_db_cpu_ms_per_send": (cpu_seconds(db_pids) - db_cpu_before) / SYNC_REQUESTS * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    stack = bench_stack()
    try:
        stack.start()
        for name, value in measure_e2e(stack, devices=args.devices, repeats=args.repeats).items():
            print(line(name, value), flush=True)
    finally:
        stack.stop_all()


if __name__ == "__main__":
    main()
