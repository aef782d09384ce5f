"""Imported first (as ``sitecustomize``) by the processes tests/integration/test_clock_skew.py runs under libfaketime.

Debian's libfaketime 0.9.10 breaks Python 3.11's ``time.sleep`` when the
monotonic clock is left real (``FAKETIME_DONT_FAKE_MONOTONIC=1``): it rewrites
``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)`` into a negative time and the
kernel answers EINVAL (wolfcw/libfaketime#426). Faking the monotonic clock
instead hangs threading's timed waits (#390). So the monotonic clock stays real,
only the wall clock is skewed, and ``time.sleep`` waits in ``select()``, which
libfaketime passes through.
"""
import select
import time


def _sleep(seconds: float) -> None:
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        select.select([], [], [], left)


time.sleep = _sleep
