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

import os
import stat
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from flatpak_sysext import cli, hoststate, pkgtransaction
from flatpak_sysext.hostsync import Change, HostSync
from flatpak_sysext.installation import Installation
from flatpak_sysext.pkgtransaction import Holder, TransactionError
from testsupport.source import SOURCE_ROOT

UNMERGE = ("systemd-sysext", "unmerge")
REFRESH = ("systemd-sysext", "refresh")
DBUS_RELOAD = ("busctl", "--system", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
               "org.freedesktop.DBus", "ReloadConfig")


class Host:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.commands: list[tuple[str, ...]] = []
        self.spawned: list[list[str]] = []
        self.resyncs = 0
        self.unmerges = True
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

    def __call__(self, argv: Sequence[str]) -> tuple[int, str]:
        # By its absolute path among the host's tools (here: under the fake root).
        assert os.path.dirname(argv[0]) == str(self.root / "usr/bin"), argv
        self.commands.append((os.path.basename(argv[0]), *argv[1:]))
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


def test_after_a_transaction_every_reload_runs_even_with_no_link_change(
        tmp_path: Path) -> None:
    inst = Installation("default", str(tmp_path / "inst"))
    fake = SyncHost(tmp_path / "host")
    sync = HostSync([inst], state_dir=str(tmp_path / "state"), host_root=str(fake.root),
                    runner=fake, tools_root=str(fake.root))
    sync.owe_all()
    sync.run([], [])
    assert fake.commands[0] == REFRESH
    # Every reload but polkit's, which is a restart: a transaction restarts no unit.
    assert fake.commands[1:] == [("systemctl", "daemon-reload"), DBUS_RELOAD,
                                 ("udevadm", "control", "--reload")]
    assert hoststate.load(inst, str(tmp_path / "state"))[0].pending is None


def hook_line(option: str) -> str:
    for line in (SOURCE_ROOT / "hooks/dpkg/flatpak-sysext").read_text().splitlines():
        if line.startswith(f"{option}="):
            return line[len(option) + 1:]
    raise AssertionError(f"no {option} in the dpkg hook")


@pytest.mark.parametrize("option", ["pre-invoke", "post-invoke"])
def test_dpkg_hook_does_nothing_once_the_command_is_gone(option: str, tmp_path: Path) -> None:
    line = hook_line(option).replace("/usr/bin/flatpak-sysext", str(tmp_path / "gone"))
    result = subprocess.run(["/bin/sh", "-c", line], capture_output=True, text=True)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize(("option", "action"), [("pre-invoke", "begin"),
                                                ("post-invoke", "end")])
def test_dpkg_hook_names_dpkg_as_the_holder(option: str, action: str, tmp_path: Path) -> None:
    # dpkg runs a hook with system(): sh -c LINE, whose $PPID is dpkg (here: this test).
    fake = tmp_path / "flatpak-sysext"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\n')
    fake.chmod(0o755)
    line = hook_line(option).replace("/usr/bin/flatpak-sysext", str(fake))
    subprocess.run(["/bin/sh", "-c", line], check=True)
    args = (tmp_path / "args").read_text().split()
    assert args == ["package-transaction", action, "--holder", str(os.getpid())]


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
    assert pkgtransaction.dnf5_changes_system(4242, str(tmp_path)) is changes


def test_dnf5_changes_system_of_a_gone_process(tmp_path: Path) -> None:
    assert not pkgtransaction.dnf5_changes_system(4242, str(tmp_path))


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
