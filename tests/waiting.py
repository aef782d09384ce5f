"""Waiting for the real stack to reach a state: the one polling helper of the tests."""
from __future__ import annotations

import time


def wait_for(check, *, timeout: float = 60.0, what: str = "condition", every: float = 0.1):
    """Call ``check`` until it answers something truthy (answered); fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout:.0f}s (last: {value!r})")
        time.sleep(every)
