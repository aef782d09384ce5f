"""Stack's ``launches`` option: another tree's command lines, with this stack's settings."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from devstack.stack import ROOT, WORKER_GROUPS, Launch, Ports, Stack

#: Writes its working directory and environment to the file named by its argument.
REPORT = "import json, os, sys; open(sys.argv[1], 'w').write(json.dumps({'cwd': os.getcwd(), 'env': dict(os.environ)}))"


def started(stack: Stack, name: str, report: Path) -> dict:
    stack.processes[name].wait(30)
    return json.loads(report.read_text())


def test_a_launch_replaces_the_command_line_and_this_stacks_settings_win(tmp_path):
    code = tmp_path / "ref"
    code.mkdir()
    report = tmp_path / "report.json"
    launch = Launch(
        argv=[sys.executable, "-c", REPORT, str(report)],
        env={"PYTHONPATH": str(code), "PUSH_MONGO_URI": "mongodb://127.0.0.1:1", "PUSH_REF_ONLY": "kept"},
        cwd=code,
    )
    stack = Stack(var_dir=tmp_path / "var", ports=Ports.free(), queue_prefix="t.", launches={"workers-core": launch})
    stack._spawn("workers-core", ["never-run"], env={"PUSH_WORKER_METRICS_PORT": "1"})
    seen = started(stack, "workers-core", report)
    assert seen["cwd"] == str(code)
    assert seen["env"]["PYTHONPATH"] == str(code)
    assert seen["env"]["PUSH_REF_ONLY"] == "kept"
    # Today's database, queues and per-process variables are the ones the ref's process reaches.
    assert seen["env"]["PUSH_MONGO_URI"] == stack.mongo_uri
    assert seen["env"]["PUSH_QUEUE_PREFIX"] == "t."
    assert seen["env"]["PUSH_WORKER_METRICS_PORT"] == "1"


def test_without_launches_this_trees_command_runs_as_before(tmp_path):
    report = tmp_path / "report.json"
    stack = Stack(var_dir=tmp_path / "var", ports=Ports.free())
    stack._spawn("api", [sys.executable, "-c", REPORT, str(report)])
    seen = started(stack, "api", report)
    assert seen["cwd"] == str(ROOT) and seen["env"]["PYTHONPATH"] == str(ROOT)
    assert stack.worker_groups == tuple(WORKER_GROUPS)


def test_launched_worker_groups_are_the_ones_started(tmp_path):
    launch = Launch(argv=["dramatiq", "workers.main", "--queues", "q"], env={}, cwd=tmp_path)
    stack = Stack(var_dir=tmp_path, launches={"api": launch, "workers-all": launch})
    assert stack.worker_groups == ("all",)
    assert stack.worker_argv("all") == launch.argv
