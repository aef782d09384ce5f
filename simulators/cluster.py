"""Starting a simulator: one process, or a coordinator and ``--processes N`` serving processes on one port.

With one process (the default) it serves the provider port and the control
port itself, its hub in memory. With N, the process started is the
coordinator: it holds the hub (tally, quota, behaviour tokens' attempt
numbers) and the control port, and starts N serving processes that listen on
the provider port together (``SO_REUSEPORT``: the kernel spreads connections
over them) and reach it over a Unix socket (simulators/channel.py). If a
serving process dies the coordinator stops, so a broken simulator is never
mistaken for a slow one. Prints "ready" once everything listens.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from simulators.channel import Channel
from simulators.control import Control, LocalNode, NodeControl, RemoteNode, answer_message, quota_limit
from simulators.ledger import Hub, LocalLedger, RemoteLedger
from simulators.quota import Quota
from simulators.recorder import Recorder
from simulators.server import serve
from simulators.tls import ensure_certificates, server_context

log = logging.getLogger(__name__)

#: Seconds the serving processes get to start and say hello.
START_TIMEOUT_SECONDS = 30
#: Seconds serving processes get to stop after SIGTERM.
STOP_TIMEOUT_SECONDS = 5
#: Seconds the coordinator waits, after a serving process went away, for the stop signal that may explain it.
EXIT_GRACE_SECONDS = 1.0

#: Makes a simulator for a recorder; answers (provider handler, node control).
SimulatorFactory = Callable[[Recorder], tuple[Callable, NodeControl]]


def parse_args(name: str, default_port: int, default_control: int, *, quota: bool = True) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m simulators.{name}", description=f"The {name.upper()} simulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument("--control-port", type=int, default=default_control)
    parser.add_argument("--cert-dir", type=Path, default=Path("var/simulators"))
    parser.add_argument("--processes", type=int, default=1, help="serving processes on the provider port (SO_REUSEPORT)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="answer each request this long after it arrived")
    if quota:
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--quota-per-second", type=int, default=None, help="requests per second per project, then 429")
        group.add_argument("--quota-per-minute", type=int, default=None, help="requests per minute per project, then 429")
    parser.add_argument("--worker-socket", default=None, help=argparse.SUPPRESS)  # set by the coordinator for its processes
    args = parser.parse_args()
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    if args.latency_ms < 0:
        parser.error("--latency-ms must be ≥ 0")
    for option in ("quota_per_second", "quota_per_minute"):
        if getattr(args, option, None) is not None and getattr(args, option) <= 0:
            parser.error(f"--{option.replace('_', '-')} must be > 0")
    return args


def _hub(args: argparse.Namespace) -> Hub:
    limit, period = quota_limit(getattr(args, "quota_per_second", None), getattr(args, "quota_per_minute", None))
    return Hub(quota=Quota(limit=limit, period_seconds=period))


def run(name: str, args: argparse.Namespace, make: SimulatorFactory, *, max_concurrent_streams: int,
        client_certificates: bool = False) -> None:
    """Serve until SIGINT/SIGTERM. ``make`` builds the simulator of a serving process around its recorder.

    ``client_certificates``: ask clients for a certificate signed by the simulators' CA (optional; another CA's fails the handshake).
    """
    ca_file, cert_file, key_file = ensure_certificates(args.cert_dir)
    context = server_context(cert_file, key_file, client_ca=ca_file if client_certificates else None)
    serving = _Serving(args, make, context, max_concurrent_streams)
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up (requirements/base.txt installs it)

        uvloop.install()
    except ImportError:
        pass
    if args.worker_socket:
        asyncio.run(serving.worker())
    elif args.processes > 1:
        asyncio.run(serving.coordinator(name))
    else:
        asyncio.run(serving.single(name))


class _Serving:
    """The three ways a simulator process runs: alone, as coordinator, as one of its serving processes."""

    def __init__(self, args: argparse.Namespace, make: SimulatorFactory, context, max_concurrent_streams: int):
        self.args, self.make, self.context = args, make, context
        self.max_concurrent_streams = max_concurrent_streams

    async def _provider(self, recorder: Recorder, *, reuse_port: bool):
        handler, node = self.make(recorder)
        node.connections.latency_seconds = self.args.latency_ms / 1000
        recorder.quota_on = getattr(self.args, "quota_per_second", None) is not None or getattr(self.args, "quota_per_minute", None) is not None
        server = await serve(handler, self.args.host, self.args.port, ssl_context=self.context,
                             max_concurrent_streams=self.max_concurrent_streams, connections=node.connections, reuse_port=reuse_port)
        return server, node

    async def single(self, name: str) -> None:
        hub = _hub(self.args)
        provider, node = await self._provider(Recorder(LocalLedger(hub)), reuse_port=False)
        control = Control(hub, [LocalNode(node)], latency_ms=self.args.latency_ms)
        control_server = await serve(control.handle, self.args.host, self.args.control_port)
        print(f"{name} simulator ready on {self.args.host}:{self.args.port} (control {self.args.control_port})", flush=True)
        await _stopped()
        provider.close()
        control_server.close()

    async def worker(self) -> None:
        reader, writer = await asyncio.open_unix_connection(self.args.worker_socket)
        node_box: list[NodeControl] = []

        def handle(message: dict):
            if message.get("op") == "control":
                return answer_message(node_box[0], message["request"])
            return None

        channel = Channel(reader, writer, handle)
        served = asyncio.ensure_future(channel.serve())
        provider, node = await self._provider(Recorder(RemoteLedger(channel)), reuse_port=True)
        node_box.append(node)
        channel.send({"op": "hello", "pid": os.getpid()})
        stop = asyncio.ensure_future(_stopped())
        await asyncio.wait([served, stop], return_when=asyncio.FIRST_COMPLETED)  # stopped, or the coordinator went away
        provider.close()

    async def coordinator(self, name: str) -> None:
        hub = _hub(self.args)
        directory = tempfile.mkdtemp(prefix=f"{name}-simulator-")
        socket_path = os.path.join(directory, "hub.sock")
        nodes: list[RemoteNode] = []
        hellos: asyncio.Queue = asyncio.Queue()

        async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            channel: Channel | None = None

            def handle(message: dict):
                op = message.get("op")
                if op == "counts":
                    hub.tally.apply(message["batch"])
                elif op == "admit":
                    return list(hub.admit(message["token"], numbered=message["numbered"], quota_key=message["quota_key"]))
                elif op == "invalid_since":
                    return hub.invalid_since(message["token"])
                elif op == "replicate":
                    return replicate(channel, message["request"])
                elif op == "hello":
                    nodes.append(RemoteNode(channel))
                    hellos.put_nowait(message["pid"])
                return None

            channel = Channel(reader, writer, handle)
            await channel.serve()
            try:  # a stop signals the whole process group: the serving processes may go first
                await asyncio.wait_for(stop_signal.wait(), EXIT_GRACE_SECONDS)
            except TimeoutError:
                log.error("a serving process of the %s simulator went away; stopping", name)
                stopping.set()

        async def replicate(origin: Channel, request: dict) -> bool:
            await asyncio.gather(*(node.channel.request({"op": "control", "request": request}) for node in nodes if node.channel is not origin))
            return True

        stopping, stop_signal = asyncio.Event(), _stop_signal()
        hub_server = await asyncio.start_unix_server(connected, socket_path)
        argv = [sys.executable, "-m", f"simulators.{name}", *sys.argv[1:], "--worker-socket", socket_path]
        workers = [subprocess.Popen(argv) for _ in range(self.args.processes)]
        try:
            for _ in workers:
                await asyncio.wait_for(hellos.get(), START_TIMEOUT_SECONDS)
            control = Control(hub, nodes, latency_ms=self.args.latency_ms)
            control_server = await serve(control.handle, self.args.host, self.args.control_port)
            print(f"{name} simulator ready on {self.args.host}:{self.args.port} (control {self.args.control_port}, "
                  f"{self.args.processes} processes)", flush=True)
            stop = asyncio.ensure_future(stop_signal.wait())
            broken = asyncio.ensure_future(stopping.wait())
            await asyncio.wait([stop, broken], return_when=asyncio.FIRST_COMPLETED)
            stopping.set()
            control_server.close()
            if not stop.done():
                raise SystemExit(1)
        finally:
            stopping.set()
            _stop_processes(workers)
            hub_server.close()
            Path(socket_path).unlink(missing_ok=True)
            os.rmdir(directory)


def _stop_processes(workers: list[subprocess.Popen]) -> None:
    """Terminate the serving processes still running; kill those that do not stop in time."""
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
    for worker in workers:
        try:
            worker.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            worker.kill()


def _stop_signal() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _stopped() -> None:
    """Wait for SIGINT or SIGTERM."""
    await _stop_signal().wait()
