"""Capacity model: ``python -m ops.capacity --rate N`` (notifications per second) prints what a deployment needs.

From the benchmark's measured figures (``ops/capacity_figures.json``: the
``name: value`` lines of ``make bench`` and how many processes produced each)
it derives what one process does, then for a rate: API processes, delivery
worker processes per provider, core worker processes (persist, expand),
RabbitMQ messages and MongoDB writes per second, and the HTTP/2 streams in
flight a provider round-trip time asks for (rate × RTT) with the connections
they need; and the same for 1M, 10M and 100M notifications an hour.
``--refresh FILE`` reads a ``make bench`` output into the figures file.

What the model assumes (ops/README.md "Capacity"): batch sends of ``--batch``
messages to one device each (the shape ``ingest_per_s`` and ``e2e_per_s`` are
measured with), the benchmark's 2-core machine (one process per core does
what the per-process figure says), processes run at ``--utilisation`` of what
was measured, and today's delivery engine (its documents per notification are
in the figures file's ``pipeline``).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from shared.settings import Settings

FIGURES_FILE = Path(__file__).with_name("capacity_figures.json")
#: Notifications an hour of the table's rows.
HOURLY_VOLUMES = (1_000_000, 10_000_000, 100_000_000)
#: Defaults of the model's assumptions (each a command-line option).
DEFAULT_RTT_MS = 200.0
DEFAULT_APNS_SHARE = 0.5
DEFAULT_BATCH = 1000
DEFAULT_UTILISATION = 0.7
#: Seconds between two outcome writes of a chunk in flight (workers/deliver.py RECORD_INTERVAL_SECONDS).
RECORD_INTERVAL_SECONDS = 0.02
#: A ``make bench`` output line: ``name: value``.
BENCH_LINE = re.compile(r"^([a-z0-9_]+): ([0-9.eE+-]+)\s*$")


@dataclass(frozen=True)
class PerProcess:
    """What one process does, from the measured figures (notifications per second)."""

    api: float
    deliver: float
    core: float
    cpu_us_per_notification: float

    @classmethod
    def from_figures(cls, figures: dict) -> PerProcess:
        bench, processes = figures["bench"], figures["bench_processes"]
        return cls(
            api=bench["ingest_per_s"] / processes["ingest_api"],
            # Every delivery process sends to both providers with the same pool: its rate is per provider too.
            deliver=bench["limit_per_s"] / processes["limit"],
            # A lower bound: in the e2e run the database, not the core workers, set the pace.
            core=bench["e2e_per_s"] / processes["e2e_core"],
            cpu_us_per_notification=bench["cpu_us_per_notification"],
        )


@dataclass(frozen=True)
class Plan:
    """What a deployment needs for ``rate`` notifications per second."""

    rate: float
    api_processes: int
    apns_processes: int
    fcm_processes: int
    core_processes: int
    rabbitmq_messages_per_notification: float
    rabbitmq_messages_per_s: float
    mongo_documents_per_notification: float
    mongo_documents_per_s: float
    mongo_write_commands_per_s: float
    apns_streams: int
    fcm_streams: int
    apns_connections: int
    fcm_connections: int
    apns_connections_per_process: int
    fcm_connections_per_process: int


def plan(rate: float, figures: dict, *, rtt_s: float = DEFAULT_RTT_MS / 1000, apns_share: float = DEFAULT_APNS_SHARE,
         batch: int = DEFAULT_BATCH, chunk: int | None = None, utilisation: float = DEFAULT_UTILISATION) -> Plan:
    """The processes, messages, writes, streams and connections ``rate`` notifications per second need."""
    if not 0 < utilisation <= 1 or not 0 <= apns_share <= 1 or batch < 1 or rate < 0 or rtt_s < 0:
        raise ValueError("need 0 < utilisation <= 1, 0 <= apns share <= 1, batch >= 1, rate >= 0, RTT >= 0")
    chunk = chunk or Settings().delivery_chunk_size
    one = PerProcess.from_figures(figures)
    rates = {"apns": rate * apns_share, "fcm": rate * (1 - apns_share)}

    def processes(load: float, per_process: float) -> int:
        return math.ceil(load / (per_process * utilisation)) if load else 0

    deliver = {p: processes(r, one.deliver) for p, r in rates.items()}
    # Per batch: one expand message, and each provider's deliveries in chunks of ``chunk``.
    messages = (1 + sum(math.ceil(batch * share / chunk) for share in (apns_share, 1 - apns_share) if share)) / batch
    pipeline = figures["pipeline"]
    documents = pipeline["delivery_documents_written"] + pipeline["message_documents_written"] / batch
    # Per chunk: its insert, its claim, and an outcome write every RECORD_INTERVAL while it is in flight
    # (at least one provider round trip, at least as long as the process takes to send it).
    chunk_seconds = max(rtt_s, chunk / one.deliver)
    commands_per_chunk = 2 + max(1, math.ceil(chunk_seconds / RECORD_INTERVAL_SECONDS))
    streams = {p: math.ceil(r * rtt_s) for p, r in rates.items()}
    limit = {p: figures["providers"][p]["max_concurrent_streams"] for p in rates}
    per_process_streams = {p: math.ceil(streams[p] / deliver[p]) if deliver[p] else 0 for p in rates}
    return Plan(
        rate=rate,
        api_processes=processes(rate, one.api),
        apns_processes=deliver["apns"],
        fcm_processes=deliver["fcm"],
        core_processes=processes(rate, one.core),
        rabbitmq_messages_per_notification=messages,
        rabbitmq_messages_per_s=rate * messages,
        mongo_documents_per_notification=documents,
        mongo_documents_per_s=rate * documents,
        mongo_write_commands_per_s=rate / chunk * commands_per_chunk,
        apns_streams=streams["apns"],
        fcm_streams=streams["fcm"],
        apns_connections=math.ceil(streams["apns"] / limit["apns"]),
        fcm_connections=math.ceil(streams["fcm"] / limit["fcm"]),
        apns_connections_per_process=math.ceil(per_process_streams["apns"] / limit["apns"]),
        fcm_connections_per_process=math.ceil(per_process_streams["fcm"] / limit["fcm"]),
    )


#: Columns of the hourly table: title, Plan field, format.
COLUMNS = (
    ("notifications/h", None, "{:,.0f}"),
    ("per s", "rate", "{:,.0f}"),
    ("API procs", "api_processes", "{:d}"),
    ("APNs procs", "apns_processes", "{:d}"),
    ("FCM procs", "fcm_processes", "{:d}"),
    ("core procs", "core_processes", "{:d}"),
    ("RabbitMQ msg/s", "rabbitmq_messages_per_s", "{:,.0f}"),
    ("MongoDB docs/s", "mongo_documents_per_s", "{:,.0f}"),
    ("MongoDB writes/s", "mongo_write_commands_per_s", "{:,.0f}"),
    ("APNs streams", "apns_streams", "{:,d}"),
    ("FCM streams", "fcm_streams", "{:,d}"),
    ("APNs conns", "apns_connections", "{:d}"),
    ("FCM conns", "fcm_connections", "{:d}"),
)


def hourly_table(plans: list[Plan]) -> str:
    """The plans as a Markdown table, one row each."""
    rows = [[title for title, _, _ in COLUMNS], ["---"] * len(COLUMNS)]
    for p in plans:
        rows.append([fmt.format(p.rate * 3600 if field is None else getattr(p, field)) for _, field, fmt in COLUMNS])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def report(rate: float, figures: dict, **assumptions) -> str:
    """Everything the command prints for ``rate``."""
    one = PerProcess.from_figures(figures)
    p = plan(rate, figures, **assumptions)
    rtt_ms = assumptions.get("rtt_s", DEFAULT_RTT_MS / 1000) * 1000
    connections_setting = Settings().provider_connections
    lines = [
        f"figures: {figures['measured']}",
        f"per process: API {one.api:,.0f} notifications/s (batch sends); delivery worker {one.deliver:,.0f}/s per provider; "
        f"core worker (persist, expand) at least {one.core:,.0f}/s; API + workers {one.cpu_us_per_notification:.0f} µs of CPU "
        "per notification",
        f"per notification: {p.rabbitmq_messages_per_notification:.4f} RabbitMQ messages, "
        f"{p.mongo_documents_per_notification:.3f} MongoDB documents written",
        "",
        f"for {rate:,.0f} notifications/s ({rate * 3600:,.0f} an hour), provider RTT {rtt_ms:.0f} ms, "
        f"processes at {assumptions.get('utilisation', DEFAULT_UTILISATION):.0%} of the measured rate:",
        f"  API processes {p.api_processes}; delivery worker processes APNs {p.apns_processes}, FCM {p.fcm_processes}; "
        f"core worker processes {p.core_processes} (at most: their figure was measured with the database setting the pace)",
        f"  RabbitMQ {p.rabbitmq_messages_per_s:,.0f} messages/s (each published, delivered, acknowledged; replicated to 3 nodes)",
        f"  MongoDB {p.mongo_documents_per_s:,.0f} documents/s in about {p.mongo_write_commands_per_s:,.0f} write commands/s",
        f"  streams in flight (rate x RTT): {p.apns_streams + p.fcm_streams:,} (APNs {p.apns_streams:,}, FCM {p.fcm_streams:,}); "
        f"HTTP/2 connections: APNs {p.apns_connections}, FCM {p.fcm_connections}; per delivery process and pool: "
        f"APNs {p.apns_connections_per_process}, FCM {p.fcm_connections_per_process}",
    ]
    needed = max(p.apns_connections_per_process, p.fcm_connections_per_process)
    if needed > connections_setting:
        lines.append(f"  PUSH_PROVIDER_CONNECTIONS is {connections_setting} by default: set it to {needed} on the delivery workers")
    lines += [
        "",
        hourly_table([plan(volume / 3600, figures, **assumptions) for volume in HOURLY_VOLUMES]),
    ]
    return "\n".join(lines)


def refresh(figures: dict, bench_output: str, *, today: date | None = None) -> tuple[dict, list[str]]:
    """The figures with every ``bench`` value found in a ``make bench`` output replaced; answers the names replaced."""
    found = {}
    for line in bench_output.splitlines():
        match = BENCH_LINE.match(line.strip())
        if match and match.group(1) in figures["bench"]:
            found[match.group(1)] = round(float(match.group(2)), 1)
    if not found:
        raise ValueError(f"no line of the output names a figure of the file ({', '.join(figures['bench'])})")
    updated = {**figures, "bench": {**figures["bench"], **found}}
    updated["measured"] = f"{(today or date.today()).isoformat()}, make bench (refreshed: {', '.join(sorted(found))})"
    return updated, sorted(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.capacity", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, help="notifications per second (default: 10M an hour)")
    parser.add_argument("--per-hour", type=float, help="notifications an hour instead of --rate")
    parser.add_argument("--rtt-ms", type=float, default=DEFAULT_RTT_MS, help="provider round-trip time (ms)")
    parser.add_argument("--apns-share", type=float, default=DEFAULT_APNS_SHARE, help="share of notifications to APNs (0-1)")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="messages per batch send")
    parser.add_argument("--utilisation", type=float, default=DEFAULT_UTILISATION, help="share of a process's measured rate to plan for")
    parser.add_argument("--figures", type=Path, default=FIGURES_FILE, help="the measured figures (JSON)")
    parser.add_argument("--refresh", metavar="BENCH_OUTPUT", help="read `make bench` output (a file, or - for stdin) into --figures")
    args = parser.parse_args(argv)
    figures = json.loads(args.figures.read_text())
    if args.refresh:
        output = sys.stdin.read() if args.refresh == "-" else Path(args.refresh).read_text()
        try:
            figures, names = refresh(figures, output)
        except ValueError as error:
            print(f"not refreshed: {error}", file=sys.stderr)
            return 1
        args.figures.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"{args.figures}: refreshed {', '.join(names)}")
        return 0
    rate = args.rate if args.rate is not None else (args.per_hour or HOURLY_VOLUMES[1]) / 3600
    try:
        print(report(rate, figures, rtt_s=args.rtt_ms / 1000, apns_share=args.apns_share, batch=args.batch,
                     utilisation=args.utilisation))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
