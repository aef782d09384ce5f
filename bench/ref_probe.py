"""What bench/baseline.py asks of a git ref's own code, run inside that ref's worktree with its virtualenv.

``<venv>/bin/python bench/ref_probe.py launches '<json>'``: imports the ref's
``devstack.stack``, builds its ``Stack`` with the options of the JSON that it
knows (``var_dir``, ``ports``, ``queue_prefix``, ``env``, worker and API
sizes) and calls its ``start_api`` and its ``start_workers`` once per worker
group, with ``subprocess.Popen`` replaced by a recorder and the readiness
waits skipped: nothing starts. Prints ``LAUNCHES <json>``: per process name
(``api``, ``workers-<group>``) the argv, the variables the ref sets on top of
the environment and the directory it would run in. So the ref's own set-up
(gunicorn and its worker class at b71ba48, granian now) is what runs.

``... limit '<json>'``: the ref's ``bench.limit.measure_limit`` against the
simulators at the JSON's ports; prints ``LIMIT <json>`` with its figures.

This file imports only the standard library and the ref's code: it runs under
the ref's interpreter and packages, from the current tree's path.
"""
from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

#: Prefix of the answer lines (the ref's code may print other lines).
LAUNCHES_LINE = "LAUNCHES "
LIMIT_LINE = "LIMIT "


class _AnyLine(bytes):
    """An output line that contains every ready line a stack may wait for."""

    def __contains__(self, _item) -> bool:
        return True


class _NotStarted:
    """What the recording Popen answers: a process that runs and has printed its ready line."""

    pid = 0
    returncode = None

    def __init__(self):
        self.stdout = iter([_AnyLine(b"ready")])

    def poll(self):
        return None

    def wait(self, timeout=None):
        return 0


class _Recorder:
    """Stands in for ``subprocess.Popen``: keeps what would have been started."""

    def __init__(self, environ: dict):
        self.environ = environ
        self.started: list[dict] = []

    def __call__(self, argv, *_args, cwd=None, env=None, **_kwargs):
        env = dict(self.environ if env is None else env)
        added = {k: v for k, v in env.items() if self.environ.get(k) != v}
        self.started.append({"argv": [str(a) for a in argv], "env": added, "cwd": str(cwd or os.getcwd())})
        return _NotStarted()

    def take_one(self, what: str) -> dict:
        started, self.started = self.started, []
        if len(started) != 1:
            raise SystemExit(f"the ref's {what} started {len(started)} processes; bench/baseline.py expects one")
        return started[0]


def _known(callable_, options: dict) -> dict:
    """The options ``callable_`` takes by name."""
    parameters = inspect.signature(callable_).parameters
    return {name: value for name, value in options.items() if name in parameters}


def launches(options: dict) -> dict:
    from devstack import stack as stack_module  # noqa: PLC0415 - the ref's, importable only once sys.path has it

    # The environment without PYTHONPATH, so the ref's own PYTHONPATH shows as a variable it sets.
    environ = dict(os.environ)
    environ.pop("PYTHONPATH", None)
    recorder = _Recorder(environ)
    subprocess.Popen = recorder
    if hasattr(stack_module, "Popen"):
        stack_module.Popen = recorder
    # Nothing runs, so every readiness check passes at once.
    if hasattr(stack_module, "wait_until"):
        stack_module.wait_until = lambda *_args, **_kwargs: None
    for name in ("api_answers", "port_open"):
        if hasattr(stack_module, name):
            setattr(stack_module, name, lambda *_args, **_kwargs: True)
    ports = stack_module.Ports(**_known(stack_module.Ports, options["ports"]))
    stack = stack_module.Stack(**_known(stack_module.Stack, {**options, "var_dir": Path(options["var_dir"]), "ports": ports}))
    found = {}
    stack.start_api()
    found["api"] = recorder.take_one("start_api")
    for group in stack_module.WORKER_GROUPS:
        stack.start_workers(groups=(group,))
        found[f"workers-{group}"] = recorder.take_one(f"start_workers for {group}")
    return found


def limit(options: dict) -> dict:
    from bench.limit import measure_limit  # noqa: PLC0415 - the ref's

    stack = SimpleNamespace(ports=SimpleNamespace(**options["ports"]), ca_file=Path(options["ca_file"]))
    return measure_limit(stack, **_known(measure_limit, options["limit"]))


def main() -> None:
    # Run as a file: its own directory (the current tree's bench/) must not shadow the ref's packages.
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [os.getcwd(), *(p for p in sys.path[1:] if p != here)]
    command, options = sys.argv[1], json.loads(sys.argv[2])
    if command == "launches":
        print(LAUNCHES_LINE + json.dumps(launches(options)), flush=True)
    elif command == "limit":
        print(LIMIT_LINE + json.dumps(limit(options)), flush=True)
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
