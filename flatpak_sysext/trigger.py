# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""``flatpak-sysext trigger BASEDIR``: what Flatpak runs after a transaction.

Flatpak's contract (docs/reference.md#trigger-contract): it never fails the transaction
(always exit 0), says nothing for installations that are not ours to manage, and works
inside Flatpak's bubblewrap sandbox, where only BASEDIR is writable. Where it can write
the target directory it reconciles (:func:`_reconcile_here`); in the sandbox it
validates and asks ``flatpak-sysext.service`` to act (:func:`_ask_service`).

Most transactions touch no app that declares a system extension, so the quick check
(``quick``) comes first: the trigger file asks it before it imports this module, and
:func:`run` (the command line's ``trigger``) asks it too. The rest of the package is
imported only when a full run is needed.
"""

from __future__ import annotations

import os

from flatpak_sysext import quick

TYPE_CHECKING = False  # Not typing's: see quick.py.
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from flatpak_sysext.config import Config
    from flatpak_sysext.context import Context
    from flatpak_sysext.evaluate import Evaluation
    from flatpak_sysext.flatpak.installation import Installation
    from flatpak_sysext.output import Lines
    from flatpak_sysext.state.told import Told


def _writable(path: str) -> bool:
    """Whether we could create or change entries at ``path`` (or where it would be made)."""
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
    return os.access(path, os.W_OK)


def inputs(config_file: str, environ: Mapping[str, str], basedir: str) -> Iterable[str]:
    """The files and directories a run reads before it knows its installation."""
    from flatpak_sysext.flatpak import installation
    from flatpak_sysext.rules import release, selinux

    yield config_file
    confdir = installation.installations_dir(environ)
    yield confdir
    try:
        names = sorted(os.listdir(confdir))
    except OSError:
        names = []  # The directory's own signature stands for it.
    yield from (os.path.join(confdir, n) for n in names)
    yield from release.os_release_candidates(environ)
    yield os.path.join(basedir, "repo", "config")
    yield os.path.dirname(os.path.abspath(__file__))  # This code: an upgrade changes it.
    yield from selinux.watched_paths()  # verdicts depend on the policy's file contexts


def state_inputs(cfg: Config, inst: Installation, state_dir: str) -> Iterable[str]:
    """What a run reads once it knows its configuration and installation."""
    from flatpak_sysext.flatpak import keyfile
    from flatpak_sysext.host import hostsync
    from flatpak_sysext.state import consent, hoststate, provided, request

    try:  # each remote's keyring: consent is pinned to its keys
        remotes = [g[len('remote "'):-1] for g in keyfile.read(
            os.path.join(inst.path, "repo", "config")) if g.startswith('remote "')]
    except (OSError, keyfile.KeyFileError):
        remotes = []  # repo/config's own signature stands for it
    return [cfg.target_dir, hostsync.MERGED_LIST, hoststate.state_path(inst, state_dir),
            provided.path(state_dir, inst.path), request.path(inst.path),
            os.path.join(state_dir, consent.FILE_NAME),
            *(os.path.join(inst.path, "repo", f"{r}.trustedkeys.gpg") for r in remotes
              if "/" not in r)]


def run(basedir: str, config_arg: str | None, environ: Mapping[str, str]) -> int:
    """Run the trigger for ``basedir``: the quick check, then if needed the full run.

    Always returns 0. An explicit ``config_arg`` always gets the full run.
    """
    if os.geteuid() != 0:
        return 0
    if config_arg is None and quick.quiet(basedir, environ):
        return 0
    return run_full(basedir, config_arg, environ)


def run_full(basedir: str, config_arg: str | None, environ: Mapping[str, str]) -> int:
    """The trigger without the quick check; always returns 0.

    A run that found nothing to do and said nothing leaves the quick check's stamp.
    """
    if os.geteuid() != 0:
        return 0
    import dataclasses

    from flatpak_sysext import config, output
    from flatpak_sysext.context import Context
    from flatpak_sysext.flatpak import installation
    from flatpak_sysext.state import statefiles, told

    snap = quick.Snapshot(basedir, environ)  # Before anything it records is read.
    cfg: Config | None = None
    try:
        config_file = config.config_path(config_arg, environ)
        snap.add(inputs(config_file, environ, basedir))
        insts = installation.system_installations(environ)
        inst = installation.find_installation(basedir, insts)
        if inst is None:
            return 0
        # The memo spares the no-op trigger jsonschema's import while the file is unchanged.
        cfg = config.load(config_file, must_exist=config_arg is not None,
                          memo_dir=statefiles.directory(inst.path))
        snap.add(state_inputs(cfg, inst, statefiles.service_directory(environ)))
        ctx = Context.create(cfg, insts, environ)
        if cfg.allow_host_glibc:  # verdicts depend on the host's glibc (hostglibc.py)
            snap.add(ctx.host_glibc.watched_paths())
        snap.add_apps()
        before = told.read(inst.path)
        if _writable(cfg.target_dir) and _writable(ctx.state_dir):
            lines, ev, now = _reconcile_here(ctx, inst, before)
        else:  # Keeps its verdicts in the installation: the service's state is read-only.
            lines, ev, now = _ask_service(dataclasses.replace(ctx, sandboxed=True), inst,
                                          before)
        if now != before:
            told.write(inst.path, now)
        if not lines and not ev.plan.actions and inst.path == basedir and config_arg is None:
            snap.save({s.app_id for s in ev.apps} | set(ev.entries))
        said = [*lines.changes, *lines.info, *lines.errors,
                *(f"warning: {w}" for w in lines.warnings)]
    except (config.ConfigError, installation.InstallationError) as e:
        said = [str(e)]
    except OSError as e:
        said = [f"{e.filename or ''}: {e.strerror or e}"]
    # Quiet unless something happened; then say if systemd-sysext will not see it.
    if said and cfg is not None:
        said += [f"warning: {w}" for w in output.standing(cfg)]
    for line in said:
        print(f"flatpak-sysext: {line}")
    return 0


LOCK_WAIT = 20.0
"""Seconds the trigger waits for the service's lock: a Flatpak transaction waits for it."""


def _reconcile_here(ctx: Context, inst: Installation, before: Told,
                    ) -> tuple[Lines, Evaluation, Told]:
    """Outside the sandbox: link, unlink and sync the host as ``reconcile`` does; if
    another run holds the lock for too long, leave a request instead. Returns what to
    print, the evaluation and what is told once it is printed."""
    from flatpak_sysext import output
    from flatpak_sysext.reconcile import reconcile
    from flatpak_sysext.state import hoststate, statefiles, told

    try:
        result = reconcile(ctx, [inst], wait=LOCK_WAIT)
    except statefiles.LockUnavailable as e:
        return _ask_service(ctx, inst, before, unavailable=e)
    last_sync = hoststate.last_sync(inst, ctx.state_dir)
    now = told.after(result.evaluation, before, result.applied, requested=False,
                     sync=last_sync.time if last_sync else None)
    # A host sync always reports its steps, so a run that synced is never quiet.
    return output.result_lines(result, before, last_sync), result.evaluation, now


def _ask_service(ctx: Context, inst: Installation, before: Told,
                 unavailable: OSError | None = None) -> tuple[Lines, Evaluation, Told]:
    """In the sandbox: validate, and leave a request for the service if links must
    change. Each request is announced once, not again by every later transaction.

    The service's lock, opened read-only, orders this run with the others. A trigger
    never hangs a Flatpak transaction for it: past LOCK_WAIT seconds (or given
    ``unavailable``, the reason it was not taken) it evaluates without it, keeps no
    cache, and leaves a request whatever the last one said, so that the run holding
    the lock sees a new request and goes round again. Before any service ever ran
    there is no lock to take, and nothing to order with.
    """
    import errno

    from flatpak_sysext import output
    from flatpak_sysext.evaluate import evaluate
    from flatpak_sysext.host import apply
    from flatpak_sysext.state import hoststate, request, statefiles, told

    lock = statefiles.Locked(ctx.state_dir, [statefiles.directory(inst.path)], LOCK_WAIT,
                             create=False)
    if unavailable is None:
        try:
            lock.acquire()
        except statefiles.LockUnavailable as e:
            if e.errno != errno.ENOENT:
                unavailable = e
    try:
        ev = evaluate(ctx, [inst], save_cache=unavailable is None)
        pending = [apply.describe(a) for a in ev.plan.actions]
        already = request.read(inst.path)
        if pending and (pending != already or unavailable is not None):
            request.write(inst.path, pending)
        last_sync = hoststate.last_sync(inst, ctx.state_dir)
    finally:
        lock.release()
    fresh = [a for a in ev.plan.actions if apply.describe(a) not in already]
    lines = output.request_lines(ev, fresh, before, last_sync)
    if unavailable is not None:
        lines.info.append(f"could not get the lock {unavailable.filename} "
                          f"({unavailable.strerror}); "
                          + ("left a request for flatpak-sysext.service" if pending
                             else "found nothing to change"))
    now = told.after(ev, before, ev.plan.actions, requested=True,
                     sync=last_sync.time if last_sync else None)
    return lines, ev, now


def main(basedir: str) -> int:
    """The trigger file's entry point for Flatpak's one argument, BASEDIR, once
    :func:`quick.answers` could not answer: the full run. Always returns 0."""
    return run_full(basedir, None, os.environ)
