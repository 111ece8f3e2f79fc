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
import subprocess
from collections.abc import Callable, Collection, Mapping, Sequence

from flatpak_sysext import fileio, release, targetdir
from flatpak_sysext.hoststate import (
    DAEMON_RELOAD,
    DBUS_RELOAD,
    FAILED,
    OK,
    POLKIT_RELOAD,
    REFRESH,
    RELOADS,
    SKIPPED,
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
)
from flatpak_sysext.installation import Installation

Runner = Callable[[Sequence[str]], tuple[int, str]]
"""Runs one command (argv) and returns its exit status and its output."""

MERGED_LIST = "/usr/.systemd-sysext/extensions"
MAX_MERGED_LIST = 1 << 20
COMMAND_TIMEOUT = 300
MAX_MESSAGE = 400

RELOAD_COMMANDS: Mapping[str, tuple[str, ...]] = {
    DAEMON_RELOAD: ("systemctl", "daemon-reload"),
    DBUS_RELOAD: ("busctl", "--system", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                  "org.freedesktop.DBus", "ReloadConfig"),
    # polkit has no reload of its own on most distributions; try- leaves a stopped
    # (bus-activated) polkit alone, it reads the new files when it next starts.
    POLKIT_RELOAD: ("systemctl", "try-reload-or-restart", "polkit.service"),
    UDEV_RELOAD: ("udevadm", "control", "--reload"),
}
# systemd's parse_boolean(), the true half.
_TRUE = frozenset({"1", "yes", "y", "true", "t", "on"})


def run_command(argv: Sequence[str]) -> tuple[int, str]:
    """The real :data:`Runner`: run ``argv`` without input; stdout and stderr together."""
    try:
        proc = subprocess.run(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=COMMAND_TIMEOUT, check=False)
    except FileNotFoundError:
        return 127, f"{argv[0]}: command not found"
    except subprocess.TimeoutExpired:
        return 124, f"no answer after {COMMAND_TIMEOUT} s"
    except OSError as e:
        return 126, f"{argv[0]}: {e.strerror}"
    return proc.returncode, proc.stdout.decode("utf-8", "replace")


def _host(host_root: str, path: str) -> str:
    return os.path.join(host_root, path.lstrip("/"))


def systemd_running(host_root: str = "/") -> bool:
    """Whether systemd is the running init system, as ``sd_booted()`` decides."""
    return os.path.isdir(_host(host_root, "/run/systemd/system"))


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


def _failure(code: int, output: str) -> str:
    text = " ".join(output.split())
    if len(text) > MAX_MESSAGE:
        text = "…" + text[-MAX_MESSAGE:]
    return f"exit status {code}" + (f": {text}" if text else "")


def _run(runner: Runner, step: str, argv: Sequence[str]) -> Step:
    code, output = runner(argv)
    if code == 0:
        return Step(step, OK, "", tuple(argv))
    return Step(step, FAILED, _failure(code, output), tuple(argv))


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


def _manager_reloaded(runner: Runner, host_root: str, merged: frozenset[str]) -> bool:
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
    code, output = runner(("systemd-sysext", "--version"))
    match = re.match(r"systemd (\d+)", output)
    return code == 0 and match is not None and int(match.group(1)) >= 255


def _steps(needs: Needs, linked: Collection[str], removed: Collection[str], runner: Runner,
           host_root: str) -> list[Step]:
    refresh = _run(runner, REFRESH, ("systemd-sysext", "refresh"))
    merged = read_merged(host_root)
    steps = [refresh, _verify(linked, removed, merged)]
    if needs.sysusers:
        # "--": the names come from the extension and must not be read as options.
        steps.append(_run(runner, SYSUSERS, ("systemd-sysusers", "--", *sorted(needs.sysusers))))
    if needs.tmpfiles:
        steps.append(_run(runner, TMPFILES, ("systemd-tmpfiles", "--create", "--",
                                             *sorted(needs.tmpfiles))))
    for reload in RELOADS:
        if reload not in needs.reloads:
            continue
        argv = RELOAD_COMMANDS[reload]
        if reload == DAEMON_RELOAD and refresh.outcome == OK and _manager_reloaded(
                runner, host_root, merged):
            steps.append(Step(reload, SKIPPED, "systemd-sysext reloaded the manager itself "
                                               "(EXTENSION_RELOAD_MANAGER=1)"))
            continue
        steps.append(_run(runner, reload, argv))
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
                 runner: Runner = run_command) -> None:
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

    def run(self, changes: Sequence[Change], linked: Collection[str]) -> SyncReport | None:
        """Sync the host after ``changes``; ``linked`` names every link of ours now.

        Returns None when there was nothing to do: no change, and nothing owed by an
        interrupted run.
        """
        if not changes and not self.owed:
            if self.marked:
                self.warnings += save(self.states, None, None, self.state_dir)
            return None
        needs = self._account(changes)
        removed = {c.name for c in changes if c.new is None} - set(linked)
        warnings = list(self.warnings)
        if selinux_enforcing(self.host_root):
            warnings.append("SELinux is enforcing: merged files keep the labels they have "
                            "under the Flatpak installation, which confined services may "
                            "not be allowed to use")
        if systemd_running(self.host_root):
            steps = _steps(needs, linked, removed, self.runner, self.host_root)
        else:
            steps = [Step(REFRESH, SKIPPED, "systemd is not running")]
        report = SyncReport(_now(), tuple(steps), tuple(warnings))
        problems = save(self.states, None, report, self.state_dir)
        return dataclasses.replace(report, warnings=report.warnings + tuple(problems))

    def _account(self, changes: Sequence[Change]) -> Needs:
        """What the changes (and any interrupted run) need; records the new contents."""
        needs = Needs()
        for owed in self.owed:
            needs |= owed
        for change in changes:
            old_owner = _owner(change.old, self.scope, self.state_dir)
            new_owner = _owner(change.new, self.scope, self.state_dir)
            if change.old is not None:
                old = self.states[old_owner].contents.pop(change.name, None) if old_owner else None
                needs |= UNKNOWN_CONTENT if old is None else old.removal()
            if change.new is not None:
                new = Needs.of(change.files)
                needs |= new
                if new_owner is not None:
                    self.states[new_owner].contents[change.name] = new
        return needs
