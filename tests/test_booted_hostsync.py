# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Host sync on a booted host (docs/reference.md#host-sync): Debian 12, 13 and unstable
under ``systemd-nspawn --boot`` (testsupport/booted.py), the host's own systemd, dbus-daemon,
polkitd, systemd-sysusers and systemd-tmpfiles doing the work.

One app, installed with the real Flatpak from a GPG-signed repository and consented to
with ``approve``, ships every kind of content host sync reloads for: a unit (a
D-Bus-activated daemon) and a second one that an update drops, a drop-in saying which
build it is, a D-Bus system policy and system service file, a polkit action, a
sysusers.d and a tmpfiles.d file, and a udev rule, and two units whose names the host
already uses first (a transient unit, a file under /usr/local); an image that is not ours
is merged beside it. The scenarios run in order on one machine: before anything is linked none of
it is on the host; linked, each has its effect; ``status`` reports the sync step by step,
and a run that changes nothing syncs nothing; an update that drops the polkit action and
the second unit takes their effects away; uninstalling takes the rest away but for the
user and the directory, which stay, and the host's own units, never restarted or stopped.
What a real host cannot be made to do is tests/test_hostsync.py's fake host (its
docstring says why, case by case).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testsupport import booted
from testsupport.booted import Machine, TreeBuilder, daemon_unit
from testsupport.flatpak import FlatpakEnv

pytestmark = [pytest.mark.privileged, pytest.mark.booted, pytest.mark.slow]

APP = "org.fsx.HostSync"
UNIT = daemon_unit(APP)  # hostsync-fsx.service, the D-Bus-activated daemon
WORKER = "hostsync-fsx-worker.service"  # a plain service, dropped by the update
ACTION = f"{APP}.manage"
USER = "hostsyncd"
DATA_DIR = f"/var/lib/{APP}"
UDEV_RULE = f"usr/lib/udev/rules.d/70-{APP}.rules"
FOREIGN = "fsx-vendor"  # an image in the target directory that is not ours
# Units the extension ships whose names the host already uses, where systemd looks first:
# a transient unit, and the administrator's file under /usr/local. Never ours to touch.
TRANSIENT = "hostsync-fsx-transient.service"
LOCAL = "hostsync-fsx-local.service"
SLEEPER = "[Unit]\nDescription={}\n\n[Service]\nExecStart=/usr/bin/sleep infinity\n"

POLICY = f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE policyconfig PUBLIC "-//freedesktop//DTD PolicyKit Policy Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/PolicyKit/1/policyconfig.dtd">
<policyconfig>
  <action id="{ACTION}">
    <description>Manage the host sync test daemon</description>
    <message>Authentication is required to manage the test daemon</message>
    <defaults>
      <allow_any>no</allow_any>
      <allow_inactive>no</allow_inactive>
      <allow_active>auth_admin</allow_active>
    </defaults>
  </action>
</policyconfig>
"""


def hostsync_tree(binary: Path, build: int) -> TreeBuilder:
    """The daemon's tree (unit, D-Bus service file and policy) and every other kind of
    content host sync acts on; build 1 also ships the polkit action and the worker."""
    daemon = booted.daemon_tree(APP, binary)

    def make(root: Path) -> None:
        daemon(root)
        files = {
            # Asks systemd >= 255 to reload the manager itself: on Debian 12 (252) host
            # sync runs daemon-reload, on 13 and unstable it leaves it to systemd-sysext
            # (it asks systemd-sysext --version; daemon_reload() below).
            f"usr/lib/extension-release.d/extension-release.{APP}":
                "ID=_any\nEXTENSION_RELOAD_MANAGER=1\n",
            # Which build systemd has loaded: changes only through a daemon-reload.
            f"usr/lib/systemd/system/{UNIT}.d/build.conf":
                f"[Unit]\nDescription={APP} test daemon, build {build}\n",
            "usr/lib/sysusers.d/hostsync-fsx.conf": f'u {USER} - "host sync test"\n',
            # Owned by the user sysusers creates: the order of the two steps matters.
            "usr/lib/tmpfiles.d/hostsync-fsx.conf": f"d {DATA_DIR} 0750 {USER} {USER} -\n",
            UDEV_RULE: 'SUBSYSTEM=="fsx-none", ENV{FSX_HOSTSYNC}="1"\n',
            f"usr/lib/systemd/system/{TRANSIENT}": SLEEPER.format("the extension's"),
            f"usr/lib/systemd/system/{LOCAL}": SLEEPER.format("the extension's"),
        }
        if build == 1:
            files[f"usr/share/polkit-1/actions/{APP}.policy"] = POLICY
            files[f"usr/lib/systemd/system/{WORKER}"] = (
                f"[Unit]\nDescription={APP} worker\n\n[Service]\n"
                "ExecStart=/usr/bin/sleep infinity\n")
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)

    return make


@dataclass
class Host:
    machine: Machine
    publisher: FlatpakEnv
    daemon: Path

    def run(self, *cmd: str) -> str:
        """Run ``cmd`` inside; it must succeed. Returns stdout."""
        return self.machine.run(*cmd, check=True).stdout

    def show(self, unit: str, prop: str) -> str:
        """``systemctl show -p PROP --value UNIT``, as the host's systemd knows the unit."""
        return self.run("systemctl", "show", "-p", prop, "--value", unit).strip()

    def action_known(self) -> bool:
        """Whether polkitd knows the action (pkaction asks it over D-Bus)."""
        return self.machine.run("pkaction", "--action-id", ACTION).returncode == 0

    def activatable(self) -> list[str]:
        """The names dbus-daemon can activate on the system bus."""
        out = self.run("busctl", "--system", "list", "--activatable", "--no-legend")
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def call_as_nobody(self) -> Any:
        """The daemon's Version() called by an unprivileged user: the D-Bus policy must
        let anyone call it, root own the name, and the bus activate it through systemd."""
        path = "/" + APP.replace(".", "/")
        return self.machine.run("setpriv", "--reuid=nobody", "--regid=nogroup",
                                "--clear-groups", "busctl", "call", "--system", APP, path,
                                APP, "Version", timeout=60)

    def last_sync(self) -> dict[str, dict[str, Any]]:
        """The last host sync as ``status --json`` reports it, by step in the order run."""
        status = json.loads(self.run("flatpak-sysext", "status", "--json"))
        item = next(i for i in status if i["app"] == APP)
        assert item["host_sync"] is not None, item
        return {s["step"]: s for s in item["host_sync"]["steps"]}

    def linked_deployment(self) -> str:
        return self.machine.run("readlink", f"/var/lib/extensions/{APP}").stdout.strip()


def outcomes(steps: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    return [(name, step["outcome"]) for name, step in steps.items()]


def daemon_reload(host: Host) -> str:
    """What host sync's daemon-reload step is after merging the app, whose
    extension-release says EXTENSION_RELOAD_MANAGER=1: systemd-sysext 255 and later
    reload the manager themselves, so ours is skipped (Debian 13 and unstable)."""
    return "skipped" if host.machine.systemd_version() >= 255 else "ok"


def ok_line(host: Host, *steps: str) -> str:
    """``host sync: STEPS: ok`` as status prints it, daemon-reload left out where it is
    skipped (:func:`daemon_reload`): a skipped step has a line of its own."""
    shown = [s for s in steps if s != "daemon-reload" or daemon_reload(host) == "ok"]
    return f"host sync: {', '.join(shown)}: ok"


@pytest.fixture(scope="module", params=booted.RELEASE_IDS)
def host(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    """A booted Debian release (each of testsupport.booted.RELEASES) with flatpak-sysext
    installed and the signed repository added, the app published but not installed."""
    booted.require_booting("flatpak", "bwrap", "gpg")
    base = tmp_path_factory.mktemp("booted-hostsync")
    daemon = booted.build_daemon(base / "fsx-daemon", "v1")

    def publish(publisher: FlatpakEnv) -> None:
        publisher.publish(APP, hostsync_tree(daemon, 1))

    with booted.booted_host(base, "fsx-hostsync", publish, request.param) as (machine,
                                                                            publisher):
        yield Host(machine, publisher, daemon)


def test_nothing_of_it_is_on_the_host_before_it_is_linked(host: Host) -> None:
    # polkitd runs from here on (pkaction activated it), so it has to be told of the
    # action that comes: it does not notice /usr changing under it.
    assert not host.action_known()
    assert host.show(UNIT, "LoadState") == "not-found"
    assert APP not in host.activatable()
    assert host.machine.run("getent", "passwd", USER).returncode == 2
    assert host.machine.run("test", "-e", DATA_DIR).returncode != 0
    # The host's own units of names the extension ships, running before it comes.
    host.run("systemd-run", f"--unit={TRANSIENT}", "/usr/bin/sleep", "infinity")
    host.run("mkdir", "-p", "/usr/local/lib/systemd/system")
    host.machine.run("sh", "-c", f"cat > /usr/local/lib/systemd/system/{LOCAL}",
                     input=SLEEPER.format("the administrator's"), check=True)
    host.run("systemctl", "start", LOCAL)
    host.run("mkdir", "-p", f"/var/lib/extensions/{FOREIGN}/usr/lib/extension-release.d")
    host.run("sh", "-c", "echo ID=_any > /var/lib/extensions/"
             f"{FOREIGN}/usr/lib/extension-release.d/extension-release.{FOREIGN}")
    out = host.machine.flatpak("install", "--system", "fsx", APP)
    host.machine.settle()
    assert f"flatpak-sysext approve {APP}" in out, out  # waits for consent: not linked
    assert host.linked_deployment() == ""


def test_once_linked_each_kind_of_content_takes_effect(host: Host) -> None:
    approve = host.machine.run("flatpak-sysext", "approve", APP)
    out = approve.stdout + approve.stderr
    assert approve.returncode == 0 and "Traceback" not in out, out
    assert sorted(host.machine.merged()) == sorted([APP, FOREIGN])
    # sysusers, then tmpfiles: the directory belongs to the user created a step before.
    assert host.run("getent", "passwd", USER).startswith(f"{USER}:")
    assert host.run("stat", "-c", "%F %a %U:%G", DATA_DIR).strip() == (
        f"directory 750 {USER}:{USER}")
    # systemd knows the unit and its drop-in (it loads a unit it never saw on demand, so
    # this alone does not prove the daemon-reload: the update's new build does);
    # dbus-daemon knows the name and applies its policy.
    assert host.show(UNIT, "LoadState") == "loaded"
    assert host.show(UNIT, "Description") == f"{APP} test daemon, build 1"
    assert APP in host.activatable()
    called = host.call_as_nobody()
    assert called.returncode == 0, called.stderr
    assert host.show(UNIT, "ActiveState") == "active"
    assert host.action_known()
    # The rule is merged, but no udev runs in a container: nothing to reload.
    assert host.machine.run("test", "-f", "/" + UDEV_RULE).returncode == 0
    assert "host sync: udev-reload skipped: udev is not running" in out, out


def test_status_reports_the_last_host_sync_step_by_step(host: Host) -> None:
    steps = host.last_sync()
    assert outcomes(steps) == [
        ("refresh", "ok"), ("verify", "ok"), ("sysusers", "ok"), ("tmpfiles", "ok"),
        ("daemon-reload", daemon_reload(host)), ("dbus-reload", "ok"),
        ("polkit-reload", "ok"), ("udev-reload", "skipped")]
    assert steps["udev-reload"]["message"] == "udev is not running"
    if daemon_reload(host) == "skipped":
        assert steps["daemon-reload"]["message"] == (
            "systemd-sysext reloaded the manager itself (EXTENSION_RELOAD_MANAGER=1)")
    assert steps["tmpfiles"]["command"] == ["systemd-tmpfiles", "--create", "--",
                                            "hostsync-fsx.conf"]
    # Other images merged beside ours are not ours to judge.
    assert steps["verify"]["message"] == f"merged: {FOREIGN}, {APP}"
    text = host.run("flatpak-sysext", "status")
    assert re.search(r"^last host sync for /var/lib/flatpak: \S+, ok$", text, re.M), text
    assert ok_line(host, "refresh", "verify", "sysusers", "tmpfiles", "daemon-reload",
                   "dbus-reload", "polkit-reload") in text, text
    # A run that changes no link syncs nothing, and the last sync stays the one shown.
    again = json.loads(host.run("flatpak-sysext", "reconcile", "--json"))
    assert again["actions"] == [] and again["host_sync"] is None, again
    assert host.last_sync() == steps


def test_an_update_that_drops_content_takes_its_effect_away(host: Host) -> None:
    host.run("systemctl", "start", WORKER)
    assert host.show(WORKER, "ActiveState") == "active"
    old = host.linked_deployment()
    host.publisher.publish(APP, hostsync_tree(host.daemon, 2))
    host.machine.sync_repository(host.publisher.repo)
    host.machine.flatpak("update", "--system")
    host.machine.settle()
    host.machine.wait_for(lambda: host.linked_deployment() not in ("", old),
                          "the update to be linked")
    assert APP in host.machine.merged()
    assert not host.action_known()
    # Stopped while its file was still merged, then forgotten by systemd.
    assert host.show(WORKER, "ActiveState") == "inactive"
    assert host.show(WORKER, "LoadState") == "not-found"
    assert host.show(UNIT, "Description") == f"{APP} test daemon, build 2"
    steps = host.last_sync()
    # The old build's polkit action is what polkit-reload is for now: the new one has none.
    # The units it dropped stopped before the refresh (and once more after the reloads,
    # in case a call started one again meanwhile), those it kept restarted last.
    assert outcomes(steps) == [
        ("stop-units", "ok"), ("disable-units", "ok"), ("refresh", "ok"), ("verify", "ok"),
        ("sysusers", "ok"), ("tmpfiles", "ok"), ("daemon-reload", daemon_reload(host)),
        ("dbus-reload", "ok"), ("polkit-reload", "ok"), ("udev-reload", "skipped"),
        ("stop-reactivated", "ok"), ("restart-units", "ok")]
    assert steps["stop-units"]["message"] == WORKER
    assert steps["stop-reactivated"]["message"] == WORKER
    assert steps["restart-units"]["message"] == UNIT + LEFT_ALONE
    assert host.call_as_nobody().returncode == 0


LEFT_ALONE = (f"; left alone, not the extension's unit: {LOCAL} (systemd loads "
              f"/usr/local/lib/systemd/system/{LOCAL}), {TRANSIENT} (systemd loads "
              f"/run/systemd/transient/{TRANSIENT})")


def test_uninstall_takes_the_rest_away_but_the_user_and_its_directory(host: Host) -> None:
    host.machine.flatpak("uninstall", "--system", APP)
    host.machine.settle()
    host.machine.wait_for(lambda: APP not in host.machine.merged(), f"{APP} to be unmerged")
    assert host.show(UNIT, "LoadState") == "not-found"
    assert host.show(UNIT, "ActiveState") == "inactive"
    assert APP not in host.activatable()
    assert host.call_as_nobody().returncode != 0
    assert host.machine.run("test", "-e", "/" + UDEV_RULE).returncode != 0
    # As with a removed package: users and the files made for them stay.
    assert host.run("getent", "passwd", USER).startswith(f"{USER}:")
    assert host.machine.run("test", "-d", DATA_DIR).returncode == 0
    # No app is left to list: the installation's last sync is in the text.
    text = host.run("flatpak-sysext", "status")
    # What build 2 was recorded to need: no polkit-reload (build 1's action went with the
    # update), and users and created files are not taken back.
    assert ("host sync: stop-units, disable-units, refresh, verify, daemon-reload, "
            "dbus-reload, stop-reactivated: ok\n") in text, text
    assert "host sync: udev-reload skipped: udev is not running" in text, text
    assert f"host sync: stopped {UNIT}{LEFT_ALONE}" in text, text
    # The host's units of the same names ran on, untouched, and stay enabled as they were.
    for unit in (TRANSIENT, LOCAL):
        assert host.show(unit, "ActiveState") == "active", unit
    assert host.show(LOCAL, "FragmentPath") == f"/usr/local/lib/systemd/system/{LOCAL}"
