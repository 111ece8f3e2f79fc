# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Policy (docs/configuration.md): which apps an administrator lets link a system extension.

The rules are applied in a fixed order and the first that denies is reported: ``deny``
globs (deny wins), the ``remotes`` allow-list, then ``require_gpg_verified_remote``. An
app no rule denies still needs consent (consent.py): the ``allow`` globs give it for
what a distribution or fleet ships.
"""

from __future__ import annotations

import fnmatch
import functools
import os

from flatpak_sysext.config import Config
from flatpak_sysext.flatpak import keyfile


@functools.lru_cache(maxsize=16)
def _verifying_remotes(config_file: str, signature: tuple[int, int, int, int]) -> frozenset[str]:
    """The remotes of a repo ``config`` that verify signatures; ``signature`` is its stat.

    Keyed by (device, inode, size, mtime_ns): OSTree replaces the file atomically, so a
    changed config is a new key and a run with many apps reads each installation's once.
    """
    try:
        groups = keyfile.read(config_file)
    except (OSError, keyfile.KeyFileError):
        return frozenset()
    verifying = set()
    for group, keys in groups.items():
        if not (group.startswith('remote "') and group.endswith('"')):
            continue
        # OSTree's default is true. GLib accepts exactly "true" or "1" as true, and an
        # invalid value makes OSTree fail, so only those count: anything else is unverified.
        if keys.get("gpg-verify", "true").strip() in ("true", "1"):
            verifying.add(group[len('remote "'):-1])
    return frozenset(verifying)


def remote_verifies(installation_path: str, remote: str) -> bool:
    """Whether ``remote`` of the installation's repo verifies GPG signatures.

    A remote that is missing or a config that cannot be read counts as unverified,
    since nothing then vouches for the app.
    """
    config_file = os.path.join(installation_path, "repo", "config")
    try:
        st = os.stat(config_file)
    except OSError:
        return False
    signature = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    return remote in _verifying_remotes(config_file, signature)


def denial(config: Config, installation_path: str, app_id: str, origin: str) -> str | None:
    """The rule that denies ``app_id`` from remote ``origin``, or None if none does
    (the app then still needs consent: :func:`allowed_by` or a consent record)."""
    for pattern in config.deny:
        if fnmatch.fnmatchcase(app_id, pattern):
            return f"matches deny pattern {pattern!r}"
    if config.remotes is not None and origin not in config.remotes:
        return f"origin remote {origin!r} is not in remotes"
    if config.require_gpg_verified_remote and not remote_verifies(installation_path, origin):
        return (f"origin remote {origin!r} does not verify GPG signatures "
                "(require_gpg_verified_remote)")
    return None


def allowed_by(config: Config, app_id: str, origin: str) -> str | None:
    """The ``allow`` pattern that consents to ``app_id`` from remote ``origin``, if any.

    Never for the ``*-origin`` remotes Flatpak creates for bundles and ``.flatpakref``
    installs: whoever hands out such a file chooses what it contains, and a pattern a
    distribution ships must not cover it.
    """
    if origin.endswith("-origin"):
        return None
    return next((p for p in config.allow if fnmatch.fnmatchcase(app_id, p)), None)
