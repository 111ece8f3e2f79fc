# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""What an extension asks of the host, read from its tree: the manifest.

The manifest lists what the tree gives the host once merged: the units it ships and what
they run as whom, the D-Bus names it may own or lets others talk to, its polkit actions,
udev rules, the users and groups it creates, its tmpfiles lines and the executables it
puts on PATH. ``check`` prints it; ``grants()`` turns it into one-line sentences that
can be compared between two versions of an app (what a new version asks for beyond the
old one is the set difference).

The parsers here read the bytes validate handed over (read bounded, through the walk's
descriptors); they never open anything themselves. A file they cannot make sense of is a
``ValueError`` that containment turns into a ``malformed-config`` problem.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xml.etree import ElementTree

GRANT_MODEL = 2
MAX_CONFIG = 64 * 1024
"""Largest unit, D-Bus, polkit, udev, sysusers or tmpfiles file read; real ones are a few KB."""

EXEC_KEYS = ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStop",
             "ExecStopPost", "ExecCondition")


@dataclasses.dataclass(frozen=True)
class Unit:
    """One systemd unit the tree ships."""

    name: str
    user: str
    """``User=`` ("root" when unset, "dynamic" for ``DynamicUser=yes``)."""
    exec: tuple[str, ...]
    """The programs its ``Exec*=`` lines run, in file order, without duplicates."""
    bus_name: str | None = None
    """``BusName=``, or the D-Bus name whose system service file names this unit."""


@dataclasses.dataclass(frozen=True)
class Manifest:
    """Everything a merged tree gives the host, as validate read it (all sorted)."""

    units: tuple[Unit, ...] = ()
    dbus_owns: tuple[str, ...] = ()
    """D-Bus names its system service files declare or its policy lets it own."""
    dbus_access: tuple[tuple[str, str], ...] = ()
    """(who, name): its policy lets ``who`` send to ``name``."""
    polkit_actions: tuple[str, ...] = ()
    udev_rules: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    memberships: tuple[tuple[str, str], ...] = ()
    """(user, group) pairs its sysusers.d ``m`` lines add."""
    tmpfiles: tuple[str, ...] = ()
    """Its tmpfiles.d lines, whitespace collapsed."""
    executables: tuple[str, ...] = ()
    """Absolute paths of what it puts on PATH (``/usr/bin/foo``)."""

    def grants(self) -> frozenset[str]:
        """One stable sentence per thing the host gives the extension."""
        out: set[str] = set()
        for u in self.units:
            who = "a dynamic user" if u.user == "dynamic" else u.user
            out.update(f"unit {u.name} runs {e} as {who}" for e in u.exec)
            if not u.exec:
                out.add(f"unit {u.name}")
            if u.bus_name:
                out.add(f"unit {u.name} is started on demand for D-Bus name {u.bus_name}")
        out.update(f"owns D-Bus name {n}" for n in self.dbus_owns)
        out.update(f"D-Bus policy lets {who} send to {n}" for who, n in self.dbus_access)
        out.update(f"polkit action {a}" for a in self.polkit_actions)
        out.update(f"udev rules {r}" for r in self.udev_rules)
        out.update(f"creates user {u}" for u in self.users)
        out.update(f"creates group {g}" for g in self.groups)
        out.update(f"adds user {u} to group {g}" for u, g in self.memberships)
        out.update(f"tmpfiles line: {t}" for t in self.tmpfiles)
        out.update(f"executable on PATH: {e}" for e in self.executables)
        return frozenset(out)

    def to_json(self) -> dict[str, Any]:
        """A JSON object that :meth:`from_json` reads back exactly."""
        return {
            "units": [{"name": u.name, "user": u.user, "exec": list(u.exec),
                       "bus_name": u.bus_name} for u in self.units],
            "dbus_owns": list(self.dbus_owns),
            "dbus_access": [list(p) for p in self.dbus_access],
            "polkit_actions": list(self.polkit_actions),
            "udev_rules": list(self.udev_rules),
            "users": list(self.users),
            "groups": list(self.groups),
            "memberships": [list(p) for p in self.memberships],
            "tmpfiles": list(self.tmpfiles),
            "executables": list(self.executables),
        }

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        """The manifest :meth:`to_json` wrote; ValueError for anything else."""
        fields = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) != fields:
            raise ValueError("manifest: not an object with exactly the manifest's keys")
        units = []
        for u in _list(data["units"]):
            if not isinstance(u, dict) or set(u) != {"name", "user", "exec", "bus_name"}:
                raise ValueError("manifest: a unit is not an object with its four keys")
            bus = u["bus_name"]
            if bus is not None and not isinstance(bus, str):
                raise ValueError("manifest: bus_name must be a string or null")
            units.append(Unit(_str(u["name"]), _str(u["user"]), _strings(u["exec"]), bus))
        return cls(tuple(units), _strings(data["dbus_owns"]), _pairs(data["dbus_access"]),
                   _strings(data["polkit_actions"]), _strings(data["udev_rules"]),
                   _strings(data["users"]), _strings(data["groups"]),
                   _pairs(data["memberships"]), _strings(data["tmpfiles"]),
                   _strings(data["executables"]))


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"manifest: {value!r} is not a list")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"manifest: {value!r} is not a string")
    return value


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(_str(v) for v in _list(value))


def _pairs(value: Any) -> tuple[tuple[str, str], ...]:
    out = []
    for p in _list(value):
        if not isinstance(p, list) or len(p) != 2:
            raise ValueError(f"manifest: {p!r} is not a pair")
        out.append((_str(p[0]), _str(p[1])))
    return tuple(out)


def text(data: bytes) -> str:
    """Config file bytes as text; ValueError if not UTF-8 (systemd and D-Bus refuse it)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text ({e.reason} at byte {e.start})") from None


def ini_sections(data: bytes) -> dict[str, list[tuple[str, str]]]:
    """systemd's (and D-Bus service files') ini syntax: section -> [(key, value)]."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in text(data).splitlines():
        line = (pending + raw).strip() if pending else raw.strip()
        if line.endswith("\\") and not line.startswith(("#", ";")):
            pending = line[:-1] + " "  # systemd joins continued lines with a space
            continue
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ValueError(f"malformed section header {line!r}")
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        if not sep or current is None:
            raise ValueError(f"line outside a section or without '=': {line[:60]!r}")
        current.append((key.strip(), value.strip()))
    return sections


def _last(pairs: Iterable[tuple[str, str]], key: str, default: str = "") -> str:
    value = default
    for k, v in pairs:
        if k == key:
            value = v or default  # an empty assignment resets to the default
    return value


def program(command_line: str) -> str:
    """The program an ``Exec*=`` value runs: the first word, prefixes (@-:+!|) removed."""
    line = command_line.lstrip("@-:+!|")
    word = line.split(None, 1)[0] if line.split() else ""
    return word.strip("\"'")


def unit(name: str, data: bytes) -> Unit:
    """A unit file's user, programs and ``BusName=``."""
    sections = ini_sections(data)
    service = sections.get("Service", [])
    dynamic = _last(service, "DynamicUser", "no").lower() in ("1", "yes", "y", "true", "on")
    execs: list[str] = []
    for k, v in service:
        if k in EXEC_KEYS and v and program(v) and program(v) not in execs:
            execs.append(program(v))
    bus = _last(service, "BusName") or None
    return Unit(name, "dynamic" if dynamic else _last(service, "User", "root"), tuple(execs), bus)


def dbus_service(data: bytes) -> tuple[str, str, str, str]:
    """A D-Bus system service file: (Name, Exec program, User, SystemdService)."""
    pairs = ini_sections(data).get("D-BUS Service", [])
    name = _last(pairs, "Name")
    if not name:
        raise ValueError("no Name= in [D-BUS Service]")
    return (name, program(_last(pairs, "Exec")), _last(pairs, "User", "root"),
            _last(pairs, "SystemdService"))


def xml_root(data: bytes) -> ElementTree.Element:
    """Parse a D-Bus or polkit XML file that declares no entities.

    Debian 12's expat (2.5) already limits entity expansion ("billion laughs") and
    ElementTree never fetches external entities; refusing every ``<!ENTITY`` on top
    keeps a policy file from meaning anything but what it literally says.
    """
    if len(data) > MAX_CONFIG:
        raise ValueError(f"larger than {MAX_CONFIG} bytes")
    from xml.etree import ElementTree  # only for trees that ship such files

    if b"<!ENTITY" in data.upper():
        raise ValueError("declares XML entities")
    try:
        return ElementTree.fromstring(data)
    except ElementTree.ParseError as e:
        raise ValueError(f"not well-formed XML: {e}") from None


def polkit_actions(data: bytes) -> list[str]:
    """The action IDs a polkit ``.policy`` file declares."""
    root = xml_root(data)
    if root.tag != "policyconfig":
        raise ValueError(f"the root element is <{root.tag}>, not <policyconfig>")
    return [a.get("id", "") for a in root.iter("action")]


_SPACES = re.compile(r"\s+")


def config_lines(data: bytes) -> list[str]:
    """The meaningful lines of a sysusers.d or tmpfiles.d file, whitespace collapsed."""
    out = []
    for raw in text(data).splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append(_SPACES.sub(" ", line))
    return out
