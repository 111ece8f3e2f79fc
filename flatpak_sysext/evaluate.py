# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Evaluation: read the installations and the target directory, judge, decide, plan.

``evaluate`` writes nothing but the cache. ``status``, ``reconcile`` (and its
``--dry-run``) and the sandboxed trigger all use it, so they can never disagree about
what a run would do. Every app's state is decided in one place, :func:`_decide`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Callable, Mapping, Sequence

from flatpak_sysext import pipeline, policy
from flatpak_sysext.context import Context
from flatpak_sysext.flatpak.installation import (
    Declared,
    Installation,
    Unreadable,
    read_installation,
    still_resolved,
    untrusted,
)
from flatpak_sysext.host import targetdir
from flatpak_sysext.host.hostsync import read_merged
from flatpak_sysext.plan import Entry, Kind, Plan, blocks, make_plan
from flatpak_sysext.report import Problem, TreeReport
from flatpak_sysext.rules import codes, placement, selinux, validate
from flatpak_sysext.rules.manifest import Manifest
from flatpak_sysext.state import cache, consent, keyring, provided, store


@dataclasses.dataclass(frozen=True)
class AppStatus:
    """The state of one declared extension, as ``status`` shows it."""

    app_id: str
    installation: Installation
    state: str
    """``linked``, ``pending``, ``waiting`` (for consent), ``rejected``, ``denied`` or
    ``conflict``."""
    link: str
    target: str | None
    """Where the link should point (for a valid extension) or points (otherwise)."""
    commit: str
    origin: str
    problems: tuple[Problem, ...]
    warnings: tuple[Problem, ...]
    reason: str | None = None
    """Why it is denied or in conflict."""
    newly_judged: bool = False
    """Validated in this run rather than taken from the cache."""
    files: frozenset[str] = frozenset()
    """The tree's files (``TreeReport.files``): what host sync reloads for."""
    manifest: Manifest = dataclasses.field(default_factory=Manifest)
    """What the tree gives the host (``TreeReport.manifest``)."""
    consent: str | None = None
    """What consents to it (an ``allow`` pattern, ``approve``, ``migrated``), if anything."""
    new_grants: frozenset[str] = frozenset()
    """For a ``waiting`` app: what it would grant beyond what was consented to."""


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What a run found and decided, before anything is changed."""

    apps: tuple[AppStatus, ...]
    entries: Mapping[str, Entry]
    plan: Plan
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    merged: frozenset[str]
    released: frozenset[str] = frozenset()
    """Apps that could not be read whose links are removed all the same (RELEASED says why)."""
    migrated: Mapping[str, consent.Record] = dataclasses.field(default_factory=dict)
    """Consent records a run keeps for the apps it links (consent.Decision.keep)."""
    relabeled: frozenset[str] = frozenset()
    """Apps whose snapshot this run labeled again for SELinux (selinux.keep_labels)."""


def _judge(ctx: Context, app: Declared, verdicts: cache.Cache, snapshots: bool,
           consented: Callable[[TreeReport], bool],
           relabeled: set[str]) -> tuple[TreeReport, bool, str]:
    """The verdict on an app's tree, whether it was reached in this run, and the link
    target: its snapshot (pipeline.py), made here if ``snapshots`` and it is missing and
    kept if ``consented`` to.

    A snapshot exists only if it was verified and accepted when it was made, and nobody
    but root can change it: a cached verdict stands for it. Without ``snapshots`` (a
    run that writes nothing) a tree not judged yet is judged where it is.
    """
    key = cache.Key(f"{app.arch}/{app.branch}/{app.active_id}", app.declared_path)
    target = os.path.join(store.directory(ctx.state_dir, app.installation.path),
                          store.snapshot_name(app.app_id, key.deployment, key.declared_path))
    report = verdicts.get(app.app_id, key)
    if app.root is None:
        # Resolving the declared path failed in this run: that is the verdict, whatever
        # the cache remembers of the same deployment (its layout may have changed since).
        failed = TreeReport(problems=app.problems, warnings=(), files=frozenset())
        if report == failed:
            return report, False, target
        report = failed
    else:
        have = os.path.isdir(target)
        # A policy update or a relabel of /var: label it again (and, merged, refresh).
        if have and snapshots and selinux.keep_labels(target, ctx.host_root):
            relabeled.add(app.app_id)
        if report is not None and (not report.accepted or have or not snapshots):
            return report, False, target
        if have:  # made under other rules (the cache's fingerprint changed): judge it again
            report = pipeline.validate_at(ctx, app, target)
        else:
            report = pipeline.refused_before_copy(app) or (
                pipeline.snapshot(ctx, app, target, consented) if snapshots
                else pipeline.judge_in_place(ctx, app))
    if not {p.code for p in report.problems} & pipeline.VERIFY_CODES:
        verdicts.put(app.app_id, key, report)  # a verdict of the pins of the moment: not kept
    return report, True, target


Judged = tuple[Declared, TreeReport, bool, str]
"""An app, its tree's verdict, whether that was reached in this run, and its link target."""


def evaluate(ctx: Context, scope: Sequence[Installation], *, save_cache: bool) -> Evaluation:
    """Read the installations in ``scope`` and the target directory, decide, and plan."""
    errors: list[str] = []
    warnings: list[str] = []
    held: set[str] = set()
    judged: list[Judged] = []
    relabeled: set[str] = set()
    entries = targetdir.scan(ctx.config.target_dir, scope, ctx.installations, ctx.state_dir)
    for inst in scope:
        verdicts = cache.Cache(inst, ctx.fingerprint(),
                               None if ctx.sandboxed else ctx.state_dir)
        verdicts.load()
        if verdicts.warning:
            warnings.append(verdicts.warning)
        found = read_installation(inst, verdicts.scan)
        verdicts.retain({a.app_id for a in found})
        distrust = untrusted(inst)
        for app in found:
            if isinstance(app, Unreadable):
                errors.append(f"{app.app_id}: cannot read {inst.path}: {app.reason}")
                held.add(app.app_id)
                continue
            if distrust is not None:  # whatever its tree holds: not cached
                problem = Problem(codes.NOT_OWNED_BY_ROOT, "", f"the installation: {distrust}")
                judged.append((app, TreeReport((problem,), (), frozenset()), False, ""))
                continue
            if policy.denial(ctx.config, inst.path, app.app_id, app.origin) is not None:
                judged.append((app, TreeReport((), (), frozenset()), False, ""))
                continue  # decided before anything is copied or judged (_decide says why)
            _upgrade_consent(ctx, app, entries)
            try:
                report, fresh, target = _judge(
                    ctx, app, verdicts, save_cache and not ctx.sandboxed,
                    functools.partial(_consented, ctx, app, entries), relabeled)
            except OSError as e:
                # An I/O error or a tree changing under us says nothing about the
                # extension: hold its link as it is, cache nothing, and report it.
                errors.append(f"{app.app_id}: cannot validate {app.root}: {e.strerror or e}")
                held.add(app.app_id)
                continue
            judged.append((app, report, fresh, target))
        if save_cache:
            try:
                verdicts.save()
            except OSError as e:
                # The links may still be right, but the run did not do all it had to
                # (exit 1 when an operation failed), and the disk needs a look.
                errors.append(f"{verdicts.path}: cannot save the cache: {e.strerror}")

    released = frozenset(name for name in held if name in entries
                         and entries[name].kind is Kind.MANAGED
                         and not _still_pinned(entries[name]))
    merged = read_merged(ctx.host_root)
    shown = _merged_files(ctx, scope, judged, entries, merged)
    statuses, wanted, unplaced, migrated = _decide(ctx, judged, entries, shown)
    for app_id, why in unplaced.items():
        errors.append(f"{app_id}: cannot check where its files would land: {why}")
        held.add(app_id)
    plan = make_plan(wanted, entries, held - released)
    if ctx.consents.warning:
        warnings.append(ctx.consents.warning)
    return Evaluation(tuple(statuses), entries, plan, tuple(errors), tuple(warnings),
                      merged, released, migrated, frozenset(relabeled))


RELEASED = ("it cannot be read or validated, and its link no longer resolves inside the "
            "installation")


def _still_pinned(entry: Entry) -> bool:
    """Whether a link of ours still resolves to exactly where it points.

    Links are made to resolved paths, so this fails only when something on the way
    became a symlink, such as a deployment replaced by one that leads elsewhere: then
    holding the link of an app that cannot be read would merge a tree nobody validated.
    """
    return entry.target is not None and still_resolved(entry.target)


def _conflict_reason(entry: Entry) -> str:
    if entry.kind is Kind.OTHER:
        return f"{entry.name} is linked from another installation ({entry.target})"
    return f"{entry.name} already exists in the target directory and is not ours"


def _status(ctx: Context, app: Declared, report: TreeReport, state: str, target: str | None,
            fresh: bool, reason: str | None = None,
            problems: tuple[Problem, ...] | None = None,
            decision: consent.Decision | None = None) -> AppStatus:
    return AppStatus(
        app_id=app.app_id, installation=app.installation, state=state,
        link=os.path.join(ctx.config.target_dir, app.app_id), target=target,
        commit=app.commit, origin=app.origin,
        problems=report.problems if problems is None else problems,
        warnings=report.warnings, reason=reason, newly_judged=fresh, files=report.files,
        manifest=report.manifest, consent=decision.by if decision else None,
        new_grants=decision.new_grants if decision else frozenset())


def _merged_files(ctx: Context, scope: Sequence[Installation], judged: Sequence[Judged],
                  entries: Mapping[str, Entry], merged: frozenset[str]) -> frozenset[str]:
    """The paths our merged links show in ``/usr``: exempt from ``shadows-host-file``.

    For each merged link of ours, what the service recorded when it made that very link
    (provided.py): never the files of a tree an update brings, or an update could
    shadow any host file its merged predecessor did not have. A link made before the
    record existed: the files of the tree it points at, judged in this run if need be.
    """
    records = {inst: provided.load(ctx.state_dir, inst.path) for inst in scope}
    trees = {target: report.files for _, report, _, target in judged}
    shown: set[str] = set()
    for name in sorted(merged):
        entry = entries.get(name)
        if entry is None or entry.kind is not Kind.MANAGED or entry.target is None:
            continue
        inst = targetdir.owner(entry.target, scope, ctx.state_dir)
        recorded = records[inst].get(name) if inst is not None else None
        if recorded is not None and recorded[0] == entry.target:
            shown |= recorded[1]
        elif entry.target in trees:
            shown |= trees[entry.target]
        else:
            with contextlib.suppress(OSError):  # Gone: nothing it had is exempt.
                shown |= validate.validate_tree(entry.target, name, ctx.host,
                                                ctx.elf_target).files
    return frozenset(shown)


def _decide(ctx: Context, judged: Sequence[Judged], entries: Mapping[str, Entry],
            shown: frozenset[str],
            ) -> tuple[list[AppStatus], dict[str, str], dict[str, str],
                       dict[str, consent.Record]]:
    """Every app's state, the links wanted, the apps whose placement could not be
    checked (the host could not be read; app ID -> why), and the consent a first run
    keeps for what was linked before: the one place states are decided.

    In order: an app also installed in an installation listed earlier is a conflict
    (the first takes precedence); a rejected tree is ``rejected``; policy may deny;
    restricted content not allowed rejects; without consent it is ``waiting`` (its
    link, an older version's, goes); the placement checks may reject; a name the target
    directory holds and is not ours is a conflict; the rest is wanted, ``linked`` if its
    link is already right. Extensions already linked are placed first, so a newcomer
    cannot take a file away from one that is in use.
    """
    cfg = ctx.config
    statuses: list[AppStatus] = []
    candidates: list[Judged] = []
    first: dict[str, Installation] = {}
    decisions: dict[str, consent.Decision] = {}
    for app, report, fresh, target in judged:
        if app.app_id in first:
            where = first[app.app_id].path
            statuses.append(_status(ctx, app, report, "conflict", None, fresh,
                                    f"also installed in {where}, which takes precedence"))
            continue
        first[app.app_id] = app.installation
        if not report.accepted:
            statuses.append(_status(ctx, app, report, "rejected", None, fresh))
            continue
        why = policy.denial(cfg, app.installation.path, app.app_id, app.origin)
        if why is not None:
            statuses.append(_status(ctx, app, report, "denied", None, fresh, why))
            continue
        # Restricted content (contain.py) is refused unless host_classes allows its class.
        from flatpak_sysext.rules import contain

        refused = contain.restricted_problems(report.restricted, cfg.classes_allowed(app.app_id))
        if refused:
            statuses.append(_status(ctx, app, report, "rejected", None, fresh,
                                    problems=report.problems + tuple(refused)))
            continue
        decision = _consent(ctx, app, report, entries)
        if decision.by is None:
            statuses.append(_status(ctx, app, report, "waiting", None, fresh,
                                    decision.waiting, decision=decision))
            continue
        decisions[app.app_id] = decision
        candidates.append((app, report, fresh, target))

    def linked_first(item: Judged) -> tuple[bool, str]:
        entry = entries.get(item[0].app_id)
        return (entry is None or entry.kind is not Kind.MANAGED, item[0].app_id)

    candidates.sort(key=linked_first)
    placed = placement.Placed()
    wanted: dict[str, str] = {}
    unplaced: dict[str, str] = {}
    for app, report, fresh, target in candidates:
        dirs = placement.directories(report.files)
        host_root = None if cfg.allow_host_shadowing else ctx.host_root
        try:
            problems = placement.check(report.files, host_root, shown,
                                       placed.sharing(report.files, dirs))
        except OSError as e:
            # Says nothing about the extension: like an I/O error while validating,
            # its link is held as it is, and the others go on.
            unplaced[app.app_id] = f"{e.filename or ''}: {e.strerror or e}"
            continue
        if problems:
            statuses.append(_status(ctx, app, report, "rejected", None, fresh,
                                    problems=report.problems + tuple(problems)))
            continue
        placed.add(app.app_id, report.files, dirs)
        entry = entries.get(app.app_id)
        if blocks(entry):
            assert entry is not None
            statuses.append(_status(ctx, app, report, "conflict", target, fresh,
                                    _conflict_reason(entry), decision=decisions[app.app_id]))
            continue
        wanted[app.app_id] = target
        state = "linked" if entry is not None and entry.target == target else "pending"
        statuses.append(_status(ctx, app, report, state, target, fresh,
                                decision=decisions[app.app_id]))
    statuses.sort(key=lambda s: s.app_id)
    kept = {a: d.keep for a, d in decisions.items() if d.keep is not None and a in wanted}
    return statuses, wanted, unplaced, kept


def _consent(ctx: Context, app: Declared, report: TreeReport,
             entries: Mapping[str, Entry]) -> consent.Decision:
    """Consent for ``app`` whose tree's verdict is ``report`` (consent.decide)."""
    entry = entries.get(app.app_id)
    return consent.decide(policy.allowed_by(ctx.config, app.app_id, app.origin),
                          ctx.consents, app.app_id,
                          pipeline.now(ctx, app, report.manifest.grants()),
                          entry is not None and entry.kind is Kind.MANAGED)


def _consented(ctx: Context, app: Declared, entries: Mapping[str, Entry],
               report: TreeReport) -> bool:
    return _consent(ctx, app, report, entries).by is not None


def _upgrade_consent(ctx: Context, app: Declared, entries: Mapping[str, Entry]) -> None:
    """Bring a format-1 consent record of ``app`` to the current format (consent.py):
    with the remote's keyring now, the grants and commit of the snapshot linked now."""
    record = ctx.consents.records.get(app.app_id)
    if record is None or record.grant_model != 1:
        return
    entry = entries.get(app.app_id)
    grants, commit = None, ""
    if entry is not None and entry.kind is Kind.MANAGED and entry.target is not None:
        with contextlib.suppress(OSError):
            grants = pipeline.validate_at(ctx, app, entry.target).manifest.grants()
        active = store.snapshot_name(app.app_id, f"{app.arch}/{app.branch}/{app.active_id}",
                                     app.declared_path)
        if os.path.basename(entry.target) == active:
            commit = app.commit
    ring = keyring.remote_keyring(app.installation.path, app.origin)
    ctx.consents.upgrade(app.app_id, ring, grants, commit)
