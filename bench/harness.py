"""What every benchmark shares: a stack of its own, seeded data, CPU and memory readings."""
from __future__ import annotations

import os
import re
import statistics
import subprocess
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit

import pymongo
import requests

from devstack import seed
from devstack.credentials import SimulatorControls, provision_app
from devstack.stack import ROOT, Ports, Stack
from shared.settings import load

#: Clock ticks per second, for /proc CPU times.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: Seconds ``rabbitmq-diagnostics status`` may take (the Erlang CLI starts slowly).
RABBITMQ_STATUS_TIMEOUT_SECONDS = 60

def bench_stack(**options) -> Stack:
    """A stack on free ports with its own queues and database file under var/bench."""
    run_id = uuid.uuid4().hex[:8]
    return Stack(var_dir=Path(ROOT / "var" / "bench" / run_id), ports=Ports.free(), queue_prefix=f"bench-{run_id}.", **options)


def create_app(stack: Stack, app_id: str) -> str:
    provision_app(stack.api_url, app_id, SimulatorControls.of(stack.ports), hms=False, key_id="BENCHKEY01")
    return app_id


def database(stack: Stack):
    return pymongo.MongoClient(stack.mongo_uri)["push"]


def seed_devices(stack: Stack, app_id: str, users: list[str], tokens: list[str], platforms: list[str]) -> None:
    """Write registrations straight into MongoDB (registering through the API is not what is measured)."""
    seed.seed_devices(database(stack), app_id, users, tokens, platforms)


def group_pids(leader_pid: int) -> list[int]:
    """Every live process in the process group led by ``leader_pid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == leader_pid:
            pids.append(int(entry))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def project_pids(stack: Stack) -> list[int]:
    """The API's and the workers' processes (not nx-27017, not the simulators)."""
    pids = []
    for name, process in stack.processes.items():
        if name == "api" or name.startswith("workers-"):
            pids += group_pids(process.pid)
    return pids


def database_pids(stack: Stack) -> list[int]:
    """nx-27017's process (empty when the stack uses a MongoDB it did not start)."""
    process = stack.processes.get("mongo")
    return group_pids(process.pid) if process else []


def rabbitmq_pid() -> int | None:
    """The ``beam.smp`` of the machine's RabbitMQ (the node on 5672), as ``rabbitmq-diagnostics status`` names it.

    Without the CLI, the one process whose command line boots ``rabbit``; None when that is not one process.
    """
    try:
        status = subprocess.run(["rabbitmq-diagnostics", "-q", "status"], capture_output=True, text=True,
                                timeout=RABBITMQ_STATUS_TIMEOUT_SECONDS, check=False).stdout
        match = re.search(r"OS PID: (\d+)", status)
        if match:
            return int(match.group(1))
    except (OSError, subprocess.TimeoutExpired):
        pass
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"beam.smp") and b"rabbit" in argv:
            found.append(int(entry))
    return found[0] if len(found) == 1 else None


def _queues_api() -> tuple[str, tuple[str, str]]:
    """The management API's URL of the default vhost's queues, and its credentials."""
    management = urlsplit(load().rabbitmq_management_url)
    auth = (management.username or "guest", management.password or "guest")
    return f"{management.scheme}://{management.hostname}:{management.port}/api/queues/%2F", auth


def stack_queues(stack: Stack) -> list[str]:
    """Every queue on the broker under the stack's prefix (whichever code declared them)."""
    url, auth = _queues_api()
    answer = requests.get(url, params={"columns": "name"}, auth=auth, timeout=30)
    answer.raise_for_status()
    return [q["name"] for q in answer.json() if q["name"].startswith(stack.queue_prefix)]


def _each_queue(stack: Stack, method: str, suffix: str) -> None:
    url, auth = _queues_api()
    for name in stack_queues(stack):
        requests.request(method, f"{url}/{quote(name, safe='')}{suffix}", auth=auth, timeout=30).raise_for_status()


def discard(stack: Stack) -> None:
    """End a benchmark's stack: kill its processes (nothing of it is kept), delete its queues and its database file.

    SIGKILL, not a graceful stop: Dramatiq's workers take up to the stop timeout each, which on a
    busy machine added half a minute per stack to every run. The logs stay for reading.
    """
    for name in reversed(list(stack.processes)):
        stack.stop(name, kill=True)
    delete_queues(stack)
    # The database file of a full run is gigabytes.
    for data_file in stack.var_dir.glob("mongo.db*"):
        data_file.unlink()


def purge_queues(stack: Stack) -> None:
    """Empty every queue of the stack (what the stopped workers left)."""
    _each_queue(stack, "DELETE", "/contents")


def delete_queues(stack: Stack) -> None:
    """Delete every queue of the stack: the broker is the machine's, the run's queues must not stay."""
    _each_queue(stack, "DELETE", "")


def median(values: list[float]) -> float:
    return statistics.median(values)


def medians(rounds: list[dict]) -> dict:
    """Each figure's median over rounds; a figure some round could not produce (None) is None."""
    figures = {}
    for name in rounds[0]:
        values = [r.get(name) for r in rounds]
        figures[name] = None if None in values else statistics.median(values)
    return figures


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]
