"""HPACK (RFC 7541) for the simulators' HTTP/2 connections, cheaper per request than ``hpack``'s own coder.

Profiled under h2load, ``hpack``'s decoder spent most of the simulator's time
Huffman-decoding the same strings again on every request: clients send
``authorization`` never-indexed (h2 and nghttp2 both do), so a provider token
of ~200 characters arrives as a Huffman literal each time. :class:`CachingDecoder`
keeps the decoded form of recent Huffman strings; :class:`LiteralEncoder`
answers with literals that never touch the dynamic table (so every field is a
pure function of its name and value), not Huffman-coded, the name taken from
the static table where it has one. Both plug into ``h2.connection.H2Connection``
as its ``decoder`` / ``encoder`` (the attributes and methods h2 uses).
"""
from __future__ import annotations

from functools import lru_cache

from hpack import HPACKDecodingError, InvalidTableSizeError, OversizedHeaderListError
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable, table_entry_size

#: Decoded Huffman strings kept (repeated header values: provider tokens, topics, user agents).
HUFFMAN_CACHE_SIZE = 4096
#: Largest header list accepted by default (h2 sets its own on the decoder).
DEFAULT_MAX_HEADER_LIST_SIZE = 1 << 16
#: Dynamic table size both sides start with (RFC 7541 §4.2, SETTINGS_HEADER_TABLE_SIZE's default).
DEFAULT_TABLE_SIZE = 4096
#: Bits an integer's continuation bytes add (RFC 7541 §5.1) before it is refused as too large.
MAX_INTEGER_SHIFT = 28


@lru_cache(maxsize=HUFFMAN_CACHE_SIZE)
def _huffman(encoded: bytes) -> bytes:
    return decode_huffman(encoded)


def _integer(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    """The integer with a ``prefix_bits`` prefix at ``pos``, and the position after it (RFC 7541 §5.1)."""
    mask = (1 << prefix_bits) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise HPACKDecodingError("Truncated integer")
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > MAX_INTEGER_SHIFT:
            raise HPACKDecodingError("Integer too large")


def _string(data: bytes, pos: int) -> tuple[bytes, int]:
    """The string literal at ``pos`` (Huffman-decoded when flagged), and the position after it."""
    huffman = data[pos] & 0x80
    length, pos = _integer(data, pos, 7)
    end = pos + length
    if end > len(data):
        raise HPACKDecodingError("Truncated header block")
    value = data[pos:end]
    return (_huffman(value) if huffman else value), end


class CachingDecoder:
    """An HPACK decoder with the interface h2 uses: ``decode(block, raw=True)`` → ``[(name, value)]`` in bytes.

    Attributes h2 sets: ``max_header_list_size`` (from our SETTINGS_MAX_HEADER_LIST_SIZE)
    and ``max_allowed_table_size`` (from our SETTINGS_HEADER_TABLE_SIZE).
    """

    def __init__(self):
        self.header_table = HeaderTable()
        self.max_header_list_size = DEFAULT_MAX_HEADER_LIST_SIZE
        self.max_allowed_table_size = self.header_table.maxsize

    @property
    def header_table_size(self) -> int:
        return self.header_table.maxsize

    def decode(self, data: bytes, raw: bool = False) -> list[tuple]:
        data = bytes(data)
        headers: list[tuple] = []
        size = 0
        pos = 0
        end = len(data)
        table = self.header_table
        while pos < end:
            first = data[pos]
            if first & 0x80:  # indexed field
                index, pos = _integer(data, pos, 7)
                if index == 0:
                    raise HPACKDecodingError("Index 0 in a header block")
                name, value = table.get_by_index(index)
            elif first & 0x20 and not first & 0x40:  # dynamic table size update
                if headers:
                    raise HPACKDecodingError("Table size update not at the start of the block")
                new_size, pos = _integer(data, pos, 5)
                if new_size > self.max_allowed_table_size:
                    raise InvalidTableSizeError("Encoder exceeded max allowable table size")
                table.maxsize = new_size
                continue
            else:
                indexing = first & 0x40
                index, pos = _integer(data, pos, 6 if indexing else 4)
                if index:
                    name = table.get_by_index(index)[0]
                else:
                    name, pos = _string(data, pos)
                value, pos = _string(data, pos)
                if indexing:
                    table.add(name, value)
            headers.append((name, value))
            size += table_entry_size(name, value)
            if size > self.max_header_list_size:
                raise OversizedHeaderListError(f"A header list larger than {self.max_header_list_size} has been received")
        if table.maxsize > self.max_allowed_table_size:
            raise InvalidTableSizeError("Encoder did not shrink table size to within the max")
        return headers if raw else _as_text(headers)


def _as_text(headers: list[tuple]) -> list[tuple]:
    try:
        return [(name.decode("utf-8"), value.decode("utf-8")) for name, value in headers]
    except UnicodeDecodeError as error:
        raise HPACKDecodingError("Unable to decode headers as UTF-8") from error


def _static_names() -> dict[bytes, int]:
    names: dict[bytes, int] = {}
    for index, (name, _value) in enumerate(HeaderTable.STATIC_TABLE, start=1):
        names.setdefault(name, index)
    return names


#: Static-table index of each header name it holds (its first entry).
STATIC_NAME_INDEX = _static_names()
#: Static-table index of each (name, value) it holds whole, e.g. ``:status: 200``.
STATIC_FIELD_INDEX = {field: index for index, field in reversed(list(enumerate(HeaderTable.STATIC_TABLE, start=1)))}


def _encode_integer(value: int, prefix_bits: int, flags: int) -> bytes:
    mask = (1 << prefix_bits) - 1
    if value < mask:
        return bytes((flags | value,))
    out = bytearray((flags | mask,))
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@lru_cache(maxsize=1024)
def _name_prefix(name: bytes) -> bytes:
    """The start of a literal field without indexing: the name's static index, or the name itself."""
    index = STATIC_NAME_INDEX.get(name)
    if index is not None:
        return _encode_integer(index, 4, 0x00)
    return b"\x00" + _encode_integer(len(name), 7, 0x00) + name


def _to_bytes(value) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


class LiteralEncoder:
    """An HPACK encoder that never adds to the dynamic table, with the interface h2 uses.

    ``encode(headers)`` → the block; ``header_table_size`` is set by h2 from the
    peer's SETTINGS_HEADER_TABLE_SIZE: a change is signalled at the start of the
    next block (RFC 7541 §4.2), though the table stays empty.
    """

    def __init__(self):
        self._table_size = DEFAULT_TABLE_SIZE
        self._size_updates: list[int] = []

    @property
    def header_table_size(self) -> int:
        return self._table_size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        if value != self._table_size:
            self._table_size = value
            self._size_updates.append(value)

    def encode(self, headers, huffman: bool = True) -> bytes:
        parts = []
        if self._size_updates:
            parts += [_encode_integer(size, 5, 0x20) for size in self._size_updates]
            self._size_updates = []
        for header in headers:
            name, value = _to_bytes(header[0]), _to_bytes(header[1])
            index = STATIC_FIELD_INDEX.get((name, value))
            if index is not None:
                parts.append(_encode_integer(index, 7, 0x80))
            else:
                parts.append(_name_prefix(name) + _encode_integer(len(value), 7, 0x00) + value)
        return b"".join(parts)
