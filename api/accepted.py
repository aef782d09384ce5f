"""Writes RabbitMQ confirmed but not seen applied: answered 202 (Accepted) with the write's id, never as failed.

A write is durable once RabbitMQ confirmed it (README "Guarantees and how they are kept"). The API then
waits, bounded, for a worker to apply it (read-your-writes); when that wait
ends without seeing it applied (a slow worker, MongoDB unreachable) the write
will still be applied, so the answer is the route's own success answer with
status 202 and the write's command id in ``X-Command-Id``. A client that
retries after a 202 repeats a write that is already queued: retry only on 5xx
(which now always means nothing was queued), or send an ``Idempotency-Key``
where the route takes one.
"""
from __future__ import annotations

from flask import Response, g, has_request_context

#: Answer header naming the writes of a request that were accepted but not seen applied.
COMMAND_ID_HEADER = "X-Command-Id"


def note(command_id: str) -> None:
    """Record that this request's write ``command_id`` was confirmed but not seen applied (``Services.on_unapplied``)."""
    if has_request_context():
        g.setdefault("unapplied_writes", []).append(command_id)


def after_request(response: Response) -> Response:
    """A success answer of a request with an unapplied write becomes a 202 naming it."""
    unapplied = g.get("unapplied_writes")
    if unapplied and 200 <= response.status_code < 300:
        if response.status_code == 200:
            response.status_code = 202
        response.headers[COMMAND_ID_HEADER] = ",".join(unapplied)
    return response
