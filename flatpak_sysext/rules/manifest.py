# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""What an extension asks of the host, read from its tree: the manifest.

The manifest lists what the tree gives the host once merged: the units it ships, what
they run as and may do (unitgrants.py), the D-Bus names it may own or lets others talk
to, its polkit actions, udev rules, the users and groups it creates, its tmpfiles lines
and the executables it puts on PATH. ``check`` prints it; ``grants()`` turns it into
one-line sentences that can be compared between two versions of an app (what a new
version asks for beyond the old one is the set difference).

The parsers here read the bytes validate handed over (read bounded, through the walk's
descriptors); they never open anything themselves. A file they cannot make sense of is a
``ValueError`` that containment turns into a ``malformed-config`` problem.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from flatpak_sysext.rules import unitgrants
from flatpak_sysext.rules.selinux import NOT_JUDGED
from flatpak_sysext.rules.unitgrants import Entry

if TYPE_CHECKING:
    from xml.etree import ElementTree

GRANT_MODEL = 3
"""The version of what :meth:`Manifest.grants` says. A consent record of model 1 is
re-derived (state/consent.py); one of a later model is compared sentence by sentence, so
an app whose sentences changed waits for consent again. 1: a unit's user and programs;
2: everything that decides what a unit runs as and may do, its own drop-ins merged in
(unitgrants.py), and what D-Bus activation runs without systemd; 3: who a polkit action
authorizes by default, and with what authentication; user units as each user's."""

SESSION = "session"
"""A user unit's ``user``: whoever's own manager runs it."""
SESSION_WHO = "each user whose session starts it"
"""How a user unit's grant sentences name who it runs as."""
MAX_CONFIG = 64 * 1024
"""Largest unit, D-Bus, polkit, udev, sysusers or tmpfiles file read; real ones are a few KB."""


@dataclasses.dataclass(frozen=True)
class Unit:
    """One systemd unit the tree ships, its own drop-ins merged in."""

    name: str
    user: str
    """``User=`` ("root" when unset, "dynamic" for ``DynamicUser=yes``)."""
    exec: tuple[str, ...]
    """Its ``Exec*=`` assignments as ``Key=value`` (prefixes and arguments kept), in the
    order systemd applies them, without duplicates."""
    bus_name: str | None = None
    """``BusName=``, or the D-Bus name whose system service file names this unit."""
    settings: tuple[Entry, ...] = ()
    """Every other assignment that is not known to grant nothing, (section, key, value),
    in the order systemd applies them."""

    def grants(self) -> set[str]:
        """Its grant sentences (docs/reference.md#what-counts-as-a-grant)."""
        out = unitgrants.sentences(self.name, self.user, self.exec, self.settings)
        if not self.exec:
            out.add(f"unit {self.name}")
        if self.bus_name:
            out.add(f"unit {self.name} is started on demand for D-Bus name {self.bus_name}")
        return out

    def to_json(self) -> dict[str, Any]:
        """A JSON object that :meth:`from_json` reads back exactly."""
        return {"name": self.name, "user": self.user, "exec": list(self.exec),
                "bus_name": self.bus_name, "settings": [list(e) for e in self.settings]}

    @classmethod
    def from_json(cls, u: Any) -> Unit:
        """The unit :meth:`to_json` wrote; ValueError for anything else."""
        if not isinstance(u, dict) or set(u) != {"name", "user", "exec", "bus_name",
                                                 "settings"}:
            raise ValueError("manifest: a unit is not an object with its five keys")
        bus = u["bus_name"]
        if bus is not None and not isinstance(bus, str):
            raise ValueError("manifest: bus_name must be a string or null")
        settings = []
        for e in _list(u["settings"]):
            if not isinstance(e, list) or len(e) != 3:
                raise ValueError(f"manifest: {e!r} is not a (section, key, value) triple")
            settings.append((_str(e[0]), _str(e[1]), _str(e[2])))
        return cls(_str(u["name"]), _str(u["user"]), _strings(u["exec"]), bus,
                   tuple(settings))


POLKIT_ANSWERS = {
    "no": "refused",
    "yes": "without authentication",
    "auth_self": "with their own password",
    "auth_self_keep": "with their own password, remembered for a while",
    "auth_admin": "with an administrator's password",
    "auth_admin_keep": "with an administrator's password, remembered for a while",
}
"""What each value of a polkit action's ``<defaults>`` means for the user who asks."""


@dataclasses.dataclass(frozen=True, order=True)
class PolkitAction:
    """A polkit action a tree declares, with its ``<defaults>`` (polkit's own default
    for an element left out is ``no``): who it authorizes when no rules file decides."""

    id: str
    allow_any: str = "no"
    """Any user: remote, or without a login session."""
    allow_inactive: str = "no"
    """A user in a local session that is not in the foreground."""
    allow_active: str = "no"
    """A user in the local session in the foreground (the desktop's user)."""

    def grant(self) -> str:
        """Its grant sentence: ``allow_active=yes`` reads unlike ``auth_admin``."""
        def said(value: str) -> str:
            return POLKIT_ANSWERS.get(value, f"{value!r} (which polkit does not know)")

        if self.allow_any == self.allow_inactive == self.allow_active:
            return f"polkit action {self.id}: any user {said(self.allow_active)}"
        active = f"any active user {said(self.allow_active)}"
        if self.allow_inactive == self.allow_any:
            return f"polkit action {self.id}: {active}, others {said(self.allow_any)}"
        return (f"polkit action {self.id}: {active}, inactive users "
                f"{said(self.allow_inactive)}, others {said(self.allow_any)}")

    def to_json(self) -> dict[str, str]:
        """A JSON object that :meth:`from_json` reads back exactly."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> PolkitAction:
        """The action :meth:`to_json` wrote; ValueError for anything else."""
        keys = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) != keys:
            raise ValueError("manifest: a polkit action is not an object with its four keys")
        return cls(**{k: _str(data[k]) for k in sorted(keys)})


@dataclasses.dataclass(frozen=True)
class Manifest:
    """Everything a merged tree gives the host, as validate read it (all sorted)."""

    units: tuple[Unit, ...] = ()
    dbus_owns: tuple[str, ...] = ()
    """D-Bus names its system service files declare or its policy lets it own."""
    dbus_access: tuple[tuple[str, str], ...] = ()
    """(who, name): its policy lets ``who`` send to ``name``."""
    polkit_actions: tuple[PolkitAction, ...] = ()
    """Its polkit actions and their defaults."""
    udev_rules: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    memberships: tuple[tuple[str, str], ...] = ()
    """(user, group) pairs its sysusers.d ``m`` lines add."""
    tmpfiles: tuple[str, ...] = ()
    """Its tmpfiles.d lines, whitespace collapsed."""
    executables: tuple[str, ...] = ()
    """Absolute paths of what it puts on PATH (``/usr/bin/foo``)."""
    dbus_activated: tuple[tuple[str, str, str], ...] = ()
    """(name, command, user) of its D-Bus system service files without ``SystemdService=``:
    what dbus-daemon's activation helper runs, as that user, when the name is asked for."""
    selinux_types: tuple[tuple[str, tuple[str, ...]], ...] | None = None
    """Each SELinux type the host's policy gives its files, with those files (selinux.py);
    None where no policy judged them. Not a grant: a type outside the generic set is the
    restricted class ``selinux-types``, and a generic one gives nothing its path does not
    (docs/platform.md#selinux)."""

    user_units: tuple[Unit, ...] = ()
    """Its user units (``usr/lib/systemd/user``), ``user`` :data:`SESSION`: every user's
    own manager may run them, as that user."""

    def grants(self) -> frozenset[str]:
        """One stable sentence per thing the host gives the extension."""
        out: set[str] = set()
        for u in self.units:
            out.update(u.grants())
        for u in self.user_units:  # "user unit X runs Y as each user who starts it"
            out.update(f"user {g}" for g in dataclasses.replace(u, user=SESSION_WHO).grants())
        out.update(f"owns D-Bus name {n}" for n in self.dbus_owns)
        out.update(f"D-Bus policy lets {who} send to {n}" for who, n in self.dbus_access)
        out.update(a.grant() for a in self.polkit_actions)
        out.update(f"udev rules {r}" for r in self.udev_rules)
        out.update(f"creates user {u}" for u in self.users)
        out.update(f"creates group {g}" for g in self.groups)
        out.update(f"adds user {u} to group {g}" for u, g in self.memberships)
        out.update(f"tmpfiles line: {t}" for t in self.tmpfiles)
        out.update(f"executable on PATH: {e}" for e in self.executables)
        out.update(f"D-Bus activation of {n} runs {c} as {u}" for n, c, u in self.dbus_activated)
        return frozenset(out)

    def to_json(self) -> dict[str, Any]:
        """A JSON object that :meth:`from_json` reads back exactly."""
        return {
            "units": [u.to_json() for u in self.units],
            "dbus_owns": list(self.dbus_owns),
            "dbus_access": [list(p) for p in self.dbus_access],
            "polkit_actions": [a.to_json() for a in self.polkit_actions],
            "udev_rules": list(self.udev_rules),
            "users": list(self.users),
            "groups": list(self.groups),
            "memberships": [list(p) for p in self.memberships],
            "tmpfiles": list(self.tmpfiles),
            "executables": list(self.executables),
            "dbus_activated": [list(t) for t in self.dbus_activated],
            "selinux_types": NOT_JUDGED if self.selinux_types is None
            else {kind: list(paths) for kind, paths in self.selinux_types},
            "user_units": [u.to_json() for u in self.user_units],
        }

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        """The manifest :meth:`to_json` wrote; ValueError for anything else."""
        fields = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) != fields:
            raise ValueError("manifest: not an object with exactly the manifest's keys")
        units = [Unit.from_json(u) for u in _list(data["units"])]
        return cls(tuple(units), _strings(data["dbus_owns"]), _pairs(data["dbus_access"]),
                   tuple(PolkitAction.from_json(a) for a in _list(data["polkit_actions"])),
                   _strings(data["udev_rules"]),
                   _strings(data["users"]), _strings(data["groups"]),
                   _pairs(data["memberships"]), _strings(data["tmpfiles"]),
                   _strings(data["executables"]), _triples(data["dbus_activated"]),
                   _types(data["selinux_types"]),
                   user_units=tuple(Unit.from_json(u) for u in _list(data["user_units"])))


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


def _types(value: Any) -> tuple[tuple[str, tuple[str, ...]], ...] | None:
    if value == NOT_JUDGED:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"manifest: SELinux types {value!r} are not an object")
    return tuple((_str(k), _strings(v)) for k, v in sorted(value.items()))


def _triples(value: Any) -> tuple[tuple[str, str, str], ...]:
    out = []
    for t in _list(value):
        if not isinstance(t, list) or len(t) != 3:
            raise ValueError(f"manifest: {t!r} is not a triple")
        out.append((_str(t[0]), _str(t[1]), _str(t[2])))
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
    for section, key, value in ini_entries(data):
        sections.setdefault(section, []).append((key, value))
    return sections


def ini_entries(data: bytes) -> list[Entry]:
    """The (section, key, value) assignments of an ini file, in file order."""
    out: list[Entry] = []
    current: str | None = None
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
            current = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if not sep or current is None:
            raise ValueError(f"line outside a section or without '=': {line[:60]!r}")
        out.append((current, key.strip(), value.strip()))
    return out


def _last(pairs: Iterable[tuple[str, str]], key: str, default: str = "") -> str:
    value = default
    for k, v in pairs:
        if k == key:
            value = v or default  # an empty assignment resets to the default
    return value


def unit(name: str, entries: Iterable[Entry]) -> Unit:
    """A unit from the assignments of its file and then its drop-ins (:func:`ini_entries`
    of each, in the order systemd reads them): who it runs as, its commands, its
    ``BusName=`` and every other assignment not known to grant nothing."""
    suffix = "." + name.rsplit(".", 1)[-1]
    own = unitgrants.TYPE_SECTIONS.get(suffix, "")
    user, dynamic, bus = "root", False, None
    execs: dict[str, None] = {}  # ordered, without duplicates
    settings: list[Entry] = []
    for section, key, value in unitgrants.effective(suffix, entries):
        if section == own and key == "User":
            user = value
        elif section == own and key == "DynamicUser":
            dynamic = unitgrants.true(value)
        elif section == own and key == "BusName":
            bus = value
        elif section == own and key in unitgrants.EXEC_KEYS:
            execs[f"{key}={value}"] = None
        elif not unitgrants.harmless(section, key, value):
            settings.append((section, key, value))
    return Unit(name, "dynamic" if dynamic else user, tuple(execs), bus, tuple(settings))


def dbus_service(data: bytes) -> tuple[str, str, str, str]:
    """A D-Bus system service file: (Name, Exec command line, User, SystemdService)."""
    pairs = ini_sections(data).get("D-BUS Service", [])
    name = _last(pairs, "Name")
    if not name:
        raise ValueError("no Name= in [D-BUS Service]")
    return (name, " ".join(_last(pairs, "Exec").split()), _last(pairs, "User", "root"),
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


def polkit_actions(data: bytes) -> list[PolkitAction]:
    """The actions a polkit ``.policy`` file declares, with their defaults."""
    root = xml_root(data)
    if root.tag != "policyconfig":
        raise ValueError(f"the root element is <{root.tag}>, not <policyconfig>")
    out = []
    for action in root.iter("action"):
        defaults = {e.tag: (e.text or "").strip() for d in action.findall("defaults")
                    for e in d if e.tag in ("allow_any", "allow_inactive", "allow_active")}
        out.append(PolkitAction(action.get("id", ""), **defaults))
    return out


_SPACES = re.compile(r"\s+")


def config_lines(data: bytes) -> list[str]:
    """The meaningful lines of a sysusers.d or tmpfiles.d file, whitespace collapsed."""
    out = []
    for raw in text(data).splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append(_SPACES.sub(" ", line))
    return out
