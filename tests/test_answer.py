# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The service's answer to a sandboxed trigger's request (flatpak_sysext/state/answer.py)
and the nonces in the request (request.py): the trigger reads the answer as root, so
what is not root's own, bounded, well-formed answer to its own nonce is no answer; and
every reconcile that carries a request out answers its nonces."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from pathlib import Path

import pytest

from flatpak_sysext import reconcile
from flatpak_sysext.state import answer, request
from flatpak_sysext.state.hoststate import OK, Step, SyncReport
from testsupport.flatpak import FlatpakEnv, daemon_tree
from testsupport.prerequisites import require

APP = "org.fsx.Answered"
INST = "/var/lib/flatpak"
SYNC = SyncReport("2026-12-07T18:00:00.000001+00:00",
                  (Step("refresh", OK, "", ("systemd-sysext", "refresh")),))


def _write(state: Path, nonces: list[str], failures: tuple[str, ...] = ()) -> Path:
    answer.write(str(state), INST, nonces, list(failures), ["org.fsx.M"], SYNC)
    return Path(answer.path(str(state), INST))


def test_the_answer_names_the_nonces_it_served(tmp_path: Path) -> None:
    mine, other = answer.new_nonce(), answer.new_nonce()
    _write(tmp_path, [mine], ("link failed",))
    found = answer.find(str(tmp_path), INST, mine)
    assert found == answer.Answer((mine,), ("link failed",), frozenset({"org.fsx.M"}), SYNC)
    assert answer.find(str(tmp_path), INST, other) is None
    # A later run keeps the earlier ones (a trigger may look late), up to KEEP_RUNS.
    for _ in range(answer.KEEP_RUNS - 1):
        _write(tmp_path, [answer.new_nonce()])
    assert answer.find(str(tmp_path), INST, mine) is not None
    _write(tmp_path, [answer.new_nonce()])
    assert answer.find(str(tmp_path), INST, mine) is None


def _forge(path: Path, doc: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(json.dumps(doc))


def _doc(nonce: str, installation_path: str = INST) -> dict[str, object]:
    return {"installation": installation_path,
            "runs": [{"nonces": [nonce], "failures": [], "merged": [], "sync": None}]}


@pytest.mark.privileged  # root gives files away
@pytest.mark.parametrize("how", ["other owner", "writable by others", "symlink",
                                 "directory of another", "too large", "other installation",
                                 "malformed", "bad nonce"])
def test_what_is_not_roots_own_well_formed_answer_is_none(tmp_path: Path, how: str) -> None:
    nonce = answer.new_nonce()
    path = Path(answer.path(str(tmp_path), INST))
    _forge(path, _doc(nonce))
    assert answer.find(str(tmp_path), INST, nonce) is not None  # the control
    if how == "other owner":
        require(os.geteuid() == 0, "root to give a file away")
        os.chown(path, 65534, 65534)
    elif how == "writable by others":
        path.chmod(0o666)
    elif how == "symlink":
        real = tmp_path / "elsewhere"
        path.rename(real)
        path.symlink_to(real)
    elif how == "directory of another":
        require(os.geteuid() == 0, "root to give a directory away")
        os.chown(path.parent, 65534, 65534)
    elif how == "too large":
        doc = _doc(nonce)
        doc["padding"] = "x" * answer.MAX_SIZE
        _forge(path, doc)
    elif how == "other installation":
        _forge(path, _doc(nonce, "/srv/flatpak"))
    elif how == "malformed":
        path.write_text('{"installation": "/var/lib/flatpak", "runs": [{"nonces": 5}]}')
    elif how == "bad nonce":
        _forge(path, _doc(nonce + "\n"))
    assert answer.find(str(tmp_path), INST, nonce) is None


def test_wait_polls_until_the_answer_or_the_bound(tmp_path: Path) -> None:
    nonce = answer.new_nonce()
    start = time.monotonic()
    assert answer.wait(str(tmp_path), INST, nonce, 0.3) is None
    assert 0.3 <= time.monotonic() - start < 1.5
    _write(tmp_path, [answer.new_nonce()])  # someone else's answer: not this one's
    later = threading.Timer(0.3, _write, (tmp_path, [nonce]))
    later.start()
    start = time.monotonic()
    found = answer.wait(str(tmp_path), INST, nonce, 10)
    later.join()
    assert found is not None and nonce in found.nonces
    assert time.monotonic() - start < 2


def test_a_request_keeps_the_nonces_of_the_runs_waiting_for_it(tmp_path: Path) -> None:
    nonces = [answer.new_nonce() for _ in range(request.MAX_NONCES + 2)]
    request.write(str(tmp_path), ["link a -> b"], nonces)
    assert request.read(str(tmp_path)) == ["link a -> b"]
    assert request.nonces(str(tmp_path)) == nonces[-request.MAX_NONCES:]
    # Anyone who can write the installation can write the request: no forged nonce
    # (they name what the service writes into its answer) is taken.
    with open(request.path(str(tmp_path)), "a") as f:
        f.write("nonce ../../etc\nnonce " + "A" * answer.NONCE_LENGTH + "\n")
    assert request.nonces(str(tmp_path)) == nonces[-request.MAX_NONCES:]


@pytest.mark.privileged
def test_reconcile_answers_the_nonces_of_the_request_it_carried_out(fenv: FlatpakEnv) -> None:
    # No trigger: the request here stands for one a sandboxed trigger left.
    inst_path, insts, ctx = fenv.installed_for_the_service(APP, daemon_tree(APP, "v1"))
    state = str(fenv.state_dir)
    # A run that served no request writes no answer.
    reconcile.reconcile(ctx, insts)
    assert not os.path.exists(answer.path(state, inst_path))
    fenv.uninstall(APP)
    nonce = answer.new_nonce()
    request.write(inst_path, [f"unlink {APP}"], [nonce])
    result = reconcile.reconcile(dataclasses.replace(ctx), insts)
    assert [a.name for a in result.applied] == [APP]
    found = answer.find(state, inst_path, nonce)
    assert found is not None and found.failures == ()
    assert not os.path.exists(request.path(inst_path))
