# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""What host sync (hostsync) knows and keeps: steps and their outcomes, what content asks
of the host, and the per-installation state file ``hostsync.json`` in the service's own
state directory (statefiles.installation_directory).

The state is root's alone (0600 in 0700 directories): the sandboxed trigger, and
whatever else Flatpak runs as root with the installation writable, cannot change it.
It is written atomically under the lock, and holds: what each linked extension
contains (the reloads taking it away will need, since its deployment is usually
deleted by then), the sync still owed by a run that was interrupted, and the last
sync's outcome, which ``status`` shows.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from flatpak_sysext.flatpak.installation import Installation
from flatpak_sysext.state import fileio, statefiles

STATE_FILE = "hostsync.json"
MAX_SIZE = 1 << 22

OK, FAILED, SKIPPED = "ok", "failed", "skipped"
REFRESH, VERIFY = "refresh", "verify"
STOP_UNITS, DISABLE_UNITS, RESTART_UNITS = "stop-units", "disable-units", "restart-units"
STOP_REACTIVATED = "stop-reactivated"
SYSUSERS, TMPFILES = "sysusers", "tmpfiles"
DAEMON_RELOAD, DBUS_RELOAD, POLKIT_RELOAD, UDEV_RELOAD = (
    "daemon-reload", "dbus-reload", "polkit-reload", "udev-reload")
RELOADS = (DAEMON_RELOAD, DBUS_RELOAD, POLKIT_RELOAD, UDEV_RELOAD)
"""The reloads, in the order they run: the manager first, then the services whose
configuration may name units (D-Bus activation) or users."""

# Which files need which reload once they appear in or vanish from /usr. Only the
# system bus's directories count for D-Bus: session buses are not ours to reload.
_RELOAD_PREFIXES = (
    ("usr/lib/systemd/system/", DAEMON_RELOAD),
    ("usr/lib/systemd/system-generators/", DAEMON_RELOAD),
    ("usr/lib/systemd/system-environment-generators/", DAEMON_RELOAD),
    ("usr/share/dbus-1/system.d/", DBUS_RELOAD),
    ("usr/share/dbus-1/system-services/", DBUS_RELOAD),
    ("usr/lib/dbus-1/system-services/", DBUS_RELOAD),
    ("usr/share/polkit-1/", POLKIT_RELOAD),
    ("usr/lib/udev/rules.d/", UDEV_RELOAD),
)
_UNIT_DIR = "usr/lib/systemd/system/"
_UNIT_TYPES = (".service", ".socket", ".timer", ".path")
"""The units that run or activate something: what follows an extension away."""
_UNIT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789:_.\\-")
_SYSUSERS_DIR = "usr/lib/sysusers.d/"
_TMPFILES_DIR = "usr/lib/tmpfiles.d/"


@dataclasses.dataclass(frozen=True)
class Needs:
    """What some content asks of the host when it is merged or unmerged."""

    reloads: frozenset[str] = frozenset()
    """Names from :data:`RELOADS`."""
    sysusers: frozenset[str] = frozenset()
    """sysusers.d files to apply (names inside the directory)."""
    tmpfiles: frozenset[str] = frozenset()
    """tmpfiles.d files to apply."""
    units: frozenset[str] = frozenset()
    """The systemd units the content ships (what taking it away stops)."""
    stop: frozenset[str] = frozenset()
    """Units to stop and disable before the refresh: their extension goes, or no longer
    ships them."""
    restart: frozenset[str] = frozenset()
    """Units to restart (or reload) after the refresh and daemon-reload, if running:
    their extension was updated."""

    @classmethod
    def of(cls, files: Iterable[str]) -> Needs:
        """What merging these files (paths relative to the extension root) needs."""
        reloads: set[str] = set()
        sysusers: set[str] = set()
        tmpfiles: set[str] = set()
        units: set[str] = set()
        for path in files:
            reloads.update(r for prefix, r in _RELOAD_PREFIXES if path.startswith(prefix))
            for directory, found in ((_SYSUSERS_DIR, sysusers), (_TMPFILES_DIR, tmpfiles)):
                name = path[len(directory):]
                if path.startswith(directory) and config_name(name):
                    found.add(name)
            name = path[len(_UNIT_DIR):]
            if path.startswith(_UNIT_DIR) and unit_pattern(name) is not None:
                units.add(name)
        return cls(frozenset(reloads), frozenset(sysusers), frozenset(tmpfiles),
                   frozenset(units))

    def removal(self) -> Needs:
        """What taking the content away again needs: its units stopped and disabled
        first, then the reloads; users and files it created stay."""
        return Needs(self.reloads, stop=self.units)

    def update(self, new: Needs) -> Needs:
        """What replacing this content by ``new`` needs: units it no longer ships are
        stopped, those it still ships restarted if running, new ones left alone (they
        start when something enables or activates them)."""
        return Needs(self.reloads, stop=self.units - new.units,
                     restart=self.units & new.units) | new

    def __or__(self, other: Needs) -> Needs:
        return Needs(self.reloads | other.reloads, self.sysusers | other.sysusers,
                     self.tmpfiles | other.tmpfiles, self.units | other.units,
                     self.stop | other.stop, self.restart | other.restart)

    def to_json(self) -> dict[str, list[str]]:
        return {"reloads": sorted(self.reloads), "sysusers": sorted(self.sysusers),
                "tmpfiles": sorted(self.tmpfiles), "units": sorted(self.units),
                "stop": sorted(self.stop), "restart": sorted(self.restart)}

    @classmethod
    def from_json(cls, data: Any) -> Needs:
        if not isinstance(data, dict):
            raise ValueError("not an object")
        fields = []
        for key in ("reloads", "sysusers", "tmpfiles"):
            value = data.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{key} is not a list of strings")
            if key != "reloads" and not all(config_name(v) for v in value):
                raise ValueError(f"{key}: not a file name of its directory")
            fields.append(frozenset(value))
        if not fields[0] <= set(RELOADS):
            raise ValueError("unknown reload")
        units = []
        for key in ("units", "stop", "restart"):
            value = data.get(key, [])
            # These reach systemctl's command line: only names of units an extension
            # can ship, whoever wrote the file.
            if not isinstance(value, list) or not all(
                    isinstance(v, str) and unit_pattern(v) is not None for v in value):
                raise ValueError(f"{key} is not a list of unit names")
            units.append(frozenset(value))
        return cls(*fields, *units)


def unit_pattern(name: str) -> str | None:
    """What ``systemctl`` is given for a unit file ``name`` an extension ships: the name
    itself, or for a template (``foo@.service``) the pattern of its instances
    (``foo@*.service``); None for anything that is not a service, socket, timer or path
    unit with a name systemd accepts (unit_name_is_valid), so nothing else reaches
    ``systemctl``'s command line."""
    stem, dot, kind = name.rpartition(".")
    if not dot or f".{kind}" not in _UNIT_TYPES or not stem or len(name) > 255:
        return None
    prefix, at, instance = stem.partition("@")
    if not prefix or not _UNIT_CHARS.issuperset(prefix) or prefix.startswith("-"):
        return None
    if not at:
        return name
    if instance == "":
        return f"{prefix}@*.{kind}"
    return name if _UNIT_CHARS.issuperset(instance) else None


_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.@+:-")


def config_name(name: str) -> bool:
    """Whether ``name`` may be handed to systemd-sysusers or systemd-tmpfiles: the plain
    name of a ``.conf`` file in their directory (no ``/``, not hidden, nothing but
    letters, digits and ``_.@+:-``), which they look up in their own search path; a
    leading ``-`` is safe after ``--``. Anything else is never put on a command line,
    whoever wrote it."""
    return (name.endswith(".conf") and len(name) <= 255 and not name.startswith(".")
            and _NAME_CHARS.issuperset(name))


# Content whose files were never recorded (linked before host sync was on, or the state
# was lost) may have held anything: taking it away reloads everything a removal can need.
UNKNOWN_CONTENT = Needs(frozenset(RELOADS))


@dataclasses.dataclass(frozen=True)
class Step:
    """The outcome of one step of a sync."""

    step: str
    outcome: str
    """``ok``, ``failed`` or ``skipped``."""
    message: str = ""
    command: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "outcome": self.outcome, "message": self.message,
                "command": list(self.command)}


@dataclasses.dataclass(frozen=True)
class SyncReport:
    """What one host sync did."""

    time: str
    """When it ran, ISO 8601 in UTC."""
    steps: tuple[Step, ...]
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(s.outcome != FAILED for s in self.steps)

    def to_json(self) -> dict[str, Any]:
        return {"time": self.time, "ok": self.ok, "steps": [s.to_json() for s in self.steps],
                "warnings": list(self.warnings)}

    @classmethod
    def from_json(cls, data: Any) -> SyncReport:
        if not isinstance(data, dict) or not isinstance(data.get("time"), str):
            raise ValueError("not a sync report")
        steps = []
        for s in data.get("steps", []):
            if not isinstance(s, dict) or s.get("outcome") not in (OK, FAILED, SKIPPED):
                raise ValueError("not a step")
            command = s.get("command", [])
            if not (isinstance(s.get("step"), str) and isinstance(s.get("message"), str)
                    and isinstance(command, list) and all(isinstance(c, str) for c in command)):
                raise ValueError("not a step")
            steps.append(Step(s["step"], s["outcome"], s["message"], tuple(command)))
        warnings = data.get("warnings", [])
        if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
            raise ValueError("warnings are not strings")
        return cls(data["time"], tuple(steps), tuple(warnings))


_DID = {STOP_UNITS: "stopped", DISABLE_UNITS: "disabled", RESTART_UNITS: "restarted if running:"}


def summary(report: SyncReport) -> tuple[list[str], list[str]]:
    """Short lines for people: what was done (one line) and what was skipped, then
    the problems: failed steps and warnings."""
    done = [s.step for s in report.steps if s.outcome == OK]
    info = [f"host sync: {', '.join(done)}: ok"] if done else []
    info += [f"host sync: {_DID[s.step]} {s.message}"
             for s in report.steps if s.outcome == OK and s.step in _DID]
    info += [f"host sync: {s.step} skipped: {s.message}"
             for s in report.steps if s.outcome == SKIPPED]
    problems = [f"host sync: {s.step} failed: {s.message}"
                for s in report.steps if s.outcome == FAILED]
    problems += [f"host sync: {w}" for w in report.warnings]
    return info, problems


@dataclasses.dataclass
class State:
    """One installation's ``hostsync.json``."""

    contents: dict[str, Needs] = dataclasses.field(default_factory=dict)
    pending: Needs | None = None
    """What an interrupted sync still owes the host (refresh included), if any."""
    last: SyncReport | None = None

    @classmethod
    def parse(cls, data: Any) -> State:
        if not isinstance(data, dict) or data.get("version") != 1:
            raise ValueError("unknown format")
        contents = data.get("contents", {})
        if not isinstance(contents, dict):
            raise ValueError("contents is not an object")
        pending, last = data.get("pending"), data.get("last")
        return cls({str(k): Needs.from_json(v) for k, v in contents.items()},
                   None if pending is None else Needs.from_json(pending),
                   None if last is None else SyncReport.from_json(last))

    def to_json(self) -> dict[str, Any]:
        return {"version": 1,
                "contents": {k: v.to_json() for k, v in sorted(self.contents.items())},
                "pending": None if self.pending is None else self.pending.to_json(),
                "last": None if self.last is None else self.last.to_json()}


def state_path(inst: Installation, state_dir: str) -> str:
    """Where the service keeps ``inst``'s host sync state, in its ``state_dir``."""
    return os.path.join(statefiles.installation_directory(state_dir, inst.path), STATE_FILE)


def load(inst: Installation, state_dir: str) -> tuple[State, str | None]:
    """The installation's state, and a warning if it had to be discarded."""
    path = state_path(inst, state_dir)
    try:
        return State.parse(json.loads(fileio.read_regular(path, MAX_SIZE))), None
    except (FileNotFoundError, PermissionError):
        return State(), None  # Never written, or (status as a user) not ours to read.
    except (OSError, ValueError) as e:
        # Losing it costs at most some extra reloads (UNKNOWN_CONTENT): never fatal.
        return State(), f"{path}: discarded ({e}); it is rebuilt by this run"


def last_sync(inst: Installation, state_dir: str) -> SyncReport | None:
    """The outcome of the last host sync recorded for ``inst`` (for ``status``)."""
    return load(inst, state_dir)[0].last


def save(states: Mapping[Installation, State], pending: Needs | None,
         report: SyncReport | None, state_dir: str) -> list[str]:
    """Record ``pending`` and ``report`` (if any) in every installation's state.

    Returns the failures to write, as warnings: the host is synced all the same.
    """
    problems: list[str] = []
    for inst, state in states.items():
        state.pending = pending
        if report is not None:
            state.last = report
        path = state_path(inst, state_dir)
        try:
            statefiles.installation_directory(state_dir, inst.path, create=True)
            data = json.dumps(state.to_json(), indent=1, sort_keys=True) + "\n"
            statefiles.write_file(path, data.encode(), mode=0o600)
        except OSError as e:
            problems.append(f"{path}: cannot save the host sync state: {e.strerror or e}")
    return problems
