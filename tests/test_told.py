# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""What the trigger last told (flatpak_sysext/told.py): a record in the installation,
which any root process there can write. It only chooses lines to print: forged, it can
neither crash the trigger nor put a name that is not an app ID into Flatpak's output."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from flatpak_sysext import quick
from flatpak_sysext.state import told
from testsupport.flatpak import FlatpakEnv, daemon_tree

APP = "org.fsx.Profiler"
FORGED_NAME = "\x1b[2J\nflatpak-sysext: org.evil.App: linked, merged"


def write_record(installation: Path, data: bytes) -> Path:
    path = Path(told.path(str(installation)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("data", [
    b"[" * 100_000,  # json's RecursionError
    b'{"apps": {"\\ud800.a.b": ["c", "linked"]}, "sync": null}',  # not encodable on print
    b'{"apps": [], "sync": null}',
    b'{"apps": {"org.fsx.A": "linked"}, "sync": 5}',
    b"\xff\xfe",
    b"",
])
def test_a_malformed_record_is_an_empty_one(tmp_path: Path, data: bytes) -> None:
    write_record(tmp_path, data)
    assert told.read(str(tmp_path)) == told.Told({})


def test_only_app_ids_with_string_values_are_kept(tmp_path: Path) -> None:
    doc = {"apps": {FORGED_NAME: ["c", "linked"], "org.fsx.A": ["c1", "linked"],
                    "org.fsx.B": [1, "linked"], "org.fsx.C": ["c", "linked", "x"]},
           "sync": "2026-12-03T00:00:00+00:00"}
    write_record(tmp_path, json.dumps(doc).encode())
    assert told.read(str(tmp_path)) == told.Told({"org.fsx.A": ("c1", "linked")},
                                                 "2026-12-03T00:00:00+00:00")


def test_a_symlink_or_a_fifo_is_not_followed_nor_waited_for(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text(json.dumps({"apps": {"org.fsx.A": ["c", "linked"]}, "sync": None}))
    path = Path(told.path(str(tmp_path)))
    path.parent.mkdir()
    path.symlink_to(elsewhere)
    assert told.read(str(tmp_path)) == told.Told({})
    path.unlink()
    os.mkfifo(path)
    assert told.read(str(tmp_path)) == told.Told({})


@pytest.mark.privileged
def test_a_forged_record_changes_no_more_than_lines_about_apps(fenv: FlatpakEnv) -> None:
    fenv.publish(APP, daemon_tree(APP, "v1"))
    fenv.install(APP)
    assert fenv.sysext("reconcile").returncode == 0
    record = Path(told.path(str(fenv.system_dir)))
    assert json.loads(record.read_text())["apps"][APP][1] == "requested"
    for forged in (b"[" * 100_000,
                   json.dumps({"apps": {FORGED_NAME: ["c", "linked"]}, "sync": None}).encode()):
        record.write_bytes(forged)
        # The full run is what reads the record. Without the stamp, the quick check cannot
        # answer this unrelated install (it would once the stamp is older than its two-second
        # margin, as on a loaded machine, and say nothing, rightly: nothing changed).
        Path(quick.stamp_path(str(fenv.system_dir))).unlink(missing_ok=True)
        fenv.publish("org.fsx.Plain", None, declare=None)
        out = fenv.install("org.fsx.Plain")
        said = out.stdout + out.stderr
        assert out.returncode == 0 and "Traceback" not in said, said
        assert "org.evil" not in said and "\x1b" not in said, said
        # Without a record it can trust, it tells the app's state once more.
        assert f"flatpak-sysext: {APP}: linked, commit {fenv.commit(APP)[:12]}" in said, said
        assert FORGED_NAME not in json.loads(record.read_text())["apps"]
        fenv.uninstall("org.fsx.Plain")
    assert set(fenv.links()) == {APP}


@pytest.mark.privileged
def test_a_link_asked_of_the_service_and_never_made_is_not_said_to_be_unlinked(
        fenv: FlatpakEnv) -> None:
    """The sandboxed trigger asked for a link; before the service made it, an update
    made the app invalid. Nothing was ever linked, and the output does not say unlinked."""
    fenv.publish(APP, daemon_tree(APP, "v1"))
    assert "requested" in fenv.install(APP).stdout
    fenv.publish(APP, daemon_tree(APP, "v2", static=False))
    out = fenv.update().stdout
    assert f"flatpak-sysext: {APP}: rejected: dynamic-elf" in out, out
    assert "unlinked" not in out, out
    assert fenv.links() == {}


@pytest.mark.privileged
def test_an_app_gone_after_its_link_was_asked_for_is_told_unlinked(fenv: FlatpakEnv) -> None:
    """The trigger asked for the link and the service made it; no trigger ran since. Then
    the service removes it for an uninstall before the trigger runs: it is told unlinked."""
    trigger = fenv.triggers_dir / "flatpak-sysext.trigger"
    fenv.publish(APP, daemon_tree(APP, "v1"))
    assert "requested" in fenv.install(APP).stdout
    assert fenv.sysext("reconcile").returncode == 0
    trigger.unlink()
    fenv.uninstall(APP)
    assert fenv.sysext("reconcile").returncode == 0
    fenv.install_trigger()
    fenv.publish("org.fsx.Plain", None, declare=None)
    out = fenv.install("org.fsx.Plain").stdout
    assert f"flatpak-sysext: {APP}: unlinked, no longer installed" in out, out
