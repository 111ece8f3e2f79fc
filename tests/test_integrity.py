# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""What a hostile app or a local user can do to the runs of everyone else, with the real
Flatpak (docs/reference.md#untrusted-input, docs/reference.md#locks,
docs/reference.md#state-directory).

Each case is what an attacker would actually do: ship a tree Flatpak deploys but the
host cannot name, take a lock, edit the files the sandboxed trigger can write.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testsupport.flatpak import ARCH, FlatpakEnv, TreeBuilder, daemon_tree
from testsupport.prerequisites import require_flatpak, require_tools

pytestmark = pytest.mark.privileged

GOOD = "org.fsx.Good"
BAD = "org.fsx.Bad"
OTHER = "org.fsx.Other"


def deep_tree(app_id: str) -> TreeBuilder:
    """A valid daemon tree plus a file under 17 nested directories with 255-byte names:
    Flatpak deploys it (OSTree works relative to each directory), but its path on the
    host is longer than PATH_MAX."""
    base = daemon_tree(app_id, "deep")

    def build(root: Path) -> None:
        base(root)
        where = root / "usr/share" / app_id
        where.mkdir(parents=True)
        fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for i in range(17):
                name = chr(ord("a") + i) * 255
                os.mkdir(name, 0o755, dir_fd=fd)
                new = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = new
            os.close(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
        finally:
            os.close(fd)

    return build


def test_a_tree_the_host_cannot_name_is_rejected_and_stops_nobody(fenv: FlatpakEnv) -> None:
    fenv.publish(BAD, deep_tree(BAD))
    fenv.install(BAD)
    fenv.publish(GOOD, daemon_tree(GOOD, "good"))
    fenv.install(GOOD)
    for _ in range(2):  # and again: no verdict of the first run makes the second fail
        result = fenv.sysext("reconcile")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert fenv.links() == {GOOD: fenv.snapshot(GOOD)}
        bad = fenv.status()[BAD]
        assert bad["state"] == "rejected"
        assert {p["code"] for p in bad["problems"]} == {"path-too-long"}


# Takes every lock file given that it can open, even read-only (flock needs no more),
# says which, and holds them until killed.
HOLDER = r"""
import fcntl, os, sys, time
held = []
for path in sys.argv[1:]:
    try:
        fd = os.open(path, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        held.append(path)
    except OSError:
        pass
print(" ".join(held), flush=True)
time.sleep(3600)
"""


def lock_files(fenv: FlatpakEnv) -> list[str]:
    """Every lock file a run of any version takes for this installation."""
    return [str(fenv.system_dir / "flatpak-sysext/lock"), str(fenv.state_dir / "lock")]


@contextlib.contextmanager
def holding(argv: list[str], fenv: FlatpakEnv) -> Iterator[list[str]]:
    """Run HOLDER (behind ``argv``, e.g. setpriv) on the lock files; yields those it holds."""
    proc = subprocess.Popen([*argv, sys.executable, "-c", HOLDER, *lock_files(fenv)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().split()
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def open_world() -> Iterator[FlatpakEnv]:
    """A Flatpak world other users can reach, as /var/lib/flatpak is (pytest's own
    temporary directories are 0700)."""
    require_flatpak()
    require_tools("setpriv")
    root = Path(tempfile.mkdtemp(prefix="fsx-integrity-"))
    root.chmod(0o755)
    fenv = FlatpakEnv(root / "world")
    fenv.install_trigger()
    yield fenv
    shutil.rmtree(root, ignore_errors=True)


def install(fenv: FlatpakEnv, app_id: str) -> subprocess.CompletedProcess[str]:
    """``flatpak install``, which must not hang: it runs our trigger."""
    return subprocess.run(["flatpak", "--system", "install", "-y", "--noninteractive", "test",
                           f"app/{app_id}/{ARCH}/stable"], env=fenv.env, capture_output=True,
                          text=True, timeout=60, check=True)


def test_a_local_user_cannot_stall_flatpak_or_the_service(open_world: FlatpakEnv) -> None:
    fenv = open_world
    fenv.publish(GOOD, daemon_tree(GOOD, "good"))
    install(fenv, GOOD)
    assert fenv.sysext("reconcile").returncode == 0  # every state file there is now exists
    fenv.publish(OTHER, daemon_tree(OTHER, "other"))
    nobody = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
    with holding(nobody, fenv) as held:
        install(fenv, OTHER)  # the trigger (sandboxed) asks the service...
        result = subprocess.run([fenv.python, "-m", "flatpak_sysext", "reconcile"],
                                env=fenv.env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert set(fenv.links()) == {GOOD, OTHER}  # ...and the service does it
        assert held == []  # it could not even open one
    assert stat.S_IMODE(os.stat(fenv.state_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(fenv.state_dir / "lock").st_mode) == 0o600


def test_the_trigger_never_hangs_a_transaction(open_world: FlatpakEnv) -> None:
    fenv = open_world
    fenv.publish(GOOD, daemon_tree(GOOD, "good"))
    install(fenv, GOOD)
    assert fenv.sysext("reconcile").returncode == 0
    fenv.publish(OTHER, daemon_tree(OTHER, "other"))
    with holding([], fenv) as held:  # a run of root's that does not let go
        assert held
        started = time.monotonic()
        out = install(fenv, OTHER).stdout
        assert time.monotonic() - started < 90
        assert "could not get the lock" in out and "left a request" in out, out
        assert (fenv.system_dir / "flatpak-sysext/request").exists()
        assert set(fenv.links()) == {GOOD}
    # The request is no instruction, only a reason to run: the service decides afresh.
    result = fenv.sysext("reconcile")
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(fenv.links()) == {GOOD, OTHER}
    assert not (fenv.system_dir / "flatpak-sysext/request").exists()


def test_a_forged_verdict_in_the_installation_links_nothing(fenv: FlatpakEnv) -> None:
    fenv.publish(BAD, daemon_tree(BAD, "dynamic", static=False))
    fenv.install(BAD)  # the sandboxed trigger judges it, and keeps its verdict there
    forged = fenv.system_dir / "flatpak-sysext/cache.json"
    data = json.loads(forged.read_text())
    assert [p["code"] for p in data["apps"][BAD]["report"]["problems"]] == ["dynamic-elf"]
    # What a root process in Flatpak's sandbox (any trigger) can write: no problems.
    data["apps"][BAD]["report"]["problems"] = []
    forged.write_text(json.dumps(data))
    result = fenv.sysext("reconcile")
    assert fenv.links() == {}
    assert fenv.status()[BAD]["state"] == "rejected", result.stdout


@pytest.mark.parametrize("whose", ["a deployed file", "the installation", "repo/config"])
def test_what_another_user_owns_is_never_linked(fenv: FlatpakEnv, whose: str) -> None:
    fenv.publish(GOOD, daemon_tree(GOOD, "good"))
    fenv.install(GOOD)  # the sandboxed trigger accepts it, and asks the service
    # What that user can then change at will, whatever the modes say.
    path = {"a deployed file": fenv.deploy_files(GOOD) / "lib/extensions/usr/lib/systemd"
                                / "system/good.service",
            "the installation": fenv.system_dir,
            "repo/config": fenv.system_dir / "repo/config"}[whose]
    os.chown(path, 65534, 65534)
    result = fenv.sysext("reconcile")
    assert fenv.links() == {}, result.stdout + result.stderr
    st = fenv.status()[GOOD]
    assert st["state"] == "rejected"
    # A deployed file's owner is part of what the signed commit says it is.
    code = "content-mismatch" if whose == "a deployed file" else "not-owned-by-root"
    assert [p["code"] for p in st["problems"]] == [code]


def test_what_is_merged_is_what_was_validated(fenv: FlatpakEnv) -> None:
    fenv.publish(GOOD, daemon_tree(GOOD, "good"))
    fenv.install(GOOD)
    assert fenv.sysext("reconcile").returncode == 0
    daemon = fenv.deploy_files(GOOD) / f"lib/extensions/usr/libexec/{GOOD}/good"
    validated = daemon.read_bytes()
    # A root process with the installation writable (any trigger) swaps the daemon in
    # place for another binary: the deployment is not what was validated any more.
    replaced = daemon.with_name("new")
    replaced.write_bytes(b"#!/bin/sh\necho replaced\n")
    replaced.chmod(0o755)
    os.rename(replaced, daemon)
    result = fenv.sysext("reconcile")
    assert result.returncode == 0, result.stdout + result.stderr
    linked = Path(fenv.links()[GOOD])
    assert (linked / f"usr/libexec/{GOOD}/good").read_bytes() == validated


def test_an_update_keeps_what_the_merge_uses(fenv: FlatpakEnv) -> None:
    fenv.publish(GOOD, daemon_tree(GOOD, "v1"))
    fenv.install(GOOD)
    assert fenv.sysext("reconcile").returncode == 0
    v1 = fenv.links()[GOOD]
    old = fenv.deploy_files(GOOD)
    fenv.publish(GOOD, daemon_tree(GOOD, "v2"))
    fenv.update()  # the sandboxed trigger only asks; the link still points at v1
    assert not old.exists()  # Flatpak removed the deployment it was made from...
    assert Path(v1, f"usr/libexec/{GOOD}/good").is_file()  # ...not what is merged
    assert fenv.sysext("reconcile").returncode == 0
    assert fenv.links()[GOOD] != v1
    # Unlinked in this boot: the old overlay (detached lazily) may still read it.
    assert Path(v1, f"usr/libexec/{GOOD}/good").is_file()


def test_a_link_into_a_deployment_is_moved_to_a_snapshot(fenv: FlatpakEnv) -> None:
    fenv.publish(GOOD, daemon_tree(GOOD, "good"))
    fenv.install(GOOD)
    # What earlier versions made: a link into the deployment itself.
    fenv.target_dir.mkdir(exist_ok=True)
    (fenv.target_dir / GOOD).symlink_to(fenv.deploy_files(GOOD) / "lib/extensions")
    result = fenv.sysext("reconcile")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{GOOD}: relinked" in result.stdout
    assert fenv.links() == {GOOD: fenv.snapshot(GOOD)}
    assert fenv.status()[GOOD]["state"] == "linked"
