"""The cluster deployments, offline: a 3-member MongoDB replica set and a 3-node RabbitMQ cluster with quorum queues.

docker-compose.yml and docker/k8s carry the same settings; these tests read
the files (the Kubernetes schemas are checked in test_ops.py) and, where
Debian's docker-compose is installed, let it validate the compose file.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from shared.broker import RABBITMQ_CONSUMER_TIMEOUT_MS, amqp_urls

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
PUSH_SERVICES = ("api", "workers-core", "workers-deliver")


def k8s(kind: str, name: str) -> dict:
    for path in (ROOT / "docker" / "k8s").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == kind and doc["metadata"]["name"] == name:
                return doc
    raise AssertionError(f"no {kind} {name} in docker/k8s")


def mongo_options(uri: str) -> tuple[list[str], dict]:
    parts = urlsplit(uri)
    return parts.netloc.split(","), {k: v[0] for k, v in parse_qs(parts.query).items()}


def test_compose_runs_a_three_member_replica_set_written_with_majority():
    members = [name for name in SERVICES if re.fullmatch(r"mongo\d", name)]
    assert len(members) == 3
    assert all(SERVICES[m]["command"][:3] == ["mongod", "--replSet", "rs0"] for m in members)
    init = SERVICES["mongo-init"]
    assert init["environment"]["MEMBERS"].split(",") == [f"{m}:27017" for m in members]
    assert set(init["depends_on"]) == set(members)
    hosts, options = mongo_options(SERVICES["api"]["environment"]["PUSH_MONGO_URI"])
    assert hosts == [f"{m}:27017" for m in members]
    assert options == {"replicaSet": "rs0", "w": "majority", "retryWrites": "true", "retryReads": "true"}


def test_compose_runs_a_three_node_rabbitmq_cluster_with_quorum_queues():
    nodes = [name for name in SERVICES if re.fullmatch(r"rabbitmq\d", name)]
    assert len(nodes) == 3
    environment = SERVICES["api"]["environment"]
    assert environment["PUSH_RABBITMQ_QUEUE_TYPE"] == "quorum"
    assert [urlsplit(u).hostname for u in amqp_urls(environment["PUSH_AMQP_URL"])] == nodes
    cookies = {SERVICES[n]["environment"]["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"] for n in nodes}
    assert len(cookies) == 1 and "-setcookie" in cookies.pop()
    config = (ROOT / "docker" / "rabbitmq" / "cluster.conf").read_text()
    assert all(f"= rabbit@{SERVICES[n]['hostname']}" in config for n in nodes)
    assert all(any(v.endswith("/etc/rabbitmq/conf.d/20-cluster.conf:ro") for v in SERVICES[n]["volumes"]) for n in nodes)
    for service in PUSH_SERVICES:
        assert SERVICES[service]["environment"] == environment
        assert set(SERVICES[service]["depends_on"]) == {"mongo-init", *nodes}


def test_kubernetes_runs_the_same_replica_set_and_cluster():
    mongo = k8s("StatefulSet", "mongo")
    rabbitmq = k8s("StatefulSet", "rabbitmq")
    assert mongo["spec"]["replicas"] == 3 and rabbitmq["spec"]["replicas"] == 3
    job = k8s("Job", "mongo-init-replica-set")["spec"]["template"]["spec"]["containers"][0]
    members = next(e["value"] for e in job["env"] if e["name"] == "MEMBERS").split(",")
    assert members == [f"mongo-{i}.{mongo['spec']['serviceName']}:27017" for i in range(3)]
    script = k8s("ConfigMap", "mongo-init")["data"]["init-replica-set.js"]
    assert script == (ROOT / "docker" / "mongo" / "init-replica-set.js").read_text()
    assert k8s("ConfigMap", "push-config")["data"]["PUSH_RABBITMQ_QUEUE_TYPE"] == "quorum"
    assert "kubernetes" in k8s("ConfigMap", "rabbitmq-config")["data"]["20-cluster.conf"]


def test_every_rabbitmq_configuration_pins_the_consumer_timeout_the_delays_stay_under():
    configs = {
        "compose": (ROOT / "docker" / "rabbitmq" / "cluster.conf").read_text(),
        "k8s": k8s("ConfigMap", "rabbitmq-config")["data"]["20-cluster.conf"],
        "cluster script": (ROOT / "scripts" / "rabbitmq-cluster.sh").read_text(),
    }
    for where, text in configs.items():
        assert f"consumer_timeout = {RABBITMQ_CONSUMER_TIMEOUT_MS}" in text, where
        assert "queue_leader_locator = balanced" in text, where


@pytest.mark.skipif(not shutil.which("docker-compose"), reason="Debian's docker-compose is not installed")
def test_docker_compose_validates_the_files():
    for files in (["docker-compose.yml"], ["docker-compose.yml", "docker/docker-compose.ops.yml"]):
        argv = ["docker-compose", *[a for f in files for a in ("-f", f)], "config", "-q"]
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
