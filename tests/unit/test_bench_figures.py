"""The figure lines of make bench: formatting, baseline lines, ratios, n/a."""
from __future__ import annotations

from bench.__main__ import FULL, QUICK, lanes_users, size_label
from bench.figures import comparison_lines, format_value, ratio


def test_values_are_formatted_as_make_bench_prints_them():
    assert format_value(1234.56) == "1234.6"
    assert format_value(0.12345) == "0.123"
    assert format_value(300) == "300"
    assert format_value(None) == "n/a"


def test_without_a_baseline_only_the_figures_are_printed():
    assert comparison_lines({"e2e_per_s": 1000.0, "limit_concurrency": 300}, None) == ["e2e_per_s: 1000.0", "limit_concurrency: 300"]


def test_each_figure_is_followed_by_its_baseline_and_its_ratio():
    lines = comparison_lines({"e2e_per_s": 1500.0, "db_cpu_us_per_notification": 50.0}, {"e2e_per_s": 600.0, "db_cpu_us_per_notification": 800.0})
    assert lines == [
        "e2e_per_s: 1500.0",
        "baseline_e2e_per_s: 600.0",
        "ratio_e2e_per_s_to_baseline: 2.500",
        "db_cpu_us_per_notification: 50.0",
        "baseline_db_cpu_us_per_notification: 800.0",
        "ratio_db_cpu_us_per_notification_to_baseline: 0.062",
    ]


def test_a_figure_the_baseline_cannot_produce_prints_n_a():
    lines = comparison_lines({"db_round_trips_per_notification": 0.01, "server_cpu_us_per_notification": None}, {"server_cpu_us_per_notification": None})
    assert lines == [
        "db_round_trips_per_notification: 0.010",
        "baseline_db_round_trips_per_notification: n/a",
        "ratio_db_round_trips_per_notification_to_baseline: n/a",
        "server_cpu_us_per_notification: n/a",
        "baseline_server_cpu_us_per_notification: n/a",
        "ratio_server_cpu_us_per_notification_to_baseline: n/a",
    ]


def test_figures_only_the_baseline_has_are_not_printed():
    assert comparison_lines({"e2e_per_s": 20.0}, {"e2e_per_s": 10.0, "old_figure": 5.0}) == [
        "e2e_per_s: 20.0", "baseline_e2e_per_s: 10.0", "ratio_e2e_per_s_to_baseline: 2.000",
    ]


def test_a_ratio_needs_two_numbers_and_a_baseline_other_than_zero():
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(0.0, 0.0) is None
    assert ratio(1.0, None) is None
    assert ratio(None, 1.0) is None
    assert ratio("x", 1.0) is None


def test_derived_figures_can_go_without_a_ratio_line():
    assert comparison_lines({"ratio_e2e_to_limit": 0.5}, {"ratio_e2e_to_limit": 0.25}, with_ratios=False) == [
        "ratio_e2e_to_limit: 0.500", "baseline_ratio_e2e_to_limit: 0.250",
    ]


def test_campaign_sizes_are_named_as_the_figures_say():
    assert [size_label(n) for n in (100_000, 1_000_000, 10_000, 50_000, 1234)] == ["100k", "1m", "10k", "50k", "1234"]


def test_the_baseline_runs_the_lanes_campaign_at_the_small_size_only():
    assert lanes_users(FULL, 0) == 1_000_000
    assert lanes_users(FULL, 1) == FULL.campaign_small == 100_000
    assert lanes_users(QUICK, 1) == QUICK.campaign_small
