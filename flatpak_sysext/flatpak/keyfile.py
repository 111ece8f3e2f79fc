# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""A strict, bounded reader for GLib key files (Flatpak metadata, repo/config, installations.d).

configparser is close but not the same format: it folds key case, accepts ``:`` as a
delimiter and treats indented lines as continuations, all of which GKeyFile does not.
A trigger that runs as root must read exactly what Flatpak reads, so this follows
GKeyFile: ``[group]`` headers, ``key=value`` lines, ``#`` comments, the escapes of
``g_key_file_parse_value_as_string`` and ``key[locale]`` entries (kept verbatim).
"""

# No ``from __future__ import annotations``: see quick.py.
import os

from flatpak_sysext.state import fileio

MAX_SIZE = 1 << 20
"""Key files Flatpak writes are a few KiB; anything larger is not worth parsing as root."""

KeyFile = dict[str, dict[str, str]]

_ESCAPES = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


class KeyFileError(ValueError):
    """The data is not a key file GKeyFile would load."""


def _unescape(value: str) -> str:
    out: list[str] = []
    chars = iter(value)
    for c in chars:
        if c != "\\":
            out.append(c)
            continue
        nxt = next(chars, None)
        if nxt is None or nxt not in _ESCAPES:
            raise KeyFileError(f"invalid escape in value {value!r}")
        out.append(_ESCAPES[nxt])
    return "".join(out)


def parse(data: bytes) -> KeyFile:
    """Parse key-file bytes into ``{group: {key: value}}``; raise KeyFileError if malformed.

    Like GKeyFile, a later duplicate key wins and a key outside any group is an error.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise KeyFileError(f"not valid UTF-8 at byte {e.start}") from None
    groups: KeyFile = {}
    current: dict[str, str] | None = None
    for lineno, raw in enumerate(text.split("\n"), 1):
        line = raw.lstrip(" \t").rstrip("\r")
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            if not line.endswith("]") or "]" in line[1:-1] or "[" in line[1:-1]:
                raise KeyFileError(f"line {lineno}: malformed group header")
            name = line[1:-1]
            if not name or any(ord(c) < 0x20 for c in name):
                raise KeyFileError(f"line {lineno}: invalid group name")
            current = groups.setdefault(name, {})
            continue
        key, sep, value = line.partition("=")
        key = key.rstrip(" \t")
        if not sep or not key or current is None:
            raise KeyFileError(f"line {lineno}: not a key=value line inside a group")
        current[key] = _unescape(value.lstrip(" \t"))
    return groups


def read(path: "str | os.PathLike[str]", *, dir_fd: "int | None" = None) -> KeyFile:
    """Read and parse a key file without following a final symlink, at most MAX_SIZE bytes.

    Raises OSError if it cannot be read and KeyFileError if it is malformed or too large.
    """
    try:
        data = fileio.read_regular(path, MAX_SIZE, dir_fd=dir_fd)
    except ValueError as e:
        raise KeyFileError(str(e)) from None
    return parse(data)
