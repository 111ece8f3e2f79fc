# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The files flatpak-sysext keeps: the service's own state directory (root only), the
trigger's directory in each installation, how both are written, and the lock that
orders the runs.

The trigger's quick check imports this before anything else, so it imports nothing
beyond ``os``, ``stat`` and ``time`` (not even ``contextlib`` or ``re``: each costs it
milliseconds; ``errno`` and ``fcntl`` only where the lock needs them, and no
``__future__``: see quick.py). What lives where: see docs/reference.md#state-directory.
"""

import os
import time
from stat import S_ISDIR

TYPE_CHECKING = False  # Not typing's: see quick.py.
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from types import TracebackType

STATE_DIR = "flatpak-sysext"
LOCK_NAME = "lock"
SERVICE_DIR = "/var/lib/flatpak-sysext"
SERVICE_DIR_VARIABLE = "FLATPAK_SYSEXT_STATE_DIR"
_HEX = frozenset("0123456789abcdef")


def directory(installation_path: str) -> str:
    """Where the trigger keeps its own files for an installation (the request, its
    cache, the quick check's stamp): the only place a sandboxed trigger can write."""
    return os.path.join(installation_path, STATE_DIR)


def service_directory(environ: "Mapping[str, str]") -> str:
    """The service's own state directory (root only): the lock, verdicts, host sync
    records. ``$FLATPAK_SYSEXT_STATE_DIR`` moves it (tests)."""
    return environ.get(SERVICE_DIR_VARIABLE) or SERVICE_DIR


def installation_directory(state_dir: str, installation_path: str, *,
                           create: bool = False) -> str:
    """Where the service keeps what it knows of one installation, inside its own state
    directory: named by a digest of the installation's real path (which the files there
    also record, and are checked against). With ``create``, made root-only (0700) on
    the way."""
    import hashlib  # Not at the top: the quick check never needs it.

    key = hashlib.sha256(os.fsencode(installation_path)).hexdigest()[:32]
    parent = os.path.join(state_dir, "installations")
    path = os.path.join(parent, key)
    if create:
        for d in (state_dir, parent, path):
            private_directory(d)
    return path


def write_file(path: str, data: bytes, mode: int = 0o644, *, durable: bool = True) -> None:
    """Replace ``path`` atomically (temporary file, fsync, rename) with ``data``.

    The temporary is ``.#NAME.<16 hex digits>``: a run holding the lock removes those
    that a killed run left behind (:func:`remove_leftovers`). Not ``durable``: no fsync,
    for a file whose loss or truncation by a crash costs only time (the quick check's
    stamp).
    """
    dirname, name = os.path.split(path)
    tmp = os.path.join(dirname, f".#{name}.{os.urandom(8).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
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


def remove_leftovers(dirname: str) -> None:
    """Remove the temporaries that a run killed inside :func:`write_file` left in ``dirname``.

    Only called with the lock held: the state files (cache, request, host sync state)
    are only written under it, so none of their temporaries is in use; a best-effort
    write made without the lock (the config memo, the quick check's stamp) at worst
    fails and is made again next time.
    """
    try:
        names = os.listdir(dirname)
    except FileNotFoundError:
        return
    for name in names:
        if _is_leftover(name):
            try:  # noqa: SIM105 (no contextlib, see write_file)
                os.unlink(os.path.join(dirname, name))
            except FileNotFoundError:
                pass


class LockUnavailable(OSError):
    """The service's lock could not be taken in time, or (read-only) does not exist yet."""


def _wait(fd: int, timeout: float) -> bool:
    """Poll for ``flock(LOCK_EX)`` on ``fd`` for at most ``timeout`` seconds."""
    import fcntl  # Not at the top: the quick check takes no lock.
    deadline = time.monotonic() + timeout
    pause = 0.01
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.25)


def private_directory(path: str) -> None:
    """Make ``path`` a directory only its owner, root, can enter (0700), or check it is one.

    Raises OSError if it is anything else (a symlink, a directory of another user): what
    it holds decides what root links, so it is never taken over from someone else.
    """
    import errno  # Not at the top: see _wait.
    try:  # noqa: SIM105 (no contextlib, see write_file)
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        # Never advice to delete it: it holds the consent records.
        raise OSError(errno.EPERM, "only root may change it: run this as root" if os.geteuid()
                      else f"not a directory of root's (owner uid {st.st_uid}): not trusted",
                      path)
    if st.st_mode & 0o7077:
        os.chmod(path, 0o700)


def lock(state_dir: str, timeout: float, *, create: bool = True) -> int:
    """Take the service's lock, ``<state_dir>/lock``; returns its descriptor (close it
    to unlock). Waits at most ``timeout`` seconds, then raises LockUnavailable.

    The file is 0600 in a 0700 directory: no other user can open it, so no other user can
    hold it. Without ``create`` (the sandboxed trigger, on a read-only ``/var``) it is
    opened read-only, which is enough for ``flock``; a missing one raises LockUnavailable.
    ``flock`` locks die with their process, so a crashed run never blocks the next.
    """
    import errno  # Not at the top: see _wait.
    path = os.path.join(state_dir, LOCK_NAME)
    if create:
        private_directory(state_dir)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    else:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise LockUnavailable(errno.ENOENT, "no service has run yet", path) from None
    try:
        if not _wait(fd, timeout):
            raise LockUnavailable(errno.EWOULDBLOCK,
                                  f"another run has held it for {timeout:g} s", path)
    except BaseException:
        os.close(fd)
        raise
    return fd


class Locked:
    """``with Locked(state_dir, dirs, timeout):`` holds the service's lock, and clears
    what killed runs left in ``state_dir`` and the other state directories ``dirs``.

    One lock for every installation: the service, the trigger and ``reconcile`` all
    take it, so runs never interleave, whatever installations they cover.
    """

    def __init__(self, state_dir: str, dirs: "Iterable[str]", timeout: float, *,
                 create: bool = True) -> None:
        self.state_dir = state_dir
        self.dirs = sorted(set(dirs))
        self.timeout = timeout
        self.create = create
        self.fd: int | None = None

    def __enter__(self) -> "Locked":
        self.acquire()
        return self

    def __exit__(self, kind: "type[BaseException] | None", value: "BaseException | None",
                 tb: "TracebackType | None") -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock (LockUnavailable if it cannot be) and clear leftovers."""
        self.fd = lock(self.state_dir, self.timeout, create=self.create)
        try:
            for dirname in ([self.state_dir] if self.create else []) + self.dirs:
                remove_leftovers(dirname)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Let the lock go, if it is held."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
