"""``simulator_ceiling_per_s``: what each provider simulator serves under h2load (a C HTTP/2 client), so a figure above it measures the simulator.

Each simulator (APNs with a valid provider token and payload, FCM with a valid
bearer and body, HMS likewise) is started on free ports with ``--processes N``
and loaded by ``h2load`` (``H2LOAD_CONNECTIONS`` connections,
``H2LOAD_STREAMS`` streams each); every answer must be a 2xx. Also printed: the
simulator's CPU per request (all its processes). ``simulator_ceiling_per_s``
is the smallest of the three.

``python -m bench.simulators --processes 1 2 3`` prints the figures for each
count; ``--baseline <git ref>`` runs that ref's simulators (those it has) the same
way, interleaved round by round with today's (one process each: the count of
before), and prints ``baseline_…`` beside each figure; ``--compare-h2`` runs
today's on the ``h2`` engine too (``h2_…``). The machine is shared:
compare figures of one invocation only.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import jwt
import orjson
import requests

from bench.harness import cpu_seconds, group_pids, median
from devstack.credentials import make_credentials, make_hms_credentials, register_with_hms_simulator
from devstack.stack import ROOT, SIMULATOR_PROCESSES, free_port
from shared.outbound import OutboundPolicy

#: Connections h2load opens (several, so SO_REUSEPORT spreads them over the serving processes).
H2LOAD_CONNECTIONS = 8
#: Streams h2load keeps in flight per connection (FCM and HMS advertise 100).
H2LOAD_STREAMS = 100
#: Requests per h2load run.
REQUESTS = 30_000
#: Seconds a simulator may take to say "ready".
READY_SECONDS = 30
#: What h2load prints about the run: its rate.
RATE = re.compile(r"finished in [\d.]+m?s, ([\d.]+) req/s")
#: And its answers.
SUCCEEDED = re.compile(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded")
PROVIDERS = ("apns", "fcm", "hms")


def ensure_h2load() -> str:
    if shutil.which("h2load") is None:
        subprocess.run([str(ROOT / "scripts" / "ensure-h2load.sh")], check=True)
    return shutil.which("h2load")


@contextmanager
def simulator(module: str, source: Path, cert_dir: Path, options: list[str], env: dict[str, str] | None = None):
    """Start ``simulators.<module>`` from the tree ``source`` (``env`` added to its environment); answers (provider port, control URL, process)."""
    port, control = free_port(), free_port()
    argv = [sys.executable, "-m", f"simulators.{module}", "--port", str(port), "--control-port", str(control), "--cert-dir", str(cert_dir), *options]
    process = subprocess.Popen(argv, cwd=source, env={**os.environ, "PYTHONPATH": str(source), **(env or {})}, stdout=subprocess.PIPE,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + READY_SECONDS
        for line in process.stdout:
            if b"ready" in line or time.monotonic() > deadline:
                break
        if process.poll() is not None:
            raise RuntimeError(f"{module} simulator from {source} exited")
        yield port, f"http://127.0.0.1:{control}", process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)


def _apns_load(port: int, control: str, work: Path) -> list[str]:
    credentials = make_credentials("ceiling", fcm_origin="https://127.0.0.1:1", key_id="CEILING001")
    requests.post(f"{control}/keys", json={"key_id": credentials.key_id, "team_id": credentials.team_id,
                                           "public_key_pem": credentials.apns_public_pem}, timeout=30).raise_for_status()
    token = jwt.encode({"iss": credentials.team_id, "iat": int(time.time())}, credentials.apns_key_pem, algorithm="ES256",
                       headers={"kid": credentials.key_id})
    payload = work / "apns.json"
    payload.write_bytes(b'{"aps":{"alert":{"title":"ceiling","body":"h2load"}}}')
    return ["-H", f"authorization: bearer {token}", "-H", f"apns-topic: {credentials.bundle}", "-H", "apns-push-type: alert",
            "-d", str(payload), f"https://127.0.0.1:{port}/3/device/{'0' * 64}"]


def _fcm_load(port: int, control: str, work: Path) -> list[str]:
    from workers.delivery.fcm import FcmAuth  # noqa: PLC0415 - the delivery workers' own token fetch

    credentials = make_credentials("ceiling", fcm_origin=f"https://127.0.0.1:{port}")
    requests.post(
        f"{control}/service-accounts", json={"client_email": credentials.service_account["client_email"],
                                             "project_id": credentials.project_id, "public_key_pem": credentials.fcm_public_pem},
        timeout=30).raise_for_status()
    access = asyncio.run(FcmAuth(service_account_info=credentials.service_account, ca_file=str(work / "certs" / "ca.pem"),
                                 outbound=OutboundPolicy.for_urls([credentials.service_account["token_uri"]])).token())
    body = work / "fcm.json"
    body.write_bytes(orjson.dumps({"message": {"token": "ceiling-token", "android": {"priority": "high",
                                                                                      "notification": {"title": "ceiling", "tag": "m.0"}}}}))
    return ["-H", f"authorization: Bearer {access}", "-H", "content-type: application/json", "-d", str(body),
            f"https://127.0.0.1:{port}/v1/projects/{credentials.project_id}/messages:send"]


def _hms_load(port: int, control: str, work: Path) -> list[str]:
    credentials = make_hms_credentials("ceiling")
    register_with_hms_simulator(credentials, hms_control=control)
    answer = requests.post(f"https://127.0.0.1:{port}/oauth2/v3/token", verify=str(work / "certs" / "ca.pem"), timeout=30,
                           data={"grant_type": "client_credentials", "client_id": credentials.client_id, "client_secret": credentials.client_secret})
    answer.raise_for_status()
    body = work / "hms.json"
    body.write_bytes(orjson.dumps({"validate_only": False, "message": {"token": ["ceiling-token"], "android": {
        "urgency": "HIGH", "notification": {"title": "ceiling", "body": "h2load", "click_action": {"type": 3}, "tag": "m.0"}}}}))
    return ["-H", f"authorization: Bearer {answer.json()['access_token']}", "-H", "content-type: application/json", "-d", str(body),
            f"https://127.0.0.1:{port}/v2/{credentials.project_id}/messages:send"]


LOADS = {"apns": _apns_load, "fcm": _fcm_load, "hms": _hms_load}


def run_once(h2load: str, provider: str, source: Path, work: Path, options: list[str], count: int,
             env: dict[str, str] | None = None) -> tuple[float, float]:
    """One h2load run against a fresh simulator; answers (requests per second, simulator CPU µs per request)."""
    with simulator(provider, source, work / "certs", options, env) as (port, control, process):
        load = LOADS[provider](port, control, work)
        argv = [h2load, "-n", str(count), "-c", str(H2LOAD_CONNECTIONS), "-m", str(H2LOAD_STREAMS), "-t", "1", *load]
        pids = group_pids(process.pid)
        cpu_before = cpu_seconds(pids)
        output = subprocess.run(argv, capture_output=True, text=True, timeout=600).stdout
        cpu = cpu_seconds(pids) - cpu_before
    rate, answers = RATE.search(output), SUCCEEDED.search(output)
    if rate is None or answers is None or int(answers.group(2)) != count or f"{count} 2xx" not in output:
        raise RuntimeError(f"h2load against the {provider} simulator of {source} did not get {count} 2xx answers:\n{output}")
    return float(rate.group(1)), 1e6 * cpu / count


def measure_ceiling(*, processes: int = SIMULATOR_PROCESSES, count: int = REQUESTS, repeats: int = 1,
                    baseline: Path | None = None, compare_h2: bool = False) -> dict:
    """The figures of every simulator at ``processes``, medians of ``repeats`` (interleaved with ``baseline``'s).

    ``compare_h2``: today's simulators served with the pure-Python ``h2`` engine too (``SIMULATOR_HTTP2_ENGINE=h2``),
    interleaved, printed as ``h2_…``.
    """
    h2load = ensure_h2load()
    figures: dict = {}
    with tempfile.TemporaryDirectory(prefix="ceiling-") as directory:
        work = Path(directory)
        for provider in PROVIDERS:
            runs: dict[str, list] = {"": [], "h2_": [], "baseline_": []}
            for _ in range(repeats):
                runs[""].append(run_once(h2load, provider, ROOT, work, ["--processes", str(processes)], count))
                if compare_h2:
                    runs["h2_"].append(run_once(h2load, provider, ROOT, work, ["--processes", str(processes)], count,
                                                {"SIMULATOR_HTTP2_ENGINE": "h2"}))
                if baseline is not None and (baseline / "simulators" / f"{provider}.py").exists():
                    runs["baseline_"].append(run_once(h2load, provider, baseline, work, [], count))
            for prefix, results in runs.items():
                if results:
                    figures[f"{prefix}simulator_ceiling_{provider}_per_s"] = median([rate for rate, _cpu in results])
                    figures[f"{prefix}simulator_cpu_us_per_request_{provider}"] = median([cpu for _rate, cpu in results])
    figures["simulator_ceiling_per_s"] = min(figures[f"simulator_ceiling_{p}_per_s"] for p in PROVIDERS)
    return figures


@contextmanager
def baseline_tree(ref: str):
    """A detached worktree of ``ref`` (removed after)."""
    path = Path(tempfile.mkdtemp(prefix="simulators-baseline-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), ref], check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False, capture_output=True)


def emit(name: str, value: float) -> None:
    print(f"{name}: {value:.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.simulators", description=__doc__)
    parser.add_argument("--processes", type=int, nargs="*", default=[SIMULATOR_PROCESSES])
    parser.add_argument("--requests", type=int, default=REQUESTS)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--baseline", default=None, help="a git ref whose simulators run beside today's")
    parser.add_argument("--compare-h2", action="store_true", help="also today's simulators on the h2 engine (SIMULATOR_HTTP2_ENGINE=h2)")
    args = parser.parse_args()
    for processes in args.processes:
        if args.baseline:
            with baseline_tree(args.baseline) as tree:
                figures = measure_ceiling(processes=processes, count=args.requests, repeats=args.repeats, baseline=tree,
                                          compare_h2=args.compare_h2)
        else:
            figures = measure_ceiling(processes=processes, count=args.requests, repeats=args.repeats, compare_h2=args.compare_h2)
        print(f"# --processes {processes}", flush=True)
        for name, value in figures.items():
            emit(name, value)


if __name__ == "__main__":
    main()
