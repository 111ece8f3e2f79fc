#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""``make demo``: the whole story with the real flatpak and systemd-sysext, host untouched.

Everything happens in a temporary directory (repository, system installation, target
directory) and the merge in a private mount namespace with its own ``/run``, so nothing
is written to /var/lib/extensions, /etc/extensions, /run/extensions or /usr.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testsupport.flatpak import FlatpakEnv, daemon_tree, have_flatpak

GOOD = "org.example.Sysprofd"
BAD = "org.example.Dynamic"


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


_warned: set[str] = set()


def show(result: subprocess.CompletedProcess[str]) -> None:
    """Print what a command printed, each warning only the first time it is said: the
    demo's own temporary target directory is warned about by every command."""
    for line in (result.stdout + result.stderr).splitlines():
        _, sep, warning = line.partition("warning: ")
        if sep:
            if warning in _warned:
                continue
            _warned.add(warning)
        print(f"   {line}")


def merged_run(fenv: FlatpakEnv, command: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in a private mount namespace where /run/extensions is our target."""
    script = f"""
set -e
mount --make-rprivate /
mount --make-shared /
mount -t tmpfs tmpfs /run
mkdir /run/extensions
mount --bind {fenv.target_dir} /run/extensions
systemd-sysext merge
{command}
systemd-sysext unmerge
"""
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True)


def main() -> int:
    if not have_flatpak():
        print("make demo needs flatpak and bubblewrap, as root", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="flatpak-sysext-demo.") as tmp, \
            contextlib.ExitStack() as stack:
        fenv = FlatpakEnv(Path(tmp), signed=True)
        stack.callback(fenv.close)  # the signing key's gpg-agent
        fenv.install_trigger()
        fenv.write_config({"allow": []})  # the default: nothing is consented to
        step(f"Everything lives in {tmp}; the trigger is {fenv.triggers_dir}")
        step(f"Build {GOOD} (static daemon, unit, D-Bus policy) and {BAD} (dynamic)")
        fenv.publish(GOOD, daemon_tree(GOOD, "sysprofd: hello from the extension"))
        fenv.publish(BAD, daemon_tree(BAD, "never runs", static=False))

        step("flatpak --system install: our trigger runs inside bubblewrap")
        show(fenv.install(GOOD))
        show(fenv.install(BAD))

        step("flatpak-sysext reconcile (what flatpak-sysext.service runs on the host): "
             f"{GOOD} waits for consent")
        show(fenv.sysext("reconcile"))
        step(f"flatpak-sysext approve {GOOD}: the administrator consents to what it grants")
        show(fenv.sysext("approve", GOOD))
        step("flatpak-sysext status")
        show(fenv.sysext("status"))
        for name, target in fenv.links().items():
            print(f"   {fenv.target_dir}/{name} -> {target}")

        step("systemd-sysext merge in a private mount namespace, then run the daemon")
        merged = merged_run(fenv, f"ls /usr/libexec/{GOOD}\n/usr/libexec/{GOOD}/sysprofd\n"
                                  "systemd-sysext status")
        show(merged)
        if merged.returncode != 0:
            return 1

        step("flatpak --system uninstall, and the cleanup")
        show(fenv.uninstall(GOOD))
        show(fenv.uninstall(BAD))
        show(fenv.sysext("reconcile"))
        show(fenv.sysext("status"))
        print(f"   links left in {fenv.target_dir}: {fenv.links() or 'none'}")
        if fenv.links():
            return 1
    step("Done; the host's /usr and extension directories were not touched")
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
