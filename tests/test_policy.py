# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Policy through the command line with real Flatpak installations: signed and unsigned
remotes, bundles, allow/deny globs, the remotes list, host shadowing, and policy changes
between runs."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from testsupport.flatpak import FlatpakEnv, daemon_tree, have_flatpak, write_release
from testsupport.prerequisites import require

pytestmark = pytest.mark.privileged

APP = "org.fsx.Profiler"
APP2 = "org.fsx.Tracer"
OTHER = "org.other.Tool"
BUNDLED = "org.fsx.Bundled"
KEYED = "org.fsx.Keyed"
GPG_RULE = "does not verify GPG signatures (require_gpg_verified_remote)"


@pytest.fixture
def signed(tmp_path: Path) -> Iterator[FlatpakEnv]:
    """A Flatpak world whose repository is signed and whose ``test`` remote verifies it."""
    require(have_flatpak() and shutil.which("gpg") is not None,
            "flatpak, bubblewrap and gpg are needed, as root")
    env = FlatpakEnv(tmp_path / "world", signed=True)
    env.install_trigger()
    yield env
    env.close()
    shutil.rmtree(tmp_path / "world", ignore_errors=True)


def states(env: FlatpakEnv) -> dict[str, tuple[str, str | None]]:
    return {name: (s["state"], s["reason"]) for name, s in env.status().items()}


def reconcile(env: FlatpakEnv) -> str:
    result = env.sysext("reconcile")
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def target(env: FlatpakEnv, app_id: str) -> str:
    return env.snapshot(app_id)


def test_verified_remote_is_linked_unverified_remote_denied(signed: FlatpakEnv) -> None:
    # Left out on purpose: require_gpg_verified_remote is true by default.
    signed.config_file.write_text(json.dumps({"target_dir": str(signed.target_dir),
                                              "host_sync": False, "allow": ["*"]}))
    signed.publish(APP, daemon_tree(APP, "v1"))
    signed.publish(APP2, daemon_tree(APP2, "v1"))
    signed.install(APP)
    signed.add_remote("plain", verify=False)
    out = signed.install(APP2, remote="plain")
    # The sandboxed trigger tells the admin at install time.
    assert f"flatpak-sysext: {APP2}: denied: origin remote 'plain' {GPG_RULE}" in out.stdout

    assert f"{APP}: linked" in reconcile(signed)
    assert signed.links() == {APP: target(signed, APP)}
    st = signed.status()
    assert (st[APP]["state"], st[APP]["origin"]) == ("linked", "test")
    assert (st[APP2]["state"], st[APP2]["origin"]) == ("denied", "plain")
    assert st[APP2]["reason"] == f"origin remote 'plain' {GPG_RULE}"

    # The admin opts out: the next run links what was denied.
    signed.write_config({"require_gpg_verified_remote": False})
    assert f"{APP2}: linked" in reconcile(signed)
    assert set(signed.links()) == {APP, APP2}


def test_bundle_origin_remote_is_denied_without_a_key(signed: FlatpakEnv) -> None:
    signed.publish(BUNDLED, daemon_tree(BUNDLED, "v1"))
    signed.publish(KEYED, daemon_tree(KEYED, "v1"))
    signed.install_bundle(BUNDLED)
    # A bundle that carries the key: Flatpak verifies it (an unsigned one fails to
    # install), and its -origin remote keeps gpg-verify=true.
    signed.install_bundle(KEYED, with_key=True)
    # Verified, but the allow pattern never consents to a bundle: it waits for approve.
    assert f"{KEYED}: waiting:" in reconcile(signed)
    assert signed.links() == {}
    assert signed.sysext("approve", KEYED).returncode == 0
    assert signed.links() == {KEYED: target(signed, KEYED)}
    st = signed.status()
    origin = st[BUNDLED]["origin"]
    assert origin.endswith("-origin") and st[KEYED]["origin"].endswith("-origin")
    assert (st[BUNDLED]["state"], st[BUNDLED]["reason"]) == (
        "denied", f"origin remote {origin!r} {GPG_RULE}")


def test_verification_turned_off_later_denies_and_unlinks(signed: FlatpakEnv) -> None:
    signed.publish(APP, daemon_tree(APP, "v1"))
    signed.install(APP)
    reconcile(signed)
    assert signed.links() == {APP: target(signed, APP)}
    signed.flatpak("--system", "remote-modify", "--no-gpg-verify", "test")
    assert f"{APP}: unlinked, denied: origin remote 'test' {GPG_RULE}" in reconcile(signed)
    assert signed.links() == {}


def test_allow_and_deny_globs_deny_wins(fenv: FlatpakEnv) -> None:
    for app_id in (APP, APP2, OTHER):
        fenv.publish(app_id, daemon_tree(app_id, "v1"))
        fenv.install(app_id)
    fenv.write_config({"allow": ["org.fsx.*"], "deny": ["*.Tracer"]})
    reconcile(fenv)
    assert fenv.links() == {APP: target(fenv, APP)}
    # An app no allow pattern covers is not refused: it waits for consent (approve).
    found = states(fenv)
    assert {k: v for k, v in found.items() if k != OTHER} == {
        APP: ("linked", None),
        APP2: ("denied", "matches deny pattern '*.Tracer'"),
    }
    assert found[OTHER][0] == "waiting"
    assert f"flatpak-sysext approve {OTHER}" in str(found[OTHER][1])
    # Globs are case-sensitive and whole-ID: "org.fsx" alone allows nothing.
    fenv.write_config({"allow": ["org.fsx", "ORG.*"]})
    assert {k: s for k, (s, _) in states(fenv).items()} == {
        APP: "waiting", APP2: "waiting", OTHER: "waiting"}
    # An exact allow does not beat a deny glob.
    fenv.write_config({"allow": [APP2], "deny": ["org.fsx.*"]})
    assert states(fenv)[APP2] == ("denied", "matches deny pattern 'org.fsx.*'")
    # Nothing allowed at all: every app waits.
    fenv.write_config({"allow": []})
    assert {s for s, _ in states(fenv).values()} == {"waiting"}


def test_remotes_allow_list(fenv: FlatpakEnv) -> None:
    fenv.publish(APP, daemon_tree(APP, "v1"))
    fenv.publish(OTHER, daemon_tree(OTHER, "v1"))
    fenv.install(APP)
    fenv.add_remote("other", verify=False)
    fenv.install(OTHER, remote="other")
    fenv.write_config({"remotes": ["test"]})
    reconcile(fenv)
    assert fenv.links() == {APP: target(fenv, APP)}
    assert states(fenv)[OTHER] == ("denied", "origin remote 'other' is not in remotes")
    fenv.write_config({"remotes": []})
    assert f"{APP}: unlinked, denied: origin remote 'test' is not in remotes" in reconcile(fenv)
    fenv.write_config({"remotes": None})
    assert set(reconcile(fenv).splitlines()) == {
        f"{a}: linked, commit {fenv.commit(a)[:12]}" for a in (APP, OTHER)}


def test_policy_change_between_runs(fenv: FlatpakEnv) -> None:
    fenv.install_daemons(APP, APP2)
    reconcile(fenv)
    assert set(fenv.links()) == {APP, APP2}
    kept = (fenv.target_dir / APP2).lstat().st_ino

    fenv.write_config({"deny": [APP]})
    dry = fenv.sysext("reconcile", "--dry-run")
    assert dry.stdout == f"would unlink {APP}\n" and APP in fenv.links()
    assert reconcile(fenv) == f"{APP}: unlinked, denied: matches deny pattern '{APP}'\n"
    assert fenv.links() == {APP2: target(fenv, APP2)}
    assert (fenv.target_dir / APP2).lstat().st_ino == kept
    assert states(fenv)[APP] == ("denied", f"matches deny pattern '{APP}'")
    assert reconcile(fenv) == ""

    # The trigger applies a change of policy too (run by hand, unsandboxed).
    fenv.write_config({"deny": [APP2]})
    trigger = fenv.triggers_dir / "flatpak-sysext.trigger"
    out = fenv.run(str(trigger), str(fenv.system_dir)).stdout
    assert f"flatpak-sysext: {APP}: linked" in out
    assert f"flatpak-sysext: {APP2}: unlinked, denied: matches deny pattern '{APP2}'" in out
    assert fenv.links() == {APP: target(fenv, APP)}

    fenv.write_config({})
    assert reconcile(fenv) == f"{APP2}: linked, commit {fenv.commit(APP2)[:12]}\n"
    assert set(fenv.links()) == {APP, APP2}


def shadowing_tree(root: Path) -> None:
    """An extension that ships a file the host certainly has: /usr/bin/env."""
    write_release(root, APP)
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/env").write_text("#!/bin/sh\nexit 0\n")
    (root / "usr/bin/env").chmod(0o755)


def test_host_shadowing_is_rejected_unless_allowed(fenv: FlatpakEnv) -> None:
    assert os.path.isfile("/usr/bin/env")
    fenv.publish(APP, shadowing_tree)
    fenv.install(APP)
    reconcile(fenv)
    assert fenv.links() == {}
    st = fenv.status()[APP]
    assert st["state"] == "rejected"
    assert [(p["code"], p["path"]) for p in st["problems"]] == [
        ("shadows-host-file", "usr/bin/env")]

    fenv.write_config({"allow_host_shadowing": True})
    assert f"{APP}: linked" in reconcile(fenv)
    assert fenv.links() == {APP: target(fenv, APP)}
    assert fenv.status()[APP]["problems"] == []

    fenv.write_config({"allow_host_shadowing": False})
    assert f"{APP}: unlinked, rejected: shadows-host-file usr/bin/env" in reconcile(fenv)
    assert fenv.links() == {}
