# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Bringing the host along after the links changed (docs/reference.md#host-sync).

``systemd-sysext refresh``, then a check that what is merged is what is linked (up to
systemd 254 a failed merge can still exit 0), then only the reloads that the changed
extensions' contents need. Every command goes through one :data:`Runner`, so tests can
record the exact commands; every outcome is a :class:`~hoststate.Step`, and a failing
step is a warning in the report, never an exception. What is kept between runs is in
:mod:`flatpak_sysext.hoststate`.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Collection, Mapping, Sequence

from flatpak_sysext.flatpak.installation import Installation
from flatpak_sysext.host import targetdir
from flatpak_sysext.host.hostcommands import Runner, Tools, run_command, run_step, tool
from flatpak_sysext.host.hostunits import (
    Ownership,
    disable_step,
    manager_kept,
    ownership,
    stop_step,
    units_step,
)
from flatpak_sysext.rules import release
from flatpak_sysext.state import fileio, store
from flatpak_sysext.state.hoststate import (
    DAEMON_RELOAD,
    DBUS_RELOAD,
    FAILED,
    OK,
    POLKIT_RELOAD,
    REFRESH,
    RELOADS,
    RESTART_UNITS,
    SKIPPED,
    STOP_REACTIVATED,
    STOP_UNITS,
    SYSUSERS,
    TMPFILES,
    UDEV_RELOAD,
    UNKNOWN_CONTENT,
    VERIFY,
    Needs,
    State,
    Step,
    SyncReport,
    load,
    save,
    unit_pattern,
)

MERGED_LIST = "/usr/.systemd-sysext/extensions"
UDEV_CONTROL = "/run/udev/control"
"""systemd-udevd's control socket (or systemd's socket unit for it): what ``udevadm
control`` talks to, absent where no udev runs (containers)."""
MAX_MERGED_LIST = 1 << 20

RELOAD_COMMANDS: Mapping[str, tuple[str, ...]] = {
    DAEMON_RELOAD: ("systemctl", "daemon-reload"),
    DBUS_RELOAD: ("busctl", "--system", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                  "org.freedesktop.DBus", "ReloadConfig"),
    # polkit has no reload of its own on most distributions; try- leaves a stopped
    # (bus-activated) polkit alone, it reads the new files when it next starts.
    POLKIT_RELOAD: ("systemctl", "try-reload-or-restart", "polkit.service"),
    UDEV_RELOAD: ("udevadm", "control", "--reload"),
}
AFTER_TRANSACTION = Needs(frozenset(RELOADS) - {POLKIT_RELOAD})
"""What the end of a package transaction owes (:meth:`HostSync.owe_all`) at most."""
RUN_DIR = "run/flatpak-sysext"
"""Under the host root: root-only (0700), on a tmpfs, so nothing survives a reboot
(pkgtransaction keeps its holders there)."""
MANAGER_STAMP = f"{RUN_DIR}/manager-stamp"
"""When systemd had last loaded its units, as the first unmerge of a package
transaction found it (:func:`manager_stamp`)."""

# systemd's parse_boolean(), the true half.
_TRUE = frozenset({"1", "yes", "y", "true", "t", "on"})


def _host(host_root: str, path: str) -> str:
    return os.path.join(host_root, path.lstrip("/"))


def systemd_running(host_root: str = "/") -> bool:
    """Whether systemd is the running init system, as ``sd_booted()`` decides."""
    return os.path.isdir(_host(host_root, "/run/systemd/system"))


def udev_running(host_root: str = "/") -> bool:
    """Whether udev runs, or is started on demand, so that it can be told to reload."""
    return os.path.exists(_host(host_root, UDEV_CONTROL))


def read_merged(host_root: str = "/") -> frozenset[str]:
    """The extension names systemd-sysext has merged into ``/usr`` right now."""
    try:
        data = fileio.read_regular(_host(host_root, MERGED_LIST), MAX_MERGED_LIST)
    except (OSError, ValueError):
        return frozenset()
    return frozenset(data.decode("utf-8", "replace").split())


@dataclasses.dataclass(frozen=True)
class Change:
    """One link made, moved or removed by this run: ``old`` → ``new`` (None: absent)."""

    name: str
    old: str | None
    new: str | None
    files: frozenset[str] = frozenset()
    """The files of the tree at ``new`` (``TreeReport.files``)."""


def _owner(path: str | None, scope: Sequence[Installation],
           state_dir: str) -> Installation | None:
    return None if path is None else targetdir.owner(path, scope, state_dir)


def _verify(linked: Collection[str], removed: Collection[str], merged: frozenset[str]) -> Step:
    """Our linked names must all be merged, our removed ones not (others' may be)."""
    missing = sorted(set(linked) - merged)
    stale = sorted(set(removed) & merged)
    problems = []
    if missing:
        problems.append(f"not merged: {', '.join(missing)}")
    if stale:
        problems.append(f"still merged after unlinking: {', '.join(stale)}")
    if problems:
        hint = "see 'systemd-sysext status' and the journal of systemd-sysext"
        return Step(VERIFY, FAILED, f"{'; '.join(problems)} ({hint})")
    return Step(VERIFY, OK, f"merged: {', '.join(sorted(merged)) or 'nothing'}")


RESTART_FIELDS = ("EXTENSION_RESTART_UNITS", "EXTENSION_RELOAD_OR_RESTART_UNITS")
RESTART_UNITS_FROM = 262
"""The first systemd-sysext seen to act on :data:`RESTART_FIELDS` (Debian unstable's;
Debian 13's 257 ignores them): it restarts (or reloads) those units after a merge or
refresh, and reloads the manager first."""


def _sysext_actions(runner: Runner, host_root: str, merged: frozenset[str],
                    tools: Tools) -> tuple[bool, frozenset[str]]:
    """What ``refresh`` did by itself, as the host's systemd-sysext decides it from the
    ``merged`` extensions' release files: whether it reloaded the manager (from 255 for
    ``EXTENSION_RELOAD_MANAGER=1``, from :data:`RESTART_UNITS_FROM` for units listed to
    restart), and which units it restarted. Asks ``--version`` only if a field is set."""
    flagged = False
    units: set[str] = set()
    for name in merged:
        try:
            fields = release.read_env_file(_host(host_root, "/" + release.release_path(name)))
        except OSError:
            continue
        flagged = flagged or fields.get("EXTENSION_RELOAD_MANAGER", "").lower() in _TRUE
        for field in RESTART_FIELDS:
            units.update(fields.get(field, "").split())
    path = tool("systemd-sysext", tools.root, tools.provided)
    if not (flagged or units) or path is None:
        return False, frozenset()
    code, output = runner((path, "--version"))
    version = release.parse_systemd_version(output) if code == 0 else None
    if version is None:
        return False, frozenset()
    restarts = frozenset(units) if version[0] >= RESTART_UNITS_FROM else frozenset()
    return (flagged and version[0] >= 255) or bool(restarts), restarts


@dataclasses.dataclass(frozen=True)
class Transaction:
    """What a package transaction that took the extensions out asks of the sync."""

    reloads: frozenset[str] = frozenset()
    """Reloads only the transaction owes (the linked extensions' content needs them)."""
    units: frozenset[str] = frozenset()
    """The linked extensions' units."""
    stamp: str | None = None
    """:func:`manager_stamp` when the first unmerge took them out, if known."""


def _steps(needs: Needs, linked: Collection[str], removed: Collection[str], runner: Runner,
           host_root: str, tools: Tools, transaction: Transaction = Transaction()) -> list[Step]:
    steps = []
    stopping = Ownership()
    if needs.stop:
        # Whose units they are is asked once, while their files are still merged: after
        # the refresh systemd no longer knows where the extension's unit came from.
        stopping = ownership(runner, needs.stop, host_root, tools)
        # While their files are still merged: the units of an extension that goes, or
        # that its update no longer ships, as dpkg and rpm stop a removed package's.
        steps.append(stop_step(runner, STOP_UNITS, stopping, tools))
        # --no-reload: the daemon-reload comes after the refresh. One now would read
        # the old overlay, whose lower layer Flatpak may already have deleted (every
        # unit under /usr then vanishes from systemd, and the timers of them fail).
        steps.append(disable_step(runner, stopping, host_root, tools))
    refresh = run_step(runner, REFRESH, ("systemd-sysext", "refresh"), tools)
    merged = read_merged(host_root)
    steps += [refresh, _verify(linked, removed, merged)]
    if needs.sysusers:
        # "--": the names come from the extension and must not be read as options.
        steps.append(run_step(runner, SYSUSERS, ("systemd-sysusers", "--", *sorted(needs.sysusers)),
                          tools))
    if needs.tmpfiles:
        steps.append(run_step(runner, TMPFILES, ("systemd-tmpfiles", "--create", "--",
                                             *sorted(needs.tmpfiles)), tools))
    reloaded, restarted = False, frozenset[str]()
    if refresh.outcome == OK and (DAEMON_RELOAD in needs.reloads | transaction.reloads
                                  or needs.restart):
        reloaded, restarted = _sysext_actions(runner, host_root, merged, tools)
    for reload in RELOADS:
        if reload not in needs.reloads | transaction.reloads:
            continue
        argv = RELOAD_COMMANDS[reload]
        if reload == DAEMON_RELOAD and reloaded:
            steps.append(Step(reload, SKIPPED, "systemd-sysext reloaded the manager itself "
                                               "(EXTENSION_RELOAD_MANAGER=1)"))
            continue
        if reload == DAEMON_RELOAD and reload not in needs.reloads and refresh.outcome == OK:
            # Half a second of a package transaction's cost on Debian 12: skipped only
            # when systemd provably still has what the re-merge brought back.
            kept = manager_kept(runner, transaction.stamp, transaction.units, tools)
            if kept is not None:
                steps.append(Step(reload, SKIPPED, kept))
                continue
        if reload == UDEV_RELOAD and not udev_running(host_root):
            # A container, or a host without udev: no rules are read, none to reload.
            steps.append(Step(reload, SKIPPED, "udev is not running"))
            continue
        steps.append(run_step(runner, reload, argv, tools))
    if needs.stop:
        # Once more, now that their files and D-Bus activation are gone: a call (or a
        # socket, a timer) between the first stop and the reloads starts a unit again
        # from the still-merged files, and it would run on, unmerged, owning its bus name.
        steps.append(stop_step(runner, STOP_REACTIVATED, stopping, tools))
    if needs.restart:
        # After daemon-reload, so the new unit files are the ones restarted (and systemd
        # says whose they are now); only units that run (try-), and reloaded instead
        # where the unit says how. Those that systemd-sysext restarted already are not
        # restarted twice.
        mine = needs.restart - restarted
        if mine:
            steps.append(units_step(runner, RESTART_UNITS, ("try-reload-or-restart",),
                                    ownership(runner, mine, host_root, tools), tools))
        else:
            steps.append(Step(RESTART_UNITS, SKIPPED, "systemd-sysext restarted them itself "
                              f"(EXTENSION_RESTART_UNITS=): {', '.join(sorted(restarted))}"))
    return steps


def _now() -> str:
    # A sync's time is also its identity: the trigger tells the last sync when its time
    # differs from the one it told last (output.py), and an update's sync and the
    # uninstall's that follows can fall in the same second.
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.isoformat(timespec="microseconds")


class HostSync:
    """One run's host sync, made under the lock before any link changes.

    Call :meth:`owe` before the first link changes and :meth:`run` once they are all
    made. The state written in between makes a run that dies before syncing be finished
    by the next one.
    """

    def __init__(self, scope: Sequence[Installation], *, state_dir: str, host_root: str = "/",
                 runner: Runner = run_command, tools_root: str = "/") -> None:
        self.tools_root = tools_root
        self.scope = tuple(scope)
        self.state_dir = state_dir
        self.host_root = host_root
        self.runner = runner
        self.warnings: list[str] = []
        self.states: dict[Installation, State] = {}
        for inst in self.scope:
            self.states[inst], warning = load(inst, state_dir)
            if warning:
                self.warnings.append(warning)
        self.owed = [s.pending for s in self.states.values() if s.pending is not None]
        self.marked = False
        self.after_transaction = False

    def owe(self) -> None:
        """Record that links are about to change and the host must follow.

        Should this run die before :meth:`run`, the next one syncs in its place and,
        not knowing what changed, reloads everything a change can need.
        """
        if self.marked:
            return
        self.marked = True
        pending = UNKNOWN_CONTENT
        for owed in self.owed:
            pending |= owed
        self.warnings += save(self.states, pending, None, self.state_dir)

    def owe_all(self) -> None:
        """Owe a sync whatever the links do: a package transaction took every extension
        out of ``/usr`` and its maintainer scripts may have reloaded systemd or D-Bus
        meanwhile. The refresh, and the reloads the linked extensions' contents need
        (all of them for content never recorded), but polkit's, which restarts polkit
        (and polkit reads its rules itself): a package transaction restarts no unit.
        The daemon-reload is skipped if systemd provably reloaded nothing meanwhile."""
        self.after_transaction = True

    def _transaction(self, linked: Collection[str]) -> Transaction:
        """What the end of a package transaction owes for ``linked``; consumes the
        manager stamp the first unmerge kept (run under the transactions' lock)."""
        if not self.after_transaction:
            return Transaction()
        path = _host(self.host_root, MANAGER_STAMP)
        try:
            stamp: str | None = fileio.read_regular(path, 64).decode("ascii", "replace").strip()
            os.unlink(path)
        except (OSError, ValueError):
            stamp = None
        contents: dict[str, Needs] = {}
        for state in self.states.values():
            contents.update(state.contents)
        needs = Needs()
        for name in linked:
            needs |= contents.get(name, UNKNOWN_CONTENT)
        return Transaction(needs.reloads & AFTER_TRANSACTION.reloads, needs.units, stamp)

    def run(self, changes: Sequence[Change], linked: Collection[str],
            provided: frozenset[str] = frozenset(), *,
            deferred: bool = False) -> SyncReport | None:
        """Sync the host after ``changes``; ``linked`` names every link of ours now, and
        ``provided`` holds the files of the trees they lead to (never run one of those).

        Returns None when there was nothing to do: no change, and nothing owed by an
        interrupted run. ``deferred``: a package transaction is under way; the sync is
        recorded as owed and left to its end.
        """
        if not changes and not self.owed and not self.after_transaction:
            if self.marked:
                self.warnings += save(self.states, None, None, self.state_dir)
            return None
        needs = self._account(changes)
        if deferred:
            report = SyncReport(_now(), (Step(REFRESH, SKIPPED, "a package transaction is "
                                              "under way; its end merges"),),
                                tuple(self.warnings))
            problems = save(self.states, needs | AFTER_TRANSACTION, report, self.state_dir)
            return dataclasses.replace(report, warnings=report.warnings + tuple(problems))
        removed = {c.name for c in changes if c.new is None} - set(linked)
        warnings = list(self.warnings)
        if systemd_running(self.host_root):
            steps = _steps(needs, linked, removed, self.runner, self.host_root,
                           Tools(self.tools_root, provided), self._transaction(linked))
        else:
            steps = [Step(REFRESH, SKIPPED, "systemd is not running")]
        report = SyncReport(_now(), tuple(steps), tuple(warnings))
        problems = save(self.states, None, report, self.state_dir)
        return dataclasses.replace(report, warnings=report.warnings + tuple(problems))

    def _snapshotunits_step(self, target: str, owner: Installation | None) -> Needs | None:
        """Without a record of the old content: the units its snapshot ships, if the
        store still has it (an unlinked one is kept until the next boot); it was
        validated when it was linked. Never those of a tree outside the store."""
        if owner is None or not store.owns(self.state_dir, owner.path, target):
            return None
        try:
            names = os.listdir(os.path.join(target, "usr/lib/systemd/system"))
        except OSError:
            return None
        return Needs(units=frozenset(n for n in names if unit_pattern(n) is not None))

    def _account(self, changes: Sequence[Change]) -> Needs:
        """What the changes (and any interrupted run) need; records the new contents."""
        needs = Needs()
        for owed in self.owed:
            needs |= owed
        for change in changes:
            old_owner = _owner(change.old, self.scope, self.state_dir)
            new_owner = _owner(change.new, self.scope, self.state_dir)
            old = None
            if change.old is not None and old_owner is not None:
                old = self.states[old_owner].contents.pop(change.name, None)
            new = Needs.of(change.files) if change.new is not None else None
            if change.old is not None and old is None:
                needs |= UNKNOWN_CONTENT
                old = self._snapshotunits_step(change.old, old_owner)
            if old is not None:
                needs |= old.removal() if new is None else old.update(new)
            if new is not None:
                needs |= new
                if new_owner is not None:
                    self.states[new_owner].contents[change.name] = new
        return needs
