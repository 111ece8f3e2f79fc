"""``flatpak-sysext trigger BASEDIR``: what Flatpak runs after a transaction (SPEC §7).

It never fails the transaction (always exit 0), says nothing for installations that are
not ours to manage, and works inside Flatpak's bubblewrap sandbox, where only BASEDIR is
writable: there it validates and records a request for ``flatpak-sysext.service``.

Most transactions touch no app that declares a system extension, so the quick check
(``quick``) comes first, and the rest of the package is imported only when it says a
full run is needed.
"""

from __future__ import annotations

import os

from flatpak_sysext import quick, state

TYPE_CHECKING = False  # Not typing's: see quick.py.
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from flatpak_sysext import config


def _writable(path: str) -> bool:
    """Whether we could create or change entries at ``path`` (or where it would be made)."""
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
    return os.access(path, os.W_OK)


def _requested(path: str) -> list[str]:
    """The actions the request at ``path`` asked for (empty if none, or unreadable)."""
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20).decode("utf-8", "replace").splitlines()
    except OSError:
        return []


def _inputs(config_file: str, environ: Mapping[str, str], basedir: str) -> Iterable[str]:
    """The files and directories a run reads before it knows its installation."""
    from flatpak_sysext import installation, release

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


def _news(warnings: Iterable[str], cfg: config.Config) -> list[str]:
    """The warnings about this run (a cache or state discarded), not the config's
    standing one about the target directory, which is said only beside other news."""
    from flatpak_sysext import config

    standing = config.target_dir_warning(cfg)
    return [w for w in warnings if w != standing]


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
    from flatpak_sysext import apply, config, hoststate, hostsync, installation
    from flatpak_sysext.reconcile import Context, change_lines, evaluate, reconcile

    snap = quick.Snapshot(basedir, environ)  # Before anything it records is read.
    cfg: config.Config | None = None
    quiet = False
    try:
        config_file = config.config_path(config_arg, environ)
        snap.add(_inputs(config_file, environ, basedir))
        insts = installation.system_installations(environ)
        inst = installation.find_installation(basedir, insts)
        if inst is None:
            return 0
        # The memo spares the no-op trigger jsonschema's import while the file is unchanged.
        cfg = config.load(config_file, must_exist=config_arg is not None,
                          memo_dir=state.directory(inst.path))
        snap.add([cfg.target_dir, hostsync.MERGED_LIST, hoststate.state_path(inst),
                  apply.request_path(inst)])
        ctx = Context.create(cfg, insts, environ)
        if cfg.allow_host_glibc:  # verdicts depend on the host's glibc (hostglibc.py)
            snap.add(ctx.host_glibc.watched_paths())
        snap.add_apps()
        if _writable(cfg.target_dir):
            result = reconcile(ctx, [inst])
            ev = result.evaluation
            lines = change_lines(ev, result.applied)
            lines += [f.message for f in result.failures]
            lines += list(ev.errors) + _news(ev.warnings, cfg)
            if result.sync is not None:
                info, problems = hoststate.summary(result.sync)
                lines += info + problems
            quiet = not (lines or ev.plan.actions or result.failures or result.sync)
        else:
            with apply.locked([inst]):
                ev = evaluate(ctx, [inst], save_cache=True)
                pending = [apply.describe(a) for a in ev.plan.actions]
                already = _requested(apply.request_path(inst))
                if pending and pending != already:
                    state.write_file(apply.request_path(inst), "".join(
                        f"{line}\n" for line in pending).encode())
            # Each request is announced once, not again by every later transaction.
            fresh = [a for a in ev.plan.actions if apply.describe(a) not in already]
            lines = change_lines(ev, fresh, requested=True) + list(ev.errors)
            lines += _news(ev.warnings, cfg)
            quiet = not (lines or ev.plan.actions)
        if quiet and inst.path == basedir and config_arg is None:
            snap.save({s.app_id for s in ev.apps} | set(ev.entries))
    except (config.ConfigError, installation.InstallationError) as e:
        lines = [str(e)]
    except OSError as e:
        lines = [f"{e.filename or ''}: {e.strerror or e}"]
    # Quiet unless something changed; then say if systemd-sysext will not see it.
    warning = config.target_dir_warning(cfg) if lines and cfg is not None else None
    for line in [*lines, *([warning] if warning else [])]:
        print(f"flatpak-sysext: {line}")
    return 0


def main(argv: Sequence[str]) -> int:
    """The trigger file's entry point: ``BASEDIR``, as Flatpak passes it.

    Flatpak runs this after every transaction, so it skips the command line's parser and
    output modules, and asks the quick check first; anything but a lone BASEDIR goes to
    the command line.
    """
    if len(argv) == 1 and not argv[0].startswith("-"):
        return run(argv[0], None, os.environ)
    from flatpak_sysext.cli import main as cli_main

    return cli_main(["trigger", *argv])
