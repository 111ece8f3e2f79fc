# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The quick path keeps its two promises (docs/ARCHITECTURE.md#the-quick-check):

- what it imports: the trigger file's quick answer loads only the few small modules
  the quick check is written against, nothing else of the package (not even
  ``trigger``) and nothing of the standard library that ``python3 -I`` has not loaded;
- what it watches: every file and directory a full trigger run opens is among the inputs
  its stamp records (or inside what a recorded signature stands for), so that no change
  to an input can leave a stale "nothing to do".

Both are measured on a real process: imports in a fresh ``python3 -I``, as the trigger
file runs, opens with strace.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flatpak_sysext import quick
from flatpak_sysext.state import statefiles
from testsupport.deployments import DECL, PLAIN, HandMadeInstallation, stamp_apps
from testsupport.prerequisites import require, require_tools
from testsupport.source import PACKAGE_DIR, TRIGGER

pytestmark = pytest.mark.privileged  # the trigger acts only as root

QUICK_MODULES = {"flatpak_sysext", "flatpak_sysext.quick",
                 "flatpak_sysext.flatpak", "flatpak_sysext.flatpak.layout",
                 "flatpak_sysext.flatpak.keyfile", "flatpak_sysext.state",
                 "flatpak_sysext.state.fileio", "flatpak_sysext.state.statefiles"}
"""The package's modules the quick path may load (see quick.py's docstring): not even
``trigger``, which the trigger file imports only when the quick check cannot answer."""
QUICK_STDLIB = {"time"}
"""Beyond what ``python3 -I`` has loaded before it runs a line (time, where site has not):
not even ``__future__``, ``errno`` or ``fcntl`` (quick.py says why)."""


def _stamped(tmp_path: Path) -> HandMadeInstallation:
    """A linked installation whose last trigger run was quiet and left its stamp, with
    timestamps old enough for the real margin (the subprocesses use quick.MARGIN_NS)."""
    require(os.geteuid() == 0, "the trigger only acts as root")
    w = HandMadeInstallation(tmp_path, verified=True)
    assert f"{DECL}: linked" in w.full()
    time.sleep(quick.MARGIN_NS / 1e9 + 0.2)
    assert w.full() == ""
    assert Path(quick.stamp_path(str(w.inst))).is_file()
    return w


def _run_quick(w: HandMadeInstallation, wrapper: tuple[str, ...] = ()) -> set[str]:
    """Run the trigger file in a fresh interpreter, as Flatpak does (under ``wrapper``);
    the modules it loaded."""
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(PACKAGE_DIR.parent)!r})\n"
        f"sys.argv = [{str(TRIGGER)!r}, {str(w.inst)!r}]\n"
        "code = compile(open(sys.argv[0]).read(), sys.argv[0], 'exec')\n"
        "before = set(sys.modules)\n"
        "try:\n"
        "    exec(code, {'__name__': '__main__'})\n"
        "    code = 0\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "sys.stdout.write(' '.join(sorted(set(sys.modules) - before)))\n"
        "sys.exit(code)\n")
    # -I, as the trigger file runs: what site loads is there before the trigger starts.
    result = subprocess.run([*wrapper, sys.executable, "-I", "-c", script], capture_output=True,
                            text=True, env={**w.environ, "PATH": os.environ["PATH"]})
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_a_quiet_answer_imports_only_the_quick_modules(tmp_path: Path) -> None:
    w = _stamped(tmp_path)
    stamp = Path(quick.stamp_path(str(w.inst))).read_bytes()
    loaded = _run_quick(w)
    assert loaded <= QUICK_MODULES | QUICK_STDLIB, sorted(loaded - QUICK_MODULES - QUICK_STDLIB)
    assert "flatpak_sysext.quick" in loaded
    # Answered by the stamp, not by a full run (which would have rewritten it).
    assert Path(quick.stamp_path(str(w.inst))).read_bytes() == stamp


def test_after_an_unrelated_update_too(tmp_path: Path) -> None:
    """The common case: Flatpak updated an app without an extension. The quick check
    reads that app's metadata (layout, keyfile) and still ends the run."""
    w = _stamped(tmp_path)
    w.deploy(PLAIN, "")
    time.sleep(quick.MARGIN_NS / 1e9 + 0.2)
    w.changed()
    loaded = _run_quick(w)
    assert loaded <= QUICK_MODULES | QUICK_STDLIB, sorted(loaded - QUICK_MODULES - QUICK_STDLIB)
    assert "flatpak_sysext.flatpak.keyfile" in loaded
    active = os.lstat(w.inst / "app" / PLAIN / "current" / "active")
    assert stamp_apps(w.inst)[PLAIN] == f"{active.st_dev}:{active.st_ino}:{active.st_ctime_ns}"


def test_after_an_unrelated_update_each_app_costs_one_look(tmp_path: Path) -> None:
    """What the quick answer costs after an update is mostly one look per installed app:
    an ``lstat`` of its ``current/active`` link, never followed to the deployment (a
    path lookup more each); and its stamp, a cache, is written without fsync."""
    require_tools("strace")
    w = _stamped(tmp_path)
    w.deploy(PLAIN, "")
    time.sleep(quick.MARGIN_NS / 1e9 + 0.2)
    w.changed()
    log = tmp_path / "strace.log"
    _run_quick(w, ("strace", "-f", "-qq", "-o", str(log),
                   "-e", "trace=newfstatat,fstatat64,statx,stat,lstat,fsync,fdatasync"))
    trace = log.read_text().splitlines()
    looks = [line for line in trace if '/current/active"' in line]
    assert sorted(re.findall(r'"([^"/]+)/current/active"', "\n".join(looks))) == sorted(
        os.listdir(w.inst / "app"))
    assert all("AT_SYMLINK_NOFOLLOW" in line for line in looks), looks
    assert not [line for line in trace if re.search(r" f(data)?sync\(", line)]
    assert stamp_apps(w.inst)[PLAIN] == quick.app_signatures(str(w.inst))[PLAIN]


_OPENAT = re.compile(r'^\d+ +open(?:at2?)?\((?:AT_FDCWD|\d+)(?:<(?P<dir>[^>]*)>)?, '
                     r'"(?P<path>[^"]*)".*= (?:-1 (?P<errno>\w+)|\d+<(?P<opened>[^>]*)>)')


def _opened(log: str, start: str) -> set[str]:
    """The absolute paths a traced process opened or tried to open after ``start``."""
    paths: set[str] = set()
    started = False
    for line in log.splitlines():
        m = _OPENAT.match(line)
        if m is None:
            continue
        path = m["opened"] or os.path.join(m["dir"] or "/", m["path"])
        if not started:
            started = path == start
            continue
        paths.add(os.path.normpath(path))
    assert started, "the marker was not seen: the trace cannot be read"
    return paths


def _under(path: str, *roots: str | Path) -> bool:
    return any(path == str(r) or path.startswith(f"{r}/") for r in roots)


def test_every_input_of_a_full_run_is_in_its_stamp(tmp_path: Path) -> None:
    require_tools("strace")
    w = _stamped(tmp_path)
    stamp_file = Path(quick.stamp_path(str(w.inst)))
    stamp_file.unlink()
    marker = str(tmp_path / "start-of-the-run")
    script = (
        "import os, sys\n"
        f"sys.path.insert(0, {str(PACKAGE_DIR.parent)!r})\n"
        "from flatpak_sysext import trigger\n"
        "for name in ('config', 'evaluate', 'output', 'reconcile'):\n"
        "    __import__('flatpak_sysext.' + name)\n"  # imports are not inputs: do them first
        f"try:\n    open({marker!r})\nexcept OSError:\n    pass\n"
        f"sys.exit(trigger.run_full({str(w.inst)!r}, None, os.environ))\n")
    log = tmp_path / "strace.log"
    result = subprocess.run(
        ["strace", "-f", "-qq", "-y", "-e", "trace=open,openat,openat2", "-o", str(log),
         sys.executable, "-c", script],
        capture_output=True, text=True, env={**w.environ, "PATH": os.environ["PATH"]})
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr
    stamp = quick.Stamp.decode(stamp_file.read_bytes())
    apps = stamp_apps(w.inst)
    assert stamp is not None and apps, "the run was quiet and left a stamp"
    recorded = {os.path.normpath(p) for p in stamp.paths}
    state_dir = statefiles.directory(str(w.inst))
    unrecorded = []
    for path in sorted(_opened(log.read_text(), marker)):
        if path in recorded or os.path.realpath(path) in recorded:
            continue
        if path == f"{w.inst}/app":
            continue  # its listing is recorded: the stamp has every app's name
        app = re.match(rf"{re.escape(str(w.inst))}/app/([^/]+)(/|$)", path)
        if app is not None and app[1] in apps:
            continue  # inside a deployment: its identity is recorded per app
        if _under(path, state_dir, w.environ["FLATPAK_SYSEXT_STATE_DIR"]):
            continue  # the runs' own files, written by them alone
        if _under(path, PACKAGE_DIR, sys.prefix, sys.base_prefix, "/proc/self"):
            continue  # the code (its directory's signature is recorded) and Python's own
        if path in ("/dev/null", "/dev/urandom"):
            continue
        if path == "/proc/sys/kernel/random/boot_id":
            continue  # a new boot only lets old snapshots go (store.py): no decision
        unrecorded.append(path)
    assert unrecorded == []
