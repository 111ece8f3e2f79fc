"""Policy (SPEC §6): which apps an administrator lets link a system extension."""

from __future__ import annotations

import fnmatch
import os

from flatpak_sysext import keyfile
from flatpak_sysext.config import Config


def remote_verifies(installation_path: str, remote: str) -> bool:
    """Whether ``remote`` of the installation's repo verifies GPG signatures.

    OSTree's default for ``gpg-verify`` is true; a remote that is missing or a config
    that cannot be read counts as unverified, since nothing then vouches for the app.
    """
    try:
        groups = keyfile.read(os.path.join(installation_path, "repo", "config"))
    except (OSError, keyfile.KeyFileError):
        return False
    keys = groups.get(f'remote "{remote}"')
    if keys is None:
        return False
    return keys.get("gpg-verify", "true").strip().lower() in ("true", "1", "yes")


def denial(config: Config, installation_path: str, app_id: str, origin: str) -> str | None:
    """The rule that denies ``app_id`` from remote ``origin``, or None if it is allowed."""
    for pattern in config.deny:
        if fnmatch.fnmatchcase(app_id, pattern):
            return f"matches deny pattern {pattern!r}"
    if not any(fnmatch.fnmatchcase(app_id, p) for p in config.allow):
        return "matches no allow pattern"
    if config.remotes is not None and origin not in config.remotes:
        return f"origin remote {origin!r} is not in remotes"
    if config.require_gpg_verified_remote and not remote_verifies(installation_path, origin):
        return (f"origin remote {origin!r} does not verify GPG signatures "
                "(require_gpg_verified_remote)")
    return None
