# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The vocabulary of validation: problems with stable codes, and the report of one tree."""

from __future__ import annotations

import dataclasses
import os
import stat
from typing import Any

from flatpak_sysext.rules import codes
from flatpak_sysext.rules.manifest import Manifest


@dataclasses.dataclass(frozen=True)
class Problem:
    """One reason to reject (or, as a warning, to mention) an extension.

    ``code`` is one of the stable codes of :mod:`codes` (docs/problems.md); ``path`` is
    relative to the extension root ("" for the root itself); ``message`` tells a person
    what to change.
    """

    code: str
    path: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "path": self.path, "message": self.message}

    @classmethod
    def from_json(cls, data: Any) -> Problem:
        if not isinstance(data, dict):
            raise ValueError("problem is not an object")
        code, path, message = data.get("code"), data.get("path"), data.get("message")
        if not (isinstance(code, str) and isinstance(path, str) and isinstance(message, str)):
            raise ValueError("problem fields must be strings")
        if code not in codes.ALL:
            raise ValueError(f"unknown problem code {code!r}")
        return cls(code, path, message)


@dataclasses.dataclass(frozen=True)
class TreeReport:
    """What validating one extension tree found, independent of what else is on the host.

    ``files`` lists every non-directory under ``usr/`` and ``opt/`` (relative paths such
    as ``usr/bin/foo``): the placement checks (host shadowing, conflicts between
    extensions) run on it at reconcile time, since the host changes between runs.
    """

    problems: tuple[Problem, ...]
    warnings: tuple[Problem, ...]
    files: frozenset[str]
    host_glibc: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """What the executables admitted by allow_host_glibc need of the host: per glibc
    library (sorted), its highest numbered version needed and any unnumbered one."""
    manifest: Manifest = dataclasses.field(default_factory=Manifest)
    """What the tree gives the host once merged (manifest.py)."""
    restricted: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Restricted classes (contain.RESTRICTED) the tree uses, each with its paths, sorted:
    problems unless the config's host_classes allows them (decided by evaluate)."""

    @property
    def accepted(self) -> bool:
        return not self.problems


SPECIAL_KINDS = {stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
                 stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket"}
"""The file types an extension must not hold, in words."""
_KINDS = {stat.S_IFLNK: "a symlink", stat.S_IFDIR: "a directory", **SPECIAL_KINDS}


def show(path: bytes | str) -> str:
    """A path for people: bytes that are not UTF-8 appear as ``\\xNN``."""
    raw = path if isinstance(path, bytes) else os.fsencode(path)
    return raw.decode("utf-8", "backslashreplace")


def what(st: os.stat_result) -> str:
    """What kind of file ``st`` is, in words ("a symlink")."""
    return _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
