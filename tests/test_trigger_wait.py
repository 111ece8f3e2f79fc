# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The sandboxed trigger waits for the service's answer to its request and tells the
outcome (docs/reference.md#answer-file); without a service to answer it says so at once;
and an app waiting for consent is told on every transaction, the quick check's
included (docs/reference.md#trigger-contract)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from flatpak_sysext import config, context, quick, reconcile, trigger
from flatpak_sysext.flatpak import installation
from flatpak_sysext.host import busnotify
from flatpak_sysext.state import answer, request, told
from testsupport.flatpak import FlatpakEnv, daemon_tree

pytestmark = pytest.mark.privileged

APP = "org.fsx.Waiter"
PLAIN = "org.fsx.Plain"


def test_without_a_service_to_answer_the_trigger_says_so_at_once(fenv: FlatpakEnv) -> None:
    fenv.publish(APP, daemon_tree(APP, "v1"))
    start = time.monotonic()
    out = fenv.install(APP)
    took = time.monotonic() - start
    said = out.stdout + out.stderr
    # This machine runs no systemd: no path unit watches the request.
    assert f"flatpak-sysext: {APP}: linked, commit {fenv.commit(APP)[:12]} (requested;" \
        in said, said
    assert "flatpak-sysext: the request waits for flatpak-sysext.service: " in said, said
    assert took < trigger.ANSWER_WAIT / 2, f"flatpak install took {took:.1f} s"
    assert len(request.nonces(str(fenv.system_dir))) == 1


def _fake_systemd(root: Path, request_path: str) -> None:
    """A host root where systemd runs and the path unit is enabled and watches
    ``request_path``, as the trigger looks at them."""
    (root / "run/systemd/system").mkdir(parents=True)
    units = root / "usr/lib/systemd/system"
    (units / "paths.target.wants").mkdir(parents=True)
    (units / trigger.PATH_UNIT).write_text(f"[Path]\nPathChanged={request_path}\n")
    (units / "paths.target.wants" / trigger.PATH_UNIT).symlink_to(f"../{trigger.PATH_UNIT}")


def test_the_trigger_tells_what_the_service_did_for_its_request(fenv: FlatpakEnv,
                                                              tmp_path: Path) -> None:
    (fenv.triggers_dir / "flatpak-sysext.trigger").unlink()  # the run below is the trigger
    fenv.publish(APP, daemon_tree(APP, "v1"))
    fenv.install(APP)
    inst_path = os.path.realpath(fenv.system_dir)
    host = tmp_path / "host"
    _fake_systemd(host, request.path(inst_path))
    (host / "usr/.systemd-sysext").mkdir(parents=True)
    (host / "usr/.systemd-sysext/extensions").write_text(f"{APP}\n")  # merged, says systemd
    insts = installation.system_installations(fenv.env)
    ctx = dataclasses.replace(
        context.Context.create(config.load(str(fenv.config_file)), insts, fenv.env),
        host_root=str(host))
    inst = next(i for i in insts if i.path == inst_path)

    def service() -> None:  # what the path unit starts when the request appears
        deadline = time.monotonic() + 30  # no request: the assertions below fail
        while not os.path.exists(request.path(inst_path)) and time.monotonic() < deadline:
            time.sleep(0.01)
        reconcile.reconcile(ctx, insts)

    running = threading.Thread(target=service)
    running.start()
    start = time.monotonic()
    lines, _, now = trigger._ask_service(dataclasses.replace(ctx, sandboxed=True), inst,
                                         told.Told({}), time.monotonic() + trigger.RUN_LIMIT)
    took = time.monotonic() - start
    running.join()
    assert set(fenv.links()) == {APP}
    assert lines.changes == [f"{APP}: linked, commit {fenv.commit(APP)[:12]}, merged"]
    assert not lines.errors and not lines.info, lines
    assert now.apps[APP] == (fenv.commit(APP), told.LINKED)
    assert took < 10


def _hand_run(fenv: FlatpakEnv) -> str:
    """The trigger as Flatpak runs it, by hand (outside bubblewrap)."""
    return subprocess.run([str(fenv.triggers_dir / "flatpak-sysext.trigger"),
                           str(fenv.system_dir)], env=fenv.env, capture_output=True,
                          text=True, check=True).stdout


def test_an_app_waiting_for_consent_is_told_on_every_transaction(fenv: FlatpakEnv) -> None:
    fenv.write_config({"allow": []})
    fenv.publish(APP, daemon_tree(APP, "v1"))
    fenv.publish(PLAIN, None, declare=None)
    first = fenv.install(APP).stdout
    assert f"flatpak-sysext: {APP}: waiting: " in first, first
    reminder = (f"{APP}: waiting for consent: flatpak-sysext approve {APP} "
                "(or the desktop's prompt)")
    # Not said twice: the first line says all of it.
    assert reminder not in first, first
    out = fenv.install(PLAIN).stdout
    assert f"flatpak-sysext: {reminder}\n" in out, out
    # Once what it read is older than the quick check's margin, the full run leaves the
    # stamp with the line; from then on the quick check answers, and says it too. (The
    # first run outside the sandbox writes the consent records: one more margin.)
    time.sleep(quick.MARGIN_NS / 1e9 + 0.2)
    full = _hand_run(fenv)
    assert full.startswith(f"flatpak-sysext: {reminder}\n"), full
    time.sleep(quick.MARGIN_NS / 1e9 + 0.2)
    assert _hand_run(fenv) == full
    assert quick.settled(str(fenv.system_dir), fenv.env) == [
        line.removeprefix("flatpak-sysext: ") for line in full.splitlines()]
    assert _hand_run(fenv) == full
    out = fenv.uninstall(PLAIN).stdout
    assert f"flatpak-sysext: {reminder}\n" in out, out


def test_a_request_left_once_the_run_let_go_of_the_lock_is_served_by_that_run(
        fenv: FlatpakEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    # A trigger that waited for the lock leaves its request just after the service's run
    # lets go of it; systemd folds the start it asks for into the run still going, so the
    # run must serve it, or that trigger waits its whole ANSWER_WAIT for nothing.
    inst_path, insts, ctx = fenv.installed_for_the_service(APP, daemon_tree(APP, "v1"))
    late = answer.new_nonce()

    def after_the_lock() -> None:  # what the reconcile does first once the lock is let go
        request.write(inst_path, [], [late])

    monkeypatch.setattr(busnotify, "reread", after_the_lock)
    reconcile.reconcile(ctx, insts)
    assert set(fenv.links()) == {APP}
    assert answer.find(ctx.state_dir, inst_path, late) is not None
