"""``flatpak-sysext trigger BASEDIR``: what Flatpak runs after a transaction (SPEC §7).

It never fails the transaction (always exit 0), says nothing for installations that are
not ours to manage, and works inside Flatpak's bubblewrap sandbox, where only BASEDIR is
writable: there it validates and records a request for ``flatpak-sysext.service``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from flatpak_sysext import apply, config, hoststate, installation
from flatpak_sysext.reconcile import Context, change_lines, evaluate, reconcile


def _writable(path: str) -> bool:
    """Whether we could create or change entries at ``path`` (or where it would be made)."""
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
    return os.access(path, os.W_OK)


def _requested(inst: installation.Installation) -> list[str]:
    """The actions the last request asked for (empty if none, or unreadable)."""
    try:
        with open(apply.request_path(inst), "rb") as f:
            return f.read(1 << 20).decode("utf-8", "replace").splitlines()
    except OSError:
        return []


def run(basedir: str, config_arg: str | None, environ: Mapping[str, str]) -> int:
    """Run the trigger for ``basedir``; always returns 0."""
    if os.geteuid() != 0:
        return 0
    cfg: config.Config | None = None
    try:
        insts = installation.system_installations(environ)
        inst = installation.find_installation(basedir, insts)
        if inst is None:
            return 0
        # The memo spares the no-op trigger jsonschema's import while the file is unchanged.
        cfg = config.load(config.config_path(config_arg, environ),
                          must_exist=config_arg is not None, memo_dir=apply.state_dir(inst))
        ctx = Context.create(cfg, insts, environ)
        if _writable(cfg.target_dir):
            result = reconcile(ctx, [inst])
            lines = change_lines(result.evaluation, result.applied)
            lines += [f.message for f in result.failures]
            lines += list(result.evaluation.errors)
            if result.sync is not None:
                info, problems = hoststate.summary(result.sync)
                lines += info + problems
        else:
            with apply.locked([inst]):
                ev = evaluate(ctx, [inst], save_cache=True)
                pending = [apply.describe(a) for a in ev.plan.actions]
                already = _requested(inst)
                if pending and pending != already:
                    apply.write_file(apply.request_path(inst), "".join(
                        f"{line}\n" for line in pending).encode())
            # Each request is announced once, not again by every later transaction.
            fresh = [a for a in ev.plan.actions if apply.describe(a) not in already]
            lines = change_lines(ev, fresh, requested=True) + list(ev.errors)
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
    output modules (a tenth of a no-op run); anything but a lone BASEDIR goes to them.
    """
    if len(argv) == 1 and not argv[0].startswith("-"):
        return run(argv[0], None, os.environ)
    from flatpak_sysext.cli import main as cli_main

    return cli_main(["trigger", *argv])
