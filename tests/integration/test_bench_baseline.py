"""``python -m bench --baseline``: a stack whose API and workers come from a ref, measured beside the current tree.

The ref is HEAD, so it is cheap: the worktree is a checkout and the
virtualenv is the cached one of these requirements (built once per machine).
Both stacks are the benchmark's own (bench_stack), not the session's.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench import baseline
from bench.__main__ import Sizes, run_group
from bench.figures import comparison_lines
from bench.harness import bench_stack, discard

#: Tiny sizes: a few hundred notifications, one-second h2load runs.
SIZES = Sizes(devices=300, limit=0, ingest=0, campaign_small=0, campaign_large=0, wc_poll_seconds=0, http_seconds=1.0, sync_concurrent_seconds=0, dedupe_clients=0, simulator_requests=0)
FIGURES = ("e2e_per_s", "cpu_us_per_notification", "db_cpu_us_per_notification", "server_cpu_us_per_notification",
           "wc_poll_get_per_s", "plain_route_per_s")


def process_view(pid: int) -> tuple[Path, list[str], dict[str, str]]:
    """A process's working directory, command line and environment."""
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    environ = dict(entry.split(b"=", 1) for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in entry)
    return Path(f"/proc/{pid}/cwd").resolve(), [a.decode() for a in cmdline], {k.decode(): v.decode() for k, v in environ.items()}


@pytest.mark.timeout(600)  # the first run on a machine builds the virtualenv (about a minute)
def test_a_baseline_of_head_runs_its_own_code_and_prints_both_sets_of_figures():
    code = baseline.checkout("HEAD")
    stacks = [bench_stack(), baseline.baseline_stack(code)]
    try:
        for stack in stacks:
            stack.start()
        current, base = stacks
        for name in ("api", "workers-core", "workers-deliver"):
            cwd, argv, environ = process_view(base.processes[name].pid)
            assert cwd == code.root
            assert argv[0].startswith(str(code.venv)) or argv[1].startswith(str(code.venv)), argv
            assert environ["PYTHONPATH"] == str(code.root)
            # Today's database and simulators are the ones it reaches.
            assert environ["PUSH_MONGO_URI"] == base.mongo_uri and environ["PUSH_PROVIDER_CA_FILE"] == str(base.ca_file)
            assert process_view(current.processes[name].pid)[0] != code.root
        lines = []
        for group in ("e2e", "http"):
            results = run_group(group, stacks, code, SIZES, repeats=1)
            lines += comparison_lines(results[0], results[1])
        print("\n".join(lines))
        values = dict(text.split(": ", 1) for text in lines)
        for figure in FIGURES:
            assert float(values[figure]) > 0
            assert float(values[f"baseline_{figure}"]) > 0
            assert float(values[f"ratio_{figure}_to_baseline"]) > 0
    finally:
        for stack in stacks:
            discard(stack)
        # One worktree per commit tested would pile up; the virtualenv stays cached.
        subprocess.run(["git", "worktree", "remove", "--force", str(code.root)], cwd=baseline.ROOT, check=False)
