"""HTTP servers for the API, side by side on one stack: polls, a plain route, serial batches, and their CPU.

``python -m bench.http_servers [--ref REF] [--rounds N] [--seconds S] [--only NAME ...]``

One stack (nx-27017, simulators, workers); each candidate server runs the
same Flask app on its own port, 2 worker processes, 8 threads each where it
has threads. Each round measures every candidate in turn (interleaved, so a
busy moment of the shared machine hits all of them):

- ``GET /session/<id>`` (a poll of a session with details) and ``GET /health``
  (a plain Flask route): ``h2load --h1``, 100 keep-alive clients, one client
  thread, for ``--seconds``;
- serial 1,000-message ASYNCHRONOUS batches for ``--seconds``;

and the server's CPU per request (every process of its group, from /proc).
Medians over the rounds are printed as ``name: value`` lines and as a table.
``--ref REF`` adds the API as that git ref's own ``devstack.stack`` starts it
(from a temporary worktree), the way the bench's ``--baseline`` does.
Needs Debian's ``nghttp2-client`` (h2load).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import requests

from bench.harness import bench_stack, cpu_seconds, create_app, group_pids, median
from devstack.stack import ROOT, VENV_BIN, Stack, api_answers, free_port, wait_until

#: Keep-alive clients of each h2load run.
CLIENTS = 100
#: Messages per batch.
BATCH_SIZE = 1000
#: h2load's summary line.
H2LOAD_RATE = re.compile(r"finished in ([\d.]+)s, ([\d.]+) req/s")
H2LOAD_DONE = re.compile(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded")
#: The other servers measured, each a command line for a port (2 processes × 8 threads, as the API runs).
GRANIAN = [str(VENV_BIN / "granian"), "--host", "127.0.0.1", "--workers", "2", "--no-ws"]
CANDIDATES = {
    "granian-wsgi": lambda port: [*GRANIAN, "--port", str(port), "--interface", "wsgi", "--blocking-threads", "8",
                                  "--factory", "api.app:create_app"],
    "granian-asgi-a2wsgi": lambda port: [*GRANIAN, "--port", str(port), "--interface", "asgi",
                                         "--factory", "bench.http_servers:a2wsgi_app"],
    "gunicorn-gthread": lambda port: [str(VENV_BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "2",
                                      "--worker-class", "gthread", "--threads", "8", "--keep-alive", "75",
                                      "--no-control-socket", "api.app:create_app()"],
    "uvicorn-a2wsgi": lambda port: [str(VENV_BIN / "uvicorn"), "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
                                    "--no-access-log", "--factory", "bench.http_servers:a2wsgi_app"],
}
#: The API as the stack starts it (``Stack.start_api``).
CHOSEN = "chosen"


def a2wsgi_app():
    """The Flask app as an ASGI app through a2wsgi (8 threads), for the ASGI servers.

    a2wsgi hands ``receive()`` to ``run_coroutine_threadsafe``, which takes only a coroutine, and
    granian's ``receive()`` returns a future (every body then was a 500): it gets a coroutine here.
    """
    from a2wsgi import WSGIMiddleware

    from api.app import create_app as create_flask_app

    inner = WSGIMiddleware(create_flask_app(), workers=8)

    async def app(scope, receive, send):
        async def receive_coroutine():
            return await receive()

        await inner(scope, receive_coroutine, send)

    return app


@dataclass
class Server:
    """One candidate's running API: its URL, the process to stop, and the process group whose CPU is counted."""

    name: str
    url: str
    process: subprocess.Popen
    leader: int


def start_candidate(stack: Stack, name: str, argv: list[str]) -> Server:
    port = int(argv[argv.index("--port") + 1]) if "--port" in argv else int(argv[argv.index("--bind") + 1].rsplit(":", 1)[1])
    env = {**stack.process_env(), "PROMETHEUS_MULTIPROC_DIR": str(stack.metrics_dir(name))}
    log = open(stack.var_dir / "logs" / f"{name}.log", "ab")
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: api_answers(url), what=name)
    return Server(name, url, process, process.pid)


#: Run in the ref's worktree: start its API on our stack's ports with its own Stack.start_api, until stdin closes.
REF_RUNNER = """
import json, sys
from pathlib import Path
from devstack.stack import Ports, Stack
options = json.loads(sys.argv[1])
stack = Stack(var_dir=Path(options["var_dir"]), ports=Ports(**options["ports"]), queue_prefix=options["prefix"], env=options["env"])
stack.start_api(name="api-ref", port=options["port"])
print("ready", stack.processes["api-ref"].pid, flush=True)
try:
    sys.stdin.read()
finally:
    stack.stop_all()
"""


def start_ref(stack: Stack, ref: str, tree: Path) -> Server:
    import json
    from dataclasses import asdict

    subprocess.run(["git", "worktree", "add", "--detach", str(tree), ref], cwd=ROOT, check=True, capture_output=True)
    port = free_port()
    options = {"var_dir": str(stack.var_dir / "ref"), "ports": asdict(stack.ports), "prefix": stack.queue_prefix,
               "env": stack.env, "port": port}
    env = {**os.environ, "PYTHONPATH": str(tree)}
    process = subprocess.Popen([sys.executable, "-c", REF_RUNNER, json.dumps(options)], cwd=tree, env=env,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
    ready = process.stdout.readline().split()
    if not ready or ready[0] != b"ready":
        raise RuntimeError(f"the API of {ref} did not start (see {stack.var_dir}/ref/logs)")
    return Server(f"ref-{ref}", f"http://127.0.0.1:{port}", process, int(ready[1]))


def h2load(url: str, seconds: float) -> tuple[float, int]:
    """Successful requests per second of ``CLIENTS`` keep-alive HTTP/1.1 clients, and how many succeeded."""
    out = subprocess.run(["h2load", "--h1", "-c", str(CLIENTS), "-t", "1", "-D", str(round(seconds)), url],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    rate, done = H2LOAD_RATE.search(out), H2LOAD_DONE.search(out)
    if rate is None or done is None:
        raise RuntimeError(f"h2load: {out[-500:]}")
    return int(done.group(2)) / float(rate.group(1)), int(done.group(2))


def batches(url: str, app_id: str, seconds: float) -> tuple[float, int]:
    """Messages per second of serial 1,000-message batches, and the requests made."""
    session = requests.Session()
    batch = [{"userId": f"u{i}", "body": {"title": "bench"}} for i in range(BATCH_SIZE)]
    body = {"requestObject": {"appId": app_id, "mode": "ASYNCHRONOUS", "batch": batch}}
    started, sent = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        session.post(f"{url}/push/message/batch/send", json=body, timeout=60).raise_for_status()
        sent += 1
    return sent * BATCH_SIZE / (time.perf_counter() - started), sent


def measured(server: Server, work) -> tuple[float, float]:
    """``work()``'s rate and the server's CPU µs per request it made."""
    pids = group_pids(server.leader)
    before = cpu_seconds(pids)
    rate, requests_made = work()
    return rate, (cpu_seconds(pids) - before) / max(requests_made, 1) * 1e6


def print_figures(figures: dict[str, dict[str, list[float]]]) -> None:
    """Each server's medians, as lines and as a table."""
    columns = ["poll_per_s", "poll_cpu_us", "plain_per_s", "plain_cpu_us", "batch_per_s", "batch_cpu_us"]
    for name, values in figures.items():
        for column in columns:
            print(f"http_{name}_{column}: {median(values[column]):.1f}", flush=True)
    print("| server | " + " | ".join(columns) + " |")
    print("| --- " * (len(columns) + 1) + "|")
    for name, values in figures.items():
        print(f"| {name} | " + " | ".join(f"{median(values[c]):,.0f}" for c in columns) + " |")


def stop_servers(servers: list[Server]) -> None:
    """Stop the candidates this run started (a server reading stdin stops when it closes, the others on SIGTERM)."""
    for server in servers:
        if server.process.poll() is None:
            if server.process.stdin is not None:
                server.process.stdin.close()
                server.process.wait(30)
            else:
                os.killpg(server.process.pid, 15)
                server.process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.http_servers", description=__doc__)
    parser.add_argument("--ref", help="also measure the API of this git ref (e.g. the commit before a change)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--only", nargs="*", default=None, help=f"candidates besides {CHOSEN}: {' '.join(CANDIDATES)}")
    args = parser.parse_args()
    if shutil.which("h2load") is None:
        sys.exit("h2load is missing: apt-get install nghttp2-client")
    stack = bench_stack(env={"PUSH_WC_BRIDGE_TTL_INDEXES": "0"})
    tree = Path(tempfile.mkdtemp(prefix="bench-ref-")) / "tree"
    servers: list[Server] = []
    try:
        stack.start()
        servers.append(Server(CHOSEN, stack.api_url, stack.processes["api"], stack.processes["api"].pid))
        for name in args.only if args.only is not None else CANDIDATES:
            servers.append(start_candidate(stack, name, CANDIDATES[name](free_port())))
        if args.ref:
            servers.append(start_ref(stack, args.ref, tree))
        app_id = create_app(stack, f"bench-http-{uuid.uuid4().hex[:6]}")
        session_id = requests.post(f"{stack.api_url}/session/new", timeout=60).json()["sessionId"]
        requests.put(f"{stack.api_url}/session/{session_id}", json={"encryptionPayload": {"data": "a" * 256, "hmac": "b" * 64, "iv": "c" * 32}},
                     timeout=60).raise_for_status()
        figures: dict[str, dict[str, list[float]]] = {s.name: {} for s in servers}
        seconds = args.seconds
        for _ in range(args.rounds):
            for server in servers:
                works = {
                    "poll": lambda s=server: h2load(f"{s.url}/session/{session_id}", seconds),
                    "plain": lambda s=server: h2load(f"{s.url}/health", seconds),
                    "batch": lambda s=server: batches(s.url, app_id, seconds),
                }
                for what, work in works.items():
                    rate, cpu = measured(server, work)
                    figures[server.name].setdefault(f"{what}_per_s", []).append(rate)
                    figures[server.name].setdefault(f"{what}_cpu_us", []).append(cpu)
        print_figures(figures)
    finally:
        stop_servers(servers[1:])
        stack.stop_all()
        if tree.exists():
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
        for data_file in stack.var_dir.glob("mongo.db*"):
            data_file.unlink()


if __name__ == "__main__":
    main()
