"""Operating the server: queue depth, metrics, dead letters and the dashboard, each seen moving on the real stack."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from devstack.credentials import configure_app, make_credentials
from devstack.stack import ROOT, free_port
from shared.logs import redacted_token
from tests import ledger_view, waiting
from tests.integration.conftest import apns_token, fcm_token, hms_token, register

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def user() -> str:
    return f"user-{uuid.uuid4().hex[:10]}"


def scrape(url: str) -> list:
    answer = requests.get(url, timeout=30)
    assert answer.status_code == 200, answer.text
    return list(text_string_to_metric_families(answer.text))


def value(families: list, name: str, **labels) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        s.value
        for f in families
        for s in f.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def delivery_metrics(stack) -> list:
    """The metrics of both delivering groups: bulk (``deliver``) and the transactional lane (``tx``)."""
    return scrape(stack.worker_metrics_url("deliver")) + scrape(stack.worker_metrics_url("tx"))


def eventually(check, *, timeout: float = 60, what: str = "condition"):
    return waiting.wait_for(check, timeout=timeout, what=what, every=0.25)

def queue(api, name: str) -> dict:
    body = api.get("/admin/queues").json()
    return next(q for q in body["queues"] if q["name"] == name)


def send_async(api, app_id: str, user_id: str, body: dict | None = None, *, priority: str = "HIGH") -> str:
    """An ASYNCHRONOUS send of one message: HIGH priority takes the transactional lane, NORMAL the bulk one (README "Lanes")."""
    answer = api.ok("/push/message/send", {"appId": app_id, "mode": "ASYNCHRONOUS", "priority": priority,
                                           "message": {"userId": user_id, "body": body or {"title": "t"}}})
    return answer["responseObject"]["messageId"]


def test_stopped_fcm_workers_show_queue_depth_then_drain(stack, api, new_app):
    app_id = new_app()
    alice = user()
    register(api, app_id, fcm_token(), "android", alice)
    fcm_queue = stack.queue_prefix + "deliver.fcm"
    eventually(lambda: queue(api, fcm_queue)["consumers"] > 0, what="fcm consumers")
    stack.stop_workers(["deliver"])
    try:
        eventually(lambda: queue(api, fcm_queue)["consumers"] == 0, what="consumers gone")
        before = queue(api, fcm_queue)["ready"]
        for _ in range(3):
            send_async(api, app_id, alice, priority="NORMAL")  # bulk: the deliver group's queue

        risen = eventually(lambda: (q := queue(api, fcm_queue))["ready"] >= before + 3 and q, what="fcm queue depth")
        assert risen["consumers"] == 0 and risen["exists"] and risen["kind"] == "main"

        # The same figure on the API's /metrics (a gauge read from RabbitMQ at scrape time) ...
        families = scrape(stack.api_url + "/metrics")
        assert value(families, "push_queue_messages_ready", queue=fcm_queue) >= before + 3
        assert value(families, "push_queue_consumers", queue=fcm_queue) == 0
        assert value(families, "push_queue_stats_up", source="management") == 1
        # ... the oldest message's age when asked to peek ...
        peeked = next(q for q in api.get("/admin/queues", peek="1").json()["queues"] if q["name"] == fcm_queue)
        assert peeked["oldest_age_seconds"] is not None and peeked["oldest_age_seconds"] >= 0
        # ... and in the CLI's table.
        env = {**os.environ, **stack.settings_env(), "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-m", "ops.queues"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        row = next(line for line in out.stdout.splitlines() if line.startswith(fcm_queue + " "))
        assert int(row.split()[2]) >= before + 3
        assert "deliver.fcm" in subprocess.run(
            [sys.executable, "-m", "ops.queues", "--json", "--url", stack.api_url], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
        ).stdout
    finally:
        stack.start_workers(["deliver"])

    drained = eventually(lambda: (q := queue(api, fcm_queue))["ready"] == 0 and q["consumers"] > 0 and q, what="queue drained")
    assert drained["unacked"] == 0 or drained["consumers"] > 0


def test_dead_token_moves_worker_and_api_metrics(stack, api, new_app):
    app_id = new_app()
    bob = user()
    register(api, app_id, apns_token("dead"), "ios", bob)
    register(api, app_id, fcm_token(), "android", bob)
    # A SYNCHRONOUS send of one message is delivered by the transactional lane's group (README "Lanes").
    before_worker = eventually(lambda: delivery_metrics(stack), what="worker metrics endpoint")
    before_api = scrape(stack.api_url + "/metrics")

    result = api.ok("/push/message/send", {"appId": app_id, "message": {"userId": bob, "body": {"title": "t"}}})["responseObject"]["result"]
    assert result["apns"]["failed"] == 1 and result["fcm"]["sent"] == 1

    def moved():
        after = delivery_metrics(stack)
        return after if value(after, "push_dead_tokens_total", provider="apns", app=app_id) == 1 else None

    after = eventually(moved, what="dead-token counter")
    assert value(after, "push_deliveries_total", provider="apns", app=app_id, outcome="dead_token") == 1
    assert value(after, "push_deliveries_total", provider="fcm", app=app_id, outcome="sent") == 1
    for provider in ("apns", "fcm"):
        assert value(after, "push_delivery_latency_seconds_count", provider=provider) > value(
            before_worker, "push_delivery_latency_seconds_count", provider=provider
        )
    # Dramatiq's own middleware counts the processed chunk messages.
    apns_queue = stack.queue_prefix + "deliver.apns.tx"
    processed_before = value(before_worker, "dramatiq_messages_total", queue_name=apns_queue)
    eventually(lambda: value(delivery_metrics(stack), "dramatiq_messages_total", queue_name=apns_queue) > processed_before, what="Dramatiq's counter")

    api_after = scrape(stack.api_url + "/metrics")
    route = {"route": "/push/message/send", "method": "POST", "status": "200"}
    assert value(api_after, "push_http_requests_total", **route) > value(before_api, "push_http_requests_total", **route)
    expand = stack.queue_prefix + "expand.tx"
    assert value(api_after, "push_enqueue_latency_seconds_count", queue=expand) > value(before_api, "push_enqueue_latency_seconds_count", queue=expand)


def test_refused_credentials_raise_the_suspended_providers_gauge(stack, api):
    app_id = f"app-{uuid.uuid4().hex[:8]}"
    # Credentials the APNs simulator was never told about: it answers 403 InvalidProviderToken.
    credentials = make_credentials(app_id, fcm_origin=f"https://127.0.0.1:{stack.ports.fcm}", key_id=f"K{uuid.uuid4().hex[:9]}".upper())
    configure_app(stack.api_url, app_id, credentials)
    frank = user()
    register(api, app_id, apns_token(), "ios", frank)
    before = value(scrape(stack.api_url + "/metrics"), "push_suspended_providers", provider="apns")

    result = api.ok("/push/message/send", {"appId": app_id, "message": {"userId": frank, "body": {"title": "t"}}})["responseObject"]["result"]
    assert result["apns"]["failed"] == 1

    eventually(
        lambda: value(scrape(stack.api_url + "/metrics"), "push_suspended_providers", provider="apns") == before + 1,
        what="suspended providers gauge",
    )
    worker = delivery_metrics(stack)
    assert value(worker, "push_deliveries_total", provider="apns", app=app_id, outcome="failed") == 1


def test_dead_letters_are_listed_and_requeued_through_the_queue(stack, api, new_app):
    app_id = new_app()
    carol = user()
    token = apns_token("f5039")  # 503 for nine attempts: longer than validUntil allows
    register(api, app_id, token, "ios", carol)
    dead_before = value(delivery_metrics(stack), "push_dead_letters_total", provider="apns", app=app_id)
    valid_until = (datetime.now(UTC) + timedelta(seconds=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
    message_id = send_async(api, app_id, carol, {"title": "soon stale", "validUntil": valid_until})

    def listed():
        items = api.get("/admin/dead-letters", app_id=app_id).json()["items"]
        return [i for i in items if i["message_id"] == message_id]

    items = eventually(listed, timeout=90, what="dead letter listed")
    item = items[0]
    assert item["platform"] == "apns" and "ServiceUnavailable" in item["reason"]
    assert item["attempts"] >= 1 and item["requeueable"]
    eventually(
        lambda: value(delivery_metrics(stack), "push_dead_letters_total", provider="apns", app=app_id) == dead_before + 1,
        what="dead-letter counter",
    )
    eventually(lambda: api.get("/admin/stats").json()["by_outcome"].get("dead_letter", 0) >= 1, what="dead letters in stats")

    answer = api.session.post(stack.api_url + "/admin/dead-letters/requeue", json={"ids": [item["id"]]}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["requeued"] == 1

    # Requeued through the deliver queue: the delivery leaves dead_letter and gets a new outcome (here expired:
    # validUntil has passed), and the dead letter is no longer listed as waiting.
    db = ledger_view.database(stack)

    def delivery():
        return next((r for r in ledger_view.rows(db, item["message_id"]) if r["_id"] == item["id"]), None)

    final = eventually(
        lambda: (d := delivery()) and d["state"] not in ("dead_letter", "retry", "sending") and d,
        what="requeued delivery's new outcome",
    )
    assert final["state"] == "expired"
    assert not listed()
    assert any(i["id"] == item["id"] and i["requeued_at"] for i in api.get("/admin/dead-letters", app_id=app_id, all="1").json()["items"])


def test_admin_errors_answer_in_powerauth_envelope(stack, api):
    cases = [
        api.session.post(stack.api_url + "/admin/dead-letters/requeue", data="not json", timeout=10),
        api.session.post(stack.api_url + "/admin/dead-letters/requeue", json={"ids": "x"}, timeout=10),
        api.session.post(stack.api_url + "/admin/dead-letters/requeue", json={"ids": ["no-such-id"]}, timeout=10),
        api.get("/admin/dead-letters", limit="lots"),
        api.session.delete(stack.api_url + "/admin/queues", timeout=10),
    ]
    assert [c.status_code for c in cases] == [400, 400, 404, 400, 405]
    for answer in cases:
        body = answer.json()
        assert body["status"] == "ERROR" and body["responseObject"]["code"] and body["responseObject"]["message"]
    assert api.session.post(stack.api_url + "/admin/dead-letters/requeue", json={"all": True}, timeout=60).status_code == 200


def test_json_logs_follow_one_notification_from_api_to_provider_answer(stack, api, new_app):
    """An API and the workers logging JSON: one send is found by its id in each (a SYNCHRONOUS one: the tx lane's group)."""
    app_id = new_app()
    erin = user()
    dead = apns_token("dead")
    register(api, app_id, dead, "ios", erin)
    json_env = {"PUSH_LOG_FORMAT": "json", "PUSH_WORKER_METRICS_PORT": "0"}
    port = free_port()
    stack.start_api(name="api-json", port=port, env=json_env)
    stack.stop_workers()
    try:
        for group in ("core", "deliver", "tx"):
            stack._spawn(f"workers-json-{group}", stack.worker_argv(group), env=json_env)
        answer = requests.post(
            f"http://127.0.0.1:{port}/push/message/send",
            json={"requestObject": {"appId": app_id, "message": {"userId": erin, "body": {"title": "t"}}}},
            timeout=120,
        )
        assert answer.status_code == 200, answer.text
        message_id = answer.json()["responseObject"]["messageId"]
        logs = stack.var_dir / "logs"

        def lines(name: str) -> list[dict]:
            out = []
            for line in (logs / f"{name}.log").read_text(errors="replace").splitlines():
                start = line.find("{")
                if start >= 0:
                    try:
                        out.append(json.loads(line[start:]))
                    except ValueError:
                        pass
            return out

        api_lines = eventually(lambda: [x for x in lines("api-json") if x.get("command_id") == message_id], what="API enqueue line")
        assert api_lines[0]["message"].startswith("enqueued") and api_lines[0]["queue"].endswith("expand.tx")
        expand_lines = eventually(
            lambda: [x for x in lines("workers-json-tx") if x.get("command_id") == message_id and x.get("actor") == "expand_send"],
            what="expand line",
        )
        assert expand_lines[0]["message"] == "processed expand_send"
        outcome = eventually(
            lambda: [x for x in lines("workers-json-tx") if x.get("message_id") == message_id and x.get("outcome")],
            what="delivery outcome line",
        )
        assert outcome[0]["outcome"] == "dead_token" and outcome[0]["reason"] == "Unregistered"
        # The device token is never whole in a log line: the delivery id shows its first characters only.
        assert outcome[0]["delivery_id"] == f"{message_id}:0:{redacted_token(dead)}"
        whole = [path.name for path in logs.glob("*.log") if dead in path.read_text(errors="replace")]
        assert whole == [], f"the whole token is in {whole}"
    finally:
        for name in ("workers-json-core", "workers-json-deliver", "workers-json-tx", "api-json"):
            stack.stop(name)
        stack.start_workers()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_dashboard_renders_real_figures_in_headless_chromium(stack, api, new_app, tmp_path):
    app_id = new_app()
    dave = user()
    register(api, app_id, apns_token(), "ios", dave)
    register(api, app_id, fcm_token(), "android", dave)
    register(api, app_id, hms_token(), "huawei", dave)
    api.ok("/push/message/send", {"appId": app_id, "message": {"userId": dave, "body": {"title": "t"}}})
    fcm_queue = stack.queue_prefix + "deliver.fcm"
    url = stack.api_url + "/admin/dashboard"
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1100", "--virtual-time-budget=7000"]
    screenshot = stack.var_dir / "dashboard.png"
    stack.stop_workers(["deliver"])
    try:
        for _ in range(4):
            send_async(api, app_id, dave, priority="NORMAL")  # bulk: the deliver group's queue
        eventually(lambda: queue(api, fcm_queue)["ready"] >= 4, what="fcm queue depth")
        dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120)
        shot = subprocess.run([*base, f"--screenshot={screenshot}", url], capture_output=True, text=True, timeout=120)
    finally:
        stack.start_workers(["deliver"])
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    status = re.search(r'<span id="status"[^>]*>([^<]*)<', html).group(1)
    assert status.startswith("updated"), status
    assert int(re.search(r'data-updates="(\d+)"', html).group(1)) >= 2  # polled more than once: the charts have points
    # The queue table shows the depth RabbitMQ reports, the outcome table the recorded deliveries.
    fcm_row = re.search(rf'<tr data-queue="{re.escape(fcm_queue)}">(.*?)</tr>', html).group(1)
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", fcm_row)
    assert cells[:3] == ["deliver.fcm", "bulk", "main"] and int(cells[3]) >= 4, cells
    # apns, fcm and hms columns, then the total.
    assert re.search(r'<tr data-outcome="sent"><td>sent</td><td>[1-9]\d*</td><td>[1-9]\d*</td><td>[1-9]\d*</td><td>[1-9]', html)
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.stat().st_size > 10_000
    print(f"dashboard screenshot: {screenshot}")
