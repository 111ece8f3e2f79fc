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
host, and a missing, forged or unreadable one makes the trigger tell every app's state
once.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Collection, Mapping

from flatpak_sysext import fileio, statefiles
from flatpak_sysext.evaluate import Evaluation

FILE_NAME = "told"
MAX_SIZE = 4 << 20
LINKED = "linked"


@dataclasses.dataclass(frozen=True)
class Told:
    """What the install output has said so far."""

    apps: Mapping[str, tuple[str, str]]
    """App ID -> (commit, state) as last told: a requested link counts as linked."""
    sync: str | None = None
    """The time of the last host sync whose steps were told or could have been."""


def path(installation_path: str) -> str:
    """Where the record of the installation at ``installation_path`` is kept."""
    return os.path.join(statefiles.directory(installation_path), FILE_NAME)


def read(installation_path: str) -> Told:
    """The record; an empty one if it is missing or malformed."""
    try:
        doc = json.loads(fileio.read_regular(path(installation_path), MAX_SIZE))
        apps = {str(k): (str(v[0]), str(v[1])) for k, v in doc["apps"].items()
                if isinstance(v, list) and len(v) == 2}
        sync = doc["sync"]
        return Told(apps, sync if isinstance(sync, str) else None)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return Told({})


def after(ev: Evaluation, linking: Collection[str], sync: str | None) -> Told:
    """What has been told once this run's lines are printed: every declared app's commit
    and state, with the apps in ``linking`` (linked or relinked by this run, or asked
    of the service) as linked."""
    return Told({s.app_id: (s.commit, LINKED if s.app_id in linking else s.state)
                 for s in ev.apps}, sync)


def write(installation_path: str, told: Told) -> None:
    """Keep ``told``; best effort: without it, the next run tells every app once more."""
    doc = {"apps": {k: list(v) for k, v in sorted(told.apps.items())}, "sync": told.sync}
    try:
        os.makedirs(statefiles.directory(installation_path), mode=0o755, exist_ok=True)
        statefiles.write_file(path(installation_path), json.dumps(doc, indent=1).encode())
    except OSError:
        return
