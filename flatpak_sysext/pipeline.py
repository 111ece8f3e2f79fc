# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The store's pipeline: how a deployment's declared tree becomes a snapshot.

In order: the app ID and the byte bound (a walk of ``lstat`` sizes), decided before
anything is copied; the copy (store.py); verification of the copy against the
deployment's signed OSTree commit (ostree.py: the commit read from the installation's
repository, its ref binding, its signature against the keyring pinned at consent, every
file and directory of the copy against the commit's checksums); labels; validation of
the copy; consent, decided on the verified copy's manifest; publication. A copy that is
rejected, or that then waits for consent, is discarded. Deny and the remote rules come
before all of it (evaluate.py): nothing is copied for a denied app.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from flatpak_sysext.context import Context
from flatpak_sysext.flatpak.installation import Declared
from flatpak_sysext.policy import remote_verifies
from flatpak_sysext.report import Problem, TreeReport
from flatpak_sysext.rules import codes, release, ruleset, selinux, validate
from flatpak_sysext.state import consent, keyring, store

VERIFY_CODES = frozenset({codes.COMMIT_UNAVAILABLE, codes.SIGNATURE_INVALID,
                          codes.REF_BINDING_MISMATCH, codes.CONTENT_MISMATCH,
                          codes.UNSUPPORTED_REPO})
"""What verification reports: a verdict of the pins of the moment, never cached."""


def validate_at(ctx: Context, app: Declared, root: str) -> TreeReport:
    """The verdict on the tree at ``root`` (the deployment's, or a copy of it), with the
    SELinux types its files get when SELinux labels snapshots here: a labeled snapshot's
    own, else what labeling would give (a deployment judged where it is, by a run that
    writes nothing, is judged as its snapshot would be)."""
    report = validate.validate_tree(root, app.app_id, ctx.host, ctx.elf_target,
                                    host_glibc=ctx.glibc_for(app.app_id))
    contexts = selinux.active(ctx.host_root)
    return selinux.judged(report, selinux.tree_types(root, report.files, contexts,
                                                     ctx.host_root))


def refused_before_copy(app: Declared) -> TreeReport | None:
    """The rejection of what is decided before anything is copied: an app ID that
    cannot name an extension, a tree past ruleset.MAX_BYTES (apparent size, from a walk
    of lstat: a sparse file counts every byte it claims)."""
    assert app.root is not None
    why = release.valid_image_name(app.app_id)
    if why is not None:
        problem = Problem(codes.INVALID_NAME, "",
                          f"the app ID cannot name a system extension: {why}")
        return TreeReport((problem,), (), frozenset())
    large = too_large(app.root)
    return None if large is None else TreeReport((large,), (), frozenset())


def too_large(root: str) -> Problem | None:
    """``tree-too-large`` for a tree past ruleset.MAX_BYTES, else None: what the service
    decides before copying, and ``check`` tells a developer."""
    if store.apparent_size(root) <= ruleset.MAX_BYTES:
        return None
    return Problem(codes.TREE_TOO_LARGE, "",
                   f"its files hold more than {ruleset.MAX_BYTES} bytes (apparent size, "
                   "holes included): the service copies nothing of it")


def snapshot(ctx: Context, app: Declared, target: str,
             consented: Callable[[TreeReport], bool]) -> TreeReport:
    """Copy the tree to the store, verify and judge the copy, and keep it (as
    ``target``) if it is accepted and ``consented`` to."""
    assert app.root is not None
    try:
        copy = store.make(app.root, target)
    except store.Unfaithful:
        report = validate_at(ctx, app, app.root)  # what the copy could not hold rejects it
        if report.accepted:
            raise OSError(errno.EIO, "the tree could not be copied exactly") from None
        return report
    try:
        problem = verify(ctx, app, copy)
        if problem is not None:
            store.discard(copy)
            return TreeReport((problem,), (), frozenset())
        selinux.label_snapshot(copy, ctx.host_root)  # after verification, before validation
        report = validate_at(ctx, app, copy)
    except BaseException:
        store.discard(copy)
        raise
    if report.accepted and consented(report):
        store.publish(copy, target)
    else:
        store.discard(copy)
    return report


def judge_in_place(ctx: Context, app: Declared) -> TreeReport:
    """For a run that writes nothing: verify and judge the deployment where it is, so
    that it says what a run that copies would."""
    assert app.root is not None
    problem = verify(ctx, app, app.root)
    if problem is not None:
        return TreeReport((problem,), (), frozenset())
    return validate_at(ctx, app, app.root)


def _ref(app: Declared) -> str:
    return f"app/{app.app_id}/{app.arch}/{app.branch}"


def _subpath(app: Declared) -> str:
    """The declared tree's path in the commit (``files/...``), from its resolved root."""
    assert app.root is not None
    files = os.path.join(app.installation.path, "app", app.app_id, app.arch, app.branch,
                         app.active_id, "files")
    rel = os.path.relpath(app.root, os.path.realpath(files))
    return "files" if rel == "." else f"files/{rel}"


def verify(ctx: Context, app: Declared, copy: str) -> Problem | None:
    """Why the copy is not what the deployment's commit holds, signed by the pinned
    keyring (or the remote's keyring now, for an app not consented to yet: it waits
    anyway, and approve pins that keyring), if it is not."""
    from flatpak_sysext.flatpak import ostree

    inst = app.installation.path
    repo = os.path.join(inst, "repo")
    record = ctx.consents.records.get(app.app_id)
    origin = record.origin if record is not None else consent.origin_of(inst, app.origin)
    try:
        commit = ostree.read_commit(repo, app.commit)
        collection = origin.collection_id if origin is not None else ""
        ostree.check_binding(commit, _ref(app), collection or None)
        # The sandboxed trigger cannot run gpgv (nothing there is writable for its
        # keyring) and only asks: the service checks the signature before any link.
        if remote_verifies(inst, app.origin) and not ctx.sandboxed:
            # The pinned keyring, else (none pinned, or a run that cannot read it) the
            # remote's now: consent then waits unless that is the very keyring pinned.
            ring = ((ctx.consents.keyring(record.keyring) if record and record.keyring
                     else None) or keyring.remote_keyring(inst, app.origin))
            if not ring:
                return Problem(codes.SIGNATURE_INVALID, "",
                               f"no keyring to check commit {app.commit} with")
            ostree.verify_signature(repo, app.commit, ring)
        ostree.verify_tree(repo, commit, _subpath(app), copy)
    except ostree.VerifyError as e:
        return Problem(e.code, e.path, str(e))
    return None


def commit_timestamp(app: Declared) -> int | None:
    """The timestamp of the deployment's commit, None if it cannot be read."""
    from flatpak_sysext.flatpak import ostree

    try:
        commit = ostree.read_commit(os.path.join(app.installation.path, "repo"), app.commit)
    except (ostree.VerifyError, OSError):
        return None
    return commit.timestamp


def now(ctx: Context, app: Declared, grants: frozenset[str]) -> consent.Now:
    """The app as it is now, for consent.decide."""
    inst = app.installation.path
    ring = keyring.remote_keyring(inst, app.origin)
    return consent.Now(consent.origin_of(inst, app.origin), grants,
                       remote_verifies(inst, app.origin),
                       ctx.consents.offer(ring) if ring is not None else None,
                       app.commit, lambda: commit_timestamp(app))
