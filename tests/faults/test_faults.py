"""Faults during a sustained send of 20,000 notifications, each ending with exact counts (``make faults``).

Every scenario: a fresh app with 20,000 devices (half APNs, half FCM; a third each with HMS in the GOAWAY one; 1 % dead
tokens), one notification each in ASYNCHRONOUS batches of 1,000 spread over
about ten seconds, a fault while the send and the deliveries are under way,
then :meth:`FaultRun.finish`: every acknowledged notification delivered
exactly once (simulators' counts) except dead tokens, every failure recorded
with its reason, every queue empty.
"""
from __future__ import annotations

import threading
import time
from collections import Counter

import requests

from tests import ledger_view
from tests.faults.harness import FaultRun
from tests.waiting import wait_for

#: Deliveries sent before a fault lands: the send is well under way, far from done.
UNDER_WAY = 3_000
#: Deliveries of held chunks still open (being sent) when the delivery workers are killed.
SENDING_AT_KILL = 200
#: Batches acknowledged before RabbitMQ is cut: the send is under way, most batches still to come.
BATCHES_BEFORE_OUTAGE = 5


def test_delivery_workers_sigkilled_mid_send_then_restarted(run: FaultRun, stack):
    run.start_send()
    run.wait_sent_at_least(UNDER_WAY)
    # Kill while chunks are being sent (held, with open deliveries), not in a pause between two batches: the wire
    # repeats then measure what the send gate and the recorder leave unrecorded at a kill.
    wait_for(lambda: run.states().get("sending", 0) >= SENDING_AT_KILL, timeout=60, what="chunks being sent", every=0.02)
    run.fault()
    stack.stop_workers(["deliver"], kill=True)
    # Claimed and without a recorded outcome at the kill: the provider may have taken these an
    # instant before it (README "Delivery guarantees"), the only sends that may be repeated.
    in_flight = run.tokens_in("sending")
    recorded = run.tokens_in("sent")
    assert len(recorded) < len(run.users), "the kill landed after the whole send; nothing was tested"
    time.sleep(2)
    stack.start_workers(["deliver"])
    counts = run.finish(allowed_repeats=in_flight, forbidden_repeats=recorded)
    print(f"in flight at the kill: {len(in_flight)}, recorded sent before it: {len(recorded)}")
    assert counts["delivered_twice_or_more"] <= len(in_flight)


def test_rabbitmq_unreachable_for_10s_then_back(run: FaultRun, stack, broker_proxy):
    run.start_send()
    # While batches are still to come (on a loaded machine the API takes all 20 before 3,000 deliveries
    # are sent, and an outage after the last batch meets no publish).
    run.wait_acknowledged_at_least(BATCHES_BEFORE_OUTAGE)
    run.fault()
    broker_proxy.cut()
    try:
        time.sleep(2)
        status = requests.get(stack.api_url + "/push/service/status", timeout=30)
        assert status.status_code == 503, status.text
        assert status.json()["responseObject"]["rabbitmq"] == "DOWN"
        time.sleep(8)
    finally:
        broker_proxy.restore()
    counts = run.finish()
    assert counts["client_retries"].get(503, 0) > 0, "no batch met the outage: the API never answered 503"


def test_mongo_sigkilled_and_restarted_on_the_same_file(run: FaultRun, stack):
    stop_registering = threading.Event()
    registering = run.register_until(stop_registering)  # writes through the persist actors meanwhile
    run.start_send()
    run.wait_sent_at_least(UNDER_WAY)
    run.fault()
    stack.stop("mongo", kill=True)
    time.sleep(3)
    stack.start_mongo()
    time.sleep(3)
    stop_registering.set()
    registering.join(120)
    run.finish()
    stored = run.registrations_stored()
    print(f"registrations acknowledged during the send: {len(run.registrations)}, stored: {stored}, "
          f"acknowledged as: {dict(run.registration_answers)}, client retries: {dict(run.registration_refusals)}")
    assert run.registration_error is None, run.registration_error
    assert not registering.is_alive() and stored == len(run.registrations)


def test_apns_answers_503_for_30s_then_recovers(run: FaultRun, stack):
    run.start_send()
    run.wait_sent_at_least(UNDER_WAY // 2)
    run.fault()
    answer = requests.post(f"http://127.0.0.1:{stack.ports.apns_control}/faults", json={"unavailable_seconds": 30}, timeout=10)
    assert answer.ok
    started = time.monotonic()
    time.sleep(10)
    # Mid-outage: what waits for another try is recorded as such, with the provider's reason.
    waiting = ledger_view.rows(run.db, run.acknowledged, "retry")
    reasons = Counter(d.get("reason") for d in waiting)
    print(f"waiting for another try 10 s into the outage: {len(waiting)}, by reason: {dict(reasons)}")
    assert waiting and all(reasons), reasons
    counts = run.finish(timeout=300)
    assert time.monotonic() - started >= 30
    assert counts["provider_attempts"] > counts["notifications_acknowledged"], "no request met the outage"


def test_apns_fcm_and_hms_send_goaway_mid_stream(stack, request):
    """A third of the devices are HMS ones: its sender shares the HTTP/2 pool and its recovery."""
    run = FaultRun(stack, name=request.node.name, providers=("fcm", "apns", "hms"))
    run.start_send()
    goaways = 0
    run.wait_sent_at_least(UNDER_WAY // 2)
    run.fault()
    for threshold in (UNDER_WAY // 2, UNDER_WAY, 2 * UNDER_WAY, 3 * UNDER_WAY):
        run.wait_sent_at_least(threshold)
        for port in (stack.ports.apns_control, stack.ports.fcm_control, stack.ports.hms_control):
            answer = requests.post(f"http://127.0.0.1:{port}/faults", json={"goaway": True}, timeout=10)
            assert answer.ok
            goaways += answer.json()["goaway_connections"]
    print(f"GOAWAY sent on {goaways} connections")
    assert goaways > 0
    run.finish()
