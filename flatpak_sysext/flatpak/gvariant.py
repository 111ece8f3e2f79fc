# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""A bounded reader and writer of the GVariant serialisation format (GVariant
specification 1.0, §2-3), for the few OSTree objects the store verifies.

Pure Python on purpose: Debian's flatpak pulls in neither libostree's typelib nor
``python3-gi``, and the test venvs could not load them anyway. The reader is strict: a
framing offset out of range, a string without its NUL, a fixed-size value of the wrong
size or a type nested deeper than :data:`MAX_DEPTH` raise :class:`GVariantError`, never
another exception. Work is linear in the size of the data, which the caller bounds.

Integers are read and written in the byte order the caller names: OSTree stores its
integers big-endian ("canonical") whatever the host's order, while framing offsets are
always little-endian.
"""

from __future__ import annotations

import dataclasses
import functools
import struct
from typing import Literal

MAX_DEPTH = 32
"""Containers nested deeper than this are refused (OSTree's deepest type has 3 levels)."""
MAX_TYPE = 255
"""Longer type strings (in a ``v``'s data) are refused: OSTree's are a few characters,
and the parsed types are cached."""

ByteOrder = Literal["little", "big"]

_BASIC_SIZES = {"y": 1, "b": 1, "n": 2, "q": 2, "i": 4, "u": 4, "h": 4, "x": 8, "t": 8, "d": 8}
_SIGNED = frozenset("nix")
_STRINGS = frozenset("sog")


class GVariantError(ValueError):
    """The bytes are not a normal-form value of the type, or pass a bound."""


@dataclasses.dataclass(frozen=True)
class Variant:
    """A ``v`` value, left undecoded: its type string and its bytes (see :func:`decode`)."""

    type: str
    data: bytes


def _end_of_type(sig: str, i: int, depth: int) -> int:
    """Where the complete type starting at ``sig[i]`` ends."""
    if depth > MAX_DEPTH:
        raise GVariantError(f"type nested deeper than {MAX_DEPTH}")
    if i >= len(sig):
        raise GVariantError(f"incomplete type string {sig!r}")
    c = sig[i]
    if c in _BASIC_SIZES or c in _STRINGS or c == "v":
        return i + 1
    if c in "am":
        return _end_of_type(sig, i + 1, depth + 1)
    if c in "({":
        close = ")" if c == "(" else "}"
        j = i + 1
        members = 0
        while j < len(sig) and sig[j] != close:
            j = _end_of_type(sig, j, depth + 1)
            members += 1
        if j >= len(sig) or (c == "{" and members != 2):
            raise GVariantError(f"malformed container type in {sig!r}")
        return j + 1
    raise GVariantError(f"unknown type character {c!r} in {sig!r}")


@functools.lru_cache(maxsize=256)
def members(sig: str) -> tuple[str, ...]:
    """The member types of the tuple or dict entry type ``sig``."""
    out = []
    j = 1
    while j < len(sig) - 1:
        end = _end_of_type(sig, j, 1)
        out.append(sig[j:end])
        j = end
    return tuple(out)


@functools.lru_cache(maxsize=256)
def check_type(sig: str) -> str:
    """``sig`` if it is exactly one complete type string, else GVariantError."""
    if len(sig) > MAX_TYPE or _end_of_type(sig, 0, 0) != len(sig):
        raise GVariantError(f"{sig!r} is not a single complete type")
    return sig


@functools.lru_cache(maxsize=256)
def _alignment(sig: str) -> int:
    c = sig[0]
    if c in _BASIC_SIZES:
        return _BASIC_SIZES[c]
    if c == "v":
        return 8
    if c in "am":
        return _alignment(sig[1:])
    if c in "({":
        return max((_alignment(m) for m in members(sig)), default=1)
    return 1


@functools.lru_cache(maxsize=256)
def _fixed_size(sig: str) -> int | None:
    """The size of every value of a fixed-size type, None for variable-size types."""
    c = sig[0]
    if c in _BASIC_SIZES:
        return _BASIC_SIZES[c]
    if c in "({":
        pos = 0
        for m in members(sig):
            size = _fixed_size(m)
            if size is None:
                return None
            pos = _align(pos, _alignment(m)) + size
        return max(_align(pos, _alignment(sig)), 1)  # the unit type takes one byte
    return None


def _align(pos: int, alignment: int) -> int:
    return -(-pos // alignment) * alignment


def _offset_size(size: int) -> int:
    for width in (1, 2, 4):
        if size < 1 << (8 * width):
            return width
    return 8


def _offset(data: bytes, at: int, width: int) -> int:
    return int.from_bytes(data[at:at + width], "little")


def decode(sig: str, data: bytes, byteorder: ByteOrder = "little") -> object:
    """The value of type ``sig`` serialised in ``data``.

    Tuples and dict entries become tuples, arrays lists (``ay`` bytes), maybes the value
    or None, strings str, ``v`` a :class:`Variant`; integers are read in ``byteorder``.
    Raises GVariantError for anything but a well-formed value.
    """
    return _decode(check_type(sig), data, byteorder, 0)


def _decode(sig: str, data: bytes, order: ByteOrder, depth: int) -> object:
    if depth > MAX_DEPTH:
        raise GVariantError(f"values nested deeper than {MAX_DEPTH}")
    c = sig[0]
    fixed = _fixed_size(sig)
    if fixed is not None and len(data) != fixed:
        raise GVariantError(f"a {sig} value must be {fixed} bytes, not {len(data)}")
    if c in _BASIC_SIZES:
        if c == "d":
            return float(struct.unpack("<d" if order == "little" else ">d", data)[0])
        value = int.from_bytes(data, order, signed=c in _SIGNED)
        if c == "b" and value not in (0, 1):
            raise GVariantError("a boolean is neither 0 nor 1")
        return bool(value) if c == "b" else value
    if c in _STRINGS:
        if not data or data[-1] != 0 or 0 in data[:-1]:
            raise GVariantError("a string is not NUL-terminated or holds a NUL")
        try:
            return data[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise GVariantError("a string is not UTF-8") from None
    if c == "v":
        nul = data.rfind(b"\0")
        if nul < 0:
            raise GVariantError("a variant has no type string")
        if len(data) - nul - 1 > MAX_TYPE:
            raise GVariantError(f"a variant's type string is longer than {MAX_TYPE}")
        try:
            inner = data[nul + 1:].decode("ascii")
        except UnicodeDecodeError:
            raise GVariantError("a variant's type string is not ASCII") from None
        return Variant(check_type(inner), data[:nul])
    if c == "m":
        if not data:
            return None
        element = sig[1:]
        body = data if _fixed_size(element) is not None else data[:-1]
        if _fixed_size(element) is None and data[-1] != 0:
            raise GVariantError("a maybe value lacks its trailing NUL")
        return _decode(element, body, order, depth + 1)
    if c == "a":
        return _decode_array(sig[1:], data, order, depth)
    return _decode_tuple(sig, data, order, depth)


def _decode_array(element: str, data: bytes, order: ByteOrder, depth: int) -> object:
    if element == "y":
        return bytes(data)
    size = _fixed_size(element)
    if size is not None:
        if len(data) % size:
            raise GVariantError(f"an array of {element} is not a whole number of elements")
        return [_decode(element, data[i:i + size], order, depth + 1)
                for i in range(0, len(data), size)]
    if not data:
        return []
    width = _offset_size(len(data))
    table = _offset(data, len(data) - width, width)
    if not 0 <= table <= len(data) - width or (len(data) - table) % width:
        raise GVariantError(f"an array of {element} has a malformed offset table")
    out = []
    start = 0
    for at in range(table, len(data), width):
        end = _offset(data, at, width)
        start = _align(start, _alignment(element))
        if not start <= end <= table:
            raise GVariantError(f"an array of {element} has an offset out of range")
        out.append(_decode(element, data[start:end], order, depth + 1))
        start = end
    return out


def _decode_tuple(sig: str, data: bytes, order: ByteOrder, depth: int) -> tuple[object, ...]:
    types = members(sig)
    framed = sum(1 for m in types[:-1] if _fixed_size(m) is None)
    width = _offset_size(len(data)) if _fixed_size(sig) is None and data else 0
    table = len(data) - framed * width
    if table < 0:
        raise GVariantError(f"a {sig} value is too short for its offsets")
    out = []
    pos = 0
    read = 0
    for index, m in enumerate(types):
        pos = _align(pos, _alignment(m))
        size = _fixed_size(m)
        if size is not None:
            end = pos + size
        elif index == len(types) - 1:
            end = table
        else:
            read += 1
            end = _offset(data, len(data) - read * width, width)
        if not pos <= end <= table:
            raise GVariantError(f"a {sig} value has a member out of range")
        out.append(_decode(m, data[pos:end], order, depth + 1))
        pos = end
    return tuple(out)


def encode(sig: str, value: object, byteorder: ByteOrder = "little") -> bytes:
    """The normal-form serialisation of ``value`` as type ``sig`` (the inverse of
    :func:`decode` for every type but ``m`` and ``d``)."""
    return _encode(check_type(sig), value, byteorder)


def _encode(sig: str, value: object, order: ByteOrder) -> bytes:
    c = sig[0]
    if c in _BASIC_SIZES and c != "d":
        assert isinstance(value, int)
        return value.to_bytes(_BASIC_SIZES[c], order, signed=c in _SIGNED)
    if c in _STRINGS:
        assert isinstance(value, str)
        return value.encode("utf-8") + b"\0"
    if c == "v":
        assert isinstance(value, Variant)
        return value.data + b"\0" + check_type(value.type).encode("ascii")
    if c == "a" and sig[1] == "y":
        assert isinstance(value, bytes)
        return value
    if c == "a":
        assert isinstance(value, (list, tuple))
        return _frame([(sig[1:], item) for item in value], order, array=True)
    if c in "({":
        assert isinstance(value, tuple)
        types = members(sig)
        if len(types) != len(value):  # zip(strict=True) is Python 3.10's
            raise GVariantError(f"{len(value)} values for type {sig!r}")
        body = _frame(list(zip(types, value)), order, array=False)
        fixed = _fixed_size(sig)
        return body + b"\0" * (fixed - len(body)) if fixed is not None else body
    raise GVariantError(f"cannot encode type {sig!r}")


def _frame(items: list[tuple[str, object]], order: ByteOrder, *, array: bool) -> bytes:
    """Members (or elements) aligned back to back, then the framing offsets."""
    out = bytearray()
    ends = []
    for index, (sig, item) in enumerate(items):
        out += b"\0" * (_align(len(out), _alignment(sig)) - len(out))
        out += _encode(sig, item, order)
        variable = _fixed_size(sig) is None
        if variable and (array or index < len(items) - 1):
            ends.append(len(out))
    if not ends:
        return bytes(out)
    width = 1
    while _offset_size(len(out) + len(ends) * width) > width:
        width *= 2
    # A tuple stores its offsets last member first; an array in element order.
    for end in (ends if array else reversed(ends)):
        out += end.to_bytes(width, "little")
    return bytes(out)
