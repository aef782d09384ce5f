"""Behaviour chosen by the device token: a test says what it expects by the tokens it registers.

Each simulator lists its prefixes (``dead…``, ``f503N…``, ``unavailableN-…``);
a number after a prefix says for how many attempts (or seconds) it holds.
Attempts are counted for all the simulator's processes together, so "the
first N attempts" means the token's first N anywhere (simulators/ledger.py).
"""
from __future__ import annotations

import re

#: A run of digits at the start of a string.
_DIGITS = re.compile(r"\d+")


def number_after(token: str, prefix: str, *, digits: int | None = None) -> int | None:
    """The number right after ``prefix`` at the start of ``token``, or None.

    ``digits`` fixes how many digits it has (APNs tokens are hex, so "f5032" + "58…"
    must read 2, not 258); without it the number ends at the first non-digit ("delay5-" → 5).
    """
    if not token.startswith(prefix):
        return None
    rest = token[len(prefix):]
    if digits:
        number = rest[:digits]
        return int(number) if len(number) == digits and number.isascii() and number.isdigit() else None
    match = _DIGITS.match(rest)
    return int(match.group()) if match else None
