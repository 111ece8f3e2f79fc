# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The target directory as it is: its entries, and which of them are ours.

GNU Stow's rule (docs/reference.md#links-and-ownership): an entry is ours iff it is a symlink
whose text is a normalised absolute path to a snapshot of a system installation's app in
the service's store (store.py), or, for links made before the store existed and until
the next run moves them there, under ``<installation>/app/``. Everything else is foreign:
never changed, never removed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from flatpak_sysext.flatpak.installation import Installation
from flatpak_sysext.plan import Entry, Kind
from flatpak_sysext.state import store

TEMP_PREFIX = ".#flatpak-sysext."
"""The names of our temporary links; systemd-sysext ignores every ``.#`` name."""


def owner(target: str, installations: Iterable[Installation],
          state_dir: str) -> Installation | None:
    """The installation whose snapshot (in ``state_dir``'s store) or whose ``app/`` the
    link text ``target`` leads into, if any."""
    if not os.path.isabs(target) or os.path.normpath(target) != target:
        return None
    return next((i for i in installations if target.startswith(i.path + "/app/")
                 or store.owns(state_dir, i.path, target)), None)


def scan(target_dir: str, scope: Iterable[Installation],
         installations: Iterable[Installation], state_dir: str) -> dict[str, Entry]:
    """Classify every entry of ``target_dir``; a missing directory is empty.

    Names starting with ``.#`` are ignored by systemd-sysext and so by us, except our
    own temporary links into an installation in ``scope``.
    """
    scope = list(scope)
    installations = list(installations)
    entries: dict[str, Entry] = {}
    try:
        it = os.scandir(target_dir)
    except FileNotFoundError:
        return entries
    with it:
        for de in it:
            try:
                target = os.readlink(de.path) if de.is_symlink() else None
            except FileNotFoundError:
                continue  # Removed while we looked: as if it had never been there.
            ours = owner(target, installations, state_dir) if target is not None else None
            if de.name.startswith(".#"):
                if de.name.startswith(TEMP_PREFIX) and ours in scope:
                    entries[de.name] = Entry(de.name, Kind.TEMPORARY, target)
                continue
            if ours is None:
                entries[de.name] = Entry(de.name, Kind.FOREIGN, target)
            else:
                kind = Kind.MANAGED if ours in scope else Kind.OTHER
                entries[de.name] = Entry(de.name, kind, target)
    return entries
