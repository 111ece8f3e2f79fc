# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The containment holes a review found (docs/problems.md#restricted-content): each
attacker's tree is refused by its class, and where the host's own tool is at hand
(systemd-tmpfiles, dbus-daemon) the attack is shown to be real."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from flatpak_sysext import config
from testsupport.containment import SYSPROF, SYSPROF_FILES, judge, refused, tree
from testsupport.prerequisites import require, require_tools

TMPFILES = "usr/lib/tmpfiles.d/sysprof.conf"
POLICY = "usr/share/dbus-1/system.d/org.gnome.Sysprof3.conf"
UDEV = "usr/lib/udev/rules.d/70-sysprof.rules"
DROP_IN = "usr/lib/systemd/system/{}.d/10-x.conf"
OVERRIDE = b"[Service]\nExecStartPre=/usr/libexec/sysprofd\n"


@pytest.fixture(autouse=True)
def _umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def _policy(rules: str) -> bytes:
    return f'<busconfig><policy context="default">{rules}</policy></busconfig>'.encode()


# (id, files added to Sysprof's, the files refused, their class), for org.gnome.Sysprof.
ATTACKS: list[tuple[str, dict[str, bytes], set[str], str]] = [
    ("tmpfiles link to /etc, then a write through it",
     {TMPFILES: b"L+ /var/lib/org.gnome.Sysprof - - - - /etc\n"
                b"f /var/lib/org.gnome.Sysprof/nologin\n"}, {TMPFILES}, "tmpfiles-foreign-paths"),
    ("tmpfiles relative link target", {TMPFILES: b"L /var/lib/org.gnome.Sysprof/x - - - - "
                                                 b"../../../etc/shadow\n"},
     {TMPFILES}, "tmpfiles-foreign-paths"),
    # /usr/lib/ssl/certs is Debian's link to /etc/ssl/certs: a link into /usr may lead out.
    ("tmpfiles line below a link of another file",
     {"usr/lib/tmpfiles.d/a.conf": b"L+ /var/lib/org.gnome.Sysprof/ssl - - - - /usr/lib/ssl\n",
      "usr/lib/tmpfiles.d/b.conf": b"f /var/lib/org.gnome.Sysprof/ssl/certs/evil.pem\n"},
     {"usr/lib/tmpfiles.d/b.conf"}, "tmpfiles-foreign-paths"),
    ("tmpfiles line below a copy",
     {TMPFILES: b"z %S/org.gnome.Sysprof/skel/x 0644 - - -\n"
                b"C /var/lib/org.gnome.Sysprof/skel - - - - /usr/share/org.gnome.Sysprof\n"},
     {TMPFILES}, "tmpfiles-foreign-paths"),
    ("tmpfiles path of a longer name", {TMPFILES: b"d /var/lib/org.gnome.SysprofAgent\n"},
     {TMPFILES}, "tmpfiles-foreign-paths"),
    ("tmpfiles w follows a link its user plants",
     {TMPFILES: b"w /var/lib/org.gnome.Sysprof/state - - - - x\n"}, {TMPFILES},
     "tmpfiles-writes"),
    ("tmpfiles f with content", {TMPFILES: b"f /run/org.gnome.Sysprof/x 0644 - - - text\n"},
     {TMPFILES}, "tmpfiles-writes"),
    ("tmpfiles file capabilities", {TMPFILES: b"t /var/lib/org.gnome.Sysprof/tool - - - - "
                                              b"security.capability=0sAQAAAgAgAAAAAAAAAAAAAAAAAAA=\n"},
     {TMPFILES}, "tmpfiles-writes"),
    ("tmpfiles setuid mode", {TMPFILES: b"z /var/lib/org.gnome.Sysprof/tool 4755 root root -\n"},
     {TMPFILES}, "tmpfiles-writes"),
    ("tmpfiles recursive chown", {TMPFILES: b"Z /var/lib/org.gnome.Sysprof 0777 nobody -\n"},
     {TMPFILES}, "tmpfiles-recursive"),
    ("tmpfiles recursive ACL", {TMPFILES: b"A /var/lib/org.gnome.Sysprof - - - - u:nobody:rwx\n"},
     {TMPFILES}, "tmpfiles-recursive"),
    ("prefix drop-in", {DROP_IN.format("sysprof-.service"): OVERRIDE},
     {DROP_IN.format("sysprof-.service")}, "unit-drop-ins"),
    ("drop-in for a unit the tree does not ship", {DROP_IN.format("sysprof-agent.service"):
                                                   OVERRIDE},
     {DROP_IN.format("sysprof-agent.service")}, "unit-drop-ins"),
    ("unit of a longer name", {"usr/lib/systemd/system/sysprofagent.service": OVERRIDE},
     {"usr/lib/systemd/system/sysprofagent.service"}, "foreign-units"),
    ("D-Bus deny own of polkit", {POLICY: _policy('<deny own="org.freedesktop.PolicyKit1"/>')},
     {POLICY}, "dbus-foreign-names"),
    ("D-Bus deny send to logind",
     {POLICY: _policy('<deny send_destination="org.freedesktop.login1"/>')},
     {POLICY}, "dbus-foreign-names"),
    ("D-Bus deny of every destination",
     {POLICY: _policy('<deny send_interface="org.freedesktop.DBus.Properties"/>')},
     {POLICY}, "dbus-foreign-names"),
    ("D-Bus name of a longer name", {POLICY: _policy('<allow own="org.gnome.SysprofAgent"/>')},
     {POLICY}, "dbus-foreign-names"),
    ("polkit action of a longer name",
     {"usr/share/polkit-1/actions/x.policy": b'<policyconfig><action id="org.gnome.sysprofagent.'
                                             b'x"/></policyconfig>'},
     {"usr/share/polkit-1/actions/x.policy"}, "foreign-polkit-actions"),
    ("polkit action implying a host action",
     {"usr/share/polkit-1/actions/x.policy": b'<policyconfig><action id="org.gnome.sysprof3.x">'
                                             b'<defaults><allow_any>yes</allow_any></defaults>'
                                             b'<annotate key="org.freedesktop.policykit.imply">'
                                             b'org.gnome.sysprof3.y org.freedesktop.systemd1.'
                                             b'manage-units</annotate></action></policyconfig>'},
     {"usr/share/polkit-1/actions/x.policy"}, "foreign-polkit-actions"),
    ("polkit action letting pkexec run a host program",
     {"usr/share/polkit-1/actions/x.policy": b'<policyconfig><action id="org.gnome.sysprof3.x">'
                                             b'<defaults><allow_any>yes</allow_any></defaults>'
                                             b'<annotate key="org.freedesktop.policykit.exec.'
                                             b'path">/usr/bin/bash</annotate></action>'
                                             b'</policyconfig>'},
     {"usr/share/polkit-1/actions/x.policy"}, "foreign-polkit-actions"),
    ("sysusers user of a longer name", {"usr/lib/sysusers.d/x.conf": b"u sysprofagent -\n"},
     {"usr/lib/sysusers.d/x.conf"}, "sysusers-privileges"),
    ("udev RUN{program}", {UDEV: b'ACTION=="add", RUN{program}+="/bin/sh -c x"\n'}, {UDEV},
     "udev-programs"),
    ("udev RUN{builtin}", {UDEV: b'ACTION=="add", RUN{builtin}+="kmod load dccp"\n'}, {UDEV},
     "udev-programs"),
    ("udev IMPORT{builtin}", {UDEV: b'IMPORT{builtin}="kmod load dccp"\n'}, {UDEV},
     "udev-programs"),
    ("udev IMPORT{file}", {UDEV: b'IMPORT{file}="/etc/shadow"\n'}, {UDEV}, "udev-programs"),
    ("udev RUN split by a continuation", {UDEV: b'ACTION=="add", RU\\\nN+="/bin/sh"\n'}, {UDEV},
     "udev-programs"),
    ("udev takes a disk away from systemd",
     {UDEV: b'KERNEL=="sda*", ENV{SYSTEMD_READY}="0"\n'}, {UDEV}, "udev-programs"),
    ("udev SYSCTL", {UDEV: b'ACTION=="add", SYSCTL{kernel.core_pattern}="|/bin/sh"\n'}, {UDEV},
     "sysctl"),
    ("udev renames a device to the host's interface",
     {UDEV: b'SUBSYSTEM=="net", ATTR{address}=="00:11:22:33:44:55", NAME="eth0"\n'}, {UDEV},
     "udev-device-access"),
    ("udev link in the host's by-uuid directory",
     {UDEV: b'KERNEL=="sd?1", SYMLINK+="disk/by-uuid/0b4e-1f2a"\n'}, {UDEV},
     "udev-device-access"),
    ("udev link priority", {UDEV: b'KERNEL=="sd?1", OPTIONS+="link_priority=100"\n'}, {UDEV},
     "udev-device-access"),
    ("udev ATTR authorizes a device",
     {UDEV: b'SUBSYSTEM=="usb", ATTR{authorized}=="0", ATTR{authorized}="1"\n'}, {UDEV},
     "udev-device-access"),
]


@pytest.mark.parametrize(("files", "paths", "cls"), [(f, p, c) for _, f, p, c in ATTACKS],
                         ids=[i for i, _, _, _ in ATTACKS])
def test_each_attack_is_refused_by_its_class(tmp_path: pathlib.Path, files: dict[str, bytes],
                                             paths: set[str], cls: str) -> None:
    report = judge(tree(tmp_path, {**SYSPROF_FILES, **files}))
    assert report.problems == ()
    assert dict(report.restricted) == {cls: tuple(sorted(paths))}
    assert refused(report, frozenset({cls})) == set()


# (app, its files, class -> the files refused): the names of the app's own, no other's.
NAMES: list[tuple[str, dict[str, bytes], dict[str, tuple[str, ...]]]] = [
    # A unit named by the app's last element, but a host unit's drop-in directory.
    ("org.freedesktop.Systemd", {DROP_IN.format("systemd-logind.service"): OVERRIDE},
     {"unit-drop-ins": (DROP_IN.format("systemd-logind.service"),)}),
    ("org.example.User", {DROP_IN.format("user@.service"): OVERRIDE,
                          DROP_IN.format("user@1000.service"): OVERRIDE},
     {"unit-drop-ins": (DROP_IN.format("user@.service"), DROP_IN.format("user@1000.service"))}),
    # Its own units, their instances and templates take drop-ins; others named for it not.
    ("org.example.Tool", {"usr/lib/systemd/system/tool@.service": OVERRIDE,
                          "usr/lib/systemd/system/tool-a.service": OVERRIDE,
                          DROP_IN.format("tool@.service"): OVERRIDE,
                          DROP_IN.format("tool@x.service"): OVERRIDE,
                          DROP_IN.format("tool-a.service"): OVERRIDE,
                          DROP_IN.format("tool-b.service"): OVERRIDE},
     {"unit-drop-ins": (DROP_IN.format("tool-b.service"),)}),
    # Mount units are named after their path: /var/lib is no app's, its own directory is.
    ("org.example.Var", {"usr/lib/systemd/system/var-lib.mount": b"[Mount]\nWhat=/dev/sdb\n",
                         "usr/lib/systemd/system/var-lib.automount": b"[Automount]\n",
                         "usr/lib/systemd/system/var-lib-org.example.Var\\x2dcache.mount":
                         b"[Mount]\nWhat=tmpfs\n"},
     {"foreign-units": ("usr/lib/systemd/system/var-lib.automount",
                        "usr/lib/systemd/system/var-lib.mount")}),
    # A nightly build claims neither the stable app's names nor "devel".
    ("org.gnome.Sysprof.Devel", {"usr/share/polkit-1/actions/x.policy":
                                 b'<policyconfig><action id="org.gnome.sysprof3.profile"/>'
                                 b'<action id="org.gnome.Sysprof.Devel.profile"/></policyconfig>',
                                 "usr/lib/systemd/system/org.gnome.Sysprof.Devel.service":
                                 OVERRIDE, "usr/lib/systemd/system/devel.service": OVERRIDE,
                                 "usr/lib/sysusers.d/x.conf": b"u sysprof -\n"},
     {"foreign-polkit-actions": ("usr/share/polkit-1/actions/x.policy",),
      "foreign-units": ("usr/lib/systemd/system/devel.service",),
      "sysusers-privileges": ("usr/lib/sysusers.d/x.conf",)}),
    # Nor does the stable app claim the nightly's.
    (SYSPROF, {**SYSPROF_FILES, POLICY: _policy('<allow own="org.gnome.Sysprof.Devel"/>'
                                                '<allow own="org.gnome.Sysprof3.Helper"/>'
                                                '<deny own="org.gnome.Sysprof-helper"/>')},
     {"dbus-foreign-names": (POLICY,)}),
]


@pytest.mark.parametrize(("app", "files", "expected"), [(a, f, e) for a, f, e in NAMES],
                         ids=[f"{a}-{i}" for i, (a, _, _) in enumerate(NAMES)])
def test_names_are_the_apps_only_up_to_a_separator(
        tmp_path: pathlib.Path, app: str, files: dict[str, bytes],
        expected: dict[str, tuple[str, ...]]) -> None:
    report = judge(tree(tmp_path, files, app=app), app)
    assert report.problems == ()
    assert dict(report.restricted) == expected


def test_only_the_attackers_lines_are_refused(tmp_path: pathlib.Path) -> None:
    """The app's own directories, links and copies from the tree, removals and rules that
    match and set properties pass beside them."""
    report = judge(tree(tmp_path, {**SYSPROF_FILES, TMPFILES: (
        b"d /var/lib/org.gnome.Sysprof 0750 - - -\n"
        b"L /var/lib/org.gnome.Sysprof/data - - - - /usr/share/org.gnome.Sysprof/data\n"
        b"C /var/lib/org.gnome.Sysprof3/skel - - - - /usr/share/org.gnome.Sysprof/skel\n"
        b"f /var/lib/org.gnome.Sysprof/empty 0640 - - -\n"
        b"R /var/tmp/org.gnome.Sysprof-cache\n"
        b"x /var/tmp/org.gnome.Sysprof-cache/keep\n"
        b"D /run/org.gnome.Sysprof 1777 - - -\n"),
        UDEV: b'SUBSYSTEM=="usb", ATTR{idVendor}=="1234", IMPORT{parent}="ID_*", \\\n'
              b'  ENV{SYSPROF}="1", NAME=="x", SYMLINK+="sysprof%n"\n',
        "usr/share/polkit-1/actions/org.gnome.sysprof3.helper.policy": (
            b'<policyconfig><action id="org.gnome.sysprof3.helper"><annotate key="org.'
            b'freedesktop.policykit.exec.path">/usr/libexec/sysprofd</annotate><annotate key='
            b'"org.freedesktop.policykit.imply">org.gnome.sysprof3.profile</annotate>'
            b'</action></policyconfig>'),
        "usr/lib/tmpfiles.d/zz.conf": b"w /var/lib/org.gnome.Sysprof/empty - - - - x\n",
        "usr/lib/udev/rules.d/99-x.rules": b'SYSCTL{kernel.core_pattern}="|/bin/sh"\n'}))
    assert report.problems == ()
    assert dict(report.restricted) == {"sysctl": ("usr/lib/udev/rules.d/99-x.rules",),
                                       "tmpfiles-writes": ("usr/lib/tmpfiles.d/zz.conf",)}


def _systemd_tmpfiles(root: pathlib.Path, *configs: pathlib.Path) -> None:
    subprocess.run([shutil.which("systemd-tmpfiles") or "", f"--root={root}", "--create",
                    *map(str, configs)], check=True, capture_output=True)


def test_the_tmpfiles_link_attack_is_real_and_refused(tmp_path: pathlib.Path) -> None:
    """systemd-tmpfiles follows a link a line of the same tree made, whatever the files'
    order: writes meant for the app's own directory land in the host's /etc."""
    require_tools("systemd-tmpfiles")
    host = tmp_path / "host"
    (host / "etc/ssl/certs").mkdir(parents=True)
    (host / "var/lib").mkdir(parents=True)
    (host / "usr/lib/ssl").mkdir(parents=True)
    os.symlink("/etc/ssl/certs", host / "usr/lib/ssl/certs")  # as Debian's openssl has it
    attacks = {
        "usr/lib/tmpfiles.d/a.conf": b"f /var/lib/org.gnome.Sysprof/etc/nologin\n"
                                     b"f /var/lib/org.gnome.Sysprof/ssl/certs/evil.pem\n",
        "usr/lib/tmpfiles.d/b.conf": b"L+ /var/lib/org.gnome.Sysprof/etc - - - - /etc\n"
                                     b"L+ /var/lib/org.gnome.Sysprof/ssl - - - - /usr/lib/ssl\n"}
    ext = tree(tmp_path / "ext", {**SYSPROF_FILES, **attacks})
    _systemd_tmpfiles(host, *(ext / f for f in sorted(attacks)))
    assert (host / "etc/nologin").is_file()  # every login but root's refused
    assert (host / "etc/ssl/certs/evil.pem").is_file()  # a certificate authority added
    assert dict(judge(ext).restricted) == {"tmpfiles-foreign-paths": tuple(sorted(attacks))}


def test_a_deny_rule_cuts_a_host_service_off_the_bus_and_is_refused(
        tmp_path: pathlib.Path) -> None:
    """On a private dbus-daemon that includes the policy as the system bus includes
    system.d: with it, nobody can own polkit's name."""
    require_tools("dbus-daemon", "busctl")
    policy = _policy('<allow own="org.gnome.Sysprof3"/><deny own="org.freedesktop.PolicyKit1"/>')
    ext = tree(tmp_path / "ext", {**SYSPROF_FILES, POLICY: policy})
    assert dict(judge(ext).restricted) == {"dbus-foreign-names": (POLICY,)}

    def may_own(name: str, included: pathlib.Path) -> bool:
        socket = tmp_path / "bus"
        config = tmp_path / "bus.conf"
        config.write_text(f"""<busconfig>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/><allow own="*"/>
  </policy>
  <includedir>{included}</includedir>
</busconfig>
""")
        with subprocess.Popen([shutil.which("dbus-daemon") or "", f"--config-file={config}",
                               "--nofork", "--print-address"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL) as bus:
            try:
                assert bus.stdout is not None and bus.stdout.readline()  # listening
                call = subprocess.run(
                    [shutil.which("busctl") or "", f"--address=unix:path={socket}", "call",
                     "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                     "RequestName", "su", name, "0"], capture_output=True, text=True)
            finally:
                bus.terminate()
        assert call.returncode == 0 or "Access denied" in call.stderr, call.stderr
        return call.returncode == 0

    (tmp_path / "empty").mkdir()
    assert may_own("org.freedesktop.PolicyKit1", tmp_path / "empty")
    assert not may_own("org.freedesktop.PolicyKit1", ext / "usr/share/dbus-1/system.d")
    assert may_own("org.freedesktop.login1", ext / "usr/share/dbus-1/system.d")


@pytest.mark.parametrize("cls", ["tmpfiles-writes", "tmpfiles-recursive"])
def test_the_administrator_can_allow_the_new_classes(tmp_path: pathlib.Path, cls: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"host_classes": {SYSPROF: [cls]}}))
    assert config.load(str(path)).classes_allowed(SYSPROF) == {cls}


@pytest.mark.privileged
def test_tmpfiles_w_follows_a_link_the_apps_user_plants(tmp_path: pathlib.Path) -> None:
    """The app's unprivileged user owns its state directory and plants a link there: a
    ``w`` line writes through it as root (``f+`` refuses the link)."""
    require(os.geteuid() == 0, "needs root (chown)")
    require_tools("systemd-tmpfiles")
    host = tmp_path / "host"
    (host / "etc").mkdir(parents=True)
    (host / "etc/shadow").write_text("root:$y$hash:19000::::::\n")
    state = host / "var/lib/org.gnome.Sysprof"
    state.mkdir(parents=True)
    os.symlink("../../../etc/shadow", state / "cache")  # relative: stays inside ``host``
    for path in (state, state / "cache"):
        os.chown(path, 65534, 65534, follow_symlinks=False)
    line = {TMPFILES: b"w /var/lib/org.gnome.Sysprof/cache - - - - root::0:::::\n"}
    ext = tree(tmp_path / "ext", {**SYSPROF_FILES, **line})
    _systemd_tmpfiles(host, ext / TMPFILES)
    assert (host / "etc/shadow").read_text().startswith("root::0:")  # no password for root
    assert dict(judge(ext).restricted) == {"tmpfiles-writes": (TMPFILES,)}
