"""A small Thrift compact-protocol codec, enough to read and rewrite Parquet footers and page indexes.

pyarrow does not expose page-index offsets nor page-level reads, so the reader parses the footer itself.
Values keep their wire types, so a decoded struct re-encodes to the same bytes.
"""

from __future__ import annotations

import struct
from typing import Any

STOP, TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(13)
_DOUBLE = struct.Struct("<d")


class ThriftError(ValueError):
    """Bytes that are not valid compact Thrift (a corrupt or truncated footer)."""


class Struct(dict):
    """field id -> (wire type, value); lists are (element type, [values]), nested structs are Struct."""

    def get_value(self, field_id: int, default: Any = None) -> Any:
        item = self.get(field_id)
        return default if item is None else item[1]

    def set_value(self, field_id: int, wire_type: int, value: Any) -> None:
        self[field_id] = (wire_type, value)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes | memoryview, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def byte(self) -> int:
        try:
            value = self.data[self.pos]
        except IndexError:
            raise ThriftError("truncated thrift data") from None
        self.pos += 1
        return value

    def varint(self) -> int:
        shift = result = 0
        data = self.data
        pos = self.pos
        try:
            while True:
                b = data[pos]
                pos += 1
                result |= (b & 0x7F) << shift
                if b < 0x80:
                    break
                shift += 7
                if shift > 70:
                    raise ThriftError("varint too long")
        except IndexError:
            raise ThriftError("truncated thrift data") from None
        self.pos = pos
        return result

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def value(self, wire_type: int) -> Any:
        if wire_type in (I16, I32, I64):
            return self.zigzag()
        if wire_type == BINARY:
            size = self.varint()
            end = self.pos + size
            if end > len(self.data):
                raise ThriftError("truncated thrift binary")
            out = bytes(self.data[self.pos : end])
            self.pos = end
            return out
        if wire_type == STRUCT:
            return self.struct()
        if wire_type in (LIST, SET):
            header = self.byte()
            size, elem = header >> 4, header & 0x0F
            if size == 15:
                size = self.varint()
            if elem in (TRUE, FALSE):
                return (TRUE, [self.byte() == TRUE for _ in range(size)])
            return (elem, [self.value(elem) for _ in range(size)])
        if wire_type == BYTE:
            b = self.byte()
            return b - 256 if b > 127 else b
        if wire_type == DOUBLE:
            if self.pos + 8 > len(self.data):
                raise ThriftError("truncated thrift double")
            (out,) = _DOUBLE.unpack_from(self.data, self.pos)
            self.pos += 8
            return out
        if wire_type == MAP:
            size = self.varint()
            if not size:
                return (0, 0, [])
            kinds = self.byte()
            key_type, value_type = kinds >> 4, kinds & 0x0F
            return (
                key_type,
                value_type,
                [(self.value(key_type), self.value(value_type)) for _ in range(size)],
            )
        raise ThriftError(f"unknown thrift compact type {wire_type}")

    def struct(self) -> Struct:
        out = Struct()
        last = 0
        while True:
            header = self.byte()
            wire_type = header & 0x0F
            if wire_type == STOP:
                return out
            delta = header >> 4
            field_id = last + delta if delta else self.zigzag()
            last = field_id
            if wire_type in (TRUE, FALSE):
                out[field_id] = (TRUE, wire_type == TRUE)
            else:
                out[field_id] = (wire_type, self.value(wire_type))


def decode(data: bytes | memoryview, pos: int = 0) -> tuple[Struct, int]:
    """One struct from ``data`` at ``pos``; returns it and the position after it."""
    reader = _Reader(data, pos)
    return reader.struct(), reader.pos


class _Writer:
    __slots__ = ("out",)

    def __init__(self) -> None:
        self.out = bytearray()

    def varint(self, n: int) -> None:
        out = self.out
        while n >= 0x80:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)

    def zigzag(self, n: int) -> None:
        self.varint((n << 1) ^ (n >> 63))

    def value(self, wire_type: int, value: Any) -> None:
        if wire_type in (I16, I32, I64):
            self.zigzag(value)
        elif wire_type == BINARY:
            self.varint(len(value))
            self.out += value
        elif wire_type == STRUCT:
            self.struct(value)
        elif wire_type in (LIST, SET):
            elem, items = value
            if len(items) < 15:
                self.out.append((len(items) << 4) | elem)
            else:
                self.out.append(0xF0 | elem)
                self.varint(len(items))
            if elem in (TRUE, FALSE):
                self.out += bytes(TRUE if item else FALSE for item in items)
            else:
                for item in items:
                    self.value(elem, item)
        elif wire_type == BYTE:
            self.out.append(value & 0xFF)
        elif wire_type == DOUBLE:
            self.out += _DOUBLE.pack(value)
        elif wire_type == MAP:
            key_type, value_type, items = value
            self.varint(len(items))
            if items:
                self.out.append((key_type << 4) | value_type)
                for k, v in items:
                    self.value(key_type, k)
                    self.value(value_type, v)
        else:
            raise ThriftError(f"unknown thrift compact type {wire_type}")

    def struct(self, value: Struct) -> None:
        last = 0
        for field_id in sorted(value):
            wire_type, item = value[field_id]
            nibble = (TRUE if item else FALSE) if wire_type in (TRUE, FALSE) else wire_type
            delta = field_id - last
            if 0 < delta <= 15:
                self.out.append((delta << 4) | nibble)
            else:
                self.out.append(nibble)
                self.zigzag(field_id)
            last = field_id
            if wire_type not in (TRUE, FALSE):
                self.value(wire_type, item)
        self.out.append(STOP)


def encode(value: Struct) -> bytes:
    writer = _Writer()
    writer.struct(value)
    return bytes(writer.out)
