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
import re
from collections.abc import Callable, Collection, Mapping, Sequence

from flatpak_sysext import fileio, release, store, targetdir
from flatpak_sysext.hostcommands import Runner, Tools, run_command, run_step, tool
from flatpak_sysext.hoststate import (
    DAEMON_RELOAD,
    DBUS_RELOAD,
    DISABLE_UNITS,
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
from flatpak_sysext.installation import Installation

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


def selinux_enforcing(host_root: str = "/") -> bool:
    """Whether SELinux is enforcing on the host."""
    try:
        with open(_host(host_root, "/sys/fs/selinux/enforce"), "rb") as f:
            return f.read(16).strip() == b"1"
    except OSError:
        return False


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


def _manager_reloaded(runner: Runner, host_root: str, merged: frozenset[str],
                      tools: Tools) -> bool:
    """Whether ``refresh`` reloaded the manager itself (systemd >= 255, any ``merged``
    extension saying ``EXTENSION_RELOAD_MANAGER=1``), as systemd decides it."""
    flagged = False
    for name in merged:
        try:
            fields = release.read_env_file(_host(host_root, "/" + release.release_path(name)))
        except OSError:
            continue
        flagged = flagged or fields.get("EXTENSION_RELOAD_MANAGER", "").lower() in _TRUE
    if not flagged:
        return False
    path = tool("systemd-sysext", tools.root, tools.provided)
    if path is None:
        return False
    code, output = runner((path, "--version"))
    match = re.match(r"systemd (\d+)", output)
    return code == 0 and match is not None and int(match.group(1)) >= 255


def manager_stamp(runner: Runner, systemctl: str = "systemctl") -> str | None:
    """systemd's ``UnitsLoadTimestampMonotonic``: it changes with every daemon-reload
    and re-exec (systemd 255, and Debian's 252); None where systemd does not say."""
    code, output = runner((systemctl, "show", "-p", "UnitsLoadTimestampMonotonic", "--value"))
    value = output.strip()
    return value if code == 0 and value.isdigit() else None


SYSTEMCTL_NOT_LOADED = 5
"""systemctl's exit status for a unit it does not know (LSB "not installed"): a unit
that is not loaded does not run, so stopping it has nothing to do."""
EXTENSION_UNIT_DIRS = ("/usr/lib/systemd/system", "/lib/systemd/system")
"""Where the extension's unit files are merged (``/lib`` is ``/usr/lib`` on merged-usr
hosts, and systemd may name either)."""
UNIT_DIRS_FIRST = ("/etc/systemd/system.control", "/run/systemd/system.control",
                   "/run/systemd/transient", "/run/systemd/generator.early",
                   "/etc/systemd/system", "/etc/systemd/system.attached",
                   "/run/systemd/system", "/run/systemd/system.attached",
                   "/run/systemd/generator", "/usr/local/lib/systemd/system")
"""systemd's system unit search path before the extension's directory, in its order
(systemd.unit(5), "Unit File Load Path"): a file of the same name in any of them is the
unit systemd loads. ``/run/systemd/generator.late`` comes after, and loses."""


@dataclasses.dataclass(frozen=True)
class Ownership:
    """Which recorded unit files are the units systemd loads from the extension."""

    ours: tuple[str, ...] = ()
    theirs: tuple[tuple[str, str], ...] = ()
    """Each unit left alone, and where systemd loads it from (or why not ours)."""

    def note(self) -> str:
        """The step's words for the units left alone."""
        if not self.theirs:
            return ""
        return "left alone, not the extension's unit: " + ", ".join(
            f"{u} ({why})" for u, why in self.theirs)


def _show_units(runner: Runner, names: Sequence[str], tools: Tools,
                props: str = "LoadState,FragmentPath") -> list[dict[str, str]] | None:
    """``systemctl show -p PROPS`` of each of ``names``, in their order; None when
    systemctl cannot say (not found, failed, or answered otherwise). Never a template:
    systemd refuses to show one, and fails the whole call."""
    path = tool("systemctl", tools.root, tools.provided)
    if path is None or not names:
        return None
    code, output = runner((path, "show", "-p", props, "--", *names))
    if code != 0:
        return None
    blocks = [dict(line.partition("=")[::2] for line in block.splitlines() if "=" in line)
              for block in output.strip("\n").split("\n\n")]
    if len(blocks) != len(names) or not all("LoadState" in b for b in blocks):
        return None
    return blocks


def _shadowed(unit: str, host_root: str) -> str | None:
    """The file of that name that comes before the extension's in systemd's search
    path, if any."""
    for d in UNIT_DIRS_FIRST:
        if os.path.lexists(_host(host_root, f"{d}/{unit}")):
            return f"{d}/{unit}"
    return None


def ownership(runner: Runner, units: Collection[str], host_root: str,
              tools: Tools) -> Ownership:
    """Whose units the recorded unit file names are now: the extension's when systemd
    says it loads the unit from the merged ``/usr/lib/systemd/system`` file; an
    administrator's, a generator's, a transient or a portable unit of that name is not
    ours to stop, disable or restart (docs/reference.md#host-sync). Where systemd has
    not loaded the unit (or cannot be asked), its search order decides on the files."""
    names = sorted(units)
    plain = [n for n in names if not _is_template(n)]
    answers = dict(zip(plain, _show_units(runner, plain, tools) or []))
    shown = [answers.get(n, {}) for n in names]
    ours: list[str] = []
    theirs: list[tuple[str, str]] = []
    for unit, props in zip(names, shown):
        state, fragment = props.get("LoadState", ""), props.get("FragmentPath", "")
        if state == "masked":
            theirs.append((unit, "masked"))
        elif fragment and fragment not in (f"{d}/{unit}" for d in EXTENSION_UNIT_DIRS):
            theirs.append((unit, f"systemd loads {fragment}"))
        elif not fragment and (first := _shadowed(unit, host_root)) is not None:
            theirs.append((unit, f"{first} comes first"))
        else:
            ours.append(unit)
    return Ownership(tuple(ours), tuple(theirs))


def _is_template(unit: str) -> bool:
    return unit.rpartition(".")[0].endswith("@")


def _manager_kept(runner: Runner, stamp: str | None, units: Collection[str],
                  tools: Tools) -> str | None:
    """Why the daemon-reload a package transaction owes is not needed, if it is not:
    systemd loaded no units since the extensions were taken out (the stamp the first
    unmerge kept), and it has every unit of theirs loaded and up to date with the files
    merged again (LoadState=loaded, NeedDaemonReload=no). None: reload."""
    path = tool("systemctl", tools.root, tools.provided)
    if stamp is None or path is None or manager_stamp(runner, path) != stamp:
        return None
    plain = sorted(u for u in units if not _is_template(u))
    shown = _show_units(runner, plain, tools, "LoadState,NeedDaemonReload") if plain else []
    if shown is None or any(u.get("LoadState") != "loaded" or u.get("NeedDaemonReload") != "no"
                            for u in shown):
        return None
    return ("systemd reloaded nothing during the package transaction, and has the "
            "extensions' units loaded as merged")


def _template_name(unit: str) -> str | None:
    """What ``disable`` is given: the unit file's own name (a template's disables its
    instances; disable takes no glob), if it is one :func:`unit_pattern` accepts."""
    return unit if unit_pattern(unit) is not None else None


def _units(runner: Runner, step: str, verb: Sequence[str], owned: Ownership, tools: Tools, *,
           name: Callable[[str], str | None] = unit_pattern, one_by_one: bool = False,
           success: Collection[int] = (0,), only: Collection[str] | None = None) -> Step:
    """``systemctl VERB -- NAMES`` for the units that are ours (``name`` of each: by
    default a template as the pattern of its instances; ``only``: of those, these), the
    step naming them and those left alone for people; ``one_by_one``, a call per unit."""
    ours = [u for u in owned.ours if only is None or u in only]
    names = [n for n in (name(u) for u in ours) if n is not None]
    left = owned.note()
    if not names:
        return Step(step, SKIPPED, left)
    calls = [(n,) for n in names] if one_by_one else [tuple(names)]
    failed = [done for done in (run_step(runner, step, ("systemctl", *verb, "--", *c), tools,
                                         success) for c in calls) if done.outcome != OK]
    if failed:
        return dataclasses.replace(failed[0], message="; ".join(f.message for f in failed))
    return Step(step, OK, "; ".join(filter(None, (", ".join(names), left))),
                ("systemctl", *verb, "--", *names))


def _stop(runner: Runner, step: str, owned: Ownership, tools: Tools) -> Step:
    """``systemctl stop``, a unit a call: systemctl's exit status is its first error's,
    and one unit it does not know (nothing to stop) must not hide another's failure."""
    return _units(runner, step, ("stop",), owned, tools, one_by_one=True,
                  success=(0, SYSTEMCTL_NOT_LOADED))


def _disable(runner: Runner, owned: Ownership, host_root: str, tools: Tools) -> Step:
    """``systemctl disable --no-reload`` of the units whose file is merged."""
    merged = [u for u in owned.ours
              if os.path.lexists(_host(host_root, f"/usr/lib/systemd/system/{u}"))]
    if not merged:
        # A package transaction took the extension out of /usr: systemctl refuses to
        # disable a unit it has no file for.
        return Step(DISABLE_UNITS, SKIPPED, "no unit file of theirs is merged")
    return _units(runner, DISABLE_UNITS, ("disable", "--no-reload"), owned, tools,
                  name=_template_name, only=merged)


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
        steps.append(_stop(runner, STOP_UNITS, stopping, tools))
        # --no-reload: the daemon-reload comes after the refresh. One now would read
        # the old overlay, whose lower layer Flatpak may already have deleted (every
        # unit under /usr then vanishes from systemd, and the timers of them fail).
        steps.append(_disable(runner, stopping, host_root, tools))
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
    for reload in RELOADS:
        if reload not in needs.reloads | transaction.reloads:
            continue
        argv = RELOAD_COMMANDS[reload]
        if reload == DAEMON_RELOAD and reload not in needs.reloads and refresh.outcome == OK:
            # Half a second of a package transaction's cost on Debian 12: skipped only
            # when systemd provably still has what the re-merge brought back.
            kept = _manager_kept(runner, transaction.stamp, transaction.units, tools)
            if kept is not None:
                steps.append(Step(reload, SKIPPED, kept))
                continue
        if reload == DAEMON_RELOAD and refresh.outcome == OK and _manager_reloaded(
                runner, host_root, merged, tools):
            steps.append(Step(reload, SKIPPED, "systemd-sysext reloaded the manager itself "
                                               "(EXTENSION_RELOAD_MANAGER=1)"))
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
        steps.append(_stop(runner, STOP_REACTIVATED, stopping, tools))
    if needs.restart:
        # After daemon-reload, so the new unit files are the ones restarted (and systemd
        # says whose they are now); only units that run (try-), and reloaded instead
        # where the unit says how.
        steps.append(_units(runner, RESTART_UNITS, ("try-reload-or-restart",),
                            ownership(runner, needs.restart, host_root, tools), tools))
    return steps


def _now() -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.isoformat(timespec="seconds")


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
        if selinux_enforcing(self.host_root):
            warnings.append("SELinux is enforcing: merged files keep the labels they have "
                            "under the Flatpak installation, which confined services may "
                            "not be allowed to use")
        if systemd_running(self.host_root):
            steps = _steps(needs, linked, removed, self.runner, self.host_root,
                           Tools(self.tools_root, provided), self._transaction(linked))
        else:
            steps = [Step(REFRESH, SKIPPED, "systemd is not running")]
        report = SyncReport(_now(), tuple(steps), tuple(warnings))
        problems = save(self.states, None, report, self.state_dir)
        return dataclasses.replace(report, warnings=report.warnings + tuple(problems))

    def _snapshot_units(self, target: str, owner: Installation | None) -> Needs | None:
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
                old = self._snapshot_units(change.old, old_owner)
            if old is not None:
                needs |= old.removal() if new is None else old.update(new)
            if new is not None:
                needs |= new
                if new_owner is not None:
                    self.states[new_owner].contents[change.name] = new
        return needs
