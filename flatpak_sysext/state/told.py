# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""What the trigger last told about each app: so that every transaction's output says
what became of each app it touched, whoever carried the change out.

Flatpak bumps ``.changed`` before it runs triggers, so ``flatpak-sysext.path`` often
starts the service, which links or unlinks before the trigger runs; the trigger then
finds nothing left to do. Instead of what it did, it tells what changed since it last
spoke: each app's commit and state are compared with this record,
``<installation>/flatpak-sysext/told``, which it rewrites after every run that
changes it (docs/reference.md#trigger-contract).

The record only decides which lines are printed: it is never a reason to change the
host. What a forged one can do is hide or repeat lines about valid app IDs; one that is
missing or cannot be read makes the trigger tell every app's state once more.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Collection, Mapping

from flatpak_sysext.flatpak import layout
from flatpak_sysext.plan import Action, Link, Relink, Unlink
from flatpak_sysext.state import fileio, statefiles

TYPE_CHECKING = False
if TYPE_CHECKING:
    from flatpak_sysext.evaluate import Evaluation

FILE_NAME = "told"
MAX_SIZE = 4 << 20
LINKED = "linked"
REQUESTED = "requested"
"""A link asked of the service: told as linked, but not known to have been made."""


@dataclasses.dataclass(frozen=True)
class Told:
    """What the install output has said so far."""

    apps: Mapping[str, tuple[str, str]]
    """App ID -> (commit, state) as last told; REQUESTED for a link asked of the service."""
    sync: str | None = None
    """The time of the last host sync whose steps were told or could have been."""


def path(installation_path: str) -> str:
    """Where the record of the installation at ``installation_path`` is kept."""
    return os.path.join(statefiles.directory(installation_path), FILE_NAME)


def read(installation_path: str) -> Told:
    """The record; an empty one if it is missing or malformed. Only valid app IDs and
    string values are kept: the names are printed."""
    try:
        doc = json.loads(fileio.read_regular(path(installation_path), MAX_SIZE))
        apps = {k: (v[0], v[1]) for k, v in doc["apps"].items()
                if layout.valid_app_id(k) and isinstance(v, list) and len(v) == 2
                and all(isinstance(x, str) for x in v)}
        sync = doc["sync"]
        return Told(apps, sync if isinstance(sync, str) else None)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return Told({})


def after(ev: Evaluation, before: Told, actions: Collection[Action], *, requested: bool,
          sync: str | None) -> Told:
    """What has been told once this run's lines are printed: every declared app's commit
    and state, those that ``actions`` link as linked (or, ``requested`` of the service,
    as REQUESTED); an app that is not declared now but still has a link that ``actions``
    do not remove (it could not be read this time) keeps what was told of it."""
    linking = {a.name for a in actions if isinstance(a, (Link, Relink))}
    unlinking = {a.name for a in actions if isinstance(a, Unlink)}
    apps = {name: told for name, told in before.apps.items()
            if name in ev.entries and name not in unlinking}
    for s in ev.apps:
        state = s.state
        if s.app_id in linking:
            state = REQUESTED if requested else LINKED
        apps[s.app_id] = (s.commit, state)
    return Told(apps, sync)


def write(installation_path: str, told: Told) -> None:
    """Keep ``told``; best effort: without it, the next run tells every app once more."""
    doc = {"apps": {k: list(v) for k, v in sorted(told.apps.items())}, "sync": told.sync}
    try:
        os.makedirs(statefiles.directory(installation_path), mode=0o755, exist_ok=True)
        statefiles.write_file(path(installation_path), json.dumps(doc, indent=1).encode())
    except OSError:
        return
