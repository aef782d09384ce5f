"""The baseline's pure parts: the probe of a ref's command lines, its answer, the virtualenv's cache key."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.baseline import PROBE, launches_from, parse_answer, probe_env, requirements_digest
from bench.ref_probe import LAUNCHES_LINE
from devstack.stack import ROOT, VENV_BIN, Ports, port_open

#: A ref whose stack starts another server than today's, waits for a ready line and for its API.
FAKE_STACK = '''
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKER_GROUPS = {"core": ("persist", "expand"), "deliver": ("deliver.apns",)}


def wait_until(check, *, timeout=30, what=""):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def api_answers(url):
    return False


@dataclass
class Ports:
    api: int = 8080
    mongo: int = 27017


@dataclass
class Stack:
    var_dir: Path
    ports: Ports = field(default_factory=Ports)
    queue_prefix: str = ""
    env: dict = field(default_factory=dict)

    def _env(self):
        return {**os.environ, "PYTHONPATH": str(ROOT), "PUSH_QUEUE_PREFIX": self.queue_prefix, **self.env}

    def start_api(self):
        subprocess.Popen(["granian", "--port", str(self.ports.api), "api.app:app"], cwd=ROOT, env=self._env())
        wait_until(lambda: api_answers("http://127.0.0.1"), what="api")

    def start_workers(self, groups=tuple(WORKER_GROUPS)):
        for group in groups:
            process = subprocess.Popen(["dramatiq", "--queues", *(self.queue_prefix + q for q in WORKER_GROUPS[group])],
                                       cwd=ROOT, env=self._env(), stdout=subprocess.PIPE)
            for line in process.stdout:
                if b"worker is ready" in line:
                    break
            else:
                raise RuntimeError("exited")
'''


def probe(root: Path, python: str, options: dict) -> dict:
    done = subprocess.run([python, str(PROBE), "launches", json.dumps(options)], cwd=root, env=probe_env(),
                          capture_output=True, text=True, timeout=120, check=True)
    return parse_answer(done.stdout, LAUNCHES_LINE)


def options(tmp_path: Path, ports: Ports) -> dict:
    return {"var_dir": str(tmp_path / "var"), "ports": vars(ports), "queue_prefix": "bl-1.", "env": {"PUSH_X": "1"},
            "worker_processes": 2, "worker_threads": 8, "api_workers": 2, "api_threads": 8, "log_to_files": True}


def test_the_probe_records_what_a_refs_stack_would_start_and_starts_nothing(tmp_path):
    ref = tmp_path / "ref"
    (ref / "devstack").mkdir(parents=True)
    (ref / "devstack" / "__init__.py").write_text("")
    (ref / "devstack" / "stack.py").write_text(FAKE_STACK)
    found = probe(ref, sys.executable, options(tmp_path, Ports(api=1234, mongo=5678)))
    assert found["api"]["argv"] == ["granian", "--port", "1234", "api.app:app"]
    assert found["workers-core"]["argv"] == ["dramatiq", "--queues", "bl-1.persist", "bl-1.expand"]
    assert found["workers-deliver"]["argv"] == ["dramatiq", "--queues", "bl-1.deliver.apns"]
    for launch in found.values():
        assert launch["cwd"] == str(ref)
        # What the ref sets on top of the environment, and nothing it merely passes on.
        assert launch["env"] == {"PYTHONPATH": str(ref), "PUSH_QUEUE_PREFIX": "bl-1.", "PUSH_X": "1"}


def test_the_probe_reads_todays_stack_as_a_baseline_of_head_would(tmp_path):
    ports = Ports.free()
    found = probe(ROOT, str(VENV_BIN / "python"), options(tmp_path, ports))
    assert set(found) == {"api", "workers-core", "workers-deliver", "workers-tx"}
    api = found["api"]["argv"]
    assert api[0] == str(VENV_BIN / "granian") and "api.rsgi:create_app" in api and api[api.index("--port") + 1] == str(ports.api)
    assert found["workers-deliver"]["argv"][:2] == [str(VENV_BIN / "dramatiq"), "workers.main"]
    assert "bl-1.deliver.apns" in found["workers-deliver"]["argv"]
    assert found["api"]["env"]["PUSH_MONGO_URI"] == f"mongodb://127.0.0.1:{ports.mongo}"
    assert found["api"]["env"]["PYTHONPATH"] == str(ROOT)
    assert not port_open(ports.api)


def test_the_answer_is_the_last_marked_line_whatever_else_the_ref_printed():
    output = 'warning: something\nLAUNCHES {"api": 1}\nnoise\nLAUNCHES {"api": 2}\nbye\n'
    assert parse_answer(output, LAUNCHES_LINE) == {"api": 2}
    with pytest.raises(RuntimeError, match="no LAUNCHES line"):
        parse_answer("Traceback ...\n", LAUNCHES_LINE)


def test_launches_run_the_refs_code_whatever_pythonpath_it_set(tmp_path):
    found = {
        "api": {"argv": ["gunicorn", "x"], "env": {"PUSH_A": "1"}, "cwd": str(tmp_path)},
        "workers-core": {"argv": ["dramatiq"], "env": {"PYTHONPATH": "/elsewhere"}, "cwd": str(tmp_path)},
    }
    launches = launches_from(found, code_root=tmp_path)
    assert launches["api"].argv == ["gunicorn", "x"] and launches["api"].cwd == tmp_path
    assert launches["api"].env == {"PUSH_A": "1", "PYTHONPATH": str(tmp_path)}
    assert launches["workers-core"].env["PYTHONPATH"] == str(tmp_path)
    with pytest.raises(RuntimeError, match="no API and worker"):
        launches_from({"api": found["api"]}, code_root=tmp_path)


def test_the_virtualenv_is_keyed_by_the_refs_requirements(tmp_path):
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "base.txt").write_text("flask==3.1.3\n")
    (tmp_path / "requirements" / "dev.txt").write_text("-r base.txt\n")
    first = requirements_digest(tmp_path)
    assert requirements_digest(tmp_path) == first
    (tmp_path / "requirements" / "base.txt").write_text("flask==3.1.3\ngranian==2.8.7\n")
    assert requirements_digest(tmp_path) != first
