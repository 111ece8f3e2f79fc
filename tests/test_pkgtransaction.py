# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Package transactions (docs/reference.md#package-managers): who holds one, who unmerges
and re-merges, the guard, host sync held back meanwhile, and the hook files themselves.

A directory stands in for the host's root: ``proc/<PID>/stat`` files make processes live
or dead (and give them a start time), ``usr/.systemd-sysext/extensions`` says what is
merged, and a recording runner plays ``systemd-sysext``. The real dpkg runs the hooks in
tests/test_booted.py, the real pacman, dnf 4 and zypper in tests/test_booted_pkgmanagers.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from flatpak_sysext import cli
from flatpak_sysext.flatpak.installation import Installation
from flatpak_sysext.host import pkgmanagers, pkgtransaction
from flatpak_sysext.host.hostsync import Change, HostSync
from flatpak_sysext.host.pkgtransaction import Holder, TransactionError
from flatpak_sysext.state import hoststate
from testsupport.source import SOURCE_ROOT

UNMERGE = ("systemd-sysext", "unmerge")
REFRESH = ("systemd-sysext", "refresh")
STAMP = ("systemctl", "show", "-p", "UnitsLoadTimestampMonotonic", "--value")
DBUS_RELOAD = ("busctl", "--system", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
               "org.freedesktop.DBus", "ReloadConfig")


class Host:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.commands: list[tuple[str, ...]] = []
        self.spawned: list[list[str]] = []
        self.resyncs = 0
        self.unmerges = True
        self.reloads = 100
        """systemd's UnitsLoadTimestampMonotonic."""
        self.merge()

    def process(self, pid: int, start: int = 100, state: str = "S") -> Holder:
        d = self.root / "proc" / str(pid)
        d.mkdir(parents=True, exist_ok=True)
        rest = " ".join(["0"] * 16 + [str(start)] + ["0"] * 10)
        # A command name with ") (" in it: only the last ")" ends it.
        (d / "stat").write_text(f"{pid} (dpkg) (x) {state} 1 2 {rest}\n")
        return Holder(pid, str(start))

    def kill(self, pid: int) -> None:
        (self.root / "proc" / str(pid) / "stat").unlink()

    def merge(self) -> None:
        (self.root / "usr/.systemd-sysext").mkdir(parents=True, exist_ok=True)
        (self.root / "usr/.systemd-sysext/extensions").write_text("org.fsx.App\n")

    def merged(self) -> bool:
        return (self.root / "usr/.systemd-sysext/extensions").exists()

    def __call__(self, argv: Sequence[str]) -> tuple[int, str]:
        if tuple(argv) == STAMP:  # asked, not done: not among the commands
            return 0, f"{self.reloads}\n"
        self.commands.append(tuple(argv))
        if tuple(argv) == UNMERGE and self.unmerges:
            (self.root / "usr/.systemd-sysext/extensions").unlink(missing_ok=True)
        return 0, ""

    def spawn(self, argv: Sequence[str]) -> None:
        self.spawned.append(list(argv))

    def resync(self) -> None:
        self.resyncs += 1
        self.merge()

    def begin(self, holder: Holder) -> str | None:
        return pkgtransaction.begin(holder, runner=self, spawn=self.spawn,
                                    command=["fsx"], host_root=str(self.root))

    def end(self, holder: Holder) -> bool:
        return pkgtransaction.end(holder, resync=self.resync, host_root=str(self.root))

    def active(self) -> bool:
        return pkgtransaction.active(str(self.root))


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def test_first_begin_unmerges_last_end_merges(host: Host) -> None:
    dpkg, apt = host.process(10), host.process(20)
    host.begin(apt)
    assert host.commands == [UNMERGE] and not host.merged() and host.active()
    host.begin(dpkg)  # nested: nothing merged, nothing to do
    assert host.commands == [UNMERGE]
    assert host.end(dpkg) is False and host.resyncs == 0 and host.active()
    assert host.end(apt) is True and host.resyncs == 1 and host.merged()
    assert not host.active()
    mode = os.stat(pkgtransaction.run_dir(str(host.root))).st_mode
    assert stat.S_IMODE(mode) == 0o700


def test_begin_starts_a_guard_for_its_holder(host: Host) -> None:
    dpkg = host.process(10, start=4242)
    host.begin(dpkg)
    assert host.spawned == [["fsx", "package-transaction", "guard", "--holder", "10-4242"]]
    (host.root / "run/systemd/system").mkdir(parents=True)
    host.begin(host.process(11, start=7))
    argv = host.spawned[-1]
    assert argv[0] == "systemd-run" and "--unit=flatpak-sysext-guard-11-7" in argv
    assert argv[-5:] == ["fsx", "package-transaction", "guard", "--holder", "11-7"]


def test_a_dead_holder_holds_nothing(host: Host) -> None:
    killed = host.process(10)
    host.begin(killed)
    host.kill(10)
    assert not host.active()
    host.merge()  # e.g. a reconcile merged meanwhile
    host.begin(host.process(20))
    assert host.commands == [UNMERGE, UNMERGE] and not host.merged()
    assert [h.pid for h in pkgtransaction.holders(str(host.root))] == [20]


def test_a_nested_begin_unmerges_what_was_merged_meanwhile(host: Host) -> None:
    apt, dpkg = host.process(10), host.process(20)
    host.begin(apt)
    host.merge()  # say, someone ran systemd-sysext merge by hand
    host.begin(dpkg)
    assert host.commands == [UNMERGE, UNMERGE] and not host.merged()


def test_a_reused_pid_is_not_the_holder(host: Host) -> None:
    old = host.process(10, start=100)
    host.begin(old)
    host.process(10, start=999)  # PID 10 died and was given to another process
    assert not old.alive(str(host.root)) and not host.active()
    zombie = host.process(30, state="Z")
    assert not zombie.alive(str(host.root))
    assert Holder.of(30, str(host.root)) is None  # a zombie holds nothing either


def test_begin_fails_when_something_stays_merged(host: Host) -> None:
    host.unmerges = False
    with pytest.raises(TransactionError, match=r"org\.fsx\.App"):
        host.begin(host.process(10))
    assert not host.active() and pkgtransaction.holders(str(host.root)) == []


def test_begin_marks_the_remerge_owed_and_keeps_when_systemd_last_loaded_units(
        host: Host) -> None:
    """The mark makes the dpkg hook's end run flatpak-sysext's; the stamp is the first
    unmerge's until a resync used it, so that a reload between two unmerges counts."""
    (host.root / "run/systemd/system").mkdir(parents=True)
    run = host.root / "run/flatpak-sysext"
    apt, dpkg = host.process(10), host.process(20)
    host.begin(apt)
    assert (run / "owed").exists() and (run / "manager-stamp").read_text() == "100"
    host.reloads = 200
    host.merge()
    host.begin(dpkg)
    assert (run / "manager-stamp").read_text() == "100"
    host.end(dpkg)
    assert (run / "owed").exists()  # apt still holds it
    host.end(apt)
    assert not (run / "owed").exists()


@contextlib.contextmanager
def host_sync_in_progress(root: Path) -> Iterator[None]:
    """The transactions' lock held by a host sync (a thread here) meanwhile."""
    holding, release = threading.Event(), threading.Event()

    def sync() -> None:
        with pkgtransaction.sync_lock(str(root), what="host sync"):
            holding.set()
            release.wait(30)

    t = threading.Thread(target=sync)
    t.start()
    try:
        assert holding.wait(10)
        yield
    finally:
        release.set()
        t.join()


def test_begin_waits_a_bounded_time_for_a_host_sync_in_progress(
        host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host sync stopping a slow unit holds the lock: the package manager fails in
    seconds, told what is in progress, instead of hanging behind it."""
    monkeypatch.setattr(pkgtransaction, "BEGIN_WAIT", 0.3)
    with host_sync_in_progress(host.root):
        started = time.monotonic()
        with pytest.raises(TransactionError, match=rf"^host sync \(PID {os.getpid()}, since "
                                                   r"[0-9:]+ \S+\) is in progress"):
            host.begin(host.process(10))
        assert time.monotonic() - started < 5
    assert host.commands == [] and host.merged() and pkgtransaction.holders(str(host.root)) == []


def test_end_without_begin_merges(host: Host) -> None:
    # The hooks were installed during this very transaction: only the post step runs.
    assert host.end(host.process(10)) is True and host.resyncs == 1


def test_guard_finishes_a_killed_transaction(host: Host) -> None:
    dpkg = host.process(10)
    host.begin(dpkg)
    done: list[bool] = []
    t = threading.Thread(target=lambda: done.append(pkgtransaction.guard(
        dpkg, resync=host.resync, host_root=str(host.root), poll=0.01)))
    t.start()
    host.kill(10)
    t.join(10)
    assert done == [True] and host.resyncs == 1 and host.merged() and not host.active()


def test_guard_does_nothing_after_a_normal_end(host: Host) -> None:
    dpkg = host.process(10)
    host.begin(dpkg)
    host.end(dpkg)
    assert pkgtransaction.guard(dpkg, resync=host.resync, host_root=str(host.root),
                                poll=0.01) is False
    assert host.resyncs == 1


def test_guard_leaves_a_running_transaction_to_its_holder(host: Host) -> None:
    dpkg = host.process(10)
    host.begin(dpkg)
    assert pkgtransaction.guard(dpkg, resync=host.resync, host_root=str(host.root),
                                max_wait=0.05, poll=0.01) is False
    assert host.resyncs == 0 and host.active()


def test_guard_of_one_holder_waits_for_the_others(host: Host) -> None:
    killed, apt = host.process(10), host.process(20)
    host.begin(apt)
    host.begin(killed)
    host.kill(10)
    assert pkgtransaction.guard(killed, resync=host.resync, host_root=str(host.root)) is False
    assert host.resyncs == 0 and host.end(apt) and host.resyncs == 1


class SyncHost:
    """Just enough of a host for HostSync: systemd running, merges recorded."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.commands: list[tuple[str, ...]] = []
        (root / "run/systemd/system").mkdir(parents=True)
        (root / "run/udev").mkdir()
        (root / "run/udev/control").touch()  # udev runs, so it is told to reload
        for name in ("systemd-sysext", "systemctl", "busctl", "udevadm"):
            (root / "usr/bin").mkdir(parents=True, exist_ok=True)
            (root / "usr/bin" / name).write_text("#!/bin/sh\n")
            (root / "usr/bin" / name).chmod(0o755)

        self.answers: dict[tuple[str, ...], str] = {}
        """What ``systemctl show`` answers (it changes nothing: not in ``commands``)."""

    def __call__(self, argv: Sequence[str]) -> tuple[int, str]:
        # By its absolute path among the host's tools (here: under the fake root).
        assert os.path.dirname(argv[0]) == str(self.root / "usr/bin"), argv
        argv = (os.path.basename(argv[0]), *argv[1:])
        if argv[:2] == ("systemctl", "show"):
            return 0, self.answers.get(argv, "")
        self.commands.append(argv)
        return 0, ""


def test_host_sync_during_a_transaction_is_owed_to_its_end(tmp_path: Path) -> None:
    inst = Installation("default", str(tmp_path / "inst"))
    fake = SyncHost(tmp_path / "host")
    change = Change("org.fsx.App", None, "/x", frozenset({"usr/lib/systemd/system/a.service"}))
    sync = HostSync([inst], state_dir=str(tmp_path / "state"), host_root=str(fake.root),
                    runner=fake, tools_root=str(fake.root))
    sync.owe()
    report = sync.run([change], ["org.fsx.App"], deferred=True)
    assert fake.commands == []  # nothing merged while the package manager works
    assert report is not None and [(s.step, s.outcome) for s in report.steps] == [
        ("refresh", "skipped")]
    assert hoststate.load(inst, str(tmp_path / "state"))[0].pending is not None
    # The transaction's end: the owed sync, every reload.
    HostSync([inst], state_dir=str(tmp_path / "state"), host_root=str(fake.root),
             runner=fake, tools_root=str(fake.root)).run([], ["org.fsx.App"])
    assert fake.commands[0] == REFRESH
    assert {c[0] for c in fake.commands[1:]} >= {"systemctl", "busctl", "udevadm"}


UNITS = ("systemctl", "show", "-p", "LoadState,NeedDaemonReload", "--", "a.service")


class TransactionEnd:
    """An installation with one linked extension (a unit and a D-Bus service file, or
    content never recorded), and the end of a package transaction over it."""

    def __init__(self, root: Path, recorded: bool = True) -> None:
        self.inst = Installation("default", str(root / "inst"))
        self.state = str(root / "state")
        self.host = SyncHost(root / "host")
        # What every refresh merges again.
        (self.host.root / "usr/.systemd-sysext").mkdir(parents=True)
        (self.host.root / "usr/.systemd-sysext/extensions").write_text("org.fsx.App\n")
        if recorded:
            files = frozenset({"usr/lib/systemd/system/a.service",
                               "usr/share/dbus-1/system-services/org.fsx.App.service"})
            tree = f"{self.inst.path}/app/org.fsx.App/x86_64/stable/1/files/ext"
            self.sync().run([Change("org.fsx.App", None, tree, files)], ["org.fsx.App"])
        self.host.commands.clear()

    def sync(self) -> HostSync:
        return HostSync([self.inst], state_dir=self.state, host_root=str(self.host.root),
                        runner=self.host, tools_root=str(self.host.root))

    def stamp(self, value: str) -> None:
        """What begin keeps when it takes the extensions out."""
        path = self.host.root / "run/flatpak-sysext/manager-stamp"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value)

    def end(self) -> list[tuple[str, ...]]:
        sync = self.sync()
        sync.owe_all()
        report = sync.run([], ["org.fsx.App"])
        assert report is not None and report.ok
        assert hoststate.load(self.inst, self.state)[0].pending is None
        commands, self.host.commands = self.host.commands, []
        return commands


def test_after_a_transaction_content_never_recorded_gets_every_reload(tmp_path: Path) -> None:
    end = TransactionEnd(tmp_path, recorded=False)
    # Every reload but polkit's, which is a restart: a transaction restarts no unit.
    assert end.end() == [REFRESH, ("systemctl", "daemon-reload"), DBUS_RELOAD,
                         ("udevadm", "control", "--reload")]


def test_after_a_transaction_the_reloads_are_those_the_linked_content_needs(
        tmp_path: Path) -> None:
    end = TransactionEnd(tmp_path)
    # A refresh even though no link changed: the transaction took everything out.
    assert end.end() == [REFRESH, ("systemctl", "daemon-reload"), DBUS_RELOAD]
    # Nothing linked: nothing of ours to reload, but the re-merge.
    sync = end.sync()
    sync.owe_all()
    sync.run([], [])
    assert end.host.commands == [REFRESH]


def test_after_a_transaction_the_daemon_reload_waits_on_what_systemd_says(
        tmp_path: Path) -> None:
    """Skipped only when systemd loaded no units since the first unmerge (the stamp it
    kept) and has the extension's units loaded and up to date; the stamp serves once."""
    end = TransactionEnd(tmp_path)
    end.host.answers[STAMP] = "1234\n"
    end.host.answers[UNITS] = "LoadState=loaded\nNeedDaemonReload=no\n"
    end.stamp("1234\n")  # as the dpkg hook writes it (systemctl's output)
    assert end.end() == [REFRESH, DBUS_RELOAD]
    assert end.end() == [REFRESH, ("systemctl", "daemon-reload"), DBUS_RELOAD]  # no stamp
    end.stamp("1000")  # a maintainer script reloaded systemd while unmerged
    assert end.end() == [REFRESH, ("systemctl", "daemon-reload"), DBUS_RELOAD]
    for answer in ("LoadState=loaded\nNeedDaemonReload=yes\n",
                   "LoadState=not-found\nNeedDaemonReload=no\n"):
        end.host.answers[UNITS] = answer
        end.stamp("1234")
        assert end.end() == [REFRESH, ("systemctl", "daemon-reload"), DBUS_RELOAD]


def hook_lines(option: str) -> list[str]:
    """The hook's ``option`` lines: dpkg runs them in order, each with sh -c (its $PPID
    is dpkg), and stops at the first that fails."""
    lines = [line[len(option) + 1:]
             for line in (SOURCE_ROOT / "hooks/dpkg/flatpak-sysext").read_text().splitlines()
             if line.startswith(f"{option}=")]
    assert lines, f"no {option} in the dpkg hook"
    return lines


def run_hook(lines: list[str]) -> subprocess.CompletedProcess[str]:
    """As dpkg runs them (here this test is dpkg): what each said, the first failure."""
    out = err = ""
    for line in lines:
        result = subprocess.run(["/bin/sh", "-c", line], capture_output=True, text=True,
                                timeout=60)
        out, err = out + result.stdout, err + result.stderr
        if result.returncode != 0:
            break
    return subprocess.CompletedProcess(lines, result.returncode, out, err)


def test_dpkg_reads_every_hook_line_whole() -> None:
    """dpkg's configuration parser reads 1024 bytes a line, the rest as another option
    (with PREFIX=/usr/local the command's path is 6 bytes longer)."""
    for line in (SOURCE_ROOT / "hooks/dpkg/flatpak-sysext").read_text().splitlines():
        assert len(line.encode()) + 6 * line.count("/usr/bin/flatpak-sysext") < 1000, line


class DpkgHook:
    """The dpkg hook's lines as dpkg runs them (sh -c LINE: $PPID is this test, the
    holder), with the command, /run/flatpak-sysext, the merged marks and systemd's tools
    under ``root``: fakes that record their arguments (``calls``), systemd-sysext's
    unmerge taking the merged mark away unless ``stuck``, systemctl saying 4242."""

    def __init__(self, root: Path, systemd: bool = True) -> None:
        self.root = root
        self.run_dir = root / "run/flatpak-sysext"
        self.usr = root / "usr/.systemd-sysext"
        self.stuck = root / "stuck"
        fakes = {"flatpak-sysext": "", "systemd-run": "",
                 "systemd-sysext": f'[ -e {self.stuck} ] || rm -rf {self.usr}\n',
                 "systemctl": "echo 4242\n"}
        for name, action in fakes.items():
            fake = root / "bin" / name
            fake.parent.mkdir(exist_ok=True)
            fake.write_text(f'#!/bin/sh\necho {name} "$@" >> {root}/calls\n{action}')
            fake.chmod(0o755)
        (root / "proc").symlink_to("/proc")  # the holders are this machine's processes
        if systemd:
            (root / "run/systemd/system").mkdir(parents=True)

    def run(self, option: str, wait: str = "5") -> subprocess.CompletedProcess[str]:
        lines = []
        for line in hook_lines(option):
            line = line.replace("-w 5", f"-w {wait}")
            for name in ("flatpak-sysext", "systemd-run", "systemd-sysext", "systemctl"):
                line = line.replace(f"/usr/bin/{name} ", f"{self.root}/bin/{name} ")
                line = line.replace(f"/usr/bin/{name};", f"{self.root}/bin/{name};")
            for path in ("/run/flatpak-sysext", "/usr/.systemd-sysext", "/run/systemd/system"):
                line = line.replace(path, f"{self.root}{path}")
            assert "/usr/bin/systemd" not in line and "/usr/bin/flatpak" not in line, line
            lines.append(line)
        return run_hook(lines)

    def calls(self) -> list[str]:
        path = self.root / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def holders(self) -> list[Holder]:
        return pkgtransaction.holders(str(self.root))


@pytest.mark.parametrize("option", ["pre-invoke", "post-invoke"])
def test_dpkg_hook_does_nothing_once_the_command_is_gone(option: str, tmp_path: Path) -> None:
    (tmp_path / "merged").mkdir()  # whatever is merged
    result = run_hook([line.replace("/usr/bin/flatpak-sysext", str(tmp_path / "gone"))
                       .replace("/usr/.systemd-sysext", str(tmp_path / "merged"))
                       for line in hook_lines(option)])
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_dpkg_hook_with_something_merged_begins_in_the_shell(tmp_path: Path) -> None:
    """What begin does, without Python: the holder recorded, the re-merge marked owed,
    systemd's units-load stamp kept, the guard started for this holder (a shell loop
    that runs flatpak-sysext's guard only if dpkg died unended), then the unmerge; the
    end is flatpak-sysext's, which re-merges."""
    hook = DpkgHook(tmp_path)
    hook.usr.mkdir(parents=True)
    me = Holder.of(os.getpid())
    assert me is not None
    result = hook.run("pre-invoke")
    assert (result.returncode, result.stderr) == (0, "")
    calls = hook.calls()
    assert calls[0] == "systemctl show -p UnitsLoadTimestampMonotonic --value"
    assert calls[1].startswith(f"systemd-run --quiet --collect --unit=flatpak-sysext-guard-"
                               f"{me.name} --description=flatpak-sysext: re-merge after an "
                               "interrupted package transaction /bin/sh -c while ")
    assert calls[2:] == ["systemd-sysext unmerge"]
    assert "$" not in calls[1]  # systemd would expand it: the values are in the script
    assert hook.holders() == [me] and not hook.usr.exists()
    assert (hook.run_dir / "owed").exists()
    assert (hook.run_dir / "manager-stamp").read_text() == "4242\n"
    assert hook.run("post-invoke").returncode == 0
    assert hook.calls()[3:] == [f"flatpak-sysext package-transaction end --holder {me.pid}"]


def test_the_dpkg_hooks_guard_runs_flatpak_sysext_only_for_a_dead_unended_holder(
        tmp_path: Path) -> None:
    hook = DpkgHook(tmp_path)
    hook.usr.mkdir(parents=True)
    me = Holder.of(os.getpid())
    child = subprocess.Popen(["sleep", "0.3"])  # a dpkg that dies without its end
    holder = Holder.of(child.pid)
    assert me is not None and holder is not None
    hook.run("pre-invoke")
    # The guard's script, as the hook gives it to systemd-run, made for the short-lived
    # process: it waits while the holder lives and is recorded, and runs flatpak-sysext's
    # guard only if the record is still there once the holder died.
    guard = next(c for c in hook.calls() if c.startswith("systemd-run"))
    script = (guard.split(" /bin/sh -c ", 1)[1].replace(me.name, holder.name)
              .replace(f"/proc/{me.pid} ", f"/proc/{child.pid} "))
    (hook.run_dir / "transactions" / holder.name).touch()
    waiter = subprocess.Popen(["/bin/sh", "-c", script])
    child.wait()
    assert waiter.wait(10) == 0
    assert hook.calls()[-1] == f"flatpak-sysext package-transaction guard --holder {holder.name}"
    # Ended normally: the record is gone, and nothing runs.
    before = len(hook.calls())
    (hook.run_dir / "transactions" / holder.name).unlink()
    assert subprocess.run(["/bin/sh", "-c", script], timeout=10).returncode == 0
    assert len(hook.calls()) == before


def test_the_dpkg_hook_fails_when_the_unmerge_leaves_something_merged(tmp_path: Path) -> None:
    hook = DpkgHook(tmp_path)
    hook.usr.mkdir(parents=True)
    hook.stuck.touch()
    result = hook.run("pre-invoke")
    assert result.returncode == 1
    assert "systemd-sysext unmerge left extensions merged" in result.stderr
    assert hook.holders() == []


def test_without_systemd_the_dpkg_hook_is_flatpak_sysexts_begin(tmp_path: Path) -> None:
    hook = DpkgHook(tmp_path, systemd=False)
    hook.usr.mkdir(parents=True)
    assert hook.run("pre-invoke").returncode == 0
    assert hook.calls() == [f"flatpak-sysext package-transaction begin --holder {os.getpid()}"]


def test_dpkg_hook_with_nothing_merged_only_records_the_holder(tmp_path: Path) -> None:
    """No Python at all: the holder is recorded as flatpak-sysext names it, so that a
    host sync meanwhile is held back (and marks the re-merge owed), and forgotten at
    the end; once a re-merge is owed, the end is flatpak-sysext's."""
    hook = DpkgHook(tmp_path)
    me = Holder.of(os.getpid())
    assert me is not None
    result = hook.run("pre-invoke")
    assert (result.returncode, result.stderr) == (0, "")
    assert hook.holders() == [me] and hook.calls() == []
    assert pkgtransaction.active(str(tmp_path))
    assert stat.S_IMODE(os.stat(hook.run_dir).st_mode) == 0o700
    pkgtransaction.note_settled(str(tmp_path), True)  # what the last reconcile found
    assert hook.run("post-invoke").returncode == 0
    assert hook.holders() == [] and hook.calls() == []
    # A host sync held back meanwhile: the end re-merges.
    hook.run("pre-invoke")
    spawned: list[Sequence[str]] = []
    assert pkgtransaction.hold_back(str(tmp_path), spawned.append, ["fsx"])
    assert [argv[-5:] for argv in spawned] == [
        ["fsx", "package-transaction", "guard", "--holder", me.name]]
    assert hook.run("post-invoke").returncode == 0
    assert hook.calls() == [f"flatpak-sysext package-transaction end --holder {os.getpid()}"]


def test_dpkg_hooks_end_reconciles_while_an_extension_is_held_back(tmp_path: Path) -> None:
    """An extension held back by the host (a package's file it would shadow, os-release,
    glibc): the next package transaction may let it in, so its end reconciles, merged
    or not; so it does where no reconcile said anything since boot."""
    hook = DpkgHook(tmp_path)
    end = f"flatpak-sysext package-transaction end --holder {os.getpid()}"
    for settled in (None, False):
        if settled is not None:
            pkgtransaction.note_settled(str(tmp_path), settled)
        hook.run("pre-invoke")
        assert hook.run("post-invoke").returncode == 0
        assert hook.calls()[-1] == end
    pkgtransaction.note_settled(str(tmp_path), True)
    pkgtransaction.note_settled(str(tmp_path), False)
    assert not (hook.run_dir / "settled").exists()


def test_dpkg_hook_fails_fast_naming_a_host_sync_in_progress(tmp_path: Path) -> None:
    hook = DpkgHook(tmp_path)
    with host_sync_in_progress(tmp_path):
        result = hook.run("pre-invoke", wait="0.5")
    assert result.returncode == 1
    assert re.match(rf"flatpak-sysext: host sync \(PID {os.getpid()}, since [0-9:]+ \S+\) is "
                    r"in progress and held \S+/transactions.lock for 5 s", result.stderr), \
        result.stderr
    assert hook.holders() == [] and hook.calls() == []


def test_zypper_plugin_acknowledges_and_brackets_the_commit(tmp_path: Path) -> None:
    fake = tmp_path / "flatpak-sysext"
    fake.write_text(f'#!/bin/sh\necho "$2 $4" >> {tmp_path}/calls\n')
    fake.chmod(0o755)
    plugin = tmp_path / "plugin"
    plugin.write_text((SOURCE_ROOT / "hooks/zypper/flatpak-sysext").read_text()
                      .replace("/usr/bin/flatpak-sysext", str(fake)))
    frames = b"".join(f"{c}\n\n\0".encode() for c in
                      ("PLUGINBEGIN", "COMMITBEGIN", "COMMITEND", "PLUGINEND"))
    result = subprocess.run([sys.executable, str(plugin)], input=frames, capture_output=True,
                            timeout=30)
    assert result.stdout == b"ACK\n\n\0" * 4
    holder = os.getpid()  # the plugin's parent: libzypp, here this test
    assert (tmp_path / "calls").read_text().split("\n")[:-1] == [f"begin {holder}",
                                                                   f"end {holder}"]


def test_zypper_plugin_ends_a_commit_libzypp_abandoned(tmp_path: Path) -> None:
    fake = tmp_path / "flatpak-sysext"
    fake.write_text(f'#!/bin/sh\necho "$2" >> {tmp_path}/calls\n')
    fake.chmod(0o755)
    plugin = tmp_path / "plugin"
    plugin.write_text((SOURCE_ROOT / "hooks/zypper/flatpak-sysext").read_text()
                      .replace("/usr/bin/flatpak-sysext", str(fake)))
    subprocess.run([sys.executable, str(plugin)], input=b"COMMITBEGIN\n\n{}\0",
                   capture_output=True, timeout=30, check=True)
    assert (tmp_path / "calls").read_text().split() == ["begin", "end"]


_LAST_END = """
import json, sys
sys.path.insert(0, {package!r})
from flatpak_sysext.host import pkgtransaction
resynced = []
# The last holder's end (its bookkeeping is tested above, on a stand-in root): the resync
# runs; with host sync off it is the bare re-merge, recorded instead of run.
pkgtransaction.end = lambda holder, *, resync, host_root="/": bool(resync()) or True
pkgtransaction.bare_resync = lambda runner: resynced.append("bare")
from flatpak_sysext import cli
code = cli.main(["package-transaction", "end", "--holder", "1"], {env!r})
print(json.dumps([code, resynced, sorted(sys.modules)]))
"""


@pytest.mark.parametrize("validated", [True, False])
def test_the_end_skips_jsonschema_for_a_config_validated_before(
        tmp_path: Path, validated: bool) -> None:
    """A package transaction's end, in a fresh interpreter as the hook runs it, loads
    jsonschema only for a config the service's state directory does not record as
    validated (and records it then), and never the trigger, the evaluation or pyelftools
    when it does not reconcile."""
    from flatpak_sysext import config
    from testsupport.source import PACKAGE_DIR

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    cfg = tmp_path / "config.json"
    cfg.write_text('{"host_sync": false}\n')
    (tmp_path / "flatpak").mkdir()
    if validated:
        config.load(str(cfg), memo_dir=str(state))
    env = {"FLATPAK_SYSEXT_CONFIG": str(cfg), "FLATPAK_SYSEXT_STATE_DIR": str(state),
           "FLATPAK_SYSTEM_DIR": str(tmp_path / "flatpak"),
           "FLATPAK_CONFIG_DIR": str(tmp_path / "etc")}
    script = _LAST_END.format(package=str(PACKAGE_DIR.parent), env=env)
    out = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True,
                         timeout=60, check=True)
    code, resynced, modules = json.loads(out.stdout)
    assert (code, resynced) == (0, ["bare"]), out.stderr
    assert ("jsonschema" in modules) is not validated
    assert (state / config.MEMO_NAME).is_file()
    assert not {"elftools", "flatpak_sysext.trigger", "flatpak_sysext.evaluate",
                "flatpak_sysext.output"} & set(modules)


@pytest.mark.parametrize("holder", ["abc", "-1", "0", "1;rm"])
def test_a_bad_holder_is_a_clear_error(holder: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["package-transaction", "begin", "--holder", holder], {}) == 2
    err = capsys.readouterr().err
    assert "is not a process ID" in err and "Traceback" not in err
    assert cli.main(["package-transaction", "guard", "--holder", holder], {}) == 2


@pytest.mark.parametrize(("exe", "argv", "changes"), [
    ("/usr/bin/dnf5", ["dnf5", "install", "./local.rpm"], True),
    ("/usr/bin/dnf5", ["dnf5", "-y", "--setopt", "x=1", "remove", "foo"], True),
    ("/usr/bin/dnf5", ["dnf5", "rm", "foo"], True),
    ("/usr/bin/dnf5", ["dnf5", "group", "install", "x"], True),
    ("/usr/bin/dnf5", ["dnf5", "history", "undo", "3"], True),
    ("/usr/bin/dnf5", ["dnf5", "search", "install"], False),  # the command comes first
    ("/usr/bin/dnf5", ["dnf5", "makecache"], False),
    ("/usr/bin/dnf5", ["dnf5", "group", "list"], False),
    ("/usr/bin/dnf5", ["dnf5", "--help"], False),
    ("/usr/bin/dnf5", ["dnf5"], False),
    ("/usr/bin/dnf5daemon-server", ["dnf5daemon-server", "install"], False),
    ("/usr/bin/sh", ["sh", "-c", "dnf5 install x"], False),
])
def test_dnf5_changes_system(tmp_path: Path, exe: str, argv: list[str], changes: bool) -> None:
    proc = tmp_path / "proc/4242"
    proc.mkdir(parents=True)
    (proc / "exe").symlink_to(exe)
    (proc / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in argv))
    assert pkgmanagers.dnf5_changes_system(4242, str(tmp_path)) is changes


def test_dnf5_changes_system_of_a_gone_process(tmp_path: Path) -> None:
    assert not pkgmanagers.dnf5_changes_system(4242, str(tmp_path))


def test_dnf5_hooks_begin_only_when_theirs(monkeypatch: pytest.MonkeyPatch) -> None:
    """repos_configured begins only for the dnf5 command line about to change the system
    (this process is not dnf5); goal_resolved only for a holder not recorded yet."""
    began: list[Holder] = []
    monkeypatch.setattr(pkgtransaction, "begin",
                        lambda holder, **_: began.append(holder))
    me = str(os.getpid())
    argv = ["package-transaction", "begin", "--holder", me, "--dnf5"]
    assert cli.main([*argv, "repos-configured"], {}) == 0
    assert began == []
    holder = Holder.of(os.getpid())
    assert holder is not None
    monkeypatch.setattr(pkgtransaction, "holders", lambda host_root="/": [holder])
    assert cli.main([*argv, "goal-resolved"], {}) == 0
    assert began == []
    monkeypatch.setattr(pkgtransaction, "holders", lambda host_root="/": [])
    assert cli.main([*argv, "goal-resolved"], {}) == 0
    assert began == [holder]
