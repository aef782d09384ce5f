"""Operations figures without a broker: queue names, the table, metrics recording, a scrape with RabbitMQ down."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from ops.queues import table
from shared import commands, metrics
from shared.logs import redacted_delivery_id, redacted_token
from shared.settings import load


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_expected_queues_carry_prefix_and_dramatiq_suffixes():
    names = {(q.name, q.kind) for q in metrics.expected_queues(load({}, queue_prefix="p1."))}
    assert ("p1.deliver.fcm", "main") in names
    assert ("p1.deliver.fcm.DQ", "delay") in names
    assert ("p1.deliver.fcm.XQ", "dead") in names
    assert ("p1.persist", "main") in names


def test_management_endpoint_and_vhost():
    base, auth = metrics.management_endpoint("http://ops:s%40cret@rabbit:15672/")
    assert base == "http://rabbit:15672"
    assert auth == ("ops", "s@cret")
    assert metrics.vhost_of("amqp://guest:guest@127.0.0.1:5672/%2F") == "/"
    assert metrics.vhost_of("amqp://u:p@host/push") == "push"
    assert metrics.vhost_of("amqp://u:p@host") == "/"


def test_table_lists_declared_queues():
    rows = [
        metrics.QueueStats("x.deliver.fcm", "deliver.fcm", "main", exists=True, ready=12, unacked=3, consumers=2, publish_rate=4.5).as_json(),
        metrics.QueueStats("x.deliver.fcm.DQ", "deliver.fcm", "delay").as_json(),
    ]
    text = table(rows)
    assert "x.deliver.fcm" in text and "12" in text and "4.5" in text
    assert "x.deliver.fcm.DQ" not in text
    assert "x.deliver.fcm.DQ" in table(rows, show_missing=True)
    assert "no queues" in table([])


def test_record_result_moves_counters():
    before = sample("push_deliveries_total", provider="fcm", app="unit", outcome="dead_token")
    dead_before = sample("push_dead_tokens_total", provider="fcm", app="unit")
    latency_before = sample("push_delivery_latency_seconds_count", provider="fcm")
    metrics.record_result("fcm", "unit", "dead_token", 1.0)
    metrics.record_result("fcm", "unit", "retry")
    metrics.record_dead_letters("fcm", "unit", 2)
    assert sample("push_deliveries_total", provider="fcm", app="unit", outcome="dead_token") == before + 1
    assert sample("push_dead_tokens_total", provider="fcm", app="unit") == dead_before + 1
    assert sample("push_delivery_latency_seconds_count", provider="fcm") == latency_before + 1
    assert sample("push_delivery_retries_total", provider="fcm", app="unit") >= 1
    assert sample("push_dead_letters_total", provider="fcm", app="unit") >= 2


def test_recording_never_raises():
    metrics.record_result("fcm", None, "sent", "not a time")  # bad input: swallowed
    metrics.record_request("/r", "GET", 200, 0.01)


def test_scrape_with_broker_down_answers_up_zero():
    settings = load({}, rabbitmq_management_url="http://127.0.0.1:1", amqp_url="amqp://guest:guest@127.0.0.1:1/%2F")
    body, content_type = metrics.exposition(settings)
    assert content_type.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["push_queue_stats_up"].samples[0].value == 0


def test_json_log_lines_carry_the_pipeline_ids():
    import logging

    from shared.logs import JsonFormatter, ids_of

    record = logging.LogRecord("push.delivery", logging.INFO, __file__, 1, "delivery %s: %s", ("m1:0:tok", "sent"), None)
    record.message_id = "m1"
    record.delivery_id = "m1:0:tok"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["message"] == "delivery m1:0:tok: sent" and data["message_id"] == "m1" and data["level"] == "INFO"
    assert ids_of(({"id": "c1", "kind": "send", "message_id": "m1", "deliveries": [1, 2]},)) == {
        "command_id": "c1", "message_id": "m1", "kind": "send", "deliveries": 2
    }


# --- deployment files: Kubernetes manifests, KEDA, Prometheus, Grafana ------------------------------

DOCKER = Path(__file__).resolve().parents[2] / "docker"
#: Kubernetes version the manifests are validated against (schemas shipped by kubernetes-validate, offline).
KUBERNETES_VERSION = "1.30.0"


def manifests() -> list[dict]:
    docs = []
    for path in sorted((DOCKER / "k8s").glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def test_kubernetes_manifests_validate_offline():
    import jsonschema
    import kubernetes_validate

    keda_schema = json.loads((DOCKER / "k8s" / "keda-schema.json").read_text())
    kinds = []
    for doc in manifests():
        kinds.append(doc["kind"])
        if doc["apiVersion"].startswith("keda.sh/"):
            jsonschema.validate(doc, keda_schema)
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    assert {"ConfigMap", "Deployment", "Service", "ScaledObject", "TriggerAuthentication"} <= set(kinds)


def test_a_broken_manifest_is_refused():
    import jsonschema
    import kubernetes_validate

    deployment = next(d for d in manifests() if d["kind"] == "Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    scaled = next(d for d in manifests() if d["kind"] == "ScaledObject")
    trigger = {**scaled["spec"]["triggers"][0], "metadata": {"queueName": "x", "mode": "QueueDepth", "value": "5"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**scaled, "spec": {**scaled["spec"], "triggers": [trigger]}}, json.loads((DOCKER / "k8s" / "keda-schema.json").read_text()))


def test_every_queue_has_a_worker_deployment_scaled_on_it():
    docs = manifests()
    consumed = {}
    for d in docs:
        if d["kind"] == "Deployment" and "dramatiq" in d["spec"]["template"]["spec"]["containers"][0]["command"]:
            command = d["spec"]["template"]["spec"]["containers"][0]["command"]
            for queue in command[command.index("--queues") + 1 :]:
                consumed[queue] = d["metadata"]["name"]
    assert set(consumed) == set(commands.QUEUES)
    scaled = {}
    for d in docs:
        if d["kind"] == "ScaledObject":
            for trigger in d["spec"]["triggers"]:
                scaled[trigger["metadata"]["queueName"]] = d["spec"]["scaleTargetRef"]["name"]
    assert scaled == consumed
    assert consumed["deliver.fcm"] == "push-workers-fcm"  # FCM delivery scales on its own


def test_prometheus_and_grafana_use_the_metrics_the_code_exports():
    config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    assert {job["job_name"] for job in config["scrape_configs"]} == {"push-api", "push-workers"}
    # Every metric the code exports (ours: from a scrape; Dramatiq's: its middleware's names).
    metrics.record_result("apns", "unit", "sent", 1.0)
    metrics.record_dead_letters("apns", "unit", 1)
    metrics.record_request("/r", "GET", 200, 0.01)
    metrics._observe_enqueue("q", 0.001)
    body, _ = metrics.exposition(load({}, rabbitmq_management_url="http://127.0.0.1:1", amqp_url="amqp://g:g@127.0.0.1:1/%2F"))
    exported = {s.name for f in text_string_to_metric_families(body.decode()) for s in f.samples}
    exported |= {
        "push_queue_messages_ready", "push_queue_messages_unacked", "push_queue_consumers", "push_queue_publish_rate",
        "push_queue_deliver_rate", "push_queue_oldest_message_age_seconds", "push_suspended_providers",
        "dramatiq_messages_total", "dramatiq_message_errors_total", "dramatiq_messages_inprogress",
        "dramatiq_message_duration_milliseconds_bucket",
    }
    dashboard = json.loads((DOCKER / "grafana" / "push-dashboard.json").read_text())
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"\b((?:push|dramatiq)_[a-z_]+)\b", target["expr"]))
    assert used and used <= exported, used - exported


def test_log_lines_show_a_device_token_by_its_first_characters_only():
    token = "4f1e2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7"
    assert redacted_token(token) == "4f1e2a…(64)"
    assert redacted_delivery_id(f"m1:0:{token}") == "m1:0:4f1e2a…(64)"
    assert redacted_delivery_id("wcp\x00t\x00c:0:tok:with:colons") == "wcp\x00t\x00c:0:tok:wi…(15)"
    assert token not in redacted_delivery_id(token)
