"""The Prometheus alerting rules beside the Grafana dashboard, checked offline: shape, and every metric exists."""
from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from shared import backlog, commands, metrics
from shared import db as mongo
from shared.settings import load

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "docker" / "prometheus" / "alerts.yml"
#: A metric name in an expression: ours and Dramatiq's.
METRIC = re.compile(r"\b(?:push|dramatiq)_[a-z_]+\b")
DURATION = re.compile(r"^\d+[smhd]$")


class Apps:
    """The apps collection the collector reads: one app on an APNs certificate, none suspended."""

    def __init__(self, not_after: str):
        self.not_after = not_after

    def find(self, query, projection=None):
        if "apns.auth" in query:
            return [{"_id": "cert-app", "apns": {"not_after": self.not_after}}]
        return [{"_id": "cert-app", "suspended": {"apns": "403 BadCertificate"}}]


def exported_names(monkeypatch) -> tuple[set[str], str]:
    """Every sample name /metrics shows when each kind of figure is there (queues of both lanes, a certificate)."""
    stats = [metrics.QueueStats(name=q, queue=q, kind="main", lane=commands.lane_of_queue(q), exists=True, ready=1, unacked=0,
                                consumers=1, publish_rate=1.0, deliver_rate=1.0, ack_rate=1.0, oldest_age_seconds=2.0)
             for q in commands.QUEUES]
    monkeypatch.setattr(metrics, "queue_stats", lambda settings, peek=False: (stats, "management"))
    metrics.record_result("apns", "unit", "sent", 1.0)
    metrics.record_dead_letters("apns", "unit", 1)
    rows = [backlog.Backlog("cert-app", lane, "apns", waiting=1, throttled=1, parked=1) for lane in ("tx", "bulk")]
    monkeypatch.setattr(backlog, "cached", lambda db: rows)
    db = {mongo.APPS: Apps((datetime.now(UTC) + timedelta(days=10)).isoformat())}
    body, _ = metrics.exposition(load({}), db)
    return {s.name for f in text_string_to_metric_families(body.decode()) for s in f.samples}, body.decode()


def test_every_alert_has_its_fields_and_uses_exported_metrics(monkeypatch):
    rules = yaml.safe_load(RULES.read_text())
    names, body = exported_names(monkeypatch)
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert {a["alert"] for a in alerts} >= {"PushTransactionalLaneSlow", "PushDeadLettersGrowing", "PushProviderSuspended",
                                             "PushApnsCertificateExpiring", "PushAppThrottled", "PushAppParkedLong"}
    for alert in alerts:
        assert set(alert) <= {"alert", "expr", "for", "labels", "annotations"}, alert
        assert DURATION.match(alert["for"]) and alert["annotations"]["summary"]
        assert alert["expr"].count("(") == alert["expr"].count(")"), alert["expr"]
        used = set(METRIC.findall(alert["expr"]))
        assert used and used <= names, (alert["alert"], used - names)
    assert 'lane="tx"' in body and 'app="cert-app"' in body
    assert "push_app_deliveries_throttled" in names and "push_app_deliveries_parked" in names


def test_every_alert_has_its_paragraph_in_the_ops_readme():
    rules = yaml.safe_load(RULES.read_text())
    readme = (ROOT / "ops" / "README.md").read_text()
    section = readme.split("### Alerts", 1)[1].split("\n## ", 1)[0]
    for alert in (rule["alert"] for group in rules["groups"] for rule in group["rules"]):
        assert f"`{alert}`" in section, alert


def test_prometheus_loads_the_rules():
    config = yaml.safe_load((ROOT / "docker" / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == [RULES.name]
    compose = (ROOT / "docker" / "docker-compose.ops.yml").read_text()
    assert "./docker/prometheus/alerts.yml:/etc/prometheus/alerts.yml" in compose
