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
import time

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
    if config_arg is None:
        said = quick.settled(basedir, environ)
        if said is not None:
            quick.say(said)
            return 0
    return run_full(basedir, config_arg, environ)


def run_full(basedir: str, config_arg: str | None, environ: Mapping[str, str]) -> int:
    """The trigger without the quick check; always returns 0.

    A run that found nothing to do, and said nothing but which apps wait for consent,
    leaves the quick check's stamp (with those lines, for it to say them again).
    """
    if os.geteuid() != 0:
        return 0
    import dataclasses

    from flatpak_sysext import config, output
    from flatpak_sysext.context import Context
    from flatpak_sysext.flatpak import installation
    from flatpak_sysext.state import statefiles, told

    deadline = time.monotonic() + RUN_LIMIT
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
            lines, ev, now = _reconcile_here(ctx, inst, before, deadline)
        else:  # Keeps its verdicts in the installation: the service's state is read-only.
            lines, ev, now = _ask_service(dataclasses.replace(ctx, sandboxed=True), inst,
                                          before, deadline)
        if now != before:
            told.write(inst.path, now)
        said = [*lines.changes, *output.waiting_lines(ev, lines.changes), *lines.info,
                *lines.errors, *(f"warning: {w}" for w in lines.warnings)]
        # Quiet unless something happened; then say if systemd-sysext will not see it.
        if said:
            said += [f"warning: {w}" for w in output.standing(cfg)]
        if not lines and not ev.plan.actions and inst.path == basedir and config_arg is None:
            snap.save({s.app_id for s in ev.apps} | set(ev.entries), said)
    except (config.ConfigError, installation.InstallationError) as e:
        said = [str(e)]
    except OSError as e:
        said = [f"{e.filename or ''}: {e.strerror or e}"]
    else:
        quick.say(said)
        return 0
    if cfg is not None:
        said += [f"warning: {w}" for w in output.standing(cfg)]
    quick.say(said)
    return 0


LOCK_WAIT = 20.0
"""Seconds the trigger waits for the service's lock: a Flatpak transaction waits for it."""
ANSWER_WAIT = 30.0
"""Seconds the sandboxed trigger waits for the service to answer its request."""
RUN_LIMIT = 60.0
"""Seconds a trigger run may take in all, lock waits included (Flatpak waits for it)."""


def _reconcile_here(ctx: Context, inst: Installation, before: Told, deadline: float,
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
        return _ask_service(ctx, inst, before, deadline, unavailable=e)
    last_sync = hoststate.last_sync(inst, ctx.state_dir)
    now = told.after(result.evaluation, before, result.applied, requested=False,
                     sync=last_sync.time if last_sync else None)
    # A host sync always reports its steps, so a run that synced is never quiet.
    return output.result_lines(result, before, last_sync), result.evaluation, now


def _ask_service(ctx: Context, inst: Installation, before: Told, deadline: float,
                 unavailable: OSError | None = None) -> tuple[Lines, Evaluation, Told]:
    """In the sandbox: validate, leave a request for the service if links must change,
    and wait (until ``deadline``, at most ANSWER_WAIT seconds) for its answer, to tell
    what it did as a run on the host would. Without an answer, each request is
    announced once, not again by every later transaction.

    The service's lock, opened read-only, orders this run with the others. A trigger
    never hangs a Flatpak transaction for it: past LOCK_WAIT seconds (or given
    ``unavailable``, the reason it was not taken) it evaluates without it, keeps no
    cache, and leaves a request whatever the last one said, so that the run holding
    the lock sees a new request and goes round again. Before any service ever ran
    there is no lock to take, and nothing to order with. It never waits for the answer
    while it holds the lock.
    """
    import dataclasses

    from flatpak_sysext import output
    from flatpak_sysext.host import apply
    from flatpak_sysext.host.apply import Failure
    from flatpak_sysext.reconcile import Result
    from flatpak_sysext.state import answer, hoststate, request, told

    nonce = answer.new_nonce()
    ev, pending, already, unavailable = _evaluate(ctx, inst, deadline, unavailable,
                                                  nonce)
    last_sync = hoststate.last_sync(inst, ctx.state_dir)
    unwatched = _unwatched(request.path(inst.path), ctx.host_root) if pending else ""
    served = None
    wait = 0.0
    if pending and not unwatched:
        wait = max(0.0, min(ANSWER_WAIT, deadline - time.monotonic() - LOCK_WAIT / 4))
        served = answer.wait(ctx.state_dir, inst.path, nonce, wait)
    if served is not None:
        # What the service did is in the state it left: read it as a run on the host
        # would have left it, and tell it as such a run would have.
        after, _, _, _ = _evaluate(ctx, inst, min(deadline, time.monotonic() + 5), None,
                                   None)
        after = dataclasses.replace(after, merged=served.merged)
        last_sync = hoststate.last_sync(inst, ctx.state_dir)
        # The serving run's own host sync; if it made none (it went again for a request
        # left after it let go of the lock), output tells the last one with the news.
        result = Result(after, (), tuple(Failure(None, f) for f in served.failures),
                        served.sync)
        lines = output.result_lines(result, before, last_sync)
        return lines, after, told.after(after, before, (), requested=False,
                                        sync=last_sync.time if last_sync else None)
    fresh = [a for a in ev.plan.actions if apply.describe(a) not in already]
    lines = output.request_lines(ev, fresh, before, last_sync)
    if unavailable is not None:
        lines.info.append(f"could not get the lock {unavailable.filename} "
                          f"({unavailable.strerror}); "
                          + ("left a request for flatpak-sysext.service" if pending
                             else "found nothing to change"))
    if unwatched:
        lines.info.append(f"the request waits for flatpak-sysext.service: {unwatched}")
    elif pending:
        lines.info.append(f"no answer from flatpak-sysext.service within {wait:.0f} s; "
                          "the request stands (flatpak-sysext status tells what became "
                          "of it)")
    now = told.after(ev, before, ev.plan.actions, requested=True,
                     sync=last_sync.time if last_sync else None)
    return lines, ev, now


def _evaluate(ctx: Context, inst: Installation, deadline: float,
              unavailable: OSError | None, nonce: str | None,
              ) -> tuple[Evaluation, list[str], list[str], OSError | None]:
    """Evaluate under the service's lock (read-only, waited for until ``deadline``), and
    with a ``nonce``, leave a request naming it if links must change. Returns the
    evaluation, what it asks for, what the request before it asked for, and why the
    lock was not taken (None: it was, or no service ran yet)."""
    import errno

    from flatpak_sysext.evaluate import evaluate
    from flatpak_sysext.host import apply
    from flatpak_sysext.state import request, statefiles

    lock = statefiles.Locked(ctx.state_dir, [statefiles.directory(inst.path)],
                             max(0.0, min(LOCK_WAIT, deadline - time.monotonic())),
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
        if pending and nonce is not None:
            # Every run waits for an answer of its own, so every run writes; the runs
            # still waiting for the request it replaces keep their nonces in it.
            request.write(inst.path, pending, [*request.nonces(inst.path), nonce])
    finally:
        lock.release()
    return ev, pending, already, unavailable


PATH_UNIT = "flatpak-sysext.path"
UNIT_DIRS = ("etc/systemd/system", "run/systemd/system", "usr/lib/systemd/system",
             "lib/systemd/system")


def _unwatched(request_path: str, host_root: str) -> str:
    """Why no answer to a request at ``request_path`` is to be expected ("" if one is):
    systemd is not running, ``flatpak-sysext.path`` is masked or not enabled (no
    ``*.wants`` link to it: systemd publishes no state of a path unit in ``/run``), or
    neither it nor its drop-ins name the file. Reads a few small files and directories:
    a missing service never costs the trigger its wait."""
    import contextlib

    from flatpak_sysext.state import fileio

    def host(p: str) -> str:
        return os.path.join(host_root, p)

    if not os.path.isdir(host("run/systemd/system")):
        return "systemd is not running"
    enabled = masked = False
    texts = []
    for d in UNIT_DIRS:
        with contextlib.suppress(OSError):  # no such directory
            enabled = enabled or any(
                os.path.lexists(host(f"{d}/{n}/{PATH_UNIT}")) for n in os.listdir(host(d))
                if n.endswith(".wants"))
        masked = masked or os.path.realpath(host(f"{d}/{PATH_UNIT}")) == "/dev/null"
        files = [os.path.join(d, PATH_UNIT)]
        with contextlib.suppress(OSError):  # no drop-ins there
            files += [os.path.join(d, f"{PATH_UNIT}.d", n)
                      for n in sorted(os.listdir(host(f"{d}/{PATH_UNIT}.d")))
                      if n.endswith(".conf")]
        for f in files:
            try:
                texts.append(fileio.read_regular(host(f), 1 << 16, follow=True))
            except (OSError, ValueError):
                continue
    if masked or not enabled:
        return (f"{PATH_UNIT} is {'masked' if masked else 'not enabled'} "
                f"(systemctl enable --now {PATH_UNIT})")
    if not any(os.fsencode(request_path) in t for t in texts):
        return f"{PATH_UNIT} does not watch {request_path} (a drop-in adds it)"
    return ""


def main(basedir: str) -> int:
    """The trigger file's entry point for Flatpak's one argument, BASEDIR, once
    :func:`quick.answers` could not answer: the full run. Always returns 0."""
    return run_full(basedir, None, os.environ)
