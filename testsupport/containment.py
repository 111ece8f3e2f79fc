# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Containment's test trees: Sysprof's real layout, which must pass, and how a tree made
of it plus an attacker's files is judged (tests/test_contain*.py)."""

from __future__ import annotations

import os
import pathlib

from flatpak_sysext.report import TreeReport
from flatpak_sysext.rules import contain, elf
from flatpak_sysext.rules.release import Host
from flatpak_sysext.rules.validate import validate_tree

SYSPROF = "org.gnome.Sysprof"
HOST = Host({"ID": "debian", "VERSION_ID": "12"}, "x86-64")

SYSPROF_UNIT = b"""[Unit]
Description=Sysprof Daemon

[Service]
Type=dbus
BusName=org.gnome.Sysprof3
ExecStart=/usr/libexec/sysprofd
"""
SYSPROF_DBUS_SERVICE = b"""[D-BUS Service]
Name=org.gnome.Sysprof3
Exec=/usr/libexec/sysprofd
User=root
SystemdService=sysprof3.service
"""
SYSPROF_POLICY = b"""<!DOCTYPE busconfig PUBLIC
 "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="root">
    <allow own="org.gnome.Sysprof3"/>
  </policy>
  <policy context="default">
    <allow send_destination="org.gnome.Sysprof3"/>
  </policy>
</busconfig>
"""
SYSPROF_ACTIONS = b"""<?xml version="1.0" encoding="UTF-8"?>
<policyconfig>
  <vendor>The sysprof Project</vendor>
  <action id="org.gnome.sysprof3.profile">
    <defaults><allow_active>auth_admin_keep</allow_active></defaults>
  </action>
</policyconfig>
"""
SYSPROF_FILES = {
    "usr/libexec/sysprofd": b"#!/bin/sh\n",
    "usr/lib/systemd/system/sysprof3.service": SYSPROF_UNIT,
    "usr/share/dbus-1/system-services/org.gnome.Sysprof3.service": SYSPROF_DBUS_SERVICE,
    "usr/share/dbus-1/system.d/org.gnome.Sysprof3.conf": SYSPROF_POLICY,
    "usr/share/polkit-1/actions/org.gnome.sysprof3.policy": SYSPROF_ACTIONS,
    "usr/bin/sysprof-cli": b"#!/bin/sh\n",
    "usr/share/man/man1/sysprof-cli.1": b".TH x\n",
}


def tree(root: pathlib.Path, files: dict[str, bytes], links: dict[str, str] | None = None,
         app: str = SYSPROF) -> pathlib.Path:
    """An extension tree for ``app``: its extension-release, ``files`` and ``links``."""
    everything = {f"usr/lib/extension-release.d/extension-release.{app}": b"ID=_any\n", **files}
    for rel, content in everything.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    for rel, target in (links or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, root / rel)
    return root


def judge(root: pathlib.Path, app: str = SYSPROF) -> TreeReport:
    """The verdict on the tree at ``root`` for ``app``, on a Debian 12 host."""
    return validate_tree(root, app, HOST, elf.ElfTarget.host())


def refused(report: TreeReport, allowed: frozenset[str] = frozenset()) -> set[tuple[str, str]]:
    """(code, path) of every problem, restricted classes decided as with no opt-in."""
    extra = contain.restricted_problems(report.restricted, allowed)
    return {(p.code, p.path) for p in report.problems + tuple(extra)}
