"""The reconcile loop: evaluate, apply the plan under the locks, then sync the host.

``reconcile`` is what ``flatpak-sysext reconcile``, the service and the unsandboxed
trigger run. It reads an installation again while Flatpak's ``.changed`` moves under
it (see docs/ARCHITECTURE.md#sandboxed-triggers) and syncs the host once the links are
right (docs/reference.md#host-sync).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from flatpak_sysext import apply, fileio, hostsync, layout, request, statefiles, targetdir
from flatpak_sysext.apply import Failure
from flatpak_sysext.evaluate import Context, Evaluation, evaluate
from flatpak_sysext.hoststate import SyncReport
from flatpak_sysext.installation import Installation
from flatpak_sysext.plan import Action, Kind, Link, Relink, Unlink

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


def reconcile(ctx: Context, scope: Sequence[Installation], *, dry_run: bool = False) -> Result:
    """Bring the target directory in line with ``scope``, then the host.

    All under the installations' locks. An installation that changes during a pass is
    read again, up to MAX_PASSES times: systemd folds a start of flatpak-sysext.service
    asked for while it runs into the running one, and a PathChanged= unit does not look
    again when the service ends, so a change made meanwhile would wait for the next.
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
            report = sync.run(_changes(ev, applied), linked, provided)
    return Result(ev, tuple(applied), tuple(failures), report)
