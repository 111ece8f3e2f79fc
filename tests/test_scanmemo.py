# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The memo that spares re-reading unchanged deployments (installation.read_installation,
kept in the cache): a changed deployment is always read again, a bad memo is discarded."""

from __future__ import annotations

import json
import os
from pathlib import Path

from flatpak_sysext.flatpak import installation
from flatpak_sysext.flatpak.installation import Declared, Installation, Remembered
from flatpak_sysext.state import cache
from testsupport.deployments import deploy, gvariant_deploy

APP = "org.a.B"


def test_unchanged_links_are_not_read_again_and_changed_ones_are(tmp_path: Path) -> None:
    inst = Installation("default", str(tmp_path))
    memo: dict[str, Remembered] = {}
    first = deploy(tmp_path, "a" * 64)
    [app] = installation.read_installation(inst, memo)
    assert isinstance(app, Declared) and app.active_id == "a" * 64
    assert memo[APP].declared == app
    # Deployments are immutable: with the same links, the memo answers.
    (first / "metadata").write_text(f"[Application]\nname={APP}\n")
    assert installation.read_installation(inst, memo) == [app]
    # A new active deployment is read, even one that now declares nothing.
    deploy(tmp_path, "b" * 64, meta="")
    assert installation.read_installation(inst, memo) == []
    assert memo[APP] == Remembered("x86_64/stable", "b" * 64, None)
    # So is a new branch made current with the very same commit.
    deploy(tmp_path, "b" * 64, branch="beta")
    [beta] = installation.read_installation(inst, memo)
    assert isinstance(beta, Declared) and beta.branch == "beta"


def test_a_layout_directory_turned_symlink_is_not_answered_from_the_memo(
        tmp_path: Path) -> None:
    base = tmp_path / "inst"
    inst = Installation("default", str(base))
    memo: dict[str, Remembered] = {}
    deploy(base, "a" * 64)
    [app] = installation.read_installation(inst, memo)
    assert isinstance(app, Declared) and app.root is not None
    # Same link texts, but the arch directory now lies elsewhere, behind a symlink.
    arch = base / "app" / APP / "x86_64"
    arch.rename(tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", arch)
    [again] = installation.read_installation(inst, memo)
    assert isinstance(again, Declared) and again.root is None
    assert [p.code for p in again.problems] == ["escapes-deployment"]


def test_incomplete_and_uninstalled_apps_are_forgotten(tmp_path: Path) -> None:
    inst = Installation("default", str(tmp_path))
    memo: dict[str, Remembered] = {}
    dep = deploy(tmp_path, "a" * 64)
    (dep / "deploy").unlink()  # Flatpak has not finished writing it
    assert installation.read_installation(inst, memo) == []
    assert memo == {}
    (dep / "deploy").write_bytes(gvariant_deploy("origin", "a" * 64, []))
    assert len(installation.read_installation(inst, memo)) == 1
    os.unlink(tmp_path / "app" / APP / "current")
    assert installation.read_installation(inst, memo) == []
    assert memo == {}


def test_the_memo_survives_the_cache_and_a_bad_one_is_discarded(tmp_path: Path) -> None:
    inst = Installation("default", str(tmp_path))
    deploy(tmp_path, "a" * 64)
    store = cache.Cache(inst, "host", str(tmp_path / "state"))
    store.load()
    found = installation.read_installation(inst, store.scan)
    store.save()
    again = cache.Cache(inst, "host", str(tmp_path / "state"))
    again.load()
    assert again.warning is None and again.scan == store.scan
    assert installation.read_installation(inst, again.scan) == found

    data = json.loads(Path(store.path).read_text())
    data["scan"][APP][2]["root"] = "/etc"  # a memo must never point a link elsewhere
    Path(store.path).write_text(json.dumps(data))
    bad = cache.Cache(inst, "host", str(tmp_path / "state"))
    bad.load()
    assert bad.scan == {} and bad.warning is not None and "discarded" in bad.warning
