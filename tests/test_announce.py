# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""What AppChanged tells is decided by the runs that change states (state/announce.py,
docs/reference.md#d-bus-interface): each change once, a change made while the D-Bus
interface does not run told when it next does, an installation outside a run's scope
left alone. On a booted host, with Flatpak: tests/test_booted_dbus.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flatpak_sysext.evaluate import AppStatus, Evaluation
from flatpak_sysext.flatpak.installation import Installation
from flatpak_sysext.plan import Plan
from flatpak_sysext.reconcile import Result, told_states
from flatpak_sysext.state import announce
from flatpak_sysext.state.announce import GONE
from testsupport.prerequisites import require

A, B = "/var/lib/flatpak", "/srv/other"


pytestmark = pytest.mark.privileged


@pytest.fixture
def state_dir(tmp_path: Path) -> str:
    require(os.geteuid() == 0, "the state directory is root's own (statefiles.private_directory)")
    return str(tmp_path / "state")


def test_each_change_is_told_once_and_only_the_last(state_dir: str) -> None:
    # At the first run nothing was recorded: every app is told.
    assert announce.record(state_dir, {"org.x.One": (A, "waiting")}, {A})
    assert not announce.record(state_dir, {"org.x.One": (A, "waiting")}, {A})
    assert announce.record(state_dir, {"org.x.One": (A, "linked"), "org.x.New": (A, "waiting")},
                           {A})
    assert announce.record(state_dir, {"org.x.New": (A, "waiting")}, {A})  # One uninstalled
    # Queued while no interface ran: the state now, per app, in the order queued.
    assert announce.take(state_dir) == [("org.x.New", "waiting"), ("org.x.One", GONE)]
    assert announce.take(state_dir) == []
    assert announce.record(state_dir, {"org.x.New": (A, "linked")}, {A})
    assert announce.take(state_dir) == [("org.x.New", "linked")]


def test_a_run_over_one_installation_leaves_the_others_states(state_dir: str) -> None:
    announce.record(state_dir, {"org.x.One": (A, "linked"), "org.x.Two": (B, "linked")}, {A, B})
    announce.take(state_dir)
    assert not announce.record(state_dir, {"org.x.One": (A, "linked")}, {A})
    assert announce.record(state_dir, {}, {B})
    assert announce.take(state_dir) == [("org.x.Two", GONE)]


def test_a_damaged_record_tells_everything_again(state_dir: str) -> None:
    announce.record(state_dir, {"org.x.One": (A, "linked")}, {A})
    announce.take(state_dir)
    Path(state_dir, announce.BASELINE).write_text("[1, 2")
    assert announce.record(state_dir, {"org.x.One": (A, "linked")}, {A})
    assert announce.take(state_dir) == [("org.x.One", "linked")]


def test_batches_nobody_takes_are_bounded(state_dir: str) -> None:
    for i in range(announce.MAX_BATCHES + 5):
        assert announce.record(state_dir, {"org.x.One": (A, f"state{i}")}, {A})
    assert len(os.listdir(Path(state_dir, announce.QUEUE))) == announce.MAX_BATCHES
    assert announce.take(state_dir) == [("org.x.One", f"state{announce.MAX_BATCHES + 4}")]


@pytest.mark.parametrize("linked_first", [True, False])
def test_an_app_in_two_installations_is_told_as_the_one_linked(linked_first: bool) -> None:
    # The same app ID installed in two installations: one is linked, the other is its
    # conflict. AppChanged must tell the linked one, whichever installation was read first
    # (the run's scope decides that order).
    def status(path: str, state: str) -> AppStatus:
        return AppStatus("org.x.App", Installation(path, path), state, "", None, "", "",
                         (), ())

    apps = [status(A, "linked"), status(B, "conflict")]
    ev = Evaluation(tuple(apps if linked_first else apps[::-1]), {}, Plan((), ()), (), (),
                    frozenset())
    assert told_states(Result(ev, (), ())) == {"org.x.App": (A, "linked")}
