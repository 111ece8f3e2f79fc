# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The request protocol between the sandboxed trigger and ``flatpak-sysext.service``.

Inside Flatpak's sandbox the trigger cannot change the target directory. It writes what
it would do, one action a line, to ``<installation>/flatpak-sysext/request``;
``flatpak-sysext.path`` watches that file and starts the service, whose ``reconcile``
decides afresh (the request is a hint, never an instruction) and removes the file once
it carried out a run without failures. See docs/reference.md#request-file.
"""

from __future__ import annotations

import contextlib
import os

from flatpak_sysext.state import fileio, statefiles

NAME = "request"
MAX_SIZE = 1 << 20


def path(installation_path: str) -> str:
    """The file whose change starts ``flatpak-sysext.service`` through the path unit."""
    return os.path.join(statefiles.directory(installation_path), NAME)


def read(installation_path: str) -> list[str]:
    """The actions the pending request describes (empty if none, or unreadable)."""
    try:
        data = fileio.read_regular(path(installation_path), MAX_SIZE)
    except (OSError, ValueError):
        return []
    return data.decode("utf-8", "replace").splitlines()


def write(installation_path: str, actions: list[str]) -> None:
    """Ask the service to run, describing ``actions``; the caller holds the lock, or
    could not get it (then the run holding it sees the new file and goes round)."""
    os.makedirs(statefiles.directory(installation_path), mode=0o755, exist_ok=True)
    statefiles.write_file(path(installation_path),
                          "".join(f"{line}\n" for line in actions).encode())


def clear(installation_path: str) -> None:
    """Forget a request once a reconcile has carried it out."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path(installation_path))
