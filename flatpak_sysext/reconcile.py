# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
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
from collections.abc import Collection, Mapping, Sequence

from flatpak_sysext.context import Context
from flatpak_sysext.evaluate import Evaluation, evaluate
from flatpak_sysext.flatpak import layout
from flatpak_sysext.flatpak.installation import Installation
from flatpak_sysext.host import apply, busnotify, hostsync, pkgtransaction, targetdir
from flatpak_sysext.host.apply import Failure
from flatpak_sysext.plan import Action, Entry, Kind, Link, Relink, Unlink, make_plan
from flatpak_sysext.state import announce, answer, fileio, provided, request, statefiles, store
from flatpak_sysext.state.hoststate import SyncReport

MAX_PASSES = 5
"""How often a run reads an installation that keeps changing under it."""
LOCK_WAIT = 300.0
"""Seconds ``reconcile`` waits for the lock: only root can hold it (another run), and
the service has 10 minutes (TimeoutStartSec=) in all."""


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
    return tuple(_signature(layout.changed_path(inst.path)) for inst in scope)


AFTER_RELEASE = 2
"""How many times a run goes again for requests left after it let go of the lock."""


def _requests(scope: Sequence[Installation]) -> tuple[str, ...]:
    """What the request files look like: each request is a new file (written atomically)."""
    return tuple(_signature(request.path(inst.path)) for inst in scope)


def _signature(path: str) -> str:
    try:
        return fileio.signature(path)
    except OSError as e:
        return f"error {e.errno}"


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


def _relabeled(ev: Evaluation, names: Collection[str], linked: Collection[str],
               changes: Sequence[hostsync.Change]) -> list[hostsync.Change]:
    """A merged snapshot labeled again for SELinux, as an update to itself: the overlay
    keeps the labels it read until it is mounted again (a relabel of /var may have
    shown it the store's ``var_lib_t``), and systemd and dbus-daemon keep theirs until
    they reload; so the refresh, the reloads its content needs and a restart of its
    running units, as after an update (docs/platform.md#selinux)."""
    changed = {c.name for c in changes}
    by_app = {s.app_id: s for s in ev.apps}
    return [hostsync.Change(name, s.target, s.target, s.files) for name in sorted(names)
            if name in linked and name not in changed
            and (s := by_app.get(name)) is not None and s.target is not None]


def reconcile(ctx: Context, scope: Sequence[Installation], *, dry_run: bool = False,
              wait: float = LOCK_WAIT, after_transaction: bool = False,
              after_release: int = AFTER_RELEASE) -> Result:
    """Bring the target directory in line with ``scope``, then the host.

    All under the service's lock, waited for at most ``wait`` seconds
    (statefiles.LockUnavailable). An installation that changes during a pass is read
    again, up to MAX_PASSES times: systemd folds a start of flatpak-sysext.service asked
    for while it runs into the running one, and a PathChanged= unit does not look again
    when the service ends, so a change made meanwhile would wait for the next. For the
    same reason, a request that arrived while the run synced the host (a trigger that
    could not get the lock leaves one) makes it go round once more before it lets go of
    the lock; a request is removed only if no newer one replaced it. The nonces of the
    requests a round began with are answered (answer.py) once the run is done.
    ``after_transaction``: a package transaction took the extensions out of ``/usr``;
    the host sync is owed whatever the links do.
    """
    if dry_run:
        ev = evaluate(ctx, scope, save_cache=False)
        return Result(ev, (), ())
    dirs = [d for i in scope for d in (statefiles.directory(i.path),
                                       statefiles.installation_directory(ctx.state_dir, i.path))]
    with statefiles.Locked(ctx.state_dir, dirs, wait):
        served: dict[str, set[str]] = {i.path: set() for i in scope}
        result, seen = _round(ctx, scope, after_transaction, served)
        if _requests(scope) != seen:
            again, seen = _round(ctx, scope, False, served)
            result = Result(again.evaluation, result.applied + again.applied,
                            result.failures + again.failures, again.sync or result.sync)
        if not result.failures:
            for inst, sig in zip(scope, seen):
                if _signature(request.path(inst.path)) == sig:
                    request.clear(inst.path)
        _answer(ctx, scope, result, served)
        told = _announce(ctx, scope, result)
        left = _requests(scope)
    if told:
        busnotify.reread()  # the D-Bus interface signals what changed
    if after_release > 0 and _requests(scope) != left:
        # A trigger that waited for the lock left its request once it was let go: systemd
        # folds the start that request asks for into this run, so it is this run's to
        # serve (its trigger waits for the answer).
        more = reconcile(ctx, scope, wait=wait, after_release=after_release - 1)
        return Result(more.evaluation, result.applied + more.applied,
                      result.failures + more.failures, more.sync or result.sync)
    return result


def _answer(ctx: Context, scope: Sequence[Installation], result: Result,
            served: Mapping[str, set[str]]) -> None:
    """Tell the trigger runs waiting for the requests this run served how it went: per
    installation, the failures that are not another installation's app's, and what is
    merged now. Best effort: a trigger that finds no answer says its request stands."""
    if not any(served.values()):
        return
    merged = hostsync.read_merged(ctx.host_root)
    owner = {s.app_id: s.installation.path for s in result.evaluation.apps}
    for inst in scope:
        if not served[inst.path]:
            continue
        failures = [f.message for f in result.failures
                    if f.action is None or owner.get(f.action.name, inst.path) == inst.path]
        try:
            answer.write(ctx.state_dir, inst.path, served[inst.path], failures, merged,
                         result.sync)
        except OSError:
            continue


def _announce(ctx: Context, scope: Sequence[Installation], result: Result) -> bool:
    """Queue for AppChanged the states this run ends with that differ from those the last
    run recorded (state/announce.py); whether any do. A failure to is no failure of the
    run: clients read the states themselves."""
    try:
        return announce.record(ctx.state_dir, told_states(result), {i.path for i in scope})
    except OSError:
        return False


def told_states(result: Result) -> dict[str, tuple[str, str]]:
    """Each app's installation and state as this run ends, for AppChanged."""
    states: dict[str, tuple[str, str]] = {}
    for s in result.evaluation.apps:
        # An app in two installations: the one that is not the other's conflict is told,
        # whichever installation was read first.
        if s.app_id not in states or states[s.app_id][1] == "conflict":
            states[s.app_id] = (s.installation.path, s.state)
    for action in result.applied:  # the evaluation's states precede what was applied
        if isinstance(action, (Link, Relink)) and action.name in states:
            states[action.name] = (states[action.name][0], "linked")
    return states


def _round(ctx: Context, scope: Sequence[Installation], after_transaction: bool,
           served: Mapping[str, set[str]]) -> tuple[Result, tuple[str, ...]]:
    """Passes until the installations hold still, then host sync; returns what was done
    and the request files as they were when the last pass began. Adds to ``served`` the
    nonces of the requests as each pass began (read after their signatures: a newer
    request read here makes the run go round again, and is served then too)."""
    applied: list[Action] = []
    failures: list[Failure] = []
    relabeled: set[str] = set()
    sync = _host_sync(ctx, scope)
    if sync is not None and after_transaction:
        sync.owe_all()
    for _ in range(MAX_PASSES):
        stamp = _changed_stamp(scope), _requests(scope)
        for inst in scope:
            served[inst.path].update(request.nonces(inst.path))
        ev = evaluate(ctx, scope, save_cache=True)
        failures += _keep_migrated_consent(ctx, ev)
        relabeled |= ev.relabeled & ev.merged
        if sync is not None and (ev.plan.changes_links or relabeled):
            sync.owe()
        pass_failures = apply.apply(ctx.config.target_dir, ev.plan.actions)
        failed = {f.action for f in pass_failures}
        applied += [a for a in ev.plan.actions if a not in failed]
        failures += pass_failures
        if (_changed_stamp(scope), _requests(scope)) == stamp:
            break
    entries = targetdir.scan(ctx.config.target_dir, ctx.installations, ctx.installations,
                             ctx.state_dir)
    failures += _record(ctx, scope, ev, entries)
    report = None
    if sync is not None:
        linked = [e.name for e in entries.values() if e.kind is Kind.MANAGED]
        # Host sync never runs a program that a linked tree provides.
        provides = frozenset().union(*(s.files for s in ev.apps if s.app_id in linked))
        # Whether a package transaction's end may skip its reconcile: every declared
        # extension linked, or held back by no problem a package could change.
        settled = all(a.state == "linked" or not a.problems for a in ev.apps)
        changes = _changes(ev, applied)
        changes += _relabeled(ev, relabeled, linked, changes)
        report = _sync(ctx, sync, changes, linked, provides, settled)
    targets = {e.target for e in entries.values() if e.target is not None}
    for inst in scope:
        try:
            store.collect(ctx.state_dir, inst.path, targets)
        except OSError as e:  # only disk space is lost; the next run tries again
            failures.append(Failure(None, f"{e.filename or inst.path}: cannot remove old "
                                          f"snapshots: {e.strerror or e}"))
    return Result(ev, tuple(applied), tuple(failures), report), stamp[1]


def _keep_migrated_consent(ctx: Context, ev: Evaluation) -> list[Failure]:
    """Keep the consent records the run made (consent.py): what was linked before
    consent existed (once: upgrading must not take running extensions away), the keyring
    pinned at an allow pattern's first link, the commit linked last."""
    store = ctx.consents
    if not store.migrate(ev.migrated):
        return []
    try:
        store.save()
    except OSError as e:
        return [Failure(None, f"{store.path}: cannot save the consent records: "
                              f"{e.strerror or e}")]
    return []


def _host_sync(ctx: Context, scope: Sequence[Installation]) -> hostsync.HostSync | None:
    return (hostsync.HostSync(scope, state_dir=ctx.state_dir, host_root=ctx.host_root,
                              runner=ctx.runner, tools_root=ctx.tools_root)
            if ctx.config.host_sync else None)


def _sync(ctx: Context, sync: hostsync.HostSync, changes: Sequence[hostsync.Change],
          linked: Sequence[str], provides: frozenset[str],
          settled: bool = False) -> SyncReport | None:
    """Run host sync, unless a package manager is writing /usr: merging would make it
    read-only under it, and its post step syncs what is owed
    (docs/reference.md#package-managers)."""
    with pkgtransaction.sync_lock(ctx.host_root):
        busy = pkgtransaction.hold_back(ctx.host_root)
        pkgtransaction.note_settled(ctx.host_root, settled and not busy)
        return sync.run(changes, linked, provides, deferred=busy)


def _record(ctx: Context, scope: Sequence[Installation], ev: Evaluation,
            entries: Mapping[str, Entry]) -> list[Failure]:
    """Record what each of our links provides now (provided.py): the tree this run
    accepted for it, or for a link it held, what was recorded before."""
    failures = []
    accepted = {s.app_id: s for s in ev.apps if s.state in ("linked", "pending")}
    for inst in scope:
        old = provided.load(ctx.state_dir, inst.path)
        new = {}
        for name, entry in entries.items():
            if entry.target is None or targetdir.owner(entry.target, [inst], ctx.state_dir) is None:
                continue
            status = accepted.get(name)
            if status is not None and status.target == entry.target:
                new[name] = (entry.target, status.files)
            elif name in old and old[name][0] == entry.target:
                new[name] = old[name]
        if new != old:
            try:
                provided.save(ctx.state_dir, inst.path, new)
            except OSError as e:
                failures.append(Failure(None, f"{e.filename or inst.path}: cannot record "
                                              f"what the links provide: {e.strerror or e}"))
    return failures


@dataclasses.dataclass(frozen=True)
class Removal:
    """What ``remove_all`` did."""

    applied: tuple[Action, ...]
    failures: tuple[Failure, ...]
    sync: SyncReport | None
    removed_state: tuple[str, ...]
    """The state directories that were removed."""


def remove_all(ctx: Context, wait: float = LOCK_WAIT) -> Removal:
    """Take every link of ours away, sync the host, and remove the trigger's state.

    What a package's removal runs (prerm, %preun), so that nothing of ours is merged
    at the next boot once the tool is gone. Foreign entries are left alone, as always.
    The service's own state directory (consent records among it) stays for a purge to
    remove; the trigger's directories in the installations go, unless a link could not
    be removed (the next run needs them).
    """
    installations = ctx.installations
    dirs = [statefiles.directory(i.path) for i in installations]
    # Taking the lock may make directories: only those that were there count.
    existed = {d for d in dirs if os.path.isdir(d)}
    with statefiles.Locked(ctx.state_dir, [d for d in dirs if d in existed], wait):
        entries = targetdir.scan(ctx.config.target_dir, installations, installations,
                                 ctx.state_dir)
        # Nothing wanted: the planner unlinks every link of ours, and its leftovers.
        actions = list(make_plan({}, entries).actions)
        sync = _host_sync(ctx, installations)
        if sync is not None and actions:
            sync.owe()
        failures = apply.apply(ctx.config.target_dir, actions)
        failed = {f.action for f in failures}
        applied = [a for a in actions if a not in failed]
        changes = [hostsync.Change(a.name, a.old, None) for a in applied
                   if isinstance(a, Unlink)]
        # Removing our package runs this inside dpkg's transaction: _sync defers.
        report = _sync(ctx, sync, changes, [], frozenset()) if sync is not None else None
        removed: list[str] = []
        if not failures:
            for directory in sorted(existed):
                shutil.rmtree(directory)
                removed.append(directory)
    return Removal(tuple(applied), tuple(failures), report, tuple(removed))
