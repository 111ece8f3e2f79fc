# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The trigger's quick check: has anything a quiet run depended on changed since?

Flatpak runs the trigger after every transaction, and almost every time none of the
apps that declare a system extension was touched. A trigger run that found nothing to
do and said nothing (but which apps wait for consent: told on every transaction) leaves
a stamp, ``<installation>/flatpak-sysext/quick``, with:

- the environment variables and command-line path it ran with;
- what it said, for the quick answer to say again;
- the ``stat`` signature of every file and directory its decision read: the config,
  ``installations.d``, os-release, the repo config, the target directory, the merged
  list, the state files, the installed code, and Flatpak's ``.changed``; with
  allow_host_glibc, also the host's loader, ``ld.so.cache`` and ``libc.so.6``;
- per installed app, the identity of the link to its active deployment (the ``lstat``
  of ``app/<ID>/current/active``), and which apps mattered (declared an extension or
  had an entry in the target directory).

The next run compares. If every signature is the same, nothing Flatpak or an
administrator's configuration changed, and the run ends. If only ``.changed`` moved,
Flatpak deployed or removed something: the apps whose deployment changed are read
with the functions a full run reads them with (``layout``), and if none of them
declares an extension or is unreadable, and none mattered before, the run ends too,
after updating the stamp. Anything else (a missing or unreadable stamp included) makes
the full run happen.

Signatures with a timestamp younger than MARGIN_NS are never recorded as stable: a change
made in the same clock tick as the one recorded could not be told apart (git's "racily
clean" problem). Deployments are never changed once Flatpak made them active (a new
commit is a new directory), and Flatpak makes them active with a new ``active`` link
each time (a new symlink renamed over the old one), which is what makes the link's
identity enough. It costs one path lookup less than the directory's, once per installed
app: most of what the quick answer costs after an update.

This module is the first thing the trigger file imports (``trigger`` only follows when
the check cannot answer); it needs only ``os``, ``time`` and the small ``fileio``,
``keyfile``, ``layout`` and ``statefiles`` modules (tests/test_quickpath.py holds it
to that).
"""

import os
import time

from flatpak_sysext.flatpak import layout
from flatpak_sysext.state import fileio, statefiles
from flatpak_sysext.state.fileio import ABSENT, signature

# No ``from __future__ import annotations`` on the quick path (here, fileio, keyfile,
# layout, statefiles): it imports ``__future__`` when the module runs, a tenth of a
# millisecond. The annotations Python 3.9 cannot evaluate are strings instead.
TYPE_CHECKING = False  # Not typing's: importing typing or collections.abc costs milliseconds.
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

STAMP_NAME = "quick"
FORMAT = "flatpak-sysext quick 3"
"""3: with the lines a quiet run says (2: apps by their ``active`` link; 1: by the
directory it leads to)."""
MARGIN_NS = 2_000_000_000
"""Older than this, a timestamp can be trusted to change with the next change; covers
filesystems with one-second timestamps and clocks stepped by a little."""
MAX_SIZE = 64 << 20
ENVIRONMENT = ("FLATPAK_SYSTEM_DIR", "FLATPAK_CONFIG_DIR", "FLATPAK_SYSEXT_CONFIG",
               "SYSTEMD_OS_RELEASE", "FLATPAK_SYSEXT_GLIBC_ROOT", "FLATPAK_SYSEXT_STATE_DIR")
"""The variables a trigger run reads."""
UNKNOWN = "?"
"""A signature that matches nothing: what is recorded for a path that changed too recently."""
_UNSET = "\x01"


def _recent(sig: str, since_ns: int) -> bool:
    if sig in (ABSENT, UNKNOWN):
        return False
    *_, mtime, ctime = sig.split(":")
    return max(int(mtime), int(ctime)) > since_ns - MARGIN_NS


def app_signatures(installation_path: str) -> dict[str, str]:
    """Every entry of ``app/`` -> the identity of its ``current/active`` link (ABSENT:
    none): which deployment is active, without following the link to it."""
    try:
        fd = os.open(os.path.join(installation_path, "app"),
                     os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    try:
        found = {}
        stat = os.stat
        for name in os.listdir(fd):
            try:
                # Device, inode and ctime: a link that replaced a deleted one may get
                # its inode number, not in the same clock tick.
                st = stat(f"{name}/current/active", dir_fd=fd, follow_symlinks=False)
                found[name] = f"{st.st_dev}:{st.st_ino}:{st.st_ctime_ns}"
            except (FileNotFoundError, NotADirectoryError):
                found[name] = ABSENT
        return found
    finally:
        os.close(fd)


class Stamp:
    """What a stamp file holds (see the module documentation)."""

    def __init__(self, installation_path: str, env: dict[str, str], paths: dict[str, str],
                 relevant: frozenset[str], apps: dict[str, str],
                 said: "list[str] | None" = None) -> None:
        self.installation_path = installation_path
        self.said = said or []
        """What the run said though it had nothing to do: which apps wait for consent."""
        self.env = env
        self.paths = paths
        self.relevant = relevant
        self.apps = apps
        self._body: bytes | None = None

    def encode(self) -> "bytes | None":
        """The file's bytes; None if a name or path cannot be written in the format."""
        lines = [FORMAT, f"B {self.installation_path}"]
        lines += [f"E {k}\0{v}" for k, v in self.env.items()]
        lines += [f"P {p}\0{s}" for p, s in self.paths.items()]
        lines += [f"S {line}" for line in self.said]
        lines.append("apps")  # What follows is only read when an app may have changed.
        lines += [f"R {name}" for name in sorted(self.relevant)]
        lines += [f"A {name}\0{s}" for name, s in self.apps.items()]
        lines.append("end\n")  # A stamp cut short is no stamp.
        text = "\n".join(lines)
        # A newline or a second NUL in a name, path or value would change what the lines
        # say: counted over the whole text (there is a line per app), not line by line.
        if (text.count("\n") != len(lines)
                or text.count("\0") != len(self.env) + len(self.paths) + len(self.apps)):
            return None
        try:
            return text.encode("utf-8", "strict")
        except UnicodeEncodeError:
            return None

    @classmethod
    def decode(cls, data: bytes) -> "Stamp | None":
        """The stamp in ``data``, or None if it is malformed.

        Its apps are left for :meth:`moved`: most runs never need them.
        """
        head, found, body = data.partition(b"\napps\n")
        if not found or not (body == b"end\n" or body.endswith(b"\nend\n")):
            return None
        try:
            lines = head.decode("utf-8", "strict").split("\n")
        except UnicodeDecodeError:
            return None
        if len(lines) < 2 or lines[0] != FORMAT or not lines[1].startswith("B "):
            return None
        stamp = cls(lines[1][2:], {}, {}, frozenset(), {})
        tables = {"E": stamp.env, "P": stamp.paths}
        for line in lines[2:]:
            kind, _, rest = line.partition(" ")
            if kind == "S" and "\0" not in rest:
                stamp.said.append(rest)
                continue
            key, sep, value = rest.partition("\0")
            if kind not in tables or not sep:
                return None
            tables[kind][key] = value
        stamp._body = body[: -len(b"end\n")]
        return stamp

    def moved(self, apps: dict[str, str]) -> "set[str] | None":
        """The apps of ``apps`` whose signature is not the decoded stamp's (new ones
        included), and the apps that mattered and are gone; None if the stamp's apps
        part is malformed. Reads which apps mattered.

        The stamp's apps are compared as lines, never parsed: there is one per installed
        app, and after an update this is, with looking at each, the quick answer's work.
        """
        if self._body is None:
            return None
        try:
            text = self._body.decode("utf-8", "strict")
        except UnicodeDecodeError:
            return None
        lines = text.split("\n")[:-1]
        count = 0
        while count < len(lines) and lines[count].startswith("R "):
            count += 1
        self.relevant = frozenset(line[2:] for line in lines[:count])
        text = text[sum(len(line) + 1 for line in lines[:count]):]
        # The remaining lines are each "A NAME\0SIG": counted in C, not checked one by
        # one. A line that is not matches no app, so that app is read as if it had moved.
        n = len(lines) - count
        if text.count("\0") != n or text.count("\nA ") + text.startswith("A ") != n:
            return None
        old = set(lines[count:])
        moved = {name for name, sig in apps.items() if f"A {name}\0{sig}" not in old}
        # Not just the relevant names missing now: some are target entries, never apps.
        gone = tuple(f"A {name}\0" for name in self.relevant if name not in apps)
        if gone:
            moved.update(line[2:line.index("\0")] for line in old if line.startswith(gone))
        return moved

    def save(self) -> None:
        """Write the stamp; best effort: without one the next run is a full one.

        Without fsync: a crash can only leave the stamp this one replaces (which was
        true when written, and is compared with what is there now like any other) or
        a torn one (which does not decode).
        """
        data = self.encode()
        if data is None:
            return
        try:
            statefiles.write_file(stamp_path(self.installation_path), data, durable=False)
        except OSError:
            return


def stamp_path(installation_path: str) -> str:
    """Where the stamp of the installation at ``installation_path`` is kept."""
    return os.path.join(statefiles.directory(installation_path), STAMP_NAME)


class Snapshot:
    """What one full trigger run depends on, taken before it reads any of it."""

    def __init__(self, installation_path: str, environ: "Mapping[str, str]") -> None:
        self.started_ns = time.time_ns()
        self.stamp = Stamp(installation_path,
                           {name: environ.get(name, _UNSET) for name in ENVIRONMENT},
                           {}, frozenset(), {})
        self.stable = True
        self.add([layout.changed_path(installation_path)], volatile=True)

    def add(self, paths: "Iterable[str]", *, volatile: bool = False) -> None:
        """Record the signatures of ``paths`` now.

        A ``volatile`` path that changed too recently is recorded as UNKNOWN (it will
        not match); any other makes the snapshot unstable, and it is not saved.
        """
        for path in paths:
            try:
                sig = signature(path)
            except OSError:
                sig = UNKNOWN  # The run's own reading of it reports the problem.
                self.stable = False
            if _recent(sig, self.started_ns):
                self.stable = self.stable and volatile
                sig = UNKNOWN
            self.stamp.paths[path] = sig

    def add_apps(self) -> None:
        """Record the active deployment of every app: the last step before reading them."""
        try:
            self.stamp.apps = app_signatures(self.stamp.installation_path)
        except OSError:
            self.stable = False  # As above: reading the apps will say what is wrong.

    def save(self, relevant: "Iterable[str]", said: "list[str] | None" = None) -> None:
        """Record that the run had nothing to do and said only ``said`` (the apps that
        wait for consent), if the snapshot is stable.

        ``relevant``: the apps whose change could change that (they declare an
        extension, or have an entry in the target directory).
        """
        if self.stable:
            self.stamp.relevant = frozenset(relevant)
            self.stamp.said = said or []
            self.stamp.save()


def answers(basedir: str) -> bool:
    """Whether the quick check settles the trigger run Flatpak started for ``basedir``
    (the trigger file asks before it imports ``trigger``): only root's runs act, and
    this one would do nothing; then it says what the last such run said."""
    if os.geteuid() != 0:
        return False
    said = settled(basedir, os.environ)
    if said is None:
        return False
    say(said)
    return True


def say(lines: "Iterable[str]") -> None:
    """Print the trigger's lines as Flatpak shows them."""
    for line in lines:
        print(f"flatpak-sysext: {line}")


def quiet(installation_path: str, environ: "Mapping[str, str]") -> bool:
    """Whether a trigger run for the installation would do nothing (it may still say
    which apps wait for consent: :func:`settled`)."""
    return settled(installation_path, environ) is not None


def settled(installation_path: str, environ: "Mapping[str, str]") -> "list[str] | None":
    """What a trigger run for the installation would say if it would do nothing (which
    apps wait for consent, or nothing); None whenever that cannot be told for sure from
    the stamp: then the full run decides.
    """
    try:
        stamp = Stamp.decode(fileio.read_regular(stamp_path(installation_path), MAX_SIZE))
        if stamp is None or stamp.installation_path != installation_path:
            return None
        if stamp.env != {name: environ.get(name, _UNSET) for name in ENVIRONMENT}:
            return None
        changed = layout.changed_path(installation_path)
        if any(signature(p) != s for p, s in stamp.paths.items() if p != changed):
            return None
        started_ns = time.time_ns()
        changed_sig = signature(changed)
        if changed_sig == stamp.paths.get(changed):
            return stamp.said
        # Flatpak changed the installation: did it change an app that matters?
        apps = app_signatures(installation_path)
        moved = stamp.moved(apps)
        if moved is None or not stamp.relevant.isdisjoint(moved):
            return None
        if any(layout.may_matter(installation_path, name) for name in sorted(moved)):
            return None
    except (OSError, ValueError):
        return None
    stamp.paths[changed] = UNKNOWN if _recent(changed_sig, started_ns) else changed_sig
    stamp.apps = apps
    stamp.save()
    return stamp.said
