"""Database round trips and documents written, counted by the code that issues them (the delivery hot path).

Each worker process keeps its own totals; ``snapshot()`` answers them. The bench
reads them from every worker through the metrics endpoint's gauges
(``push_db_round_trips_total``, ``push_db_documents_written_total``) to print
``db_round_trips_per_notification`` and ``db_documents_written_per_notification``.
"""
from __future__ import annotations

import threading

_lock = threading.Lock()
_totals = {"trips": 0, "written": 0}


#: The Prometheus names the totals are exported under (worker processes, through their group's /metrics).
ROUND_TRIPS = "push_db_round_trips"
DOCUMENTS_WRITTEN = "push_db_documents_written"


def count(*, trips: int = 1, written: int = 0) -> None:
    """One call is ``trips`` round trips (1 unless told) writing ``written`` documents."""
    with _lock:
        _totals["trips"] += trips
        _totals["written"] += written
    _export(trips, written)


def _export(trips: int, written: int) -> None:
    from shared import metrics

    if metrics.multiprocess_dir() is None:
        return  # not a worker process of a group with metrics (tests, tools)
    try:
        metrics._counter(ROUND_TRIPS, "Database round trips of the delivery pipeline, counted where they are issued.", ()).inc(trips)
        if written:
            metrics._counter(DOCUMENTS_WRITTEN, "Documents the delivery pipeline wrote (inserted or updated).", ()).inc(written)
    except Exception:  # noqa: BLE001 - metrics never break the work they count
        pass


def snapshot() -> dict[str, int]:
    with _lock:
        return dict(_totals)


def reset() -> None:
    with _lock:
        _totals.update(trips=0, written=0)
