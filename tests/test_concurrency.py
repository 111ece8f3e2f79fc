# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Many runs at once, and a run that dies holding the lock (docs/reference.md#locks).

Everything runs the real command line on a real Flatpak installation: ``reconcile``
(the service), the trigger with a writable target directory (Flatpak without the
sandbox) and the trigger with a read-only one (inside bubblewrap, reduced here to a
read-only bind mount in a private mount namespace).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from testsupport.flatpak import ARCH, FlatpakEnv
from testsupport.prerequisites import require_tracing

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

APPS = ("org.fsx.Alpha", "org.fsx.Beta", "org.fsx.Gamma")


@pytest.fixture(scope="module")
def daemons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlatpakEnv]:
    require_tracing()
    root = tmp_path_factory.mktemp("concurrency") / "world"
    fenv = FlatpakEnv(root)
    fenv.install_daemons(*APPS)
    yield fenv
    shutil.rmtree(root, ignore_errors=True)


def wanted(fenv: FlatpakEnv) -> dict[str, str]:
    return {a: fenv.snapshot(a) for a in APPS}


def reset(fenv: FlatpakEnv, *, stale: bool) -> None:
    """Empty target and state; with ``stale``, every link points at an old commit."""
    shutil.rmtree(fenv.target_dir, ignore_errors=True)
    shutil.rmtree(fenv.system_dir / "flatpak-sysext", ignore_errors=True)
    shutil.rmtree(fenv.state_dir, ignore_errors=True)
    fenv.target_dir.mkdir()
    if stale:
        for app in APPS:
            os.symlink(f"{fenv.system_dir}/app/{app}/{ARCH}/stable/{'e' * 64}/files/lib/"
                       "extensions", fenv.target_dir / app)


def command(fenv: FlatpakEnv, kind: str) -> list[str]:
    sysext = [fenv.python, "-m", "flatpak_sysext"]
    if kind == "reconcile":
        return [*sysext, "reconcile"]
    trigger = [*sysext, "trigger", str(fenv.system_dir)]
    if kind == "trigger":
        return trigger
    return ["unshare", "-m", "sh", "-c",
            'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"',
            str(fenv.target_dir), *trigger]


def assert_converged(fenv: FlatpakEnv) -> None:
    assert fenv.links() == wanted(fenv)
    assert sorted(os.listdir(fenv.target_dir)) == sorted(APPS)
    for state in (fenv.system_dir / "flatpak-sysext", fenv.state_dir):
        assert not list(state.rglob(".#*")) if state.exists() else True
    # The last run under the lock was a reconcile or had nothing to ask for.
    assert not (fenv.system_dir / "flatpak-sysext" / "request").exists()


KINDS = ["reconcile"] * 6 + ["trigger"] * 6 + ["sandboxed-trigger"] * 4


@pytest.mark.parametrize("stale", [False, True], ids=["fresh", "stale"])
def test_many_runs_at_once(daemons: FlatpakEnv, stale: bool) -> None:
    reset(daemons, stale=stale)
    procs = [subprocess.Popen(command(daemons, kind), env=daemons.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for kind in KINDS]
    outputs = []
    for kind, proc in zip(KINDS, procs):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{kind}: {out}{err}"
        assert err == "" or "Traceback" not in err, err
        outputs.append(out)
    assert_converged(daemons)
    # Under the lock exactly one run made each change; the others found nothing to do,
    # though a trigger tells what another run did (a line that goes on after the commit:
    # ", merged" or ", not merged yet").
    done = "relinked to commit" if stale else "linked, commit"
    for app in APPS:
        made = [line for out in outputs for line in out.splitlines()
                if re.search(rf"{re.escape(app)}: {done} [0-9a-f]{{12}}$", line)]
        assert len(made) == 1, (app, outputs)


def test_a_run_killed_holding_the_lock_does_not_block_the_next(daemons: FlatpakEnv) -> None:
    reset(daemons, stale=False)
    # A reconcile stopped in the middle of its changes, with the lock held...
    holder = subprocess.Popen(
        ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=symlinkat",
         "-e", "inject=symlinkat:signal=STOP:when=2", *command(daemons, "reconcile")],
        env=daemons.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # (strace stops it as its second link is made.)
    deadline = time.monotonic() + 60
    while len(daemons.links()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(daemons.links()) == 2 and holder.poll() is None, "the holder never stopped"
    # ...makes the next run wait (it is still running after a while)...
    waiter = subprocess.Popen(command(daemons, "reconcile"), env=daemons.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with pytest.raises(subprocess.TimeoutExpired):
        waiter.wait(timeout=3)
    assert len(daemons.links()) == 2
    # ...until the holder dies without releasing anything by itself.
    tracee = int(subprocess.run(["pgrep", "-P", str(holder.pid)], capture_output=True,
                                text=True, check=True).stdout.split()[0])
    os.kill(tracee, signal.SIGKILL)
    holder.communicate(timeout=60)
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, out + err
    assert_converged(daemons)
    # And the lock file the dead run left is no obstacle to a fresh run either.
    again = daemons.sysext("reconcile")
    assert again.returncode == 0 and again.stdout == "", again.stdout + again.stderr
