# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The request protocol between the sandboxed trigger and ``flatpak-sysext.service``.

Inside Flatpak's sandbox the trigger cannot change the target directory. It writes what
it would do, one action a line, to ``<installation>/flatpak-sysext/request``, and
a line ``nonce HEX`` for each trigger run waiting for it (answer.py);
``flatpak-sysext.path`` watches that file and starts the service, whose ``reconcile``
decides afresh (the request is a hint, never an instruction), answers the nonces and
removes the file once it carried out a run without failures. See
docs/reference.md#request-file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

from flatpak_sysext.state import answer, fileio, statefiles

NAME = "request"
MAX_SIZE = 1 << 20
NONCE = "nonce "
MAX_NONCES = 16
"""The waiting runs a request names: more are older ones, long past their wait."""


def path(installation_path: str) -> str:
    """The file whose change starts ``flatpak-sysext.service`` through the path unit."""
    return os.path.join(statefiles.directory(installation_path), NAME)


def _lines(installation_path: str) -> list[str]:
    try:
        data = fileio.read_regular(path(installation_path), MAX_SIZE)
    except (OSError, ValueError):
        return []
    return data.decode("utf-8", "replace").splitlines()


def read(installation_path: str) -> list[str]:
    """The actions the pending request describes (empty if none, or unreadable)."""
    return [line for line in _lines(installation_path) if not line.startswith(NONCE)]


def nonces(installation_path: str) -> list[str]:
    """The nonces of the trigger runs waiting for the pending request, oldest first; the
    file is anyone's who can write the installation: only well-formed ones count."""
    found = [line[len(NONCE):] for line in _lines(installation_path)
             if line.startswith(NONCE)]
    return [n for n in found if answer.valid_nonce(n)][-MAX_NONCES:]


def write(installation_path: str, actions: list[str], waiting: Sequence[str] = ()) -> None:
    """Ask the service to run, describing ``actions``, for the trigger runs whose nonces
    are ``waiting``; the caller holds the lock, or could not get it (then the run
    holding it sees the new file and goes round)."""
    os.makedirs(statefiles.directory(installation_path), mode=0o755, exist_ok=True)
    lines = [*actions, *(f"{NONCE}{n}" for n in waiting[-MAX_NONCES:])]
    statefiles.write_file(path(installation_path),
                          "".join(f"{line}\n" for line in lines).encode())


def clear(installation_path: str) -> None:
    """Forget a request once a reconcile has carried it out."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path(installation_path))
