"""A request body read whole in the event loop, bounded in size and time, before the request takes a thread.

granian streams a body to the application as it arrives; a thread that waited
for it would be held by a client sending one byte every few seconds (16 such
clients held every Flask thread of the API). So the RSGI app
(:mod:`api.rsgi`) reads the body here first, and Flask gets the bytes.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable

# How reading a body ended.
#: The whole body is in.
COMPLETE = "complete"
#: One byte past the limit was read; the rest was not.
OVER_LIMIT = "over_limit"
#: The body did not arrive in full within the deadline.
TIMED_OUT = "timed_out"
#: The body ended before its declared length: the client went away or broke off.
CUT_SHORT = "cut_short"
#: The declared length is over the limit: nothing was read.
NOT_READ = "not_read"


def declared_length(value: str | None) -> int | None:
    """A ``Content-Length`` value as a number (None when absent; granian refuses one that is not a number)."""
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


async def read_whole(chunks: AsyncIterable[bytes], *, declared: int | None, limit: int, seconds: float) -> tuple[bytes, str]:
    """Read a body from ``chunks``: at most ``limit`` + 1 bytes, within ``seconds``; the bytes and how it ended."""
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(seconds):
            async for chunk in chunks:
                parts.append(chunk)
                size += len(chunk)
                if size > limit:
                    return b"".join(parts)[: limit + 1], OVER_LIMIT
    except TimeoutError:
        return b"", TIMED_OUT
    except (OSError, RuntimeError):  # granian's protocol closed or errored: the client went away
        return b"", CUT_SHORT
    body = b"".join(parts)
    if declared is not None and size < declared:
        return body, CUT_SHORT
    return body, COMPLETE
