# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""What flatpak-sysext.service relies on: a change Flatpak makes while ``reconcile`` runs,
or a request left meanwhile, is carried out by that same run (systemd would fold the
path unit's new start into it)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from flatpak_sysext import config, context, evaluate, reconcile
from flatpak_sysext.flatpak import installation
from flatpak_sysext.state import request
from testsupport.flatpak import FlatpakEnv, daemon_tree

pytestmark = pytest.mark.privileged

APP = "org.fsx.Profiler"
APP2 = "org.fsx.Tracer"


def test_an_install_during_a_run_is_linked_by_that_run(
        fenv: FlatpakEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    # No trigger: it would wait for the lock this run holds, and flatpak for it.
    (fenv.triggers_dir / "flatpak-sysext.trigger").unlink()
    fenv.publish(APP, daemon_tree(APP, "v1"))
    fenv.publish(APP2, daemon_tree(APP2, "v1"))
    fenv.install(APP)
    passes: list[set[str]] = []
    real_evaluate = evaluate.evaluate

    def evaluate_then_install(*args: Any, **kwargs: Any) -> evaluate.Evaluation:
        ev = real_evaluate(*args, **kwargs)
        passes.append({s.app_id for s in ev.apps})
        if len(passes) == 1:
            fenv.install(APP2)  # Flatpak deploys while the first pass is under way.
        return ev

    monkeypatch.setattr(reconcile, "evaluate", evaluate_then_install)
    env = fenv.env
    insts = installation.system_installations(env)
    ctx = context.Context.create(config.load(str(fenv.config_file)), insts, env)
    result = reconcile.reconcile(ctx, insts)
    assert passes == [{APP}, {APP, APP2}]
    assert set(fenv.links()) == {APP, APP2}
    assert {a.name for a in result.applied} == {APP, APP2}
    assert result.failures == ()


def test_a_request_left_while_the_host_syncs_makes_the_run_go_round(
        fenv: FlatpakEnv, tmp_path: Path) -> None:
    # A trigger that could not get the lock (the run holds it) leaves a request without
    # it; the run must see it before it lets go, and carry it out.
    (fenv.triggers_dir / "flatpak-sysext.trigger").unlink()
    fenv.write_config({"host_sync": True})
    fenv.publish(APP, daemon_tree(APP, "v1"))
    fenv.publish(APP2, daemon_tree(APP2, "v1"))
    fenv.install(APP)
    host = tmp_path / "host"
    (host / "run/systemd/system").mkdir(parents=True)
    commands: list[str] = []

    def runner(argv: Sequence[str]) -> tuple[int, str]:
        # Host sync runs its commands by absolute path: record them by name.
        argv = [os.path.basename(argv[0]), *argv[1:]]
        commands.append(" ".join(argv))
        if argv == ["systemd-sysext", "refresh"] and len(fenv.links()) == 1:
            fenv.install(APP2)
            request.write(str(fenv.system_dir), [f"link {APP2} -> ..."])
        return 0, ""

    env = fenv.env
    insts = installation.system_installations(env)
    ctx = dataclasses.replace(
        context.Context.create(config.load(str(fenv.config_file)), insts, env),
        host_root=str(host), runner=runner)
    result = reconcile.reconcile(ctx, insts)
    assert set(fenv.links()) == {APP, APP2}
    assert {a.name for a in result.applied} == {APP, APP2}
    assert commands.count("systemd-sysext refresh") == 2
    assert not os.path.exists(request.path(str(fenv.system_dir)))
