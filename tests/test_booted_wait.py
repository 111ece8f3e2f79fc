# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""An install is complete when ``flatpak install`` returns (docs/reference.md#answer-file),
on a booted host (testsupport/booted.py): the trigger, sandboxed by Flatpak, waits for
flatpak-sysext.service to answer its request, so the app's daemon answers a D-Bus call
made at once, and the install output tells the outcome; without the path unit, the
trigger says so at once instead of waiting for an answer that cannot come.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator

import pytest

from testsupport import booted
from testsupport.booted import Machine

pytestmark = [pytest.mark.privileged, pytest.mark.booted, pytest.mark.slow]

APP = "org.fsx.Waited"  # a static Go daemon owning this bus name, consented to by config
ROUNDS = 10

# Runs inside the machine on its own python3, so that no nsenter sits between flatpak's
# return and the call: the clock and the call start when flatpak returns, as a script's
# next line would.
INSIDE = r"""
import json, subprocess, sys, time
app = sys.argv[1]
t0 = time.monotonic()
r = subprocess.run(["flatpak", "install", "--system", "-y", "--noninteractive", "fsx", app],
                   capture_output=True, text=True)
t1 = time.monotonic()
c = subprocess.run(["busctl", "call", "--system", app, "/" + app.replace(".", "/"), app,
                    "Version"], capture_output=True, text=True)
t2 = time.monotonic()
print(json.dumps({"rc": r.returncode, "out": r.stdout + r.stderr, "install_s": t1 - t0,
                  "call_rc": c.returncode, "call": c.stdout + c.stderr, "call_s": t2 - t1}))
"""


@pytest.fixture(scope="module", params=booted.RELEASE_IDS)
def machine(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    """A booted Debian release with flatpak-sysext installed, the signed repository added
    and APP consented to in the configuration (an ``allow`` pattern)."""
    booted.require_booting("flatpak", "bwrap", "gcc", "gpg", "go")
    base = tmp_path_factory.mktemp("booted-wait")
    daemon = booted.build_daemon(base / "fsx-daemon", "waited")
    with booted.booted_host(base, "fsx-wait",
                            lambda p: p.publish(APP, booted.daemon_tree(APP, daemon)),
                            request.param) as (m, _):
        m.run("mkdir", "-p", "/etc/flatpak-sysext", check=True)
        m.run("sh", "-c", "cat > /etc/flatpak-sysext/config.json",
              input=json.dumps({"allow": [APP]}) + "\n", check=True)
        yield m


def _install(m: Machine) -> dict[str, object]:
    result = m.run("python3", "-I", "-c", INSIDE, APP, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    out: dict[str, object] = json.loads(result.stdout)
    assert out["rc"] == 0 and "Traceback" not in str(out["out"]), out["out"]
    return out


def _uninstall(m: Machine) -> str:
    out = m.flatpak("uninstall", "--system", APP)
    m.settle()
    m.wait_for(lambda: APP not in m.merged(), f"{APP} to be unmerged")
    return out


def _figures(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f} s, max {max(values):.3f} s"


def test_the_daemon_answers_as_soon_as_flatpak_install_returns(machine: Machine) -> None:
    installs, calls = [], []
    for n in range(ROUNDS):
        got = _install(machine)
        said = str(got["out"])
        # The call made at once was answered: linked, merged, units reloaded by then.
        assert got["call_rc"] == 0 and "waited" in str(got["call"]), (n, got)
        assert f"flatpak-sysext: {APP}: linked, commit " in said, said
        assert ", merged" in said and "host sync: " in said, said
        assert "requested" not in said and "no answer from" not in said, said
        installs.append(float(str(got["install_s"])))
        calls.append(float(str(got["call_s"])))
        gone = _uninstall(machine)
        assert f"flatpak-sysext: {APP}: unlinked" in gone and "requested" not in gone, gone
    figures = (f"{ROUNDS} installs: flatpak install {_figures(installs)}; from its return "
               f"to the daemon's answer {_figures(calls)}")
    print(f"{machine.release.suite}: {figures}")  # the figures docs/reference.md quotes


def test_without_the_path_unit_the_trigger_says_so_at_once(machine: Machine) -> None:
    machine.run("systemctl", "disable", "--now", "flatpak-sysext.path", check=True)
    try:
        start = time.monotonic()
        said = machine.flatpak("install", "--system", "fsx", APP)
        took = time.monotonic() - start
        assert "flatpak-sysext: the request waits for flatpak-sysext.service: " \
               "flatpak-sysext.path is not enabled" in said, said
        assert f"{APP}: linked, commit" in said and "(requested;" in said, said
        assert took < 15, f"flatpak install took {took:.1f} s"
        assert APP not in machine.merged()
    finally:
        machine.run("systemctl", "enable", "--now", "flatpak-sysext.path", check=True)
    # The request stands: the service carries it out once started.
    machine.run("systemctl", "start", "flatpak-sysext.service", check=True)
    machine.wait_for(lambda: APP in machine.merged(), f"{APP} to be merged")
    _uninstall(machine)


def test_a_package_transaction_under_way_is_answered_at_once_and_said(
        machine: Machine) -> None:
    """Host sync waits for the package transaction's end; the trigger does not wait for
    that: the service answers with the sync deferred, and the install output says so."""
    holder = machine.run("sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!",
                         check=True).stdout.strip()
    try:
        machine.run("flatpak-sysext", "package-transaction", "begin", "--holder", holder,
                    check=True)
        start = time.monotonic()
        said = machine.flatpak("install", "--system", "fsx", APP)
        took = time.monotonic() - start
        assert f"flatpak-sysext: {APP}: linked, commit " in said, said
        assert "not merged yet" in said and "a package transaction is under way" in said, said
        assert "requested" not in said and "no answer from" not in said, said
        assert took < 15, f"flatpak install took {took:.1f} s"
        assert APP not in machine.merged()
        machine.run("flatpak-sysext", "package-transaction", "end", "--holder", holder,
                    check=True)
    finally:
        machine.run("kill", holder)
    machine.wait_for(lambda: APP in machine.merged(), f"{APP} to be merged")
    _uninstall(machine)
