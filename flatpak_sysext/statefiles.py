"""The files flatpak-sysext keeps in ``<installation>/flatpak-sysext/``: where they are,
how they are written, and the lock that orders the runs.

The trigger's quick check imports this before anything else, so it imports nothing
beyond ``os`` and ``fcntl`` (not even ``contextlib`` or ``re``: each costs it
milliseconds). What lives here: see docs/reference.md#state-directory.
"""

from __future__ import annotations

import fcntl
import os

TYPE_CHECKING = False  # Not typing's: see quick.py.
if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import TracebackType

STATE_DIR = "flatpak-sysext"
LOCK_NAME = "lock"
_HEX = frozenset("0123456789abcdef")


def directory(installation_path: str) -> str:
    """Where flatpak-sysext keeps its state files for an installation."""
    return os.path.join(installation_path, STATE_DIR)


def write_file(path: str, data: bytes) -> None:
    """Replace ``path`` atomically (temporary file, fsync, rename) with ``data``.

    The temporary is ``.#NAME.<16 hex digits>``: a run holding the lock removes those
    that a killed run left behind (:func:`remove_leftovers`).
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


def _is_leftover(name: str) -> bool:
    """Whether ``name`` is a temporary :func:`write_file` makes: ``.#NAME.<16 hex>``."""
    return (name.startswith(".#") and len(name) > 19 and name[-17] == "."
            and _HEX.issuperset(name[-16:]))


def remove_leftovers(installation_path: str) -> None:
    """Remove the temporaries that a run killed inside :func:`write_file` left.

    Only called with the lock held: the state files (cache, request, host sync state)
    are only written under it, so none of their temporaries is in use; a best-effort
    write made without the lock (the config memo, the quick check's stamp) at worst
    fails and is made again next time.
    """
    dirname = directory(installation_path)
    for name in os.listdir(dirname):
        if _is_leftover(name):
            try:  # noqa: SIM105 (no contextlib, see write_file)
                os.unlink(os.path.join(dirname, name))
            except FileNotFoundError:
                pass


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


class Locked:
    """``with Locked(paths):`` holds the lock of each installation path, taken in
    sorted order so that runs never deadlock, and clears what killed runs left."""

    def __init__(self, installation_paths: Iterable[str]) -> None:
        self.paths = sorted(set(installation_paths))
        self.fds: list[int] = []

    def __enter__(self) -> Locked:
        try:
            for path in self.paths:
                self.fds.append(lock(path))
                remove_leftovers(path)
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._release()

    def _release(self) -> None:
        while self.fds:
            os.close(self.fds.pop())
