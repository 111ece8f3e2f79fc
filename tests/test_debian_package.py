# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The Debian package on a booted Debian 12, 13 and unstable: installed with dpkg, it
links and merges a signed app's extension through its own units and trigger; upgraded,
the links stay; removed, the state and configuration stay; purged, nothing of it is left
on the host (docs/packaging.md, "Removal")."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from testsupport import booted
from testsupport.booted import Machine
from testsupport.flatpak import FlatpakEnv

pytestmark = [pytest.mark.privileged, pytest.mark.booted, pytest.mark.slow]

APP = "org.fsx.Packaged"
UNITS = ("flatpak-sysext.path", "flatpak-sysext.service")


@pytest.fixture(scope="module", params=booted.RELEASE_IDS)
def machine(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    """A booted Debian release without flatpak-sysext, and a signed repository added."""
    booted.require_booting("flatpak", "gpg")
    base = tmp_path_factory.mktemp("debian-package")
    publisher = FlatpakEnv(base / "publisher", signed=True)
    session_root = booted.SessionRoot(booted.cached_root(request.param))
    m = Machine(session_root.root, f"fsx-deb-{request.param}-{os.getpid()}", request.param)
    try:
        daemon = booted.build_daemon(base / "fsx-daemon", "packaged")
        publisher.publish(APP, booted.daemon_tree(APP, daemon))
        m.boot()
        m.add_repository(publisher.repo, publisher.pubkey)
        yield m
    finally:
        m.poweroff()
        session_root.remove()
        publisher.close()


def _ours_left(m: Machine) -> list[str]:
    """Whatever of flatpak-sysext is still on the machine."""
    found = m.run("sh", "-c", "ls -d /var/lib/extensions/* /var/lib/flatpak/flatpak-sysext "
                  "/etc/flatpak-sysext /usr/share/flatpak/triggers/flatpak-sysext.trigger "
                  "/lib/systemd/system/flatpak-sysext.* /usr/lib/systemd/system/flatpak-sysext.* "
                  "/etc/systemd/system/*/flatpak-sysext.* /usr/bin/flatpak-sysext "
                  "/usr/lib/python3/dist-packages/flatpak_sysext /var/lib/flatpak-sysext "
                  "/run/flatpak-sysext /etc/dpkg/dpkg.cfg.d/flatpak-sysext "
                  "2>/dev/null").stdout.split()
    if m.run("dpkg-query", "-W", "flatpak-sysext").returncode == 0:
        found.append("dpkg: flatpak-sysext still known")
    return found + [f"merged: {name}" for name in m.merged()]


def test_install_link_upgrade_and_purge(machine: Machine, debian_package: Path) -> None:
    m = machine
    # Not /tmp: the booted system mounts a tmpfs there.
    shutil.copy2(debian_package, m.root / "root" / debian_package.name)
    m.run("dpkg", "-i", f"/root/{debian_package.name}", check=True)
    # The maintainer scripts enabled and started both units (dh_installsystemd).
    for unit in UNITS:
        assert m.run("systemctl", "is-enabled", unit).stdout.strip() == "enabled", unit
    m.run("systemctl", "enable", "systemd-sysext.service", check=True)

    out = m.run("flatpak", "install", "--system", "-y", "--noninteractive", "fsx", APP)
    assert out.returncode == 0 and "Traceback" not in out.stdout + out.stderr, out.stderr
    m.settle()
    m.run("flatpak-sysext", "approve", APP, check=True)
    m.wait_for(lambda: APP in m.merged(), f"{APP} to be merged")
    assert m.run("readlink", f"/var/lib/extensions/{APP}").returncode == 0
    reply = booted.call_daemon(m, APP)
    assert reply.stdout.strip() == 's "packaged"', reply.stderr

    # An upgrade (here: the same version again) keeps the links: only a removal takes
    # them away. The dpkg hooks the package ships take the extension out of /usr for
    # the transaction and bring it back after.
    link = m.run("readlink", f"/var/lib/extensions/{APP}").stdout
    upgrade = m.run("dpkg", "-i", f"/root/{debian_package.name}")
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    assert m.run("readlink", f"/var/lib/extensions/{APP}").stdout == link
    m.settle()
    m.wait_for(lambda: APP in m.merged(), f"{APP} to be merged again after the upgrade")

    purge = m.run("dpkg", "--purge", "flatpak-sysext")
    assert purge.returncode == 0, purge.stdout + purge.stderr
    assert f"{APP}: unlinked, flatpak-sysext is being removed" in purge.stdout
    assert _ours_left(m) == []
    # The app stays installed; only its extension is gone from the host, and /usr is
    # the distribution's again.
    assert m.run("flatpak", "info", "--system", APP).returncode == 0
    assert m.run("touch", "/usr/.fsx-probe").returncode == 0
    m.run("rm", "-f", "/usr/.fsx-probe")
    assert m.run("systemctl", "--failed", "--no-legend").stdout.strip() == ""


def test_remove_keeps_consent_and_config_and_purge_removes_them(
        machine: Machine, debian_package: Path) -> None:
    """docs/packaging.md's table: a removal leaves the service's state and the
    administrator's configuration, a reinstall links what was consented to, a purge
    leaves nothing."""
    m = machine
    shutil.copy2(debian_package, m.root / "root" / debian_package.name)
    m.run("dpkg", "-i", f"/root/{debian_package.name}", check=True)
    m.run("systemctl", "enable", "systemd-sysext.service", check=True)
    out = m.run("flatpak", "install", "--system", "--or-update", "-y", "--noninteractive",
                "fsx", APP)
    assert out.returncode == 0, out.stderr
    m.run("mkdir", "-p", "/etc/flatpak-sysext", check=True)
    m.run("sh", "-c", "echo '{}' > /etc/flatpak-sysext/config.json", check=True)
    m.run("flatpak-sysext", "approve", APP, check=True)
    m.wait_for(lambda: APP in m.merged(), f"{APP} to be merged")

    remove = m.run("dpkg", "--remove", "flatpak-sysext")
    assert remove.returncode == 0, remove.stdout + remove.stderr
    # dpkg keeps conffiles, and deb-systemd-helper the units' enablement, until purge.
    assert sorted(_ours_left(m)) == [
        "/etc/dpkg/dpkg.cfg.d/flatpak-sysext", "/etc/flatpak-sysext",
        "/etc/systemd/system/paths.target.wants/flatpak-sysext.path",
        "/etc/systemd/system/sysinit.target.wants/flatpak-sysext.service",
        "/var/lib/flatpak-sysext", "dpkg: flatpak-sysext still known"]
    assert m.run("test", "-s", "/var/lib/flatpak-sysext/consent.json").returncode == 0
    # Reinstalled, the consent kept brings the extension back without a new approve.
    m.run("dpkg", "-i", f"/root/{debian_package.name}", check=True)
    m.settle()
    m.wait_for(lambda: APP in m.merged(), f"{APP} to be merged again after a reinstall")

    purge = m.run("dpkg", "--purge", "flatpak-sysext")
    assert purge.returncode == 0, purge.stdout + purge.stderr
    assert _ours_left(m) == []
