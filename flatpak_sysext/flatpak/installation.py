# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Reading Flatpak system installations: which apps declare a system extension, and where.

Everything here only reads. The layout is Flatpak's (docs/platform.md#deployment-layout):
``app/<ID>/current`` points to ``<ARCH>/<BRANCH>``, whose ``active`` points to the deploy
directory. An app is treated as hostile input: names, symlinks and files are checked
before use, and the declared extension path must resolve inside the deployment's
``files/``.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Mapping

from flatpak_sysext.flatpak import deployfile, keyfile, layout
from flatpak_sysext.report import Problem
from flatpak_sysext.rules import codes

DEFAULT_SYSTEM_DIR = "/var/lib/flatpak"
DEFAULT_CONFIG_DIR = "/etc/flatpak"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class InstallationError(Exception):
    """The set of system installations could not be read exactly."""


@dataclasses.dataclass(frozen=True)
class Installation:
    """A system installation: its configured ID ("default" for the built-in one) and path."""

    id: str
    path: str


@dataclasses.dataclass(frozen=True)
class Declared:
    """An installed app whose metadata has the ``[X-SystemExtension]`` group.

    ``root`` is the resolved extension root (absolute, inside the deployment's ``files/``),
    or None when ``problems`` says why it cannot be used.
    """

    installation: Installation
    app_id: str
    arch: str
    branch: str
    active_id: str
    origin: str
    commit: str
    declared_path: str
    root: str | None
    problems: tuple[Problem, ...]


@dataclasses.dataclass(frozen=True)
class Unreadable:
    """An app whose installation state could not be read; its link must not change."""

    installation: Installation
    app_id: str
    reason: str


def installations_dir(environ: Mapping[str, str]) -> str:
    """Where Flatpak reads the configuration of more system installations."""
    return os.path.join(environ.get("FLATPAK_CONFIG_DIR") or DEFAULT_CONFIG_DIR, "installations.d")


def system_installations(environ: Mapping[str, str]) -> list[Installation]:
    """The default system installation and those of ``installations.d``, by real path.

    Raises InstallationError if a configuration file cannot be read or parsed: which
    links are ours depends on this list, so a guess is not good enough.
    """
    found = [Installation("default", environ.get("FLATPAK_SYSTEM_DIR") or DEFAULT_SYSTEM_DIR)]
    confdir = installations_dir(environ)
    try:
        names = sorted(n for n in os.listdir(confdir) if n.endswith(".conf"))
    except FileNotFoundError:
        names = []
    except OSError as e:
        raise InstallationError(f"{confdir}: {e.strerror}") from None
    for name in names:
        conf = os.path.join(confdir, name)
        try:
            groups = keyfile.read(conf)
        except (OSError, keyfile.KeyFileError) as e:
            raise InstallationError(f"{conf}: {getattr(e, 'strerror', None) or e}") from None
        for group, keys in groups.items():
            if not group.startswith('Installation "') or not group.endswith('"'):
                continue
            path = keys.get("Path")
            if not path or not os.path.isabs(path):
                raise InstallationError(f"{conf}: [{group}] needs an absolute Path=")
            found.append(Installation(group[len('Installation "'):-1], path))
    unique: dict[str, Installation] = {}
    for inst in found:
        real = os.path.realpath(inst.path)
        unique.setdefault(real, Installation(inst.id, real))
    return list(unique.values())


def find_installation(path: str, installations: list[Installation]) -> Installation | None:
    """The system installation at ``path`` (compared by real path), if it is one."""
    real = os.path.realpath(path)
    return next((i for i in installations if i.path == real), None)


def untrusted(inst: Installation) -> str | None:
    """Why nothing of ``inst`` may be linked, if so: a directory on the way to it (or it)
    that is not root's or that others may write without the sticky bit, or a
    ``repo/config`` (which says whether a remote verifies signatures) not root's alone.

    Whoever owns one of those can swap what root reads there. Flatpak's own
    installations pass; an ``installations.d`` entry pointing into a user's home does not.
    """
    parts = inst.path.split("/")
    for i in range(1, len(parts) + 1):
        path = "/".join(parts[:i]) or "/"
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None  # Not there: nothing is read from it.
        if st.st_uid != 0:
            return f"{path} is owned by uid {st.st_uid}, who could change what it holds"
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            return (f"{path} has mode {stat.S_IMODE(st.st_mode):04o}: others could replace "
                    "what it holds")
    config = os.path.join(inst.path, "repo", "config")
    try:
        st = os.lstat(config)
    except FileNotFoundError:
        return None
    if st.st_uid != 0 or st.st_mode & 0o022:
        return (f"{config} (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}) is not "
                "root's alone: it says whether a remote's signatures are verified")
    return None


def still_resolved(path: str) -> bool:
    """Whether a path that was resolved still resolves to itself: false once something
    on the way has become a symlink."""
    return os.path.realpath(path) == path


def resolve_extension_root(files_dir: str, declared: str) -> tuple[str | None, list[Problem]]:
    """Resolve ``declared`` (relative to ``/app``) inside ``files_dir``.

    Every prefix of the path must resolve inside ``files_dir``, so a symlink that leaves
    the deployment and comes back is refused too.
    """
    base = os.path.realpath(files_dir)
    if base != os.path.normpath(files_dir):
        # A directory of the layout itself (app/<ID>, <ARCH>, <BRANCH>, files) is a
        # symlink: Flatpak never makes one, and it leads out of the installation.
        return None, [Problem(codes.ESCAPES_DEPLOYMENT, "",
                              f"{files_dir} resolves to {base}, outside the installation")]
    parts = [p for p in declared.split("/") if p not in ("", ".")]
    if os.path.isabs(declared) or ".." in parts or not parts:
        return None, [Problem(codes.ESCAPES_DEPLOYMENT, declared,
                              f"path={declared!r} must be a relative path below /app "
                              "without '..', such as lib/extensions")]
    for i in range(len(parts)):
        current = os.path.realpath(os.path.join(base, *parts[: i + 1]))
        if os.path.commonpath([base, current]) != base:
            return None, [Problem(codes.ESCAPES_DEPLOYMENT, "/".join(parts[: i + 1]),
                                  f"/app/{'/'.join(parts[: i + 1])} resolves to {current}, "
                                  "outside the app's files")]
    if not os.path.isdir(current):
        return None, [Problem(codes.NOT_A_DIRECTORY, declared,
                              f"/app/{declared} (declared in [X-SystemExtension] path=) "
                              "is missing or not a directory")]
    return current, []


@dataclasses.dataclass(frozen=True)
class Remembered:
    """What was read from one deployment of an app, kept between runs (see read_installation).

    ``current`` and ``active`` are the link texts that led to the deployment;
    ``declared`` is what it declares (None: nothing).
    """

    current: str
    active: str
    declared: Declared | None


_NOT_INSTALLED = "not installed"


def _links(inst: Installation, app_id: str, apps_fd: int) -> tuple[str, str] | Unreadable | None:
    """The ``current`` and ``active`` link texts of an app, checked; None if not installed."""
    try:
        return layout.links(apps_fd, app_id)
    except layout.LayoutError as e:
        return Unreadable(inst, app_id, str(e))


def _read_deployment(inst: Installation, app_id: str, current: str,
                     active: str) -> Declared | Unreadable | str | None:
    """Read the deployment ``current``/``active`` leads to: what it declares (None:
    nothing), or ``_NOT_INSTALLED`` if it is not complete.

    The metadata comes first: the ``deploy`` file of an app that declares nothing is
    none of our business, and is not read.
    """
    deploy_dir = layout.deployment_dir(inst.path, app_id, current, active)
    try:
        dfd = layout.open_deployment(deploy_dir)
    except layout.LayoutError as e:
        return Unreadable(inst, app_id, str(e))
    if dfd is None:
        return _NOT_INSTALLED
    try:
        declared = layout.declared_path(dfd)
        if declared is None:
            return None
        info = deployfile.read("deploy", dir_fd=dfd)
    except FileNotFoundError:
        return _NOT_INSTALLED  # A deployment Flatpak has not finished writing.
    except OSError as e:
        return Unreadable(inst, app_id, f"{deploy_dir}: {e.strerror}")
    except (deployfile.DeployFileError, keyfile.KeyFileError) as e:
        return Unreadable(inst, app_id, f"{deploy_dir}: {e}")
    finally:
        os.close(dfd)
    arch, branch = current.split("/")
    root, problems = resolve_extension_root(os.path.join(deploy_dir, "files"), declared)
    return Declared(inst, app_id, arch, branch, active, info.origin, info.commit, declared,
                    root, tuple(problems))


def read_app(inst: Installation, app_id: str) -> Declared | Unreadable | None:
    """Read one app of an installation; None if not installed or it declares nothing."""
    try:
        apps_fd = os.open(os.path.join(inst.path, "app"), _DIR_FLAGS)
    except FileNotFoundError:
        return None
    try:
        links = _links(inst, app_id, apps_fd)
    finally:
        os.close(apps_fd)
    if not isinstance(links, tuple):
        return links
    found = _read_deployment(inst, app_id, *links)
    return None if isinstance(found, str) else found


def read_installation(inst: Installation, memo: dict[str, Remembered] | None = None,
                      ) -> list[Declared | Unreadable]:
    """Every app of ``inst`` that declares a system extension, or could not be read.

    Directory entries that are not valid Flatpak app IDs are skipped: Flatpak never
    writes them, and they are never linked.

    ``memo`` (app ID -> what was read last time) is used and brought up to date. A
    deployment never changes once Flatpak made it active (a new commit, branch or
    subpath set is a new ``current`` or ``active`` link), so while both links read as
    before, reading its ``deploy`` and ``metadata`` again cannot tell anything new:
    only the two links are read for such an app, and for one that declares an
    extension, whether its root still resolves to itself (a directory of the layout
    replaced by a symlink would lead elsewhere). Anything else is read afresh, and only
    complete deployments are remembered.
    """
    memo = {} if memo is None else memo
    found: list[Declared | Unreadable] = []
    try:
        apps_fd = os.open(os.path.join(inst.path, "app"), _DIR_FLAGS)
    except FileNotFoundError:
        memo.clear()
        return found
    except OSError as e:
        raise InstallationError(f"{inst.path}/app: {e.strerror}") from None
    try:
        try:
            names = sorted(os.listdir(apps_fd))
        except OSError as e:
            raise InstallationError(f"{inst.path}/app: {e.strerror}") from None
        for app_id in names:
            if layout.valid_app_id(app_id):
                _read_one(inst, app_id, apps_fd, memo, found)
    finally:
        os.close(apps_fd)
    for app_id in set(memo).difference(names):
        del memo[app_id]
    return found


def _read_one(inst: Installation, app_id: str, apps_fd: int, memo: dict[str, Remembered],
              found: list[Declared | Unreadable]) -> None:
    """read_installation's work for one app."""
    links = _links(inst, app_id, apps_fd)
    if not isinstance(links, tuple):
        memo.pop(app_id, None)
        if links is not None:
            found.append(links)
        return
    known = memo.get(app_id)
    if known is not None and (known.current, known.active) == links and (
            known.declared is None or known.declared.root is None
            or still_resolved(known.declared.root)):
        app: Declared | Unreadable | str | None = known.declared
    else:
        app = _read_deployment(inst, app_id, *links)
        if app is None or isinstance(app, Declared):
            memo[app_id] = Remembered(*links, app)
        else:
            memo.pop(app_id, None)
    if isinstance(app, (Declared, Unreadable)):
        found.append(app)
