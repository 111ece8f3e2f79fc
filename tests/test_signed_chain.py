# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""What is linked is what the consented publisher signed (docs/reference.md#consent,
docs/reference.md#snapshots): each attack is what a writer of the installation (any
trigger Flatpak runs as root) would do, on a real signed ``flatpak install``."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flatpak_sysext.state import consent, store
from testsupport.flatpak import ARCH, FlatpakEnv, daemon_tree
from testsupport.prerequisites import require_available, require_flatpak

pytestmark = pytest.mark.privileged

APP = "org.fsx.Chain"
OTHER = "org.fsx.Another"
DAEMON = f"lib/extensions/usr/libexec/{APP}/chaind"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FlatpakEnv]:
    """A signed repository; the configuration consents to nothing, approve does."""
    require_flatpak()
    env = FlatpakEnv(tmp_path / "world", signed=True)
    env.write_config({"allow": []})
    yield env
    env.close()


def problems(env: FlatpakEnv, app_id: str = APP) -> list[str]:
    return [p["code"] for p in env.status()[app_id]["problems"]]


def approved(env: FlatpakEnv, message: str = "v1") -> str:
    """APP published, installed, approved and linked; its snapshot."""
    env.publish(APP, daemon_tree(APP, message))
    env.install(APP)
    result = env.sysext("approve", APP)
    assert result.returncode == 0, result.stdout + result.stderr
    assert env.links() == {APP: env.snapshot(APP)}
    return env.snapshot(APP)


def replace_daemon(files: Path) -> None:
    daemon = files / DAEMON
    daemon.unlink()
    daemon.write_text("#!/bin/sh\nexec /bin/sh\n")
    daemon.chmod(0o755)


def test_a_forged_deployment_beside_the_signed_one_is_never_linked(world: FlatpakEnv) -> None:
    before = approved(world)
    # Copied from the active deployment (its deploy file names the signed commit), the
    # daemon replaced, `active` pointed at it, `.changed` touched.
    branch = world.system_dir / "app" / APP / ARCH / "stable"
    forged = branch / ("a" * 64)
    shutil.copytree(branch / "active", forged, symlinks=True)
    replace_daemon(forged / "files")
    os.unlink(branch / "active")
    os.symlink(forged.name, branch / "active")
    (world.system_dir / ".changed").touch()
    result = world.sysext("reconcile")
    assert f"{APP}: unlinked, rejected" in result.stdout, result.stdout + result.stderr
    assert "content-mismatch" in result.stdout
    assert problems(world) == ["content-mismatch"]
    assert world.links() == {}
    # Nothing of it reached the store.
    assert not os.path.exists(world.snapshot(APP)) and os.path.isdir(before)


def test_a_file_changed_in_place_before_the_first_run_is_never_linked(
        world: FlatpakEnv) -> None:
    world.write_config({"allow": [APP]})
    world.publish(APP, daemon_tree(APP, "v1"))
    world.install(APP)  # no trigger installed: nothing ran yet
    replace_daemon(world.deploy_files(APP))
    result = world.sysext("reconcile")
    assert "content-mismatch" in result.stdout, result.stdout + result.stderr
    assert world.links() == {} and problems(world) == ["content-mismatch"]
    assert not os.path.exists(world.snapshot(APP))


def test_a_keyring_changed_in_the_repository_makes_the_app_wait(world: FlatpakEnv) -> None:
    approved(world)
    keyring = world.system_dir / "repo/test.trustedkeys.gpg"
    pinned = keyring.read_bytes()
    # The same primary keys (the fingerprints consent records), other bytes: not the
    # keyring pinned at approve.
    keyring.write_bytes(pinned + pinned)
    result = world.sysext("reconcile")
    assert f"{APP}: unlinked, waiting" in result.stdout, result.stdout + result.stderr
    assert "keyring" in result.stdout and world.links() == {}
    keyring.write_bytes(pinned)
    assert world.sysext("reconcile").returncode == 0 and APP in world.links()
    # Another key altogether.
    other = FlatpakEnv(world.root.parent / "other", signed=True)
    try:
        keyring.write_bytes(other.pubkey.read_bytes())
        result = world.sysext("reconcile")
        assert f"{APP}: unlinked, waiting" in result.stdout, result.stdout + result.stderr
        assert world.links() == {}
    finally:
        other.close()


def test_a_commit_signed_by_another_key_is_never_linked(world: FlatpakEnv) -> None:
    approved(world)
    keyring = world.system_dir / "repo/test.trustedkeys.gpg"
    pinned = keyring.read_bytes()
    other = FlatpakEnv(world.root.parent / "other", signed=True)
    try:
        # Signed by another key, deployed by Flatpak with that key swapped in, then the
        # keyring put back: the repository now says what it said at approve.
        own = world.gpg_home, world.key_id
        world.gpg_home, world.key_id = other.gpg_home, other.key_id
        world.publish(APP, daemon_tree(APP, "evil"))
        keyring.write_bytes(other.pubkey.read_bytes())
        world.update()
        keyring.write_bytes(pinned)
        world.gpg_home, world.key_id = own
    finally:
        other.close()
    result = world.sysext("reconcile")
    assert "signature-invalid" in result.stdout, result.stdout + result.stderr
    assert problems(world) == ["signature-invalid"] and world.links() == {}


def test_a_signed_commit_of_another_app_is_never_linked(world: FlatpakEnv) -> None:
    approved(world)
    world.publish(OTHER, daemon_tree(OTHER, "other"), extra_metadata="")
    world.install(OTHER)
    # The other app's deployment (validly signed, for its own ref) put in APP's place.
    branch = world.system_dir / "app" / APP / ARCH / "stable"
    theirs = (world.system_dir / "app" / OTHER / ARCH / "stable" / "active").resolve()
    forged = branch / theirs.name
    shutil.copytree(theirs, forged, symlinks=True)
    for p in (forged / "files/lib/extensions/usr/lib/extension-release.d").iterdir():
        p.rename(p.with_name(f"extension-release.{APP}"))
    os.unlink(branch / "active")
    os.symlink(forged.name, branch / "active")
    result = world.sysext("reconcile")
    assert "ref-binding-mismatch" in result.stdout, result.stdout + result.stderr
    assert problems(world) == ["ref-binding-mismatch"] and APP not in world.links()


def test_a_rollback_to_an_older_commit_waits_for_approve(world: FlatpakEnv) -> None:
    approved(world)
    v1 = world.commit(APP)
    time.sleep(1.1)  # commit timestamps are in seconds
    world.publish(APP, daemon_tree(APP, "v2"))
    world.update()
    assert world.sysext("reconcile").returncode == 0
    assert world.status()[APP]["state"] == "linked"
    world.flatpak("--system", "update", "-y", "--noninteractive", f"--commit={v1}", APP)
    assert world.commit(APP) == v1
    result = world.sysext("reconcile")
    assert f"{APP}: unlinked, waiting" in result.stdout and "rollback" in result.stdout, \
        result.stdout
    assert world.sysext("approve", APP).returncode == 0
    assert world.links() == {APP: world.snapshot(APP)}


def test_an_unsigned_remote_pins_the_commit_approved(fenv: FlatpakEnv) -> None:
    fenv.write_config({"allow": []})
    fenv.publish(APP, daemon_tree(APP, "v1"))
    fenv.install(APP)
    approve = fenv.sysext("approve", APP)
    assert approve.returncode == 0 and "every new commit waits" in approve.stdout
    fenv.publish(APP, daemon_tree(APP, "v2"))  # grants the same, but nothing proves who
    fenv.update()
    result = fenv.sysext("reconcile")
    assert f"{APP}: unlinked, waiting" in result.stdout, result.stdout
    assert "does not verify signatures" in result.stdout
    assert fenv.sysext("approve", APP).returncode == 0
    assert fenv.links() == {APP: fenv.snapshot(APP)}


SPARSE = f"lib/extensions/usr/share/{APP}/huge"


def sparse_install(env: FlatpakEnv, app_id: str) -> None:
    env.publish(app_id, daemon_tree(app_id, "v1"))
    env.install(app_id)
    huge = env.deploy_files(app_id) / SPARSE.replace(APP, app_id)
    huge.parent.mkdir(parents=True)
    with open(huge, "wb") as f:
        f.truncate(1 << 40)


def store_contents(env: FlatpakEnv) -> list[str]:
    where = store.directory(str(env.state_dir), os.path.realpath(env.system_dir))
    return os.listdir(where) if os.path.isdir(where) else []


def test_a_terabyte_of_holes_is_refused_before_anything_is_copied(world: FlatpakEnv) -> None:
    world.write_config({"allow": ["*"], "deny": [OTHER]})
    sparse_install(world, APP)
    sparse_install(world, OTHER)
    result = world.sysext("reconcile")
    assert "tree-too-large" in result.stdout, result.stdout + result.stderr
    st = world.status()
    assert [p["code"] for p in st[APP]["problems"]] == ["tree-too-large"]
    assert (st[OTHER]["state"], st[OTHER]["problems"]) == ("denied", [])
    assert store_contents(world) == [] and world.links() == {}


def test_a_denied_app_is_never_copied(world: FlatpakEnv) -> None:
    world.write_config({"allow": ["*"], "deny": [OTHER]})
    world.publish(OTHER, daemon_tree(OTHER, "v1"))
    world.install(OTHER)
    assert world.sysext("reconcile").returncode == 0
    assert world.status()[OTHER]["state"] == "denied"
    assert store_contents(world) == []


def test_a_copy_that_waits_is_discarded(world: FlatpakEnv) -> None:
    world.publish(APP, daemon_tree(APP, "v1"))
    world.install(APP)
    assert world.sysext("reconcile").returncode == 0
    assert world.status()[APP]["state"] == "waiting"
    assert store_contents(world) == []


def record(env: FlatpakEnv) -> dict[str, Any]:
    data = json.loads((env.state_dir / consent.FILE_NAME).read_text())
    assert isinstance(data, dict)
    return data


def test_the_record_pins_the_keyring_bytes_in_the_state_directory(world: FlatpakEnv) -> None:
    approved(world)
    data = record(world)
    mine = data["apps"][APP]
    assert data["format"] == 2 and mine["how"] == "approve"
    assert mine["by"] == f"uid {os.getuid()}" and mine["linked_commit"] == world.commit(APP)
    pinned = world.state_dir / "keyrings" / f"{mine['keyring']}.gpg"
    assert pinned.read_bytes() == (world.system_dir / "repo/test.trustedkeys.gpg").read_bytes()
    assert os.stat(pinned).st_mode & 0o777 == 0o600


def test_a_first_format_record_is_migrated_and_unlinks_nobody(world: FlatpakEnv) -> None:
    approved(world)
    # As the previous release left it: format 1, the grants of the model before.
    mine = record(world)["apps"][APP]
    old = {"format": 1, "apps": {APP: {"origin": mine["origin"], "grants": ["an old sentence"],
                                       "how": "approve"}}}
    (world.state_dir / consent.FILE_NAME).write_text(json.dumps(old))
    shutil.rmtree(world.state_dir / "keyrings")
    result = world.sysext("reconcile")
    assert result.returncode == 0, result.stdout + result.stderr
    assert world.links() == {APP: world.snapshot(APP)}
    assert world.status()[APP]["state"] == "linked"
    now = record(world)
    assert now["format"] == 2 and now["apps"][APP]["grants"] == mine["grants"]
    assert now["apps"][APP]["keyring"] == mine["keyring"]
    assert (world.state_dir / "keyrings" / f"{mine['keyring']}.gpg").is_file()


def test_a_snapshot_stays_valid_when_the_repository_prunes_its_commit(
        world: FlatpakEnv) -> None:
    approved(world)
    # Verified when the snapshot was made, never again: a run that changes nothing
    # reads no object (here: there are none left to read).
    objects = world.system_dir / "repo/objects"
    objects.rename(objects.with_name("objects.gone"))
    (world.system_dir / ".changed").touch()
    result = world.sysext("reconcile")
    assert result.returncode == 0, result.stdout + result.stderr
    assert world.links() == {APP: world.snapshot(APP)}
    st = world.status()[APP]
    assert (st["state"], st["problems"]) == ("linked", [])


def test_an_allow_pattern_pins_the_keyring_at_the_first_link(world: FlatpakEnv) -> None:
    world.write_config({"allow": ["org.fsx.*"]})
    world.publish(APP, daemon_tree(APP, "v1"))
    world.install(APP)
    result = world.sysext("reconcile")
    assert f"{APP}: linked, commit " in result.stdout, result.stdout + result.stderr
    assert "trust on first use" in result.stdout
    mine = record(world)["apps"][APP]
    assert (mine["how"], mine["by"]) == ("allow", "org.fsx.*")
    keyring = world.system_dir / "repo/test.trustedkeys.gpg"
    keyring.write_bytes(keyring.read_bytes() * 2)  # the same keys, other bytes
    result = world.sysext("reconcile")
    assert f"{APP}: unlinked, waiting" in result.stdout, result.stdout + result.stderr


def test_a_state_directory_on_another_filesystem_still_links(world: FlatpakEnv) -> None:
    # The state directory on a tmpfs, the installation on the disk: copy_file_range
    # cannot cross them (EXDEV), a plain copy does.
    shm = Path("/dev/shm")
    require_available(shm.is_dir() and os.stat(shm).st_dev != os.stat(world.root).st_dev,
                      "/dev/shm on a filesystem of its own")
    world.state_dir = Path(tempfile.mkdtemp(dir=shm, prefix="fsx-state-"))
    try:
        approved(world)
        assert Path(world.snapshot(APP), f"usr/libexec/{APP}/chaind").is_file()
    finally:
        shutil.rmtree(world.state_dir, ignore_errors=True)
