# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""What validating one tree finds, and how it becomes a :class:`TreeReport`.

validate walks the tree and records here; :meth:`Findings.report` then adds what only
the whole tree can tell (containment: contain.py and rules.py; symlinks that must
resolve inside the tree; the one ownership warning of a tree that is not installed).
"""

from __future__ import annotations

import collections
import os
import stat
from typing import TYPE_CHECKING

from flatpak_sysext.report import Problem, TreeReport, show
from flatpak_sysext.rules import codes, contain, manifest

if TYPE_CHECKING:
    from flatpak_sysext.rules.hostglibc import GlibcJudge

MAX_PER_CODE = 1000  # problems listed per code: a hostile tree must not make a huge report


class Findings:
    """What validating one tree has found so far, turned into its TreeReport at the end:
    problems (bounded per code), warnings, the entries counted against the bounds, the
    owners, and what containment needs (configuration files' bytes, symlinks)."""

    def __init__(self, installed: bool) -> None:
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.counts: collections.Counter[str] = collections.Counter()
        # For containment: config files' bytes, symlinks' targets, directories.
        self.contents: dict[str, bytes | None] = {}
        self.links: dict[str, str] = {}
        self.entries = 0
        self.installed = installed
        self.not_root: list[str] = []  # for a tree that is not installed: one warning

    def owner(self, rel: str, st: os.stat_result) -> None:
        """``not-owned-by-root`` for an entry whose owner is not root."""
        if st.st_uid == 0:
            return
        if not self.installed:
            self.not_root.append(rel)
            return
        self.add(codes.NOT_OWNED_BY_ROOT, rel, f"is owned by uid {st.st_uid}, who can change "
                                               "it whatever its mode; an installed tree is "
                                               "root's alone")

    def add(self, code: str, path: str, message: str) -> None:
        self.counts[code] += 1
        if self.counts[code] <= MAX_PER_CODE:
            self.problems.append(Problem(code, path, message))

    def report(self, files: frozenset[str], glibc: GlibcJudge | None = None,
               name: str | None = None, root_fd: int | None = None) -> TreeReport:
        restricted: dict[str, list[str]] = {}
        found = manifest.Manifest()
        if name is not None:
            problems, restricted, found = contain.contain(name, files, self.contents)
            for p in problems:
                self.add(p.code, p.path, p.message)
            if root_fd is not None:
                self._symlinks(root_fd)
        if self.not_root:
            self.warnings.append(Problem(
                codes.NOT_OWNED_BY_ROOT, self.not_root[0],
                f"{len(self.not_root)} entries are not owned by root (this one first): "
                "installed by Flatpak they are root's, and flatpak-sysext rejects an "
                "installed tree where they are not"))
        for code, n in sorted(self.counts.items()):
            if n > MAX_PER_CODE:
                self.problems.append(Problem(code, "", f"and {n - MAX_PER_CODE} more "
                                                       f"{code} problems, not listed"))
        return TreeReport(tuple(self.problems), tuple(self.warnings), files,
                          glibc.requirements() if glibc is not None else (), found,
                          tuple((k, tuple(v)) for k, v in restricted.items()))

    def _symlinks(self, root_fd: int) -> None:
        """``escaping-symlink``: every link must resolve to something of the same tree."""
        def kind(rel: str) -> str | None:
            # Every directory before ``rel`` was found to be a real one of the tree.
            if rel in self.links:
                return "link:" + self.links[rel]
            st = lstat(os.fsencode(rel), root_fd)
            if st is None:
                return None
            return "dir" if stat.S_ISDIR(st.st_mode) else (
                "file" if stat.S_ISREG(st.st_mode) else None)

        for link, target in sorted(self.links.items()):
            if not contain.symlink_target_ok(link, target, kind):
                self.add(codes.ESCAPING_SYMLINK, show(link),
                         f"points to {show(target)}, which is not a file or directory of this "
                         "extension: merged, it would lead to whatever the host has there "
                         "(/dev/null masks a unit; /tmp is anyone's). Make it a regular file "
                         "or point it inside the tree")


def lstat(name: bytes, dir_fd: int) -> os.stat_result | None:
    """lstat of ``name`` in ``dir_fd``; None if it does not exist."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
