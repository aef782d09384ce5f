"""The capacity model: per-process figures, what a rate needs, the hourly table, the refresh from make bench."""
from __future__ import annotations

import json

import pytest

from ops import capacity

FIGURES = {
    "measured": "a test",
    "bench": {"limit_per_s": 6000, "e2e_per_s": 2000, "ingest_per_s": 100_000, "cpu_us_per_notification": 300,
              "db_cpu_us_per_notification": 250},
    "bench_processes": {"limit": 2, "ingest_api": 2, "e2e_core": 2, "e2e_deliver": 2},
    "pipeline": {"delivery_documents_written": 3, "message_documents_written": 2},
    "providers": {"apns": {"max_concurrent_streams": 1000}, "fcm": {"max_concurrent_streams": 100}},
}


def test_per_process_figures_divide_each_measured_rate_by_the_processes_that_made_it():
    one = capacity.PerProcess.from_figures(FIGURES)
    assert (one.api, one.deliver, one.core) == (50_000, 3000, 1000)


def test_streams_in_flight_are_rate_times_round_trip_and_connections_follow_from_each_providers_stream_limit():
    p = capacity.plan(27_800, FIGURES, rtt_s=0.2, apns_share=0.5)
    assert p.apns_streams + p.fcm_streams == 5_560  # the 27,800/s at 200 ms: about 5,600 streams
    assert p.apns_connections == 3 and p.fcm_connections == 28  # 2,780 streams over 1,000 and 100 per connection
    # 27,800/s at 70 % of 3,000/s per process: 7 processes per provider, 398 streams each.
    assert p.apns_processes == p.fcm_processes == 7
    assert p.apns_connections_per_process == 1 and p.fcm_connections_per_process == 4


def test_processes_are_rounded_up_at_the_utilisation_asked():
    assert capacity.plan(35_000, FIGURES, utilisation=0.7).api_processes == 1
    assert capacity.plan(35_001, FIGURES, utilisation=0.7).api_processes == 2
    assert capacity.plan(3000, FIGURES, utilisation=1.0, apns_share=1.0).apns_processes == 1
    assert capacity.plan(3001, FIGURES, utilisation=1.0, apns_share=1.0).apns_processes == 2
    idle = capacity.plan(0, FIGURES)
    assert (idle.api_processes, idle.apns_processes, idle.apns_streams) == (0, 0, 0)


def test_messages_and_writes_per_notification_follow_batches_and_chunks():
    p = capacity.plan(1000, FIGURES, batch=1000, chunk=500, apns_share=0.5)
    assert p.rabbitmq_messages_per_notification == pytest.approx(3 / 1000)  # 1 expand + 1 chunk per provider
    assert p.mongo_documents_per_notification == pytest.approx(3 + 2 / 1000)  # delivery insert, claim, outcome
    assert p.rabbitmq_messages_per_s == pytest.approx(3)
    assert capacity.plan(1000, FIGURES, batch=10_000, chunk=500, apns_share=1.0).rabbitmq_messages_per_notification == (
        pytest.approx(21 / 10_000))
    # A chunk in flight for one 200 ms round trip: insert, claim and 10 outcome writes.
    assert capacity.plan(500, FIGURES, chunk=500, rtt_s=0.2).mongo_write_commands_per_s == pytest.approx(12)


def test_impossible_assumptions_are_refused():
    for options in ({"utilisation": 0}, {"utilisation": 1.5}, {"apns_share": 2}, {"batch": 0}, {"rtt_s": -1}):
        with pytest.raises(ValueError):
            capacity.plan(1000, FIGURES, **options)


def test_the_table_has_a_row_per_hourly_volume():
    table = capacity.hourly_table([capacity.plan(v / 3600, FIGURES) for v in capacity.HOURLY_VOLUMES])
    lines = table.splitlines()
    assert len(lines) == 2 + len(capacity.HOURLY_VOLUMES)
    assert lines[2].startswith("| 1,000,000 | 278 |") and lines[4].startswith("| 100,000,000 | 27,778 |")


def test_refresh_takes_the_figures_a_bench_output_names_and_nothing_else():
    output = "limit_per_s: 7000.5\nlimit_concurrency: 300\ne2e_per_s: 2500\nsomething else\nbench_seconds: 1200\n"
    figures, names = capacity.refresh(FIGURES, output)
    assert names == ["e2e_per_s", "limit_per_s"]
    assert figures["bench"]["limit_per_s"] == 7000.5 and figures["bench"]["ingest_per_s"] == 100_000
    assert "limit_concurrency" not in figures["bench"]
    assert "make bench" in figures["measured"]
    with pytest.raises(ValueError, match="no line"):
        capacity.refresh(FIGURES, "nothing: here\n")


def test_command_line_prints_the_plan_and_refreshes_the_file(tmp_path, capsys):
    path = tmp_path / "figures.json"
    path.write_text(json.dumps(FIGURES))
    assert capacity.main(["--rate", "27800", "--figures", str(path)]) == 0
    out = capsys.readouterr().out
    assert "5,560 (APNs 2,780, FCM 2,780)" in out and "| 10,000,000 |" in out
    assert "set it to 4" in out  # FCM needs more connections per pool than PUSH_PROVIDER_CONNECTIONS' default
    bench = tmp_path / "bench.txt"
    bench.write_text("ingest_per_s: 120000\n")
    assert capacity.main(["--figures", str(path), "--refresh", str(bench)]) == 0
    assert json.loads(path.read_text())["bench"]["ingest_per_s"] == 120000
    assert capacity.main(["--figures", str(path), "--rate", "10", "--utilisation", "0"]) == 2


def test_the_committed_figures_file_loads():
    figures = json.loads(capacity.FIGURES_FILE.read_text())
    assert capacity.plan(1000, figures).api_processes >= 1
