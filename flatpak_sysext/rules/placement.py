# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Placement: where an extension's files land once merged.

The rules ``shadows-host-file`` and ``conflicts-with-extension`` (docs/problems.md).

Unlike the rest of validation this depends on the machine, the host's ``/usr`` and the
extensions linked beside it, so ``reconcile`` decides it on every full run and
``check`` does not.
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import os
import stat
from collections.abc import Collection, Iterable, Mapping

from flatpak_sysext.report import Problem, show, what
from flatpak_sysext.rules import codes


def check(files: Iterable[str], host_root: str | None, ignore: Collection[str],
          others: Mapping[str, Collection[str]]) -> list[Problem]:
    """Where an extension's files would collide once merged.

    ``files`` are an extension's non-directories (TreeReport.files); the directories they
    lie in are its directories. ``shadows-host-file``: under ``host_root`` (lstat, any
    type) the host has something where the extension has a non-directory, or a
    non-directory where it has a directory (which the directory would hide); paths in
    ``ignore`` (what our own merged extensions show there) are exempt; with no
    ``host_root`` (``allow_host_shadowing``) the host is not looked at.
    ``conflicts-with-extension``: an extension in ``others`` (name -> its files) has the
    same path, unless both have a directory there.

    Raises OSError when the host's ``/usr`` cannot be read where the tree would land.
    """
    mine = set(files)
    dirs = {a for f in mine for a in _ancestors(f)}
    paths = sorted(dirs) + sorted(mine)  # directories first: below a hidden one, skip
    problems = [] if host_root is None else _shadows_host(paths, dirs, host_root, ignore)
    if host_root is not None:
        problems += outranks(sorted(mine), host_root, ignore)
    for other, theirs in sorted(others.items()):
        their_files = set(theirs)
        their_dirs = {a for t in their_files for a in _ancestors(t)}
        for path in paths:
            if path in their_files and path in mine:
                text = f"{other} provides it too; systemd-sysext would show only one of them"
            elif path in (their_dirs if path in mine else their_files):
                ours, its = ("file", "directory") if path in mine else ("directory", "file")
                text = f"is a {ours} here but a {its} in {other}: merged, one would hide the other"
            else:
                continue
            problems.append(Problem(codes.CONFLICTS_WITH_EXTENSION, show(path), text))
    return problems


def _shadows_host(paths: list[str], dirs: set[str], host_root: str,
                  ignore: Collection[str]) -> list[Problem]:
    """``shadows-host-file`` for ``paths`` (directories first; ``dirs`` are those)."""
    problems: list[Problem] = []
    hidden: set[str] = set()
    for path in paths:
        if path in ignore or any(a in hidden for a in _ancestors(path)):
            continue
        try:
            st = os.lstat(os.path.join(host_root, path))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            if e.errno != errno.ENAMETOOLONG:
                raise  # the host cannot be read: the caller holds the app
            # Trees are bounded (ruleset.MAX_PATH), but host_root adds its own length.
            problems.append(Problem(codes.PATH_TOO_LONG, show(path), "the host cannot name "
                                    f"/{show(path[:60])}…: shorten the path"))
            continue
        if path in dirs and stat.S_ISDIR(st.st_mode):
            continue
        where = f"the host's /{show(path)}"
        if path in dirs:
            hidden.add(path)
            text = f"is a directory here, but {where} is {what(st)}: merged, it would be hidden"
        elif stat.S_ISDIR(st.st_mode):
            text = f"{where} is a directory: merged, this would hide everything in it"
        else:
            kind = "a file" if stat.S_ISREG(st.st_mode) else what(st)
            text = f"would replace {where} ({kind}) while merged"
        problems.append(Problem(codes.SHADOWS_HOST_FILE, show(path), text + "; install it under "
                                "another name (or set allow_host_shadowing)"))
    return problems


# Host search paths, in the order they are searched (root's PATH as systemd sets it,
# Python's sys.path, Perl's @INC on Debian, systemd's unit path): a file in an earlier
# directory is found before the host's file of the same name in a later one.
SEARCH_PATHS: tuple[tuple[str, ...], ...] = (
    ("usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin", "sbin", "bin"),
    ("usr/lib/python3.*", "usr/local/lib/python3.*/dist-packages", "usr/lib/python3/dist-packages"),
    ("usr/local/lib/*/perl/*", "usr/local/share/perl/*", "usr/lib/*/perl5/*", "usr/share/perl5",
     "usr/lib/*/perl-base", "usr/lib/*/perl/*", "usr/share/perl/*"),
    ("usr/local/lib/systemd/system", "usr/lib/systemd/system", "lib/systemd/system"),
)


def outranks(files: Iterable[str], host_root: str, ignore: Collection[str]) -> list[Problem]:
    """``outranks-host-file``: files a host search path finds before a host file."""
    problems = []
    for path in files:
        if path in ignore:
            continue
        for order in SEARCH_PATHS:
            hit = _outranked(path, order, host_root)
            if hit is not None:
                problems.append(Problem(codes.OUTRANKS_HOST_FILE, show(path), (
                    f"would be found before the host's {hit} (same name, later in the search "
                    "path): merged, it would run or load in its place; use a name of the "
                    "app's own (or set allow_host_shadowing)")))
                break
    return problems


def _outranked(path: str, order: tuple[str, ...], host_root: str) -> str | None:
    """The host file that ``path`` would come before in the search path ``order``."""
    for i, pattern in enumerate(order):
        depth = pattern.count("/") + 1
        parts = path.split("/")
        here = "/".join(parts[:depth])
        if len(parts) <= depth or not fnmatch.fnmatchcase(here, pattern):
            continue
        name = "/".join(parts[depth:])
        names = {name}
        if "python" in pattern:  # Python finds a module by its top-level name
            module = parts[depth].split(".", 1)[0]
            names = {module, module + ".py"}
        mine = os.path.realpath(os.path.join(host_root, here))
        for later in order[i + 1:]:
            for d in sorted(glob.glob(os.path.join(glob.escape(host_root), later))):
                if os.path.realpath(d) == mine:
                    continue  # the same directory (merged /usr): shadows-host-file's case
                for n in sorted(names):
                    if os.path.lexists(os.path.join(d, n)):
                        return "/" + os.path.relpath(os.path.join(d, n), host_root)
        return None
    return None


def _ancestors(path: str) -> list[str]:
    """The directories ``path`` lies in, below the top one (``usr/bin`` for usr/bin/x)."""
    return [path[:i] for i, c in enumerate(path) if c == "/"][1:]


def directories(files: frozenset[str]) -> set[str]:
    """Every directory the ``files`` lie in (``usr``, ``usr/bin`` for ``usr/bin/x``)."""
    dirs: set[str] = set()
    for f in files:
        end = f.rfind("/")
        while end > 0 and f[:end] not in dirs:  # the rest is there from an earlier file
            dirs.add(f[:end])
            end = f.rfind("/", 0, end)
    return dirs


class Placed:
    """The files of the extensions placed so far, indexed by path.

    Handing :func:`check` every placed extension makes a run quadratic (a second
    per run at 1,000 extensions). Two extensions can only conflict where a file of one
    is a file or a directory of the other, so only those are handed over: the result
    is the same, the cost linear.
    """

    def __init__(self) -> None:
        self.files: dict[str, frozenset[str]] = {}
        self.file_owners: dict[str, list[str]] = {}
        self.dir_owners: dict[str, list[str]] = {}

    def add(self, app_id: str, files: frozenset[str], dirs: set[str]) -> None:
        """Place ``files`` (whose directories are ``dirs``) as ``app_id``'s."""
        self.files[app_id] = files
        for f in files:
            self.file_owners.setdefault(f, []).append(app_id)
        for d in dirs:
            self.dir_owners.setdefault(d, []).append(app_id)

    def sharing(self, files: frozenset[str], dirs: set[str]) -> dict[str, frozenset[str]]:
        """The placed extensions that have a file where ``files`` has a file or a
        directory (one of ``dirs``), or a directory where it has a file."""
        # Set operations first: they run in C, and almost always find nothing.
        hits = (files | dirs) & self.file_owners.keys() | files & self.dir_owners.keys()
        names: set[str] = set()
        for path in hits:
            names.update(self.file_owners.get(path, ()))
            if path in files:
                names.update(self.dir_owners.get(path, ()))
        return {n: self.files[n] for n in names}
