"""The status routes' live checks (api/services.py HealthChecks): one run per cache period, shared by concurrent callers."""
from __future__ import annotations

import threading
import time

from api.services import HealthChecks


class Counting:
    def __init__(self, answer: bool = True, pause: float = 0.0):
        self.calls = 0
        self.answer = answer
        self.pause = pause

    def __call__(self) -> bool:
        self.calls += 1
        time.sleep(self.pause)
        return self.answer


def test_checks_run_once_per_cache_period_however_often_they_are_asked():
    now = [0.0]
    broker, database = Counting(), Counting(answer=False)
    checks = HealthChecks(broker, database, cache_seconds=2.0, clock=lambda: now[0])
    answers = [checks.answer() for _ in range(100)]
    assert answers == [(True, False)] * 100 and (broker.calls, database.calls) == (1, 1)
    now[0] = 1.9
    checks.answer()
    assert broker.calls == 1
    now[0] = 2.0
    checks.answer()
    assert (broker.calls, database.calls) == (2, 2)


def test_concurrent_callers_wait_for_the_check_in_flight_instead_of_starting_their_own():
    broker, database = Counting(pause=0.2), Counting()
    checks = HealthChecks(broker, database, cache_seconds=60.0)
    threads = [threading.Thread(target=checks.answer) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (broker.calls, database.calls) == (1, 1)
