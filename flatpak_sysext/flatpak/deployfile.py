# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Reading Flatpak's ``deploy`` file: the GVariant ``(ssasta{sv})`` of a deployment.

Only the fixed leading members are needed (origin remote and commit, plus the subpaths);
the metadata dictionary varies between Flatpak versions and is not read. GLib's
GVariant is not available from the standard library, and pulling PyGObject into a
root-run trigger for two strings is not worth it, so this decodes the serialisation
format (GVariant specification §2.3: tuples with framing offsets) within fixed bounds.
"""

from __future__ import annotations

import dataclasses

from flatpak_sysext.state import fileio

MAX_SIZE = 1 << 20


class DeployFileError(ValueError):
    """The deploy file is not a GVariant of the expected shape."""


@dataclasses.dataclass(frozen=True)
class DeployInfo:
    """The parts of a deploy file flatpak-sysext uses."""

    origin: str
    commit: str
    subpaths: tuple[str, ...]


def _offset_size(container_size: int) -> int:
    if container_size <= 0xFF:
        return 1
    if container_size <= 0xFFFF:
        return 2
    if container_size <= 0xFFFFFFFF:
        return 4
    return 8


def _read_offset(data: bytes, at: int, size: int) -> int:
    return int.from_bytes(data[at : at + size], "little")


def _string(data: bytes, start: int, end: int) -> str:
    if not 0 <= start < end <= len(data) or data[end - 1] != 0:
        raise DeployFileError("string member is not NUL-terminated")
    raw = data[start : end - 1]
    if b"\0" in raw:
        raise DeployFileError("string member contains NUL")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DeployFileError("string member is not UTF-8") from None


def _string_array(data: bytes) -> tuple[str, ...]:
    """Decode an ``as``: strings back to back, then one framing offset per element."""
    if not data:
        return ()
    osz = _offset_size(len(data))
    last_end = _read_offset(data, len(data) - osz, osz)
    table = len(data) - last_end
    if last_end > len(data) or table <= 0 or table % osz:
        raise DeployFileError("malformed string array")
    items: list[str] = []
    start = 0
    for i in range(table // osz):
        end = _read_offset(data, last_end + i * osz, osz)
        items.append(_string(data, start, end))
        start = end
    return tuple(items)


def parse(data: bytes) -> DeployInfo:
    """Decode the leading ``s s as`` members of a ``(ssasta{sv})`` GVariant."""
    size = len(data)
    osz = _offset_size(size)
    if size < 3 * osz + 2:
        raise DeployFileError("too short")
    # Framing offsets of the three variable-size members before the last one are
    # stored at the end of the tuple, in reverse order.
    ends = [_read_offset(data, size - (i + 1) * osz, osz) for i in range(3)]
    table_start = size - 3 * osz
    if not ends[0] <= ends[1] <= ends[2] <= table_start:
        raise DeployFileError("framing offsets out of order")
    origin = _string(data, 0, ends[0])
    commit = _string(data, ends[0], ends[1])
    subpaths = _string_array(data[ends[1] : ends[2]])
    return DeployInfo(origin=origin, commit=commit, subpaths=subpaths)


def read(path: str, *, dir_fd: int | None = None) -> DeployInfo:
    """Read a deploy file (regular file, not through a symlink, at most MAX_SIZE bytes).

    Raises OSError if unreadable and DeployFileError if malformed.
    """
    try:
        data = fileio.read_regular(path, MAX_SIZE, dir_fd=dir_fd)
    except ValueError as e:
        raise DeployFileError(str(e)) from None
    return parse(data)
