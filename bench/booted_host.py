# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The benchmark's figures on the booted Debian 12 of the tests (testsupport/booted.py).

One boot serves both: how long after ``flatpak install --system`` returns an extension's
daemon answers a D-Bus call (and after ``flatpak uninstall`` is gone), and what the
package manager hooks add to a ``dpkg -i`` that changes nothing of ours, with nothing
linked and with one extension merged. Each beside a baseline measured in the same
session. ``bench/bench.py --booted-only`` runs just these (``--hooks-only``: just dpkg's).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from testsupport import booted
from testsupport.booted import Machine, daemon_unit
from testsupport.flatpak import FlatpakEnv

APP = "org.fsx.BenchHooks"
"""A static Go daemon (testsupport/daemon) owning this bus name, D-Bus activated."""
HOOK = "/etc/dpkg/dpkg.cfg.d/flatpak-sysext"
POLL_INTERVAL_S = 0.01
"""The pause between two calls while waiting for the daemon (each call costs ~2-5 ms)."""

# Runs inside the machine on its own python3, so that no nsenter sits between two polls
# and the clock starts when flatpak returns, as a user at a shell sees it. Argument: JSON
# with "op" and its parameters; prints one JSON object.
INSIDE = r"""
import json, subprocess, sys, time
a = json.loads(sys.argv[1])
app = a["app"]
CALL = ["busctl", "call", "--system", app, "/" + app.replace(".", "/"), app, "Version"]
def answers():
    return subprocess.run(CALL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0
def listed():
    # Owned or activatable, without calling it: a call could activate it again.
    out = subprocess.run(["busctl", "--system", "list", "--no-legend"],
                         capture_output=True, text=True).stdout
    return any(line.split()[:1] == [app] for line in out.splitlines())
def timed_call():
    t = time.monotonic()
    ok = answers()
    return ok, time.monotonic() - t
if a.get("op") == "calls":
    times = []
    for _ in range(a["n"]):
        ok, s = timed_call()
        if not ok:
            sys.exit("the running daemon did not answer")
        times.append(s)
    print(json.dumps({"seconds": times}))
    sys.exit(0)
t0 = time.monotonic()
r = subprocess.run(a["flatpak"], capture_output=True, text=True)
t1 = time.monotonic()
if r.returncode != 0 or "Traceback" in r.stdout + r.stderr:
    sys.exit("flatpak failed:\n" + r.stdout + r.stderr)
polls = 1
probe = answers if a["probe"] == "call" else listed
while probe() != a["want"]:
    if time.monotonic() > t1 + a["timeout"]:
        sys.exit(f"{a['probe']} still not {a['want']} after {a['timeout']} s")
    time.sleep(a["interval"])
    polls += 1
print(json.dumps({"command_s": t1 - t0, "until_s": time.monotonic() - t1, "polls": polls}))
"""


def missing() -> list[str]:
    """What booting the tests' machine and publishing the app need but this host lacks."""
    tools = [t for t in ("flatpak", "gpg") if shutil.which(t) is None]
    return (["root"] if os.geteuid() != 0 else []) + booted.missing_tools() + tools


def run(work: Path, quick: bool, hooks_only: bool = False) -> dict[str, Any]:
    """``bench_booted`` with the rounds of a full or a ``--quick`` run; ``hooks_only``,
    without the activation rounds."""
    return bench_booted(work, 0 if hooks_only else 3 if quick else 5, 3 if quick else 7)


def bench_booted(work: Path, rounds: int, dpkg_rounds: int) -> dict[str, Any]:
    """Boot a copy of the tests' Debian 12, install the project as a packager does, add a
    signed repository with an app whose extension ships a D-Bus-activated daemon, and
    consent to it in the configuration (an ``allow`` pattern), so that ``flatpak install``
    leads straight to the link: then measure ``bench_activation`` and ``bench_dpkg``."""
    daemon = booted.build_daemon(work / "fsx-daemon", "bench")

    def publish(publisher: FlatpakEnv) -> None:
        publisher.publish(APP, booted.daemon_tree(APP, daemon))

    with booted.booted_host(work, "fsx-bench", publish) as (m, _):
        # What an administrator (or a distribution) writes to consent to an app ahead of
        # its installation: see docs/configuration.md#allow.
        m.run("mkdir", "-p", "/etc/flatpak-sysext", check=True)
        m.run("sh", "-c", "cat > /etc/flatpak-sysext/config.json",
              input=json.dumps({"allow": [APP]}) + "\n", check=True)
        results = {"activation": bench_activation(m, rounds)} if rounds else {}
        make_probe(m)
        results["dpkg_nothing"] = bench_dpkg(m, dpkg_rounds, merged=False)
        m.flatpak("install", "--system", "fsx", APP)
        m.settle()
        m.wait_for(lambda: APP in m.merged(), f"{APP} merged")
        results["dpkg"] = bench_dpkg(m, dpkg_rounds, merged=True)
        return results


def _inside(m: Machine, **args: Any) -> dict[str, Any]:
    result = m.run("python3", "-I", "-c", INSIDE, json.dumps({"app": APP, **args}),
                   timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"bench inside the machine failed: {result.stdout}{result.stderr}")
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def active(m: Machine, unit: str) -> bool:
    """Whether systemd says ``unit`` is active inside."""
    return m.run("systemctl", "is-active", unit).stdout.strip() == "active"


def bench_activation(m: Machine, rounds: int) -> dict[str, Any]:
    """Per round: ``flatpak install`` → the daemon answers ``busctl call`` (the path unit's
    reconcile links, systemd-sysext refresh, daemon-reload, D-Bus reload, then D-Bus
    activates the unit from the merged /usr), polled every POLL_INTERVAL_S; baselines the
    call to the running daemon and the call that activates it with everything merged;
    then ``flatpak uninstall`` → the bus name is gone: no owner and not activatable
    (unlinked, unmerged, unit stopped, D-Bus reloaded; looked at with ``busctl list``,
    which does not activate it)."""
    unit = daemon_unit(APP)
    keys = ("install_s", "answer_s", "polls", "call_running_s", "call_activating_s",
            "uninstall_s", "gone_s")
    runs: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(rounds):
        if active(m, unit) or APP in m.merged():
            raise SystemExit(f"{APP} still merged or running before its install")
        up = _inside(m, flatpak=["flatpak", "install", "--system", "-y", "--noninteractive",
                                 "fsx", APP],
                     probe="call", want=True, interval=POLL_INTERVAL_S, timeout=120)
        # The answer came through systemd from the merged /usr, not from anything else.
        if APP not in m.merged() or not active(m, unit):
            raise SystemExit(f"{APP} answered but is not merged and active")
        m.settle()
        runs["install_s"].append(up["command_s"])
        runs["answer_s"].append(up["until_s"])
        runs["polls"].append(up["polls"])
        runs["call_running_s"] += _inside(m, op="calls", n=5)["seconds"]
        m.run("systemctl", "stop", unit, check=True)
        runs["call_activating_s"] += _inside(m, op="calls", n=1)["seconds"]
        down = _inside(m, flatpak=["flatpak", "uninstall", "--system", "-y",
                                   "--noninteractive", APP],
                       probe="listed", want=False, interval=POLL_INTERVAL_S, timeout=120)
        m.settle()
        if active(m, unit) or APP in m.merged():
            raise SystemExit(f"{APP} still merged ({m.merged()}) or running "
                             f"({active(m, unit)}) after its uninstall:\n"
                             + m.run("journalctl", "--no-pager", "-q", "-n", "60").stdout)
        runs["uninstall_s"].append(down["command_s"])
        runs["gone_s"].append(down["until_s"])
    out: dict[str, Any] = {k: {"median_s": statistics.median(v), "max_s": max(v),
                               "runs": len(v)} for k, v in runs.items() if k != "polls"}
    out["polls_median"] = statistics.median(runs["polls"])
    out["poll_interval_s"] = POLL_INTERVAL_S
    return out


def make_probe(m: Machine) -> None:
    """Build /root/probe.deb, a one-file package that nothing of ours depends on, and keep
    a copy of the dpkg hook so that each round can put it in place or take it away."""
    m.run("mkdir", "-p", "/root/probe/DEBIAN", "/root/probe/usr/share/probe", check=True)
    m.run("sh", "-c", "printf 'Package: probe\\nVersion: 1\\nArchitecture: all\\n"
          "Maintainer: bench <b@fsx.invalid>\\nDescription: probe\\n' "
          "> /root/probe/DEBIAN/control && echo x > /root/probe/usr/share/probe/x",
          check=True)
    m.run("dpkg-deb", "--build", "--root-owner-group", "/root/probe", "/root/probe.deb",
          check=True)
    m.run("cp", HOOK, f"/root/{os.path.basename(HOOK)}", check=True)


def bench_dpkg(m: Machine, rounds: int, merged: bool) -> dict[str, Any]:
    """What the package manager hooks add to a ``dpkg -i`` that changes nothing of ours:
    reinstalling a one-file package with the hooks against the same without them, with
    nothing merged, and without the hooks. ``merged``: with the hooks, APP is merged
    before each run and must be merged again after it (unmerge, guard, reconcile,
    merge, the reloads); else nothing of ours is linked at all."""

    def dpkg_i(hooks: bool) -> float:
        if hooks:
            m.run("cp", f"/root/{os.path.basename(HOOK)}", HOOK, check=True)
            m.run("systemd-sysext", "refresh", check=True)
        else:
            m.run("rm", "-f", HOOK, check=True)
            m.run("systemd-sysext", "unmerge", check=True)
        t = time.perf_counter()
        m.run("dpkg", "-i", "/root/probe.deb", check=True)
        elapsed = time.perf_counter() - t
        if hooks and merged and APP not in m.merged():
            raise SystemExit(f"{APP} not merged again after dpkg -i")
        if hooks and not merged and m.merged():
            raise SystemExit(f"{m.merged()} merged, expected nothing")
        return elapsed

    times: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(rounds):
        times["without"].append(dpkg_i(False))
        times["with"].append(dpkg_i(True))
    m.settle()  # a guard that outlived its dpkg must not run into the next measure
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"dpkg_i_without_hooks_s": med["without"], "dpkg_i_with_hooks_s": med["with"],
            "added_s": med["with"] - med["without"], "runs": rounds}


ACTIVATION_ROWS = {
    "install_s": "flatpak install --system (returns)",
    "answer_s": "install returned -> daemon answers busctl call",
    "call_running_s": "baseline: busctl call, daemon running",
    "call_activating_s": "baseline: busctl call activating it (merged)",
    "uninstall_s": "flatpak uninstall --system (returns)",
    "gone_s": "uninstall returned -> bus name gone",
}


def booted_rows(r: dict[str, Any]) -> list[str]:
    """The booted host's rows: the activation figures (median and max) and dpkg's."""
    lines: list[str] = []
    a = r.get("activation")
    if a is not None:
        lines.append(f"{'booted Debian 12, ' + str(a['answer_s']['runs']) + ' rounds':<48} "
                     f"{'median':>9} {'max':>9}  "
                     f"(polled every {a['poll_interval_s'] * 1000:.0f} ms)")
        lines += [f"{label:<48} {a[k]['median_s'] * 1000:>7.0f}ms "
                  f"{a[k]['max_s'] * 1000:>7.0f}ms" for k, label in ACTIVATION_ROWS.items()]
    d, n = r["dpkg"], r["dpkg_nothing"]
    rows = [("dpkg -i, no hooks, nothing merged", n["dpkg_i_without_hooks_s"]),
            ("dpkg -i, hooks, nothing linked", n["dpkg_i_with_hooks_s"]),
            ("what the hooks add, nothing linked (<= 50 ms)", n["added_s"]),
            ("dpkg -i, no hooks (one extension unmerged)", d["dpkg_i_without_hooks_s"]),
            ("dpkg -i, hooks, one extension merged", d["dpkg_i_with_hooks_s"]),
            ("what the hooks add, one merged (<= 300 ms)", d["added_s"])]
    lines += [f"{label:<48} {seconds * 1000:>7.0f}ms" for label, seconds in rows]
    return lines
