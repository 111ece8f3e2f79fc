# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The tree rules (docs/problems.md): what gets an extension rejected, found without trusting it.

The walk never follows a symlink: each directory and file is opened with O_NOFOLLOW
relative to its parent's descriptor. It is iterative and holds three descriptors at most,
climbing back through ``..`` and checking it arrived where it came from, so a 10,000-deep
tree costs neither recursion nor a descriptor per level.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING

from flatpak_sysext.report import SPECIAL_KINDS, Problem, TreeReport, show, what
from flatpak_sysext.rules import codes, contain, manifest, release, ruleset
from flatpak_sysext.rules.findings import Findings, lstat
from flatpak_sysext.rules.release import Host
from flatpak_sysext.state import fileio

if TYPE_CHECKING:
    from flatpak_sysext.rules import elf
    from flatpak_sysext.rules.hostglibc import GlibcJudge, HostGlibc

MERGED = (b"usr", b"opt")  # the only top-level directories systemd-sysext merges

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening something that turned into a FIFO under us must not hang.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY


class TreeChanged(OSError):
    """The tree changed while it was being validated; validate it again."""


class _TooLarge(Exception):
    """The tree has more entries than ruleset.MAX_ENTRIES: the walk stops."""


def validate_tree(root: str | bytes | os.PathLike[str], name: str, host: Host,
                  elf_target: elf.ElfTarget, *,
                  host_glibc: HostGlibc | None = None, installed: bool = True) -> TreeReport:
    """Check the extension tree at ``root`` (which holds ``usr/``) against every tree rule.

    ``root`` itself is opened following symlinks: resolving it is the caller's job (see
    installation.resolve_extension_root). Not being merged, it need not be 0755, only not
    writable by others; ``usr/``, ``opt/`` and every directory below must be 0755.
    Files outside ``usr/`` and ``opt/`` are never merged either: they get a warning and
    the safety rules (special files, setuid, writable), not the ELF rules. Reports every
    problem (up to :data:`findings.MAX_PER_CODE` per code). Raises OSError only when the tree
    cannot be read or changes while it is read (:class:`TreeChanged`), never for what it
    holds.

    With ``host_glibc`` (allow_host_glibc), an executable that needs only that glibc is
    admitted too (hostglibc), and the report's ``host_glibc`` says what they need of it.
    A tree that is not ``installed`` (``check`` on a build tree) gets one warning for
    entries not owned by root, where an installed one is rejected.
    """
    found = Findings(installed)
    why = release.valid_image_name(name)
    if why is not None:
        found.add(codes.INVALID_NAME, "", f"the app ID cannot name a system extension: {why}")
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        found.add(codes.NOT_A_DIRECTORY, "", f"{show(os.fspath(root))} is not a directory")
        return found.report(frozenset())
    try:
        if _usable_file_name(f"extension-release.{name}"):
            _check_release(root_fd, name, host, found)
        glibc = None
        if host_glibc is not None:
            from flatpak_sysext.rules.hostglibc import GlibcJudge

            glibc = GlibcJudge(host_glibc)
        files = _walk(root_fd, elf_target, glibc, found)
        return found.report(frozenset(files), glibc, name, root_fd)
    finally:
        os.close(root_fd)


def _usable_file_name(name: str) -> bool:
    # An invalid app ID may still name a file we can look for, so the other problems
    # get reported too; one that cannot is only invalid-name.
    try:
        return "/" not in name and "\0" not in name and len(os.fsencode(name)) <= 255
    except UnicodeEncodeError:
        return False


def _check_release(root_fd: int, name: str, host: Host, found: Findings) -> None:
    """``missing-extension-release`` and the compatibility problems."""
    path = release.release_path(name)
    sample = "\n".join("    " + line for line in release.sample_release(host))
    advice = (f"systemd-sysext merges a tree only if it carries {path}, named exactly after "
              f"the extension. For this host it could contain:\n{sample}")
    if release.sample_release(host) != ["ID=_any"]:
        advice += "\nor, if the extension runs on any distribution:\n    ID=_any"
    fd = os.dup(root_fd)
    try:
        done: list[bytes] = []
        for part in release.RELEASE_DIR.encode().split(b"/"):
            st = lstat(part, fd)
            done.append(part)
            if st is None or not stat.S_ISDIR(st.st_mode):
                state = "is missing" if st is None else f"is {what(st)}, not a directory"
                found.add(codes.MISSING_EXTENSION_RELEASE, path,
                          f"{show(b'/'.join(done))} {state}. {advice}")
                return
            new = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = new
        leaf = os.fsencode(f"extension-release.{name}")
        st = lstat(leaf, fd)
        if st is None or not stat.S_ISREG(st.st_mode):
            found.add(codes.MISSING_EXTENSION_RELEASE, path,
                      _missing(fd, leaf, st) + advice)
            return
        with os.fdopen(_open_file(fd, leaf, st), "rb") as f:
            data = f.read(release.MAX_ENV_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > release.MAX_ENV_FILE:
        found.add(codes.MISSING_EXTENSION_RELEASE, path,
                  f"is larger than {release.MAX_ENV_FILE} bytes; flatpak-sysext does not read "
                  "it. An extension-release holds a few short lines")
        return
    error = release.env_file_error(data) or release.env_file_error(
        data, comment_continuation=True)
    if error is not None:
        found.add(codes.MISSING_EXTENSION_RELEASE, path,
                  f"systemd refuses to read it: {error}. Save it as plain UTF-8 text")
        return
    # systemd < 254 (Debian 12 has 252) lets a comment ending in a backslash swallow the
    # next line: judge both readings, so an extension fits either way.
    current = release.parse_env_file(data)
    legacy = release.parse_env_file(data, comment_continuation=True)
    problems = release.compatibility(current, host, name)
    if legacy != current:
        problems += [p for p in release.compatibility(legacy, host, name) if p not in problems]
        found.warnings.append(Problem(
            codes.AMBIGUOUS_EXTENSION_RELEASE, path,
            "a comment ends in a backslash: systemd before 254 reads the next line as part "
            "of the comment, later versions do not; remove the backslash"))
    for p in problems:
        found.add(p.code, p.path, p.message)


def _missing(fd: int, leaf: bytes, st: os.stat_result | None) -> str:
    """What is at (or near) the expected extension-release instead of a regular file."""
    if st is None:
        prefix = b"extension-release."
        names = (os.fsencode(n) for n in os.listdir(fd))
        others = sorted(show(n[len(prefix):]) for n in names if n.startswith(prefix))
        text = "is missing."
        if others:
            text += (f" This tree has one for {', '.join(others[:3])}"
                     f"{' and others' if len(others) > 3 else ''}, but the name must be the "
                     "app ID.")
        return text + " "
    if stat.S_ISLNK(st.st_mode):
        target = show(os.readlink(leaf, dir_fd=fd))
        return (f"is a symlink to {target}. systemd resolves it inside the extension, not on "
                "the host, and flatpak-sysext never follows symlinks in a tree: make it a "
                "regular file. ")
    return f"is {what(st)}, not a regular file. "


def _open_file(dir_fd: int, name: bytes, st: os.stat_result) -> int:
    """Open the regular file ``name`` that lstat saw as ``st``; TreeChanged if it is not."""
    fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    now = os.fstat(fd)
    if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise TreeChanged(errno.ESTALE, "replaced while being validated", show(name))
    return fd


@dataclasses.dataclass
class _Dir:
    """A directory on the walk's path: what is needed to come back to it and go on."""

    name: bytes
    id: tuple[int, int]  # (st_dev, st_ino)
    merged: bool
    length: int = 0  # of its path relative to the root, in bytes
    pending: list[bytes] | None = None  # subdirectories still to visit


def _walk(root_fd: int, target: elf.ElfTarget, glibc: GlibcJudge | None,
          found: Findings) -> list[str]:
    """Check every entry below the root; returns the non-directories under usr/ and opt/."""
    files: list[str] = []
    fd = os.dup(root_fd)
    st = os.fstat(fd)
    found.owner("", st)
    if stat.S_IMODE(st.st_mode) & 0o022:
        found.add(codes.UNSAFE_PERMISSIONS, "", f"the extension's root directory has mode "
                                            f"{stat.S_IMODE(st.st_mode):04o}: others could "
                                            "write into it; make it 0755")
    stack = [_Dir(b"", (st.st_dev, st.st_ino), merged=False)]
    try:
        while stack:
            top = stack[-1]
            if top.pending is None:
                top.pending = _scan(fd, stack, target, glibc, found, files)
            if top.pending:
                child = top.pending.pop()
                new = os.open(child, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = new
                merged = top.merged or (len(stack) == 1 and child in MERGED)
                st = os.fstat(fd)
                length = top.length + (1 if top.length else 0) + len(child)
                stack.append(_Dir(child, (st.st_dev, st.st_ino), merged, length=length))
                if merged:
                    _check_xattrs(fd, lambda: b"/".join(d.name for d in stack[1:]), found)
                continue
            stack.pop()
            if stack:  # climb back, and make sure ".." is the directory we came from
                new = os.open(b"..", _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = new
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != stack[-1].id:
                    raise TreeChanged(errno.ESTALE, "moved while being validated",
                                      show(b"/".join(d.name for d in stack[1:])))
    except _TooLarge:
        found.add(codes.TOO_MANY_FILES, "", f"the tree has more than {ruleset.MAX_ENTRIES:,} "
                                            "files, directories and symlinks; flatpak-sysext "
                                            "stops validating there. Split it, or ship less")
    finally:
        os.close(fd)
    return files


def _scan(fd: int, stack: list[_Dir], target: elf.ElfTarget, glibc: GlibcJudge | None,
          found: Findings, files: list[str]) -> list[bytes]:
    """Check the entries of the directory ``fd`` (the top of ``stack``); returns its subdirs."""
    # Imported here, not at the top: reconcile imports this module on every run, and a
    # run that validates no tree need not load pyelftools.
    from flatpak_sysext.rules import elf

    top = stack[-1]
    depth = len(stack) - 1
    prefix: list[bytes] = []  # computed on first use: joining a deep path is not free

    def path(raw: bytes) -> bytes:
        if depth and not prefix:
            prefix.append(b"/".join(d.name for d in stack[1:]) + b"/")
        return (prefix[0] if prefix else b"") + raw

    subdirs: list[bytes] = []
    for raw in _names(fd, found):
        try:
            st = os.stat(raw, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            raise TreeChanged(errno.ESTALE, "removed while being validated",
                              show(path(raw))) from None
        mode = st.st_mode
        merged = top.merged or (depth == 0 and raw in MERGED)
        if depth == 0:
            _check_top(raw, st, found)
        elif depth == 2 and path(raw) == b"usr/lib/os-release":
            found.add(codes.CONTAINS_OS_RELEASE, "usr/lib/os-release",
                      "an extension must not carry usr/lib/os-release: systemd-sysext then "
                      "refuses to merge any extension on the host; remove it (the "
                      "extension-release file describes the extension)")
        if not _within_bounds(raw, depth, top.length, mode, path, found):
            continue
        if st.st_uid != 0:
            found.owner(show(path(raw)), st)
        if stat.S_ISDIR(mode):
            subdirs.append(raw)

            perm = stat.S_IMODE(mode)
            if (merged and perm != 0o755) or perm & 0o022:  # the path only when needed
                rel = show(path(raw))
                found.add(codes.UNSAFE_PERMISSIONS, rel, _dir_message(rel, perm, merged))
            continue
        full = path(raw)
        if merged and depth:
            files.append(os.fsdecode(full))  # surrogateescape: the exact bytes
        if stat.S_ISLNK(mode):
            if merged and depth:
                found.links[os.fsdecode(full)] = os.fsdecode(os.readlink(raw, dir_fd=fd))
            continue  # a symlink's own mode means nothing, and it is never followed
        _check_file(show(full), st, found)
        if merged and stat.S_ISREG(mode):
            with os.fdopen(_open_file(fd, raw, st), "rb") as f:
                _check_xattrs(f.fileno(), full, found)
                verdict = elf.judge(f, target, glibc)
            if verdict is not None:
                found.add(verdict[0], show(full), verdict[1])
            rel = os.fsdecode(full)
            if depth and contain.needs_content(rel):
                try:
                    found.contents[rel] = fileio.read_regular(raw, manifest.MAX_CONFIG, dir_fd=fd)
                except (fileio.TooLargeError, fileio.NotRegularError):
                    found.contents[rel] = None
    subdirs.reverse()  # popped from the end: visit in name order
    return subdirs


def _names(fd: int, found: Findings) -> list[bytes]:
    """The names in directory ``fd``, sorted, counted against ruleset.MAX_ENTRIES; raises
    _TooLarge past it without reading the rest of a huge directory."""
    names = []
    with os.scandir(fd) as it:
        for entry in it:
            found.entries += 1
            if found.entries > ruleset.MAX_ENTRIES:
                raise _TooLarge
            names.append(os.fsencode(entry.name))
    names.sort()
    return names


def _within_bounds(raw: bytes, depth: int, parent_length: int, mode: int,
                   path: Callable[[bytes], bytes], found: Findings) -> bool:
    """``too-deep`` and ``path-too-long`` for the entry ``raw`` of a directory at
    ``depth``; False (not to be looked at further) if it breaks either."""
    length = parent_length + (1 if depth else 0) + len(raw)
    if length > ruleset.MAX_PATH:
        full = path(raw)
        found.add(codes.PATH_TOO_LONG, show(full),
                  f"the path {show(full[:60])}… is {length:,} bytes long; on the host it must "
                  f"stay under {ruleset.MAX_PATH:,} bytes, or tools (and flatpak-sysext) cannot "
                  "name it: shorten it")
        return False
    if stat.S_ISDIR(mode) and depth + 1 > ruleset.MAX_DEPTH:
        found.add(codes.TOO_DEEP, show(path(raw)),
                  f"directories nest {depth + 1} levels deep here; at most "
                  f"{ruleset.MAX_DEPTH} are accepted: flatten the tree")
        return False
    return True


def _check_top(raw: bytes, st: os.stat_result, found: Findings) -> None:
    rel = show(raw)
    if raw not in MERGED:
        found.warnings.append(Problem(
            codes.IGNORED_TOP_LEVEL_ENTRY, rel,
            "systemd-sysext merges only usr/ and opt/, so this is ignored; move it under "
            "usr/ or remove it"))
    elif not stat.S_ISDIR(st.st_mode):
        found.add(codes.NOT_A_DIRECTORY, rel,
                  f"is {what(st)}; it must be a real directory (systemd-sysext would "
                  "resolve a symlink inside the extension, and flatpak-sysext does not "
                  "follow it)")


def _check_xattrs(fd: int, rel: bytes | Callable[[], bytes], found: Findings) -> None:
    # overlayfs obeys its own attributes in every layer: an opaque directory would hide
    # the host's, a whiteout attribute a host file. Flatpak deploys no xattrs at all.
    try:
        names = os.listxattr(fd)
    except OSError as e:
        if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        names = []
    for attr in names:
        if attr.startswith(("trusted.overlay.", "user.overlay.")):
            where = show(rel if isinstance(rel, bytes) else rel())
            found.add(codes.SPECIAL_FILE, where, f"carries the overlayfs attribute {attr}: merged, "
                                             f"it would change what the host's /{where} "
                                             "shows; remove it")
        elif attr == "security.capability":
            where = show(rel if isinstance(rel, bytes) else rel())
            found.add(codes.FILE_CAPABILITIES, where, "has file capabilities "
                      "(security.capability): anyone running it would get them; remove them "
                      "(a daemon gets its capabilities from its systemd unit)")


def _dir_message(rel: str, perm: int, merged: bool) -> str:
    if merged and perm != 0o755:
        return (f"directory mode is {perm:04o}: while merged it replaces the mode of the "
                f"host's /{rel}; make it 0755")
    return f"directory mode is {perm:04o}: others could write into it; make it 0755"


def _check_file(rel: str, st: os.stat_result, found: Findings) -> None:
    mode = st.st_mode
    kind = SPECIAL_KINDS.get(stat.S_IFMT(mode))
    if kind is not None or not stat.S_ISREG(mode):
        text = f"is {kind or 'an unknown kind of file'}"
        if stat.S_ISCHR(mode) and st.st_rdev == 0:
            text += (", an overlayfs whiteout: merged, it would hide the host's "
                     f"/{rel}")
        found.add(codes.SPECIAL_FILE, rel, f"{text}; an extension may only hold regular files, "
                                       "directories and symlinks")
    if mode & (stat.S_ISUID | stat.S_ISGID):
        bits = " and ".join(b for b, m in ((codes.SETUID, stat.S_ISUID), ("setgid", stat.S_ISGID))
                            if mode & m)
        found.add(codes.SETUID, rel, f"has the {bits} bit (mode {stat.S_IMODE(mode):04o}); "
                                 "remove it: a daemon that needs privileges gets them from "
                                 "its systemd unit or D-Bus activation")
    if mode & 0o022:
        found.add(codes.UNSAFE_PERMISSIONS, rel,
                  f"mode {stat.S_IMODE(mode):04o} is group- or world-writable; make it 0644 "
                  "or 0755")
