# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""What each of our links provides, as the service recorded it when it made the link.

``shadows-host-file`` exempts the paths that our own merged extensions show in ``/usr``
(the host has them only because of that merge). Which paths those are must come from
what was checked when each link was made, never from the tree an update brings: the
update's new files would then be exempt too. The record is kept by the service in its
own state directory (``<state>/installations/<digest>/links.json``, 0600), per
installation: link name -> the link's target and the tree's files (TreeReport.files).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from flatpak_sysext.state import fileio, statefiles

NAME = "links.json"
VERSION = 1
MAX_SIZE = 256 << 20

Record = dict[str, tuple[str, frozenset[str]]]
"""Link name -> (its target, the files of the tree there)."""


def path(state_dir: str, installation_path: str) -> str:
    """The record of one installation's links."""
    return os.path.join(statefiles.installation_directory(state_dir, installation_path), NAME)


def load(state_dir: str, installation_path: str) -> Record:
    """The installation's record; empty if there is none or it is not what this writes
    (then nothing is exempt that was not checked in this run)."""
    try:
        data = json.loads(fileio.read_regular(path(state_dir, installation_path), MAX_SIZE))
        return _parse(data, installation_path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _parse(data: Any, installation_path: str) -> Record:
    if data["version"] != VERSION or data["installation"] != installation_path:
        raise ValueError("another format or installation")
    record: Record = {}
    for name, entry in data["links"].items():
        target, files = entry["target"], entry["files"]
        if not isinstance(target, str) or not isinstance(files, list) or not all(
                isinstance(f, str) for f in files):
            raise ValueError(f"{name}: not a record")
        record[str(name)] = (target, frozenset(files))
    return record


def save(state_dir: str, installation_path: str, record: Mapping[str, tuple[str, frozenset[str]]],
         ) -> None:
    """Write the record (only root can read or write it); raises OSError."""
    statefiles.installation_directory(state_dir, installation_path, create=True)
    data = {"version": VERSION, "installation": installation_path,
            "links": {name: {"target": target, "files": sorted(files)}
                      for name, (target, files) in sorted(record.items())}}
    statefiles.write_file(path(state_dir, installation_path),
                          json.dumps(data, separators=(",", ":")).encode(), mode=0o600)
