"""The HTTP/2 sender alone: the project's APNs client and aioapns 4.0 against the same APNs simulator.

Each round runs every sender once, in turn (interleaved, so a busy moment of the
shared machine falls on all of them alike), each in a fresh process that sends
``requests`` notifications at ``concurrency`` over ``connections`` connections
after a warm-up, and reads its own CPU time (user + system, all threads) around
the timed part. Figures are medians over the rounds:
``<sender>_cpu_us_per_request`` and ``<sender>_per_s``, and
``ratio_client_to_aioapns_cpu`` (the target: at most 0.25). The simulator may
cap the rates (it serves about 2,900 requests/s on this machine under h2load);
CPU per request is the figure that compares senders.

``--ref <git ref>`` adds the project's sender as it is at that ref (its
``workers/`` tree exported to a temporary directory), measured in the same
rounds: a before/after in one invocation. Runnable alone:
``python -m bench.client [--requests N] [--rounds N] [--ref main]``.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib
import multiprocessing
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import median
from devstack.credentials import AppCredentials, make_credentials, register_with_simulators
from devstack.stack import ROOT, Stack

#: The project's sender and the peer it is measured against, in the order each round runs them.
SENDERS = ("client", "aioapns")
#: Notifications sent before the timed part (connections, TLS, provider token, imports warm).
WARM_UP_REQUESTS = 300
PAYLOAD = b'{"aps":{"alert":{"title":"bench","body":"the sender alone"}}}'


def _token(i: int) -> str:
    return f"0{i:063x}"


async def _project_sender(port: int, ca_file: str, credentials: AppCredentials, connections: int):
    """The project's ``ApnsClient`` (token auth), as the delivery workers use it."""
    import ssl  # noqa: PLC0415 - in the child process, after ``--ref`` set the import path

    from workers.delivery.apns import ApnsClient, ApnsRequest, ApnsTokenSigner  # noqa: PLC0415

    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["h2"])
    client = ApnsClient(
        origin=f"https://127.0.0.1:{port}",
        signer=ApnsTokenSigner(key_id=credentials.key_id, team_id=credentials.team_id, private_key_pem=credentials.apns_key_pem),
        topic=credentials.bundle, ssl_context=context, connections=connections,
    )

    async def send(i: int) -> int:
        return (await client.send(ApnsRequest(token=_token(i), payload=PAYLOAD))).status

    return send, client.close


async def _aioapns_sender(port: int, ca_file: str, credentials: AppCredentials, connections: int):
    """aioapns 4.0 (asyncio + h2), pointed at the simulator.

    It has no origin setting (its protocol classes name Apple's hosts) and offers
    no ALPN (DESIGN.md §7), so both are set here.
    """
    import ssl  # noqa: PLC0415

    import orjson  # noqa: PLC0415
    from aioapns import APNs, NotificationRequest  # noqa: PLC0415
    from aioapns.connection import APNsProductionClientProtocol  # noqa: PLC0415

    APNsProductionClientProtocol.APNS_SERVER = "127.0.0.1"
    APNsProductionClientProtocol.APNS_PORT = port
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["h2"])
    client = APNs(
        key=credentials.apns_key_pem, key_id=credentials.key_id, team_id=credentials.team_id, topic=credentials.bundle,
        max_connections=connections, ssl_context=context,
    )
    message = orjson.loads(PAYLOAD)

    async def send(i: int) -> int:
        return int((await client.send_notification(NotificationRequest(device_token=_token(i), message=message))).status)

    async def close() -> None:
        client.pool.close()

    return send, close


FACTORIES = {"client": _project_sender, "aioapns": _aioapns_sender}


def _round(args: tuple) -> tuple[float, float, int]:
    """One sender in this (fresh) process: answer (seconds, CPU seconds, failed sends) of the timed part."""
    name, ref_dir, port, ca_file, credentials_json, requests, concurrency, connections = args
    if ref_dir:
        sys.path.insert(0, ref_dir)
        for module in [m for m in sys.modules if m == "workers" or m.startswith("workers.")]:
            del sys.modules[module]  # imported from this tree by devstack; the ref's must be the one used
    credentials = AppCredentials.from_json(credentials_json)
    if ":" in name:
        module, _, function = name.partition(":")
        factory = getattr(importlib.import_module(module), function)
    else:
        factory = FACTORIES["client" if ref_dir else name]

    async def main() -> tuple[float, float, int]:
        send, close = await factory(port, ca_file, credentials, connections)
        failures = 0

        async def sender(numbers) -> None:
            # ``concurrency`` of these share one iterator: that many requests in flight, no semaphore
            # (whose wake-up walks all its waiters: a cost of the harness, not of the sender).
            nonlocal failures
            for i in numbers:
                failures += await send(i) != 200

        numbers = iter(range(WARM_UP_REQUESTS))
        await asyncio.gather(*(sender(numbers) for _ in range(concurrency)))
        failures = 0
        cpu, started = time.process_time(), time.perf_counter()
        numbers = iter(range(requests))
        await asyncio.gather(*(sender(numbers) for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        await close()
        return elapsed, cpu, failures

    return asyncio.run(main())


def _export(ref: str, directory: Path) -> None:
    """The ref's ``workers/`` tree (the sender and what it imports) into ``directory``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "workers"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)


def measure_clients(stack: Stack, *, requests: int = 10_000, concurrency: int = 300, connections: int = 2,
                    rounds: int = 3, ref: str | None = None, extra: tuple[str, ...] = ()) -> dict:
    """``<sender>_cpu_us_per_request`` and ``<sender>_per_s`` for each sender (and ``ref_<ref>`` if given), medians of ``rounds``."""
    credentials = make_credentials("bench-client", fcm_origin=f"https://127.0.0.1:{stack.ports.fcm}", key_id="CLIENTKEY1")
    register_with_simulators(
        credentials,
        apns_control=f"http://127.0.0.1:{stack.ports.apns_control}",
        fcm_control=f"http://127.0.0.1:{stack.ports.fcm_control}",
    )
    with tempfile.TemporaryDirectory(prefix="bench-client-ref-") as ref_dir:
        senders = {name: "" for name in (*SENDERS, *extra)}
        if ref:
            _export(ref, Path(ref_dir))
            senders[f"ref_{ref}"] = ref_dir
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in senders}
        context = multiprocessing.get_context("spawn")
        for _ in range(rounds):
            for name, tree in senders.items():
                args = (name, tree, stack.ports.apns, str(stack.ca_file), credentials.to_json(), requests, concurrency, connections)
                with context.Pool(1) as pool:
                    elapsed, cpu, failures = pool.apply(_round, (args,))
                if failures:
                    raise RuntimeError(f"{name}: {failures} of {requests} sends failed")
                samples[name].append((elapsed, cpu))
    figures = {}
    for name, runs in samples.items():
        label = re.sub(r"\W", "_", name.rpartition(":")[2])
        figures[f"{label}_cpu_us_per_request"] = median([cpu / requests * 1e6 for _, cpu in runs])
        figures[f"{label}_per_s"] = median([requests / elapsed for elapsed, _ in runs])
    # The target: the project's CPU per request at most a quarter of aioapns's.
    figures["ratio_client_to_aioapns_cpu"] = figures["client_cpu_us_per_request"] / figures["aioapns_cpu_us_per_request"]
    return figures


def main() -> None:
    from bench.harness import bench_stack  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m bench.client", description=__doc__)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=300)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ref", help="also measure the project's sender at this git ref (before/after)")
    parser.add_argument("--sender", action="append", default=[], metavar="MODULE:FACTORY",
                        help="also measure this sender: an async factory (port, ca_file, credentials, connections) -> (send, close)")
    args = parser.parse_args()
    stack = bench_stack()
    try:
        stack.start_simulators()
        figures = measure_clients(stack, requests=args.requests, concurrency=args.concurrency, connections=args.connections,
                                  rounds=args.rounds, ref=args.ref, extra=tuple(args.sender))
        for name, value in figures.items():
            print(f"{name}: {value:.1f}" if value >= 10 else f"{name}: {value:.3f}", flush=True)
    finally:
        stack.stop_all()


if __name__ == "__main__":
    main()
