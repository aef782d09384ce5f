"""A live campaign to N users with one device each: time to finish, delivered/s, worker peak RSS.

Devices are seeded straight into MongoDB; the users are added through the API
in requests of 100,000 ids (as the reference server's users do), then
send/live is timed until the campaign reads ``sent``. The worker processes are
restarted before each run so their peak RSS (VmHWM) is that run's alone.
Runnable alone: ``python -m bench.campaign --users 100000``.
"""
from __future__ import annotations

import argparse
import secrets
import threading
import time
import uuid
from datetime import UTC, datetime

import requests

from bench.harness import bench_stack, create_app, database, group_pids, seed_devices
from devstack.stack import Stack

USERS_PER_REQUEST = 100_000


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
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
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
    started = time.perf_counter()
    requests.post(f"{stack.api_url}/push/campaign/send/live/{campaign_id}", timeout=60).raise_for_status()
    started_at = time.time()
    campaigns = database(stack)["campaigns"]
    # Poll the campaign document only (the detail's progress counts read every delivery).
    while time.perf_counter() - started < 6 * 3600:
        if campaigns.find_one({"_id": campaign_id, "sent": True}, {"_id": 1}):
            break
        time.sleep(1.0)
    elapsed = time.perf_counter() - started
    detail = requests.get(f"{stack.api_url}/push/campaign/{campaign_id}/detail", timeout=300).json()["responseObject"]
    sent_at = detail["timestampSent"]
    if sent_at:
        elapsed = min(elapsed, datetime.fromisoformat(sent_at).replace(tzinfo=UTC).timestamp() - started_at)
    stop.set()
    sampler.join()
    delivered = detail["progress"]["sent"]
    if delivered != users:
        raise RuntimeError(f"campaign to {users} users delivered {delivered}: {detail['progress']}")
    return {"seconds": elapsed, "per_s": delivered / elapsed, "rss_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    args = parser.parse_args()
    stack = bench_stack()
    try:
        stack.start()
        result = measure_campaign(stack, users=args.users)
        print(f"campaign_s: {result['seconds']:.1f}")
        print(f"campaign_per_s: {result['per_s']:.1f}")
        for name, mb in result["rss_mb"].items():
            print(f"campaign_rss_mb_{name}: {mb:.1f}")
    finally:
        stack.stop_all()


if __name__ == "__main__":
    main()
