"""Concurrent SYNCHRONOUS sends: how many a second 200 clients get answered, and whether 500 at once all are.

Each client keeps one keep-alive connection and sends SYNCHRONOUS single
messages (``/push/message/send`` without ``mode``) one after the other, to a
user with one device, for ``SECONDS``; an answer counts when every delivery
has its outcome (``pending`` 0). Meanwhile ``GET /health`` is asked every
``HEALTH_EVERY_SECONDS``: ``sync_concurrent_health_p99_ms`` is what the other
routes get while the sends wait. Then ``BURST`` clients send one each at the
same moment: ``sync_concurrent_500_answered`` is how many got their outcome.
The clients are one asyncio process of raw HTTP/1.1 sockets (little CPU).

Runnable alone: ``python -m bench.sync_concurrent [--clients N] [--seconds S] [--ref REF --rounds N]``;
``--ref`` measures the API of that git ref as well (its own ``devstack.stack`` starts it, on the same
stack), interleaved with this tree's, round by round.
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import json
import subprocess
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

from bench.harness import bench_stack, create_app, percentile, seed_devices
from bench.http_servers import start_ref
from bench.pipeline import tokens_for
from devstack.stack import ROOT, Stack

#: Clients sending one SYNCHRONOUS send after the other.
CLIENTS = 200
#: Seconds they send for.
SECONDS = 20.0
#: Clients sending one each at the same moment.
BURST = 500
#: Users (one device each) the sends go to.
USERS = 200
#: Seconds a client waits for one answer.
ANSWER_TIMEOUT = 120.0
#: Seconds between two ``GET /health`` while the clients send.
HEALTH_EVERY_SECONDS = 0.1


def send_request(host: str, app_id: str, user: str) -> bytes:
    body = json.dumps({"requestObject": {"appId": app_id, "message": {"userId": user, "body": {"title": "sync"}}}}).encode()
    head = (f"POST /push/message/send HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return status, json.loads(await reader.readexactly(length)) if length else {}


def delivered(status: int, body: dict) -> bool:
    if status != 200:
        return False
    result = body["responseObject"]["result"]
    return all(result[p]["pending"] == 0 for p in ("apns", "fcm")) and result["apns"]["total"] + result["fcm"]["total"] > 0


async def client(port: int, app_id: str, users: list[str], until: float, counts: dict) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = 0
    try:
        while time.monotonic() < until:
            writer.write(send_request("127.0.0.1", app_id, users[n % len(users)]))
            n += 1
            status, body = await asyncio.wait_for(answer(reader), ANSWER_TIMEOUT)
            counts["answered" if delivered(status, body) else "other"] += 1
    finally:
        writer.close()


async def health(port: int, until: float, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.monotonic() < until:
            started = time.perf_counter()
            writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), ANSWER_TIMEOUT)
            length = next(int(line[15:]) for line in head.split(b"\r\n") if line[:15].lower() == b"content-length:")
            await reader.readexactly(length)
            latencies.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(HEALTH_EVERY_SECONDS)
    finally:
        writer.close()


async def burst(port: int, app_id: str, users: list[str], size: int) -> int:
    async def one(user: str) -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(send_request("127.0.0.1", app_id, user))
            return delivered(*await asyncio.wait_for(answer(reader), ANSWER_TIMEOUT))
        finally:
            writer.close()

    results = await asyncio.gather(*(one(users[n % len(users)]) for n in range(size)), return_exceptions=True)
    return sum(1 for r in results if r is True)


def measure(stack: Stack, *, clients: int = CLIENTS, seconds: float = SECONDS, burst_size: int = BURST) -> dict:
    app_id = create_app(stack, f"bench-syncc-{uuid.uuid4().hex[:6]}")
    users, tokens, platforms = tokens_for(USERS)
    seed_devices(stack, app_id, users, tokens, platforms)
    port = int(stack.api_url.rsplit(":", 1)[1])

    async def main():
        counts = {"answered": 0, "other": 0}
        latencies: list[float] = []
        started = time.monotonic()
        await asyncio.gather(
            *(client(port, app_id, users[i:] + users[:i], started + seconds, counts) for i in range(clients)),
            health(port, started + seconds, latencies),
        )
        took = time.monotonic() - started
        answered = await burst(port, app_id, users, burst_size)
        return counts, took, answered, latencies

    counts, took, answered, latencies = asyncio.run(main())
    return {
        "sync_concurrent_per_s": counts["answered"] / took,
        "sync_concurrent_not_delivered": counts["other"],
        "sync_concurrent_health_p99_ms": percentile(latencies, 0.99),
        f"sync_concurrent_{burst_size}_answered": answered,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--burst", type=int, default=BURST)
    parser.add_argument("--ref", help="also measure the API of this git ref (e.g. the commit before a change)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    stack = bench_stack()
    tree = Path(tempfile.mkdtemp(prefix="bench-ref-")) / "tree"
    ref = None
    try:
        stack.start()
        targets = {"": stack}
        if args.ref:
            ref = start_ref(stack, args.ref, tree)
            targets[f"ref_{args.ref}_"] = ref_stack = copy.copy(stack)
            ref_stack.ports = replace(stack.ports, api=int(ref.url.rsplit(":", 1)[1]))
        for _ in range(args.rounds):
            for prefix, target in targets.items():
                for name, value in measure(target, clients=args.clients, seconds=args.seconds, burst_size=args.burst).items():
                    print(f"{prefix}{name}: {value:.1f}" if isinstance(value, float) else f"{prefix}{name}: {value}", flush=True)
    finally:
        if ref is not None:
            ref.process.stdin.close()
            ref.process.wait(30)
        stack.stop_all()
        if tree.exists():
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)


if __name__ == "__main__":
    main()
