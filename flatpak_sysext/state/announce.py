# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""What the D-Bus interface's ``AppChanged`` tells, decided by the runs that change states
(docs/reference.md#d-bus-interface).

Every reconcile, under the service's lock, compares the states it ends with to those the
last run recorded (``announced.json``), records its own, and queues the differences as a
batch file in ``announce/``; the interface (dbusservice.py), woken by ``Reread``, emits
the queued batches and removes them. Both are root's, in the service's state directory:
what is signalled is what root's runs found, whoever sends ``Reread``, and a change made
while the interface does not run (or before a reboot) is told when it next does.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Collection, Mapping

from flatpak_sysext.state import fileio, statefiles

BASELINE = "announced.json"
QUEUE = "announce"
GONE = "gone"
"""The state told of an app that no longer declares an extension."""
MAX_SIZE = 1 << 20
MAX_BATCHES = 64
"""Batches kept while no interface takes them (none runs where D-Bus is missing): the
oldest go first."""

States = Mapping[str, tuple[str, str]]
"""App ID -> (installation path, state)."""


def changes(before: States | None, now: States, scope: Collection[str]) -> list[tuple[str, str]]:
    """The (app, state) pairs to tell, going from the states ``before`` (None: not known,
    as at the first run: every app is told) to those ``now`` of the installations
    ``scope``."""
    if before is None:
        return sorted((app, state) for app, (_, state) in now.items())
    gone = [(app, GONE) for app, (inst, _) in before.items() if inst in scope and app not in now]
    told = [(app, state) for app, (inst, state) in now.items() if before.get(app) != (inst, state)]
    return sorted(gone + told)


def _load(path: str) -> dict[str, tuple[str, str]] | None:
    try:
        data = json.loads(fileio.read_regular(path, MAX_SIZE))
        return {str(app): (str(v[0]), str(v[1])) for app, v in data.items()}
    except (OSError, ValueError, TypeError, AttributeError, IndexError, KeyError):
        return None  # not known: every app is told


def record(state_dir: str, now: States, scope: Collection[str]) -> bool:
    """Record the states ``now`` of the installations ``scope`` and queue what changed;
    whether anything was queued. Under the service's lock; raises OSError."""
    path = os.path.join(state_dir, BASELINE)
    before = _load(path)
    told = changes(before, now, scope)
    kept = {a: v for a, v in (before or {}).items() if v[0] not in scope}
    statefiles.private_directory(state_dir)
    if told:
        queue = os.path.join(state_dir, QUEUE)
        statefiles.private_directory(queue)
        statefiles.remove_leftovers(queue)  # of a run killed while it queued (the lock's)
        name = f"{time.time_ns():020d}-{os.getpid()}.json"
        statefiles.write_file(os.path.join(queue, name), json.dumps(told).encode(), 0o600,
                              durable=False)
        for old in _batches(queue)[:-MAX_BATCHES]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(queue, old))
    statefiles.write_file(path, json.dumps({**kept, **now}, sort_keys=True).encode(), 0o600,
                          durable=False)
    return bool(told)


def _batches(queue: str) -> list[str]:
    """The batch files queued, oldest first (not those being written: ``.#``)."""
    try:
        return sorted(n for n in os.listdir(queue) if not n.startswith("."))
    except FileNotFoundError:
        return []


def take(state_dir: str) -> list[tuple[str, str]]:
    """The queued (app, state) pairs, each batch removed once read: per app its last
    state only (what was queued while no interface ran is no longer the state now), in
    the order those were queued."""
    queue = os.path.join(state_dir, QUEUE)
    out: list[tuple[str, str]] = []
    for name in _batches(queue):
        path = os.path.join(queue, name)
        try:
            batch = json.loads(fileio.read_regular(path, MAX_SIZE))
            out.extend((str(app), str(state)) for app, state in batch)
        except (OSError, ValueError, TypeError):
            pass  # a damaged batch is dropped: clients read the states themselves
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    last = {app: i for i, (app, _) in enumerate(out)}
    return [pair for i, pair in enumerate(out) if last[pair[0]] == i]
