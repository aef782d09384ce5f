"""A live campaign to N users with one device each: time to finish, delivered/s, worker peak RSS.

Devices are seeded straight into MongoDB; the users are added through the API
in requests of 100,000 ids (as the reference server's users do), then
send/live is timed until the simulators received every user's notification
(their counters, not the database, so every code's layout is timed alike).
The worker processes are restarted before each run so their peak RSS (VmHWM)
is that run's alone.
Runnable alone: ``python -m bench.campaign --users 100000``.
"""
from __future__ import annotations

import argparse
import secrets
import threading
import time
import uuid

import requests

from bench.delivered import delivered_total, wait_delivered
from bench.figures import line
from bench.harness import bench_stack, create_app, group_pids, seed_devices
from devstack.stack import Stack

USERS_PER_REQUEST = 100_000
#: Seconds without a new delivery that fail a campaign (its expansion starts sending within seconds).
STALL_SECONDS = 120.0


def _add_users(stack: Stack, campaign_id: str, users: list[str]) -> None:
    session = requests.Session()
    for start in range(0, len(users), USERS_PER_REQUEST):
        answer = session.put(
            f"{stack.api_url}/push/campaign/{campaign_id}/user/add",
            json={"requestObject": users[start : start + USERS_PER_REQUEST]},
            timeout=600,
        )
        answer.raise_for_status()


def _worker_pids(stack: Stack) -> dict[str, list[int]]:
    return {name: group_pids(p.pid) for name, p in stack.processes.items() if name.startswith("workers-")}


def _rss_mb(pid: int, field: str) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for entry in status:
                if entry.startswith(field):
                    return int(entry.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def measure_campaign(stack: Stack, *, users: int) -> dict:
    """Run one campaign to ``users`` users; answer seconds, delivered/s and each worker group's peak RSS (MB)."""
    app_id = create_app(stack, f"bench-camp-{uuid.uuid4().hex[:6]}")
    tag = uuid.uuid4().hex[:6]
    user_ids = [f"cu-{tag}-{i:08d}" for i in range(users)]
    tokens = ["0" + secrets.token_hex(32)[1:] if i % 2 == 0 else f"camp-{secrets.token_urlsafe(30)}" for i in range(users)]
    platforms = ["apns" if i % 2 == 0 else "fcm" for i in range(users)]
    seed_devices(stack, app_id, user_ids, tokens, platforms)
    del tokens, platforms
    answer = requests.post(
        f"{stack.api_url}/push/campaign/create",
        json={"requestObject": {"appId": app_id, "message": {"title": "Campaign", "body": "to a million"}}},
        timeout=60,
    )
    answer.raise_for_status()
    campaign_id = answer.json()["responseObject"]["id"]
    _add_users(stack, campaign_id, user_ids)
    del user_ids

    stack.stop_workers()
    stack.start_workers()  # fresh processes: VmHWM is this run's peak
    peak: dict[str, float] = {name: 0.0 for name in _worker_pids(stack)}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for name, group in _worker_pids(stack).items():  # looked up each time: workers fork after start
                peak[name] = max([peak[name], *(_rss_mb(p, "VmHWM:") for p in group)])
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    delivered_before = delivered_total(stack)
    started = time.time()
    try:
        requests.post(f"{stack.api_url}/push/campaign/send/live/{campaign_id}", timeout=60).raise_for_status()
        last = wait_delivered(stack, users, delivered_before=delivered_before, stall_seconds=STALL_SECONDS, what=f"campaign to {users:,} users")
    finally:
        stop.set()
        sampler.join()
    elapsed = last - started
    return {"seconds": elapsed, "per_s": users / elapsed, "rss_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    args = parser.parse_args()
    stack = bench_stack()
    try:
        stack.start()
        result = measure_campaign(stack, users=args.users)
        print(line("campaign_s", result["seconds"]))
        print(line("campaign_per_s", result["per_s"]))
        for name, mb in result["rss_mb"].items():
            print(line(f"campaign_rss_mb_{name}", mb))
    finally:
        stack.stop_all()


if __name__ == "__main__":
    main()
