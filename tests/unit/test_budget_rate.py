"""The shared budget's rate (shared/budgets.py): lowered on 429, back to just below the rate refused, then probing."""
from __future__ import annotations

from shared import budgets


def test_the_configured_rate_holds_until_a_429():
    assert budgets._rate({"rate": None}, 100.0, now=10.0) == 100.0
    assert budgets._rate({"rate": 100.0, "configured": 100.0, "changed_at": 9.0}, 100.0, now=10.0) == 100.0
    assert budgets._rate({}, None, now=10.0) is None  # no setting, no default, never refused: not rationed


def test_after_a_429_the_rate_climbs_back_to_just_below_where_it_was_refused_then_probes_slowly():
    doc = {"rate": 50.0, "ceiling": 100.0, "configured": 200.0, "lowered_at": 0.0, "changed_at": 0.0}
    rates = []
    for second in range(1, 40):
        rate = budgets._rate(doc, 200.0, now=float(second))
        if rate != doc["rate"]:
            doc.update(rate=rate, changed_at=float(second))
        rates.append(rate)
    assert abs(rates[0] - 55.0) < 1e-9
    assert max(rates[:8]) <= 98.0 and 98.0 in rates  # never above 0.98 x the refused rate while climbing back
    probes = 31 // budgets.PROBE_EVERY_SECONDS + 1
    assert 98.0 < rates[-1] <= 98.0 * budgets.PROBE ** probes + 1e-9  # then a probe of 2 % every 2 s
    assert budgets._rate({**doc, "rate": 190.0, "ceiling": None}, 150.0, now=100.0) == 150.0  # never above the setting


def test_the_configured_budget_per_second():
    assert budgets.configured_per_second({"budgets": {"fcm": 120}}, "fcm") == 2.0
    assert budgets.configured_per_second({}, "fcm") == 10_000.0  # FCM v1: 600,000 per minute per project
    assert budgets.configured_per_second({}, "apns") is None
