"""Reading Flatpak system installations: which apps declare a system extension, and where.

Everything here only reads. The layout is Flatpak's (FACTS.md): ``app/<ID>/current``
points to ``<ARCH>/<BRANCH>``, whose ``active`` points to the deploy directory. An app
is treated as hostile input: names, symlinks and files are checked before use, and the
declared extension path must resolve inside the deployment's ``files/``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping

from flatpak_sysext import deployfile, keyfile
from flatpak_sysext.report import Problem

DEFAULT_SYSTEM_DIR = "/var/lib/flatpak"
DEFAULT_CONFIG_DIR = "/etc/flatpak"
DEFAULT_EXTENSION_PATH = "lib/extensions"
GROUP = "X-SystemExtension"

# flatpak_is_valid_name(): dot-separated elements of [A-Za-z0-9_-], not starting with a
# digit or '-', at least three elements, at most 255 characters.
_APP_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*){2,}")
# flatpak_is_valid_branch() and the architecture names Flatpak writes.
_BRANCH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_ACTIVE = re.compile(r"[0-9a-f]{64}(-[A-Za-z0-9_.-]+)?")


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

    @property
    def deploy_dir(self) -> str:
        return os.path.join(self.installation.path, "app", self.app_id, self.arch, self.branch,
                            self.active_id)


@dataclasses.dataclass(frozen=True)
class Unreadable:
    """An app whose installation state could not be read; its link must not change."""

    installation: Installation
    app_id: str
    reason: str


def system_installations(environ: Mapping[str, str]) -> list[Installation]:
    """The default system installation and those of ``installations.d``, by real path.

    Raises InstallationError if a configuration file cannot be read or parsed: which
    links are ours depends on this list, so a guess is not good enough.
    """
    found = [Installation("default", environ.get("FLATPAK_SYSTEM_DIR") or DEFAULT_SYSTEM_DIR)]
    confdir = os.path.join(environ.get("FLATPAK_CONFIG_DIR") or DEFAULT_CONFIG_DIR,
                           "installations.d")
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


def _readlink_in(dirpath: str, name: str) -> str | None:
    try:
        return os.readlink(os.path.join(dirpath, name))
    except (FileNotFoundError, NotADirectoryError):
        return None


def resolve_extension_root(files_dir: str, declared: str) -> tuple[str | None, list[Problem]]:
    """Resolve ``declared`` (relative to ``/app``) inside ``files_dir``.

    Every prefix of the path must resolve inside ``files_dir``, so a symlink that leaves
    the deployment and comes back is refused too.
    """
    base = os.path.realpath(files_dir)
    parts = [p for p in declared.split("/") if p not in ("", ".")]
    if os.path.isabs(declared) or ".." in parts or not parts:
        return None, [Problem("escapes-deployment", declared,
                              f"path={declared!r} must be a relative path below /app "
                              "without '..', such as lib/extensions")]
    current = base
    for i in range(len(parts)):
        current = os.path.realpath(os.path.join(base, *parts[: i + 1]))
        if os.path.commonpath([base, current]) != base:
            return None, [Problem("escapes-deployment", "/".join(parts[: i + 1]),
                                  f"/app/{'/'.join(parts[: i + 1])} resolves to {current}, "
                                  "outside the app's files")]
    if not os.path.isdir(current) or os.path.islink(current):
        return None, [Problem("not-a-directory", declared,
                              f"/app/{declared} (declared in [X-SystemExtension] path=) "
                              "is missing or not a directory")]
    return current, []


def read_app(inst: Installation, app_id: str) -> Declared | Unreadable | None:
    """Read one app of an installation; None if not installed or it declares nothing."""
    appdir = os.path.join(inst.path, "app", app_id)
    current = _readlink_in(appdir, "current")
    if current is None:
        return None
    parts = current.split("/")
    if len(parts) != 2 or not all(_BRANCH.fullmatch(p) for p in parts):
        return Unreadable(inst, app_id, f"'current' points to {current!r}, not ARCH/BRANCH")
    arch, branch = parts
    refdir = os.path.join(appdir, arch, branch)
    active = _readlink_in(refdir, "active")
    if active is None:
        return None
    if not _ACTIVE.fullmatch(active):
        return Unreadable(inst, app_id, f"'active' points to {active!r}, not a deployment")
    deploy_dir = os.path.join(refdir, active)
    try:
        dfd = os.open(deploy_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        return Unreadable(inst, app_id, f"{deploy_dir}: {e.strerror}")
    try:
        info = deployfile.read("deploy", dir_fd=dfd)
        metadata = keyfile.read("metadata", dir_fd=dfd)
    except FileNotFoundError:
        return None  # A deployment Flatpak has not finished writing is not installed.
    except OSError as e:
        return Unreadable(inst, app_id, f"{deploy_dir}: {e.strerror}")
    except (deployfile.DeployFileError, keyfile.KeyFileError) as e:
        return Unreadable(inst, app_id, f"{deploy_dir}: {e}")
    finally:
        os.close(dfd)
    group = metadata.get(GROUP)
    if group is None or "Application" not in metadata:
        return None
    declared = group.get("path", DEFAULT_EXTENSION_PATH)
    root, problems = resolve_extension_root(os.path.join(deploy_dir, "files"), declared)
    return Declared(inst, app_id, arch, branch, active, info.origin, info.commit, declared,
                    root, tuple(problems))


def read_installation(inst: Installation) -> list[Declared | Unreadable]:
    """Every app of ``inst`` that declares a system extension, or could not be read.

    Directory entries that are not valid Flatpak app IDs are skipped: Flatpak never
    writes them, and they are never linked.
    """
    try:
        names = sorted(os.listdir(os.path.join(inst.path, "app")))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise InstallationError(f"{inst.path}/app: {e.strerror}") from None
    apps = (read_app(inst, n) for n in names if len(n) <= 255 and _APP_ID.fullmatch(n))
    return [a for a in apps if a is not None]
