"""A MongoDB wire-protocol proxy that answers chosen operations as a stepped-down primary would, or cuts a reply.

nx-27017 is a single server: it never steps down. Between pymongo and it, this
proxy forwards every message whole (a 16-byte header says each one's length)
and reads the command of each ``OP_MSG`` (its body document and document
sequences, decoded with pymongo's ``bson``). A :class:`Rule` picks commands by
a predicate; its action either answers the command itself with a
``NotWritablePrimary`` error (code 10107, what a primary that stepped down
answers, so the driver raises ``NotPrimaryError``), never forwarding it, or
forwards it and sends back only half of the server's reply before closing the
connection (the write landed, its answer is lost: ``AutoReconnect``).
Everything else (the handshake's legacy ``OP_QUERY``, replies with
``moreToCome``) passes through untouched.
"""
from __future__ import annotations

import itertools
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

import bson

#: ``OP_MSG``, the opcode of every command of a modern driver.
OP_MSG = 2013
#: ``OP_MSG`` flag bits: a CRC-32C checksum follows the sections; the peer sends more without waiting.
CHECKSUM_PRESENT = 1
MORE_TO_COME = 2
#: What a primary that stepped down answers a write with (and a secondary a primary read).
NOT_WRITABLE_PRIMARY = {"ok": 0.0, "errmsg": "not primary", "code": 10107, "codeName": "NotWritablePrimary"}
HEADER = struct.Struct("<iiii")

REFUSE = "refuse"
CUT_REPLY = "cut_reply"


@dataclass
class Rule:
    """Which commands to answer otherwise, how, and how many times.

    Parameters:
      match: called with the command (its body document, plus each document sequence under its identifier).
      action: ``refuse`` (answer ``NotWritablePrimary`` without forwarding) or ``cut_reply``.
      times: how many matching commands it takes; then it lets everything through.
    """

    match: Callable[[dict], bool]
    action: str = REFUSE
    times: int = 1
    hits: int = 0

    @property
    def spent(self) -> bool:
        return self.hits >= self.times


def command_of(body: bytes) -> dict | None:
    """The command an ``OP_MSG`` body carries (after the header), or None when it is not decodable."""
    flags = struct.unpack_from("<I", body)[0]
    end = len(body) - (4 if flags & CHECKSUM_PRESENT else 0)
    position = 4
    command: dict = {}
    sequences: dict = {}
    try:
        while position < end:
            kind = body[position]
            position += 1
            if kind == 0:
                size = struct.unpack_from("<i", body, position)[0]
                command = bson.decode(body[position : position + size])
                position += size
            else:
                size = struct.unpack_from("<i", body, position)[0]
                section = body[position + 4 : position + size]
                identifier, _, documents = section.partition(b"\x00")
                sequences[identifier.decode()] = bson.decode_all(documents)
                position += size
    except (bson.errors.BSONError, struct.error, IndexError):
        return None
    return {**command, **sequences}


def error_reply(request_id: int, response_id: int, document: dict) -> bytes:
    payload = struct.pack("<I", 0) + b"\x00" + bson.encode(document)
    return HEADER.pack(HEADER.size + len(payload), response_id, request_id, OP_MSG) + payload


class MongoWireProxy:
    """Forwards 127.0.0.1:<port> to ``target`` message by message, applying the rules given to :meth:`add`.

    Parameters:
      target: (host, port) of the MongoDB server.
    """

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.rules: list[Rule] = []
        self.lock = threading.Lock()
        self.listener: socket.socket | None = None
        self.port = 0
        self.connections: list[socket.socket] = []
        self._ids = itertools.count(1_000_000)

    def start(self) -> int:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self.port

    def stop(self) -> None:
        listener, self.listener = self.listener, None
        if listener:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self.lock:
            for connection in self.connections:
                _close(connection)
            self.connections.clear()

    def add(self, rule: Rule) -> Rule:
        with self.lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()

    def _rule_for(self, command: dict) -> Rule | None:
        with self.lock:
            for rule in self.rules:
                if not rule.spent and rule.match(command):
                    rule.hits += 1
                    return rule
        return None

    def _accept(self) -> None:
        while self.listener is not None:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.connections += [client, upstream]
            threading.Thread(target=self._serve, args=(client, upstream), daemon=True).start()

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        """One client connection: a request, then the server's replies to it (pymongo does not pipeline)."""
        try:
            while True:
                header, body = _read_message(client)
                _, request_id, _, opcode = HEADER.unpack(header)
                flags = struct.unpack_from("<I", body)[0] if opcode == OP_MSG else 0
                rule = self._rule_for(command) if opcode == OP_MSG and (command := command_of(body)) else None
                if rule is not None and rule.action == REFUSE:
                    client.sendall(error_reply(request_id, next(self._ids), NOT_WRITABLE_PRIMARY))
                    continue
                upstream.sendall(header + body)
                if flags & MORE_TO_COME:
                    continue  # an unacknowledged write: no reply comes
                while True:
                    reply_header, reply_body = _read_message(upstream)
                    if rule is not None:  # cut_reply: half the answer, then the line goes dead
                        reply = reply_header + reply_body
                        client.sendall(reply[: len(reply) // 2])
                        raise ConnectionAbortedError
                    client.sendall(reply_header + reply_body)
                    more = HEADER.unpack(reply_header)[3] == OP_MSG and struct.unpack_from("<I", reply_body)[0] & MORE_TO_COME
                    if not more:
                        break
        except (OSError, ConnectionError):
            pass
        finally:
            _close(client)
            _close(upstream)


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionResetError("peer closed")
        data += chunk
    return bytes(data)


def _read_message(sock: socket.socket) -> tuple[bytes, bytes]:
    header = _read_exactly(sock, HEADER.size)
    length = HEADER.unpack(header)[0]
    return header, _read_exactly(sock, length - HEADER.size)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
