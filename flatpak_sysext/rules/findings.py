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
from collections.abc import Callable
from typing import TYPE_CHECKING

from flatpak_sysext.report import Problem, TreeReport, show
from flatpak_sysext.rules import codes, contain, manifest, release, unitgrants

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
            problems, restricted = self._one_cause(name, files, problems, restricted)
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

    def _one_cause(self, name: str, files: frozenset[str], problems: list[Problem],
                   restricted: dict[str, list[str]],
                   ) -> tuple[list[Problem], dict[str, list[str]]]:
        """A tree built for another app ID (its one extension-release names it) is already
        rejected as ``missing-extension-release``: what is refused only because its names
        are not ``name``'s is said once, in that problem, not file by file."""
        prefix = release.release_path("")
        others = [f[len(prefix):] for f in files if f.startswith(prefix) and f != prefix + name]
        mine = [i for i, p in enumerate(self.problems)
                if p.code == codes.MISSING_EXTENSION_RELEASE]
        if len(others) != 1 or not mine or prefix + name in files:
            return problems, restricted
        theirs, their_restricted, _ = contain.contain(others[0], files, self.contents)
        # What the tree's own name also refuses has another cause: it stays listed.
        kept = [p for p in problems if (p.code, p.path) in {(t.code, t.path) for t in theirs}]
        kept_restricted = {c: [p for p in paths if p in their_restricted.get(c, ())]
                           for c, paths in restricted.items()}
        dropped = len(problems) - len(kept) + sum(
            len(v) - len(kept_restricted[c]) for c, v in restricted.items())
        if dropped:
            first = self.problems[mine[0]]
            self.problems[mine[0]] = Problem(first.code, first.path, (
                f"{first.message}\nThe tree is named for {show(others[0])}: {dropped} more "
                f"of its files (units, D-Bus, polkit or other names of {show(others[0])}) are "
                f"refused under the name {show(name)} for that one cause, and not listed"))
        return kept, {c: v for c, v in kept_restricted.items() if v}

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


def missing_programs(report: TreeReport, exists: Callable[[str], bool]) -> list[Problem]:
    """``missing-program`` warnings: an absolute ``Exec*=`` (or D-Bus ``Exec=``) program that
    is neither in the tree nor, by ``exists``, on the host (``/app/...`` is the app's path
    inside its sandbox, not the host's). Host-dependent, so ``check`` says it, not the verdict."""
    units = {f.rsplit("/", 1)[-1]: f for f in report.files if f.startswith("usr/lib/systemd/")}
    commands = [(units.get(u.name, u.name), key, program)
                for u in (*report.manifest.units, *report.manifest.user_units)
                for key, program in unitgrants.programs(u.exec)]
    commands += [(f"D-Bus name {name}", "Exec", command.split(" ", 1)[0])
                 for name, command, _ in report.manifest.dbus_activated]
    out = []
    for where, key, program in commands:
        if (not program.startswith("/") or any(c in program for c in "%$")
                or program[1:] in report.files or exists(program)):
            continue  # a specifier or variable is resolved only when it runs
        hint = (" /app is the app's own directory in its sandbox; merged, the tree's "
                "usr/libexec/X is /usr/libexec/X on the host" if program.startswith("/app/")
                else "")
        out.append(Problem(codes.MISSING_PROGRAM, where,
                           f"{key}={program}: no such file in this tree or on this host, so "
                           f"it would fail to run.{hint}"))
    return out


def lstat(name: bytes, dir_fd: int) -> os.stat_result | None:
    """lstat of ``name`` in ``dir_fd``; None if it does not exist."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
