"""The whole server on one machine: nx-27017, the simulators, the workers and the API.

``make run``, the integration tests and the benchmarks all start the same
processes through :class:`Stack`, so what the tests exercise is what runs.
RabbitMQ is not started here: it is a system service (see ``scripts/ensure-rabbitmq.sh``).
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from shared import commands

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
#: Seconds any one process may take to become ready.
READY_TIMEOUT_SECONDS = 30
#: Seconds a process gets to stop after SIGTERM before SIGKILL.
STOP_TIMEOUT_SECONDS = 10

#: Worker groups: each is one Dramatiq process group consuming these queues (scaled on its own).
WORKER_GROUPS = {
    "core": (commands.PERSIST, commands.EXPAND),
    "deliver": (commands.DELIVER_APNS, commands.DELIVER_FCM, commands.DELIVER_HMS, commands.DELIVER_WEBHOOK),
    # The transactional lane, expansion and delivery (shared/commands.py TX_QUEUES): never behind bulk work.
    "tx": tuple(commands.TX_QUEUES.values()),
}
#: The transactional lane's group carries single sends: one process is enough on one machine.
TX_GROUP = "tx"


#: Serving processes per provider simulator: measured on 2 cores (simulators/README.md, ``python -m bench.simulators``).
SIMULATOR_PROCESSES = 2
#: Provider simulators: module, provider port field, control port field (in ``Ports``).
SIMULATORS = (("apns", "apns", "apns_control"), ("fcm", "fcm", "fcm_control"), ("hms", "hms", "hms_control"))

#: Milliseconds granian gives a connection to send a request's headers, from its start or from the end of
#: the previous answer: slow or silent clients are closed after it, and so are idle keep-alive connections.
API_HEADER_TIMEOUT_MS = 30_000
#: Bytes granian buffers of one connection's request line and headers; a request whose line and
#: headers do not fit is answered 431 and closed.
API_HEADER_BUFFER_BYTES = 8 * 1024


#: Ports a stack of the tests or the benchmarks is given: below Linux's ephemeral range (32768-60999), so
#: no outgoing connection of this machine (to RabbitMQ, a simulator, the API) can be given the port between
#: the moment it is chosen here and the moment its server binds it, which a port the kernel chose from the
#: ephemeral range allowed (a fuzz run's API once met a port taken that way).
FREE_PORTS = range(20_000, 32_000)
_given: set[int] = set()


def free_port() -> int:
    """A port of :data:`FREE_PORTS` no server holds now and this process never gave before (chosen at random, so
    two suites started side by side rarely try the same one; the bind check skips one already taken)."""
    for _ in range(200):
        port = random.choice(FREE_PORTS)
        if port in _given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free port in {FREE_PORTS.start}-{FREE_PORTS.stop - 1}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(check, *, timeout: float = READY_TIMEOUT_SECONDS, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f}s")
        time.sleep(0.05)


def api_answers(url: str) -> bool:
    """Whether an API answers its status endpoint at all (up or reporting a dependency down)."""
    try:
        with urllib.request.urlopen(url + "/push/service/status", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@dataclass
class Ports:
    """Every port the stack listens on (all on 127.0.0.1)."""

    api: int = 8080
    mongo: int = 27017
    apns: int = 8443
    apns_control: int = 8445
    fcm: int = 8444
    fcm_control: int = 8446
    hms: int = 8447
    hms_control: int = 8448

    @classmethod
    def free(cls) -> Ports:
        return cls(*(free_port() for _ in range(8)))


@dataclass(frozen=True)
class Launch:
    """A process's command line taken from other code than this tree's (a baseline ref's API or worker group).

    Parameters:
      argv: the command line, as that code would start it.
      env: the variables that code sets on top of the environment (its ``PYTHONPATH``, its settings).
      cwd: the directory it runs in (that code's root).
    """

    argv: list[str]
    env: dict
    cwd: Path


@dataclass
class Stack:
    """Starts and stops the project's processes.

    Parameters:
      var_dir: where the database file, certificates, keys and logs go.
      ports: where each process listens.
      queue_prefix: prefix of every queue (tests use a unique one on the shared broker).
      env: extra ``PUSH_*`` settings for the API and workers.
      worker_processes / worker_threads: Dramatiq's ``--processes`` / ``--threads`` per group.
      api_workers / api_threads: the API's processes (granian's workers) and Flask threads per process.
      api_header_timeout_ms: granian's ``--http1-header-read-timeout``.
      log_to_files: send each process's output to ``var_dir/logs`` (else inherit the terminal).
      simulator_processes: serving processes of each provider simulator (``--processes``).
      simulator_latency_ms: each simulator's answer latency (``--latency-ms``).
      launches: process name (``api``, ``workers-<group>``) → :class:`Launch` started instead of this
        tree's command; this stack's settings (ports, database, queues, CA file) still win.
    """

    var_dir: Path
    ports: Ports = field(default_factory=Ports)
    queue_prefix: str = ""
    env: dict = field(default_factory=dict)
    worker_processes: int = 2  # per group; measured best on 2 cores (bench: 1 → 1,373/s, 2 → 1,728/s e2e)
    worker_threads: int = 8
    #: ``--processes`` of the transactional lane's group.
    tx_worker_processes: int = 1
    api_workers: int = 2
    api_threads: int = 8
    api_header_timeout_ms: int = API_HEADER_TIMEOUT_MS
    log_to_files: bool = True
    simulator_processes: int = SIMULATOR_PROCESSES
    simulator_latency_ms: float = 0.0
    processes: dict = field(default_factory=dict)
    #: Port of each worker group's Prometheus /metrics (Dramatiq's middleware); a free one when not given.
    worker_metrics_ports: dict = field(default_factory=dict)
    launches: dict = field(default_factory=dict)

    # --- settings ------------------------------------------------------------------------------

    @property
    def cert_dir(self) -> Path:
        return self.var_dir / "simulators"

    @property
    def ca_file(self) -> Path:
        return self.cert_dir / "ca.pem"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.api}"

    @property
    def mongo_uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.ports.mongo}"

    def settings_env(self) -> dict:
        """The ``PUSH_*`` variables every project process of this stack gets."""
        # The FCM simulator is its service accounts' token_uri, the HMS simulator the HMS token endpoint:
        # outbound targets on loopback, so allow-listed.
        allowed = ",".join(filter(None, [f"127.0.0.1:{self.ports.fcm}", f"127.0.0.1:{self.ports.hms}",
                                         self.env.get("PUSH_OUTBOUND_ALLOWED_TARGETS")]))
        return {
            "PUSH_MONGO_URI": self.mongo_uri,
            "PUSH_QUEUE_PREFIX": self.queue_prefix,
            "PUSH_APNS_PRODUCTION_URL": f"https://127.0.0.1:{self.ports.apns}",
            "PUSH_APNS_DEVELOPMENT_URL": f"https://127.0.0.1:{self.ports.apns}",
            "PUSH_FCM_URL": f"https://127.0.0.1:{self.ports.fcm}",
            "PUSH_HMS_URL": f"https://127.0.0.1:{self.ports.hms}",
            "PUSH_HMS_TOKEN_URL": f"https://127.0.0.1:{self.ports.hms}/oauth2/v3/token",
            "PUSH_PROVIDER_CA_FILE": str(self.ca_file),
            **self.env,
            "PUSH_OUTBOUND_ALLOWED_TARGETS": allowed,
        }

    def process_env(self) -> dict:
        env = dict(os.environ)
        env.update(self.settings_env())
        env["PYTHONPATH"] = str(ROOT)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    # --- processes -----------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], *, ready_line: str | None = None, env: dict | None = None) -> subprocess.Popen:
        cwd, launched_env = ROOT, {}
        launch = self.launches.get(name)
        if launch is not None:
            argv, cwd, launched_env = launch.argv, launch.cwd, launch.env
        self.var_dir.mkdir(parents=True, exist_ok=True)
        if self.log_to_files:
            (self.var_dir / "logs").mkdir(exist_ok=True)
            output = open(self.var_dir / "logs" / f"{name}.log", "ab")
        else:
            output = None
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            # The launch's code and its own settings, then this stack's: its processes are the ones reached.
            env={**self.process_env(), **launched_env, **self.settings_env(), **(env or {})},
            stdout=subprocess.PIPE if ready_line else output,
            stderr=output,
            start_new_session=True,
        )
        if ready_line:
            deadline = time.monotonic() + READY_TIMEOUT_SECONDS
            for line in process.stdout:
                if ready_line.encode() in line:
                    break
                if time.monotonic() > deadline:
                    break
            else:
                raise RuntimeError(f"{name} exited before it was ready (see {self.var_dir}/logs/{name}.log)")
        self.processes[name] = process
        return process

    def start_mongo(self) -> None:
        if port_open(self.ports.mongo):
            return  # a MongoDB (or nx-27017) already answers there: use it
        db_file = self.var_dir / "mongo.db"
        (self.var_dir / "logs").mkdir(parents=True, exist_ok=True)  # nx-27017's log file lives there
        self._spawn(
            "mongo",
            [
                str(VENV_BIN / "nx-27017"),
                "--db", str(db_file),
                "--port", str(self.ports.mongo),
                "--log-file", str(self.var_dir / "logs" / "nx-27017.log"),
                "--pid-file", str(self.var_dir / "nx-27017.pid"),
            ],
        )
        wait_until(lambda: port_open(self.ports.mongo), what="nx-27017")

    def start_simulators(self) -> None:
        for module, port, control in SIMULATORS:
            self._spawn(
                f"{module}-simulator",
                [sys.executable, "-m", f"simulators.{module}", "--port", str(getattr(self.ports, port)),
                 "--control-port", str(getattr(self.ports, control)), "--cert-dir", str(self.cert_dir),
                 "--processes", str(self.simulator_processes), "--latency-ms", str(self.simulator_latency_ms)],
                ready_line="ready",
            )

    @property
    def worker_groups(self) -> tuple[str, ...]:
        """The worker groups this stack starts: the launched ones when launches name any, else this tree's."""
        launched = tuple(name.removeprefix("workers-") for name in self.launches if name.startswith("workers-"))
        return launched or tuple(WORKER_GROUPS)

    def worker_argv(self, group: str) -> list[str]:
        launch = self.launches.get(f"workers-{group}")
        if launch is not None:
            return launch.argv
        queues = [commands.queue_name_for_prefix(self.queue_prefix, q) for q in WORKER_GROUPS[group]]
        return [
            str(VENV_BIN / "dramatiq"),
            "workers.main",
            "--processes", str(self.tx_worker_processes if group == TX_GROUP else self.worker_processes),
            "--threads", str(self.worker_threads),
            "--queues", *queues,
        ]

    def metrics_dir(self, name: str) -> Path:
        """An emptied multi-process metrics directory for one process group (stale files would add up)."""
        directory = self.var_dir / "metrics" / name
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        return directory

    def worker_metrics_url(self, group: str) -> str:
        return f"http://127.0.0.1:{self.worker_metrics_ports[group]}/metrics"

    def start_workers(self, groups=None, *, suffix: str = "", env: dict | None = None) -> None:
        """Start worker groups; tests start more groups on the same queues (``suffix`` names them) with other ``env``."""
        groups = self.worker_groups if groups is None else groups
        for group in groups:
            # `make run` (the default ports): 9191, 9192, ... in group order; tests: a free port at every start, so a
            # group restarted after a SIGKILL does not need the port its killed processes may still hold for a moment.
            if self.ports == Ports() and not suffix:
                port = 9191 + list(self.worker_groups).index(group)
            else:
                port = free_port()
            self.worker_metrics_ports[group + suffix] = port
            group_env = {"PUSH_WORKER_METRICS_PORT": str(port), "dramatiq_prom_host": "127.0.0.1",
                         "dramatiq_prom_db": str(self.metrics_dir(group + suffix)), **(env or {})}
            self._spawn(f"workers-{group}{suffix}", self.worker_argv(group), env=group_env)

    def stop_workers(self, groups=None, *, kill: bool = False, suffix: str = "") -> None:
        for group in self.worker_groups if groups is None else groups:
            self.stop(f"workers-{group}{suffix}", kill=kill)

    def start_api(self, *, name: str = "api", port: int | None = None, env: dict | None = None,
                  header_timeout_ms: int | None = None) -> str:
        """Start an API (granian, the RSGI app of api/rsgi.py); answers its URL. Tests start a second one with other settings."""
        port = port or self.ports.api
        # The API's processes share their metrics through this directory (prometheus_client's multi-process mode).
        env = {"PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir(name)), "PUSH_API_THREADS": str(self.api_threads), **(env or {})}
        self._spawn(
            name,
            [
                str(VENV_BIN / "granian"),
                "--interface", "rsgi",
                "--factory", "api.rsgi:create_app",
                "--host", "127.0.0.1",
                "--port", str(port),
                "--workers", str(self.api_workers),
                "--no-ws",
                # HTTP/1.1 only: with HTTP/2 detection on (granian's "auto"), a connection that sends
                # nothing is never timed out (hyper-util starts no timer while it picks the protocol).
                "--http", "1",
                "--http1-header-read-timeout", str(header_timeout_ms or self.api_header_timeout_ms),
                "--http1-buffer-size", str(API_HEADER_BUFFER_BYTES),
            ],
            env=env,
        )
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: api_answers(url), what=name)
        return url

    def start(self) -> None:
        self.start_mongo()
        self.start_simulators()
        self.start_workers()
        self.start_api()

    def stop(self, name: str, *, kill: bool = False) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def stop_all(self) -> None:
        for name in reversed(list(self.processes)):
            self.stop(name)
