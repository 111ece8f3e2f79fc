# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The only module that changes the target directory: it applies a plan's actions.

Every change is atomic (a new link is made in one ``symlinkat``; a changed one is made
under a temporary ``.#`` name, which systemd-sysext ignores, and renamed over the old),
and every removal first checks that the entry is still exactly the link the plan saw.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import stat
from collections.abc import Iterable

from flatpak_sysext.host.targetdir import TEMP_PREFIX
from flatpak_sysext.plan import Action, Link, Relink, RemoveTemporary, Unlink


@dataclasses.dataclass(frozen=True)
class Failure:
    """An action that could not be applied, and why."""

    action: Action | None
    """None when the actions were applied but could not be synced to disk."""
    message: str


def _expect_link(dfd: int, name: str, target: str) -> None:
    st = os.lstat(name, dir_fd=dfd)
    if not stat.S_ISLNK(st.st_mode) or os.readlink(name, dir_fd=dfd) != target:
        raise OSError(errno.ESTALE, f"{name} changed since it was read; left alone")


def _apply_one(dfd: int, action: Action) -> None:
    if isinstance(action, Link):
        os.symlink(action.target, action.name, dir_fd=dfd)
    elif isinstance(action, Relink):
        _expect_link(dfd, action.name, action.old)
        tmp = TEMP_PREFIX + os.urandom(8).hex()
        os.symlink(action.new, tmp, dir_fd=dfd)
        try:
            os.rename(tmp, action.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise
    else:
        _expect_link(dfd, action.name, action.old)
        os.unlink(action.name, dir_fd=dfd)


def describe(action: Action) -> str:
    """A short human description of an action, for messages."""
    if isinstance(action, Link):
        return f"link {action.name} -> {action.target}"
    if isinstance(action, Relink):
        return f"relink {action.name} -> {action.new}"
    if isinstance(action, Unlink):
        return f"unlink {action.name}"
    assert isinstance(action, RemoveTemporary)
    return f"remove leftover {action.name}"


def apply(target_dir: str, actions: Iterable[Action]) -> list[Failure]:
    """Apply ``actions`` in order; a failing action does not stop the others.

    Returns the failures. The directory is created (0755) if a link needs it, and
    synced at the end so that the links survive a crash of the machine.
    """
    actions = list(actions)
    if not actions:
        return []
    try:
        os.makedirs(target_dir, mode=0o755, exist_ok=True)
        dfd = os.open(target_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        return [Failure(a, f"{target_dir}: {e.strerror}") for a in actions]
    failures: list[Failure] = []
    try:
        for action in actions:
            try:
                _apply_one(dfd, action)
            except OSError as e:
                failures.append(Failure(action, f"{describe(action)}: {e.strerror or e}"))
        try:
            os.fsync(dfd)
        except OSError as e:
            # Every action was made: only their durability is in doubt.
            failures.append(Failure(None, f"{target_dir}: sync: {e.strerror}"))
    finally:
        os.close(dfd)
    return failures
