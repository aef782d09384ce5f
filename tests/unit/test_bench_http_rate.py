"""Reading h2load's summary: the rate, and a failed run refused."""
from __future__ import annotations

import pytest

from bench.http_rate import parse_h2load

SUMMARY = """starting benchmark...
spawning thread #0: 100 total client(s). Timing-based test with 1s of warm-up time and 10s of main duration for measurements.
Application protocol: http/1.1
Main benchmark duration is over for thread #0. Stopping all clients.

finished in 11.00s, 4321.50 req/s, 1.23MB/s
requests: 43215 total, 43215 started, 43215 done, 43215 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 43215 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 12.30MB (12897330) total, 5.77MB (6050100) headers (space savings 0.00%), 6.01MB (6301100) data
"""

NOT_FOUND = """finished in 62.14ms, 128.73 req/s, 0B/s
requests: 8 total, 8 started, 8 done, 0 succeeded, 8 failed, 0 errored, 0 timeout
status codes: 0 2xx, 0 3xx, 8 4xx, 0 5xx
"""

REFUSED = """finished in 1.00ms, 0.00 req/s, 0B/s
requests: 4 total, 0 started, 0 done, 0 succeeded, 4 failed, 4 errored, 0 timeout
status codes: 0 2xx, 0 3xx, 0 4xx, 0 5xx
"""


def test_the_rate_is_h2loads_requests_per_second():
    assert parse_h2load(SUMMARY) == 4321.5


@pytest.mark.parametrize("output", [NOT_FOUND, REFUSED, "connect failed\n"])
def test_a_run_with_failures_or_without_a_summary_is_refused(output):
    with pytest.raises(RuntimeError, match="h2load"):
        parse_h2load(output)
