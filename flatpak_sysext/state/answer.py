# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The service's answer to the sandboxed trigger's request (docs/reference.md#answer-file).

A sandboxed trigger leaves a request naming a nonce of its own (request.py). Every
``reconcile`` that carried requests out (the service's, ``approve``'s, an
administrator's) writes, under the lock, ``answer`` in its root-only directory for the
installation (statefiles.installation_directory): the nonces it served, what failed, and
what systemd-sysext had merged once the host was synced. The trigger, whose sandbox
binds ``/`` read-only, waits for its nonce there and tells the outcome.

Nobody but root can write that directory (0700, root's), so an answer cannot be
forged by a user; still, the trigger reads it as root and treats it as hostile: a
symlink, a file not root's or writable by others, one larger than MAX_SIZE or not
naming the installation is no answer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import time
from collections.abc import Iterable, Sequence

from flatpak_sysext.state import fileio, statefiles
from flatpak_sysext.state.hoststate import SyncReport

FILE_NAME = "answer"
MAX_SIZE = 1 << 20
KEEP_RUNS = 8
"""Runs an answer remembers: a trigger whose request a later run also served finds it."""
MAX_FAILURES = 50
MAX_MESSAGE = 1000
NONCE_LENGTH = 32
_HEX = frozenset("0123456789abcdef")


def new_nonce() -> str:
    """A nonce for one trigger run's request: 128 random bits, hex."""
    return os.urandom(NONCE_LENGTH // 2).hex()


def valid_nonce(text: str) -> bool:
    """Whether ``text`` is a nonce as :func:`new_nonce` makes them."""
    return len(text) == NONCE_LENGTH and _HEX.issuperset(text)


@dataclasses.dataclass(frozen=True)
class Answer:
    """What one reconcile said to the requests it served."""

    nonces: tuple[str, ...]
    failures: tuple[str, ...]
    """What that run could not do (its failure messages), for this installation."""
    merged: frozenset[str]
    """What systemd-sysext had merged when the run ended."""
    sync: SyncReport | None
    """The run's own host sync, if it ran one: the record of the last host sync may be a
    later run's by the time the trigger reads it (Flatpak's ``.changed`` starts another)."""

    def to_json(self) -> dict[str, object]:
        return {"nonces": list(self.nonces), "failures": list(self.failures),
                "merged": sorted(self.merged),
                "sync": None if self.sync is None else self.sync.to_json()}


def path(state_dir: str, installation_path: str) -> str:
    """The answer file for the installation at ``installation_path``."""
    return os.path.join(statefiles.installation_directory(state_dir, installation_path),
                        FILE_NAME)


def _strings(value: object, longest: int) -> tuple[str, ...]:
    """A JSON list of strings, each cut to ``longest`` characters."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("not a list of strings")
    return tuple(v[:longest] for v in value)


def _trusted(file_path: str) -> bool:
    """Whether the file and its directory are root's (our euid's) and only root may write
    them: what a user could have made or changed is never an answer."""
    for p in (os.path.dirname(file_path), file_path):
        try:
            st = os.lstat(p)
        except OSError:
            return False
        if st.st_uid != os.geteuid() or st.st_mode & 0o022 or stat.S_ISLNK(st.st_mode):
            return False
    return True


def read(state_dir: str, installation_path: str) -> list[Answer]:
    """The runs the answer file remembers, oldest first; none if it is missing, not
    trusted (see the module documentation), too large or malformed."""
    file_path = path(state_dir, installation_path)
    if not _trusted(file_path):
        return []
    try:
        doc = json.loads(fileio.read_regular(file_path, MAX_SIZE))
        if doc["installation"] != installation_path:
            return []
        return [Answer(tuple(n for n in _strings(run["nonces"], NONCE_LENGTH + 1)
                             if valid_nonce(n)),
                       _strings(run["failures"], MAX_MESSAGE)[:MAX_FAILURES],
                       frozenset(_strings(run["merged"], 256)),
                       None if run["sync"] is None else SyncReport.from_json(run["sync"]))
                for run in doc["runs"][-KEEP_RUNS:]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return []


def find(state_dir: str, installation_path: str, nonce: str) -> Answer | None:
    """The run that served ``nonce``, if the answer file names it."""
    return next((a for a in reversed(read(state_dir, installation_path))
                 if nonce in a.nonces), None)


def write(state_dir: str, installation_path: str, nonces: Iterable[str],
          failures: Sequence[str], merged: Iterable[str], sync: SyncReport | None) -> None:
    """Add a run that served ``nonces`` to the answer file (the caller holds the lock)."""
    run = Answer(tuple(sorted(n for n in set(nonces) if valid_nonce(n))),
                 tuple(f[:MAX_MESSAGE] for f in failures[:MAX_FAILURES]),
                 frozenset(merged), sync)
    runs = [*read(state_dir, installation_path), run][-KEEP_RUNS:]
    statefiles.installation_directory(state_dir, installation_path, create=True)
    doc = {"installation": installation_path, "runs": [r.to_json() for r in runs]}
    # Not durable: after a crash no trigger waits for the runs it held.
    statefiles.write_file(path(state_dir, installation_path), json.dumps(doc).encode(),
                          durable=False)


def wait(state_dir: str, installation_path: str, nonce: str, timeout: float,
         pause: float = 0.03) -> Answer | None:
    """Poll for the run that served ``nonce``, at most ``timeout`` seconds. A stat per
    pause; the file is read again only when it changed."""
    deadline = time.monotonic() + timeout
    file_path = path(state_dir, installation_path)
    seen = None
    while True:
        try:
            sig = fileio.signature(file_path)
        except OSError:
            sig = None
        if sig != seen and sig != fileio.ABSENT:
            seen = sig
            found = find(state_dir, installation_path, nonce)
            if found is not None:
                return found
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        time.sleep(min(pause, left))
