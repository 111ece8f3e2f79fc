# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Validated snapshots: what a link points at is a copy of the tree that only root can
reach, validated after it was copied.

A link into the deployment would let what was validated and what is merged differ:
anything Flatpak runs as root with the installation writable can change a deployment in
place, and Flatpak deletes a deployment once an update is active, while the overlay may
still use it as a lower layer. So the service copies the declared tree into
``<state>/installations/<digest>/store/<APPID>.<16 hex digits>`` (the digits name the
deployment and declared path), validates the copy, and links the copy. A snapshot at its
final name is complete and was accepted when it was made: it is copied under a
temporary ``.#`` name and renamed only once validation accepted it. Its name is known
without making it, so runs that write nothing (``status``, ``--dry-run``, the sandboxed
trigger) plan the same links.

An unlinked snapshot may still be in use: the previous overlay is detached lazily, and a
daemon started from it keeps running. It is removed at the first run of a later boot
(:func:`collect`); the boot it was released in is recorded beside it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat

from flatpak_sysext.rules import ruleset
from flatpak_sysext.state import statefiles

STORE = "store"
_KEPT_XATTRS = ("security.capability",)
_KEPT_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")
"""Extended attributes that change what a merged file does: the copy keeps them, so that
validation (file capabilities) and verification (Flatpak deploys none) see them."""
_BOOT_ID = "/proc/sys/kernel/random/boot_id"
_RELEASED = ".released"


class Unfaithful(Exception):
    """The tree holds what a snapshot does not copy (a special file, too many entries,
    a path past the bounds): the verdict comes from the tree itself, which rejects it."""


def directory(state_dir: str, installation_path: str) -> str:
    """Where the snapshots of one installation's apps are."""
    return os.path.join(statefiles.installation_directory(state_dir, installation_path), STORE)


def snapshot_name(app_id: str, deployment: str, declared_path: str) -> str:
    """The name of the snapshot of ``declared_path`` in ``deployment`` (ARCH/BRANCH/ID)."""
    key = hashlib.sha256(f"{deployment}\0{declared_path}".encode()).hexdigest()[:16]
    return f"{app_id}.{key}"


def owns(state_dir: str, installation_path: str, target: str) -> bool:
    """Whether the link text ``target`` names a snapshot of this installation's."""
    parent, name = os.path.split(target)
    return parent == directory(state_dir, installation_path) and not name.startswith(".")


def make(source: str, dest: str) -> str:
    """Copy the tree at ``source`` to a temporary name beside ``dest``; returns it.

    Raises Unfaithful (nothing left behind) if the copy could not be exact, OSError if
    it could not be made. The caller validates the copy, then :func:`publish` or
    :func:`discard` it.
    """
    parent = os.path.dirname(dest)
    missing = []
    d = parent
    while not os.path.isdir(d):  # up to the state directory, which the lock made
        missing.append(d)
        d = os.path.dirname(d)
    for d in reversed(missing):
        statefiles.private_directory(d)
    tmp = os.path.join(parent, f".#{os.path.basename(dest)}.{os.urandom(8).hex()}")
    try:
        _copy(source, tmp)
    except BaseException:
        discard(tmp)
        raise
    return tmp


def apparent_size(source: str) -> int:
    """The apparent size (``st_size`` from lstat) of the regular files under ``source``,
    summed before anything is copied; never following a symlink. The walk stops once the
    sum passes ruleset.MAX_BYTES or the entries pass ruleset.MAX_ENTRIES (the copy's own
    bounds then reject the tree), so a hostile tree costs a bounded walk."""
    total = entries = 0
    for top, subdirs, names, dfd in os.fwalk(source, follow_symlinks=False):
        entries += len(subdirs) + len(names)
        if entries > ruleset.MAX_ENTRIES or total > ruleset.MAX_BYTES:
            break
        if os.path.relpath(top, source).count("/") + 1 >= ruleset.MAX_DEPTH:
            subdirs.clear()
        for name in names:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def publish(tmp: str, dest: str) -> None:
    """Give a validated copy its final name (a snapshot that exists was accepted)."""
    try:
        os.rename(tmp, dest)
    except OSError as e:
        discard(tmp)
        if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise  # else another copy of the same deployment is there already


def discard(path: str) -> None:
    """Remove a copy (or a released snapshot) and what lies below it."""
    shutil.rmtree(path, ignore_errors=True)


def _copy(source: str, dest: str) -> None:
    """Type, content, permission bits, owner, times, symlink texts and the extended
    attributes validation judges; never following a symlink, within the bounds of ruleset."""
    os.mkdir(dest, 0o700)
    entries = 0
    dirs: list[tuple[str, os.stat_result]] = []
    root_fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        dirs.append((dest, os.fstat(root_fd)))
        for top, subdirs, names, dfd in os.fwalk(".", dir_fd=root_fd, follow_symlinks=False):
            rel = "" if top == "." else os.path.relpath(top, ".")
            depth = rel.count("/") + 1 if rel else 0
            out = os.path.join(dest, rel) if rel else dest
            entries += len(subdirs) + len(names)
            if entries > ruleset.MAX_ENTRIES or any(
                    len(os.fsencode(os.path.join(rel, n))) > ruleset.MAX_PATH
                    for n in subdirs + names):
                raise Unfaithful
            for name in list(subdirs):
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):  # a symlink to a directory: not entered
                    subdirs.remove(name)
                    _copy_entry(name, dfd, os.path.join(out, name))
                    continue
                if depth + 1 > ruleset.MAX_DEPTH:
                    raise Unfaithful
                os.mkdir(os.path.join(out, name), 0o700)
                dirs.append((os.path.join(out, name), st))
            for name in names:
                _copy_entry(name, dfd, os.path.join(out, name))
            _xattrs_of_dir(dfd, out)
    finally:
        os.close(root_fd)
    # Directories last, deepest first: adding entries changed their times.
    for path, st in reversed(dirs):
        _finish(path, st)


def _copy_entry(name: str, dfd: int, out: str) -> None:
    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(name, dir_fd=dfd), out)
        os.lchown(out, st.st_uid, st.st_gid)
        os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        return
    if not stat.S_ISREG(st.st_mode):
        raise Unfaithful
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
    try:
        now = os.fstat(src)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(now.st_mode):
            raise OSError(errno.ESTALE, "replaced while being copied", name)
        dst = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600)
        try:
            _content(src, dst, now.st_size)
            _finish(dst, now)
            _xattrs(src, dst)  # after chown, which drops file capabilities
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _content(src: int, dst: int, size: int) -> None:
    """The bytes, holes kept as holes: only the data segments (SEEK_DATA/SEEK_HOLE) are
    copied, so a sparse file takes no more room in the store than in the deployment."""
    at = 0
    while at < size:
        try:
            start = os.lseek(src, at, os.SEEK_DATA)
            end = min(os.lseek(src, start, os.SEEK_HOLE), size)
        except OSError as e:
            if e.errno == errno.ENXIO:  # only a hole is left
                break
            if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            start, end = at, size  # a filesystem that cannot tell: all of it is data
        if start >= size:
            break
        _range(src, dst, start, end - start)
        at = end
    os.ftruncate(dst, size)
    if os.pread(src, 1, size):
        raise OSError(errno.ESTALE, "grew while being copied")


_NO_COPY_FILE_RANGE = (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)
"""copy_file_range cannot cross these filesystems (the state directory and the
installation on different disks, or a tmpfs): a plain read/write loop copies instead."""


def _range(src: int, dst: int, offset: int, length: int) -> None:
    """``length`` bytes at ``offset``: copy_file_range shares extents where the
    filesystem can (reflinks), else read and write."""
    end = offset + length
    while offset < end:
        try:
            done = os.copy_file_range(src, dst, min(end - offset, 1 << 30), offset, offset)
        except OSError as e:
            if e.errno not in _NO_COPY_FILE_RANGE:
                raise
            done = _read_write(src, dst, offset, min(end - offset, 1 << 20))
        if done == 0:
            raise OSError(errno.ESTALE, "shrank while being copied")
        offset += done


def _read_write(src: int, dst: int, offset: int, length: int) -> int:
    data = os.pread(src, length, offset)
    view = memoryview(data)
    while view:
        view = view[os.pwrite(dst, view, offset + len(data) - len(view)):]
    return len(data)


def _xattrs_of_dir(src: int, dst: str) -> None:
    fd = os.open(dst, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        _xattrs(src, fd)
    finally:
        os.close(fd)


def kept_xattrs(fd: int) -> list[str]:
    """The extended attributes of ``fd`` that a copy keeps (none where the filesystem has
    no extended attributes)."""
    try:
        names = os.listxattr(fd)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return []
        raise
    return [a for a in names if a in _KEPT_XATTRS or a.startswith(_KEPT_XATTR_PREFIXES)]


def _xattrs(src: int, dst: int) -> None:
    for attr in kept_xattrs(src):
        os.setxattr(dst, attr, os.getxattr(src, attr))


def _finish(target: int | str, st: os.stat_result) -> None:
    """Owner, then mode (chown clears setuid bits), then times."""
    os.chown(target, st.st_uid, st.st_gid)
    os.chmod(target, stat.S_IMODE(st.st_mode))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))


def boot_id() -> str:
    """This boot's identity; "" where the kernel does not say."""
    try:
        with open(_BOOT_ID, encoding="ascii") as f:
            return f.read(64).strip()
    except OSError:
        return ""


def collect(state_dir: str, installation_path: str, linked: set[str]) -> None:
    """Remove the snapshots no link points at any more, once it is sure nothing uses them.

    ``linked``: every link target in the target directory. An unlinked snapshot is
    marked with the boot it was released in, and removed by the first run of a later
    boot: until then the previous overlay (detached lazily) or a daemon started from it
    may still read it. Leftover copies of killed runs (``.#`` names) go at once.
    """
    where = directory(state_dir, installation_path)
    try:
        names = os.listdir(where)
    except FileNotFoundError:
        return
    now = boot_id()
    for name in names:
        path = os.path.join(where, name)
        if name.startswith(".#"):
            discard(path)
        elif name.endswith(_RELEASED) or path in linked:
            continue
        else:
            marker = path + _RELEASED
            try:
                with open(marker, encoding="ascii") as f:
                    released = f.read(64).strip()
            except FileNotFoundError:
                statefiles.write_file(marker, f"{now}\n".encode(), mode=0o600)
                continue
            if released != now:
                discard(path)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(marker)
    for name in names:  # a marker whose snapshot is linked again, or gone
        if name.endswith(_RELEASED):
            snapshot = os.path.join(where, name[: -len(_RELEASED)])
            if snapshot in linked or not os.path.lexists(snapshot):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(where, name))
