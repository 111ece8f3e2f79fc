# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Host sync's unit steps (docs/reference.md#host-sync): whose units the recorded unit
file names are (:func:`ownership`: systemd's word, else its search order), ``systemctl
stop``/``disable``/``try-reload-or-restart`` of those that are the extension's, and
whether the daemon-reload a package transaction owes can be skipped
(:func:`manager_kept`)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Collection, Sequence

from flatpak_sysext.host.hostcommands import Runner, Tools, run_step, tool
from flatpak_sysext.state.hoststate import DISABLE_UNITS, OK, SKIPPED, Step, unit_pattern


def _under(host_root: str, path: str) -> str:
    return os.path.join(host_root, path.lstrip("/"))


def manager_stamp(runner: Runner, systemctl: str = "systemctl") -> str | None:
    """systemd's ``UnitsLoadTimestampMonotonic``: when it last loaded its units (seen
    to change with every daemon-reload on Debian 12's 252); None where systemd does not
    say, and then the daemon-reload is never skipped."""
    code, output = runner((systemctl, "show", "-p", "UnitsLoadTimestampMonotonic", "--value"))
    value = output.strip()
    return value if code == 0 and value.isdigit() else None


SYSTEMCTL_NOT_LOADED = 5
"""systemctl's exit status for a unit it does not know (LSB "not installed"): a unit
that is not loaded does not run, so stopping it has nothing to do."""
EXTENSION_UNIT_DIRS = ("/usr/lib/systemd/system", "/lib/systemd/system")
"""Where the extension's unit files are merged (``/lib`` is ``/usr/lib`` on merged-usr
hosts, and systemd may name either)."""
UNIT_DIRS_FIRST = ("/etc/systemd/system.control", "/run/systemd/system.control",
                   "/run/systemd/transient", "/run/systemd/generator.early",
                   "/etc/systemd/system", "/etc/systemd/system.attached",
                   "/run/systemd/system", "/run/systemd/system.attached",
                   "/run/systemd/generator", "/usr/local/lib/systemd/system")
"""systemd's system unit search path before the extension's directory, in its order
(systemd.unit(5), "Unit File Load Path"): a file of the same name in any of them is the
unit systemd loads. ``/run/systemd/generator.late`` comes after, and loses."""


@dataclasses.dataclass(frozen=True)
class Ownership:
    """Which recorded unit files are the units systemd loads from the extension."""

    ours: tuple[str, ...] = ()
    theirs: tuple[tuple[str, str], ...] = ()
    """Each unit left alone, and where systemd loads it from (or why not ours)."""

    def note(self) -> str:
        """The step's words for the units left alone."""
        if not self.theirs:
            return ""
        return "left alone, not the extension's unit: " + ", ".join(
            f"{u} ({why})" for u, why in self.theirs)


def _showunits_step(runner: Runner, names: Sequence[str], tools: Tools,
                props: str = "LoadState,FragmentPath") -> list[dict[str, str]] | None:
    """``systemctl show -p PROPS`` of each of ``names``, in their order; None when
    systemctl cannot say (not found, failed, or answered otherwise). Never a template:
    systemd refuses to show one, and fails the whole call."""
    path = tool("systemctl", tools.root, tools.provided)
    if path is None or not names:
        return None
    code, output = runner((path, "show", "-p", props, "--", *names))
    if code != 0:
        return None
    blocks = [dict(line.partition("=")[::2] for line in block.splitlines() if "=" in line)
              for block in output.strip("\n").split("\n\n")]
    if len(blocks) != len(names) or not all("LoadState" in b for b in blocks):
        return None
    return blocks


def _shadowed(unit: str, host_root: str) -> str | None:
    """The file of that name that comes before the extension's in systemd's search
    path, if any."""
    for d in UNIT_DIRS_FIRST:
        if os.path.lexists(_under(host_root, f"{d}/{unit}")):
            return f"{d}/{unit}"
    return None


def ownership(runner: Runner, units: Collection[str], host_root: str,
              tools: Tools) -> Ownership:
    """Whose units the recorded unit file names are now: the extension's when systemd
    says it loads the unit from the merged ``/usr/lib/systemd/system`` file; an
    administrator's, a generator's, a transient or a portable unit of that name is not
    ours to stop, disable or restart (docs/reference.md#host-sync). Where systemd has
    not loaded the unit (or cannot be asked), its search order decides on the files."""
    names = sorted(units)
    plain = [n for n in names if not _is_template(n)]
    answers = dict(zip(plain, _showunits_step(runner, plain, tools) or []))
    shown = [answers.get(n, {}) for n in names]
    ours: list[str] = []
    theirs: list[tuple[str, str]] = []
    for unit, props in zip(names, shown):
        state, fragment = props.get("LoadState", ""), props.get("FragmentPath", "")
        if state == "masked":
            theirs.append((unit, "masked"))
        elif fragment and fragment not in (f"{d}/{unit}" for d in EXTENSION_UNIT_DIRS):
            theirs.append((unit, f"systemd loads {fragment}"))
        elif not fragment and (first := _shadowed(unit, host_root)) is not None:
            theirs.append((unit, f"{first} comes first"))
        else:
            ours.append(unit)
    return Ownership(tuple(ours), tuple(theirs))


def _is_template(unit: str) -> bool:
    return unit.rpartition(".")[0].endswith("@")


def manager_kept(runner: Runner, stamp: str | None, units: Collection[str],
                  tools: Tools) -> str | None:
    """Why the daemon-reload a package transaction owes is not needed, if it is not:
    systemd loaded no units since the extensions were taken out (the stamp the first
    unmerge kept), and it has every unit of theirs loaded and up to date with the files
    merged again (LoadState=loaded, NeedDaemonReload=no). None: reload."""
    path = tool("systemctl", tools.root, tools.provided)
    if stamp is None or path is None or manager_stamp(runner, path) != stamp:
        return None
    plain = sorted(u for u in units if not _is_template(u))
    shown = _showunits_step(runner, plain, tools, "LoadState,NeedDaemonReload") if plain else []
    if shown is None or any(u.get("LoadState") != "loaded" or u.get("NeedDaemonReload") != "no"
                            for u in shown):
        return None
    return ("systemd reloaded nothing during the package transaction, and has the "
            "extensions' units loaded as merged")


def _template_name(unit: str) -> str | None:
    """What ``disable`` is given: the unit file's own name (a template's disables its
    instances; disable takes no glob), if it is one :func:`unit_pattern` accepts."""
    return unit if unit_pattern(unit) is not None else None


def units_step(runner: Runner, step: str, verb: Sequence[str], owned: Ownership, tools: Tools, *,
           name: Callable[[str], str | None] = unit_pattern, one_by_one: bool = False,
           success: Collection[int] = (0,), only: Collection[str] | None = None) -> Step:
    """``systemctl VERB -- NAMES`` for the units that are ours (``name`` of each: by
    default a template as the pattern of its instances; ``only``: of those, these), the
    step naming them and those left alone for people; ``one_by_one``, a call per unit."""
    ours = [u for u in owned.ours if only is None or u in only]
    names = [n for n in (name(u) for u in ours) if n is not None]
    left = owned.note()
    if not names:
        return Step(step, SKIPPED, left)
    calls = [(n,) for n in names] if one_by_one else [tuple(names)]
    failed = [done for done in (run_step(runner, step, ("systemctl", *verb, "--", *c), tools,
                                         success) for c in calls) if done.outcome != OK]
    if failed:
        return dataclasses.replace(failed[0], message="; ".join(f.message for f in failed))
    return Step(step, OK, "; ".join(filter(None, (", ".join(names), left))),
                ("systemctl", *verb, "--", *names))


def stop_step(runner: Runner, step: str, owned: Ownership, tools: Tools) -> Step:
    """``systemctl stop``, a unit a call: systemctl's exit status is its first error's,
    and one unit it does not know (nothing to stop) must not hide another's failure."""
    return units_step(runner, step, ("stop",), owned, tools, one_by_one=True,
                  success=(0, SYSTEMCTL_NOT_LOADED))


def disable_step(runner: Runner, owned: Ownership, host_root: str, tools: Tools) -> Step:
    """``systemctl disable --no-reload`` of the units whose file is merged."""
    merged = [u for u in owned.ours
              if os.path.lexists(_under(host_root, f"/usr/lib/systemd/system/{u}"))]
    if not merged:
        # A package transaction took the extension out of /usr: systemctl refuses to
        # disable a unit it has no file for.
        return Step(DISABLE_UNITS, SKIPPED, "no unit file of theirs is merged")
    return units_step(runner, DISABLE_UNITS, ("disable", "--no-reload"), owned, tools,
                  name=_template_name, only=merged)
