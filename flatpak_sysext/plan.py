# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Planning: what the target directory should look like versus what it holds → actions.

Pure functions over plain values; nothing here touches the filesystem. Like GNU Stow,
every change is decided before any is made, and an entry that is not ours is never in
an action: it can only be reported as a conflict.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Set
from typing import Union


class Kind(enum.Enum):
    """What an entry of the target directory is, as far as we are concerned."""

    MANAGED = "managed"
    """Our symlink, into an installation this run is responsible for."""
    OTHER = "other"
    """Our symlink, but into a system installation outside this run's scope."""
    FOREIGN = "foreign"
    """Anything else: never changed, never removed."""
    TEMPORARY = "temporary"
    """A temporary link of ours left behind by an interrupted run."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One entry of the target directory; ``target`` is the symlink text, if a symlink."""

    name: str
    kind: Kind
    target: str | None = None


@dataclasses.dataclass(frozen=True)
class Link:
    """Create ``name`` → ``target`` where there is nothing."""

    name: str
    target: str


@dataclasses.dataclass(frozen=True)
class Relink:
    """Atomically replace our link ``name`` → ``old`` by ``name`` → ``new``."""

    name: str
    old: str
    new: str


@dataclasses.dataclass(frozen=True)
class Unlink:
    """Remove our link ``name`` (expected to point to ``old``)."""

    name: str
    old: str


@dataclasses.dataclass(frozen=True)
class RemoveTemporary:
    """Remove a temporary link an interrupted run left (pointing to ``old``)."""

    name: str
    old: str

Action = Union[Link, Relink, Unlink, RemoveTemporary]


@dataclasses.dataclass(frozen=True)
class Plan:
    """The actions to apply, in order, and the names that cannot be linked."""

    actions: tuple[Action, ...]
    conflicts: tuple[str, ...]

    @property
    def changes_links(self) -> bool:
        """Whether applying it changes what systemd-sysext would merge."""
        return any(not isinstance(a, RemoveTemporary) for a in self.actions)


def blocks(entry: Entry | None) -> bool:
    """Whether an existing entry stands in the way of our link of the same name: it is
    not ours, or ours but into an installation outside this run's scope."""
    return entry is not None and (entry.kind is not Kind.MANAGED or entry.target is None)


def make_plan(
    wanted: Mapping[str, str],
    entries: Mapping[str, Entry],
    held: Set[str] = frozenset(),
) -> Plan:
    """Compute the actions that turn ``entries`` into ``wanted`` (name → link target).

    Our links whose name is not wanted are removed, unless the name is ``held`` (its
    app could not be read this time, so nothing about it may change). A wanted name
    whose entry is not ours in scope is a conflict and gets no action.
    """
    actions: list[Action] = []
    conflicts: list[str] = []
    for name, entry in sorted(entries.items()):
        if entry.kind is Kind.TEMPORARY and entry.target is not None:
            actions.append(RemoveTemporary(name, entry.target))
        elif (entry.kind is Kind.MANAGED and entry.target is not None
              and name not in wanted and name not in held):
            actions.append(Unlink(name, entry.target))
    for name, target in sorted(wanted.items()):
        existing = entries.get(name)
        if existing is None:
            actions.append(Link(name, target))
        elif blocks(existing):
            conflicts.append(name)
        elif existing.target is not None and existing.target != target:
            actions.append(Relink(name, existing.target, target))
    return Plan(tuple(actions), tuple(conflicts))
