# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The line-by-line rules of containment for the files the host reads as configuration.

Each ``_judge_*`` reads one file's bytes (validate read them bounded) into the manifest
being collected and returns the restricted classes its lines fall in. What each rule
stops is in docs/problems.md#restricted-content.
"""

from __future__ import annotations

import dataclasses
import re

from flatpak_sysext import manifest
from flatpak_sysext.manifest import Manifest, Unit
from flatpak_sysext.unitgrants import Entry

MAX_LISTED = 50
"""Problems listed per restricted class; the rest are counted."""


_UDEV_PROGRAMS = re.compile(r"\b(RUN|PROGRAM|IMPORT\{program\})\s*[+:]?=|"
                            r"ENV\{SYSTEMD_(USER_)?WANTS\}|\bSYSTEMD_(USER_)?WANTS\b")
_UDEV_ACCESS = re.compile(r"\b(MODE|OWNER|GROUP)\s*:?=|uaccess|seat")
_TMPFILES_TYPES = frozenset("fFwdDevqQpLCxXrRzZtThHaA")
# /etc is not among them: what lies there configures the host.
_OWNED_ROOTS = ("/var/lib/", "/var/cache/", "/var/log/", "/var/spool/", "/var/tmp/",
                "/run/", "/tmp/", "/srv/")
_SPECIFIERS = {"%S": "/var/lib", "%C": "/var/cache", "%L": "/var/log", "%t": "/run",
               "%T": "/tmp", "%V": "/var/tmp", "%%": "%"}


class Namer:
    """Whether a name is named for the app (see the module's docstring).

    Calling it accepts the app ID or its last element as the prefix: for unit and user
    names, where an exact clash with the host's is caught elsewhere (placement, sysusers
    skipping existing users). :meth:`full` accepts only the app ID: for names and paths
    shared with the host's own (D-Bus names, polkit actions, directories under usr/lib
    and usr/share, tmpfiles paths), where an app called ``org.example.Apt`` must not get
    ``usr/lib/apt`` nor one called ``com.example.Org`` every ``org.*`` D-Bus name.
    """

    def __init__(self, app_id: str) -> None:
        self.app_id = app_id.lower()
        self.prefixes = [self.app_id]
        stem = app_id.rsplit(".", 1)[-1].lower()
        if len(stem) >= 3:  # a one- or two-letter stem would claim half the namespace
            self.prefixes.append(stem)

    def __call__(self, name: str) -> bool:
        low = name.lower().lstrip("_")
        low = low[len("dbus-"):] if low.startswith("dbus-") else low
        return any(low.startswith(p) for p in self.prefixes)

    def full(self, name: str) -> bool:
        """Whether ``name`` starts with the app ID (case-insensitively)."""
        return name.lower().startswith(self.app_id)


@dataclasses.dataclass
class Collected:
    """The manifest while it is being collected."""

    unit_files: dict[str, dict[tuple[str, str], list[Entry]]] = dataclasses.field(
        default_factory=dict)
    """Unit name -> (order, path) -> the assignments of its file or one of its drop-ins."""
    unit_paths: dict[str, str] = dataclasses.field(default_factory=dict)
    services: dict[str, tuple[str, str, str, str]] = dataclasses.field(default_factory=dict)
    """D-Bus system service files: path -> (Name, Exec line, User, SystemdService)."""
    policies: list[tuple[str, str, str, str]] = dataclasses.field(default_factory=list)
    """(path, who, attribute, name) of every <allow> in a system.d file."""
    policy_other: list[str] = dataclasses.field(default_factory=list)
    """system.d files with an element or <allow> that names no D-Bus name of ours."""
    actions: set[str] = dataclasses.field(default_factory=set)
    udev: set[str] = dataclasses.field(default_factory=set)
    users: set[str] = dataclasses.field(default_factory=set)
    groups: set[str] = dataclasses.field(default_factory=set)
    members: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    tmpfiles: set[str] = dataclasses.field(default_factory=set)
    executables: set[str] = dataclasses.field(default_factory=set)

    @property
    def units(self) -> dict[str, Unit]:
        """Each unit read as systemd reads it: its file, then its drop-ins by file name."""
        return {name: manifest.unit(name, [e for _, f in sorted(files.items()) for e in f])
                for name, files in self.unit_files.items()}

    def manifest(self) -> Manifest:
        by_unit = {s[3]: s[0] for s in self.services.values() if s[3]}
        units = tuple(dataclasses.replace(u, bus_name=u.bus_name or by_unit.get(u.name))
                      for _, u in sorted(self.units.items()))
        owns = {n for _, _, attr, n in self.policies if attr in ("own", "own_prefix")}
        access = {(who, n) for _, who, attr, n in self.policies if attr == "send_destination"}
        provided = {s[0] for s in self.services.values()}
        provided |= {u.bus_name for u in self.units.values() if u.bus_name}
        return Manifest(units, tuple(sorted(owns | provided)), tuple(sorted(access)),
                        tuple(sorted(self.actions)), tuple(sorted(self.udev)),
                        tuple(sorted(self.users)), tuple(sorted(self.groups)),
                        tuple(sorted(self.members)), tuple(sorted(self.tmpfiles)),
                        tuple(sorted(self.executables)),
                        # With SystemdService=, the unit's grants say what runs.
                        tuple(sorted({(s[0], s[1], s[2]) for s in self.services.values()
                                      if not s[3]})))


def judge(cls: str, path: str, data: bytes, namer: Namer, m: Collected) -> list[str]:
    """Collect ``path`` into ``m``; the restricted classes its content uses."""
    if cls == "units":
        return _unit(path, data, m)
    if cls == "dbus-system-service":
        m.services[path] = manifest.dbus_service(data)
        return []
    if cls == "dbus-policy":
        _policy(path, data, m)
        return []
    if cls == "polkit-actions":
        ids = manifest.polkit_actions(data)
        m.actions.update(ids)
        return ["foreign-polkit-actions"] if any(not namer.full(i) for i in ids) else []
    if cls == "udev-rules":
        return _udev(path, data, m)
    if cls == "sysusers":
        return _sysusers(data, namer, m)
    if cls == "tmpfiles":
        return _tmpfiles(data, namer, m)
    return []


def _unit(path: str, data: bytes, m: Collected) -> list[str]:
    parts = path.split("/")
    dropin = parts[-2].endswith(".d")
    name = parts[-2][:-2] if dropin else parts[-1]
    # systemd reads the unit's file first, then its drop-ins ordered by file name.
    order = ("1" + parts[-1]) if dropin else "0"
    m.unit_files.setdefault(name, {})[(order, path)] = manifest.ini_entries(data)
    m.unit_paths.setdefault(name, path)
    return []


def _policy(path: str, data: bytes, m: Collected) -> None:
    root = manifest.xml_root(data)
    if root.tag != "busconfig":
        raise ValueError(f"the root element is <{root.tag}>, not <busconfig>")
    for policy in root:
        if policy.tag != "policy":
            m.policy_other.append(path)  # include, limit, servicedir...: not ours to add
            continue
        who = _who(policy.attrib)
        for rule in policy:
            if rule.tag == "deny":
                continue
            names = [(a, v) for a, v in rule.attrib.items()
                     if a in ("own", "own_prefix", "send_destination", "receive_sender")]
            if rule.tag != "allow" or not names or rule.get("eavesdrop") == "true":
                m.policy_other.append(path)
                continue
            m.policies.extend((path, who, a, v) for a, v in names)


def _who(attrib: dict[str, str]) -> str:
    if "user" in attrib:
        return f"user {attrib['user']}"
    if "group" in attrib:
        return f"group {attrib['group']}"
    if "at_console" in attrib:
        return "console users" if attrib["at_console"] == "true" else "non-console users"
    return "everyone"


def dbus_foreign(m: Collected, namer: Namer) -> list[tuple[str, str]]:
    """(path, class) for D-Bus policy, service files and units reaching names not ours.

    Ours: names that start with the app ID. What the tree's own service files and units
    declare is held to the same rule, so that declaring a host name cannot make it ours.
    """
    out = [(p, "dbus-foreign-names") for p in m.policy_other]
    out += [(p, "dbus-foreign-names") for p, _, _, n in m.policies if not namer.full(n)]
    out += [(p, "dbus-foreign-names") for p, s in m.services.items() if not namer.full(s[0])]
    out += [(m.unit_paths[u.name], "dbus-foreign-names") for u in m.units.values()
            if u.bus_name and not namer.full(u.bus_name)]
    return out


def _udev(path: str, data: bytes, m: Collected) -> list[str]:
    m.udev.add("/" + path)
    found = []
    for line in manifest.config_lines(data):
        if _UDEV_PROGRAMS.search(line):
            found.append("udev-programs")
        if _UDEV_ACCESS.search(line):
            found.append("udev-device-access")
    return found


def _id_zero(value: str) -> bool:
    return any(part.strip() == "0" for part in re.split(r"[:-]", value))


def _sysusers(data: bytes, namer: Namer, m: Collected) -> list[str]:
    lines = [line.split(" ") for line in manifest.config_lines(data)]
    created = {f[1] for f in lines if len(f) > 1 and f[0] in ("u", "g")}
    bad = False
    for f in lines:
        kind, name, ident = f[0], (f[1] if len(f) > 1 else ""), (f[2] if len(f) > 2 else "-")
        if kind in ("u", "g"):
            (m.users if kind == "u" else m.groups).add(name)
            # ID 0 is root; a path takes the ID of whatever file it names (/etc/shadow: 0);
            # a names a group the tree does not create shares that group's rights.
            gid = ident.split(":", 1)[1] if ":" in ident else None
            bad = bad or not namer(name) or _id_zero(ident) or ident.startswith("/") or (
                gid is not None and gid not in created)
        elif kind == "m":
            group = f[2] if len(f) > 2 else ""
            m.members.add((name, group))
            bad = bad or group not in created
        elif kind == "r":
            bad = bad or _id_zero(name) or name == "-"
        else:
            raise ValueError(f"unknown sysusers line type {kind!r}")
    return ["sysusers-privileges"] if bad else []


def _tmpfiles(data: bytes, namer: Namer, m: Collected) -> list[str]:
    bad = False
    for line in manifest.config_lines(data):
        m.tmpfiles.add(line)
        f = line.split(" ")
        kind = f[0].rstrip("!-=~+")
        if len(f) < 2 or len(kind) != 1 or kind not in _TMPFILES_TYPES or "^" in f[0]:
            bad = True  # devices, credentials, unknown types: not an extension's business
            continue
        bad = bad or not _owned(f[1], namer)
        if kind == "C" and len(f) > 6 and f[6] != "-":
            bad = bad or not f[6].startswith(("/usr/", "/opt/")) or "/../" in f[6] + "/"
    return ["tmpfiles-foreign-paths"] if bad else []


def _owned(path: str, namer: Namer) -> bool:
    """Whether a tmpfiles path lies in a directory named with the app ID below a data root
    (a name like the app's last element could be the host's: /var/lib/dpkg, /etc/shadow)."""
    for spec, value in _SPECIFIERS.items():
        path = path.replace(spec, value)
    if "%" in path or any(c in path for c in "*?[\\") or "/../" in path + "/" or "/./" in path:
        return False
    for root in _OWNED_ROOTS:
        if path.startswith(root):
            first = path[len(root):].split("/", 1)[0]
            return bool(first) and namer.full(first)
    return False
