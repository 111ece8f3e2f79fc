"""The only module that changes the target directory: scanning it, applying a plan, locking.

Every change is atomic (a new link is made in one ``symlinkat``; a changed one is made
under a temporary ``.#`` name, which systemd-sysext ignores, and renamed over the old),
and every removal first checks that the entry is still exactly the link the plan saw.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import re
import stat
from collections.abc import Iterable, Iterator

from flatpak_sysext import state
from flatpak_sysext.installation import Installation
from flatpak_sysext.plan import Action, Entry, Kind, Link, Relink, RemoveTemporary, Unlink

TEMP_PREFIX = ".#flatpak-sysext."


@dataclasses.dataclass(frozen=True)
class Failure:
    """An action that could not be applied, and why."""

    action: Action | None
    """None when the actions were applied but could not be synced to disk."""
    message: str


def owner(target: str, installations: Iterable[Installation]) -> Installation | None:
    """The installation whose ``app/`` the link text ``target`` leads into, if any."""
    if not os.path.isabs(target) or os.path.normpath(target) != target:
        return None
    return next((i for i in installations if target.startswith(i.path + "/app/")), None)


def scan(target_dir: str, scope: Iterable[Installation],
         installations: Iterable[Installation]) -> dict[str, Entry]:
    """Classify every entry of ``target_dir`` (SPEC §3); a missing directory is empty.

    Names starting with ``.#`` are ignored by systemd-sysext and so by us, except our
    own temporary links into an installation in ``scope``.
    """
    scope = list(scope)
    installations = list(installations)
    entries: dict[str, Entry] = {}
    try:
        it = os.scandir(target_dir)
    except FileNotFoundError:
        return entries
    with it:
        for de in it:
            try:
                target = os.readlink(de.path) if de.is_symlink() else None
            except FileNotFoundError:
                continue  # Removed while we looked: as if it had never been there.
            ours = owner(target, installations) if target is not None else None
            if de.name.startswith(".#"):
                if de.name.startswith(TEMP_PREFIX) and ours in scope:
                    entries[de.name] = Entry(de.name, Kind.TEMPORARY, target)
                continue
            if ours is None:
                entries[de.name] = Entry(de.name, Kind.FOREIGN, target)
            else:
                kind = Kind.MANAGED if ours in scope else Kind.OTHER
                entries[de.name] = Entry(de.name, kind, target)
    return entries


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


def request_path(inst: Installation) -> str:
    """The file whose change starts ``flatpak-sysext.service`` through the path unit."""
    return os.path.join(state.directory(inst.path), "request")


def clear_request(inst: Installation) -> None:
    """Forget a sandboxed trigger's request once a reconcile has carried it out."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(request_path(inst))


@contextlib.contextmanager
def locked(installations: Iterable[Installation]) -> Iterator[None]:
    """Hold each installation's lock (in path order, so runs never deadlock)."""
    with contextlib.ExitStack() as stack:
        for inst in sorted(installations, key=lambda i: i.path):
            fd = state.lock(inst.path)
            stack.callback(os.close, fd)
            _remove_leftovers(state.directory(inst.path))
        yield


_WRITE_TEMPORARY = re.compile(r"\.#.+\.[0-9a-f]{16}")
"""The name :func:`state.write_file` gives its temporary file."""


def _remove_leftovers(directory: str) -> None:
    """Remove what a run killed inside :func:`state.write_file` left: its ``.#`` temporaries.

    Only called with the lock held: the state files (cache, request, host sync state)
    are only written under it, so none of their temporaries is in use; a best-effort
    write made without the lock (the config memo, the quick check's stamp) at worst
    fails and is made again next time.
    """
    for name in os.listdir(directory):
        if _WRITE_TEMPORARY.fullmatch(name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))
