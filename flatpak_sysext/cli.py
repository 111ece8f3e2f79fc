# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The command line: parse arguments, run a command, print, choose the exit code.

See docs/reference.md#command-line. Each command imports what it uses: a package
manager's hook runs ``package-transaction`` on every transaction, and most of the
package (the evaluation, the trigger, the output) it needs only when it re-merges.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from flatpak_sysext import __version__

if TYPE_CHECKING:
    from flatpak_sysext.context import Context


class Die(Exception):
    """A user or configuration error: one line to stderr and an exit code, no traceback."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def die(message: str, code: int = 2) -> NoReturn:
    raise Die(message, code)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        die(f"{self.prog}: {message}")


_CONFIG_HELP = ("the configuration file (default: $FLATPAK_SYSEXT_CONFIG, else "
                "/etc/flatpak-sysext/config.json); one named here must exist")

# Each command: (name, the one line of the command list, its --help description).
_COMMANDS = {
    "reconcile": ("bring the links in line",
                  "Validate every declared extension of the system installations, link the "
                  "accepted ones into the target directory, unlink the rest, then sync the "
                  "host (systemd-sysext refresh and the reloads they need)."),
    "status": ("show every declared extension",
               "Show every declared extension with its state (linked, pending, waiting, "
               "rejected, denied, conflict), why, and whether the host has it merged; "
               "changes nothing."),
    "check": ("validate one extension tree",
              "Validate one extension tree as an app developer or CI would: every tree "
              "rule, every restricted class refused, then what it would get from the "
              "host. No configuration, no placement."),
    "trigger": ("run as Flatpak's trigger",
                "What Flatpak runs after each transaction: reconcile the installation at "
                "BASEDIR, or inside Flatpak's sandbox ask the service to. Always exits 0."),
    "approve": ("consent to an app's system extension: what it grants now, from where it "
                "comes now",
                "Consent to an app's system extension as it is now (what it grants, the "
                "remote and keyring it comes from), then reconcile. As a user other than "
                "root, through the D-Bus service, where polkit asks."),
    "revoke": ("take the consent to an app's system extension back",
               "Take the consent given with approve back, then reconcile (the extension "
               "is unlinked unless the configuration's allow covers it)."),
    "dbus-service": ("answer on the system bus (D-Bus activation starts it: "
                     "flatpak-sysext-dbus.service)",
                     "The D-Bus interface org.flatpak.SystemExtensions1 for status, approve "
                     "and revoke by users other than root; D-Bus activation starts it and it "
                     "exits when idle."),
    "remove-all": ("unlink every extension, sync the host and remove each installation's "
                   "flatpak-sysext directory (for a package's removal)",
                   "For a package's removal: remove every link of ours from the target "
                   "directory, sync the host, and remove each installation's "
                   "<installation>/flatpak-sysext directory. /var/lib/flatpak-sysext (consent "
                   "records, snapshots) stays for a purge, so a reinstall keeps the consent."),
    "package-transaction": ("for package manager hooks: take the extensions out of /usr "
                            "(begin) and bring them back (end)",
                            "For package manager hooks, not to be typed: begin unmerges the "
                            "extensions so that /usr is writable, end reconciles and merges "
                            "them again; guard re-merges after a package manager that died."),
}


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="flatpak-sysext",
                description="Link the system extensions of Flatpak apps into systemd-sysext.")
    p.add_argument("--version", action="version", version=f"flatpak-sysext {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=_COMMANDS[name][0], description=_COMMANDS[name][1])

    def config(parser: argparse.ArgumentParser, text: str = _CONFIG_HELP) -> None:
        parser.add_argument("--config", metavar="PATH", help=text)

    r = command("reconcile")
    r.add_argument("--installation", action="append", metavar="PATH", default=[],
                   help="only this system installation (repeatable; default: every one)")
    r.add_argument("--dry-run", action="store_true",
                   help="say what would be done; change nothing")
    r.add_argument("--json", action="store_true", help="print one JSON document")
    config(r)
    s = command("status")
    s.add_argument("--json", action="store_true", help="print a JSON list")
    config(s, _CONFIG_HELP + "; as a user other than root, read directly instead of asking "
                             "the service")
    c = command("check")
    c.add_argument("path", metavar="PATH", help="the extension tree (it holds usr/)")
    c.add_argument("--name", metavar="NAME",
                   help="the app ID (default: the suffix of its only extension-release file)")
    c.add_argument("--json", action="store_true", help="print one JSON document")
    c.add_argument("--allow-host-glibc", action="store_true",
                   help="admit executables that need only this machine's glibc (hostglibc)")
    c.add_argument("--os-release", metavar="FILE",
                   help="judge compatibility against this os-release, as SYSTEMD_OS_RELEASE "
                        "would (default: this machine's)")
    config(c, "accepted and ignored: a tree's verdict does not depend on this machine's "
              "policy")
    t = command("trigger")
    t.add_argument("basedir", metavar="BASEDIR", help="the installation Flatpak changed")
    config(t)
    for verb in ("approve", "revoke"):
        v = command(verb)
        v.add_argument("app", metavar="APPID", help="the app's ID")
        config(v)
    command("dbus-service")
    config(command("remove-all"))
    pt = command("package-transaction")
    pt.add_argument("action", choices=("begin", "end", "guard"),
                    help="begin before the transaction, end after it; guard is what begin starts")
    pt.add_argument("--holder", metavar="PID",
                    help="the package manager's process (default: the parent process); "
                         "guard: the holder as recorded")
    pt.add_argument("--dnf5", choices=("repos-configured", "goal-resolved"),
                    help="begin from dnf5's actions plugin: repos-configured only for the "
                         "dnf5 command line about to change the system, goal-resolved only "
                         "for a holder that has not begun (dnf5daemon-server)")
    config(pt)
    return p


def _context(args: argparse.Namespace, environ: Mapping[str, str], *,
             memo: bool = False) -> Context:
    """The run's Context. With ``memo``, a config whose digest the service's state
    directory records as validated skips jsonschema (config.load), if that directory
    exists: it is root's own, made by the first run that linked anything."""
    from flatpak_sysext import config
    from flatpak_sysext.context import Context
    from flatpak_sysext.flatpak import installation
    from flatpak_sysext.state import statefiles

    state_dir = statefiles.service_directory(environ)
    try:
        cfg = config.load(config.config_path(args.config, environ),
                          must_exist=args.config is not None,
                          memo_dir=state_dir if memo and os.path.isdir(state_dir) else None)
        insts = installation.system_installations(environ)
    except (config.ConfigError, installation.InstallationError) as e:
        die(str(e))
    return Context.create(cfg, insts, environ)


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def cmd_reconcile(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from flatpak_sysext import output
    from flatpak_sysext.flatpak import installation
    from flatpak_sysext.reconcile import reconcile

    ctx = _context(args, environ)
    scope = list(ctx.installations)
    if args.installation:
        scope = []
        for path in args.installation:
            inst = installation.find_installation(path, list(ctx.installations))
            if inst is None:
                die(f"{path} is not a system installation")
            scope.append(inst)
    try:
        result = reconcile(ctx, scope, dry_run=args.dry_run)
    except (OSError, installation.InstallationError) as e:
        die(f"{getattr(e, 'filename', None) or ''} {getattr(e, 'strerror', None) or e}".strip(), 1)
    if args.json:
        _print_json(output.reconcile_json(ctx, result, dry_run=args.dry_run))
    else:
        output.print_reconcile(ctx, result, dry_run=args.dry_run)
    return 1 if result.failures or result.evaluation.errors else 0


def cmd_status(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    if os.geteuid() != 0 and args.config is None:
        # The consent records are root's: the service reads them.
        from flatpak_sysext import dbusclient

        return dbusclient.status(args.json)
    from flatpak_sysext import output
    from flatpak_sysext.evaluate import evaluate
    from flatpak_sysext.flatpak import installation

    ctx = _context(args, environ)
    try:
        ev = evaluate(ctx, ctx.installations, save_cache=False)
    except installation.InstallationError as e:
        die(str(e))
    if args.json:
        _print_json(output.status_json(ctx, ev))
    else:
        output.print_status(ctx, ev)
    return 0


def cmd_consent(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """``approve APPID`` / ``revoke APPID``, then a reconcile that acts on it; as a user
    other than root, through the service's D-Bus interface (polkit asks)."""
    if os.geteuid() != 0:
        from flatpak_sysext import dbusclient

        return dbusclient.consent(args.command, args.app)
    from flatpak_sysext import output

    ctx = _context(args, environ)
    from flatpak_sysext import approval

    try:
        lines, result = approval.consent_app(ctx, args.command, args.app)
    except approval.Refused as e:
        die(str(e), e.code)
    print("\n".join(lines))
    output.print_reconcile(ctx, result, dry_run=False)
    return 1 if result.failures or result.evaluation.errors else 0


def cmd_remove_all(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from flatpak_sysext import output
    from flatpak_sysext.reconcile import remove_all

    ctx = _context(args, environ)
    try:
        removal = remove_all(ctx)
    except OSError as e:
        die(f"{e.filename or ''} {e.strerror or e}".strip(), 1)
    output.print_removal(removal)
    return 1 if removal.failures else 0


def cmd_check(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from flatpak_sysext import config, output
    from flatpak_sysext.rules import elf, release, validate

    path = args.path
    if not os.path.isdir(path):
        die(f"{path}: not a directory")
    declared = _declared_below(path)
    if declared is not None:
        die(f"{path}: has no usr/ or opt/ of its own but {declared} has: this looks like the "
            f"app's files, not its extension; check {declared} (the path the app declares "
            "with --metadata=X-SystemExtension=path=...)")
    name = args.name
    if name is None:
        reldir = os.path.join(path, "usr", "lib", "extension-release.d")
        try:
            names = [n[len("extension-release."):] for n in os.listdir(reldir)
                     if n.startswith("extension-release.")]
        except OSError:
            names = []
        if not any(os.path.isdir(os.path.join(path, top)) for top in ("usr", "opt")):
            die(f"{path}: has no usr/ or opt/: not a system extension tree")
        if not names:
            die(f"{path}: no usr/lib/extension-release.d/extension-release.<APP ID>: every "
                "extension names itself with that file, named for the app ID and holding "
                "ID=_any (or the ID= of the OS it is built for); or give --name APPID")
        if len(names) > 1:
            die(f"{path}: found {len(names)} extension-release files in "
                "usr/lib/extension-release.d; name the extension with --name")
        name = names[0]
        if name.count(".") < 2:  # Flatpak's rule: an app ID has at least three elements
            die(f"{path}: usr/lib/extension-release.d/extension-release.{name}: the name "
                f"after 'extension-release.' must be the app's ID (such as org.example.App), "
                f"not {name!r}; or give --name APPID")
    if args.os_release is not None:
        # What SYSTEMD_OS_RELEASE means to systemd-sysext; a file that is not there is a
        # mistake here, not a host without os-release.
        try:
            release.read_env_file(args.os_release)
        except OSError as e:
            die(f"--os-release {args.os_release}: {e.strerror or e}")
        environ = {**environ, "SYSTEMD_OS_RELEASE": args.os_release}
    judged = next((c for c in release.os_release_candidates(environ) if os.path.exists(c)),
                  None)
    target = elf.ElfTarget.host()
    glibc = None
    if args.allow_host_glibc:  # judged against this machine's glibc
        from flatpak_sysext.rules import hostglibc

        glibc = hostglibc.HostGlibc(config.glibc_root(environ), target)
    # A developer's build tree is theirs: ownership is only a warning here.
    report = validate.validate_tree(path, name, release.read_host(environ), target,
                                    host_glibc=glibc, installed=False)
    # No config here: every restricted class the tree uses is a problem (contain.py).
    from flatpak_sysext.rules import contain, findings, selinux

    try:
        types = selinux.policy_types(path, report.files)  # None: no SELinux policy here
    except OSError as e:  # setfiles missing or failing: a clear message, no traceback
        die(f"{path}: {e}")
    report = selinux.judged(report, types)
    refused = contain.restricted_problems(report.restricted, frozenset(), name)
    from flatpak_sysext import pipeline  # the service's byte bound, before it copies

    if (large := pipeline.too_large(path)) is not None:
        refused.insert(0, large)
    report = dataclasses.replace(report, problems=report.problems + tuple(refused),
                                 warnings=report.warnings + tuple(
                                     findings.missing_programs(report, os.path.lexists)))
    if args.json:
        _print_json(output.check_json(name, path, report, judged, types))
    else:
        output.print_check(name, path, report, judged)
    return 0 if report.accepted else 1


def _declared_below(path: str) -> str | None:
    """For ``check`` on an app's root (``/app`` or a build directory holding ``files/``):
    the extension directory below it that the app most likely declares, if there is one."""
    if any(os.path.isdir(os.path.join(path, top)) for top in ("usr", "opt")):
        return None
    for below in ("lib/extensions", "files/lib/extensions"):
        candidate = os.path.join(path, below)
        if os.path.isdir(os.path.join(candidate, "usr")):
            return candidate
    return None


def _resync(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    """After the last package transaction: a reconcile whose host sync re-merges and
    runs every reload; without a usable configuration or with host sync off, only that."""
    from flatpak_sysext.flatpak import installation
    from flatpak_sysext.host import hostcommands, pkgtransaction

    try:
        ctx = _context(args, environ, memo=True)
        if ctx.config.host_sync:
            from flatpak_sysext import output
            from flatpak_sysext.reconcile import reconcile

            result = reconcile(ctx, ctx.installations, after_transaction=True)
            output.print_transaction_end(ctx, result)
            return
    except (Die, OSError, installation.InstallationError) as e:
        print(f"flatpak-sysext: warning: {e}; merging the extensions again without checking "
              "them", file=sys.stderr)
    pkgtransaction.bare_resync(hostcommands.run_tool)


def cmd_package_transaction(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from flatpak_sysext.host import hostcommands, pkgmanagers, pkgtransaction

    def resync() -> None:
        _resync(args, environ)

    if args.action == "guard":
        holder = pkgtransaction.Holder.parse(args.holder or "")
        if holder is None:
            die(f"guard: {args.holder!r} is not a holder (PID-STARTTIME)")
        pkgtransaction.guard(holder, resync=resync)
        return 0
    text = args.holder or str(os.getppid())
    if not text.isdigit() or not 0 < int(text) < 1 << 22:
        die(f"--holder: {text!r} is not a process ID")
    # Not running (any more): its transaction is over, or never began.
    holder = (pkgtransaction.Holder.of(int(text))
              or pkgtransaction.Holder(int(text), "0"))
    if args.action == "end":
        pkgtransaction.end(holder, resync=resync)
        return 0
    if args.dnf5 == "repos-configured" and not pkgmanagers.dnf5_changes_system(int(text)):
        return 0
    if args.dnf5 == "goal-resolved" and holder in pkgtransaction.holders():
        return 0
    command = [sys.executable, "-I", "-m", "flatpak_sysext"]
    try:
        warning = pkgtransaction.begin(holder, runner=hostcommands.run_tool,
                                       spawn=pkgtransaction.spawn_guard, command=command)
    except pkgtransaction.TransactionError as e:
        die(str(e), 1)
    except OSError as e:
        # Nothing recorded: the package manager goes on, and fails by itself if /usr is
        # still read-only.
        warning = f"{getattr(e, 'filename', None) or ''} {e.strerror or e}".strip()
    if warning:
        print(f"flatpak-sysext: warning: {warning}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    env = os.environ if environ is None else environ
    try:
        args = _parser().parse_args(argv)
        if args.command == "trigger":
            from flatpak_sysext import trigger

            return trigger.run(args.basedir, args.config, env)
        if args.command == "reconcile":
            return cmd_reconcile(args, env)
        if args.command in ("approve", "revoke"):
            return cmd_consent(args, env)
        if args.command == "dbus-service":
            from flatpak_sysext import dbusservice

            return dbusservice.serve(env)
        if args.command == "remove-all":
            return cmd_remove_all(args, env)
        if args.command == "status":
            return cmd_status(args, env)
        if args.command == "package-transaction":
            return cmd_package_transaction(args, env)
        return cmd_check(args, env)
    except Die as e:
        print(f"flatpak-sysext: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130
