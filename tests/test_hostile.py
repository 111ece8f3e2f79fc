# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Hostile installations, as an attacker with a malicious app would build them
(docs/reference.md#links-and-ownership, docs/problems.md).

Some are built and installed with the real flatpak (Flatpak lets an app ship any
symlink and declare any path); the others edit an installed layout by hand, where
Flatpak itself would never write it. Whatever the case: nothing outside the
deployment's ``files/`` is ever linked, the hostile app is rejected (or, for a layout
Flatpak cannot have written, left alone and reported), and the good app stays linked.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testsupport.flatpak import ARCH, FlatpakEnv, TreeBuilder, daemon_tree
from testsupport.prerequisites import require_flatpak

pytestmark = pytest.mark.privileged

GOOD = "org.fsx.Good"
OUT = "org.fsx.Out"  # valid as installed; the hand-edited cases move its pieces outside


def evil_tree(where: Path, app_id: str) -> Path:
    """A perfectly valid extension tree outside every deployment: the bait."""
    daemon_tree(app_id, "evil")(where)
    return where


def symlinked(link: str, target: str) -> TreeBuilder:
    """Make the declared path (``lib/extensions``) itself a symlink to ``target``."""
    def build(root: Path) -> None:
        root.rmdir()
        os.symlink(target, root)
    return build


def parent_symlinked(target: str) -> TreeBuilder:
    """Make ``lib`` (a component of the declared path) a symlink to ``target``."""
    def build(root: Path) -> None:
        root.rmdir()
        root.parent.rmdir()
        os.symlink(target, root.parent)
    return build


# The installation, and the problem code each hostile app must be refused with.
HostileApps = tuple[FlatpakEnv, dict[str, str]]


@pytest.fixture(scope="module")
def hostile_apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileApps]:
    require_flatpak()
    root = tmp_path_factory.mktemp("hostile")
    fenv = FlatpakEnv(root / "world")
    bait = root / "bait"
    hostile: dict[str, tuple[TreeBuilder | None, str]] = {
        "org.fsx.DotDot": (None, "../../.."),
        "org.fsx.DotDotFiles": (None, "../files/lib/extensions"),
        "org.fsx.Absolute": (None, "/usr"),
        "org.fsx.AbsLink": (symlinked("lib/extensions", str(bait / "org.fsx.AbsLink")),
                            "lib/extensions"),
        "org.fsx.RelLink": (symlinked("lib/extensions",
                                      "../" * 16 + str(bait / "org.fsx.RelLink").lstrip("/")),
                            "lib/extensions"),
        "org.fsx.OutAndBack": (symlinked("lib/extensions", "../" * 16 + str(
            fenv.system_dir / "app" / GOOD / "current" / "active" / "files" / "lib"
            / "extensions").lstrip("/")), "lib/extensions"),
        "org.fsx.MidLink": (parent_symlinked(str(bait / "mid")), "lib/extensions"),
    }
    for app in hostile:
        evil_tree(bait / app, app)
    evil_tree(bait / "mid" / "extensions", "org.fsx.MidLink")
    for app, (tree, declare) in hostile.items():
        fenv.publish(app, tree, declare=declare)
        fenv.install(app)
    for app in (GOOD, OUT):
        fenv.publish(app, daemon_tree(app, "v1"))
        fenv.install(app)
    codes = {app: "escapes-deployment" for app in hostile}
    yield fenv, codes
    shutil.rmtree(root, ignore_errors=True)


def assert_links_pinned(fenv: FlatpakEnv, allowed: tuple[str, ...] = (GOOD, OUT)) -> None:
    """Every link points at a snapshot of the app in the service's store (of its active
    deployment, unless it was held), and resolves there too."""
    store = os.path.dirname(fenv.snapshot(GOOD))
    for name, target in fenv.links().items():
        assert name in allowed, name
        assert os.path.dirname(target) == store, (name, target)
        assert os.path.basename(target).startswith(f"{name}."), (name, target)
        assert os.path.realpath(target) == target, (name, target, os.path.realpath(target))


def test_hostile_apps_built_with_flatpak(hostile_apps: HostileApps) -> None:
    fenv, codes = hostile_apps
    result = fenv.sysext("reconcile")
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(fenv.links()) == {GOOD, OUT}
    assert_links_pinned(fenv)
    st = fenv.status()
    for app, code in codes.items():
        assert st[app]["state"] == "rejected", st[app]
        assert [p["code"] for p in st[app]["problems"]] == [code], st[app]


def _move_out(fenv: FlatpakEnv, inside: Path, outside: Path) -> None:
    """Move ``inside`` to ``outside`` and leave a symlink to it in its place."""
    shutil.move(str(inside), str(outside))
    os.symlink(outside, inside)


def _out_deploy(fenv: FlatpakEnv) -> Path:
    ref = fenv.system_dir / "app" / OUT / ARCH / "stable"
    return ref / os.readlink(ref / "active")


# Hand edits: name → (edit(fenv, scratch), expected outcome for OUT or the new name).
# Outcomes: "skipped" (not an app: never read, never linked), "unreadable" (left
# alone, reported, reconcile exits 1), "released" (unreadable, but its link now leads
# out of the installation, so it is removed), or a rejection code.
def _copy_app(name: str) -> Any:
    def edit(fenv: FlatpakEnv, scratch: Path) -> str:
        shutil.copytree(fenv.system_dir / "app" / OUT, fenv.system_dir / "app" / name,
                        symlinks=True)
        return name
    return edit


def _relink(which: str, target: str) -> Any:
    def edit(fenv: FlatpakEnv, scratch: Path) -> str:
        appdir = fenv.system_dir / "app" / OUT
        link = appdir / "current" if which == "current" else appdir / ARCH / "stable" / "active"
        link.unlink()
        os.symlink(target.replace("GOOD_ACTIVE", os.readlink(
            fenv.system_dir / "app" / GOOD / ARCH / "stable" / "active")), link)
        return OUT
    return edit


def _symlink_out(level: str) -> Any:
    def edit(fenv: FlatpakEnv, scratch: Path) -> str:
        appdir = fenv.system_dir / "app" / OUT
        inside = {"app": appdir, "arch": appdir / ARCH, "branch": appdir / ARCH / "stable",
                  "deployment": _out_deploy(fenv), "files": _out_deploy(fenv) / "files"}[level]
        _move_out(fenv, inside, scratch / "moved")
        return OUT
    return edit


def _legacy(then: Any) -> Any:
    """Point OUT's link into its deployment, as versions before the snapshot store made
    it, before ``then``."""
    def edit(fenv: FlatpakEnv, scratch: Path) -> str:
        link = fenv.target_dir / OUT
        link.unlink()
        link.symlink_to(_out_deploy(fenv) / "files/lib/extensions")
        return str(then(fenv, scratch))
    return edit


HAND_EDITS: dict[str, tuple[Any, str]] = {
    "id-two-elements": (_copy_app("org.fsx"), "skipped"),
    "id-hidden": (_copy_app(".org.fsx.Hidden"), "skipped"),
    "id-space": (_copy_app("org.fsx.Bad Name"), "skipped"),
    "id-dash": (_copy_app("-org.fsx.Dash"), "skipped"),
    "id-digit": (_copy_app("org.fsx.9lives"), "skipped"),
    "id-sysext-suffix": (_copy_app("org.fsx.Out.sysext"), "invalid-name"),
    "current-escapes": (_relink("current", "../../../../.."), "unreadable"),
    "current-absolute": (_relink("current", "/etc/x"), "unreadable"),
    "current-other-app": (_relink("current", f"../{GOOD}/{ARCH}"), "unreadable"),
    "branch-odd": (_relink("current", f"{ARCH}/.hidden"), "unreadable"),
    "active-other-app": (_relink("active", f"../../../{GOOD}/{ARCH}/stable/GOOD_ACTIVE"),
                         "unreadable"),
    "active-absolute": (_relink("active", "/etc"), "unreadable"),
    "active-not-a-commit": (_relink("active", "deploy-me"), "unreadable"),
    "app-dir-symlinked-out": (_symlink_out("app"), "escapes-deployment"),
    "arch-dir-symlinked-out": (_symlink_out("arch"), "escapes-deployment"),
    "branch-dir-symlinked-out": (_symlink_out("branch"), "escapes-deployment"),
    # Its link points at its snapshot, which is what was validated: held as it is.
    "deployment-symlinked-out": (_symlink_out("deployment"), "unreadable"),
    "deployment-symlinked-out-legacy-link": (_legacy(_symlink_out("deployment")), "released"),
    "files-symlinked-out": (_symlink_out("files"), "escapes-deployment"),
}


@pytest.fixture
def restore(hostile_apps: HostileApps, tmp_path: Path) -> Iterator[Path]:
    """Undo a hand edit: the installation goes back to what flatpak installed."""
    fenv, _ = hostile_apps
    app = fenv.system_dir / "app"
    saved = tmp_path / "saved"
    shutil.copytree(app / OUT, saved, symlinks=True)
    before = set(os.listdir(app))
    yield tmp_path
    for name in set(os.listdir(app)) - before:
        shutil.rmtree(app / name)
    for p in tmp_path.iterdir():
        if p.name == "moved":
            shutil.rmtree(p)
    if (app / OUT).is_symlink():
        (app / OUT).unlink()
    else:
        shutil.rmtree(app / OUT)
    shutil.copytree(saved, app / OUT, symlinks=True)
    # Forget what the cache remembers of the edited layout (see test_hand_edited_layouts).
    fenv.service_file("cache.json").unlink(missing_ok=True)


@pytest.mark.parametrize("case", sorted(HAND_EDITS))
def test_hand_edited_layouts(hostile_apps: HostileApps, restore: Path,
                             case: str) -> None:
    fenv, _ = hostile_apps
    edit, outcome = HAND_EDITS[case]
    # Linked before the edit, so the edit must also take a link away where it should.
    assert fenv.sysext("reconcile").returncode == 0
    assert OUT in fenv.links()
    name = edit(fenv, restore)
    # The cache remembers each app's current/active and trusts that Flatpak never changes
    # a deployment in place; these edits do, so they are only seen by a fresh read.
    fenv.service_file("cache.json").unlink()
    result = fenv.sysext("reconcile")
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert_links_pinned(fenv)
    assert GOOD in fenv.links()
    st = fenv.status()
    if outcome == "skipped":
        assert result.returncode == 0, output
        assert name not in st and name not in fenv.links()
    elif outcome == "unreadable":
        # Its state cannot be read: its link is left as it was and the run says so.
        assert result.returncode == 1, output
        assert f"{OUT}: cannot read" in output
        assert OUT not in st
        assert OUT in fenv.links()
    elif outcome == "released":
        # Unreadable too, but the link it had now leads out of the installation:
        # holding it would merge a tree nobody validated, so it goes.
        assert result.returncode == 1, output
        assert f"{OUT}: cannot read" in output
        assert f"{OUT}: unlinked, it cannot be read" in output
        assert OUT not in st and OUT not in fenv.links()
    else:
        assert result.returncode == 0, output
        assert name not in fenv.links()
        assert st[name]["state"] == "rejected", st[name]
        assert outcome in [p["code"] for p in st[name]["problems"]], st[name]


def test_deployment_replaced_during_the_run(hostile_apps: HostileApps) -> None:
    """A real ``flatpak update`` lands while a reconcile is stopped before linking."""
    fenv, _ = hostile_apps
    race = "org.fsx.Race"
    fenv.publish(race, daemon_tree(race, "v1"))
    fenv.install(race)
    shutil.rmtree(fenv.target_dir, ignore_errors=True)
    old = str(fenv.deploy_files(race) / "lib/extensions")
    old_snapshot = fenv.snapshot(race)
    run = subprocess.Popen(
        ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=symlinkat",
         "-e", "inject=symlinkat:signal=STOP:when=1",
         fenv.python, "-m", "flatpak_sysext", "reconcile"],
        env=fenv.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not fenv.links() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fenv.links(), "the run never reached its first link"
    fenv.publish(race, daemon_tree(race, "v2"))
    fenv.update()
    new = fenv.snapshot(race)
    assert new != old_snapshot and not os.path.exists(old)  # Flatpak deleted the old deployment.
    tracee = int(subprocess.run(["pgrep", "-P", str(run.pid)], capture_output=True,
                                text=True, check=True).stdout.split()[0])
    os.kill(tracee, signal.SIGCONT)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, out + err
    # The run linked what it had validated, the old deployment's snapshot, which Flatpak
    # cannot delete; as Flatpak bumped .changed meanwhile, it read the installation
    # again and moved the link on.
    assert f"{race}: relinked to commit" in out, out
    assert fenv.links()[race] == new
    again = fenv.sysext("reconcile")
    assert again.returncode == 0 and again.stdout == "", again.stdout + again.stderr
    assert_links_pinned(fenv, (GOOD, OUT, race))
    fenv.uninstall(race)
