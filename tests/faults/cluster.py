"""The 3-node RabbitMQ cluster of ``scripts/rabbitmq-cluster.sh``, as the cluster fault scenario drives it.

Node ``i`` (1..3) listens on the script's ports (``RABBITMQ_CLUSTER_BASE_PORT``,
default 5681, plus ``i - 1``; management 10000 more) and writes its beam
process id to ``var/rabbitmq-cluster/node-i/rabbitmq.pid``.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import requests

from devstack.stack import ROOT

SCRIPT = ROOT / "scripts" / "rabbitmq-cluster.sh"
#: AMQP port of node 1 (the script's default, or what its environment says).
BASE_PORT = int(os.environ.get("RABBITMQ_CLUSTER_BASE_PORT", "5681"))
NODES = (1, 2, 3)
#: Seconds the script may take to start what is not running (three nodes booting on 2 shared cores).
START_TIMEOUT_SECONDS = 400
#: The cluster's own user (the default user, allowed because every connection is from 127.0.0.1).
USER = "guest:guest"


class RabbitCluster:
    """Start, kill and inspect the cluster's nodes.

    Parameters:
      directory: the script's data directory (its pid files).
    """

    def __init__(self, directory: Path = ROOT / "var" / "rabbitmq-cluster"):
        self.directory = directory

    # --- addresses ----------------------------------------------------------------------------

    @staticmethod
    def name(node: int) -> str:
        return f"push-cluster-{node}@localhost"

    @staticmethod
    def amqp_url(node: int) -> str:
        return f"amqp://{USER}@127.0.0.1:{BASE_PORT + node - 1}/%2F"

    @staticmethod
    def management_url(node: int) -> str:
        return f"http://{USER}@127.0.0.1:{BASE_PORT + 10000 + node - 1}"

    @property
    def amqp_urls(self) -> str:
        """``PUSH_AMQP_URL`` of a deployment on the cluster: every node."""
        return ";".join(self.amqp_url(n) for n in NODES)

    # --- processes ----------------------------------------------------------------------------

    def run(self, command: str) -> str:
        done = subprocess.run([str(SCRIPT), command], capture_output=True, text=True, timeout=START_TIMEOUT_SECONDS, check=False)
        if done.returncode:
            raise RuntimeError(f"rabbitmq-cluster.sh {command} failed: {done.stderr[-2000:]}")
        return done.stdout

    def pid(self, node: int) -> int | None:
        try:
            pid = int((self.directory / f"node-{node}" / "rabbitmq.pid").read_text().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def all_running(self) -> bool:
        return all(self.answers(n) for n in NODES)

    def answers(self, node: int) -> bool:
        try:
            return requests.get(self.management_url(node) + "/api/overview", timeout=5).ok
        except requests.RequestException:
            return False

    def kill(self, node: int) -> int:
        """``kill -9`` of the node's beam process; answers its pid."""
        pid = self.pid(node)
        assert pid, f"{self.name(node)} is not running"
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while self.pid(node) and time.monotonic() < deadline:
            time.sleep(0.1)
        return pid

    # --- queues -------------------------------------------------------------------------------

    def live_management(self) -> str:
        """The management API of a node that answers."""
        for node in NODES:
            if self.answers(node):
                return self.management_url(node)
        raise AssertionError("no node of the cluster answers")

    def queues(self, prefix: str) -> list[dict]:
        """The cluster's queues under ``prefix`` (name, type, leader, members, messages)."""
        answer = requests.get(f"{self.live_management()}/api/queues/%2F", timeout=10,
                              params={"columns": "name,type,leader,members,messages"})
        answer.raise_for_status()
        return [q for q in answer.json() if q["name"].startswith(prefix)]

    def leaders(self, prefix: str, names: list[str]) -> dict[str, str]:
        """Node leading each of ``names`` (quorum queues under ``prefix``)."""
        found = {q["name"]: q.get("leader") for q in self.queues(prefix)}
        return {name: found.get(name) for name in names}

    def node_of(self, name: str) -> int:
        return next(n for n in NODES if self.name(n) == name)
