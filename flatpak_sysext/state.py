"""The files flatpak-sysext keeps in ``<installation>/flatpak-sysext/``: where, how written.

The trigger's quick check (``quick``) imports this before anything else, so it imports
nothing beyond ``os`` and ``fcntl``.
"""

from __future__ import annotations

import fcntl
import os

STATE_DIR = "flatpak-sysext"
LOCK_NAME = "lock"


def directory(installation_path: str) -> str:
    """Where flatpak-sysext keeps its state files for an installation (see the man page)."""
    return os.path.join(installation_path, STATE_DIR)


def write_file(path: str, data: bytes) -> None:
    """Replace ``path`` atomically (temporary file, fsync, rename) with ``data``.

    The temporary is ``.#NAME.<16 hex digits>``: a run holding the lock removes those
    that a killed run left behind.
    """
    dirname, name = os.path.split(path)
    tmp = os.path.join(dirname, f".#{name}.{os.urandom(8).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        # Not contextlib.suppress: importing contextlib would cost the quick check 5 ms.
        try:  # noqa: SIM105
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _open_lock(installation_path: str) -> int:
    dirname = directory(installation_path)
    os.makedirs(dirname, mode=0o755, exist_ok=True)
    return os.open(os.path.join(dirname, LOCK_NAME),
                   os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)


def lock(installation_path: str) -> int:
    """Wait for the installation's lock; returns its descriptor (close it to unlock).

    ``flock`` locks die with their process, so a crashed run never blocks the next.
    """
    fd = _open_lock(installation_path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd
