# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Consent given by a person: ``approve`` or ``revoke`` one app under the service's lock,
then reconcile. The command line (``flatpak-sysext approve``) and the D-Bus interface
(``Approve``, ``Revoke``) both call :func:`consent_app`; see docs/reference.md#consent.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flatpak_sysext.context import Context
    from flatpak_sysext.evaluate import AppStatus
    from flatpak_sysext.reconcile import Result


class Refused(Exception):
    """Why consent was not changed: one line for people, and the command line's exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Changed(Refused):
    """Approve by digest, of an app that no longer grants, or comes from, what it names."""


def refused_why(app: AppStatus) -> str:
    """Why ``approve`` has nothing to consent to, as `` (...)``: what consents already,
    the policy rule that denies, or the problem codes that reject."""
    if app.consent is not None:
        return f" ({app.consent})"
    if app.state == "rejected" and app.problems:
        codes = ", ".join(sorted({p.code for p in app.problems}))
        return f" ({codes}; flatpak-sysext status says where)"
    return f" ({app.reason})" if app.reason else ""


def consent_app(ctx: Context, command: str, app_id: str, digest: str | None = None,
                by: str = "") -> tuple[list[str], Result]:
    """Approve or revoke ``app_id`` under the service's lock, then reconcile; returns
    what to tell and the reconcile's result. Raises Refused when it refuses. With
    ``digest``, approve only if what the app grants, from where, is still what it names
    (consent.grants_digest): the D-Bus interface's Approve. ``by``: who consents, for
    the record (default: this process's user)."""
    from flatpak_sysext import policy
    from flatpak_sysext.evaluate import evaluate
    from flatpak_sysext.reconcile import LOCK_WAIT, reconcile
    from flatpak_sysext.rules import manifest
    from flatpak_sysext.state import consent, keyring, statefiles

    app = next((s for s in evaluate(ctx, ctx.installations, save_cache=False).apps
                if s.app_id == app_id), None)
    origin = ring = None
    signed = False
    if command == "approve":
        if app is None:
            raise Refused(f"{app_id}: not installed in a system installation, or declares "
                          "no system extension", 2)
        if app.state in ("rejected", "denied") or app.consent is not None:
            raise Refused(f"{app_id} is {app.state}{refused_why(app)}; nothing to consent to", 1)
        origin = consent.origin_of(app.installation.path, app.origin)
        ring = keyring.remote_keyring(app.installation.path, app.origin)
        if origin is None or ring is None:
            raise Refused(f"{app_id}: its remote {app.origin!r} cannot be read; nothing vouches "
                "for it", 1)
        signed = policy.remote_verifies(app.installation.path, app.origin)
        now = consent.grants_digest(app.manifest.grants(), manifest.GRANT_MODEL, origin)
        if digest is not None and digest != now:
            raise Changed(f"{app_id} changed: what it grants, or where it comes from, is not "
                          f"what digest {digest} names (now {now}); look at it again", 1)
    try:
        with statefiles.Locked(ctx.state_dir, [], LOCK_WAIT):
            store = consent.Store(ctx.state_dir).load()
            if command == "approve":
                assert app is not None and origin is not None and ring is not None
                # Exactly what was evaluated above, and named by ``digest`` if given.
                # Signed: the keyring is pinned; unsigned: nothing proves who made a
                # commit, so this one commit is (docs/reference.md#consent).
                store.approve(app_id, origin, app.manifest.grants(),
                              by=by or f"uid {os.getuid()}",
                              ring=store.offer(ring) if signed else "", commit=app.commit)
            elif not store.revoke(app_id):
                raise Refused(f"{app_id}: no consent given with approve to take back", 1)
            store.save()
        # A new Context: it reads the consent records afresh.
        result = reconcile(dataclasses.replace(ctx), ctx.installations)
    except OSError as e:
        raise Refused(f"{e.filename or ''} {e.strerror or e}".strip(), 1) from e
    if command == "approve":
        assert origin is not None and app is not None
        pinned = ("its keyring pinned" if signed else
                  f"its remote does not verify signatures: commit {app.commit} pinned, "
                  "every new commit waits")
        lines = [f"{app_id}: consented to, from {origin.describe()}; {pinned}"]
    else:
        lines = [f"{app_id}: consent taken back"]
    pattern = app and policy.allowed_by(ctx.config, app_id, app.origin)
    if command == "revoke" and pattern:
        lines.append(f"{app_id}: still consented to by the configuration's allow pattern "
                     f"{pattern!r}")
    return lines, result
