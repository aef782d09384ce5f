"""Queue depth of this deployment as a table: ``python -m ops.queues [--watch [SECONDS]] [--json] [--peek]``.

Reads the same figures as ``GET /admin/queues`` straight from RabbitMQ (the
management API of ``PUSH_RABBITMQ_MANAGEMENT_URL``, else a passive declare),
for the queues of ``PUSH_QUEUE_PREFIX``. ``--url`` reads them from a running
API's ``/admin/queues`` instead (with the admin key of ``PUSH_ADMIN_KEY`` when auth is on).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import requests

from shared.metrics import QueueStats, QueuesUnavailable, queue_stats
from shared.settings import load

COLUMNS = (
    ("queue", "name", "{}"),
    ("kind", "kind", "{}"),
    ("ready", "ready", "{:d}"),
    ("unacked", "unacked", "{:d}"),
    ("consumers", "consumers", "{:d}"),
    ("publish/s", "publish_rate", "{:.1f}"),
    ("deliver/s", "deliver_rate", "{:.1f}"),
    ("ack/s", "ack_rate", "{:.1f}"),
    ("oldest", "oldest_age_seconds", "{:.1f}s"),
)


def _cell(value, fmt: str) -> str:
    if value is None:
        return "-"
    return fmt.format(value)


def table(rows: list[dict], *, show_missing: bool = False) -> str:
    """The queues as an aligned text table (queues the broker has not declared yet are left out unless asked)."""
    rows = [r for r in rows if show_missing or r.get("exists")]
    cells = [[title for title, _, _ in COLUMNS]]
    for row in rows:
        if row.get("exists"):
            cells.append([_cell(row.get(key), fmt) for _, key, fmt in COLUMNS])
        else:
            cells.append([row["name"], row["kind"], *["-" for _ in COLUMNS[2:]]])
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = []
    for n, line in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    if not rows:
        lines.append("(no queues declared yet)")
    return "\n".join(lines)


def fetch(args) -> tuple[list[dict], str]:
    if args.url:
        key = os.environ.get("PUSH_ADMIN_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        answer = requests.get(
            args.url.rstrip("/") + "/admin/queues", params={"peek": "1" if args.peek else "0"}, headers=headers, timeout=10
        )
        answer.raise_for_status()
        body = answer.json()
        return body["queues"], body.get("source", "api")
    stats, source = queue_stats(load(), peek=args.peek)
    return [QueueStats.as_json(s) for s in stats], source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.queues", description=__doc__.splitlines()[0])
    parser.add_argument("--watch", nargs="?", const=2.0, type=float, metavar="SECONDS", help="refresh every SECONDS (default 2)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--peek", action="store_true", help="read each queue's head message for its age (it is requeued)")
    parser.add_argument("--all", action="store_true", help="also list queues the broker has not declared yet")
    parser.add_argument("--url", help="read from a running API's /admin/queues (e.g. http://127.0.0.1:8080; admin key from PUSH_ADMIN_KEY)")
    args = parser.parse_args(argv)
    while True:
        try:
            rows, source = fetch(args)
            text = json.dumps({"queues": rows, "source": source}, indent=2) if args.json else table(rows, show_missing=args.all)
            status = 0
        except (QueuesUnavailable, requests.RequestException, ValueError, KeyError) as error:
            text, status = f"queue figures unavailable: {error}", 1
        if args.watch:
            sys.stdout.write("\x1b[H\x1b[2J")  # clear the terminal
            print(f"{time.strftime('%H:%M:%S')}  every {args.watch:g}s  (Ctrl-C stops)\n")
        print(text, flush=True)
        if not args.watch:
            return status
        try:
            time.sleep(args.watch)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
    except BrokenPipeError:  # piped into head or less that quit
        sys.stderr.close()
        sys.exit(0)
