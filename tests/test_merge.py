# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The whole story with a real merge (docs/reference.md#host-sync): real Flatpak
installs, and ``reconcile`` run inside a private mount namespace with its own ``/run``
(docs/platform.md#real-merge-in-a-private-namespace), where the real ``systemd-sysext``
merges into that namespace's ``/usr`` only.

``/run/systemd/system`` exists in the namespace, so host sync runs. No systemd is PID 1
there: ``systemctl``, ``busctl``, ``udevadm``, ``systemd-sysusers`` and
``systemd-tmpfiles`` are stand-ins in ``$FLATPAK_SYSEXT_TOOLS_ROOT/usr/bin`` that log
their arguments, so the
reloads are checked as exact commands; ``systemd-sysext`` is the real one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from testsupport.flatpak import FlatpakEnv, daemon_tree, schema, status_by_name
from testsupport.prerequisites import require_tools

pytestmark = [pytest.mark.privileged, pytest.mark.merge]

APP = "org.fsx.Profiler"
DAEMON = f"/usr/libexec/{APP}/profilerd"
FAKES = ("systemctl", "busctl", "udevadm", "systemd-sysusers", "systemd-tmpfiles")
DAEMON_RELOAD = "systemctl daemon-reload"
UNIT = "profilerd.service"  # what testsupport.flatpak.daemon_tree ships
# Host sync asks systemd whose file a unit is before it acts on it (hostunits.py); the
# stand-in answers nothing, so it goes by systemd's search order, where the merged file wins.
SHOW = f"systemctl show -p LoadState,FragmentPath -- {UNIT}"
STOP = [SHOW, f"systemctl stop -- {UNIT}", f"systemctl disable --no-reload -- {UNIT}"]
DBUS_RELOAD = ("busctl --system call org.freedesktop.DBus /org/freedesktop/DBus "
               "org.freedesktop.DBus ReloadConfig")
# The second stop, after the reloads: whatever started the unit again meanwhile.
STOP_AGAIN = f"systemctl stop -- {UNIT}"


class Namespace:
    """A mount namespace kept alive by a sleeping process; commands enter it."""

    def __init__(self) -> None:
        # /run/udev/control: host sync tells udev to reload only where it runs.
        setup = ("mount --make-shared / && mount -t tmpfs tmpfs /run && "
                 "mkdir -p /run/systemd/system /run/udev && touch /run/udev/control && "
                 "echo ready && exec sleep infinity")
        self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private",
                                      "sh", "-c", setup], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline()
        ours = os.readlink("/proc/self/ns/mnt")
        # Never merge into the real /usr: the namespace must be a different one.
        if ready != "ready\n" or os.readlink(f"/proc/{self.proc.pid}/ns/mnt") == ours:
            self.close()
            raise AssertionError("could not make a private mount namespace")

    def run(self, *argv: str, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", f"--target={self.proc.pid}", "--mount", "--", *argv],
                              env=env, capture_output=True, text=True)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Host:
    """flatpak-sysext run in the namespace the way flatpak-sysext.service runs it."""

    def __init__(self, fenv: FlatpakEnv, ns: Namespace, fakes: Path) -> None:
        self.fenv = fenv
        self.ns = ns
        self.log = fakes / "commands.log"
        # Host sync runs its commands by absolute path under this root, never via PATH.
        self.env = dict(fenv.env, FLATPAK_SYSEXT_TOOLS_ROOT=str(fakes),
                        FSX_COMMAND_LOG=str(self.log))

    def sysext(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.ns.run(self.fenv.python, "-m", "flatpak_sysext", *args, env=self.env)

    def reconcile(self) -> subprocess.CompletedProcess[str]:
        result = self.sysext("reconcile")
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def commands(self) -> list[str]:
        """The stand-in commands run since the last call."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        self.log.unlink(missing_ok=True)
        return lines

    def status(self) -> dict[str, dict[str, Any]]:
        return status_by_name(self.sysext("status", "--json"))

    def merged(self) -> list[str]:
        result = self.ns.run("cat", "/usr/.systemd-sysext/extensions")
        return result.stdout.split() if result.returncode == 0 else []


@pytest.fixture
def host(fenv: FlatpakEnv, tmp_path: Path) -> Iterator[Host]:
    require_tools("unshare", "nsenter", "systemd-sysext")
    # The trigger is not what is tested here: reconcile is, inside the namespace.
    (fenv.triggers_dir / "flatpak-sysext.trigger").unlink()
    fenv.write_config({"target_dir": "/run/extensions", "host_sync": True})
    fakes = tmp_path / "fakes"
    (fakes / "usr/bin").mkdir(parents=True)
    real = shutil.which("systemd-sysext")
    assert real is not None
    (fakes / "usr/bin/systemd-sysext").symlink_to(real)
    for name in FAKES:
        fake = fakes / "usr/bin" / name
        fake.write_text('#!/bin/sh\necho "${0##*/} $*" >> "$FSX_COMMAND_LOG"\n')
        fake.chmod(0o755)
    ns = Namespace()
    yield Host(fenv, ns, fakes)
    ns.close()  # Before fenv's files go: the overlay in the namespace goes with it.


def test_link_update_uninstall_merge_for_real(host: Host) -> None:
    fenv = host.fenv
    fenv.publish(APP, daemon_tree(APP, "version one"))
    fenv.install(APP)
    out = host.reconcile()
    assert f"{APP}: linked" in out.stdout
    assert "host sync: refresh, verify, daemon-reload, dbus-reload: ok" in out.stdout
    assert out.stderr == ""
    # The daemon is on /usr in the namespace, and runs; the host's /usr is untouched.
    assert host.ns.run(DAEMON).stdout == "version one\n"
    # Merged from the service's root-only store, and still any user's to run.
    assert host.ns.run("setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                       DAEMON).stdout == "version one\n"
    assert not Path(DAEMON).exists()
    assert host.merged() == [APP]
    # The unit and the D-Bus policy ask for exactly these reloads, nothing else.
    assert host.commands() == [DAEMON_RELOAD, DBUS_RELOAD]
    st = host.status()[APP]
    assert st["state"] == "linked" and st["merged"] is True
    assert st["host_sync"]["ok"] is True
    assert [s["step"] for s in st["host_sync"]["steps"]] == [
        "refresh", "verify", "daemon-reload", "dbus-reload"]

    # Nothing changed: nothing runs, nothing is printed.
    again = host.reconcile()
    assert (again.stdout, again.stderr, host.commands()) == ("", "", [])

    # An update: the link moves to the new deployment, the new daemon is what runs.
    fenv.publish(APP, daemon_tree(APP, "version two"))
    fenv.update()
    out = host.reconcile()
    assert f"{APP}: relinked" in out.stdout
    assert host.ns.run(DAEMON).stdout == "version two\n"
    # Its unit, if running, runs the new binary after daemon-reload.
    assert host.commands() == [DAEMON_RELOAD, DBUS_RELOAD, SHOW,
                               f"systemctl try-reload-or-restart -- {UNIT}"]
    assert f"host sync: restarted if running: {UNIT}" in out.stdout

    # Uninstalled: unlinked, unmerged, and the manager and the bus forget its files.
    fenv.uninstall(APP)
    out = host.reconcile()
    assert f"{APP}: unlinked" in out.stdout
    assert ("host sync: stop-units, disable-units, refresh, verify, daemon-reload, "
            "dbus-reload, stop-reactivated: ok") in out.stdout
    assert host.ns.run("test", "-e", DAEMON).returncode == 1
    assert host.merged() == []
    # Its unit is stopped and disabled first, while its file is still merged.
    assert host.commands() == [*STOP, DAEMON_RELOAD, DBUS_RELOAD, STOP_AGAIN]


def test_a_merge_that_did_not_happen_is_caught(host: Host) -> None:
    # systemd-sysext does not search this directory: refresh succeeds, merges nothing.
    host.fenv.write_config({"target_dir": "/run/not-searched", "host_sync": True})
    host.fenv.publish(APP, daemon_tree(APP, "v1"))
    host.fenv.install(APP)
    result = host.sysext("reconcile", "--json")
    # A failed host sync step is a warning, not a failed reconcile.
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, schema("reconcile"))
    sync = doc["host_sync"]
    jsonschema.validate(sync, {**schema("status"), "$ref": "#/definitions/sync"})
    verify = next(s for s in sync["steps"] if s["step"] == "verify")
    assert sync["ok"] is False and verify["outcome"] == "failed"
    assert verify["message"].startswith(f"not merged: {APP}")
    assert host.merged() == []
    st = host.status()[APP]
    assert st["state"] == "linked" and st["merged"] is False
    assert st["host_sync"] == sync
    text = host.sysext("status")
    assert f"  host sync: verify failed: not merged: {APP}" in text.stdout


def test_every_kind_of_content_through_the_command_line(host: Host) -> None:
    daemon = daemon_tree(APP, "v1")

    def tree(root: Path) -> None:
        daemon(root)
        for path, text in (
                ("usr/share/polkit-1/actions/org.fsx.Profiler.policy",  # must parse
                 '<policyconfig><action id="org.fsx.Profiler.run"/></policyconfig>\n'),
                ("usr/lib/udev/rules.d/70-profiler.rules", "# test\n"),
                ("usr/lib/sysusers.d/profiler.conf", "# test\n"),
                ("usr/lib/tmpfiles.d/profiler.conf", "# test\n")):
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(text)

    host.fenv.publish(APP, tree)
    host.fenv.install(APP)
    host.reconcile()
    assert host.commands() == [
        "systemd-sysusers -- profiler.conf", "systemd-tmpfiles --create -- profiler.conf",
        DAEMON_RELOAD, DBUS_RELOAD, "systemctl try-reload-or-restart polkit.service",
        "udevadm control --reload"]
    assert host.ns.run("cat", "/usr/lib/tmpfiles.d/profiler.conf").stdout == "# test\n"
    # Taking it away: users and created files stay, the rest is reloaded again.
    host.fenv.uninstall(APP)
    host.reconcile()
    assert host.commands() == [*STOP, DAEMON_RELOAD, DBUS_RELOAD,
                               "systemctl try-reload-or-restart polkit.service",
                               "udevadm control --reload", STOP_AGAIN]


def test_remove_all_takes_every_link_of_ours_away_and_unmerges(host: Host) -> None:
    """What a package's removal runs: nothing of ours is left merged, linked or kept, and
    what is not ours stays."""
    fenv = host.fenv
    fenv.install_daemons(APP)
    host.reconcile()
    assert host.merged() == [APP]
    foreign = Path("/run/extensions/not-ours")
    assert host.ns.run("ln", "-s", "/nonexistent", str(foreign)).returncode == 0
    host.commands()
    result = host.sysext("remove-all")
    assert result.returncode == 0, result.stderr
    assert f"{APP}: unlinked, flatpak-sysext is being removed" in result.stdout
    assert host.merged() == []
    assert host.ns.run("test", "-e", DAEMON).returncode != 0
    # The removed extension's unit is stopped and disabled, its D-Bus policy reloaded away.
    assert host.commands() == [*STOP, DAEMON_RELOAD, DBUS_RELOAD, STOP_AGAIN]
    assert host.ns.run("ls", "/run/extensions").stdout.split() == ["not-ours"]
    assert not (fenv.system_dir / "flatpak-sysext").exists()
    again = host.sysext("remove-all")
    assert (again.returncode, again.stdout) == (0, "")


def test_an_update_of_a_merged_extension_cannot_shadow_a_host_file(host: Host) -> None:
    fenv = host.fenv
    fenv.publish(APP, daemon_tree(APP, "v1"))
    fenv.install(APP)
    host.reconcile()
    assert host.merged() == [APP]
    # v2 adds a file the host has: merged, it would replace the host's for every program.
    assert Path("/usr/bin/env").exists()
    v1 = daemon_tree(APP, "v2")

    def v2(root: Path) -> None:
        v1(root)
        (root / "usr/bin").mkdir(parents=True)
        (root / "usr/bin/env").write_text("#!/bin/sh\necho pwned\n")

    fenv.publish(APP, v2)
    fenv.update()
    out = host.reconcile()
    assert f"{APP}: unlinked, rejected: shadows-host-file" in out.stdout, out.stdout
    st = host.status()[APP]
    assert st["state"] == "rejected"
    assert [(p["code"], p["path"]) for p in st["problems"]] == [
        ("shadows-host-file", "usr/bin/env")]
    assert host.merged() == []
    assert host.ns.run("grep", "-q", "pwned", "/usr/bin/env").returncode == 1


def test_host_sync_never_runs_what_the_installation_says(host: Host) -> None:
    host.fenv.publish(APP, daemon_tree(APP, "v1"))
    host.fenv.install(APP)
    host.reconcile()
    host.commands()
    # What a root process in Flatpak's sandbox (any trigger) can write into the
    # installation: a sync "owed" with a tmpfiles.d "name" that is a path of its choosing.
    state = host.fenv.system_dir / "flatpak-sysext"
    state.mkdir(exist_ok=True)
    (state / "hostsync.json").write_text(json.dumps({
        "version": 1, "contents": {APP: {"reloads": [], "sysusers": ["/tmp/x.conf"],
                                         "tmpfiles": ["/tmp/anything.conf"]}},
        "pending": {"reloads": [], "sysusers": [], "tmpfiles": ["/tmp/anything.conf"]},
        "last": None}))
    host.reconcile()
    host.fenv.uninstall(APP)
    host.reconcile()
    assert not [c for c in host.commands() if "/tmp/" in c]
