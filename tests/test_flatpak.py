# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The whole loop with the real flatpak: installs, updates and uninstalls run our trigger
inside bubblewrap, and ``reconcile`` does what flatpak-sysext.service would do."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from testsupport.flatpak import ARCH, FlatpakEnv, daemon_tree

pytestmark = pytest.mark.privileged

APP = "org.fsx.Profiler"
APP2 = "org.fsx.Tracer"


def reconcile(fenv: FlatpakEnv, *args: str) -> str:
    result = fenv.sysext("reconcile", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def link_stats(fenv: FlatpakEnv) -> dict[str, tuple[int, int]]:
    return {p.name: (p.lstat().st_ino, p.lstat().st_ctime_ns)
            for p in fenv.target_dir.iterdir()}


def test_install_update_uninstall_through_the_sandboxed_trigger(fenv: FlatpakEnv) -> None:
    fenv.publish(APP, daemon_tree(APP, "v1"))
    out = fenv.install(APP)
    # Inside bubblewrap the target directory is read-only: the trigger validates and
    # records a request for the service instead of linking.
    assert f"flatpak-sysext: {APP}: linked" in out.stdout + out.stderr
    assert "requested" in out.stdout + out.stderr
    assert fenv.links() == {}
    assert (fenv.system_dir / "flatpak-sysext" / "request").is_file()
    assert fenv.status()[APP]["state"] == "pending"

    assert f"{APP}: linked" in reconcile(fenv)
    assert not (fenv.system_dir / "flatpak-sysext" / "request").exists()
    v1 = fenv.snapshot(APP)
    assert fenv.links() == {APP: str(v1)}
    st = fenv.status()[APP]
    assert st["state"] == "linked" and st["target"] == str(v1)
    assert st["installation"] == str(fenv.system_dir)
    assert (Path(fenv.links()[APP]) / f"usr/libexec/{APP}/profilerd").is_file()

    # Update: a new commit, a new deploy directory; the link follows it.
    fenv.publish(APP, daemon_tree(APP, "v2"))
    fenv.update()
    v2 = fenv.snapshot(APP)
    assert v2 != v1
    assert f"{APP}: relinked" in reconcile(fenv)
    assert fenv.links() == {APP: str(v2)}

    # Update to an invalid commit (a dynamically linked daemon): link removed, rejected.
    fenv.publish(APP, daemon_tree(APP, "v3", static=False))
    out = fenv.update()
    assert f"{APP}: unlinked (requested; flatpak-sysext.service applies it), rejected: " \
        f"dynamic-elf usr/libexec/{APP}/profilerd" in out.stdout
    assert f"{APP}: unlinked, rejected: dynamic-elf" in reconcile(fenv)
    assert fenv.links() == {}
    st = fenv.status()[APP]
    assert st["state"] == "rejected"
    assert [p["code"] for p in st["problems"]] == ["dynamic-elf"]
    assert st["problems"][0]["path"] == f"usr/libexec/{APP}/profilerd"

    # Back to valid, then uninstall: the link goes away.
    fenv.publish(APP, daemon_tree(APP, "v4"))
    fenv.update()
    reconcile(fenv)
    assert APP in fenv.links()
    fenv.uninstall(APP)
    assert f"{APP}: unlinked, no longer installed" in reconcile(fenv)
    assert fenv.links() == {}
    assert APP not in fenv.status()


def test_unsandboxed_trigger_links_directly(fenv: FlatpakEnv) -> None:
    """Flatpak built with -Dsandboxed_triggers=false runs the trigger as is."""
    (fenv.triggers_dir / "flatpak-sysext.trigger").unlink()
    fenv.publish(APP, daemon_tree(APP, "v1"))
    fenv.install(APP)
    trigger = fenv.install_trigger()
    result = fenv.run(str(trigger), str(fenv.system_dir))
    assert result.returncode == 0
    assert f"flatpak-sysext: {APP}: linked" in result.stdout
    assert fenv.links() == {APP: fenv.snapshot(APP)}
    # Nothing changed: the second run prints nothing and touches nothing.
    before = link_stats(fenv)
    again = fenv.run(str(trigger), str(fenv.system_dir))
    assert again.stdout == "" and again.returncode == 0
    assert link_stats(fenv) == before


def test_second_reconcile_changes_nothing(fenv: FlatpakEnv) -> None:
    fenv.install_daemons(APP, APP2)
    reconcile(fenv)
    assert set(fenv.links()) == {APP, APP2}
    before = link_stats(fenv)
    assert reconcile(fenv) == ""
    assert link_stats(fenv) == before
    dry = fenv.sysext("reconcile", "--dry-run")
    assert dry.returncode == 0 and dry.stdout == ""


def test_user_installation_is_never_linked(fenv: FlatpakEnv, tmp_path: Path) -> None:
    fenv.publish(APP, daemon_tree(APP, "v1"))
    home = tmp_path / "home"
    home.mkdir()
    env = fenv.env | {"HOME": str(home), "XDG_DATA_HOME": str(home / "data")}
    import subprocess

    subprocess.run(["flatpak", "--user", "remote-add", "--no-gpg-verify", "test",
                    f"file://{fenv.repo}"], env=env, check=True, capture_output=True)
    out = subprocess.run(["flatpak", "--user", "install", "-y", "--noninteractive", "test",
                          f"app/{APP}/{ARCH}/stable"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    user_dir = home / "data" / "flatpak"
    assert (user_dir / "app" / APP).is_dir()
    assert "flatpak-sysext" not in out.stdout + out.stderr
    # Neither the trigger (even run by hand, as root) nor reconcile links it.
    by_hand = fenv.run(str(fenv.triggers_dir / "flatpak-sysext.trigger"), str(user_dir))
    assert by_hand.returncode == 0 and by_hand.stdout == "" and by_hand.stderr == ""
    assert not (user_dir / "flatpak-sysext").exists()
    reconcile(fenv)
    assert fenv.links() == {}
    bad = fenv.sysext("reconcile", "--installation", str(user_dir))
    assert bad.returncode == 2 and "not a system installation" in bad.stderr


def test_foreign_entries_are_never_touched(fenv: FlatpakEnv, tmp_path: Path) -> None:
    target = fenv.target_dir
    target.mkdir()
    (target / "some-dir-image").mkdir()
    (target / "some-dir-image" / "keep").write_text("mine")
    os.symlink("/srv/elsewhere", target / "unrelated-link")
    (target / "disk.raw").write_bytes(b"\0" * 512)
    (target / APP2).mkdir()  # A foreign entry named like an app that wants a link.
    fenv.install_daemons(APP, APP2)
    before = {p.name: (p.lstat().st_ino, p.lstat().st_mtime_ns) for p in target.iterdir()}
    out = fenv.sysext("reconcile")
    assert out.returncode == 0, out.stderr
    after = {p.name: (p.lstat().st_ino, p.lstat().st_mtime_ns) for p in target.iterdir()}
    assert set(after) == set(before) | {APP}
    assert all(after[n] == before[n] for n in before)
    assert (target / "some-dir-image" / "keep").read_text() == "mine"
    st = fenv.status()
    assert st[APP]["state"] == "linked"
    assert st[APP2]["state"] == "conflict"
    assert "not ours" in st[APP2]["reason"]
    assert {n for n, s in st.items() if s["state"] == "foreign"} == {
        "some-dir-image", "unrelated-link", "disk.raw"}
    # Uninstalling everything removes only our link.
    fenv.uninstall(APP)
    fenv.uninstall(APP2)
    reconcile(fenv)
    assert {p.name for p in target.iterdir()} == set(before)


def test_the_output_tells_what_the_service_did_before_the_trigger_ran(fenv: FlatpakEnv) -> None:
    """Flatpak bumps .changed before it runs triggers, so flatpak-sysext.service often
    links, relinks or unlinks before the trigger runs and leaves it nothing to do; the
    trigger still says what became of the app, once."""
    trigger = fenv.triggers_dir / "flatpak-sysext.trigger"
    plain = "org.fsx.Plain"  # declares no extension: its transactions only run the trigger
    fenv.publish(plain, None, declare=None)

    def service_first(step: Callable[[], object]) -> str:
        trigger.unlink()
        step()  # Flatpak deploys or removes; the trigger has not run yet...
        reconcile(fenv)  # ...and the service gets there first.
        fenv.install_trigger()
        told = fenv.install(plain)  # the next trigger run inside bubblewrap
        again = fenv.uninstall(plain)
        assert "flatpak-sysext" not in again.stdout + again.stderr
        return told.stdout + told.stderr

    fenv.publish(APP, daemon_tree(APP, "v1"))
    out = service_first(lambda: fenv.install(APP))
    assert f"flatpak-sysext: {APP}: linked, commit {fenv.commit(APP)[:12]}, " in out, out
    fenv.publish(APP, daemon_tree(APP, "v2"))
    out = service_first(fenv.update)
    assert f"flatpak-sysext: {APP}: relinked to commit {fenv.commit(APP)[:12]}, " in out, out
    fenv.publish(APP, daemon_tree(APP, "v3", static=False))
    out = service_first(fenv.update)
    assert (f"flatpak-sysext: {APP}: unlinked, rejected: dynamic-elf "
            f"usr/libexec/{APP}/profilerd") in out, out
    fenv.publish(APP, daemon_tree(APP, "v4"))
    out = service_first(fenv.update)
    assert f"flatpak-sysext: {APP}: linked, commit {fenv.commit(APP)[:12]}, " in out, out
    out = service_first(lambda: fenv.uninstall(APP))
    assert f"flatpak-sysext: {APP}: unlinked, no longer installed" in out, out
    assert fenv.links() == {}
