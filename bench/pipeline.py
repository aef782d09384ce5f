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

import pika
import requests

from bench.harness import (
    bench_stack,
    cpu_seconds,
    create_app,
    database,
    database_pids,
    median,
    percentile,
    project_pids,
    seed_devices,
)
from devstack.stack import WORKER_GROUPS, Stack
from shared.commands import queue_name_for_prefix
from shared.settings import load

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


def simulators_delivered(stack: Stack) -> int:
    """Sends both simulators have answered 200 so far (their control ports; no database read)."""
    total = 0
    for port in (stack.ports.apns_control, stack.ports.fcm_control):
        total += requests.get(f"http://127.0.0.1:{port}/stats", timeout=10).json()["delivered_total"]
    return total


def wait_delivered(stack: Stack, message_ids: list[str], expected: int, *, delivered_before: int = 0, timeout: float = 900) -> float:
    """Wait until every delivery of the messages has an outcome; answer the time of the last outcome.

    Until the simulators have answered ``expected`` more sends than ``delivered_before``
    (:func:`simulators_delivered` before the run), only their counters are
    polled (cheap, off the database); then the deliveries are aggregated until all are
    final. The aggregate reads every delivery: polled every 2 s from the start it was
    about a tenth of nx-27017's CPU in the run it measures.
    """
    deliveries = database(stack)["deliveries"]
    deadline = time.monotonic() + timeout
    # A send the simulators did not take (a failure) is never counted there: after 10 s of no
    # progress the database decides.
    progress, moved_at = -1, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - moved_at < 10:
        delivered = simulators_delivered(stack) - delivered_before
        if delivered >= expected:
            break
        if delivered != progress:
            progress, moved_at = delivered, time.monotonic()
        time.sleep(0.2)
    while time.monotonic() < deadline:
        rows = list(
            deliveries.aggregate([{"$match": {"message_id": {"$in": message_ids}}}, {"$group": {"_id": "$state", "n": {"$sum": 1}, "last": {"$max": "$at"}}}])
        )
        final = sum(r["n"] for r in rows if r["_id"] in ("sent", "failed", "dead_token", "expired", "dead_letter"))
        if final >= expected:
            return max(r["last"] or 0 for r in rows)
        # The answer is the last outcome's recorded time, whenever it is looked at.
        time.sleep(0.5)
    raise TimeoutError(f"deliveries not final after {timeout}s")


def e2e_run(stack: Stack, app_id: str, users: list[str]) -> dict:
    pids, db_pids = project_pids(stack), database_pids(stack)
    cpu_before, db_cpu_before = cpu_seconds(pids), cpu_seconds(db_pids)
    delivered_before = simulators_delivered(stack)
    start = time.time()
    message_ids = post_batches(stack, app_id, users)
    last = wait_delivered(stack, message_ids, len(users), delivered_before=delivered_before)
    cpu_used = cpu_seconds(project_pids(stack)) - cpu_before
    db_cpu_used = cpu_seconds(db_pids) - db_cpu_before
    elapsed = last - start
    return {"per_s": len(users) / elapsed, "cpu_us": cpu_used / len(users) * 1e6, "db_cpu_us": db_cpu_used / len(users) * 1e6}


def measure_e2e(stack: Stack, *, devices: int, repeats: int = 3) -> dict:
    """Median delivered/s of ``devices`` notifications posted as batches (after a warm-up run)."""
    app_id = create_app(stack, f"bench-e2e-{uuid.uuid4().hex[:6]}")
    users, tokens, platforms = tokens_for(devices)
    seed_devices(stack, app_id, users, tokens, platforms)
    e2e_run(stack, app_id, users[: min(devices, 5 * BATCH_SIZE)])  # warm-up: connections, JWTs, OAuth tokens
    runs = [e2e_run(stack, app_id, users) for _ in range(repeats)]
    return {
        "e2e_per_s": median([r["per_s"] for r in runs]),
        "cpu_us_per_notification": median([r["cpu_us"] for r in runs]),
        "db_cpu_us_per_notification": median([r["db_cpu_us"] for r in runs]),
    }


def purge_queues(stack: Stack) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(load().amqp_url))
    try:
        channel = connection.channel()
        for queues in WORKER_GROUPS.values():
            for queue in queues:
                name = queue_name_for_prefix(stack.queue_prefix, queue)
                for suffix in ("", ".DQ", ".XQ"):
                    try:
                        channel.queue_purge(name + suffix)
                    except pika.exceptions.ChannelClosedByBroker:
                        channel = connection.channel()
    finally:
        connection.close()


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
            print(f"{name}: {value:.1f}", flush=True)
    finally:
        stack.stop_all()


if __name__ == "__main__":
    main()
