"""A git ref's API and workers, measured beside the current tree (``python -m bench --baseline <ref>``).

The ref is checked out as a detached worktree under ``var/baseline/<sha>/``
with a virtualenv built from its own ``requirements/`` under
``var/baseline/venvs/<hash of them>/``; both are kept, so the next run reuses
them. How the ref starts its API and workers comes from the ref's own
``devstack.stack`` (``bench/ref_probe.py`` runs it with nothing started), since
the server and worker set-up differ between refs. A :class:`Stack` of the
current tree then starts those command lines; everything else is today's:
nx-27017 (a fresh one per stack), the simulators, the seeding and the load.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.harness import bench_stack
from bench.ref_probe import LAUNCHES_LINE, LIMIT_LINE
from devstack.stack import ROOT, Launch, Stack

#: Where worktrees and virtualenvs of baselines are kept.
BASELINE_DIR = ROOT / "var" / "baseline"
#: The ref's requirements file its API and workers need (dev.txt adds tools a baseline does not run).
REQUIREMENTS_FILE = "requirements/base.txt"
#: Written into a virtualenv once its install finished; one without it is built again.
VENV_COMPLETE = ".complete"
#: Seconds the probe of the ref's launches may take (it imports the ref's code).
PROBE_TIMEOUT_SECONDS = 120
#: Seconds the ref's limit benchmark may take.
LIMIT_TIMEOUT_SECONDS = 3600
#: This file, run inside the ref's worktree with its interpreter.
PROBE = Path(__file__).resolve().parent / "ref_probe.py"


@dataclass(frozen=True)
class BaselineCode:
    """A ref checked out with its own virtualenv, ready to be started or asked.

    Parameters:
      ref: the ref as given (``b71ba48``, ``HEAD``, a branch).
      sha: the commit it names.
      root: its worktree.
      venv: its virtualenv.
    """

    ref: str
    sha: str
    root: Path
    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def _probe(self, command: str, options: dict, *, answer_line: str, timeout: float) -> dict:
        done = subprocess.run(
            [str(self.python), str(PROBE), command, json.dumps(options)],
            cwd=self.root, env=probe_env(), capture_output=True, text=True, timeout=timeout, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"baseline {self.ref} ({self.sha[:12]}): {command} failed ({done.returncode}):\n{done.stderr[-4000:]}")
        return parse_answer(done.stdout, answer_line)

    def launches(self, stack: Stack) -> dict[str, Launch]:
        """How the ref starts the API and each worker group for ``stack``'s ports, queues, settings and sizes."""
        options = {
            "var_dir": str(stack.var_dir),
            "ports": asdict(stack.ports),
            "queue_prefix": stack.queue_prefix,
            "env": stack.env,
            "worker_processes": stack.worker_processes,
            "worker_threads": stack.worker_threads,
            "api_workers": stack.api_workers,
            "api_threads": stack.api_threads,
            "log_to_files": stack.log_to_files,
        }
        found = self._probe("launches", options, answer_line=LAUNCHES_LINE, timeout=PROBE_TIMEOUT_SECONDS)
        return launches_from(found, code_root=self.root)

    def measure_limit(self, stack: Stack, **options) -> dict:
        """The ref's own ``bench.limit.measure_limit`` (its HTTP/2 clients) against ``stack``'s simulators."""
        probe_options = {"ports": asdict(stack.ports), "ca_file": str(stack.ca_file), "limit": options}
        return self._probe("limit", probe_options, answer_line=LIMIT_LINE, timeout=LIMIT_TIMEOUT_SECONDS)


def probe_env() -> dict:
    """This process's environment without PYTHONPATH: the ref's code is found from its worktree only."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def parse_answer(output: str, answer_line: str) -> dict:
    """The JSON after ``answer_line`` on the probe's last such line (the ref's code may print others)."""
    for text in reversed(output.splitlines()):
        if text.startswith(answer_line):
            return json.loads(text[len(answer_line):])
    raise RuntimeError(f"the probe printed no {answer_line.strip()} line; its output:\n{output[-4000:]}")


def launches_from(found: dict, *, code_root: Path) -> dict[str, Launch]:
    """Each process's :class:`Launch` from the probe's answer; ``PYTHONPATH`` is the ref's root whatever the ref set."""
    if "api" not in found or not any(name.startswith("workers-") for name in found):
        raise RuntimeError(f"the ref's stack named no API and worker processes: {sorted(found)}")
    return {
        name: Launch(argv=list(spec["argv"]), env={**spec["env"], "PYTHONPATH": str(code_root)}, cwd=Path(spec["cwd"]))
        for name, spec in found.items()
    }


def requirements_digest(worktree: Path) -> str:
    """A hash of the ref's ``requirements/`` files and of the interpreter's version: the virtualenv's cache key."""
    digest = hashlib.sha256(platform.python_version().encode())
    for path in sorted((worktree / "requirements").glob("*")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def resolve(ref: str) -> str:
    try:
        return _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    except subprocess.CalledProcessError as error:
        raise SystemExit(f"--baseline {ref}: not a commit here ({error.stderr.strip()})") from error


@contextmanager
def _locked(directory: Path):
    """One preparation at a time (two benches, or a bench and a test, may prepare the same ref)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _worktree(sha: str, base_dir: Path) -> Path:
    path = base_dir / sha
    if (path / ".git").exists():
        try:
            if _git("rev-parse", "HEAD", cwd=path) == sha:
                return path
        except subprocess.CalledProcessError:
            pass
    shutil.rmtree(path, ignore_errors=True)
    _git("worktree", "prune")  # forget a worktree whose directory was deleted (`make clean`)
    _git("worktree", "add", "--detach", "--force", str(path), sha)
    return path


def _venv(worktree: Path, base_dir: Path) -> Path:
    venv = base_dir / "venvs" / requirements_digest(worktree)
    if (venv / VENV_COMPLETE).exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    print(f"building the baseline's virtualenv {venv} from {worktree / REQUIREMENTS_FILE}", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(worktree / REQUIREMENTS_FILE)], check=True)
    (venv / VENV_COMPLETE).touch()
    return venv


def checkout(ref: str, *, base_dir: Path = BASELINE_DIR) -> BaselineCode:
    """The ref's worktree and virtualenv, made when missing and reused when there."""
    sha = resolve(ref)
    with _locked(base_dir):
        worktree = _worktree(sha, base_dir)
        return BaselineCode(ref=ref, sha=sha, root=worktree, venv=_venv(worktree, base_dir))


def baseline_stack(code: BaselineCode, **options) -> Stack:
    """A bench stack (today's nx-27017 and simulators) whose API and workers are the ref's."""
    stack = bench_stack(**options)
    stack.launches = code.launches(stack)
    return stack
