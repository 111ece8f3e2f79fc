# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Containment and the manifest (docs/problems.md#restricted-content and neighbours), on
the hostile trees an attacker would ship, and on Sysprof's real layout, which must pass."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from typing import Any

import pytest

from flatpak_sysext import cli
from flatpak_sysext.rules.manifest import Manifest
from testsupport.containment import SYSPROF_FILES, SYSPROF_UNIT, judge, refused, tree
from testsupport.flatpak import FlatpakEnv, TreeBuilder, daemon_tree


@pytest.fixture(autouse=True)
def _umask() -> object:
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_sysprof_passes_with_no_opt_in_and_its_manifest_reads_clearly(
        tmp_path: pathlib.Path) -> None:
    report = judge(tree(tmp_path, SYSPROF_FILES))
    assert refused(report) == set()
    assert report.manifest.grants() == {
        "unit sysprof3.service runs /usr/libexec/sysprofd as root",
        "unit sysprof3.service is started on demand for D-Bus name org.gnome.Sysprof3",
        "owns D-Bus name org.gnome.Sysprof3",
        "D-Bus policy lets everyone send to org.gnome.Sysprof3",
        "polkit action org.gnome.sysprof3.profile: any active user with an administrator's "
        "password, remembered for a while, others refused",
        "executable on PATH: /usr/bin/sysprof-cli",
    }


def test_manifest_json_round_trips_and_is_strict(tmp_path: pathlib.Path) -> None:
    m = judge(tree(tmp_path, SYSPROF_FILES)).manifest
    assert m != Manifest()
    assert Manifest.from_json(json.loads(json.dumps(m.to_json()))) == m
    bad = m.to_json()
    bad["extra"] = []
    cases: list[Any] = [bad, [], {**m.to_json(), "units": [{"name": "x"}]},
             {**m.to_json(), "users": [1]}, {**m.to_json(), "memberships": [["a"]]}]
    for data in cases:
        with pytest.raises(ValueError):
            Manifest.from_json(data)


def test_the_grants_difference_shows_what_an_update_adds(tmp_path: pathlib.Path) -> None:
    old = judge(tree(tmp_path / "old", SYSPROF_FILES)).manifest
    unit = SYSPROF_UNIT.replace(b"[Service]", b"[Service]\nUser=sysprof")
    new = judge(tree(tmp_path / "new", {
        **SYSPROF_FILES, "usr/lib/systemd/system/sysprof3.service": unit,
        "usr/bin/sysprof-extra": b"#!/bin/sh\n"})).manifest
    assert new.grants() - old.grants() == {
        "unit sysprof3.service runs /usr/libexec/sysprofd as sysprof",
        "executable on PATH: /usr/bin/sysprof-extra"}


# Every hostile tree an attacker could ship, with the class that refuses it.
HOSTILE: list[tuple[str, dict[str, bytes], str]] = [
    ("usr-local", {"usr/local/sbin/systemd-sysext": b"#!/bin/sh\n"}, "usr-local"),
    ("drop-in for a host unit",
     {"usr/lib/systemd/system/ssh.service.d/x.conf": b"[Service]\nExecStartPre=/bin/sh\n"},
     "unit-drop-ins"),
    ("type-wide drop-in", {"usr/lib/systemd/system/service.d/x.conf": b"[Service]\n"},
     "unit-drop-ins"),
    ("generator", {"usr/lib/systemd/system-generators/sysprof-gen": b"#!/bin/sh\n"},
     "generators"),
    ("polkit rule returning YES", {"usr/share/polkit-1/rules.d/00-sysprof.rules":
                                   b"polkit.addRule(function() { return polkit.Result.YES; });"},
     "polkit-rules"),
    ("tmpfiles on /etc/shadow", {"usr/lib/tmpfiles.d/x.conf": b"z /etc/shadow 0666 - - -\n"},
     "tmpfiles-foreign-paths"),
    ("tmpfiles glob", {"usr/lib/tmpfiles.d/x.conf": b"z /var/lib/org.gnome.Sysprof* 0666\n"},
     "tmpfiles-foreign-paths"),
    ("tmpfiles dot-dot",
     {"usr/lib/tmpfiles.d/x.conf": b"z /var/lib/org.gnome.Sysprof/../../../etc 0777\n"},
     "tmpfiles-foreign-paths"),
    ("tmpfiles copies a secret", {"usr/lib/tmpfiles.d/x.conf":
                                  b"C /var/lib/org.gnome.Sysprof/s 0644 - - - /etc/shadow\n"},
     "tmpfiles-foreign-paths"),
    ("tmpfiles device node",
     {"usr/lib/tmpfiles.d/x.conf": b"c /run/org.gnome.Sysprof/mem 0666 - - - 1:1\n"},
     "tmpfiles-foreign-paths"),
    ("tmpfiles on a host path named like the app's last element",
     {"usr/lib/tmpfiles.d/x.conf": b"R /var/lib/sysprof\n"}, "tmpfiles-foreign-paths"),
    ("tmpfiles in /etc", {"usr/lib/tmpfiles.d/x.conf": b"d /etc/org.gnome.Sysprof\n"},
     "tmpfiles-foreign-paths"),
    ("unit claiming a host D-Bus name", {"usr/lib/systemd/system/sysprof4.service":
                                         b"[Service]\nBusName=org.freedesktop.login1\n"},
     "dbus-foreign-names"),
    ("sysusers adds to sudo", {"usr/lib/sysusers.d/x.conf": b"m someone sudo\n"},
     "sysusers-privileges"),
    ("sysusers uid 0", {"usr/lib/sysusers.d/x.conf": b"u sysprof 0 - -\n"},
     "sysusers-privileges"),
    ("sysusers primary group sudo", {"usr/lib/sysusers.d/x.conf": b"u sysprof 990:sudo\n"},
     "sysusers-privileges"),
    ("sysusers uid from /etc/shadow", {"usr/lib/sysusers.d/x.conf": b"u sysprof /etc/shadow\n"},
     "sysusers-privileges"),
    ("sysusers user named like a host group", {"usr/lib/sysusers.d/x.conf": b"u sudo -\n"},
     "sysusers-privileges"),
    ("udev RUN", {"usr/lib/udev/rules.d/70-sysprof.rules": b'ACTION=="add", RUN+="/bin/sh"\n'},
     "udev-programs"),
    ("udev PROGRAM", {"usr/lib/udev/rules.d/70-sysprof.rules": b'PROGRAM=="/bin/sh -c x"\n'},
     "udev-programs"),
    ("udev IMPORT{program}",
     {"usr/lib/udev/rules.d/70-sysprof.rules": b'IMPORT{program}="/bin/sh"\n'}, "udev-programs"),
    ("udev opens a disk", {"usr/lib/udev/rules.d/70-sysprof.rules":
                           b'KERNEL=="sda", MODE="0666"\n'}, "udev-device-access"),
    ("modprobe install", {"usr/lib/modprobe.d/x.conf": b"install dummy /bin/sh -c x\n"},
     "modprobe"),
    ("sysctl core_pattern", {"usr/lib/sysctl.d/x.conf": b"kernel.core_pattern=|/bin/sh\n"},
     "sysctl"),
    ("binfmt", {"usr/lib/binfmt.d/x.conf": b":x:M::MZ::/bin/sh:\n"}, "binfmt"),
    ("NetworkManager dispatcher", {"usr/lib/NetworkManager/dispatcher.d/99-x": b"#!/bin/sh\n"},
     "networkmanager"),
    ("kernel install hook", {"usr/lib/kernel/install.d/99-x.install": b"#!/bin/sh\n"},
     "kernel-install"),
    ("a .pth in dist-packages", {"usr/lib/python3/dist-packages/x.pth": b"import os\n"},
     "python-path"),
    ("a .pth anywhere", {"usr/share/sysprof/x.pth": b"import os\n"}, "python-path"),
    ("PAM module", {"usr/lib/x86_64-linux-gnu/security/pam_x.so": b"x"}, "pam"),
    ("NSS module", {"usr/lib/x86_64-linux-gnu/libnss_x.so.2": b"x"}, "nss"),
    ("unit not named for the app", {"usr/lib/systemd/system/apparmor.service":
                                    b"[Service]\nExecStart=/bin/true\n"}, "foreign-units"),
    ("enablement link target file",
     {"usr/lib/systemd/system/multi-user.target.wants/sysprof3.service": b"[Service]\n"},
     "unit-enablement"),
    ("D-Bus policy for another service", {"usr/share/dbus-1/system.d/org.gnome.Sysprof3.conf":
                                          b'<busconfig><policy context="default"><allow '
                                          b'send_destination="org.freedesktop.login1"/>'
                                          b'</policy></busconfig>'}, "dbus-foreign-names"),
    ("D-Bus policy with no destination", {"usr/share/dbus-1/system.d/org.gnome.Sysprof3.conf":
                                          b'<busconfig><policy context="default"><allow '
                                          b'send_interface="org.freedesktop.DBus.Properties"/>'
                                          b'</policy></busconfig>'}, "dbus-foreign-names"),
    ("D-Bus policy includes files", {"usr/share/dbus-1/system.d/org.gnome.Sysprof3.conf":
                                     b"<busconfig><includedir>/tmp</includedir></busconfig>"},
     "dbus-foreign-names"),
    ("D-Bus service claiming a host name",
     {"usr/share/dbus-1/system-services/x.service":
      b"[D-BUS Service]\nName=org.freedesktop.login1\nExec=/usr/libexec/sysprofd\n"},
     "dbus-foreign-names"),
    ("polkit action of a host mechanism", {"usr/share/polkit-1/actions/x.policy":
                                           b'<policyconfig><action id="org.freedesktop.login1.'
                                           b'reboot"/></policyconfig>'}, "foreign-polkit-actions"),
]


@pytest.mark.parametrize(("files", "cls"), [(f, c) for _, f, c in HOSTILE],
                         ids=[i for i, _, _ in HOSTILE])
def test_hostile_content_is_refused_unless_its_class_is_allowed(
        tmp_path: pathlib.Path, files: dict[str, bytes], cls: str) -> None:
    report = judge(tree(tmp_path, {**SYSPROF_FILES, **files}))
    assert report.problems == ()  # static rules pass: only the class refuses it
    assert dict(report.restricted).keys() == {cls}
    assert set(dict(report.restricted)[cls]) == set(files)
    assert {c for c, _ in refused(report)} == {"restricted-content"}
    assert refused(report, frozenset({cls})) == set()


@pytest.mark.parametrize(("link", "target"), [
    ("usr/lib/tmpfiles.d/zz.conf", "/tmp/evil.conf"),  # a file any local user controls
    ("usr/lib/systemd/system/sysprof3.service", "/dev/null"),  # a mask
    ("usr/lib/systemd/system/sysprof4.service", "../../../../../etc/shadow"),
    ("usr/bin/sysprof", "/usr/libexec/missing"),  # not in the tree: the host's, if any
    ("usr/bin/sysprof2", "sysprof2"),  # a loop
    ("usr/bin/sysprof3", "/usr/bin/sysprof-cli/x"),  # through a file
])
def test_symlinks_must_resolve_inside_the_tree(tmp_path: pathlib.Path, link: str,
                                               target: str) -> None:
    files = {k: v for k, v in SYSPROF_FILES.items() if k != link}
    report = judge(tree(tmp_path, files, {link: target}))
    assert ("escaping-symlink", link) in refused(report)


def test_symlinks_inside_the_tree_pass(tmp_path: pathlib.Path) -> None:
    report = judge(tree(tmp_path, SYSPROF_FILES, {
        "usr/bin/sysprofd": "/usr/libexec/sysprofd", "usr/bin/sysprof": "sysprof-cli",
        "usr/share/org.gnome.Sysprof/man": "../man/man1",
        "usr/share/org.gnome.Sysprof/chain": "../../bin/sysprof"}))
    assert refused(report) == set()


def test_usr_local_mask_by_symlink(tmp_path: pathlib.Path) -> None:
    # The outranking directory and the /dev/null mask: both rules refuse it.
    report = judge(tree(tmp_path, SYSPROF_FILES, {
        "usr/local/lib/systemd/system/apparmor.service": "/dev/null"}))
    found = refused(report)
    assert ("escaping-symlink", "usr/local/lib/systemd/system/apparmor.service") in found
    assert ("restricted-content", "usr/local/lib/systemd/system/apparmor.service") in found


@pytest.mark.parametrize("path", ["usr/lib/x86_64-linux-gnu/gio/modules/x", "usr/share/gdm/x",
                                  "usr/lib/sysprof/x",  # named like the last element only
                                  "usr/include/x.h", "usr/lib/systemd/network/x.network",
                                  "usr/lib/apt/methods/x", "usr/lib/other/x"])
def test_files_in_no_class_reject_the_tree(tmp_path: pathlib.Path, path: str) -> None:
    report = judge(tree(tmp_path, {**SYSPROF_FILES, path: b"x"}))
    assert ("unclassified-file", path) in refused(report)


@pytest.mark.parametrize("content", [b"\xff\xfe", b"[Service\n", b"x" * (64 * 1024 + 1),
                                     b'<!DOCTYPE x [<!ENTITY a "b">]><busconfig/>'])
def test_config_that_cannot_be_read_rejects(tmp_path: pathlib.Path, content: bytes) -> None:
    path = "usr/share/dbus-1/system.d/org.gnome.Sysprof3.conf"
    if not content.startswith(b"<!"):
        path = "usr/lib/systemd/system/sysprof3.service"
    report = judge(tree(tmp_path, {**SYSPROF_FILES, path: content}))
    assert ("malformed-config", path) in refused(report)


def test_owned_tmpfiles_and_sysusers_pass(tmp_path: pathlib.Path) -> None:
    report = judge(tree(tmp_path, {
        **SYSPROF_FILES,
        "usr/lib/tmpfiles.d/sysprof.conf": b"d /var/lib/org.gnome.Sysprof 0750 sysprof - -\n"
                                           b"d %C/org.gnome.Sysprof 0750 - - -\n"
                                           b"z /run/org.gnome.Sysprof 0755\n",
        "usr/lib/sysusers.d/sysprof.conf": b"g sysprof -\nu sysprof -:sysprof\n"
                                           b"m root sysprof\nu _sysprof-helper -\n"}))
    assert refused(report) == set()
    grants = report.manifest.grants()
    assert {"creates user sysprof", "creates group sysprof", "adds user root to group sysprof",
            "tmpfiles line: d /var/lib/org.gnome.Sysprof 0750 sysprof - -"} <= grants


def test_check_refuses_restricted_content_without_a_config(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tree(tmp_path, {**SYSPROF_FILES, "usr/lib/sysctl.d/x.conf": b"kernel.x=1\n"})
    assert cli.main(["check", "--json", str(root)], {}) == 1
    out = json.loads(capsys.readouterr().out)
    assert [p["code"] for p in out["problems"]] == ["restricted-content"]
    assert any(g.startswith("polkit action org.gnome.sysprof3.profile: ") for g in out["grants"])
    assert cli.main(["check", str(tree(tmp_path / "ok", SYSPROF_FILES))], {}) == 0
    assert "unit sysprof3.service runs /usr/libexec/sysprofd as root" in capsys.readouterr().out


@pytest.mark.parametrize(("mine", "hosts"), [
    ("usr/sbin/apt", "usr/bin/apt"),  # root's PATH has /usr/sbin first
    ("usr/sbin/apt", "bin/apt"),  # a host without merged /usr
    ("usr/lib/python3.11/apt/__init__.py", "usr/lib/python3/dist-packages/apt/__init__.py"),
    ("usr/lib/python3.11/yaml.py", "usr/lib/python3/dist-packages/yaml/__init__.py"),
    ("usr/share/perl5/Carp.pm", "usr/lib/x86_64-linux-gnu/perl-base/Carp.pm"),
    ("usr/lib/systemd/system/sysprof3.service", "lib/systemd/system/sysprof3.service"),
])
def test_a_file_found_before_a_host_file_is_refused(tmp_path: pathlib.Path, mine: str,
                                                    hosts: str) -> None:
    from flatpak_sysext.rules import placement

    host = tmp_path / "host"
    (host / hosts).parent.mkdir(parents=True)
    (host / hosts).write_bytes(b"x")
    found = placement.check([mine], str(host), (), {})
    assert [(p.code, p.path) for p in found] == [("outranks-host-file", mine)]
    assert f"/{hosts.split('/__init__')[0]}" in found[0].message
    assert placement.check([mine], None, (), {}) == []  # allow_host_shadowing
    shutil.rmtree(host)
    host.mkdir()
    assert placement.check([mine], str(host), (), {}) == []


@pytest.mark.privileged
def test_hostile_apps_installed_with_flatpak_are_refused_until_allowed(
        fenv: FlatpakEnv) -> None:
    """The real flatpak: what the trigger and reconcile do with the issue's trees."""
    def hostile(app: str, files: dict[str, str], links: dict[str, str]) -> TreeBuilder:
        def build(root: pathlib.Path) -> None:
            daemon_tree(app, "hostile")(root)
            tree(root, {k: v.encode() for k, v in files.items()}, links, app=app)
        return build

    cases = {
        "org.fsx.Shadow": ({"usr/lib/tmpfiles.d/shadow.conf": "z /etc/shadow 0666 - - -\n"}, {},
                           "restricted-content"),
        "org.fsx.Pth": ({"usr/lib/python3/dist-packages/x.pth": "import os\n"}, {},
                        "restricted-content"),
        "org.fsx.Evil": ({}, {"usr/lib/tmpfiles.d/zz.conf": "/tmp/evil.conf"}, "escaping-symlink"),
    }
    fenv.publish("org.fsx.Good", daemon_tree("org.fsx.Good", "good"))
    for app, (files, links, _) in cases.items():
        fenv.publish(app, hostile(app, files, links))
    for app in ("org.fsx.Good", *cases):
        fenv.install(app)
    assert fenv.sysext("reconcile").returncode == 0
    st = fenv.status()
    assert set(fenv.links()) == {"org.fsx.Good"}
    for app, (_, _, code) in cases.items():
        assert st[app]["state"] == "rejected"
        assert {p["code"] for p in st[app]["problems"]} == {code}, st[app]
    assert st["org.fsx.Good"]["manifest"]["dbus_owns"] == ["org.fsx.Good"]
    # The administrator allows one class for one app: that app only, from the next run.
    fenv.write_config({"host_classes": {"org.fsx.Pth": ["python-path"]}})
    assert fenv.sysext("reconcile").returncode == 0
    assert set(fenv.links()) == {"org.fsx.Good", "org.fsx.Pth"}
