# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Host sync at the runner boundary (docs/reference.md#host-sync), for what a real host
cannot be made to show. A fake host stands in: a directory as the host's root and a runner
that records every command and, for ``systemd-sysext refresh``, merges the way systemd
would (the names of the target directory's links, their extension-release files).

What a real host shows is tests/test_booted_hostsync.py, on a booted Debian 12 with the
real Flatpak: each kind of content taking effect once linked (unit, D-Bus policy and
service, polkit action, sysusers and tmpfiles in that order, udev skipped where none
runs), an update taking away what it dropped (old content's reloads, its unit stopped),
removal by the record of the last version, other merged images not judged, no sync
without a change, EXTENSION_RELOAD_MANAGER on systemd 252, and ``status`` reporting it.
The real merge is tests/test_merge.py. The cases left here need the fake because:

- which file asks for which command, and that nothing else runs: a real extension whose
  service works ships several at once, an effect does not show what asked for it, a
  reload that changes nothing shows nothing, and wants/ links, generators and polkit
  rules are restricted classes;
- udev running: no udev runs in a container, so ``udevadm control --reload``, its
  place in the order, only runs here;
- names an attacker would choose (``-a.conf``, forged records, tools a tree provides, a
  host with them only in ``/bin``): what matters is what never reaches a command line;
- templates and sockets restarted by pattern on update: the argv, not an effect;
- a refresh that exits 0 without merging, an unlinked image left merged, a command that
  fails: extensions are validated before they are linked, and the host's commands
  succeed, so these are played;
- systemd 255 (the booted host has 252), no systemd as PID 1, SELinux enforcing: other
  hosts;
- a run killed between its links and its sync, and lost content records: what is then
  reloaded is everything, seen only as commands;
- the state file (saved, corrupt, unwritable): the host plays no part;
- whose unit it is for every place systemd may load it from (generators, control,
  attached, masked): the booted host shows a transient and a /usr/local unit, the rest
  is systemd's answer played (``FakeHost.fragments``) or its search order on files;
- a unit slow to stop: the bound on the real runner, with a command that sleeps
  (tests/test_booted_pkgmanagers.py has dpkg meet such a sync on the booted host).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from flatpak_sysext.flatpak.installation import Installation
from flatpak_sysext.host import hostcommands
from flatpak_sysext.host.hostcommands import run_command
from flatpak_sysext.host.hostsync import Change, HostSync
from flatpak_sysext.state import hoststate, store

APP = "org.fsx.Profiler"
REFRESH = ("systemd-sysext", "refresh")
DAEMON_RELOAD = ("systemctl", "daemon-reload")
DBUS_RELOAD = ("busctl", "--system", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
               "org.freedesktop.DBus", "ReloadConfig")
POLKIT_RELOAD = ("systemctl", "try-reload-or-restart", "polkit.service")
UDEV_RELOAD = ("udevadm", "control", "--reload")
VERSION = ("systemd-sysext", "--version")


class FakeHost:
    """The host's root directory and a recording runner that plays systemd."""

    def __init__(self, root: Path, target: Path, tools: Path) -> None:
        self.root = root
        self.tools = tools
        (tools / "usr/bin").mkdir(parents=True)
        for name in ("systemd-sysext", "systemctl", "busctl", "udevadm", "systemd-sysusers",
                     "systemd-tmpfiles"):
            (tools / "usr/bin" / name).write_text("#!/bin/sh\n")
            (tools / "usr/bin" / name).chmod(0o755)
        self.target = target
        self.commands: list[tuple[str, ...]] = []
        self.queries: list[tuple[str, ...]] = []
        """``systemctl show`` calls, kept apart: they change nothing."""
        self.fragments: dict[str, str] = {}
        """What ``systemctl show`` says a unit's FragmentPath is; not found otherwise."""
        self.results: dict[tuple[str, ...], tuple[int, str]] = {}
        self.merges = True
        (root / "run/systemd/system").mkdir(parents=True)
        (root / "run/udev").mkdir()
        (root / "run/udev/control").touch()  # udev runs: no container can show that
        target.mkdir()

    def __call__(self, argv: Sequence[str]) -> tuple[int, str]:
        # Every command by its absolute path under the tools' root, recorded by name.
        assert os.path.dirname(argv[0]) == str(self.tools / "usr/bin"), argv
        argv = (os.path.basename(argv[0]), *argv[1:])
        if argv[:2] == ("systemctl", "show"):
            self.queries.append(argv)
            return 0, "\n".join(self._show(u) for u in argv[argv.index("--") + 1:])
        self.commands.append(argv)
        if argv == REFRESH and self.merges:
            self._merge()
        return self.results.get(argv, (0, ""))

    def _show(self, unit: str) -> str:
        fragment = self.fragments.get(unit, "")
        state = "masked" if fragment == "/dev/null" else "loaded" if fragment else "not-found"
        return f"LoadState={state}\nFragmentPath={'' if state == 'masked' else fragment}\n"

    def _merge(self) -> None:
        # The merged /usr is the union of the linked trees' usr/ (a copy; the host has
        # no files of its own here), with systemd-sysext's list of what it merged.
        meta = self.root / "usr/.systemd-sysext"
        shutil.rmtree(self.root / "usr", ignore_errors=True)
        meta.mkdir(parents=True)
        names = sorted(p.name for p in self.target.iterdir() if p.exists())
        for name in names:
            shutil.copytree(self.target / name / "usr", self.root / "usr", dirs_exist_ok=True)
        (meta / "extensions").write_text("\n".join(names))


class SyncRig:
    """An installation whose deployments are plain directories, and the fake host."""

    def __init__(self, root: Path) -> None:
        self.inst = Installation("default", str(root / "inst"))
        self.state = str(root / "state")
        self.host = FakeHost(root / "host", root / "extensions", root / "tools")
        self.count = 0

    def deploy(self, files: Iterable[str], release: str = "ID=_any\n", name: str = APP) -> str:
        """A deployment holding ``files``; returns its extension root."""
        self.count += 1
        tree = Path(self.inst.path) / "app" / name / f"x86_64/stable/{self.count}/files/ext"
        (tree / "usr/lib/extension-release.d").mkdir(parents=True)
        (tree / f"usr/lib/extension-release.d/extension-release.{name}").write_text(release)
        for f in files:
            (tree / f).parent.mkdir(parents=True, exist_ok=True)
            (tree / f).write_text("x")
        return str(tree)

    def link(self, tree: str | None, name: str = APP) -> None:
        link = self.host.target / name
        if os.path.lexists(link):
            link.unlink()
        if tree is not None:
            link.symlink_to(tree)

    def sync(self, changes: Sequence[Change]) -> hoststate.SyncReport | None:
        """One run: the links of ``changes`` are made, then the host synced."""
        hs = HostSync([self.inst], state_dir=self.state, host_root=str(self.host.root),
                      runner=self.host, tools_root=str(self.host.tools))
        if changes:
            hs.owe()
        for c in changes:
            self.link(c.new, c.name)
        self.host.commands.clear()
        linked = [p.name for p in self.host.target.iterdir()]
        return hs.run(changes, linked)

    def install(self, files: Iterable[str], release: str = "ID=_any\n") -> str:
        tree = self.deploy(files, release)
        self.sync([Change(APP, None, tree, frozenset(files))])
        return tree


@pytest.fixture
def sync_rig(tmp_path: Path) -> SyncRig:
    return SyncRig(tmp_path)


def outcomes(report: hoststate.SyncReport | None) -> dict[str, str]:
    assert report is not None
    return {s.step: s.outcome for s in report.steps}


@pytest.mark.parametrize(("files", "expected"), [
    (["usr/lib/systemd/system/multi-user.target.wants/profilerd.service"], [DAEMON_RELOAD]),
    (["usr/lib/systemd/system-generators/profiler-generator"], [DAEMON_RELOAD]),
    (["usr/share/dbus-1/system.d/org.fsx.Profiler.conf"], [DBUS_RELOAD]),
    (["usr/share/dbus-1/system-services/org.fsx.Profiler.service"], [DBUS_RELOAD]),
    (["usr/share/polkit-1/rules.d/50-profiler.rules"], [POLKIT_RELOAD]),
    (["usr/lib/udev/rules.d/70-profiler.rules"], [UDEV_RELOAD]),
    # Nothing to reload: plain files, the session bus, presets, a non-config name.
    (["usr/libexec/profilerd", "usr/share/dbus-1/services/org.fsx.Profiler.service",
      "usr/share/dbus-1/interfaces/org.fsx.Profiler.xml",
      "usr/lib/systemd/system-preset/50-profiler.preset", "usr/lib/tmpfiles.d/README",
      "opt/profiler/data"], []),
])
def test_each_kind_of_content_gets_exactly_its_reload(
        sync_rig: SyncRig, files: list[str], expected: list[tuple[str, ...]]) -> None:
    tree = sync_rig.deploy(files)
    report = sync_rig.sync([Change(APP, None, tree, frozenset(files))])
    assert sync_rig.host.commands == [REFRESH, *expected]
    assert report is not None and report.ok
    assert outcomes(report)["verify"] == "ok"


def test_everything_at_once_runs_in_order_once(sync_rig: SyncRig) -> None:
    files = ["usr/lib/sysusers.d/b.conf", "usr/lib/sysusers.d/-a.conf",
             "usr/lib/tmpfiles.d/t.conf", "usr/lib/systemd/system/a.service",
             "usr/lib/systemd/system/b.service", "usr/share/dbus-1/system.d/a.conf",
             "usr/share/polkit-1/actions/a.policy", "usr/lib/udev/rules.d/a.rules"]
    sync_rig.install(files)
    # Users first (units and D-Bus policy may name them), then the manager, then the
    # services; a name that looks like an option stays an argument after "--".
    assert sync_rig.host.commands == [
        REFRESH, ("systemd-sysusers", "--", "-a.conf", "b.conf"),
        ("systemd-tmpfiles", "--create", "--", "t.conf"),
        DAEMON_RELOAD, DBUS_RELOAD, POLKIT_RELOAD, UDEV_RELOAD]


def test_units_of_an_unmerged_extension_are_stopped_without_a_warning(sync_rig: SyncRig) -> None:
    """A package transaction has taken every extension out of /usr when its end finds one
    that must go: there is no unit file left to disable, and a unit systemd no longer
    knows (systemctl's exit status 5) does not run. Neither is a warning."""
    tree = sync_rig.install(["usr/lib/systemd/system/a.service"])
    shutil.rmtree(sync_rig.host.root / "usr")
    sync_rig.host.results[("systemctl", "stop", "--", "a.service")] = (
        5, "Failed to stop a.service: Unit a.service not loaded.")
    report = sync_rig.sync([Change(APP, tree, None)])
    assert ("systemctl", "disable", "--no-reload", "--", "a.service") not in sync_rig.host.commands
    assert outcomes(report) == {"stop-units": "ok", "disable-units": "skipped", "refresh": "ok",
                                "verify": "ok", "daemon-reload": "ok",
                                "stop-reactivated": "ok"}
    assert report is not None and hoststate.summary(report)[1] == []
    # Any other failure to stop is still one.
    tree = sync_rig.install(["usr/lib/systemd/system/a.service"])
    sync_rig.host.results[("systemctl", "stop", "--", "a.service")] = (1, "Job failed.")
    assert outcomes(sync_rig.sync([Change(APP, tree, None)]))["stop-units"] == "failed"


def test_update_restarts_the_units_it_still_ships_after_daemon_reload(
        sync_rig: SyncRig) -> None:
    kept = ["usr/lib/systemd/system/a.service", "usr/lib/systemd/system/t@.service",
            "usr/lib/systemd/system/a.socket"]
    old = sync_rig.install([*kept, "usr/lib/systemd/system/gone.timer"])
    files = frozenset([*kept, "usr/lib/systemd/system/new.service"])
    new = sync_rig.deploy(sorted(files))
    sync_rig.sync([Change(APP, old, new, files)])
    # The running ones get the new binary (try-: a stopped unit stays stopped), every
    # instance of a template too; the new unit is not started: nothing enabled it.
    assert sync_rig.host.commands == [
        ("systemctl", "stop", "--", "gone.timer"),
        ("systemctl", "disable", "--no-reload", "--", "gone.timer"),
        REFRESH, DAEMON_RELOAD, ("systemctl", "stop", "--", "gone.timer"),
        ("systemctl", "try-reload-or-restart", "--", "a.service", "a.socket", "t@*.service")]


def test_units_are_stopped_one_by_one_and_a_template_disabled_by_its_name(
        sync_rig: SyncRig) -> None:
    """systemctl's exit status is its first error's: a unit it no longer knows must not
    hide another's failure. ``disable`` takes no glob: a template by its own name
    disables its instances."""
    tree = sync_rig.install(["usr/lib/systemd/system/a.service",
                             "usr/lib/systemd/system/t@.service"])
    sync_rig.host.results[("systemctl", "stop", "--", "a.service")] = (
        5, "Failed to stop a.service: Unit a.service not loaded.")
    sync_rig.host.results[("systemctl", "stop", "--", "t@*.service")] = (
        1, "Failed to stop t@1.service: Operation refused.")
    report = sync_rig.sync([Change(APP, tree, None)])
    assert sync_rig.host.commands[:3] == [
        ("systemctl", "stop", "--", "a.service"), ("systemctl", "stop", "--", "t@*.service"),
        ("systemctl", "disable", "--no-reload", "--", "a.service", "t@.service")]
    assert outcomes(report)["stop-units"] == "failed"
    assert report is not None
    assert [s.message for s in report.steps if s.step == "stop-units"] == [
        "exit status 1: Failed to stop t@1.service: Operation refused."]


def test_a_unit_whose_file_in_etc_or_run_comes_first_is_not_ours(sync_rig: SyncRig) -> None:
    """An administrator's (or the runtime's) a.service comes before the extension's: on
    uninstall and update, host sync leaves that unit alone, and says so."""
    tree = sync_rig.install(["usr/lib/systemd/system/a.service",
                             "usr/lib/systemd/system/b.service"])
    (sync_rig.host.root / "etc/systemd/system").mkdir(parents=True)
    (sync_rig.host.root / "etc/systemd/system/a.service").write_text("[Service]\n")
    report = sync_rig.sync([Change(APP, tree, None)])
    assert [c for c in sync_rig.host.commands if c[0] == "systemctl" and "a.service" in c] == []
    assert ("systemctl", "stop", "--", "b.service") in sync_rig.host.commands
    assert report is not None
    assert [s.message for s in report.steps if s.step == "stop-units"] == [
        "b.service; left alone, not the extension's unit: "
        "a.service (/etc/systemd/system/a.service comes first)"]
    old = sync_rig.install(["usr/lib/systemd/system/a.service"])
    new = sync_rig.deploy(["usr/lib/systemd/system/a.service"])
    report = sync_rig.sync([Change(APP, old, new, frozenset(["usr/lib/systemd/system/a.service"]))])
    assert sync_rig.host.commands == [REFRESH, DAEMON_RELOAD]
    assert outcomes(report)["restart-units"] == "skipped"


def test_systemd_says_whose_unit_it_is(sync_rig: SyncRig) -> None:
    """Where systemd has loaded a unit, its FragmentPath decides: a transient unit, one a
    generator wrote, one under /usr/local or a masked one of the extension's name is not
    stopped, disabled or restarted; systemd's own answer outranks the files (a
    generator.late file comes after the extension's and loses)."""
    units = ["a.service", "b.service", "c.service", "d.service", "e.service"]
    tree = sync_rig.install([f"usr/lib/systemd/system/{u}" for u in units])
    sync_rig.host.fragments.update({
        "a.service": "/run/systemd/transient/a.service",
        "b.service": "/usr/local/lib/systemd/system/b.service",
        "c.service": "/run/systemd/generator/c.service",
        "d.service": "/dev/null",
        "e.service": "/usr/lib/systemd/system/e.service"})
    (sync_rig.host.root / "run/systemd/generator.late").mkdir(parents=True)
    (sync_rig.host.root / "run/systemd/generator.late/e.service").write_text("[Unit]\n")
    report = sync_rig.sync([Change(APP, tree, None)])
    acted = [c for c in sync_rig.host.commands if c[0] == "systemctl" and c[1] != "daemon-reload"]
    assert acted == [("systemctl", "stop", "--", "e.service"),
                     ("systemctl", "disable", "--no-reload", "--", "e.service"),
                     ("systemctl", "stop", "--", "e.service")]
    assert sync_rig.host.queries == [
        ("systemctl", "show", "-p", "LoadState,FragmentPath", "--", *units)]
    assert report is not None
    assert [s.message for s in report.steps if s.step == "stop-units"] == [
        "e.service; left alone, not the extension's unit: "
        "a.service (systemd loads /run/systemd/transient/a.service), "
        "b.service (systemd loads /usr/local/lib/systemd/system/b.service), "
        "c.service (systemd loads /run/systemd/generator/c.service), d.service (masked)"]
    # An update: only the units systemd loads from the extension are restarted.
    old = sync_rig.install(["usr/lib/systemd/system/a.service",
                            "usr/lib/systemd/system/e.service"])
    new = sync_rig.deploy(["usr/lib/systemd/system/a.service", "usr/lib/systemd/system/e.service"])
    sync_rig.sync([Change(APP, old, new, frozenset(["usr/lib/systemd/system/a.service",
                                                    "usr/lib/systemd/system/e.service"]))])
    assert sync_rig.host.commands[-1] == ("systemctl", "try-reload-or-restart", "--", "e.service")


@pytest.mark.parametrize("first", ["run/systemd/transient", "usr/local/lib/systemd/system",
                                   "run/systemd/generator.early", "etc/systemd/system.control",
                                   "run/systemd/system.attached"])
def test_systemds_search_order_decides_for_a_unit_it_has_not_loaded(
        sync_rig: SyncRig, first: str) -> None:
    tree = sync_rig.install(["usr/lib/systemd/system/a.service"])
    (sync_rig.host.root / first).mkdir(parents=True, exist_ok=True)
    (sync_rig.host.root / first / "a.service").write_text("[Service]\n")
    report = sync_rig.sync([Change(APP, tree, None)])
    assert [c for c in sync_rig.host.commands if "a.service" in c] == []
    assert outcomes(report)["stop-units"] == "skipped"


@pytest.mark.parametrize("name", ["../x.service", "--now.service", "a b.service", "x.conf",
                                  "x.mount", "@.service", "a@b/c.service"])
def test_unit_names_from_the_record_are_checked(sync_rig: SyncRig, name: str) -> None:
    """A host sync record edited to put something else on systemctl's command line is
    discarded, not obeyed."""
    tree = sync_rig.install(["usr/lib/systemd/system/a.service"])
    path = Path(hoststate.state_path(sync_rig.inst, sync_rig.state))
    data = json.loads(path.read_text())
    data["contents"][APP]["units"] = [name]
    path.write_text(json.dumps(data))
    report = sync_rig.sync([Change(APP, tree, None)])
    assert all(name not in argv for argv in sync_rig.host.commands)
    assert report is not None and any("discarded" in w for w in report.warnings)


def test_content_never_recorded_reloads_everything_on_removal(sync_rig: SyncRig) -> None:
    tree = sync_rig.deploy(["usr/libexec/profilerd"])
    sync_rig.link(tree)  # Linked while host sync was off: nothing recorded.
    sync_rig.sync([Change(APP, tree, None)])
    assert sync_rig.host.commands == [REFRESH, DAEMON_RELOAD, DBUS_RELOAD, POLKIT_RELOAD,
                                   UDEV_RELOAD]


def test_a_lost_record_still_stops_the_units_of_a_snapshot_the_store_keeps(
        sync_rig: SyncRig) -> None:
    """hostsync.json lost (or linked while host sync was off): the units of a removed
    extension are those its snapshot ships, which the store keeps until the next boot;
    a tree outside the store is never read for them."""
    snapshot = Path(store.directory(sync_rig.state, sync_rig.inst.path)) / "snap"
    (snapshot / "usr/lib/systemd/system").mkdir(parents=True)
    (snapshot / "usr/lib/systemd/system/a.service").write_text("[Service]\n")
    (snapshot / "usr/lib/systemd/system/not a unit").write_text("")
    sync_rig.link(str(snapshot))
    report = sync_rig.sync([Change(APP, str(snapshot), None)])
    assert sync_rig.host.commands[0] == ("systemctl", "stop", "--", "a.service")
    assert report is not None and "host sync: stopped a.service" in hoststate.summary(report)[0]
    tree = sync_rig.deploy(["usr/lib/systemd/system/b.service"])
    sync_rig.link(tree)
    sync_rig.sync([Change(APP, tree, None)])
    assert not any(c[:2] == ("systemctl", "stop") for c in sync_rig.host.commands)


def test_verification_catches_a_refresh_that_succeeded_without_merging(sync_rig: SyncRig) -> None:
    sync_rig.host.merges = False  # systemd <= 254: the merge failed, the exit status is 0.
    tree = sync_rig.deploy(["usr/lib/systemd/system/a.service"])
    report = sync_rig.sync([Change(APP, None, tree,
                                   frozenset(["usr/lib/systemd/system/a.service"]))])
    assert report is not None and not report.ok
    verify = next(s for s in report.steps if s.step == "verify")
    assert verify.outcome == "failed" and f"not merged: {APP}" in verify.message
    # A failed step is a warning: the reloads still ran.
    assert sync_rig.host.commands == [REFRESH, DAEMON_RELOAD]
    assert f"host sync: verify failed: not merged: {APP}" in "\n".join(
        hoststate.summary(report)[1])


def test_verification_catches_a_removed_extension_still_merged(sync_rig: SyncRig) -> None:
    tree = sync_rig.install(["usr/libexec/profilerd"])
    sync_rig.host.merges = False  # The old merge stays in place.
    report = sync_rig.sync([Change(APP, tree, None)])
    assert report is not None
    verify = next(s for s in report.steps if s.step == "verify")
    assert verify.outcome == "failed" and f"still merged after unlinking: {APP}" in verify.message


def test_a_failing_command_is_a_warning_and_the_rest_still_runs(sync_rig: SyncRig) -> None:
    sync_rig.host.results[DAEMON_RELOAD] = (
        1, "Failed to connect to bus: No such file or directory\n")
    tree = sync_rig.deploy(["usr/lib/systemd/system/a.service", "usr/lib/udev/rules.d/a.rules"])
    report = sync_rig.sync([Change(APP, None, tree, frozenset(
        ["usr/lib/systemd/system/a.service", "usr/lib/udev/rules.d/a.rules"]))])
    assert report is not None and not report.ok
    assert sync_rig.host.commands == [REFRESH, DAEMON_RELOAD, UDEV_RELOAD]
    assert hoststate.summary(report) == (
        ["host sync: refresh, verify, udev-reload: ok"],
        ["host sync: daemon-reload failed: exit status 1: Failed to connect to bus: "
         "No such file or directory"])


def test_extension_reload_manager_spares_the_daemon_reload_from_systemd_255(
        sync_rig: SyncRig) -> None:
    sync_rig.host.results[VERSION] = (0, "systemd 255 (255.4-1)\n+PAM +AUDIT\n")
    files = ["usr/lib/systemd/system/a.service"]
    tree = sync_rig.deploy(files, release="ID=_any\nEXTENSION_RELOAD_MANAGER=yes\n")
    report = sync_rig.sync([Change(APP, None, tree, frozenset(files))])
    assert sync_rig.host.commands == [REFRESH, VERSION]
    assert outcomes(report)["daemon-reload"] == "skipped"


def test_without_the_flag_the_version_is_not_even_asked(sync_rig: SyncRig) -> None:
    sync_rig.install(["usr/lib/systemd/system/a.service"], release="ID=_any\n"
                  "EXTENSION_RELOAD_MANAGER=0\n")
    assert VERSION not in sync_rig.host.commands


def test_nothing_runs_without_systemd(sync_rig: SyncRig) -> None:
    (sync_rig.host.root / "run/systemd/system").rmdir()
    tree = sync_rig.deploy(["usr/lib/systemd/system/a.service"])
    report = sync_rig.sync([Change(APP, None, tree,
                                   frozenset(["usr/lib/systemd/system/a.service"]))])
    assert sync_rig.host.commands == []
    assert report is not None and report.ok
    assert hoststate.summary(report) == (["host sync: refresh skipped: systemd is not running"],
                                         [])


def test_selinux_enforcing_is_no_warning(sync_rig: SyncRig) -> None:
    # Snapshots are labeled for the host's policy (selinux.py): nothing to warn about.
    (sync_rig.host.root / "sys/fs/selinux").mkdir(parents=True)
    (sync_rig.host.root / "sys/fs/selinux/enforce").write_text("1")
    tree = sync_rig.deploy(["usr/libexec/profilerd"])
    report = sync_rig.sync([Change(APP, None, tree, frozenset(["usr/libexec/profilerd"]))])
    assert report is not None and report.ok and report.warnings == ()


def test_a_run_that_died_before_syncing_is_finished_by_the_next(sync_rig: SyncRig) -> None:
    sync_rig.install(["usr/libexec/profilerd"])
    tree = sync_rig.deploy(["usr/libexec/profilerd"])
    dying = HostSync([sync_rig.inst], state_dir=sync_rig.state,
                     host_root=str(sync_rig.host.root), runner=sync_rig.host,
                     tools_root=str(sync_rig.host.tools))
    dying.owe()
    sync_rig.link(tree)  # ...and the run is killed here.
    sync_rig.host.commands.clear()
    report = sync_rig.sync([])
    # What changed is unknown now: everything a change can need is reloaded.
    assert sync_rig.host.commands == [REFRESH, DAEMON_RELOAD, DBUS_RELOAD, POLKIT_RELOAD,
                                   UDEV_RELOAD]
    assert report is not None and report.ok
    assert sync_rig.sync([]) is None


def test_owing_without_a_change_owes_nothing_afterwards(sync_rig: SyncRig) -> None:
    hs = HostSync([sync_rig.inst], state_dir=sync_rig.state,
                  host_root=str(sync_rig.host.root), runner=sync_rig.host,
                  tools_root=str(sync_rig.host.tools))
    hs.owe()  # Links were to change, but every action failed.
    assert hs.run([], []) is None
    assert sync_rig.sync([]) is None
    assert sync_rig.host.commands == []


def test_the_last_sync_is_recorded_for_status(sync_rig: SyncRig) -> None:
    assert hoststate.last_sync(sync_rig.inst, sync_rig.state) is None
    sync_rig.host.results[DAEMON_RELOAD] = (1, "boom")
    tree = sync_rig.deploy(["usr/lib/systemd/system/a.service"])
    report = sync_rig.sync([Change(APP, None, tree,
                                   frozenset(["usr/lib/systemd/system/a.service"]))])
    assert hoststate.last_sync(sync_rig.inst, sync_rig.state) == report
    data = json.loads(Path(hoststate.state_path(sync_rig.inst, sync_rig.state)).read_text())
    assert data["last"]["ok"] is False
    assert data["contents"] == {APP: {"reloads": ["daemon-reload"], "sysusers": [],
                                      "tmpfiles": [], "units": ["a.service"], "stop": [],
                                      "restart": []}}
    assert data["pending"] is None


def test_two_syncs_in_one_second_are_told_apart(sync_rig: SyncRig) -> None:
    # The trigger tells a sync whose time differs from the one it told last: an update's
    # sync and the uninstall's right after it must not share one.
    tree = sync_rig.deploy(["usr/lib/systemd/system/a.service"])
    first = sync_rig.sync([Change(APP, None, tree,
                                  frozenset(["usr/lib/systemd/system/a.service"]))])
    second = sync_rig.sync([Change(APP, tree, None, frozenset())])
    assert first is not None and second is not None
    assert first.time != second.time
    assert hoststate.last_sync(sync_rig.inst, sync_rig.state) == second


@pytest.mark.parametrize("garbage", [b"{", b"[]", b'{"version": 1, "contents": {"a": 1}}',
                                     b'{"version": 1, "last": {"time": 1}}', b"\xff"])
def test_a_corrupt_state_is_discarded_with_a_warning(sync_rig: SyncRig, garbage: bytes) -> None:
    path = Path(hoststate.state_path(sync_rig.inst, sync_rig.state))
    path.parent.mkdir(parents=True)
    path.write_bytes(garbage)
    assert hoststate.last_sync(sync_rig.inst, sync_rig.state) is None
    tree = sync_rig.deploy(["usr/libexec/profilerd"])
    report = sync_rig.sync([Change(APP, None, tree, frozenset(["usr/libexec/profilerd"]))])
    assert report is not None
    assert any("discarded" in w for w in report.warnings)
    assert hoststate.last_sync(sync_rig.inst, sync_rig.state) is not None


def test_a_state_that_cannot_be_written_is_a_warning(sync_rig: SyncRig) -> None:
    Path(sync_rig.inst.path).mkdir(parents=True)
    blocked = Path(hoststate.state_path(sync_rig.inst, sync_rig.state)).parent
    blocked.parent.mkdir(parents=True)
    blocked.write_text("not a directory")
    tree = sync_rig.deploy(["usr/libexec/profilerd"])
    report = sync_rig.sync([Change(APP, None, tree, frozenset(["usr/libexec/profilerd"]))])
    assert report is not None and outcomes(report)["verify"] == "ok"
    assert any("cannot save the host sync state" in w for w in report.warnings)


def test_the_real_runner_reports_instead_of_raising(tmp_path: Path) -> None:
    assert run_command([str(tmp_path / "no-such-command")])[0] == 127
    code, output = run_command(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (code, output) == (3, "out\nerr\n")


def test_a_unit_slow_to_stop_holds_host_sync_a_bounded_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """systemctl stop waits for the unit's job (an ExecStop= that sleeps: what
    tests/test_booted_pkgmanagers.py runs for real); host sync gives up on it after
    UNIT_STEP_TIMEOUT, far below the bound of other commands, and says systemd goes on."""
    monkeypatch.setattr(hostcommands, "UNIT_STEP_TIMEOUT", 0.5)
    systemctl = tmp_path / "systemctl"
    systemctl.write_text("#!/bin/sh\nexec sleep 2\n")
    systemctl.chmod(0o755)
    started = time.monotonic()
    code, output = run_command([str(systemctl), "stop", "--", "slow.service"])
    assert time.monotonic() - started < 1.5
    assert (code, output) == (124, "not done after 0.5 s; systemd goes on with the job "
                                    "(see 'systemctl list-jobs')")
    assert run_command([str(systemctl), "daemon-reload"]) == (0, "")  # not a unit step


def test_commands_run_by_absolute_path_never_one_a_linked_tree_provides(
        sync_rig: SyncRig) -> None:
    # A tree shipping usr/bin/systemctl (or a bin/ of its own) is never what host sync runs,
    # even where the host has no /usr/bin/systemctl of its own.
    (sync_rig.host.tools / "usr/bin/systemctl").unlink()
    bin_dir = sync_rig.host.tools / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text("#!/bin/sh\n")
    (bin_dir / "systemctl").chmod(0o755)
    files = ["usr/lib/systemd/system/profilerd.service", "usr/bin/systemctl"]
    tree = sync_rig.deploy(files)
    hs = HostSync([sync_rig.inst], state_dir=sync_rig.state, host_root=str(sync_rig.host.root),
                  runner=sync_rig.host, tools_root=str(sync_rig.host.tools))
    hs.owe()
    sync_rig.link(tree)
    report = hs.run([Change(APP, None, tree, frozenset(files))], [APP], frozenset(files))
    assert outcomes(report)["daemon-reload"] == "failed"
    assert "provided by a linked extension" in report.steps[-1].message  # type: ignore[union-attr]
    assert all(c[0] != "systemctl" for c in sync_rig.host.commands)


def test_host_tools_are_found_where_the_distribution_installs_them(tmp_path: Path) -> None:
    from flatpak_sysext.host.hostcommands import tool

    (tmp_path / "bin").mkdir()
    assert tool("udevadm", str(tmp_path)) is None  # never PATH
    (tmp_path / "bin/udevadm").write_text("#!/bin/sh\n")
    (tmp_path / "bin/udevadm").chmod(0o755)
    assert tool("udevadm", str(tmp_path)) == str(tmp_path / "bin/udevadm")
    assert tool("udevadm", str(tmp_path), {"usr/bin/udevadm"}) is None


def test_only_plain_names_reach_a_command_line(sync_rig: SyncRig) -> None:
    files = ["usr/lib/tmpfiles.d/good.conf", "usr/lib/tmpfiles.d/a b.conf",
             "usr/lib/tmpfiles.d/a\nb.conf", "usr/lib/tmpfiles.d/.hidden.conf",
             "usr/lib/tmpfiles.d/caf\udce9.conf", "usr/lib/sysusers.d/x;y.conf"]
    sync_rig.install(files)
    assert ("systemd-tmpfiles", "--create", "--", "good.conf") in sync_rig.host.commands
    assert not [c for c in sync_rig.host.commands if c[0] == "systemd-sysusers"]
    # The service's own record is held to the same form, whoever wrote it.
    path = Path(hoststate.state_path(sync_rig.inst, sync_rig.state))
    data = json.loads(path.read_text())
    data["pending"] = {"reloads": [], "sysusers": [], "tmpfiles": ["/tmp/anything.conf"]}
    path.write_text(json.dumps(data))
    assert "discarded" in (hoststate.load(sync_rig.inst, sync_rig.state)[1] or "")
    sync_rig.host.commands.clear()
    assert sync_rig.sync([]) is None  # nothing is owed: the record is not believed
    assert sync_rig.host.commands == []


@pytest.mark.parametrize(("version", "restarted_by_us"), [
    ("systemd 257 (257.13-1)\n", True),  # ignores EXTENSION_RESTART_UNITS=
    ("systemd 262 (262.1-1)\n", False),  # restarts it itself, after its own reload
])
def test_units_systemd_sysext_restarts_itself_are_not_restarted_twice(
        sync_rig: SyncRig, version: str, restarted_by_us: bool) -> None:
    units = ["usr/lib/systemd/system/a.service", "usr/lib/systemd/system/b.service"]
    sync_rig.host.results[VERSION] = (0, version)
    release = "ID=_any\nEXTENSION_RESTART_UNITS=a.service\n"
    old = sync_rig.deploy(units, release)
    sync_rig.sync([Change(APP, None, old, frozenset(units))])
    new = sync_rig.deploy(units, release)
    report = sync_rig.sync([Change(APP, old, new, frozenset(units))])
    restarts = [c for c in sync_rig.host.commands if "try-reload-or-restart" in c]
    if restarted_by_us:
        assert DAEMON_RELOAD in sync_rig.host.commands
        assert restarts == [("systemctl", "try-reload-or-restart", "--", "a.service",
                             "b.service")]
    else:
        assert DAEMON_RELOAD not in sync_rig.host.commands
        assert restarts == [("systemctl", "try-reload-or-restart", "--", "b.service")]
        assert outcomes(report)["daemon-reload"] == "skipped"
