"""A RabbitMQ node killed mid-send on a 3-node cluster with quorum queues (``make faults-cluster``).

The fault scenario shape of ``test_faults.py`` (20,000 notifications, the same
exact counts), on the cluster of ``scripts/rabbitmq-cluster.sh``: the API and
the workers are given all three nodes' URLs and every queue is a quorum queue.
Mid-send, the beam process of the node leading most of the stack's queues is
SIGKILLed: its connections drop (the API's publishes and the workers'
consumers reconnect to a live node), its queues elect new leaders among the
two others; after a while it is started again and rejoins. Nothing
acknowledged may be lost, nothing recorded sent again, and every queue ends
empty. Kept out of ``make faults`` (marker ``cluster``): it boots three
RabbitMQ nodes.
"""
from __future__ import annotations

import time
from collections import Counter

import pytest
import requests

from tests.faults.cluster import RabbitCluster
from tests.faults.conftest import FAULT_SETTINGS
from tests.faults.harness import FaultRun
from tests.stacks import queue_names, running_stack

pytestmark = pytest.mark.cluster

#: Deliveries sent before the node is killed: early, so the kill meets publishes as well as deliveries.
UNDER_WAY = 500
#: Seconds the killed node stays down (the cluster runs on two nodes meanwhile).
NODE_DOWN_SECONDS = 15


@pytest.fixture(scope="module")
def cluster():
    cluster = RabbitCluster()
    was_running = cluster.all_running()
    cluster.run("start")
    yield cluster
    if not was_running:
        cluster.run("stop")


@pytest.fixture(scope="module")
def cluster_stack(tmp_path_factory, cluster):
    env = dict(
        FAULT_SETTINGS,
        PUSH_AMQP_URL=cluster.amqp_urls,
        PUSH_RABBITMQ_QUEUE_TYPE="quorum",
        PUSH_RABBITMQ_MANAGEMENT_URL=cluster.management_url(1),
    )
    with running_stack(tmp_path_factory.mktemp("faults-cluster-var"), "faults-cluster", env, broker_url=cluster.amqp_urls) as stack:
        yield stack


def test_a_rabbitmq_node_sigkilled_mid_send_then_restarted(cluster, cluster_stack, request):
    stack = cluster_stack
    run = FaultRun(stack, name=request.node.name, management=cluster.live_management)
    names = queue_names(stack.queue_prefix)
    queues = {q["name"]: q for q in cluster.queues(stack.queue_prefix)}
    assert set(names) <= set(queues), set(names) - set(queues)
    assert all(queues[n]["type"] == "quorum" and len(queues[n]["members"]) == 3 for n in names), queues
    work_queues = [n for n in names if not n.endswith((".DQ", ".XQ"))]

    run.start_send()
    run.wait_sent_at_least(UNDER_WAY)
    leaders = cluster.leaders(stack.queue_prefix, names)
    led = Counter(leaders[n] for n in work_queues)
    victim = cluster.node_of(max(led, key=led.get))
    run.fault()
    in_flight = run.tokens_in("sending")  # no worker dies here: expected to be sent once like the rest
    recorded = run.tokens_in("sent")
    assert len(recorded) < len(run.users), "the kill landed after the whole send; nothing was tested"
    pid = cluster.kill(victim)
    killed_at = time.monotonic()
    print(f"killed {cluster.name(victim)} (beam pid {pid}), leader of {led[cluster.name(victim)]} of the "
          f"{len(work_queues)} work queues and {sum(1 for n in names if leaders[n] == cluster.name(victim))} of all {len(names)}")
    time.sleep(NODE_DOWN_SECONDS / 2)
    status = requests.get(stack.api_url + "/push/service/status", timeout=30)
    assert status.status_code == 200, status.text  # two nodes of three: the API reaches RabbitMQ
    moved = cluster.leaders(stack.queue_prefix, names)
    assert cluster.name(victim) not in moved.values(), moved
    time.sleep(max(0.0, NODE_DOWN_SECONDS - (time.monotonic() - killed_at)))
    cluster.run("start")
    down = time.monotonic() - killed_at
    print(f"{cluster.name(victim)} back after {down:.0f}s")

    counts = run.finish(timeout=400, allowed_repeats=in_flight, forbidden_repeats=recorded)
    back = {q["name"]: q for q in cluster.queues(stack.queue_prefix)}
    assert all(cluster.name(victim) in back[n]["members"] for n in names)
    print(f"CLUSTER COUNTS node_killed={cluster.name(victim)}, node_down_seconds={down:.0f}, "
          f"sending_at_kill={len(in_flight)}, repeats={counts['delivered_twice_or_more']}, "
          f"lost={counts['never_delivered']}, queue_messages_left={counts['queue_messages_left']}, "
          f"leaders_after={dict(Counter(cluster.leaders(stack.queue_prefix, work_queues).values()))}")
    assert counts["never_delivered"] == 0 and counts["queue_messages_left"] == 0
