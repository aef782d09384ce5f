"""``make bench``: every figure of the performance issue, in one run, as ``name: value`` lines.

All processes (API, workers, RabbitMQ, nx-27017, simulators) run on this
machine. Each figure is the median of ``--repeats`` runs after a warm-up,
except the campaigns (one run each, they are long). ``--quick`` shrinks the
sizes for a smoke run; the figures in the README come from a full run.
"""
from __future__ import annotations

import argparse
import time

from bench.campaign import measure_campaign
from bench.harness import bench_stack
from bench.limit import measure_limit
from bench.pipeline import measure_e2e, measure_ingest, measure_sync
from bench.sync_concurrent import measure as measure_sync_concurrent
from bench.wc_bridge import measure as measure_wc_bridge
from bench.wc_push import measure_dedupe


def emit(name: str, value) -> None:
    if isinstance(value, float):
        value = f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"
    print(f"{name}: {value}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every figure")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=None,
                        help="figure groups to run: limit e2e ingest sync sync_concurrent campaign wc_poll dedupe")
    args = parser.parse_args()
    quick = args.quick
    groups = set(args.only or ["limit", "e2e", "ingest", "sync", "sync_concurrent", "campaign", "wc_poll", "dedupe"])
    devices = 5_000 if quick else 50_000
    campaign_sizes = (10_000, 50_000) if quick else (100_000, 1_000_000)
    started = time.time()
    stack = bench_stack()
    figures: dict = {}
    try:
        stack.start()
        if "limit" in groups:
            limit = measure_limit(stack, notifications=devices, processes=stack.worker_processes, repeats=args.repeats)
            figures.update(limit)
            emit("limit_per_s", limit["limit_per_s"])
            emit("limit_concurrency", limit["limit_concurrency"])
        if "e2e" in groups:
            e2e = measure_e2e(stack, devices=devices, repeats=args.repeats)
            figures.update(e2e)
            emit("e2e_per_s", e2e["e2e_per_s"])
            emit("cpu_us_per_notification", e2e["cpu_us_per_notification"])
            emit("db_cpu_us_per_notification", e2e["db_cpu_us_per_notification"])
        if "ingest" in groups:
            ingest = measure_ingest(stack, notifications=20_000 if quick else 80_000, repeats=args.repeats)
            emit("ingest_per_s", ingest["ingest_per_s"])
        if "sync" in groups:
            for name, value in measure_sync(stack).items():
                emit(name, value)
        if "sync_concurrent" in groups:
            for name, value in measure_sync_concurrent(stack, seconds=5.0 if quick else 20.0).items():
                emit(name, value)
        if "campaign" in groups:
            small, large = (measure_campaign(stack, users=n) for n in campaign_sizes)
            label = {100_000: "100k", 1_000_000: "1m"}
            emit(f"campaign_{label.get(campaign_sizes[1], campaign_sizes[1])}_s", large["seconds"])
            emit(f"campaign_{label.get(campaign_sizes[1], campaign_sizes[1])}_per_s", large["per_s"])
            for group in large["rss_mb"]:
                emit(f"campaign_rss_mb_{label.get(campaign_sizes[0], campaign_sizes[0])}_{group}", small["rss_mb"][group])
                emit(f"campaign_rss_mb_{label.get(campaign_sizes[1], campaign_sizes[1])}_{group}", large["rss_mb"][group])
            figures["campaign_rss_ratio"] = max(large["rss_mb"][g] / small["rss_mb"][g] for g in large["rss_mb"])
        if "wc_poll" in groups:
            bridge = measure_wc_bridge(stack, duration=5.0 if quick else 15.0)
            emit("wc_poll_get_per_s", bridge["polled_get_per_s"])
            for name, value in bridge.items():
                if name.startswith("write_to_visible"):
                    emit(name, value)
        if "dedupe" in groups:
            dedupe = measure_dedupe(stack, clients=20 if quick else 100)
            emit("dedupe_sends_per_s", dedupe["dedupe_sends_per_s"])
            emit("dedupe_repeats_delivered", dedupe["dedupe_repeats_delivered"])
        # The ratio lines.
        if "limit_per_s" in figures and "e2e_per_s" in figures:
            emit("ratio_e2e_to_limit", figures["e2e_per_s"] / figures["limit_per_s"])
        if "campaign_rss_ratio" in figures:
            emit("ratio_campaign_rss_large_to_small", figures["campaign_rss_ratio"])
        emit("bench_seconds", time.time() - started)
    finally:
        stack.stop_all()
        # The database file of a full run is gigabytes; its logs stay for reading.
        for data_file in stack.var_dir.glob("mongo.db*"):
            data_file.unlink()


if __name__ == "__main__":
    main()
