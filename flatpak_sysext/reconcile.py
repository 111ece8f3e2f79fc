"""The reconcile loop: evaluate, apply the plan under the locks, then sync the host.

``reconcile`` is what ``flatpak-sysext reconcile``, the service and the unsandboxed
trigger run. It reads an installation again while Flatpak's ``.changed`` moves under
it (see docs/ARCHITECTURE.md#sandboxed-triggers) and syncs the host once the links are
right (docs/reference.md#host-sync).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Sequence

from flatpak_sysext import (
    apply,
    fileio,
    hostsync,
    layout,
    pkgtransaction,
    request,
    statefiles,
    targetdir,
)
from flatpak_sysext.apply import Failure
from flatpak_sysext.evaluate import Context, Evaluation, evaluate
from flatpak_sysext.hoststate import SyncReport
from flatpak_sysext.installation import Installation
from flatpak_sysext.plan import Action, Kind, Link, Relink, RemoveTemporary, Unlink

MAX_PASSES = 5
"""How often a run reads an installation that keeps changing under it."""


@dataclasses.dataclass(frozen=True)
class Result:
    """What a reconcile did."""

    evaluation: Evaluation
    applied: tuple[Action, ...]
    failures: tuple[Failure, ...]
    sync: SyncReport | None = None
    """The host sync after the links changed, if one ran."""


def _changed_stamp(scope: Sequence[Installation]) -> tuple[str, ...]:
    """What ``.changed`` looks like: Flatpak bumps it on every deploy and uninstall."""
    stamps = []
    for inst in scope:
        try:
            stamps.append(fileio.signature(layout.changed_path(inst.path)))
        except OSError as e:
            stamps.append(f"error {e.errno}")
    return tuple(stamps)


def _changes(ev: Evaluation, applied: Sequence[Action]) -> list[hostsync.Change]:
    """The link changes, with the files of the trees now linked."""
    by_app = {s.app_id: s for s in ev.apps}
    changes = []
    for a in applied:
        old: str | None
        new: str | None
        if isinstance(a, Link):
            old, new = None, a.target
        elif isinstance(a, Relink):
            old, new = a.old, a.new
        elif isinstance(a, Unlink):
            old, new = a.old, None
        else:
            continue  # A leftover temporary link: systemd-sysext ignores ".#" names.
        s = by_app.get(a.name)
        files = s.files if s is not None and new is not None and s.target == new else frozenset()
        changes.append(hostsync.Change(a.name, old, new, files))
    return changes


def reconcile(ctx: Context, scope: Sequence[Installation], *, dry_run: bool = False,
              after_transaction: bool = False) -> Result:
    """Bring the target directory in line with ``scope``, then the host.

    All under the installations' locks. An installation that changes during a pass is
    read again, up to MAX_PASSES times: systemd folds a start of flatpak-sysext.service
    asked for while it runs into the running one, and a PathChanged= unit does not look
    again when the service ends, so a change made meanwhile would wait for the next.
    ``after_transaction``: a package transaction took the extensions out of ``/usr``;
    the host sync is owed whatever the links do.
    """
    if dry_run:
        ev = evaluate(ctx, scope, save_cache=False)
        return Result(ev, (), ())
    applied: list[Action] = []
    failures: list[Failure] = []
    with statefiles.Locked(i.path for i in scope):
        sync = (hostsync.HostSync(scope, host_root=ctx.host_root, runner=ctx.runner,
                                  tools_root=ctx.tools_root)
                if ctx.config.host_sync else None)
        if sync is not None and after_transaction:
            sync.owe_all()
        for _ in range(MAX_PASSES):
            stamp = _changed_stamp(scope)
            ev = evaluate(ctx, scope, save_cache=True)
            if sync is not None and ev.plan.changes_links:
                sync.owe()
            pass_failures = apply.apply(ctx.config.target_dir, ev.plan.actions)
            failed = {f.action for f in pass_failures}
            applied += [a for a in ev.plan.actions if a not in failed]
            failures += pass_failures
            if _changed_stamp(scope) == stamp:
                break
        if not failures:
            for inst in scope:
                request.clear(inst.path)
        report = None
        if sync is not None:
            entries = targetdir.scan(ctx.config.target_dir, ctx.installations,
                                     ctx.installations)
            linked = [e.name for e in entries.values() if e.kind is Kind.MANAGED]
            # Host sync never runs a program that a linked tree provides.
            provided = frozenset().union(*(s.files for s in ev.apps if s.app_id in linked))
            # A package manager is writing /usr: merging would make it read-only under
            # it; its post step syncs what is owed (docs/reference.md#package-managers).
            with pkgtransaction.sync_lock(ctx.host_root):
                busy = pkgtransaction.active(ctx.host_root)
                report = sync.run(_changes(ev, applied), linked, provided, deferred=busy)
    return Result(ev, tuple(applied), tuple(failures), report)


@dataclasses.dataclass(frozen=True)
class Removal:
    """What ``remove_all`` did."""

    applied: tuple[Action, ...]
    failures: tuple[Failure, ...]
    sync: SyncReport | None
    removed_state: tuple[str, ...]
    """The state directories that were removed."""


def remove_all(ctx: Context) -> Removal:
    """Take every link of ours away, sync the host, and remove our state directories.

    What a package's removal runs (prerm, %preun), so that nothing of ours is merged
    at the next boot once the tool is gone. Foreign entries are left alone, as always.
    A state directory is kept when a link could not be removed: the next run needs it.
    """
    paths = [i.path for i in ctx.installations]
    # Taking the locks makes the state directories: only those that were there count.
    existed = {p for p in paths if os.path.isdir(statefiles.directory(p))}
    with statefiles.Locked(paths):
        entries = targetdir.scan(ctx.config.target_dir, ctx.installations, ctx.installations)
        actions: list[Action] = []
        for entry in sorted(entries.values(), key=lambda e: e.name):
            if entry.target is None:
                continue
            if entry.kind is Kind.MANAGED:
                actions.append(Unlink(entry.name, entry.target))
            elif entry.kind is Kind.TEMPORARY:
                actions.append(RemoveTemporary(entry.name, entry.target))
        sync = (hostsync.HostSync(ctx.installations, host_root=ctx.host_root,
                                  runner=ctx.runner, tools_root=ctx.tools_root)
                if ctx.config.host_sync else None)
        if sync is not None and actions:
            sync.owe()
        failures = apply.apply(ctx.config.target_dir, actions)
        failed = {f.action for f in failures}
        applied = [a for a in actions if a not in failed]
        changes = [hostsync.Change(a.name, a.old, None) for a in applied
                   if isinstance(a, Unlink)]
        report = None
        if sync is not None:
            # Removing our package runs this inside dpkg's transaction: merging now
            # would make /usr read-only under it.
            with pkgtransaction.sync_lock(ctx.host_root):
                busy = pkgtransaction.active(ctx.host_root)
                report = sync.run(changes, [], deferred=busy)
        removed: list[str] = []
        if not failures:
            for path in paths:
                directory = statefiles.directory(path)
                shutil.rmtree(directory, ignore_errors=path not in existed)
                if path in existed:
                    removed.append(directory)
    return Removal(tuple(applied), tuple(failures), report, tuple(removed))
