# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Package transactions: the extensions leave ``/usr`` while a package manager changes it.

While anything is merged, ``/usr`` is a read-only overlay and every package manager fails
on it. The hooks (``hooks/``, docs/reference.md#package-managers) call :func:`begin`
before a transaction and :func:`end` after it. Each transaction is a *holder*: the
package manager's process, named by PID and start time (so a reused PID is not taken
for it), kept as an empty file in ``/run/flatpak-sysext/transactions/`` (root only,
gone at reboot). The first holder unmerges; the last one to end re-merges through the
caller's ``resync`` (a reconcile, so that every placement rule is checked against the
``/usr`` the packages left). Host sync does not merge while a live holder exists
(:func:`active`, under :func:`sync_lock`).

A package manager that aborts or is killed skips its post step, so :func:`begin` also
starts a guard (:func:`guard`) that waits for the holder to die and ends its transaction
if nobody did.

The cheap path (dpkg's hook, hooks/dpkg): a package manager's run that finds nothing
merged only records its holder, under :func:`sync_lock`'s lock taken with flock(1); its
end runs Python only when a re-merge is owed (:data:`OWED`: :func:`begin` unmerged, or a
host sync was held back, :func:`hold_back`), else it just forgets the holder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from flatpak_sysext.host.hostcommands import Runner, tool
from flatpak_sysext.host.hostsync import (
    AFTER_TRANSACTION,
    MANAGER_STAMP,
    RELOAD_COMMANDS,
    RUN_DIR,
    read_merged,
    systemd_running,
)
from flatpak_sysext.host.hostunits import manager_stamp
from flatpak_sysext.state.hoststate import RELOADS

HOLDERS_DIR = "transactions"
LOCK_NAME = "transactions.lock"
OWED = "owed"
"""In :data:`RUN_DIR`: a re-merge is owed at the end of the package transaction (its
:func:`begin` took extensions out, or a host sync was held back meanwhile). Without it,
the end of a transaction that found nothing merged has nothing to do."""
SETTLED = "settled"
"""In :data:`RUN_DIR`: the last reconcile found every declared extension linked, or held
back by nothing a package could change (consent, deny). Only then may the end of a
transaction that owes no re-merge skip its reconcile: a package that took away a file an
extension shadowed, or changed os-release or glibc, lets a held-back extension in."""
BEGIN_WAIT = 5.0
"""How long :func:`begin` (and the dpkg hook's flock) waits for a host sync in progress
before the package manager fails, naming it: a sync's unit steps are bounded
(hostcommands.UNIT_STEP_TIMEOUT), but a package manager must not hang behind them."""
LOCK_POLL = 0.05
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
"""Not root, or ``/run`` read-only (a trigger in Flatpak's sandbox): nothing of a
transaction can be recorded there, so there is nothing to order or mark either."""
GUARD_POLL = 0.5
GUARD_MAX_WAIT = 24 * 3600
"""How long a guard waits for its holder: a package transaction that runs longer is
left to its own post step (a dead holder no longer holds anything: :func:`active`)."""
UNIT_PREFIX = "flatpak-sysext-guard-"

Resync = Callable[[], None]
Spawn = Callable[[Sequence[str]], None]


class TransactionError(Exception):
    """The extensions could not be taken out of ``/usr``: the package manager would fail."""


class Holder:
    """A process holding a package transaction: its PID and its start time."""

    def __init__(self, pid: int, start: str) -> None:
        self.pid = pid
        self.start = start

    @property
    def name(self) -> str:
        return f"{self.pid}-{self.start}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Holder) and self.name == other.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"Holder({self.name})"

    @classmethod
    def parse(cls, name: str) -> Holder | None:
        """The holder a file (or a guard's argument) names, None if malformed."""
        pid, _, start = name.partition("-")
        if not (pid.isdigit() and start.isdigit() and 0 < len(pid) < 11 and len(start) < 21):
            return None
        return cls(int(pid), start)

    @classmethod
    def of(cls, pid: int, host_root: str = "/") -> Holder | None:
        """The live process ``pid`` as a holder; None if there is none."""
        start = _start_time(pid, host_root)
        return None if start is None else cls(pid, start)

    def alive(self, host_root: str = "/") -> bool:
        """Whether this very process still runs (not a zombie, not a reused PID)."""
        return _start_time(self.pid, host_root) == self.start


def _start_time(pid: int, host_root: str) -> str | None:
    """Field 22 of ``/proc/PID/stat`` (start time in clock ticks); None for a zombie
    or no such process."""
    try:
        with open(os.path.join(host_root, "proc", str(pid), "stat"), "rb") as f:
            data = f.read(4096).decode("ascii", "replace")
    except OSError:
        return None
    # The command name (field 2) may hold anything, parentheses included: split after
    # the last ")".
    fields = data[data.rfind(")") + 2:].split()
    if len(fields) < 20 or fields[0] in ("Z", "X", "x"):
        return None
    return fields[19]


def run_dir(host_root: str = "/") -> str:
    """Where the transactions are kept (root only)."""
    return os.path.join(host_root, RUN_DIR)


def _holders_dir(host_root: str) -> str:
    return os.path.join(run_dir(host_root), HOLDERS_DIR)


def holders(host_root: str = "/") -> list[Holder]:
    """Every recorded holder, live or not."""
    try:
        names = os.listdir(_holders_dir(host_root))
    except OSError:
        return []
    found = [Holder.parse(n) for n in names]
    return [h for h in found if h is not None]


def active(host_root: str = "/") -> bool:
    """Whether a package transaction is under way: a recorded holder still runs."""
    return any(h.alive(host_root) for h in holders(host_root))


class LockBusy(TransactionError):
    """The lock stayed taken for as long as :func:`begin` waits."""


def _acquire(fd: int, wait: float | None) -> bool:
    if wait is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return True
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(LOCK_POLL)


@contextmanager
def sync_lock(host_root: str = "/", *, wait: float | None = None,
              what: str = "host sync") -> Iterator[None]:
    """Held by :func:`begin` while it records and unmerges, and by host sync while it
    checks :func:`active` and merges, so that no merge lands after an unmerge.

    ``wait``: at most that many seconds, then :class:`LockBusy` naming who holds it
    (each holder writes ``what``, its PID and the time into the lock file). Where the
    directory cannot be made (not root), no transaction can be recorded either:
    nothing to order.
    """
    directory = run_dir(host_root)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(directory, LOCK_NAME),
                     os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        if e.errno not in NOT_WRITABLE:
            raise
        yield
        return
    try:
        if not _acquire(fd, wait):
            held = " ".join(os.pread(fd, 300, 0).decode("utf-8", "replace").split())
            raise LockBusy(f"{held or 'a host sync'} is in progress and held "
                           f"{os.path.join(directory, LOCK_NAME)} for {wait:g} s; "
                           "try again once it is done (see 'flatpak-sysext status')")
        note = f"{what} (PID {os.getpid()}, since {time.strftime('%H:%M:%S %Z')})"
        os.ftruncate(fd, 0)
        os.pwrite(fd, note.encode(), 0)
        yield
    finally:
        os.close(fd)


def _mark_owed(host_root: str) -> None:
    os.close(os.open(os.path.join(run_dir(host_root), OWED),
                     os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))


def _clear_owed(host_root: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(run_dir(host_root), OWED))


def note_settled(host_root: str, settled: bool) -> None:
    """Host sync's word on :data:`SETTLED`, under :func:`sync_lock`."""
    path = os.path.join(run_dir(host_root), SETTLED)
    try:
        if settled:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o600))
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        # The mark stays as it is; a missing one only costs a transaction's end its
        # reconcile.
        if e.errno not in NOT_WRITABLE:
            raise


def _record_stamp(runner: Runner, host_root: str) -> None:
    """Keep when systemd last loaded its units, as the first unmerge since the last
    re-merge found it: host sync then skips the daemon-reload the transaction would
    owe if systemd reloaded nothing meanwhile (hostsync.HostSync.owe_all)."""
    path = os.path.join(host_root, MANAGER_STAMP)
    if os.path.lexists(path):
        return
    stamp = manager_stamp(runner)
    if stamp is not None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            os.write(fd, stamp.encode())
        finally:
            os.close(fd)


def _record(holder: Holder, host_root: str) -> None:
    directory = _holders_dir(host_root)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.close(os.open(os.path.join(directory, holder.name),
                     os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))


def _forget(holder: Holder, host_root: str) -> bool:
    """Remove the holder's record; whether it was there."""
    try:
        os.unlink(os.path.join(_holders_dir(host_root), holder.name))
    except FileNotFoundError:
        return False
    return True


def _live_others(holder: Holder, host_root: str) -> list[Holder]:
    """The other live holders; the records of dead ones are removed."""
    live = []
    for h in holders(host_root):
        if h == holder:
            continue
        if h.alive(host_root):
            live.append(h)
        else:
            _forget(h, host_root)
    return live


def guard_command(holder: Holder, command: Sequence[str], host_root: str) -> list[str]:
    """How :func:`begin` starts the guard: a transient unit where systemd runs, so that
    it outlives the package manager's own service or session; else ``command`` alone."""
    argv = [*command, "package-transaction", "guard", "--holder", holder.name]
    if not systemd_running(host_root):
        return argv
    return ["systemd-run", "--quiet", "--collect", f"--unit={UNIT_PREFIX}{holder.name}",
            "--description=flatpak-sysext: re-merge after an interrupted package transaction",
            *argv]


def begin(holder: Holder, *, runner: Runner, spawn: Spawn, command: Sequence[str],
          host_root: str = "/") -> str | None:
    """Record ``holder``; take every extension out of ``/usr`` if it is the first.

    The guard is started before the unmerge, so that a package manager killed from
    here on still gets its extensions back. Returns a warning, if any. Raises
    :class:`TransactionError` when something is still merged afterwards.
    """
    warning = None
    with sync_lock(host_root, wait=BEGIN_WAIT, what=f"package transaction of PID {holder.pid}"):
        first = not _live_others(holder, host_root)
        _record(holder, host_root)
        try:
            spawn(guard_command(holder, command, host_root))
        except OSError as e:
            warning = f"cannot start the guard: {e.strerror or e}"
        if first or read_merged(host_root):
            _mark_owed(host_root)
            if read_merged(host_root) and systemd_running(host_root):
                _record_stamp(runner, host_root)
            code, out = runner(("systemd-sysext", "unmerge"))
            still = read_merged(host_root)
            if still:
                _forget(holder, host_root)
                detail = " ".join(out.split())[-300:] or f"exit status {code}"
                raise TransactionError(
                    f"systemd-sysext unmerge left {', '.join(sorted(still))} merged ({detail}):"
                    " the package manager would fail on a read-only /usr")
    return warning


def end(holder: Holder, *, resync: Resync, host_root: str = "/") -> bool:
    """The package manager's post step: forget ``holder``; the last one re-merges.

    Returns whether it re-merged. Runs ``resync`` even if ``holder`` was not recorded
    (its pre step ran before the hooks were installed, or failed after unmerging).
    """
    with sync_lock(host_root):
        _forget(holder, host_root)
        others = _live_others(holder, host_root)
        if not others:
            # A transaction that begins from here on finds nothing merged, or what this
            # resync merged: it owes its own re-merge, or a held-back sync marks it again.
            _clear_owed(host_root)
    if others:
        return False
    # Outside the lock: resync's host sync takes it.
    resync()
    return True


def finish_dead(holder: Holder, *, resync: Resync, host_root: str = "/") -> bool:
    """The guard's step once ``holder`` died: end its transaction unless its post
    step did. Returns whether it re-merged."""
    with sync_lock(host_root):
        if not _forget(holder, host_root):
            return False
        others = _live_others(holder, host_root)
        if not others:
            _clear_owed(host_root)
    if others:
        return False
    resync()
    return True


def hold_back(host_root: str = "/", spawn: Spawn | None = None,
              command: Sequence[str] = ()) -> bool:
    """Host sync's question, under :func:`sync_lock`: whether a package transaction is
    under way, so that its end merges. If so, the re-merge is marked owed (its end may
    not otherwise run Python) and each live holder gets a guard, in case it is killed:
    the dpkg hook starts none when it found nothing to take out."""
    live = [h for h in holders(host_root) if h.alive(host_root)]
    if not live:
        return False
    try:
        _mark_owed(host_root)
    except OSError as e:
        if e.errno not in NOT_WRITABLE:
            raise
    start = spawn_guard if spawn is None else spawn
    for h in live:
        # One guard a holder: systemd-run refuses a unit name that exists (the guard
        # begin started); and without one, the holder's own end still merges.
        with contextlib.suppress(OSError):
            start(guard_command(h, command or (sys.executable, "-I", "-m", "flatpak_sysext"),
                                host_root))
    return True


def guard(holder: Holder, *, resync: Resync, host_root: str = "/",
          max_wait: float = GUARD_MAX_WAIT, poll: float = GUARD_POLL) -> bool:
    """Wait (at most ``max_wait``) while ``holder`` runs and is recorded; then finish its
    transaction if it died without ending it. Returns whether it re-merged."""
    record = os.path.join(_holders_dir(host_root), holder.name)
    deadline = time.monotonic() + max_wait
    while holder.alive(host_root) and os.path.lexists(record):
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    if not os.path.lexists(record):
        # Its post step ended it (or our package's removal took /run's records away):
        # nothing to do, and nothing to make again under /run.
        return False
    return finish_dead(holder, resync=resync, host_root=host_root)


def bare_resync(runner: Runner) -> None:
    """Re-merge without a reconcile (no configuration to read, or host sync off):
    ``systemd-sysext refresh`` and the reloads a transaction owes, whatever fails."""
    runner(("systemd-sysext", "refresh"))
    for reload in RELOADS:
        if reload in AFTER_TRANSACTION.reloads:
            runner(RELOAD_COMMANDS[reload])


def spawn_guard(argv: Sequence[str]) -> None:
    """Start the guard: wait for ``systemd-run`` (it returns once the unit runs), or
    detach the command itself. Either way without the package manager's environment
    (``DPKG_FRONTEND_LOCKED`` and the like belong to its own children)."""
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    if argv[0] == "systemd-run":
        found = tool("systemd-run")  # by its absolute path, as every host command
        if found is None:
            raise OSError("systemd-run: not found in /usr/bin or /bin")
        argv = [found, *argv[1:]]
        try:
            proc = subprocess.run(list(argv), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                                  timeout=60, check=False)
        except subprocess.TimeoutExpired as e:
            raise OSError("systemd-run did not answer") from e
        if proc.returncode != 0:
            raise OSError(" ".join(proc.stderr.decode("utf-8", "replace").split())[-300:]
                          or f"systemd-run exited with {proc.returncode}")
        return
    subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, env=env, start_new_session=True)
