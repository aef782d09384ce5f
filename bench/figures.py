"""The lines ``make bench`` prints: ``name: value``, and beside a baseline ``baseline_<name>`` and the ratio.

A figure the baseline did not produce (counted by code it does not have, or
never measured on it) prints ``baseline_<name>: n/a``, and so does its ratio.
"""
from __future__ import annotations

#: What a figure without a value prints.
NOT_AVAILABLE = "n/a"
#: Prefix of a baseline's figure.
BASELINE_PREFIX = "baseline_"


def format_value(value) -> str:
    """One decimal from 10 up, three below; integers and text as they are; None as ``n/a``."""
    if value is None:
        return NOT_AVAILABLE
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"
    return str(value)


def line(name: str, value) -> str:
    return f"{name}: {format_value(value)}"


def baseline_name(name: str) -> str:
    return BASELINE_PREFIX + name


def ratio_name(name: str) -> str:
    return f"ratio_{name}_to_baseline"


def ratio(current, baseline) -> float | None:
    """``current / baseline``; None when either is missing, not a number, or the baseline is 0."""
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (current, baseline)) or baseline == 0:
        return None
    return current / baseline


def comparison_lines(current: dict, baseline: dict | None, *, with_ratios: bool = True) -> list[str]:
    """Each current figure's line; with a baseline, its ``baseline_`` line and (``with_ratios``) its ratio line after it.

    The figures are the current tree's: a name only the baseline has is not printed.
    """
    lines = []
    for name, value in current.items():
        lines.append(line(name, value))
        if baseline is None:
            continue
        other = baseline.get(name)
        lines.append(line(baseline_name(name), other))
        if with_ratios:
            lines.append(line(ratio_name(name), ratio(value, other)))
    return lines
