"""Requests per second of the API's HTTP server, under ``h2load --h1`` (Debian's nghttp2-client).

``CLIENTS`` keep-alive HTTP/1.1 connections from one h2load thread for a
fixed duration (after a warm-up), against:

- ``wc_poll_get_per_s``: ``GET /session/<id>`` of a session that exists (200
  with its payload), the poll bench/wc_bridge.py sends;
- ``plain_route_per_s``: ``GET /health``, a plain Flask route (text).

Each :meth:`HttpBench.round` runs both once; the figures are the medians of
the rounds. A request that fails or answers other than 2xx fails the run.
h2load is installed by ``scripts/ensure-h2load.sh`` (``make bench`` runs it).
Runnable alone: ``python -m bench.http_rate [--duration S] [--repeats N]``.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess

import requests

from bench.figures import line
from bench.harness import bench_stack, medians
from devstack.stack import Stack

#: Concurrent keep-alive clients.
CLIENTS = 100
#: Seconds each measurement lasts.
DURATION_SECONDS = 10.0
#: Seconds of load before each measurement starts (connections open, caches warm).
WARM_UP_SECONDS = 1.0
#: h2load threads: one C thread drives 100 connections far faster than the API answers, and leaves the API a core.
H2LOAD_THREADS = 1
#: The session payload the polls read back (as a wallet PUTs it).
PAYLOAD = {"data": "a" * 256, "hmac": "b" * 64, "iv": "c" * 32}

FINISHED = re.compile(r"^finished in [\d.]+\w*, ([\d.]+) req/s", re.MULTILINE)
REQUESTS = re.compile(r"^requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", re.MULTILINE)
STATUSES = re.compile(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", re.MULTILINE)


def parse_h2load(output: str) -> float:
    """Requests per second of one h2load run; raises when a request failed or was answered other than 2xx."""
    finished, requests_, statuses = FINISHED.search(output), REQUESTS.search(output), STATUSES.search(output)
    if not (finished and requests_ and statuses):
        raise RuntimeError(f"h2load printed no summary:\n{output[-2000:]}")
    done, succeeded, failed, errored, timeout = (int(n) for n in requests_.groups()[1:])
    ok, *other = (int(n) for n in statuses.groups())
    if done == 0 or failed or errored or timeout or any(other) or ok != succeeded:
        raise RuntimeError(f"h2load: {requests_.group(0)}; {statuses.group(0)}")
    return float(finished.group(1))


def _milliseconds(seconds: float) -> str:
    """h2load's duration syntax (it refuses fractions of a second without a unit)."""
    return f"{round(seconds * 1000)}ms"


def h2load(url: str, *, duration: float, clients: int = CLIENTS) -> float:
    """Requests per second of ``clients`` keep-alive HTTP/1.1 connections GETting ``url`` for ``duration`` seconds."""
    program = shutil.which("h2load")
    if program is None:
        raise RuntimeError("h2load is missing: run scripts/ensure-h2load.sh (make bench does)")
    argv = [program, "--h1", "-c", str(clients), "-t", str(H2LOAD_THREADS),
            "-D", _milliseconds(duration), f"--warm-up-time={_milliseconds(WARM_UP_SECONDS)}", url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + WARM_UP_SECONDS + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"h2load exited {done.returncode}: {done.stderr[-2000:]}")
    return parse_h2load(done.stdout)


class HttpBench:
    """Both figures on one stack's API.

    Parameters:
      stack: a started stack.
      duration: seconds of each measurement.
    """

    def __init__(self, stack: Stack, *, duration: float = DURATION_SECONDS):
        self.stack, self.duration = stack, duration
        http = requests.Session()
        session_id = http.post(f"{stack.api_url}/session/new", timeout=60).json()["sessionId"]
        http.put(f"{stack.api_url}/session/{session_id}", json={"encryptionPayload": PAYLOAD}, timeout=60).raise_for_status()
        self.poll_url = f"{stack.api_url}/session/{session_id}"
        if http.get(self.poll_url, timeout=60).status_code != 200:
            raise RuntimeError(f"{self.poll_url} does not answer 200 after its PUT")

    def round(self) -> dict:
        return {
            "wc_poll_get_per_s": h2load(self.poll_url, duration=self.duration),
            "plain_route_per_s": h2load(f"{self.stack.api_url}/health", duration=self.duration),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=DURATION_SECONDS)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    stack = bench_stack()
    try:
        stack.start()
        bench = HttpBench(stack, duration=args.duration)
        for name, value in medians([bench.round() for _ in range(args.repeats)]).items():
            print(line(name, value), flush=True)
    finally:
        stack.stop_all()


if __name__ == "__main__":
    main()
