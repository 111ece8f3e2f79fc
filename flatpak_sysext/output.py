# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""What the commands print: human-readable text and the JSON documents of the schemas."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Collection, Sequence
from typing import Any

from flatpak_sysext import config, evaluate, statustext
from flatpak_sysext.context import Context
from flatpak_sysext.evaluate import AppStatus, Evaluation
from flatpak_sysext.host import apply, hostcommands, pkgmanagers
from flatpak_sysext.plan import Action, Kind, Link, Relink, Unlink
from flatpak_sysext.reconcile import Removal, Result
from flatpak_sysext.report import Problem, TreeReport
from flatpak_sysext.rules import release, selinux
from flatpak_sysext.state import consent, hoststate, told
from flatpak_sysext.state.consent import FIRST_USE


def _verdict(s: AppStatus) -> str:
    """Why an extension is not linked, in one line."""
    if s.state == "rejected" and s.problems:
        first = s.problems[0]
        extra = len(s.problems) - 1
        more = f" (+{extra} more: flatpak-sysext status)" if extra else ""
        return f"rejected: {first.code} {first.path}: {first.message}{more}"
    return f"{s.state}: {s.reason}" if s.reason else s.state


def _gone(ev: Evaluation, name: str) -> str:
    """Why the link of an app that no longer declares an extension goes."""
    return evaluate.RELEASED if name in ev.released else "no longer installed"


def change_lines(ev: Evaluation, actions: Sequence[Action], *, requested: bool = False,
                 judged: bool = True) -> list[str]:
    """One short line per extension whose state changes (docs/reference.md#trigger-contract),
    and with ``judged``, per app newly found rejected, denied or waiting."""
    by_app = {s.app_id: s for s in ev.apps}
    lines: list[str] = []
    done: set[str] = set()
    suffix = " (requested; flatpak-sysext.service applies it)" if requested else ""
    for action in actions:
        s = by_app.get(action.name)
        if isinstance(action, Link) and s is not None:
            # Trust on first use is said where it happens (docs/reference.md#consent).
            pin = f", {s.consent}" if s.consent and s.consent.endswith(FIRST_USE) else ""
            lines.append(f"{s.app_id}: linked, commit {s.commit[:12]}{pin}{suffix}")
        elif isinstance(action, Relink) and s is not None:
            lines.append(f"{s.app_id}: relinked to commit {s.commit[:12]}{suffix}")
        elif isinstance(action, Unlink):
            why = _verdict(s) if s is not None else _gone(ev, action.name)
            lines.append(f"{action.name}: unlinked{suffix}, {why}")
        else:
            continue
        done.add(action.name)
    for s in ev.apps:
        if judged and s.app_id not in done and s.newly_judged and s.state in ("rejected", "denied",
                                                                    "waiting"):
            lines.append(f"{s.app_id}: {_verdict(s)}")
    return lines


def told_lines(ev: Evaluation, acted: Collection[str], before: told.Told) -> list[str]:
    """For the trigger: one line per app whose commit or state changed since the output
    last told it (``before``), other than those in ``acted`` (this run's actions, which
    :func:`change_lines` tells): what the service or ``approve`` did meanwhile, or what a
    new judgement found. An app still installed is said to be unlinked only if it was
    told as linked: a link asked of the service may never have been made, and its state
    shows what became of it. An app that is gone and whose link was linked or asked for
    is said to be unlinked: the service carries a request out within moments."""
    lines: list[str] = []
    for s in ev.apps:
        was = before.apps.get(s.app_id)
        # A pending link is an action of this run, or a failure it reports itself.
        if s.app_id in acted or s.state == "pending" or was == (s.commit, s.state):
            continue
        if s.state == "linked":
            if was == (s.commit, told.REQUESTED):
                continue  # told when it was asked of the service
            merged = ("merged" if s.app_id in ev.merged
                      else "not merged yet (flatpak-sysext status)")
            lines.append(f"{s.app_id}: relinked to commit {s.commit[:12]}, {merged}"
                         if was is not None and was[1] in (told.LINKED, told.REQUESTED)
                         else f"{s.app_id}: linked, commit {s.commit[:12]}, {merged}")
        else:
            lines.append(f"{s.app_id}: unlinked, {_verdict(s)}"
                         if was is not None and was[1] == told.LINKED
                         else f"{s.app_id}: {_verdict(s)}")
    declared = {s.app_id for s in ev.apps}
    for name, (_, state) in sorted(before.apps.items()):
        if name in declared or name in acted or name in ev.entries:
            continue
        if state in (told.LINKED, told.REQUESTED):
            lines.append(f"{name}: unlinked, {_gone(ev, name)}")
    return lines


def waiting_lines(ev: Evaluation, said: Sequence[str]) -> list[str]:
    """For the trigger: every app that waits for consent, in one short line each, on
    every transaction (a waiting app must stay visible), unless ``said`` already has a
    line about it."""
    return [f"{s.app_id}: waiting for consent: flatpak-sysext approve {s.app_id} "
            "(or the desktop's prompt)" for s in ev.apps
            if s.state == "waiting" and not any(x.startswith(f"{s.app_id}: ") for x in said)]


def standing(cfg: config.Config) -> list[str]:
    """The warning every run of this configuration deserves (a target directory that
    systemd-sysext does not search), apart from the news of any one run."""
    warning = config.target_dir_warning(cfg)
    return [warning] if warning else []


@dataclasses.dataclass(frozen=True)
class Lines:
    """What a run has to tell, sorted by where it goes."""

    changes: list[str]
    """One line per extension whose state changed."""
    info: list[str]
    """What host sync did."""
    errors: list[str]
    """What failed: the run did not do all it had to."""
    warnings: list[str]
    """What went wrong without failing the run (the evaluation's and host sync's)."""

    def __bool__(self) -> bool:
        return bool(self.changes or self.info or self.errors or self.warnings)


def result_lines(result: Result, before: told.Told | None = None,
                 last_sync: hoststate.SyncReport | None = None) -> Lines:
    """The news of a reconcile: changes, host sync, failures, errors, warnings.

    With ``before`` (the trigger), also what changed since the output last told it
    (:func:`told_lines`). Without the :func:`standing` warning, which only the caller
    knows whether to repeat.
    """
    ev = result.evaluation
    lines = Lines(change_lines(ev, result.applied, judged=before is None), [],
                  [f.message for f in result.failures] + list(ev.errors), list(ev.warnings))
    return _with_news(lines, ev, result.applied, result.sync, before, last_sync)


def request_lines(ev: Evaluation, actions: Sequence[Action], before: told.Told,
                  last_sync: hoststate.SyncReport | None) -> Lines:
    """The news of a sandboxed trigger run that asked the service for ``actions``, and
    what changed since the output last told it (:func:`told_lines`)."""
    lines = Lines(change_lines(ev, actions, requested=True, judged=False), [],
                  list(ev.errors), list(ev.warnings))
    return _with_news(lines, ev, (), None, before, last_sync)


def _with_news(lines: Lines, ev: Evaluation, applied: Sequence[Action],
               sync: hoststate.SyncReport | None, before: told.Told | None,
               last_sync: hoststate.SyncReport | None) -> Lines:
    """``lines`` with the told news (of the apps neither ``applied`` by any pass of this
    run nor in its last plan) and the host sync: this run's, or else the last one if it
    ran since the output last spoke and there is news (it is what synced it: a link and
    its host sync are one run's; an output that never spoke has not told it either, as
    when the service, started by Flatpak's ``.changed``, linked before the first trigger)."""
    acted = {a.name for a in (*applied, *ev.plan.actions)}
    news = [] if before is None else told_lines(ev, acted, before)
    if (sync is None and news and before is not None
            and last_sync is not None and last_sync.time != before.sync):
        sync = last_sync
    info, problems = hoststate.summary(sync) if sync else ([], [])
    return Lines(lines.changes + news, info + lines.info, lines.errors,
                 lines.warnings + problems)


def _problems(problems: tuple[Problem, ...]) -> list[dict[str, str]]:
    return [p.to_json() for p in problems]


def _syncs(ctx: Context) -> dict[str, hoststate.SyncReport | None]:
    """The last host sync recorded for each installation, by path."""
    return {i.path: hoststate.last_sync(i, ctx.state_dir) for i in ctx.installations}


def app_json(s: AppStatus, merged: frozenset[str],
             last_sync: hoststate.SyncReport | None = None,
             remote: consent.Origin | None = None,
             hints: Sequence[str] = ()) -> dict[str, Any]:
    """One extension as an object of ``status --json`` (schemas/status.schema.json);
    ``last_sync`` is the last host sync of its installation, ``remote`` where it comes
    from (None: its remote cannot be read), ``hints`` what would help it along."""
    return {
        "app": s.app_id,
        "name": s.app_id,
        "state": s.state,
        "installation": s.installation.path,
        "link": s.link,
        "target": s.target,
        "commit": s.commit,
        "origin": s.origin,
        "remote": None if remote is None else remote.to_json(),
        "problems": _problems(s.problems),
        "warnings": _problems(s.warnings),
        "reason": s.reason,
        "merged": s.app_id in merged,
        "host_sync": None if last_sync is None else last_sync.to_json(),
        "manifest": s.manifest.to_json(),
        "grants": sorted(s.manifest.grants()),
        "consent": s.consent,
        "new_grants": sorted(s.new_grants),
        "hints": list(hints),
    }


PENDING = "not linked yet: flatpak-sysext reconcile links it (the service does after every " \
          "Flatpak transaction and at boot)"
"""The hint of a ``pending`` app: valid and consented to, its link not made yet."""
UNIT_STATES = {
    "disabled": "unit {unit} is not enabled: it runs only when something starts it "
                "(systemctl enable {unit})",
    "masked": "unit {unit} is masked: it never starts (systemctl unmask {unit})",
}
"""What ``systemctl is-enabled`` answers that keeps a merged unit from running at boot."""


def unit_hints(units: Sequence[str], runner: hostcommands.Runner) -> list[str]:
    """For a merged extension's ``units``: those that are not enabled or are masked, as
    ``systemctl is-enabled`` says (one call per unit; a template is never enabled as
    such, and systemd's errors say nothing about the extension)."""
    systemctl = hostcommands.tool("systemctl")
    if systemctl is None:
        return []
    hints = []
    for unit in units:
        if "@." in unit:
            continue
        _code, out = runner((systemctl, "is-enabled", unit))
        said = out.strip().splitlines()
        if said and said[-1] in UNIT_STATES:
            hints.append(UNIT_STATES[said[-1]].format(unit=unit))
    return hints


def _hints(ctx: Context, s: AppStatus, merged: frozenset[str],
           runner: hostcommands.Runner) -> list[str]:
    if s.state == "pending":
        return [PENDING]
    if s.state == "linked" and s.app_id in merged and ctx.host_root == "/":
        return unit_hints([u.name for u in s.manifest.units], runner)
    return []


def global_warnings(ctx: Context, ev: Evaluation) -> list[str]:
    """What every ``status`` warns of, apart from any one app: the evaluation's errors
    and warnings, the configuration's, missing package manager hooks."""
    hooks = [f"package manager hooks for {manager} missing: {', '.join(missing)} "
             f"({manager} fails while an extension is merged)"
             for manager, missing in pkgmanagers.hook_status(ctx.host_root) if missing]
    return [*ev.errors, *standing(ctx.config), *ev.warnings, *hooks]


def status_json(ctx: Context, ev: Evaluation, *, warnings: bool = True,
                runner: hostcommands.Runner = hostcommands.run_command,
                ) -> list[dict[str, Any]]:
    """The ``status --json`` document: declared extensions, then foreign entries, then
    (with ``warnings``) the :func:`global_warnings`, each an item of state ``warning``."""
    syncs = _syncs(ctx)
    remotes: dict[tuple[str, str], consent.Origin | None] = {}
    items = []
    for s in ev.apps:
        key = (s.installation.path, s.origin)
        if key not in remotes:
            remotes[key] = consent.origin_of(*key)
        items.append(app_json(s, ev.merged, syncs.get(s.installation.path), remotes[key],
                              _hints(ctx, s, ev.merged, runner)))
    for s, item in zip(ev.apps, items):
        labels = selinux.labels_state(s.target, ctx.host_root) \
            if s.state == "linked" and s.target else None
        if labels is not None:
            item["selinux_labels"] = labels
        if (line := _selinux_app_line(ctx, s)) is not None:
            item["selinux"] = line
    apps = {s.app_id for s in ev.apps}
    for entry in sorted(ev.entries.values(), key=lambda e: e.name):
        # A foreign entry named like an app is reported as that app's conflict.
        if entry.kind is Kind.FOREIGN and entry.name not in apps:
            items.append({
                "app": None, "name": entry.name, "state": "foreign", "installation": None,
                "link": f"{ctx.config.target_dir.rstrip('/')}/{entry.name}",
                "target": entry.target, "commit": None, "origin": None, "remote": None,
                "problems": [], "warnings": [],
                "reason": "not a link into a system installation; left alone",
                "merged": entry.name in ev.merged, "host_sync": None, "manifest": None,
                "grants": [], "consent": None, "new_grants": [], "hints": [],
            })
    if warnings:
        items.extend({"app": None, "name": None, "state": "warning", "installation": None,
                      "link": None, "target": None, "problems": [], "reason": line}
                     for line in global_warnings(ctx, ev))
    return items


def _selinux_lines(ctx: Context) -> list[str]:
    """SELinux's mode and policy, and the systemd < 257 limit."""
    if not selinux.enabled(ctx.host_root):
        return []
    version = ctx.host.systemd or release.host_systemd_version()
    return selinux.status_lines(version[0] if version else None, ctx.host_root)


def _selinux_app_line(ctx: Context, s: AppStatus) -> str | None:
    """An app's SELinux labels and types (selinux.app_line); None with SELinux off."""
    linked = s.target if s.state == "linked" else None
    return selinux.app_line(linked, s.manifest.selinux_types, ctx.host_root)


def print_status(ctx: Context, ev: Evaluation) -> None:
    """``status`` for people: one block per extension (statustext.py), then what only
    root sees: SELinux, the package manager hooks in place, the last host syncs."""
    nothing = f"No system extensions declared; nothing in {ctx.config.target_dir}."
    for line in statustext.status_lines(status_json(ctx, ev), nothing):
        print(line)
    for line in _selinux_lines(ctx):
        print(line)
    for manager, missing in pkgmanagers.hook_status(ctx.host_root):
        if not missing:
            print(f"package manager hooks for {manager}: in place")
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
        "warnings": standing(ctx.config) + list(ev.warnings),
        "extensions": status_json(ctx, ev, warnings=False),
        "host_sync": None if result.sync is None else result.sync.to_json(),
    }


def print_reconcile(ctx: Context, result: Result, *, dry_run: bool) -> None:
    """``reconcile`` for people: the changes and what host sync did on stdout, then what
    went wrong on stderr (a run that changed nothing prints nothing on stdout)."""
    ev = result.evaluation
    lines = result_lines(result)
    if dry_run:
        lines = dataclasses.replace(lines, changes=[f"would {apply.describe(a)}"
                                                    for a in ev.plan.actions])
    for line in lines.changes + lines.info:
        print(line)
    for line in lines.errors:
        print(f"error: {line}", file=sys.stderr)
    for line in standing(ctx.config) + lines.warnings:
        print(f"warning: {line}", file=sys.stderr)


def print_removal(removal: Removal) -> None:
    """``remove-all`` for people: what went, what host sync did, what failed."""
    for action in removal.applied:
        if isinstance(action, Unlink):
            print(f"{action.name}: unlinked, flatpak-sysext is being removed")
    info, problems = hoststate.summary(removal.sync) if removal.sync else ([], [])
    for line in info:
        print(line)
    for path in removal.removed_state:
        print(f"removed {path}")
    for f in removal.failures:
        print(f"error: {f.message}", file=sys.stderr)
    for line in problems:
        print(f"warning: {line}", file=sys.stderr)


def print_transaction_end(ctx: Context, result: Result) -> None:
    """The end of a package transaction: what changed and what went wrong; a host sync
    that went well says nothing (it follows every package transaction). All on stderr:
    dnf5's actions plugin reads a hook's stdout as commands."""
    lines = result_lines(result)
    for line in lines.changes:
        print(f"flatpak-sysext: {line}", file=sys.stderr)
    for line in lines.errors:
        print(f"flatpak-sysext: error: {line}", file=sys.stderr)
    for line in standing(ctx.config) + lines.warnings:
        print(f"flatpak-sysext: warning: {line}", file=sys.stderr)


def check_json(name: str, path: str, report: TreeReport,
               os_release: str | None,
               selinux_types: dict[str, str] | None = None) -> dict[str, Any]:
    """The ``check --json`` document (schemas/check.schema.json); ``os_release``: the
    file compatibility was judged against (None: none was found); ``selinux_types``:
    what the host's SELinux policy would label each file, None where there is none."""
    return {
        "name": name,
        "path": path,
        "os_release": os_release,
        "accepted": report.accepted,
        "problems": _problems(report.problems),
        "warnings": _problems(report.warnings),
        "host_glibc": {library: list(versions) for library, versions in report.host_glibc},
        "manifest": report.manifest.to_json(),
        "grants": sorted(report.manifest.grants()),
        "selinux_types": selinux.NOT_JUDGED if selinux_types is None else selinux_types,
    }


def print_check(name: str, path: str, report: TreeReport, os_release: str | None) -> None:
    """``check`` for people: every problem and warning, then the verdict and the
    os-release it was judged against."""
    for p in report.problems:
        print(f"{p.code}: {p.path or '.'}: {p.message}")
    for w in report.warnings:
        print(f"warning: {w.code}: {w.path or '.'}: {w.message}")
    if report.host_glibc:
        needs = ", ".join(f"{' '.join(v)} from {lib}" for lib, v in report.host_glibc)
        print(f"needs the host's glibc (allow_host_glibc): {needs}")
    grants = sorted(report.manifest.grants())
    if grants:
        print("merged, it gets from the host:")
        for line in grants:
            print(f"  {line}")
    print(f"compatibility judged against {os_release or 'no os-release (none found)'}")
    n = len(report.problems)
    verdict = "accepted" if report.accepted else f"rejected ({n} problem{'s' * (n != 1)})"
    print(f"{name} ({path}): {verdict}")
