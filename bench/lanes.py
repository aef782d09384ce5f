"""Lanes: a transactional send's latency and a small batch's time while one app's big campaign runs.

The scenario of issue 15 on one stack, three apps:

- app B sends SYNCHRONOUS single messages at ``SYNC_RATE`` per second (open loop: each send in its
  own thread, so a slow answer does not slow the rate), first with nothing else running
  (``sync_idle_p99_ms``), then while app A's live campaign to ``users`` users runs
  (``sync_during_campaign_p99_ms``);
- app C posts one ASYNCHRONOUS batch of ``BATCH_SIZE`` messages alone (``batch_alone_s``), then a few
  seconds into the campaign (``batch_during_campaign_s``): posted → every delivery recorded;
- the campaign runs twice, alone (``campaign_alone_per_s``) and with the sync sends and the batch
  (``campaign_with_load_per_s``): users delivered per second, by the simulators' counters.

Runnable alone: ``python -m bench.lanes --users 100000``.
"""
from __future__ import annotations

import argparse
import secrets
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.campaign import _add_users
from bench.delivered import Stalled, simulator_stats
from bench.figures import line
from bench.harness import bench_stack, discard, percentile, seed_devices
from devstack.credentials import configure_app, make_credentials, register_with_simulators
from devstack.stack import Stack

#: SYNCHRONOUS sends per second of app B (the issue's measurement).
SYNC_RATE = 5.0
#: Messages of app C's batch.
BATCH_SIZE = 1000
#: Seconds into the campaign when app C's batch is posted (its chunks are queued by then).
BATCH_AFTER_SECONDS = 5.0
#: Seconds without a new delivery that fail a run.
STALL_SECONDS = 120.0
#: Threads sending app B's SYNCHRONOUS messages (answers may take seconds behind bulk work).
SYNC_SENDERS = 64


class SyncSender:
    """App B's SYNCHRONOUS sends at a fixed rate until stopped; keeps each answer's latency (ms)."""

    def __init__(self, stack: Stack, app_id: str, user_id: str, *, rate: float = SYNC_RATE):
        self.stack, self.app_id, self.user_id, self.rate = stack, app_id, user_id, rate
        self.latencies: list[float] = []
        self.failures = 0
        self._local = threading.local()
        self._lock = threading.Lock()

    def _send(self) -> None:
        session = getattr(self._local, "session", None) or requests.Session()
        self._local.session = session
        started = time.perf_counter()
        try:
            answer = session.post(
                f"{self.stack.api_url}/push/message/send",
                json={"requestObject": {"appId": self.app_id, "mode": "SYNCHRONOUS",
                                        "message": {"userId": self.user_id, "body": {"title": "Your code", "body": "123456"}}}},
                timeout=120,
            )
            sent = answer.status_code == 200 and answer.json()["responseObject"]["result"]["apns"]["sent"] == 1
        except (requests.RequestException, ValueError, KeyError, TypeError):
            sent = False
        with self._lock:
            if sent:
                self.latencies.append((time.perf_counter() - started) * 1000)
            else:
                self.failures += 1

    def run(self, *, count: int | None = None, until: threading.Event | None = None) -> None:
        """Send ``count`` messages, or until ``until`` is set, at the rate; wait for every answer."""
        with ThreadPoolExecutor(SYNC_SENDERS) as pool:
            started, sent = time.monotonic(), 0
            while (count is None or sent < count) and not (until is not None and until.is_set()):
                pool.submit(self._send)
                sent += 1
                time.sleep(max(0.0, started + sent / self.rate - time.monotonic()))

    @property
    def answered(self) -> int:
        return len(self.latencies)


def _create_app(stack: Stack, app_id: str) -> str:
    """An app with its own APNs key id: the simulator keeps one key per key id, so apps of one stack must not share one."""
    credentials = make_credentials(app_id, fcm_origin=f"https://127.0.0.1:{stack.ports.fcm}", key_id=secrets.token_hex(5).upper())
    register_with_simulators(credentials, apns_control=f"http://127.0.0.1:{stack.ports.apns_control}",
                             fcm_control=f"http://127.0.0.1:{stack.ports.fcm_control}")
    configure_app(stack.api_url, app_id, credentials)
    return app_id


def _new_campaign(stack: Stack, app_id: str, users: list[str]) -> str:
    answer = requests.post(f"{stack.api_url}/push/campaign/create",
                           json={"requestObject": {"appId": app_id, "message": {"title": "Campaign", "body": "to everyone"}}}, timeout=60)
    answer.raise_for_status()
    campaign_id = answer.json()["responseObject"]["id"]
    _add_users(stack, campaign_id, users)
    return campaign_id


def _post_batch(stack: Stack, app_id: str, users: list[str]) -> str:
    answer = requests.post(
        f"{stack.api_url}/push/message/batch/send",
        json={"requestObject": {"appId": app_id, "mode": "ASYNCHRONOUS", "batch": [{"userId": u, "body": {"title": "batch"}} for u in users]}},
        timeout=120,
    )
    answer.raise_for_status()
    return answer.json()["responseObject"]["messageId"]


def _batch_seconds(stack: Stack, app_id: str, users: list[str]) -> float:
    """Post app C's batch; seconds until the message's detail has every delivery sent."""
    started = time.monotonic()
    message_id = _post_batch(stack, app_id, users)
    moved_at, last = time.monotonic(), -1
    while True:
        answer = requests.get(f"{stack.api_url}/push/message/{message_id}/detail", timeout=60)
        result = answer.json().get("responseObject", {}).get("result") or {}
        sent = sum(result.get(p, {}).get("sent", 0) for p in ("apns", "fcm"))
        if sent >= len(users):
            return time.monotonic() - started
        if sent != last:
            last, moved_at = sent, time.monotonic()
        elif time.monotonic() - moved_at > STALL_SECONDS:
            raise Stalled(f"batch of {len(users)}: {sent} sent and nothing more for {STALL_SECONDS:.0f} s")
        time.sleep(0.1)


def _run_campaign(stack: Stack, campaign_id: str, users: int, others) -> float:
    """Start the campaign; seconds until the simulators delivered ``users`` besides ``others()`` (the other apps' sends)."""
    before = sum(s["delivered_total"] for s in simulator_stats(stack))
    started = time.time()
    requests.post(f"{stack.api_url}/push/campaign/send/live/{campaign_id}", timeout=60).raise_for_status()
    moved_at, progress = time.monotonic(), -1
    while True:
        stats = simulator_stats(stack)
        delivered = sum(s["delivered_total"] for s in stats) - before - others()
        if delivered >= users:
            return max(s["last_delivered_at"] or 0.0 for s in stats) - started
        if delivered != progress:
            progress, moved_at = delivered, time.monotonic()
        elif time.monotonic() - moved_at > STALL_SECONDS:
            raise Stalled(f"campaign to {users:,}: {delivered:,} delivered and nothing more for {STALL_SECONDS:.0f} s")
        time.sleep(0.2)


def _seed(stack: Stack, app_id: str, prefix: str, count: int) -> list[str]:
    users = [f"{prefix}-{i:08d}" for i in range(count)]
    tokens = ["0" + secrets.token_hex(32)[1:] if i % 2 == 0 else f"{prefix}-{secrets.token_urlsafe(30)}" for i in range(count)]
    seed_devices(stack, app_id, users, tokens, ["apns" if i % 2 == 0 else "fcm" for i in range(count)])
    return users


def measure_lanes(stack: Stack, *, users: int, idle_sends: int, alone_per_s: float | None = None) -> dict:
    """The lanes figures on a started stack (the current tree's or a baseline's: everything goes through the API).

    ``alone_per_s``: the rate of a campaign to as many users measured alone on this stack in the same run (make bench's
    campaign group): then it is the "alone" rate and only the loaded campaign runs (one 1M campaign less).
    """
    tag = uuid.uuid4().hex[:6]
    app_a, app_b, app_c = (_create_app(stack, f"bench-lanes-{name}-{tag}") for name in "abc")
    campaign_users = _seed(stack, app_a, f"la-{tag}", users)
    otp_user = f"lb-{tag}-otp"
    seed_devices(stack, app_b, [otp_user], ["0" + secrets.token_hex(32)[1:]], ["apns"])
    batch_users = _seed(stack, app_c, f"lc-{tag}", BATCH_SIZE)
    alone_campaign = _new_campaign(stack, app_a, campaign_users) if alone_per_s is None else None
    loaded_campaign = _new_campaign(stack, app_a, campaign_users)
    del campaign_users

    idle = SyncSender(stack, app_b, otp_user)
    idle.run(count=idle_sends)
    batch_alone_s = _batch_seconds(stack, app_c, batch_users)
    alone_s = _run_campaign(stack, alone_campaign, users, lambda: 0) if alone_campaign else users / alone_per_s

    during = SyncSender(stack, app_b, otp_user)
    done = threading.Event()
    batch: dict = {}

    def batch_during() -> None:
        time.sleep(BATCH_AFTER_SECONDS)
        batch["posted"] = True
        batch["seconds"] = _batch_seconds(stack, app_c, batch_users)

    sync_thread = threading.Thread(target=during.run, kwargs={"until": done}, daemon=True)
    batch_thread = threading.Thread(target=batch_during, daemon=True)
    sync_thread.start()
    batch_thread.start()
    try:
        loaded_s = _run_campaign(stack, loaded_campaign, users,
                                 lambda: during.answered + (BATCH_SIZE if batch.get("posted") else 0))
    finally:
        done.set()
        sync_thread.join()
        batch_thread.join()
    idle_p99 = percentile(idle.latencies, 0.99) if idle.latencies else None
    during_p99 = percentile(during.latencies, 0.99) if during.latencies else None
    return {
        "sync_idle_sends": idle.answered,
        "sync_idle_p50_ms": percentile(idle.latencies, 0.5) if idle.latencies else None,
        "sync_idle_p99_ms": idle_p99,
        "sync_during_campaign_sends": during.answered,
        "sync_during_campaign_failures": during.failures,
        "sync_during_campaign_p50_ms": percentile(during.latencies, 0.5) if during.latencies else None,
        "sync_during_campaign_p99_ms": during_p99,
        "ratio_sync_p99_during_to_idle": during_p99 / idle_p99 if idle_p99 and during_p99 else None,
        "campaign_alone_per_s": users / alone_s,
        "campaign_with_load_per_s": users / loaded_s,
        "ratio_campaign_with_load_to_alone": alone_s / loaded_s,
        "batch_alone_s": batch_alone_s,
        "batch_during_campaign_s": batch.get("seconds"),
        "ratio_batch_during_to_alone": batch["seconds"] / batch_alone_s if batch.get("seconds") else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=100_000, help="users of app A's campaign")
    parser.add_argument("--idle-sends", type=int, default=75, help="SYNCHRONOUS sends of the idle phase")
    args = parser.parse_args()
    stack = bench_stack()
    try:
        stack.start()
        for name, value in measure_lanes(stack, users=args.users, idle_sends=args.idle_sends).items():
            print(line(name, value), flush=True)
    finally:
        discard(stack)


if __name__ == "__main__":
    main()
