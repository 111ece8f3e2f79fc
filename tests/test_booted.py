# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""End to end on a booted host: Debian 12, 13 and unstable under ``systemd-nspawn --boot``
(testsupport/booted.py), each release a machine of its own.

One booted machine serves the whole module and the scenarios run in order, each starting
from the state the previous one left: installed, refused, rebooted, package manager,
update, uninstall, and a last look at the units and the journal. The project is installed
inside by ``make install``; apps come from a GPG-signed repository through ``flatpak
install --system``, so the trigger runs sandboxed by bubblewrap as on a user's machine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testsupport import booted
from testsupport.booted import Machine, call_daemon, daemon_unit, precondition
from testsupport.flatpak import FlatpakEnv
from testsupport.flatpak import daemon_tree as c_daemon_tree

pytestmark = [pytest.mark.privileged, pytest.mark.booted, pytest.mark.slow]

APP = "org.fsx.Booted"  # a static Go daemon owning this bus name
DYN = "org.fsx.Dynamic"  # the same shape, but its daemon is dynamically linked
UNIT = daemon_unit(APP)


@dataclass
class Host:
    machine: Machine
    publisher: FlatpakEnv
    builds: Path

    def link_target(self, name: str) -> str:
        """Where /var/lib/extensions/NAME resolves inside, or "" if there is no such link."""
        return self.machine.run("readlink", "-e", f"/var/lib/extensions/{name}").stdout.strip()

    def declared_tree(self, app_id: str) -> str:
        """The extension tree of the app's active deployment, as Flatpak locates it."""
        location = self.machine.run("flatpak", "info", "--system", "--show-location", app_id,
                                    check=True).stdout.strip()
        return self.machine.run("readlink", "-e", f"{location}/files/lib/extensions",
                                check=True).stdout.strip()

    def links_snapshot_of_active(self, app_id: str) -> bool:
        """Whether /var/lib/extensions/APP leads into the service's root-only store, to a
        copy of exactly the tree the app's active deployment declares."""
        target = self.link_target(app_id)
        return (target.startswith("/var/lib/flatpak-sysext/") and self.machine.run(
            "diff", "-r", "--no-dereference", target, self.declared_tree(app_id)).returncode == 0)

    def version(self) -> str:
        """What the daemon answers over D-Bus (busctl prints ``s "VERSION"``)."""
        result = call_daemon(self.machine, APP)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def usr_writable(self) -> bool:
        probe = "/usr/.fsx-write-probe"
        ok = self.machine.run("touch", probe).returncode == 0
        self.machine.run("rm", "-f", probe)
        return ok


@pytest.fixture(scope="module", params=booted.RELEASE_IDS)
def host(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    """A booted Debian release with flatpak-sysext installed and the signed repository
    added."""
    booted.require_booting("flatpak", "bwrap", "gcc", "gpg")
    base = tmp_path_factory.mktemp("booted")
    builds = base / "builds"
    builds.mkdir()
    v1 = booted.build_daemon(builds / "fsx-daemon-v1", "v1")

    def publish(publisher: FlatpakEnv) -> None:
        publisher.publish(APP, booted.daemon_tree(APP, v1))
        publisher.publish(DYN, c_daemon_tree(DYN, "dynamic", static=False))

    with booted.booted_host(base, "fsx-booted", publish, request.param) as (machine,
                                                                          publisher):
        yield Host(machine, publisher, builds)


def test_install_waits_for_consent_then_links_merges_and_activates(host: Host) -> None:
    out = host.machine.flatpak("install", "--system", "fsx", APP)
    host.machine.settle()
    # No configuration consents to anything: the app waits, and the install output says
    # what it would grant and the one command that consents.
    assert f"flatpak-sysext: {APP}: waiting:" in out, out
    assert f"flatpak-sysext approve {APP}" in out and UNIT in out, out
    assert APP not in host.machine.merged() and host.link_target(APP) == ""
    approve = host.machine.run("flatpak-sysext", "approve", APP)
    assert approve.returncode == 0, approve.stdout + approve.stderr
    host.machine.wait_for(lambda: APP in host.machine.merged(), f"{APP} to be merged")
    assert host.links_snapshot_of_active(APP)
    # Not running before the call: the reply proves D-Bus activation through systemd.
    assert host.machine.run("systemctl", "is-active", UNIT).stdout.strip() != "active"
    assert host.version() == 's "v1"'
    assert host.machine.run("systemctl", "is-active", UNIT).stdout.strip() == "active"


def test_dynamic_app_refused_with_reason(host: Host) -> None:
    out = host.machine.flatpak("install", "--system", "fsx", DYN)
    host.machine.settle()
    said = [line for line in out.splitlines() if line.startswith(f"flatpak-sysext: {DYN}:")]
    assert said and all(": rejected: dynamic-elf " in line for line in said), out
    status = json.loads(host.machine.run("flatpak-sysext", "status", "--json",
                                         check=True).stdout)
    item = next(i for i in status if i["app"] == DYN)
    assert item["state"] == "rejected"
    assert [p["code"] for p in item["problems"]] == ["dynamic-elf"]
    assert "dynamically linked" in item["problems"][0]["message"]
    assert host.link_target(DYN) == ""
    assert DYN not in host.machine.merged()


def test_reboot_merges_at_boot_after_reconcile(host: Host) -> None:
    host.machine.reboot()
    assert APP in host.machine.merged()

    def show(unit: str, prop: str) -> str:
        return host.machine.run("systemctl", "show", "-p", prop, "--value", unit).stdout.strip()

    # Both are oneshot: ours has finished (successfully) before sysext's started.
    assert show("flatpak-sysext.service", "Result") == "success"
    done = int(show("flatpak-sysext.service", "ExecMainExitTimestampMonotonic"))
    merge = int(show("systemd-sysext.service", "ExecMainStartTimestampMonotonic"))
    assert 0 < done <= merge
    assert host.version() == 's "v1"'


def build_deb(m: Machine, name: str, files: dict[str, str], preinst: str = "") -> str:
    """Build a package inside with dpkg-deb; return the path of the .deb."""
    root = f"/root/{name}"
    control = (f"Package: {name}\nVersion: 1\nArchitecture: all\n"
               "Maintainer: flatpak-sysext tests <tests@fsx.invalid>\n"
               "Description: files under /usr for the booted-host tests\n")
    m.run("rm", "-rf", root, check=True)
    m.run("mkdir", "-p", f"{root}/DEBIAN", check=True)
    m.run("sh", "-c", f"cat > {root}/DEBIAN/control", input=control, check=True)
    if preinst:
        m.run("sh", "-c", f"cat > {root}/DEBIAN/preinst && chmod 755 {root}/DEBIAN/preinst",
              input=preinst, check=True)
    for path, text in files.items():
        m.run("mkdir", "-p", f"{root}{os.path.dirname(path)}", check=True)
        m.run("sh", "-c", f"cat > {root}{path}", input=text, check=True)
    m.run("dpkg-deb", "--build", "--root-owner-group", root, f"{root}.deb", check=True)
    return f"{root}.deb"


def dpkg(m: Machine, *args: str) -> str:
    result = m.run("dpkg", *args)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "Traceback" not in out, out
    # Every reload runs after a package transaction: one this host cannot do (it runs no
    # udev) is no warning.
    assert "flatpak-sysext: warning" not in out, out
    return out


def test_dpkg_install_and_remove_while_merged(host: Host) -> None:
    m = host.machine
    precondition(APP in m.merged(), f"{APP} merged before dpkg runs")
    status = m.run("flatpak-sysext", "status", check=True).stdout
    assert "package manager hooks for dpkg: in place" in status
    deb = build_deb(m, "fsx-probe", {"/usr/share/fsx-probe/probe": "probe\n"})
    dpkg(m, "-i", deb)
    assert m.run("cat", "/usr/share/fsx-probe/probe").stdout == "probe\n"
    m.wait_for(lambda: APP in m.merged(), f"{APP} merged again after dpkg -i", 30)
    dpkg(m, "-r", "fsx-probe")
    assert m.run("test", "-e", "/usr/share/fsx-probe/probe").returncode != 0
    m.wait_for(lambda: APP in m.merged(), f"{APP} merged again after dpkg -r", 30)
    assert host.version().startswith('s "v')  # D-Bus and systemd were reloaded with it
    # apt runs dpkg more than once in a command: each run is a transaction of its own.
    deb = build_deb(m, "fsx-apt", {"/usr/share/fsx-apt/probe": "apt\n"})
    for args, present in ((("install", deb), True), (("remove", "fsx-apt"), False)):
        result = m.run("apt-get", "-y", *args)
        out = result.stdout + result.stderr
        assert result.returncode == 0 and "Traceback" not in out, out
        assert (m.run("test", "-e", "/usr/share/fsx-apt/probe").returncode == 0) == present
        m.wait_for(lambda: APP in m.merged(), f"{APP} merged again after apt-get {args[0]}", 30)
    assert host.version().startswith('s "v')


def test_package_file_shadows_extension(host: Host) -> None:
    """A package that now ships a file the extension ships wins: the extension is held
    back (shadows-host-file), and comes back once the package is gone."""
    m = host.machine
    precondition(APP in m.merged(), f"{APP} merged before dpkg runs")
    shared = f"/usr/share/dbus-1/system.d/{APP}.conf"
    deb = build_deb(m, "fsx-shadow", {shared: "<!-- the package's -->\n"})
    dpkg(m, "-i", deb)
    assert m.run("cat", shared).stdout == "<!-- the package's -->\n"
    status = json.loads(m.run("flatpak-sysext", "status", "--json", check=True).stdout)
    item = next(i for i in status if i["app"] == APP)
    assert "shadows-host-file" in [p["code"] for p in item["problems"]]
    assert APP not in m.merged()
    dpkg(m, "-r", "fsx-shadow")
    m.wait_for(lambda: APP in m.merged(), f"{APP} merged again once the package is gone", 30)


def test_dpkg_killed_guard_remerges_and_reconcile_waits(host: Host) -> None:
    m = host.machine
    precondition(APP in m.merged(), f"{APP} merged before dpkg runs")
    deb = build_deb(m, "fsx-slow", {"/usr/share/fsx-slow/slow": "slow\n"},
                    preinst="#!/bin/sh\necho $$ > /run/fsx-slow.pid\nexec sleep 600\n")
    m.run("rm", "-f", "/run/fsx-slow.pid", check=True)
    m.run("sh", "-c", f"dpkg -i {deb} </dev/null >/root/fsx-slow.log 2>&1 &", check=True)
    m.wait_for(lambda: m.run("test", "-s", "/run/fsx-slow.pid").returncode == 0,
               "the package's preinst to run", 60)
    sleeper = m.run("cat", "/run/fsx-slow.pid", check=True).stdout.strip()
    dpkg_pid = m.run("ps", "-o", "ppid=", "-p", sleeper, check=True).stdout.strip()
    assert m.run("ps", "-o", "comm=", "-p", dpkg_pid).stdout.strip() == "dpkg"
    assert APP not in m.merged()
    # A reconcile meanwhile makes the link it finds missing, and leaves the merge owed.
    m.run("rm", f"/var/lib/extensions/{APP}", check=True)
    result = m.run("flatpak-sysext", "reconcile")
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "Traceback" not in out, out
    assert "a package transaction is under way" in out, out
    assert host.links_snapshot_of_active(APP)
    assert APP not in m.merged()
    assert host.usr_writable()
    m.run("kill", "-9", dpkg_pid, check=True)
    m.run("kill", "-9", sleeper)
    try:
        m.wait_for(lambda: APP in m.merged(), f"{APP} merged again after dpkg was killed", 30)
    except AssertionError as e:
        log = m.run("cat", "/root/fsx-slow.log").stdout
        journal = m.run("journalctl", "--no-pager", "-q", "-u", "flatpak-sysext-guard-*").stdout
        raise AssertionError(f"{e}\ndpkg said:\n{log}\nthe guard's journal:\n{journal}") from e
    # The half-installed package goes as any other, through the hooks.
    dpkg(m, "--remove", "--force-remove-reinstreq", "fsx-slow")
    m.wait_for(lambda: APP in m.merged(), f"{APP} merged after the clean-up", 30)
    assert m.run("ls", "-A", "/run/flatpak-sysext/transactions").stdout.strip() == ""


def test_update_restarts_daemon(host: Host) -> None:
    v2 = booted.build_daemon(host.builds / "fsx-daemon-v2", "v2")
    host.publisher.publish(APP, booted.daemon_tree(APP, v2))
    host.machine.sync_repository(host.publisher.repo)
    precondition(host.version() == 's "v1"', "v1 answers before the update")
    out = host.machine.flatpak("update", "--system")
    host.machine.settle()
    host.machine.wait_for(lambda: host.links_snapshot_of_active(APP)
                          and APP in host.machine.merged(), "the new commit to be merged")
    assert host.version() == 's "v2"'
    # Whoever relinked it, the path unit's service or the trigger's request, it is told.
    commit = host.machine.run("flatpak", "info", "--system", "--show-commit", APP,
                              check=True).stdout.strip()
    assert f"flatpak-sysext: {APP}: relinked to commit {commit[:12]}" in out, out
    if f"{commit[:12]}, merged" in out:  # the service was first: its host sync is told too
        assert f"flatpak-sysext: host sync: restarted if running: {UNIT}" in out, out
    status = host.machine.run("flatpak-sysext", "status", check=True).stdout
    assert f"host sync: restarted if running: {UNIT}" in status, status


def test_uninstall_stops_daemon(host: Host) -> None:
    m = host.machine
    precondition(host.version().startswith('s "v'), "the daemon answers before uninstall")
    out = host.machine.flatpak("uninstall", "--system", APP)
    assert f"flatpak-sysext: {APP}: unlinked" in out, out
    if f"{APP}: unlinked, no longer installed" in out:  # the service was first
        assert f"flatpak-sysext: host sync: stopped {UNIT}" in out, out
    m.settle()
    m.wait_for(lambda: APP not in m.merged(), f"{APP} to be unmerged")
    assert host.link_target(APP) == ""
    assert host.usr_writable()
    assert m.run("systemctl", "is-active", UNIT).stdout.strip() != "active"
    assert call_daemon(m, APP).returncode != 0
    status = m.run("flatpak-sysext", "status", check=True).stdout
    assert f"host sync: stopped {UNIT}" in status, status


RESTARTED = "org.fsx.Restarted"  # its extension-release lists its unit to restart


def starts(m: Machine, unit: str) -> int:
    """How often systemd has started ``unit`` (its "Started" lines in the journal)."""
    out = m.run("journalctl", "--no-pager", "-q", "-o", "cat", "-u", unit).stdout
    return sum(line.startswith("Started ") for line in out.splitlines())


def test_a_unit_listed_in_extension_restart_units_restarts_once_on_update(host: Host) -> None:
    """systemd-sysext 262 restarts the units an extension lists in
    EXTENSION_RESTART_UNITS= itself; earlier ones ignore the field and host sync
    restarts them. Either way an update restarts the running daemon exactly once."""
    m = host.machine
    unit = daemon_unit(RESTARTED)
    release = f"ID=_any\nEXTENSION_RESTART_UNITS={unit}\n"
    for version in ("v1", "v2"):
        binary = host.builds / f"fsx-daemon-{version}"
        if not binary.exists():
            booted.build_daemon(binary, version)
    host.publisher.publish(RESTARTED, booted.daemon_tree(
        RESTARTED, host.builds / "fsx-daemon-v1", release))
    m.sync_repository(host.publisher.repo)
    m.install_approved(RESTARTED)
    m.settle()
    assert call_daemon(m, RESTARTED).stdout.strip() == 's "v1"'
    before = starts(m, unit)
    host.publisher.publish(RESTARTED, booted.daemon_tree(
        RESTARTED, host.builds / "fsx-daemon-v2", release))
    m.sync_repository(host.publisher.repo)
    m.flatpak("update", "--system", RESTARTED)
    m.settle()
    m.wait_for(lambda: host.links_snapshot_of_active(RESTARTED)
               and RESTARTED in m.merged(), "the new commit to be merged")
    assert call_daemon(m, RESTARTED).stdout.strip() == 's "v2"'
    assert starts(m, unit) == before + 1
    status = json.loads(m.run("flatpak-sysext", "status", "--json", check=True).stdout)
    item = next(i for i in status if i["app"] == RESTARTED)
    steps = {s["step"]: s for s in item["host_sync"]["steps"]}
    if m.systemd_version() >= 262:
        assert steps["restart-units"]["outcome"] == "skipped", steps
        assert unit in steps["restart-units"]["message"]
    else:
        assert steps["restart-units"]["outcome"] == "ok", steps


USER = "fsx-user"


def test_a_user_install_through_polkit_is_told_in_the_journal(host: Host) -> None:
    """A user who is not root installs through Flatpak's system helper (polkit allows
    it); the helper runs the trigger, whose lines go to the journal and into status."""
    m = host.machine
    precondition(host.link_target(APP) == "", f"{APP} uninstalled before")
    m.run("useradd", "--create-home", USER, check=True)
    rule = ("polkit.addRule(function(action, subject) {\n"
            f"  if (action.id.indexOf('org.freedesktop.Flatpak.') == 0 && subject.user == '{USER}')"
            "\n    return polkit.Result.YES;\n});\n")
    m.run("sh", "-c", "cat > /etc/polkit-1/rules.d/50-fsx-user.rules", input=rule, check=True)
    # The container has no /dev/fuse for the helper's revokefs: Flatpak's own switch makes
    # the helper take the user's pull without it. The trigger runs the same either way.
    m.run("mkdir", "-p", "/etc/systemd/system/flatpak-system-helper.service.d", check=True)
    m.run("sh", "-c", "cat > /etc/systemd/system/flatpak-system-helper.service.d/fsx.conf",
          input="[Service]\nEnvironment=FLATPAK_DISABLE_REVOKEFS=yes\n", check=True)
    m.run("systemctl", "daemon-reload", check=True)
    since = m.run("date", "+%Y-%m-%d %H:%M:%S", check=True).stdout.strip()
    result = m.run("runuser", "-u", USER, "--", "flatpak", "install", "--system", "-y",
                   "--noninteractive", "fsx", APP)
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "Traceback" not in out, out
    m.settle()
    # Consented to by approve before the uninstall: the same grants link again.
    m.wait_for(lambda: APP in m.merged(), f"{APP} merged after the user's install")
    journal = m.run("journalctl", "--no-pager", "-q", "-o", "cat", "--since", since,
                    "-u", "flatpak-system-helper.service", check=True).stdout
    assert f"flatpak-sysext: {APP}: linked" in journal, journal
    status = json.loads(m.run("flatpak-sysext", "status", "--json", check=True).stdout)
    item = next(i for i in status if i["app"] == APP)
    assert item["state"] == "linked" and item["merged"]
    assert host.version() == 's "v2"'


def test_no_failed_unit_no_traceback(host: Host) -> None:
    m = host.machine
    failed = m.run("systemctl", "--failed", "--no-legend", check=True).stdout.strip()
    journal = m.run("journalctl", "--no-pager", "-q", check=True).stdout
    lines = journal.splitlines()
    first = next((i for i, line in enumerate(lines) if "vanished" in line), len(lines))
    assert failed == "", "\n".join(lines[max(0, first - 60):first + 3])
    assert "flatpak-sysext" in journal  # the journal is the one the service wrote to
    assert "Traceback" not in journal
