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

from flatpak_sysext.rules import manifest
from flatpak_sysext.rules.manifest import Manifest, Unit
from flatpak_sysext.rules.unitgrants import Entry

MAX_LISTED = 50
"""Problems listed per restricted class; the rest are counted."""


# Every RUN (RUN{builtin} too: "kmod load" loads any module of the host) and PROGRAM;
# IMPORT of anything but udev's own database, the parent device and the kernel command
# line (a program's output, a builtin, a file read as root into properties anyone reads);
# every SYSTEMD_* property systemd acts on: WANTS starts units, READY=0 takes a device
# away from systemd (and the host's mounts on it with it).
_UDEV_PROGRAMS = re.compile(r"\b(RUN(\{[^}]*\})?|PROGRAM)\s*[+:-]?=|"
                            r"\bIMPORT\{(?!(db|parent|cmdline)\})|"
                            r"ENV\{SYSTEMD_[A-Z_]*\}\s*[+:-]?=(?!=)|"
                            r"ENV\{SYSTEMD_(USER_)?WANTS\}|\bSYSTEMD_(USER_)?WANTS\b")
# An assignment (=, +=, :=), not a match (==, !=): ATTR{authorized}="1" lets a device in;
# NAME="eth0" gives a device the host's interface (and its firewall and network
# configuration); a link in a directory (disk/by-uuid/...) or a link priority takes the
# place of the device the host mounts or opens by that name.
_UDEV_ACCESS = re.compile(r"\b(MODE|OWNER|GROUP)\s*:?=|uaccess|seat|"
                          r"\bATTR\{[^}]*\}\s*[+:-]?=(?!=)|\bNAME\s*:?=(?!=)|"
                          r"\bSYMLINK\s*[+:-]?=(?!=)\s*\"[^\"]*/|link_priority")
_UDEV_SYSCTL = re.compile(r"\bSYSCTL\{[^}]*\}\s*[+:-]?=(?!=)")
_TMPFILES_TYPES = frozenset("fFwdDevqQpLCxXrRzZtThHaA")
# Root writes: w follows a link at the path's end (planted by the app's own user in its
# own directory, it sends the write anywhere); t and T set extended attributes
# (security.capability gives a program capabilities). f and F count with an argument.
_TMPFILES_WRITES = frozenset("wtT")
# Ownership, mode, ACL or attribute changes of everything below a path: passed on through
# hard links the app's user may make to any file it can read and write.
_TMPFILES_RECURSIVE = frozenset("ZAH")
# /etc is not among them: what lies there configures the host.
OWNED_ROOTS = ("/var/lib/", "/var/cache/", "/var/log/", "/var/spool/", "/var/tmp/",
                "/run/", "/tmp/", "/srv/")
_SEPARATORS = ".-"
# Units and users also use @ (templates) and _ (user names) between words.
_UNIT_SEPARATORS = ".-@_"
_DEVEL = ".devel"
_SPECIFIERS = {"%S": "/var/lib", "%C": "/var/cache", "%L": "/var/log", "%t": "/run",
               "%T": "/tmp", "%V": "/var/tmp", "%%": "%"}


class Namer:
    """Whether a name is named for the app (see the module's docstring).

    A name is the app's when it is the prefix itself, the prefix followed by a version
    number (``org.gnome.Sysprof3``), or either followed by a separator and anything
    (``org.example.App.Helper``, ``app-helper.service``): never a longer word
    (``org.example.Application`` is another app's). Calling it accepts the app ID or its
    last element as the prefix, with unit separators and the daemon's conventional ``d``
    (``sysprofd.service``): for unit and user names, where an exact clash with the
    host's is caught elsewhere (placement, sysusers skipping existing users).
    :meth:`full` accepts only the app ID: for names and paths shared with the host's own
    (D-Bus names, polkit actions, directories under usr/lib and usr/share, tmpfiles
    paths), where an app called ``org.example.Apt`` must not get ``usr/lib/apt`` nor one
    called ``com.example.Org`` every ``org.*`` D-Bus name.

    A ``.Devel`` ID (a nightly build published beside the stable app) owns names under
    its full ID only, and the stable ID does not own names under ``ID.Devel``: neither
    build may claim the other's D-Bus names, polkit actions or paths, and ``devel`` is
    no one's last element.
    """

    def __init__(self, app_id: str) -> None:
        self.given = app_id
        self.app_id = app_id.lower()
        self.devel = self.app_id.endswith(_DEVEL)
        stem = self.app_id.rsplit(".", 1)[-1]
        self.prefixes = [self.app_id]
        if len(stem) >= 3 and not self.devel:  # a short stem would claim half the namespace
            self.prefixes.append(stem)

    def __call__(self, name: str) -> bool:
        low = name.lower().lstrip("_")
        low = low[len("dbus-"):] if low.startswith("dbus-") else low
        return self._owns(low, self.prefixes, _UNIT_SEPARATORS, "d")

    def full(self, name: str) -> bool:
        """Whether ``name`` is the app ID or lies under it (case-insensitively)."""
        return self._owns(name.lower(), self.prefixes[:1], _SEPARATORS)

    def samples(self, suffix: str = "") -> list[str]:
        """Unit or user names (``*``: anything) that :meth:`__call__` accepts, for a refusal
        to suggest: ``ID.service``, ``ID-*.service``, ``stem.service``, ``stem-*.service``,
        ``stemd.service``."""
        out = []
        for prefix in [self.given, *self.prefixes[1:]]:
            out += [prefix + suffix, f"{prefix}-*{suffix}"]
        if len(self.prefixes) > 1:
            out.append(f"{self.prefixes[1]}d{suffix}")
        return out

    def _owns(self, low: str, prefixes: list[str], separators: str, suffix: str = "") -> bool:
        if not any(_under(low, p, separators, suffix) for p in prefixes):
            return False
        return self.devel or not _under(low, self.app_id + _DEVEL, separators, suffix)


def _under(name: str, prefix: str, separators: str, suffix: str = "") -> bool:
    """``prefix``, with an optional version number and ``suffix``, then nothing or a
    separator."""
    if not name.startswith(prefix):
        return False
    rest = name[len(prefix):].lstrip("0123456789")
    rest = rest[len(suffix):] if suffix and rest.startswith(suffix) else rest
    return not rest or rest[0] in separators


USER = "user/"
"""How :attr:`Collected.unit_files` keys a user unit (a system unit's key is its name)."""
_USER_UNIT_DIR = "usr/lib/systemd/user/"

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
    denials: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    """(path, name) of every name a <deny> in a system.d file names."""
    actions: set[manifest.PolkitAction] = dataclasses.field(default_factory=set)
    pkexec: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    """(path, program) of every polkit action's ``org.freedesktop.policykit.exec.path``."""
    udev: set[str] = dataclasses.field(default_factory=set)
    users: set[str] = dataclasses.field(default_factory=set)
    groups: set[str] = dataclasses.field(default_factory=set)
    members: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    tmpfiles: set[str] = dataclasses.field(default_factory=set)
    tmpfiles_paths: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    """(file, type, path) of every tmpfiles line, specifiers resolved, for :func:`through_links`."""
    executables: set[str] = dataclasses.field(default_factory=set)

    @property
    def units(self) -> dict[str, Unit]:
        """Each system unit read as systemd reads it: its file, then its drop-ins by file
        name."""
        return {name: manifest.unit(name, [e for _, f in sorted(files.items()) for e in f])
                for name, files in self.unit_files.items() if not name.startswith(USER)}

    @property
    def user_units(self) -> dict[str, Unit]:
        """Each user unit (``usr/lib/systemd/user``), read so: run by every user's own
        manager, as that user, whatever ``User=`` says."""
        return {key[len(USER):]: dataclasses.replace(manifest.unit(
                    key[len(USER):], [e for _, f in sorted(files.items()) for e in f]),
                    user=manifest.SESSION)
                for key, files in self.unit_files.items() if key.startswith(USER)}

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
                                      if not s[3]})),
                        user_units=tuple(u for _, u in sorted(self.user_units.items())))


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
        actions = manifest.polkit_actions(data)
        m.actions.update(actions)
        foreign = (any(not namer.full(a.id) for a in actions)
                   or _polkit_annotations(path, data, namer, m))
        return ["foreign-polkit-actions"] if foreign else []
    if cls == "udev-rules":
        return _udev(path, data, m)
    if cls == "sysusers":
        return _sysusers(data, namer, m)
    if cls == "tmpfiles":
        return _tmpfiles(path, data, namer, m)
    return []


def _unit(path: str, data: bytes, m: Collected) -> list[str]:
    parts = path.split("/")
    dropin = parts[-2].endswith(".d")
    name = parts[-2][:-2] if dropin else parts[-1]
    # systemd reads the unit's file first, then its drop-ins ordered by file name.
    order = ("1" + parts[-1]) if dropin else "0"
    # A user unit and a system unit of the same name are two units.
    key = (USER if path.startswith(_USER_UNIT_DIR) else "") + name
    m.unit_files.setdefault(key, {})[(order, path)] = manifest.ini_entries(data)
    m.unit_paths.setdefault(key, path)
    return []


def _polkit_annotations(path: str, data: bytes, namer: Namer, m: Collected) -> bool:
    """Whether an action's annotations reach beyond the app; collects pkexec programs.

    ``org.freedesktop.policykit.imply`` authorizes the actions it names along with this
    one (``org.freedesktop.systemd1.manage-units`` is root); ``...exec.path`` lets pkexec
    run that program as root (``/usr/bin/bash``): it must be one the tree ships.
    """
    foreign = False
    for note in manifest.xml_root(data).iter("annotate"):
        key, value = note.get("key", ""), (note.text or "").strip()
        if key == "org.freedesktop.policykit.imply":
            foreign = foreign or any(not namer.full(a) for a in value.split())
        elif key == "org.freedesktop.policykit.exec.path":
            m.pkexec.append((path, value))
    return foreign


def pkexec_foreign(m: Collected, files: frozenset[str]) -> list[tuple[str, str]]:
    """(path, class) for polkit actions that let pkexec run a program the tree lacks."""
    return [(p, "foreign-polkit-actions") for p, program in m.pkexec
            if program[1:] not in files or not program.startswith("/")]


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
            names = [(a, v) for a, v in rule.attrib.items()
                     if a in ("own", "own_prefix", "send_destination", "receive_sender")]
            if rule.tag == "deny" and names:
                # A deny takes away only what it names: harmless on our own names, a
                # denial of service on anyone else's (<deny own="org.freedesktop.PolicyKit1"/>
                # keeps polkit off the bus); one naming no name applies to every service.
                m.denials.extend((path, v) for _, v in names)
                continue
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
    out += [(p, "dbus-foreign-names") for p, n in m.denials if not namer.full(n)]
    out += [(p, "dbus-foreign-names") for p, s in m.services.items() if not namer.full(s[0])]
    out += [(m.unit_paths[u.name], "dbus-foreign-names") for u in m.units.values()
            if u.bus_name and not namer.full(u.bus_name)]
    out += [(m.unit_paths[USER + u.name], "dbus-foreign-names") for u in m.user_units.values()
            if u.bus_name and not namer.full(u.bus_name)]
    return out


def _udev(path: str, data: bytes, m: Collected) -> list[str]:
    m.udev.add("/" + path)
    found = []
    for line in _udev_lines(data):
        if _UDEV_PROGRAMS.search(line):
            found.append("udev-programs")
        if _UDEV_ACCESS.search(line):
            found.append("udev-device-access")
        if _UDEV_SYSCTL.search(line):
            found.append("sysctl")  # what sysctl.d would need the class for
    return found


def _udev_lines(data: bytes) -> list[str]:
    """The rules as udev reads them: each line's leading blanks dropped, comments skipped,
    a line ending in a backslash joined to the next with nothing between (``RU\\`` then
    ``N+=...`` is a RUN)."""
    out, pending = [], ""
    for raw in manifest.text(data).splitlines():
        line = raw.lstrip()
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        out.append(pending + line)
        pending = ""
    return [*out, pending] if pending else out


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


def _tmpfiles(path: str, data: bytes, namer: Namer, m: Collected) -> list[str]:
    found = set()
    for line in manifest.config_lines(data):
        m.tmpfiles.add(line)
        f = line.split(" ")
        kind = f[0].rstrip("!-=~+")
        if len(f) < 2 or len(kind) != 1 or kind not in _TMPFILES_TYPES or "^" in f[0]:
            found.add("tmpfiles-foreign-paths")  # devices, credentials, unknown types
            continue
        target = _resolved(f[1])
        m.tmpfiles_paths.append((path, kind, target or f[1]))
        argument = " ".join(f[6:]) or "-"
        if target is None or not _owned(target, namer) or (
                kind in "LC" and argument != "-" and not _from_tree(argument)):
            found.add("tmpfiles-foreign-paths")
        if kind in _TMPFILES_WRITES or (kind in "fF" and argument != "-") or _setid(f):
            found.add("tmpfiles-writes")
        if kind in _TMPFILES_RECURSIVE:
            found.add("tmpfiles-recursive")
    return sorted(found)


def _from_tree(source: str) -> bool:
    """Whether an ``L`` target or ``C`` source lies in the merged /usr or /opt (what else
    is there is the host's: ``C ... /etc/shadow`` copies a secret, ``L+ ... /etc`` makes
    the app's directory the host's configuration)."""
    return source.startswith(("/usr/", "/opt/")) and "/../" not in source + "/" and not any(
        c in source for c in "\\%")


def _setid(fields: list[str]) -> bool:
    """Whether a line's mode sets the setuid or setgid bit (``z .../tool 4755 root``)."""
    mode = fields[2].lstrip("~:") if len(fields) > 2 else "-"
    if mode == "-":
        return False
    try:
        return int(mode, 8) & 0o6000 != 0
    except ValueError:
        raise ValueError(f"mode {fields[2]!r} is not octal") from None


def through_links(m: Collected) -> list[tuple[str, str]]:
    """(file, class) for tmpfiles lines on a path an ``L`` or ``C`` line of the tree makes.

    systemd-tmpfiles handles a path's prefixes first, whatever the order of the lines or
    files, and follows the root-owned links it made itself: after ``L+ /var/lib/APP - - -
    - /etc``, a line on ``/var/lib/APP/passwd`` writes ``/etc/passwd``; what ``C`` copies
    may hold links too.
    """
    made = [(i, p.rstrip("/")) for i, (_, kind, p) in enumerate(m.tmpfiles_paths)
            if kind in "LC"]
    out = []
    for i, (file, _, p) in enumerate(m.tmpfiles_paths):
        p = p.rstrip("/")
        if any(j != i and (p == link or p.startswith(link + "/")) for j, link in made):
            out.append((file, "tmpfiles-foreign-paths"))
    return out


def _resolved(path: str) -> str | None:
    """A tmpfiles path with its specifiers replaced; None when it cannot be known (other
    specifiers, globs, escapes, ``.`` or ``..``)."""
    for spec, value in _SPECIFIERS.items():
        path = path.replace(spec, value)
    if "%" in path or any(c in path for c in "*?[\\") or "/../" in path + "/" or (
            "/./" in path + "/" or "//" in path):
        return None
    return path


def owned_path(path: str, namer: Namer) -> bool:
    """Whether a host path (tmpfiles specifiers allowed) lies in a directory of the app's."""
    resolved = _resolved(path)
    return resolved is not None and _owned(resolved, namer)


def _owned(path: str, namer: Namer) -> bool:
    """Whether a resolved tmpfiles path lies in a directory named with the app ID below a
    data root (a name like the app's last element could be the host's: /var/lib/dpkg)."""
    for root in OWNED_ROOTS:
        if path.startswith(root):
            first = path[len(root):].split("/", 1)[0]
            return bool(first) and namer.full(first)
    return False
