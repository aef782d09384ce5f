"""``make bench``: every figure of the performance issues, in one run, as ``name: value`` lines.

All processes (API, workers, RabbitMQ, nx-27017, simulators) run on this
machine. Each figure is the median of ``--repeats`` runs after a warm-up,
except the campaigns (one run each, they are long). ``--quick`` shrinks the
sizes for a smoke run; the figures in the README come from a full run.

``--baseline <git ref>`` starts a second stack whose API and workers are that
ref's (bench/baseline.py) beside today's nx-27017, simulators, seeding and
load generators. Each group runs on the current tree's stack, then on the
baseline's (the repeated groups e2e and http in interleaved rounds), and each
figure's line is followed by ``baseline_<figure>`` and
``ratio_<figure>_to_baseline`` (``n/a`` where the baseline has no such
figure). The large campaign runs on the current tree only; the baseline is
compared on the small one, in the campaign group and in the lanes group alike.
The lanes group takes its "alone" campaign rate from the campaign group's run of
the same size on the same stack when there is one (a full run: 1M once alone).
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass

from bench import baseline
from bench.campaign import measure_campaign
from bench.client import measure_clients
from bench.figures import comparison_lines, line
from bench.harness import bench_stack, discard, medians
from bench.http_rate import HttpBench
from bench.lanes import measure_lanes
from bench.limit import measure_limit
from bench.pipeline import E2eBench, measure_ingest, measure_sync
from bench.simulators import measure_ceiling
from bench.sync_concurrent import measure as measure_sync_concurrent
from bench.throttle import measure_throttle
from bench.wc_bridge import measure_visibility
from bench.wc_bridge import seed as seed_sessions
from bench.wc_push import measure_dedupe
from devstack.stack import Stack

#: Every figure group, in the order they run.
GROUPS = ("client", "limit", "e2e", "throttle", "ingest", "sync", "sync_concurrent", "campaign", "lanes", "http", "wc_poll", "dedupe", "simulators")


@dataclass(frozen=True)
class Sizes:
    """How much each group sends.

    Parameters:
      devices: devices of the e2e run.
      limit: notifications of each limit run (9 runs a stack: 3 concurrencies, 3 repeats).
      ingest: notifications per ingest run.
      campaign_small / campaign_large: users of the two campaigns (the baseline runs the small one).
      wc_poll_seconds: seconds the pollers load the API during write-to-visible.
      http_seconds: seconds of each h2load measurement.
      sync_concurrent_seconds: seconds the concurrent SYNCHRONOUS senders send.
      dedupe_clients: WalletConnect clients of the dedupe run.
      simulator_requests: h2load requests against each simulator for its ceiling.
      client_requests: APNs sends per sender and round of the client group (bench/client.py).
      lanes_users: users of the lanes group's campaign (bench/lanes.py; ``--lanes-users`` overrides it).
      lanes_idle_sends: SYNCHRONOUS sends of the lanes group's idle phase.
      throttle: FCM notifications of the throttle group (bench/throttle.py: at its 1,000/s quota, ~40 s).
    """

    devices: int
    limit: int
    ingest: int
    campaign_small: int
    campaign_large: int
    wc_poll_seconds: float
    http_seconds: float
    sync_concurrent_seconds: float
    dedupe_clients: int
    simulator_requests: int
    client_requests: int = 10_000
    lanes_users: int = 1_000_000
    lanes_idle_sends: int = 1_000
    throttle: int = 40_000


# The limit sends 20,000 a run, not 50,000 as before the baseline: its sweep runs twice now, and
# make bench must stay under 45 minutes on this machine (at ≈ 1,800/s a run still lasts ≈ 11 s).
FULL = Sizes(devices=50_000, limit=20_000, ingest=80_000, campaign_small=100_000, campaign_large=1_000_000,
             wc_poll_seconds=15.0, http_seconds=10.0, sync_concurrent_seconds=20.0, dedupe_clients=100, simulator_requests=30_000)
QUICK = Sizes(devices=5_000, limit=5_000, ingest=20_000, campaign_small=10_000, campaign_large=50_000,
              wc_poll_seconds=5.0, http_seconds=3.0, sync_concurrent_seconds=5.0, dedupe_clients=20, simulator_requests=5_000,
              client_requests=2_000, lanes_users=100_000, lanes_idle_sends=75, throttle=10_000)


def size_label(users: int) -> str:
    """``100k``, ``1m``: the campaign size in a figure's name."""
    if users % 1_000_000 == 0:
        return f"{users // 1_000_000}m"
    if users % 1_000 == 0:
        return f"{users // 1_000}k"
    return str(users)


def emit(lines: list[str]) -> None:
    for text in lines:
        print(text, flush=True)


def interleaved(benches: list, repeats: int) -> list[dict]:
    """Rounds of each stack in turn (current, baseline, current, …), so the shared machine's drift hits both alike."""
    rounds: list[list[dict]] = [[] for _ in benches]
    for _ in range(repeats):
        for bench, mine in zip(benches, rounds, strict=True):
            mine.append(bench.round())
    return [medians(r) for r in rounds]


def campaign_figures(stack: Stack, users: int) -> dict:
    result = measure_campaign(stack, users=users)
    label = size_label(users)
    return {
        f"campaign_{label}_s": result["seconds"],
        f"campaign_{label}_per_s": result["per_s"],
        **{f"campaign_rss_mb_{label}_{group}": mb for group, mb in result["rss_mb"].items()},
    }


def campaign_rss(figures: dict, users: int) -> dict[str, float]:
    """Each worker group's peak RSS in :func:`campaign_figures`' figures for ``users``."""
    prefix = f"campaign_rss_mb_{size_label(users)}_"
    return {name[len(prefix):]: mb for name, mb in figures.items() if name.startswith(prefix)}


def client_group(stacks: list[Stack], code: baseline.BaselineCode | None, sizes: Sizes, repeats: int) -> list[dict]:
    """The senders alone, against the current stack's APNs simulator; the ref's sender in the same rounds."""
    figures = measure_clients(stacks[0], requests=sizes.client_requests, rounds=repeats, ref=code.sha if code else None)
    theirs = {name.replace(f"ref_{code.sha}_", "client_"): figures.pop(name) for name in list(figures) if name.startswith("ref_")} if code else None
    return [figures] + ([theirs] if code else [])


def limit_group(stacks: list[Stack], code: baseline.BaselineCode | None, sizes: Sizes, repeats: int) -> list[dict]:
    options = {"notifications": sizes.limit, "processes": stacks[0].worker_processes, "repeats": repeats}
    results = [measure_limit(stacks[0], **options)]
    if code:  # the ref's own clients, run from its worktree
        results.append(code.measure_limit(stacks[1], **options))
    return results


#: Groups measured on each stack in turn: group → (stack, sizes, repeats) → figures.
PER_STACK = {
    "ingest": lambda stack, sizes, repeats: measure_ingest(stack, notifications=sizes.ingest, repeats=repeats),
    "sync": lambda stack, sizes, repeats: measure_sync(stack),
    "sync_concurrent": lambda stack, sizes, repeats: measure_sync_concurrent(stack, seconds=sizes.sync_concurrent_seconds),
    "campaign": lambda stack, sizes, repeats: campaign_figures(stack, sizes.campaign_small),
    "wc_poll": lambda stack, sizes, repeats: measure_visibility(stack, seed_sessions(stack), duration=sizes.wc_poll_seconds),
}


def lanes_users(sizes: Sizes, index: int) -> int:
    """The lanes campaign's users on stack ``index``: the baseline (index 1) compares at the small campaign's size.

    Issue 20 keeps the 1M campaign off the baseline (make bench's 45-minute budget); the
    current tree's lanes figures still use ``sizes.lanes_users`` (1M in a full run, issue 15).
    """
    return sizes.lanes_users if index == 0 else min(sizes.lanes_users, sizes.campaign_small)


def run_group(group: str, stacks: list[Stack], code: baseline.BaselineCode | None, sizes: Sizes, repeats: int,
              measured: dict | None = None) -> list[dict]:
    """The group's figures on each stack (the current tree's first, then the baseline's); ``measured``: the figures
    of the current stack so far (the lanes group takes its "alone" campaign rate from the campaign group's)."""
    if group == "client":
        return client_group(stacks, code, sizes, repeats)
    if group == "limit":
        return limit_group(stacks, code, sizes, repeats)
    if group == "e2e":
        return interleaved([E2eBench(stack, devices=sizes.devices) for stack in stacks], repeats)
    if group == "throttle":  # the current tree only (the baseline has no shared budget)
        return [measure_throttle(stacks[0], notifications=sizes.throttle)] + ([{}] if code else [])
    if group == "lanes":
        return [measure_lanes(stack, users=lanes_users(sizes, i), idle_sends=sizes.lanes_idle_sends,
                              alone_per_s=(measured or {}).get(f"campaign_{size_label(lanes_users(sizes, i))}_per_s") if i == 0 else None)
                for i, stack in enumerate(stacks)]
    if group in PER_STACK:
        return [PER_STACK[group](stack, sizes, repeats) for stack in stacks]
    if group == "http":
        return interleaved([HttpBench(stack, duration=sizes.http_seconds) for stack in stacks], repeats)
    if group == "dedupe":
        results = [measure_dedupe(stack, clients=sizes.dedupe_clients) for stack in stacks]
        return [{name: r[name] for name in ("dedupe_sends_per_s", "dedupe_repeats_delivered")} for r in results]
    if group == "simulators":
        # Simulators of their own (not the stacks'), so nothing else loads them; they are today's for both stacks.
        return [measure_ceiling(count=sizes.simulator_requests)] + ([{}] if code else [])
    raise ValueError(group)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every figure")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=GROUPS, default=None, help="figure groups to run (default: all)")
    parser.add_argument("--baseline", metavar="REF", help="also measure this git ref's API and workers, side by side")
    parser.add_argument("--lanes-users", type=int, metavar="N", help="users of the lanes group's campaign (default: 1M, --quick 100k)")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    if args.lanes_users:
        sizes = dataclasses.replace(sizes, lanes_users=args.lanes_users)
    groups = [g for g in GROUPS if g in (args.only or GROUPS)]
    started = time.time()
    code = baseline.checkout(args.baseline) if args.baseline else None
    stacks = [bench_stack()]
    current: dict = {}
    base: dict | None = {} if code else None
    try:
        if code:
            stacks.append(baseline.baseline_stack(code))
            print(f"baseline: {args.baseline} = {code.sha[:12]} ({code.root})", flush=True)
        for stack in stacks:
            stack.start()
        for group in groups:
            group_started = time.time()
            results = run_group(group, stacks, code, sizes, args.repeats, current)
            emit(comparison_lines(results[0], results[1] if code else None))
            current.update(results[0])
            if code:
                base.update(results[1])
            if group == "campaign":
                large = campaign_figures(stacks[0], sizes.campaign_large)
                emit(comparison_lines(large, None))
                current.update(large)  # the lanes group's "alone" rate when it runs at this size
                small_rss, large_rss = campaign_rss(results[0], sizes.campaign_small), campaign_rss(large, sizes.campaign_large)
                current["ratio_campaign_rss_large_to_small"] = max(large_rss[g] / small_rss[g] for g in large_rss)
            # What each group costs of make bench's time budget.
            emit([line(f"bench_seconds_{group}", time.time() - group_started)])
        # The ratio lines of figures from two groups.
        derived: dict = {}
        if "limit_per_s" in current and "e2e_per_s" in current:
            derived["ratio_e2e_to_limit"] = current["e2e_per_s"] / current["limit_per_s"]
        if "limit_per_s" in current and "simulator_ceiling_per_s" in current:
            derived["ratio_simulator_ceiling_to_limit"] = current["simulator_ceiling_per_s"] / current["limit_per_s"]
        base_derived = None
        if code:
            limit, e2e = base.get("limit_per_s"), base.get("e2e_per_s")
            base_derived = {"ratio_e2e_to_limit": e2e / limit if limit and e2e else None, "ratio_simulator_ceiling_to_limit": None}
        emit(comparison_lines(derived, base_derived, with_ratios=False))
        if "ratio_campaign_rss_large_to_small" in current:
            emit([line("ratio_campaign_rss_large_to_small", current["ratio_campaign_rss_large_to_small"])])
        emit([line("bench_seconds", time.time() - started)])
    finally:
        for stack in stacks:
            discard(stack)


if __name__ == "__main__":
    main()
