# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Fault injection at every mutation point of a run, in the real process (docs/reference.md#safety).

Each scenario is first run once under ``strace`` to find its mutation points: every
syscall that changes the filesystem (a directory made, a file created or written or
synced, a link made, renamed or removed). Then, for each point and each fault, the real
``python -m flatpak_sysext`` command runs again under ``strace -e inject=...`` with the
fault at exactly that invocation, and a clean run afterwards must converge. New mutation
points are covered without touching this file: they show up in the counting run.

Every injected run's own trace is checked to contain the injected call on the expected
path, so a test cannot pass by injecting somewhere harmless.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testsupport.flatpak import ARCH, FlatpakEnv
from testsupport.prerequisites import require_tracing
from testsupport.source import PACKAGE_DIR

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

ALPHA = "org.fsx.Alpha"
BETA = "org.fsx.Beta"
GONE = "org.fsx.Gone"

# Syscalls that can change the filesystem. Within each, only the invocations
# ``_is_mutation`` accepts are points; all are counted, because strace's ``when=``
# counts every invocation of the syscall.
SYSCALLS = ("openat", "mkdir", "mkdirat", "symlink", "symlinkat", "rename", "renameat",
            "renameat2", "unlink", "unlinkat", "rmdir", "fsync", "fdatasync", "write")
ERRORS = ("EIO", "ENOSPC", "EACCES")
FAULTS = (*ERRORS, "KILL")

_LINE = re.compile(r"^(?P<pid>\d+) +(?P<call>\w+)\((?P<args>.*)\) += (?P<ret>-?\d+)")
_RANDOM = re.compile(r"\.[0-9a-f]{16}\b")
_BATCH = re.compile(r"\b\d{20}-\d+(?=\.json)")
"""An AppChanged batch's name (state/announce.py): the time it was queued and the PID."""


@dataclasses.dataclass(frozen=True)
class Point:
    """One mutation: the ``ordinal``-th invocation of ``call`` in the process."""

    call: str
    ordinal: int
    text: str
    """The traced call with random temporary names normalised, to recognise it again."""

    def __str__(self) -> str:
        return f"{self.call}#{self.ordinal} {self.text[:150]}"


def _is_mutation(call: str, args: str, ret: int, rig: Path) -> bool:
    if call == "openat":
        return "O_CREAT" in args and ret >= 0
    if call in ("mkdir", "mkdirat"):
        return ret == 0  # makedirs(exist_ok=True) tolerates any failure of an existing dir
    if call in ("write", "fsync", "fdatasync"):
        return f"<{rig}/" in args.split(",", 1)[0]  # -y: the fd's path; not stdout
    return True


def _normalise(text: str) -> str:
    return _BATCH.sub("BATCH", _RANDOM.sub(".RANDOM", text))


@dataclasses.dataclass
class InjectionRig:
    """One real Flatpak installation with two apps, shared by the module's cases.

    The commands run from ``code``, a copy of the package with its bytecode compiled:
    the counting run and the injected runs must make the very same syscalls up to the
    injection, which an edit of the working tree (a stale ``.pyc`` is one more
    ``openat``) would break halfway through the module.
    """

    fenv: FlatpakEnv
    python: str
    code: Path

    @property
    def state_dir(self) -> Path:
        return self.fenv.system_dir / "flatpak-sysext"

    @property
    def request(self) -> Path:
        return self.state_dir / "request"

    def env(self) -> dict[str, str]:
        # Same hash seed and no bytecode writes, for the same syscalls in every run.
        return self.fenv.env | {"PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
                                "PYTHONPATH": str(self.code)}

    def wanted(self) -> dict[str, str]:
        return {a: self.fenv.snapshot(a) for a in (ALPHA, BETA)}

    def run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, env=self.env(), cwd=self.code, capture_output=True,
                              text=True, timeout=120, check=False)

    def command(self, command: str) -> list[str]:
        if command == "reconcile":
            return [self.python, "-m", "flatpak_sysext", "reconcile"]
        return [self.python, "-m", "flatpak_sysext", "trigger", str(self.fenv.system_dir)]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InjectionRig]:
    require_tracing()
    root = tmp_path_factory.mktemp("faults") / "world"
    fenv = FlatpakEnv(root)  # No trigger installed: installs leave no request behind.
    fenv.install_daemons(ALPHA, BETA)
    code = root / "code"
    shutil.copytree(PACKAGE_DIR, code / "flatpak_sysext",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([fenv.python, "-m", "compileall", "-q", str(code)], check=True)
    yield InjectionRig(fenv, fenv.python, code)
    shutil.rmtree(root, ignore_errors=True)


def _reset_target(w: InjectionRig) -> None:
    shutil.rmtree(w.fenv.target_dir, ignore_errors=True)
    shutil.rmtree(w.state_dir, ignore_errors=True)
    shutil.rmtree(w.fenv.state_dir, ignore_errors=True)


def fresh(w: InjectionRig) -> None:
    """First run ever: no state directories, no target directory, two apps to link."""
    _reset_target(w)


def seeded(w: InjectionRig) -> None:
    """Every kind of action at once, a pending request and a corrupt cache.

    A stale link of ours (relinked), a link to an uninstalled app (unlinked), a leftover
    temporary link (removed), the request a sandboxed trigger left (cleared), and a
    cache that is discarded and rewritten.
    """
    _reset_target(w)
    t = w.fenv.target_dir
    t.mkdir()
    inst = w.fenv.system_dir / "app"
    os.symlink(f"{inst}/{BETA}/{ARCH}/stable/{'c' * 64}/files/lib/extensions", t / BETA)
    os.symlink(f"{inst}/{GONE}/{ARCH}/stable/{'d' * 64}/files/lib/extensions", t / GONE)
    os.symlink(f"{inst}/{GONE}/{ARCH}/stable/{'d' * 64}/files",
               t / ".#flatpak-sysext.0123456789abcdef")
    w.state_dir.mkdir()
    w.request.write_text(f"link {ALPHA} -> somewhere\n")
    cache = w.fenv.service_file("cache.json")
    cache.parent.mkdir(parents=True)
    cache.write_text("{corrupt")


def sandboxed(w: InjectionRig) -> None:
    """The trigger in Flatpak's sandbox: links to make, target directory read-only, and
    the lock that the service made when it ran at boot."""
    _reset_target(w)
    w.fenv.target_dir.mkdir()
    w.fenv.state_dir.mkdir(mode=0o700)
    (w.fenv.state_dir / "lock").touch(mode=0o600)


SCENARIOS: dict[str, tuple[Callable[[InjectionRig], None], str]] = {
    "reconcile-fresh": (fresh, "reconcile"),
    "reconcile-seeded": (seeded, "reconcile"),
    "trigger-seeded": (seeded, "trigger"),
    "trigger-sandboxed": (sandboxed, "trigger"),
}


def _wrap(w: InjectionRig, scenario: str, strace: list[str]) -> list[str]:
    """The full command line; the sandboxed trigger sees a read-only target directory."""
    argv = [*strace, *w.command(SCENARIOS[scenario][1])]
    if scenario != "trigger-sandboxed":
        return argv
    # What bubblewrap does to the trigger, reduced to what matters: the target directory
    # is read-only. A private mount namespace keeps the host's mounts as they are.
    return ["unshare", "-m", "sh", "-c",
            'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"',
            str(w.fenv.target_dir), *argv]


def _strace(trace_file: Path, *extra: str) -> list[str]:
    return ["strace", "-f", "-y", "-qq", "-o", str(trace_file),
            "-e", "trace=" + ",".join(SYSCALLS), *extra]


def mutation_points(w: InjectionRig, scenario: str, tmp: Path) -> list[Point]:
    """Run the scenario once under strace and list its mutation points, in order."""
    SCENARIOS[scenario][0](w)
    trace = tmp / "count.trace"
    result = w.run(_wrap(w, scenario, _strace(trace)))
    assert result.returncode == 0, result.stdout + result.stderr
    counts: dict[tuple[str, str], int] = {}
    points: list[Point] = []
    for line in trace.read_text().splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        key = (m["pid"], m["call"])
        counts[key] = counts.get(key, 0) + 1
        if _is_mutation(m["call"], m["args"], int(m["ret"]), w.fenv.root):
            points.append(Point(m["call"], counts[key], _normalise(f"{m['call']}({m['args']})")))
    assert len({p for p in points}) == len(points)
    return points


def check_state(w: InjectionRig, scenario: str) -> list[str]:
    """What is wrong with the state a successful run of ``scenario`` must leave."""
    problems: list[str] = []
    if scenario == "trigger-sandboxed":
        # The sandboxed trigger can only ask: the request must name both links.
        request = w.request.read_text() if w.request.is_file() else ""
        # The nonce lines name the runs waiting for an answer: not actions.
        asked = [line for line in request.splitlines() if not line.startswith("nonce ")]
        if sorted(asked) != sorted(
                f"link {app} -> {target}" for app, target in w.wanted().items()):
            problems.append(f"request {request!r} does not ask for both links")
        if w.fenv.links():
            problems.append(f"links made through a read-only target: {w.fenv.links()}")
    else:
        if w.fenv.links() != w.wanted():
            problems.append(f"links {w.fenv.links()} != wanted {w.wanted()}")
        if sorted(os.listdir(w.fenv.target_dir)) != sorted(w.wanted()):
            problems.append(f"unexpected entries: {os.listdir(w.fenv.target_dir)}")
        if w.request.exists():
            problems.append("the request is still there after a successful reconcile")
    leftovers = [p.name for p in w.fenv.target_dir.iterdir() if p.name.startswith(".#")]
    for where in (w.state_dir, w.fenv.state_dir):
        if where.exists():
            leftovers += [p.name for p in where.rglob(".#*")]
    if leftovers:
        problems.append(f"temporary files left behind: {leftovers}")
    return problems


def check_converged(w: InjectionRig, scenario: str) -> list[str]:
    """Run again without faults; returns what is wrong with the state it leaves."""
    problems: list[str] = []
    result = w.run(_wrap(w, scenario, []))
    if result.returncode != 0 or "Traceback" in result.stderr:
        problems.append(f"clean run failed ({result.returncode}): {result.stdout}{result.stderr}")
    problems += check_state(w, scenario)
    if scenario == "trigger-sandboxed":
        # What flatpak-sysext.service then runs on the host.
        result = w.run(w.command("reconcile"))
        if result.returncode != 0:
            problems.append(f"reconcile after the trigger failed: {result.stderr}")
        problems += check_state(w, "reconcile-fresh")
    return problems


def inject(w: InjectionRig, scenario: str, point: Point, fault: str, tmp: Path) -> list[str]:
    """Run with ``fault`` at ``point``; returns what is wrong with how the run ended."""
    SCENARIOS[scenario][0](w)
    trace = tmp / "inject.trace"
    how = "signal=KILL" if fault == "KILL" else f"error={fault}"
    result = w.run(_wrap(w, scenario, _strace(
        trace, "-e", f"inject={point.call}:{how}:when={point.ordinal}")))
    problems: list[str] = []
    lines = trace.read_text().splitlines()
    if fault == "KILL":  # The killed call is the last one traced, left unfinished.
        hit = [lines[i - 1] for i, line in enumerate(lines)
               if i and "+++ killed by SIGKILL +++" in line]
    else:
        hit = [line for line in lines if "(INJECTED" in line]
    if len(hit) != 1 or point.text not in _normalise(hit[0]):
        problems.append(f"injected into {hit}, not the point")
    output = result.stdout + result.stderr
    if fault == "KILL":
        if result.returncode != -9:
            problems.append(f"not killed: exit {result.returncode}")
        return problems
    if "Traceback" in output:
        problems.append(f"a traceback escaped:\n{output}")
    trigger = SCENARIOS[scenario][1] == "trigger"
    if os.strerror(getattr(errno, fault)) not in output:
        # Silence is only right where the fault cost nothing (a best-effort write, or
        # a directory made again later): then this very run did all of its job.
        wrong = check_state(w, scenario)
        if wrong or result.returncode != 0:
            problems.append(f"no message naming the error (exit {result.returncode}), "
                            f"and the run did not do its job: {wrong} {output!r}")
    elif result.returncode != (0 if trigger else 1):
        problems.append(f"exit {result.returncode}, expected {0 if trigger else 1}: {output!r}")
    return problems


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_fault_at_every_mutation_point_converges(
        rig: InjectionRig, scenario: str, fault: str, tmp_path: Path) -> None:
    points = mutation_points(rig, scenario, tmp_path)
    # The scenarios are built to reach these; fewer points means the count went wrong.
    assert len(points) >= {"reconcile-fresh": 8, "reconcile-seeded": 11,
                           "trigger-seeded": 11, "trigger-sandboxed": 8}[scenario], points
    report: list[str] = []
    survived = 0
    for point in points:
        wrong = inject(rig, scenario, point, fault, tmp_path)
        wrong += check_converged(rig, scenario)
        report += [f"{point}: {w}" for w in wrong]
        survived += not wrong
    print(f"FAULTS {scenario} {fault}: {len(points)} points, {survived} survived")
    assert report == [], "\n".join(report)
