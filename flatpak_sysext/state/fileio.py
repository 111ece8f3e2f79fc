# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Reading files bounded, and telling whether a path changed.

Every file flatpak-sysext reads (key files, ``deploy``, ``extension-release``, the
config, its own state) is read through :func:`read_regular`: never through a final
symlink, never a FIFO or device that could block, never more than a stated number of
bytes. The trigger's quick check imports this, so it imports nothing beyond ``os`` and
``stat``.
"""

# No ``from __future__ import annotations``: see quick.py.
import os
import stat

ABSENT = "-"
"""The signature of a path that does not exist."""
_CHUNK = 1 << 16
"""What :func:`read_regular` asks for past the size the file had when opened."""


class NotRegularError(ValueError):
    """The path is not a regular file (a directory, FIFO, device, socket or symlink)."""


class TooLargeError(ValueError):
    """The file is larger than the reader's limit."""


def read_regular(path: "str | bytes | os.PathLike[str]", limit: int, *,
                 dir_fd: "int | None" = None, follow: bool = False) -> bytes:
    """The bytes of the regular file at ``path``, at most ``limit`` of them.

    A final symlink is refused unless ``follow`` (for files a person configures, such
    as the config, which may well be a link). Raises OSError if the file cannot be
    opened or read (FileNotFoundError if it does not exist, ELOOP for a symlink not
    followed), NotRegularError if it is
    not a regular file, TooLargeError if it holds more than ``limit`` bytes.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    if not follow:
        flags |= os.O_NOFOLLOW
    fd = os.open(path, flags, dir_fd=dir_fd)  # a final symlink: ELOOP, an OSError
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularError("a directory" if stat.S_ISDIR(st.st_mode)
                                  else "not a regular file")
        chunks = []
        size = 0
        while size <= limit:
            # Not ``limit`` bytes at once: Python allocates what is asked for before it
            # reads (64 MiB for the quick check's stamp, a tenth of a millisecond).
            chunk = os.read(fd, min(limit + 1 - size, max(st.st_size + 1 - size, _CHUNK)))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise TooLargeError(f"larger than {limit} bytes")
    return b"".join(chunks)


def signature(path: str) -> str:
    """What ``stat`` says of ``path`` (following symlinks): ABSENT if it does not exist.

    Device, inode, mode, size, mtime and ctime: together they change whenever the file
    is replaced or written. Raises OSError for any other failure: a path that cannot be
    looked at cannot be vouched for.
    """
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return ABSENT
    return (f"{st.st_dev}:{st.st_ino}:{st.st_mode}:{st.st_size}:{st.st_mtime_ns}:"
            f"{st.st_ctime_ns}")
