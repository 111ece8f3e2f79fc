"""What the commands print: human-readable text and the JSON documents of the schemas."""

from __future__ import annotations

import sys
from typing import Any

from flatpak_sysext import apply, hoststate
from flatpak_sysext.plan import Kind
from flatpak_sysext.reconcile import AppStatus, Context, Evaluation, Result, change_lines
from flatpak_sysext.report import Problem, TreeReport


def _problems(problems: tuple[Problem, ...]) -> list[dict[str, str]]:
    return [p.to_json() for p in problems]


def _syncs(ctx: Context) -> dict[str, hoststate.SyncReport | None]:
    """The last host sync recorded for each installation, by path."""
    return {i.path: hoststate.last_sync(i) for i in ctx.installations}


def app_json(s: AppStatus, merged: frozenset[str],
             last_sync: hoststate.SyncReport | None = None) -> dict[str, Any]:
    """One extension as an object of ``status --json`` (schemas/status.schema.json);
    ``last_sync`` is the last host sync of its installation."""
    return {
        "app": s.app_id,
        "name": s.app_id,
        "state": s.state,
        "installation": s.installation.path,
        "link": s.link,
        "target": s.target,
        "commit": s.commit,
        "origin": s.origin,
        "problems": _problems(s.problems),
        "warnings": _problems(s.warnings),
        "reason": s.reason,
        "merged": s.app_id in merged,
        "host_sync": None if last_sync is None else last_sync.to_json(),
    }


def status_json(ctx: Context, ev: Evaluation) -> list[dict[str, Any]]:
    """The ``status --json`` document: declared extensions, then foreign entries."""
    syncs = _syncs(ctx)
    items = [app_json(s, ev.merged, syncs.get(s.installation.path)) for s in ev.apps]
    apps = {s.app_id for s in ev.apps}
    for entry in sorted(ev.entries.values(), key=lambda e: e.name):
        # A foreign entry named like an app is reported as that app's conflict.
        if entry.kind is Kind.FOREIGN and entry.name not in apps:
            items.append({
                "app": None, "name": entry.name, "state": "foreign", "installation": None,
                "link": f"{ctx.config.target_dir.rstrip('/')}/{entry.name}",
                "target": entry.target, "commit": None, "origin": None, "problems": [],
                "warnings": [], "reason": "not a link into a system installation; left alone",
                "merged": entry.name in ev.merged, "host_sync": None,
            })
    return items


def print_status(ctx: Context, ev: Evaluation) -> None:
    """``status`` for people: one block per extension."""
    if not ev.apps and not ev.entries:
        print(f"No system extensions declared; nothing in {ctx.config.target_dir}.")
    for s in ev.apps:
        merged = ", merged" if s.app_id in ev.merged else ""
        print(f"{s.app_id}: {s.state}{merged}")
        print(f"  installation: {s.installation.path}  commit: {s.commit[:12]}  origin: {s.origin}")
        if s.target:
            print(f"  {s.link} -> {s.target}")
        if s.reason:
            print(f"  {s.reason}")
        for p in s.problems:
            print(f"  {p.code}: {p.path}: {p.message}")
        for w in s.warnings:
            print(f"  warning: {w.code}: {w.path}: {w.message}")
    apps = {s.app_id for s in ev.apps}
    for entry in sorted(ev.entries.values(), key=lambda e: e.name):
        # One with an app's name is that app's conflict, shown above (as in status_json).
        if entry.kind is Kind.FOREIGN and entry.name not in apps:
            print(f"{entry.name}: foreign (not ours, left alone)")
    for line in ev.errors + ev.warnings:
        print(f"warning: {line}")
    for path, report in _syncs(ctx).items():
        if report is not None:
            verdict = "ok" if report.ok else "with problems"
            print(f"last host sync for {path}: {report.time}, {verdict}")
            info, problems = hoststate.summary(report)
            for line in info + problems:
                print(f"  {line}")


def reconcile_json(ctx: Context, result: Result, *, dry_run: bool) -> dict[str, Any]:
    """The ``reconcile --json`` document (schemas/reconcile.schema.json)."""
    ev = result.evaluation
    actions = ev.plan.actions if dry_run else result.applied
    return {
        "dry_run": dry_run,
        "target_dir": ctx.config.target_dir,
        "actions": [apply.describe(a) for a in actions],
        "changes": change_lines(ev, actions),
        "failures": [f.message for f in result.failures],
        "errors": list(ev.errors),
        "warnings": list(ev.warnings),
        "extensions": status_json(ctx, ev),
        "host_sync": None if result.sync is None else result.sync.to_json(),
    }


def print_reconcile(result: Result, *, dry_run: bool) -> None:
    """``reconcile`` for people: the changes, then what went wrong."""
    ev = result.evaluation
    if dry_run:
        for a in ev.plan.actions:
            print(f"would {apply.describe(a)}")
    else:
        for line in change_lines(ev, result.applied):
            print(line)
    info, problems = hoststate.summary(result.sync) if result.sync else ([], [])
    for line in info:
        print(line)
    # Diagnostics go to stderr, so a run that changed nothing prints nothing on stdout.
    for f in result.failures:
        print(f"error: {f.message}", file=sys.stderr)
    for line in ev.errors:
        print(f"error: {line}", file=sys.stderr)
    for line in ev.warnings + tuple(problems):
        print(f"warning: {line}", file=sys.stderr)


def check_json(name: str, path: str, report: TreeReport) -> dict[str, Any]:
    """The ``check --json`` document (schemas/check.schema.json)."""
    return {
        "name": name,
        "path": path,
        "accepted": report.accepted,
        "problems": _problems(report.problems),
        "warnings": _problems(report.warnings),
        "host_glibc": {library: list(versions) for library, versions in report.host_glibc},
    }


def print_check(name: str, path: str, report: TreeReport) -> None:
    """``check`` for people: every problem and warning, then the verdict."""
    for p in report.problems:
        print(f"{p.code}: {p.path or '.'}: {p.message}")
    for w in report.warnings:
        print(f"warning: {w.code}: {w.path or '.'}: {w.message}")
    if report.host_glibc:
        needs = ", ".join(f"{' '.join(v)} from {lib}" for lib, v in report.host_glibc)
        print(f"needs the host's glibc (allow_host_glibc): {needs}")
    verdict = "accepted" if report.accepted else f"rejected ({len(report.problems)} problems)"
    print(f"{name} ({path}): {verdict}")
