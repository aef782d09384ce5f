"""Short-polling figures of the WalletConnect v1 bridge: polled GETs per second, write-to-visible latency.

Polled GETs: ``POLLERS`` keep-alive connections, each polling ``GET /session/<id>``
and ``GET /call-status/<id>`` back to back for ``DURATION`` seconds (half the
ids answered 200, half 204, as while dapps wait). The pollers are one asyncio
process of raw HTTP/1.1 sockets, so the client costs as little CPU as it can
on the same machine.

Write-to-visible: a PUT of the session, then GETs until one answers the new
payload; the time from sending the PUT to that answer, p50 and p99, idle and
under the pollers' load. ``make bench`` prints these (its ``wc_poll_get_per_s``
is h2load's, bench/http_rate.py).

Runnable alone: ``python -m bench.wc_bridge [--pollers N] [--duration S]``.
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time

import requests

from bench.harness import bench_stack, percentile
from devstack.stack import Stack

#: Concurrent pollers (keep-alive connections).
POLLERS = 100
#: Seconds the pollers run.
DURATION = 15.0
#: Sessions and call statuses polled.
SESSIONS = 100
#: Write-to-visible samples per run.
LATENCY_SAMPLES = 200
#: Pause between two write-to-visible samples (seconds).
LATENCY_PAUSE = 0.02
#: Client processes the pollers are spread over.
CLIENT_PROCESSES = 1

PAYLOAD = {"data": "a" * 256, "hmac": "b" * 64, "iv": "c" * 32}


def seed(stack: Stack) -> list[str]:
    """Sessions (half with details) and calls (half with a status): the paths the pollers GET."""
    http = requests.Session()
    paths = []
    for i in range(SESSIONS):
        session_id = http.post(f"{stack.api_url}/session/new", timeout=60).json()["sessionId"]
        if i % 2 == 0:
            http.put(f"{stack.api_url}/session/{session_id}", json={"encryptionPayload": PAYLOAD}, timeout=60).raise_for_status()
            call_id = http.post(f"{stack.api_url}/session/{session_id}/call/new", json={"encryptionPayload": PAYLOAD}, timeout=60).json()["callId"]
            if i % 4 == 0:
                http.post(f"{stack.api_url}/call-status/{call_id}/new", json={"encryptionPayload": PAYLOAD}, timeout=60).raise_for_status()
            paths.append(f"/call-status/{call_id}")
        paths.append(f"/session/{session_id}")
    return paths


async def poll(host: str, port: int, paths: list[str], until: float, counts: dict) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    requests_ = [f"GET {p} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode() for p in paths]
    i = 0
    try:
        while time.monotonic() < until:
            writer.write(requests_[i % len(requests_)])
            i += 1
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            counts[status] = counts.get(status, 0) + 1
    finally:
        writer.close()


def run_pollers(host: str, port: int, paths: list[str], pollers: int, duration: float) -> dict:
    async def main():
        counts: dict = {}
        until = time.monotonic() + duration
        await asyncio.gather(*(poll(host, port, paths[i % len(paths):] + paths[: i % len(paths)], until, counts) for i in range(pollers)))
        return counts

    return asyncio.run(main())


def _client(args) -> dict:
    return run_pollers(*args)


def measure_polling(stack: Stack, paths: list[str], *, pollers: int = POLLERS, duration: float = DURATION, processes: int = CLIENT_PROCESSES) -> dict:
    port = int(stack.api_url.rsplit(":", 1)[1])
    per_process = [pollers // processes + (1 if i < pollers % processes else 0) for i in range(processes)]
    started = time.monotonic()
    with multiprocessing.Pool(processes) as pool:
        results = pool.map(_client, [("127.0.0.1", port, paths, n, duration) for n in per_process])
    took = time.monotonic() - started
    counts: dict = {}
    for result in results:
        for status, n in result.items():
            counts[status] = counts.get(status, 0) + n
    total = sum(counts.values())
    return {"polled_get_per_s": total / min(took, duration + 0.5), "statuses": counts}


def measure_write_to_visible(stack: Stack, *, samples: int = LATENCY_SAMPLES) -> dict:
    """The wallet PUTs on its connection, the dapp polls on another (often another API process)."""
    wallet, dapp = requests.Session(), requests.Session()
    session_id = wallet.post(f"{stack.api_url}/session/new", timeout=60).json()["sessionId"]
    latencies = []
    for n in range(samples):
        payload = {**PAYLOAD, "data": f"sample-{n}"}
        started = time.perf_counter()
        wallet.put(f"{stack.api_url}/session/{session_id}", json={"encryptionPayload": payload}, timeout=60).raise_for_status()
        while True:
            answer = dapp.get(f"{stack.api_url}/session/{session_id}", timeout=60)
            if answer.status_code == 200 and answer.json()["encryptionPayload"] == payload:
                break
        latencies.append((time.perf_counter() - started) * 1000)
        time.sleep(LATENCY_PAUSE)
    return {"write_to_visible_p50_ms": percentile(latencies, 0.5), "write_to_visible_p99_ms": percentile(latencies, 0.99)}


def measure_visibility(stack: Stack, paths: list[str], *, pollers: int = POLLERS, duration: float = DURATION) -> dict:
    """Write-to-visible p50/p99 idle, then under ``pollers`` polling for ``duration`` seconds."""
    figures = {f"{k}_idle": v for k, v in measure_write_to_visible(stack).items()}
    with multiprocessing.Pool(1) as pool:
        load = pool.apply_async(_client, (("127.0.0.1", int(stack.api_url.rsplit(":", 1)[1]), paths, pollers, duration),))
        time.sleep(1.0)
        busy = measure_write_to_visible(stack, samples=LATENCY_SAMPLES // 4)
        load.get()
    figures.update({f"{k}_under_{pollers}_pollers": v for k, v in busy.items()})
    return figures


def measure(stack: Stack, *, pollers: int = POLLERS, duration: float = DURATION, processes: int = CLIENT_PROCESSES) -> dict:
    """The polled GETs per second of these pollers, and the write-to-visible figures."""
    paths = seed(stack)
    figures = measure_visibility(stack, paths, pollers=pollers, duration=duration)
    polling = measure_polling(stack, paths, pollers=pollers, duration=duration, processes=processes)
    return {**figures, "polled_get_per_s": polling["polled_get_per_s"], "polled_statuses": polling["statuses"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pollers", type=int, default=POLLERS)
    parser.add_argument("--duration", type=float, default=DURATION)
    parser.add_argument("--client-processes", type=int, default=CLIENT_PROCESSES)
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--api-threads", type=int, default=8)
    parser.add_argument("--no-ttl-index", action="store_true", help="PUSH_WC_BRIDGE_TTL_INDEXES=0 (what nx-27017 stacks should run)")
    parser.add_argument("--poll-fresh", type=float, help="PUSH_WC_BRIDGE_POLL_FRESH_SECONDS")
    args = parser.parse_args()
    env = {"PUSH_WC_BRIDGE_TTL_INDEXES": "0"} if args.no_ttl_index else {}
    if args.poll_fresh is not None:
        env["PUSH_WC_BRIDGE_POLL_FRESH_SECONDS"] = str(args.poll_fresh)
    stack = bench_stack(env=env, api_workers=args.api_workers, api_threads=args.api_threads)
    try:
        stack.start()
        for name, value in measure(stack, pollers=args.pollers, duration=args.duration, processes=args.client_processes).items():
            print(f"{name}: {value:.1f}" if isinstance(value, float) else f"{name}: {value}", flush=True)
    finally:
        stack.stop_all()


if __name__ == "__main__":
    main()
