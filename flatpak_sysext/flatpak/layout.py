# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Flatpak's on-disk layout of an installation, read without trusting it.

``app/<ID>/current`` points to ``<ARCH>/<BRANCH>``, whose ``active`` points to the
deployment, which holds ``metadata`` (and ``deploy``, ``files/``…). This module reads
the links and what the metadata declares; ``installation`` builds on it. The trigger's
quick check uses it too, so it imports nothing beyond ``os`` and ``keyfile``. See
docs/platform.md#deployment-layout.
"""

# No ``from __future__ import annotations``: see quick.py.
import os

from flatpak_sysext.flatpak import keyfile

GROUP = "X-SystemExtension"
DEFAULT_EXTENSION_PATH = "lib/extensions"

_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_DIGITS = frozenset("0123456789")
_ELEMENT = _LETTERS | _DIGITS | {"-"}
_BRANCH = _LETTERS | _DIGITS | {".", "-"}
_HEX = frozenset("0123456789abcdef")


class LayoutError(Exception):
    """An app's links or deployment cannot be read as Flatpak writes them."""


def valid_app_id(name: str) -> bool:
    """flatpak_is_valid_name(): at least three dot-separated elements of [A-Za-z0-9_-],
    none starting with a digit or '-', at most 255 characters."""
    elements = name.split(".")
    return len(name) <= 255 and len(elements) >= 3 and all(
        e and e[0] in _LETTERS and _ELEMENT.issuperset(e) for e in elements)


def valid_branch(name: str) -> bool:
    """flatpak_is_valid_branch(), and the architecture names Flatpak writes:
    [A-Za-z0-9_][A-Za-z0-9_.-]*."""
    return bool(name) and name[0] not in ".-" and _BRANCH.issuperset(name)


def valid_active(name: str) -> bool:
    """A deployment's directory name: a commit (64 lowercase hex digits), optionally
    followed by ``-`` and a subpath digest of [A-Za-z0-9_.-]."""
    commit, dash, rest = name[:64], name[64:65], name[65:]
    return (len(commit) == 64 and _HEX.issuperset(commit)
            and (not dash or (dash == "-" and bool(rest) and _BRANCH.issuperset(rest))))


def _readlink(path: str, apps_fd: int) -> "str | None":
    try:
        return os.readlink(path, dir_fd=apps_fd)
    except (FileNotFoundError, NotADirectoryError):
        return None


def links(apps_fd: int, app_id: str) -> "tuple[str, str] | None":
    """The ``current`` and ``active`` link texts of an app; None if it is not installed.

    ``apps_fd`` is the installation's ``app/`` directory: paths relative to it cost the
    kernel less than absolute ones. Raises LayoutError for a link Flatpak never writes.
    """
    current = _readlink(f"{app_id}/current", apps_fd)
    if current is None:
        return None
    parts = current.split("/")
    if len(parts) != 2 or not all(valid_branch(p) for p in parts):
        raise LayoutError(f"'current' points to {current!r}, not ARCH/BRANCH")
    active = _readlink(f"{app_id}/{current}/active", apps_fd)
    if active is None:
        return None
    if not valid_active(active):
        raise LayoutError(f"'active' points to {active!r}, not a deployment")
    return current, active


def open_deployment(deploy_dir: str) -> "int | None":
    """A descriptor of the deployment directory (never through a symlink); None if it
    does not exist. Raises LayoutError if it cannot be opened."""
    try:
        return os.open(deploy_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise LayoutError(f"{deploy_dir}: {e.strerror}") from None


def declared_path(deploy_fd: int) -> "str | None":
    """The path an app's ``metadata`` declares in ``[X-SystemExtension]``, None if none.

    Only applications count (a runtime's metadata has no ``[Application]``). Raises
    FileNotFoundError if there is no metadata, OSError or keyfile.KeyFileError if it
    cannot be read.
    """
    metadata = keyfile.read("metadata", dir_fd=deploy_fd)
    group = metadata.get(GROUP)
    if group is None or "Application" not in metadata:
        return None
    return group.get("path", DEFAULT_EXTENSION_PATH)


def may_matter(installation_path: str, app_id: str) -> bool:
    """Whether reading the app in full could find something: it declares an extension,
    or it cannot be read. False only when it is not installed or declares nothing."""
    try:
        apps_fd = os.open(os.path.join(installation_path, "app"),
                          os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        found = links(apps_fd, app_id)
        if found is None:
            return False
        deploy_fd = open_deployment(deployment_dir(installation_path, app_id, *found))
        if deploy_fd is None:
            return False
        try:
            return declared_path(deploy_fd) is not None
        except FileNotFoundError:
            return False
        finally:
            os.close(deploy_fd)
    except (LayoutError, OSError, keyfile.KeyFileError):
        return True
    finally:
        os.close(apps_fd)


def deployment_dir(installation_path: str, app_id: str, current: str, active: str) -> str:
    """Where ``current`` and ``active`` lead."""
    return os.path.join(installation_path, "app", app_id, current, active)


def changed_path(installation_path: str) -> str:
    """The file Flatpak touches on every deploy, uninstall, remote change and make-current."""
    return os.path.join(installation_path, ".changed")
