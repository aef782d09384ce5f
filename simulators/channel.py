"""Messages between a simulator's processes: length-prefixed JSON over a Unix socket, requests and replies.

Either end sends notifications (``send``) and requests (``await request``,
answered by the other end's handler); everything sent in one loop turn goes
out in one write. The processes of one simulator run on one machine, so the
socket is a Unix socket in a private directory.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import struct
from collections.abc import Awaitable, Callable

import orjson

log = logging.getLogger(__name__)

#: Bytes of the length prefix of each message (big-endian unsigned).
LENGTH = struct.Struct(">I")
#: Largest message read; a larger one means the stream is corrupt.
MAX_MESSAGE_BYTES = 1 << 30

#: A handler answers a request's reply (or an awaitable of it); for a notification its answer is ignored.
Handler = Callable[[dict], object]


class ChannelClosed(ConnectionError):
    """The process at the other end went away."""


class Channel:
    """One end of a connection between two processes of a simulator.

    Parameters:
      reader, writer: the connected stream.
      handler: called with each message the other end sends; a request's reply is its answer.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler):
        self.reader, self.writer, self.handler = reader, writer, handler
        self.pending: dict[int, asyncio.Future] = {}
        self.ids = itertools.count(1)
        self.outgoing: list[bytes] = []
        self.closed = asyncio.get_running_loop().create_future()

    def send(self, message: dict) -> None:
        """Send a notification (no reply)."""
        self._queue(message)

    async def request(self, message: dict):
        """Send a request; answer the other end's reply."""
        if self.closed.done():
            raise ChannelClosed("the other process is gone")
        request_id = next(self.ids)
        future = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        self._queue({**message, "id": request_id})
        return await future

    def _queue(self, message: dict) -> None:
        data = orjson.dumps(message)
        if not self.outgoing:
            asyncio.get_running_loop().call_soon(self._write)
        self.outgoing.append(LENGTH.pack(len(data)) + data)

    def _write(self) -> None:
        if self.outgoing and not self.writer.is_closing():
            self.writer.write(b"".join(self.outgoing))
        self.outgoing = []

    async def serve(self) -> None:
        """Read and dispatch messages until the other end closes."""
        try:
            while True:
                head = await self.reader.readexactly(LENGTH.size)
                (length,) = LENGTH.unpack(head)
                if length > MAX_MESSAGE_BYTES:
                    raise ChannelClosed(f"message of {length} bytes")
                self._dispatch(orjson.loads(await self.reader.readexactly(length)))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(ChannelClosed("the other process is gone"))
            if not self.closed.done():
                self.closed.set_result(None)
            self.writer.close()

    def _dispatch(self, message: dict) -> None:
        if "re" in message:
            future = self.pending.pop(message["re"], None)
            if future is not None and not future.done():
                future.set_result(message.get("body"))
            return
        request_id = message.get("id")
        try:
            answer = self.handler(message)
        except Exception:  # noqa: BLE001 - a bad message must not end the channel
            log.exception("message %r failed", message.get("op"))
            answer = {"error": "failed"}
        if request_id is None:
            if isinstance(answer, Awaitable):
                asyncio.ensure_future(answer)
            return
        if isinstance(answer, Awaitable):
            asyncio.ensure_future(self._reply_later(request_id, answer))
        else:
            self._queue({"re": request_id, "body": answer})

    async def _reply_later(self, request_id: int, answer: Awaitable) -> None:
        self._queue({"re": request_id, "body": await answer})
