# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Containment (docs/problems.md#unclassified-file, #restricted-content, #escaping-symlink).

Every file of a tree falls in one class, decided by its path. Some classes are what an
extension is for (its own units, D-Bus names, polkit actions, data, programs) and are
checked line by line; *restricted* classes change the host beyond the extension's own
services (PAM, generators, sysctl…) and are refused unless the administrator allowed
that class for that app (``host_classes``); a file in no class rejects the tree. The
verdict is static: validate records the restricted classes a tree uses in the
TreeReport, and evaluate turns them into problems against the config of the day.

"Named for the app" (:class:`classes.Namer`): a unit or user name that, lower-cased and without
a leading ``_`` or ``dbus-``, is the app ID or its last element, perhaps with a version
number, alone or followed by a separator (``sysprof3.service``, ``sysprof-helper``); a D-Bus
name, polkit action, tmpfiles path or private directory that is the app ID so followed
(``org.gnome.Sysprof3``, ``org.gnome.sysprof3.profile`` for ``org.gnome.Sysprof``, never
``org.gnome.SysprofHelper``). Host software does not refer to such names. Drop-ins are for
units the tree ships, under their full names.
"""

from __future__ import annotations

import collections
import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping

from flatpak_sysext.report import Problem, show
from flatpak_sysext.rules import classes, codes, manifest
from flatpak_sysext.rules.manifest import Manifest

# Restricted classes, in the words of the ``host_classes`` key (docs/configuration.md).
RESTRICTED: dict[str, str] = {
    "usr-local": "files under usr/local, which outranks the distribution's /usr everywhere",
    "pam": "PAM modules or configuration, run by every login",
    "nss": "NSS modules, loaded by every program that looks up a user or host",
    "generators": "systemd generators and shutdown or sleep hooks, run by the manager as root",
    "manager-config": "systemd manager configuration, presets and environment.d",
    "unit-drop-ins": "drop-ins for units the extension does not ship",
    "unit-enablement": ".wants/, .requires/ or .upholds/ links that start units",
    "foreign-units": "units not named for the app",
    "polkit-rules": "polkit JavaScript rules, which decide every authorization",
    "foreign-polkit-actions": "polkit actions not named for the app, implying another's "
                              "or letting pkexec run a program the extension does not ship",
    "modprobe": "modprobe.d configuration (install lines run commands as root)",
    "kernel-modules": "kernel modules or firmware",
    "sysctl": "sysctl.d settings (kernel.core_pattern runs a program as root)",
    "binfmt": "binfmt.d interpreters for every matching executable",
    "kernel-install": "kernel install hooks",
    "initramfs": "initramfs hooks",
    "networkmanager": "NetworkManager dispatcher scripts, plugins or configuration",
    "python-path": "files on Python's import path (site-packages, dist-packages, .pth)",
    "perl-path": "files on Perl's module path",
    "udev-programs": "udev rules that run programs or builtins, import their output or "
                     "files, start units or set what systemd does with a device, and udev "
                     "helpers",
    "udev-device-access": "udev rules that change a device's owner, group, mode, "
                          "attributes, name or links in the host's directories",
    "tmpfiles-foreign-paths": "tmpfiles lines on paths not named for the app, or reached "
                              "through a link or copy of the tree's tmpfiles, links and "
                              "copies from outside /usr and /opt",
    "sysusers-privileges": "sysusers lines with ID 0, foreign groups or names not named "
                           "for the app",
    "dbus-foreign-names": "D-Bus policy on names the extension's own services do not provide",
    "tmpfiles-writes": "tmpfiles lines that write content, extended attributes or setuid "
                       "and setgid modes as root",
    "tmpfiles-recursive": "tmpfiles lines that change the owner, mode, ACLs or attributes "
                          "of everything below a path",
    "selinux-types": "files the host's SELinux policy gives a type other than a program's, "
                     "library's, data's or unit's (the entry point of a confined domain)",
}

_UNIT_DIRS = ("usr/lib/systemd/system/", "usr/lib/systemd/user/")
_UNIT_SUFFIXES = (".service", ".socket", ".timer", ".path", ".target", ".mount",
                  ".automount", ".swap", ".slice", ".scope", ".device")
# Path classes, first match wins: (glob on the relative path, class).
_PATH_CLASSES: tuple[tuple[str, str], ...] = (
    ("usr/local/*", "usr-local"),
    ("*.pth", "python-path"),
    ("usr/lib/python*/*", "python-path"),
    ("usr/share/perl*/*", "perl-path"),
    ("usr/lib/*/perl*/*", "perl-path"),
    ("usr/lib/security/*", "pam"), ("usr/lib/*/security/*", "pam"),
    ("usr/lib/pam.d/*", "pam"), ("usr/share/pam-configs/*", "pam"),
    ("usr/lib/*libnss_*", "nss"),
    ("usr/lib/systemd/*-generators/*", "generators"),
    ("usr/lib/systemd/system-shutdown/*", "generators"),
    ("usr/lib/systemd/system-sleep/*", "generators"),
    ("usr/lib/systemd/*-preset/*", "manager-config"),
    ("usr/lib/systemd/*.conf.d/*", "manager-config"),
    ("usr/lib/environment.d/*", "manager-config"),
    ("usr/share/polkit-1/rules.d/*", "polkit-rules"), ("usr/lib/polkit-1/*", "polkit-rules"),
    ("usr/lib/modprobe.d/*", "modprobe"),
    ("usr/lib/modules/*", "kernel-modules"), ("usr/lib/firmware/*", "kernel-modules"),
    ("usr/lib/sysctl.d/*", "sysctl"),
    ("usr/lib/binfmt.d/*", "binfmt"),
    ("usr/lib/kernel/*", "kernel-install"),
    ("usr/share/initramfs-tools/*", "initramfs"), ("usr/lib/dracut/*", "initramfs"),
    ("usr/lib/NetworkManager/*", "networkmanager"),
    ("usr/lib/udev/hwdb.d/*", "udev-device-access"),
    ("usr/lib/udev/rules.d/*.rules", "udev-rules"),
    ("usr/lib/udev/*", "udev-programs"),
    ("usr/lib/extension-release.d/*", "extension-release"),
    ("usr/lib/tmpfiles.d/*.conf", "tmpfiles"),
    ("usr/lib/sysusers.d/*.conf", "sysusers"),
    ("usr/share/dbus-1/system.d/*.conf", "dbus-policy"),
    ("usr/share/dbus-1/system-services/*.service", "dbus-system-service"),
    ("usr/lib/dbus-1/system-services/*.service", "dbus-system-service"),
    ("usr/share/dbus-1/services/*.service", "data"),
    ("usr/share/dbus-1/interfaces/*", "data"),
    ("usr/share/polkit-1/actions/*.policy", "polkit-actions"),
    ("usr/libexec/*", "private"), ("opt/*", "private"),
)
_DATA_DIRS = frozenset({"doc", "man", "info", "locale", "icons", "pixmaps", "applications",
                        "metainfo", "appdata", "licenses", "bash-completion", "zsh", "fish",
                        "help", "mime", "fonts", "glib-2.0", "factory"})
def needs_content(path: str) -> bool:
    """Whether validate must hand this file's bytes to :func:`contain` (read bounded)."""
    return path_class(path) in ("tmpfiles", "sysusers", "dbus-policy", "dbus-system-service",
                                "polkit-actions", "udev-rules") or _unit_file(path) is not None


def _unit_file(path: str) -> tuple[str, str | None] | None:
    """(unit name, None) for a unit file, (unit name, drop-in) for a drop-in, else None."""
    for d in _UNIT_DIRS:
        if path.startswith(d):
            rest = path[len(d):].split("/")
            if len(rest) == 1 and rest[0].endswith(_UNIT_SUFFIXES):
                return rest[0], None
            if len(rest) == 2 and rest[0].endswith(".d") and rest[1].endswith(".conf"):
                return rest[0][:-2], rest[1]
    return None


def _own_drop_in(unit: str, units: frozenset[str]) -> bool:
    """Whether ``unit.d/`` changes only a unit the tree ships: a full unit name (not a
    type-wide ``service.d`` nor a prefix ``foo-.service.d``, which reach host units of
    those names), the unit itself or an instance of its template."""
    base, _, kind = unit.rpartition(".")
    if not base or base.endswith("-") or f".{kind}" not in _UNIT_SUFFIXES:
        return False
    template = base.split("@", 1)[0] + "@." + kind if "@" in base else None
    return unit in units or template in units


def _named(unit: str, namer: classes.Namer) -> bool:
    """Whether a unit is named for the app. Mount, automount and swap units are named
    after the path they mount (``var-lib.mount`` mounts /var/lib, whatever app is called
    ``org.example.Var``): theirs must be a directory of the app's, as tmpfiles paths are."""
    base, _, kind = unit.rpartition(".")
    if kind in ("mount", "automount", "swap"):
        path = "/" + "/".join(re.sub(r"\\x([0-9a-fA-F]{2})", lambda h: chr(int(h[1], 16)), part)
                              for part in base.split("-"))
        return classes.owned_path(path, namer)
    return namer(unit)


def path_class(path: str, namer: classes.Namer | None = None,
               units: frozenset[str] = frozenset()) -> str | None:
    """The class of a file by its path (and the ``units`` its tree ships); None when it
    is in none."""
    for pattern, cls in _PATH_CLASSES:
        if fnmatch.fnmatchcase(path, pattern):
            return cls
    parts = path.split("/")
    for d in _UNIT_DIRS:
        if path.startswith(d):
            rest = parts[4:]
            if len(rest) == 2 and rest[0].endswith((".wants", ".requires", ".upholds")):
                return "unit-enablement"
            unit = _unit_file(path)
            if unit is None:
                return None
            if unit[1] is not None and namer is not None and not _own_drop_in(unit[0], units):
                return "unit-drop-ins"
            if namer is not None and not _named(unit[0], namer):
                return "unit-drop-ins" if unit[1] else "foreign-units"
            return "units"
    if len(parts) == 3 and parts[:2] in (["usr", "bin"], ["usr", "sbin"]):
        return "path-executables"
    if len(parts) >= 4 and parts[:2] in (["usr", "lib"], ["usr", "share"]):
        if parts[1] == "share" and parts[2] in _DATA_DIRS:
            return "data"
        if namer is not None and namer.full(parts[2]):
            return "private"
    return None


def contain(app_id: str, files: Iterable[str], contents: Mapping[str, bytes | None],
            ) -> tuple[list[Problem], dict[str, list[str]], Manifest]:
    """Classify every file; returns (problems, restricted class -> paths, manifest).

    ``contents`` holds the bytes of every file :func:`needs_content` asked for (None: too
    large or not a regular file). Symlinks are judged separately (:mod:`rules`).
    """
    namer = classes.Namer(app_id)
    problems: list[Problem] = []
    restricted: dict[str, list[str]] = collections.defaultdict(list)
    m = classes.Collected()
    everything = frozenset(files)
    units = frozenset(unit_names(everything))
    for path in sorted(everything):
        cls = path_class(path, namer, units)
        if cls is None and path != "usr/lib/os-release":  # that one has its own code
            problems.append(Problem(codes.UNCLASSIFIED_FILE, show(path), _unclassified(path)))
        if cls is None:
            continue
        if cls in RESTRICTED:
            restricted[cls].append(path)
            continue
        if path in contents:
            data = contents[path]
            try:
                if data is None:
                    raise ValueError(f"not a regular file of at most {manifest.MAX_CONFIG} bytes")
                for found in classes.judge(cls, path, data, namer, m):
                    restricted[found].append(path)
            except ValueError as e:
                problems.append(Problem(codes.MALFORMED_CONFIG, show(path),
                                        f"cannot be read as the host would read it: {e}"))
        if cls == "path-executables":
            m.executables.add("/" + path)
    for path, cls in [*classes.dbus_foreign(m, namer), *classes.through_links(m),
                      *classes.pkexec_foreign(m, everything)]:
        restricted[cls].append(path)
    return problems, {k: sorted(set(v)) for k, v in sorted(restricted.items())}, m.manifest()


def _unclassified(path: str) -> str:
    return ("is in none of the places an extension may put files (its units, D-Bus and "
            "polkit files, programs in usr/bin, usr/sbin or usr/libexec, data in usr/share, "
            "directories under usr/lib or usr/share named for the app, opt/); nothing on the "
            "host is known to read it safely. Move it to one of those places")


def restricted_problems(restricted: Iterable[tuple[str, tuple[str, ...]]],
                        allowed: frozenset[str], app_id: str | None = None) -> list[Problem]:
    """``restricted-content`` problems for the classes not in ``allowed``; with ``app_id``,
    a refusal for a name not the app's says which names would pass."""
    namer = classes.Namer(app_id) if app_id else None
    out = []
    for cls, paths in restricted:
        if cls in allowed:
            continue
        for path in paths[:classes.MAX_LISTED]:
            out.append(Problem(codes.RESTRICTED_CONTENT, show(path), _refusal(cls, path, namer)))
        if len(paths) > classes.MAX_LISTED:
            more = len(paths) - classes.MAX_LISTED
            out.append(Problem(codes.RESTRICTED_CONTENT, "",
                               f"and {more} more files of class {cls}"))
    return out


def _refusal(cls: str, path: str, namer: classes.Namer | None) -> str:
    """Why ``path`` of class ``cls`` is refused; what would pass first, when a name decides."""
    what = RESTRICTED[cls]
    if cls == "dbus-foreign-names" and fnmatch.fnmatchcase(path, "usr/*/dbus-1/system-services/*"):
        # A service file grants no access: it tells dbus-daemon what to start for a name.
        what = ("a D-Bus activation file (what starts when a name is called) for a name "
                "not the app's")
    elif cls == "dbus-foreign-names" and _unit_file(path) is not None:
        what = "a unit whose BusName= is not a D-Bus name of the app's"
    allow = (f"refused unless the administrator allows the class {cls!r} for this app in "
             "host_classes")
    passing = _passing(cls, path, namer) if namer is not None else None
    if passing is None:
        return f"{what} (class {cls}): {allow}"
    return f"{what} (class {cls}); {passing}. Rename it, or it is {allow}"


def _passing(cls: str, path: str, namer: classes.Namer) -> str | None:
    """The names of the app's that a file of ``cls`` may use (None: no name decides)."""
    full = f"{namer.given}, {namer.given}.*"
    if cls == "foreign-units":
        kind = path.rpartition(".")[2]
        if kind in ("mount", "automount", "swap"):  # named after what they mount
            return (f"it must mount a directory of the app's, such as "
                    f"/var/lib/{namer.given} (var-lib-{namer.given}.{kind})")
        return f"names that pass: {', '.join(namer.samples('.' + kind))}"
    if cls == "sysusers-privileges":
        return (f"user and group names that pass: {', '.join(namer.samples())}, without "
                "ID 0, a path as ID or a group the file does not create")
    if cls == "dbus-foreign-names":
        return f"D-Bus names that pass: {full}"
    if cls == "foreign-polkit-actions":
        return (f"action IDs that pass: {namer.given}.*; implied actions must be the app's "
                "too, and a pkexec program one the tree ships")
    if cls == "tmpfiles-foreign-paths":
        roots = ", ".join(f"{r}{namer.given}" for r in classes.OWNED_ROOTS)
        return f"paths that pass: {roots}, and below them"
    return None


def unit_names(files: Iterable[str]) -> set[str]:
    """The units a tree ships (file names in its unit directories)."""
    return {u[0] for f in files if (u := _unit_file(f)) is not None and u[1] is None}


def symlink_target_ok(link: str, target: str, kind: Callable[[str], str | None]) -> bool:
    """Whether ``link`` (-> ``target``) resolves, inside the tree, to something it holds.

    A relative target is resolved from the link's directory, an absolute one from the
    tree's root (that is where the merged tree puts it); each step must be a directory,
    file or symlink of the same tree (``kind``: "dir", "file", "link" with its target,
    or None), never ``..`` above the root, at most 40 links.
    """
    resolved = [] if target.startswith("/") else link.split("/")[:-1]
    todo = target.split("/")
    hops = 0
    while todo:
        c = todo.pop(0)
        if c in ("", "."):
            continue
        if c == "..":
            if not resolved:
                return False
            resolved.pop()
            continue
        cand = "/".join([*resolved, c])
        what = kind(cand)
        if what is not None and what.startswith("link:"):
            hops += 1
            if hops > 40:
                return False
            nxt = what[len("link:"):]
            if nxt.startswith("/"):
                resolved = []
            todo = nxt.split("/") + todo
        elif what == "dir" or (what == "file" and not [t for t in todo if t not in ("", ".")]):
            resolved.append(c)
        else:
            return False
    return len(resolved) > 1 and resolved[0] in ("usr", "opt")
