# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""``make bench``: what flatpak-sysext costs as installations grow, beside baselines.

Every figure is a whole process (spawn to exit, with its peak RSS from ``wait4``), the
median of runs interleaved with their baseline in the same session, so a busy machine
slows both alike. Needs root (the trigger does nothing otherwise), flatpak, bubblewrap
and gcc.

    .venv/bin/python bench/bench.py [--quick] [--rounds N] [--out bench-results.json] [--keep]

Measured, at 100/1,000/10,000 apps (10% with an extension, warm cache, every
link in place), against ``python -I -c pass`` on the same interpreter (see
bench_python): the trigger when nothing changed; the trigger after Flatpak updated an
app that declares nothing (what almost every real transaction is); the trigger's full
evaluation (no quick-check stamp); and, as the floor of the quick check after an update, a
bare Python that looks at every app's ``current/active`` link once (``--trigger-only``
runs just these). Also a cold reconcile (no cache, no links); ELF
verdicts per second against the obvious pyelftools code (and, for daemons that need only
glibc, with and without allow_host_glibc; ``--elf-only`` runs just these); ``check`` on trees of
25k/50k/100k files; what a validated snapshot costs (copy time beside validation
time, verification against the signed commit, and disk) for a Sysprof-sized tree installed
by flatpak from a signed repository and a 100-file one (``--store-only`` runs just
these); and, on the booted Debian 12 of the tests (bench/booted_host.py; skipped without
its tools; ``--booted-only`` runs just these), the time from ``flatpak install``
returning to the extension's daemon answering a D-Bus call, from ``flatpak uninstall``
to it being gone, and what the package manager hooks add to a ``dpkg -i``. Nothing here
asserts: people judge the table.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench import booted_host, generate  # noqa: E402
from testsupport.flatpak import compile_c  # noqa: E402
from testsupport.source import TRIGGER  # noqa: E402

PY = sys.executable
"""Runs the harness, the ELF workers and the generators; the measured children run BENCH_PY."""
BENCH_PY = PY


class Measure:
    """One run of a child: wall seconds, CPU seconds (user and system) and peak RSS in MiB."""

    def __init__(self, seconds: float, rss_mib: float, cpu_seconds: float = 0.0) -> None:
        self.seconds, self.rss_mib, self.cpu_seconds = seconds, rss_mib, cpu_seconds


class Spawner:
    """bench/spawn.py, started once: it runs every measured child (see why there)."""

    def __init__(self, work: Path) -> None:
        self.stderr = work / "child.stderr"
        self.proc = subprocess.Popen([PY, "-I", str(REPO_ROOT / "bench" / "spawn.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, argv: Sequence[str], env: dict[str, str] | None = None) -> Measure:
        """Run ``argv`` to completion; output is discarded, a failure is fatal."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        req = {"argv": list(argv), "env": dict(os.environ if env is None else env),
               "stderr": str(self.stderr)}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        if answer["exit"] != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({answer['exit']}): "
                             f"{self.stderr.read_text()}")
        return Measure(answer["seconds"], answer["rss_kib"] / 1024, answer["cpu_seconds"])

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


_spawner: Spawner | None = None


def run(argv: Sequence[str], env: dict[str, str] | None = None) -> Measure:
    assert _spawner is not None
    return _spawner.run(argv, env)


def interleaved(cases: dict[str, Callable[[], Measure]], rounds: int) -> dict[str, list[Measure]]:
    """Run every case once per round, starting each round at the next case."""
    names = list(cases)
    out: dict[str, list[Measure]] = {n: [] for n in names}
    for r in range(rounds):
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            out[name].append(cases[name]())
    return out


def median_s(ms: list[Measure]) -> float:
    return statistics.median(m.seconds for m in ms)


def max_rss(ms: list[Measure]) -> float:
    return max(m.rss_mib for m in ms)


class World:
    """One generated installation with its own target directory and config."""

    def __init__(self, work: Path, name: str, template: generate.Template, apps: int,
                 files: int) -> None:
        self.path = work / name
        self.target = work / f"{name}-extensions"
        self.declared = generate.make_installation(template, self.path, apps, files=files)
        self.apps = apps
        config = work / f"{name}-config.json"
        # host_sync off: a benchmark must never refresh the real host's extensions.
        config.write_text(json.dumps({"target_dir": str(self.target), "host_sync": False,
                                      "require_gpg_verified_remote": False, "allow": ["*"]}))
        confdir = work / "etc-flatpak"
        confdir.mkdir(exist_ok=True)
        self.state = work / f"{name}-state"
        self.env = dict(os.environ, FLATPAK_SYSTEM_DIR=str(self.path),
                        FLATPAK_CONFIG_DIR=str(confdir), FLATPAK_SYSEXT_CONFIG=str(config),
                        FLATPAK_SYSEXT_STATE_DIR=str(self.state))

    def flatpak_count(self) -> int:
        """How many apps the real ``flatpak list`` sees in this installation."""
        out = subprocess.run(["flatpak", "--system", "list", "--app", "--columns=application"],
                             env=self.env, capture_output=True, text=True, check=True).stdout
        return len(out.split())

    def trigger(self) -> Measure:
        return run([BENCH_PY, "-I", str(TRIGGER), str(self.path)], self.env)

    def sandboxed_trigger(self) -> Measure:
        """The trigger as Flatpak runs it: in bubblewrap, only the installation writable."""
        return run([*bwrap(self.path), BENCH_PY, "-I", str(TRIGGER), str(self.path)], self.env)

    def sandboxed_bare(self) -> Measure:
        """Its baseline: the bare interpreter in the same sandbox."""
        return run([*bwrap(self.path), BENCH_PY, "-I", "-c", "pass"], self.env)

    def full_trigger(self) -> Measure:
        """The trigger without the quick check's stamp: the full evaluation."""
        (self.path / "flatpak-sysext" / "quick").unlink(missing_ok=True)
        return self.trigger()

    def trigger_after_update(self) -> Measure:
        """The trigger after Flatpak updated an app that declares nothing."""
        generate.update_plain_app(self.path, generate.app_id(1))
        return self.trigger()

    def stat_every_app(self) -> Measure:
        return run([BENCH_PY, "-I", "-c", STAT_EVERY_APP, str(self.path / "app")])

    def reconcile(self) -> Measure:
        return run([BENCH_PY, "-I", "-m", "flatpak_sysext", "reconcile", "--installation",
                    str(self.path)], self.env)

    def cold_reconcile(self) -> Measure:
        """A reconcile with no cache and no links: every extension validated and linked."""
        (self.path / "flatpak-sysext" / "cache.json").unlink(missing_ok=True)
        shutil.rmtree(self.target, ignore_errors=True)
        return self.reconcile()


def bench_python(work: Path) -> str:
    """The interpreter a distribution would run the trigger with, set up as it would be.

    A virtualenv of ``/usr/bin/python3`` with the package copied in (not an editable
    install, whose import hooks slow every start, the baseline's too), and the
    dependencies taken from this virtualenv. Falls back to this interpreter when
    ``/usr/bin/python3`` is another Python version or cannot make a virtualenv.
    """
    system = "/usr/bin/python3"
    probe = "import sys; print(sys.version_info[:2])"
    if not os.access(system, os.X_OK) or subprocess.run(
            [system, "-I", "-c", probe], capture_output=True, text=True).stdout.strip() != str(
            sys.version_info[:2]):
        return PY
    venv = work / "system-python"
    made = subprocess.run([system, "-m", "venv", "--without-pip", str(venv)],
                          capture_output=True, text=True)
    if made.returncode != 0:  # Debian without python3-venv, say
        print(f"bench: {system} cannot make a venv, using {PY}: {made.stderr.strip()}")
        return PY
    purelib = subprocess.run([str(venv / "bin/python"), "-I", "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    shutil.copytree(REPO_ROOT / "flatpak_sysext", Path(purelib) / "flatpak_sysext",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (Path(purelib) / "flatpak-sysext-bench-deps.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    return str(venv / "bin/python")


def bwrap(installation: Path) -> list[str]:
    """The sandbox flatpak_dir_run_triggers() puts a trigger in.

    See docs/platform.md#trigger-sandbox.
    """
    return ["bwrap", "--unshare-ipc", "--unshare-net", "--unshare-pid", "--ro-bind", "/", "/",
            "--proc", "/proc", "--dev", "/dev", "--bind", str(installation), str(installation)]


def bare() -> Measure:
    return run([BENCH_PY, "-I", "-c", "pass"])


STAT_EVERY_APP = ("import os, sys\n"
                  "d = sys.argv[1]\n"
                  "for n in os.listdir(d):\n"
                  "    try:\n"
                  "        os.lstat(f'{d}/{n}/current/active')\n"
                  "    except OSError:\n"
                  "        pass\n")
"""The floor of the quick check's answer after an update: one look at each app's
``current/active`` link (which deployment is active), as the check takes it."""


def bench_noop(worlds: list[World], updated: list[World], rounds: int) -> dict[str, Any]:
    """``updated`` are copies of ``worlds`` for the update case, which changes them."""
    for w in worlds + updated:  # warm: links made, cache and config memo written
        w.reconcile()
        # The trigger's first run tells what became of each app (told.py), once.
        subprocess.run([BENCH_PY, "-I", str(TRIGGER), str(w.path)], env=w.env,
                       capture_output=True, check=True)
    # The quick check trusts no timestamp younger than its margin: let it pass, as it
    # has between two Flatpak transactions, before the run that leaves the stamp.
    time.sleep(2.1)
    for w in worlds + updated:
        out = subprocess.run([BENCH_PY, "-I", str(TRIGGER), str(w.path)], env=w.env,
                             capture_output=True, text=True, check=True).stdout
        if out or not (w.path / "flatpak-sysext" / "quick").is_file():
            raise SystemExit(f"the no-op trigger said something or left no stamp:\n{out}")
    cases: dict[str, Callable[[], Measure]] = {"bare": bare}
    for w, u in zip(worlds, updated):
        cases[f"trigger-{w.apps}"] = w.trigger
        cases[f"after-update-{u.apps}"] = u.trigger_after_update
        cases[f"full-{w.apps}"] = w.full_trigger
        cases[f"stat-apps-{w.apps}"] = w.stat_every_app
        if w.apps == 1000:
            cases[f"bwrap-bare-{w.apps}"] = w.sandboxed_bare
            cases[f"bwrap-trigger-{w.apps}"] = w.sandboxed_trigger
    res = interleaved(cases, rounds)
    base = median_s(res["bare"])
    base_cpu = statistics.median(m.cpu_seconds for m in res["bare"])
    # CPU time beside wall time: on a machine others share, it is the steadier figure.
    rows = {name: {"median_s": median_s(ms), "x_bare": median_s(ms) / base,
                   "x_bare_cpu": statistics.median(m.cpu_seconds for m in ms) / base_cpu,
                   "max_rss_mib": max_rss(ms), "runs": len(ms)} for name, ms in res.items()}
    return rows


def bench_cold(worlds: list[World], rounds: int) -> dict[str, Any]:
    res = interleaved({f"cold-{w.apps}-apps-{len(w.declared)}-ext": w.cold_reconcile
                       for w in worlds}, rounds)
    return {name: {"median_s": median_s(ms), "max_rss_mib": max_rss(ms), "runs": len(ms)}
            for name, ms in res.items()}


def elf_worker(kind: str, listing: str) -> None:
    """Judge every file of ``listing`` in this process; print the loop's seconds."""
    paths = Path(listing).read_text().split("\n")
    if kind in ("judge", "judge-dynamic", "host-glibc"):
        from flatpak_sysext.rules import elf, hostglibc

        target = elf.ElfTarget.host()
        # One judge per run, as validate makes one per tree: the host's glibc is read once.
        glibc = hostglibc.GlibcJudge(hostglibc.HostGlibc("/", target))

        def verdict(path: str) -> bool:
            with open(path, "rb") as f:
                return elf.judge(f, target, glibc if kind == "host-glibc" else None) is None
    else:
        from elftools.elf.dynamic import DynamicSegment
        from elftools.elf.elffile import ELFFile

        def verdict(path: str) -> bool:
            # The obvious code: parse the file, look at every segment and dynamic tag.
            with open(path, "rb") as f:
                e = ELFFile(f)
                interp = needed = False
                for seg in e.iter_segments():
                    if seg["p_type"] == "PT_INTERP":
                        interp = True
                    elif isinstance(seg, DynamicSegment):
                        needed = any(t.entry.d_tag == "DT_NEEDED" for t in seg.iter_tags())
                return e["e_type"] in ("ET_EXEC", "ET_DYN") and not interp and not needed

    start = time.perf_counter()
    accepted = sum(verdict(p) for p in paths)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "accepted": accepted, "files": len(paths)}))


def bench_elf(work: Path, count: int, rounds: int) -> dict[str, Any]:
    src = "void _start(void) { for (;;) ; }\n"
    exes = [compile_c(src, work / "tiny-static", "-O2", "-nostdlib", "-static"),
            compile_c(src, work / "tiny-static-pie", "-O2", "-nostdlib", "-static-pie",
                      "-fPIE")]
    files = generate.make_elf_files(work / "elf", exes, count)
    listing = work / "elf-files.txt"
    listing.write_text("\n".join(map(str, files)))
    # Daemons that need only libc.so.6 (allow_host_glibc), PIE and not.
    hello = '#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n'
    dynamic = [compile_c(hello, work / "glibc-pie", "-O2"),
               compile_c(hello, work / "glibc-no-pie", "-O2", "-no-pie")]
    glibc_listing = work / "elf-glibc-files.txt"
    glibc_listing.write_text("\n".join(map(str, generate.make_elf_files(
        work / "elf-glibc", dynamic, count))))
    loops: dict[str, list[float]] = {"judge": [], "pyelftools": [], "judge-dynamic": [],
                                     "host-glibc": []}
    # Which files each kind judges, and how many it must accept.
    inputs = {"judge": (listing, count), "pyelftools": (listing, count),
              "judge-dynamic": (glibc_listing, 0), "host-glibc": (glibc_listing, count)}

    def worker(kind: str) -> Callable[[], Measure]:
        def go() -> Measure:
            start = time.perf_counter()
            files, expected = inputs[kind]
            out = subprocess.run([PY, "-I", __file__, "elf-worker", kind, str(files)],
                                 capture_output=True, text=True, check=True).stdout
            data = json.loads(out)
            if data["accepted"] != expected:
                raise SystemExit(f"{kind} accepted {data['accepted']} of {count} files, "
                                 f"not {expected}")
            loops[kind].append(data["seconds"])
            return Measure(time.perf_counter() - start, 0)
        return go

    res = interleaved({k: worker(k) for k in loops}, rounds)
    rates = {k: count / statistics.median(v) for k, v in loops.items()}
    return {k: {"files": count, "files_per_s": rates[k], "process_median_s": median_s(res[k]),
                "runs": len(v)} for k, v in loops.items()} | {
        "speedup": rates["judge"] / rates["pyelftools"]}


def bench_check(work: Path, sizes: list[int], exe: Path, rounds: int) -> dict[str, Any]:
    cases: dict[str, Callable[[], Measure]] = {}
    for n in sizes:
        tree = work / f"tree-{n}"
        generate.make_check_tree(tree, "org.fsx.bench.Big", n, exe)
        cases[f"check-{n}"] = functools.partial(
            run, [BENCH_PY, "-I", "-m", "flatpak_sysext", "check", str(tree), "--json"])
    res = interleaved(cases, rounds)
    return {name: {"files": n, "median_s": median_s(ms), "max_rss_mib": max_rss(ms),
                   "runs": len(ms)} for (name, ms), n in zip(res.items(), sizes)}


def _disk_mib(root: Path) -> float:
    """What the files under ``root`` occupy (allocated blocks), in MiB."""
    blocks = sum(os.lstat(os.path.join(d, n)).st_blocks
                 for d, dirs, names in os.walk(root) for n in dirs + names)
    return (blocks + os.lstat(root).st_blocks) * 512 / (1 << 20)


def _signed_sysprof(work: Path) -> tuple[Any, Callable[[str], None]]:
    """A Sysprof-sized tree installed by the real flatpak from a signed repository: its
    deployed tree, and what verifying a copy of it costs the store (pipeline.verify's
    steps: the commit, its binding, its signature against the keyring, every file)."""
    from flatpak_sysext.flatpak import ostree
    from flatpak_sysext.state import keyring
    from testsupport.flatpak import ARCH, FlatpakEnv, daemon_tree

    app = "org.fsx.bench.Sysprof"
    env = FlatpakEnv(work / "verify-world", signed=True)

    def build(root: Path) -> None:
        daemon_tree(app, "v1")(root)
        policy = root / "usr/share/polkit-1/actions" / f"{app}.policy"
        policy.parent.mkdir(parents=True)
        policy.write_text("<policyconfig/>\n")

    try:
        env.publish(app, build)
        env.install(app)
    finally:
        env.close()
    inst = os.path.realpath(env.system_dir)
    repo = os.path.join(inst, "repo")
    checksum = env.commit(app)
    ring = keyring.remote_keyring(inst, "test") or b""

    def verify(copy: str) -> None:
        commit = ostree.read_commit(repo, checksum)
        ostree.check_binding(commit, f"app/{app}/{ARCH}/stable", None)
        ostree.verify_signature(repo, checksum, ring)
        ostree.verify_tree(repo, commit, "files/lib/extensions", copy)

    return env.deploy_files(app) / "lib/extensions", verify


def bench_store(work: Path, rounds: int) -> dict[str, Any]:
    """What a validated snapshot costs (store.py, pipeline.py): copying a tree into the
    store, verifying the copy against its signed commit, validating it, for a
    Sysprof-sized tree (installed by flatpak) and a 100-file one (no commit: not
    verified); and the disk it takes."""
    from flatpak_sysext.rules import elf, release, validate
    from flatpak_sysext.state import store

    sysprof, verify = _signed_sysprof(work)
    trees = {"sysprof-like": sysprof, "100-file": work / "store-src-100"}
    exe = compile_c("int main(void){return 0;}", work / "store-exe", "-static")
    generate.make_check_tree(trees["100-file"], "org.fsx.bench.Hundred", 100, exe)
    host, target = release.read_host(), elf.ElfTarget.host()
    results: dict[str, Any] = {}
    for label, src in trees.items():
        name = "org.fsx.bench.Sysprof" if label == "sysprof-like" else "org.fsx.bench.Hundred"
        copies: list[float] = []
        verifies: list[float] = []
        checks: list[float] = []
        disk = 0.0
        for i in range(rounds):
            dest = work / "store-state" / "installations" / "bench" / "store" / f"{name}.{i}"
            t0 = time.perf_counter()
            tmp = store.make(str(src), str(dest))
            t1 = time.perf_counter()
            if label == "sysprof-like":
                verify(tmp)
            t2 = time.perf_counter()
            report = validate.validate_tree(tmp, name, host, target)
            t3 = time.perf_counter()
            assert report.accepted, report.problems
            disk = _disk_mib(Path(tmp))
            store.discard(tmp)
            copies.append(t1 - t0)
            verifies.append(t2 - t1)
            checks.append(t3 - t2)
        files = sum(len(n) for _, _, n in os.walk(src))
        results[label] = {"files": files, "copy_s": statistics.median(copies),
                          "verify_s": (statistics.median(verifies)
                                       if label == "sysprof-like" else None),
                          "validate_s": statistics.median(checks), "disk_mib": disk,
                          "source_mib": _disk_mib(src), "runs": rounds}
    return results


def store_rows(s: dict[str, Any]) -> list[str]:
    """The snapshot's costs: copy, verification and validation time, and its disk. A
    run that changes nothing verifies nothing (snapshots are verified when made)."""
    return [f"{'snapshot, ' + label + ' (' + str(r['files']) + ' files)':<48} "
            f"{r['copy_s'] * 1000:>7.1f}ms copy, "
            + (f"{r['verify_s'] * 1000:.1f}ms verify, " if r.get("verify_s") is not None
               else "")
            + f"{r['validate_s'] * 1000:.1f}ms validate, "
            f"{r['disk_mib']:.2f} MiB on disk (source {r['source_mib']:.2f} MiB)"
            for label, r in s.items()]


NOOP_ROWS = {
    "bare": ("bare interpreter start", ""),
    "trigger": ("no-op trigger, nothing changed", "<= 2.5x at 1,000; < 5x at 10,000"),
    "after-update": ("trigger, app w/o extension updated", "<= 2.0x at 1,000"),
    "full": ("trigger, full evaluation", ""),
    "stat-apps": ("floor: lstat every app's active link", ""),
    "bwrap-bare": ("bare start in Flatpak's trigger sandbox", ""),
    "bwrap-trigger": ("no-op trigger in that sandbox", ""),
}


def noop_rows(noop: dict[str, Any]) -> list[str]:
    """The trigger's rows: each case beside the bare interpreter, with its target."""
    lines = [f"{'case':<48} {'median':>9} {'x bare':>7} {'(cpu)':>7} {'peak RSS':>9}  target"]
    for name, r in noop.items():
        kind, _, apps = name.rpartition("-")
        label, target = NOOP_ROWS[kind] if kind else NOOP_ROWS[name]
        label = f"{label}, {int(apps):,} apps" if kind else label
        x, cpu = f"{r['x_bare']:.2f}x", f"{r['x_bare_cpu']:.2f}x"
        if kind.startswith("bwrap"):
            cpu = ""  # wait4 does not count the sandboxed grandchild
        lines.append(f"{label:<48} {r['median_s'] * 1000:>7.1f}ms {x:>7} {cpu:>7} "
                     f"{r['max_rss_mib']:>6.1f}MiB  {target if apps in ('1000', '10000') else ''}")
    return lines


def table(results: dict[str, Any]) -> str:
    lines = [f"interpreter: {results['machine']['bench_python']}",
             *noop_rows(results["noop"])]
    for name, r in results["cold"].items():
        lines.append(f"{name:<48} {r['median_s'] * 1000:>7.0f}ms {'':>7} "
                     f"{r['max_rss_mib']:>6.1f}MiB  <= 1 s (100 ext), <= 100 MiB")
    for name, r in results["check"].items():
        lines.append(f"{name + ' files':<48} {r['median_s'] * 1000:>7.0f}ms {'':>7} "
                     f"{r['max_rss_mib']:>6.1f}MiB")
    lines += elf_rows(results["elf"])
    lines += store_rows(results["store"])
    if "booted" in results:
        lines += booted_host.booted_rows(results["booted"])
    return "\n".join(lines)


ELF_ROWS = {"judge": "judge", "pyelftools": "pyelftools",
            "judge-dynamic": "glibc daemon, static rule",
            "host-glibc": "glibc daemon, allow_host_glibc"}


def elf_rows(e: dict[str, Any]) -> list[str]:
    """The ELF verdict rates: files per second and microseconds per file."""
    lines = [f"{'ELF verdicts, ' + label:<48} {e[k]['files_per_s']:>7.0f}/s "
             f"{1e6 / e[k]['files_per_s']:>6.1f}us/file" for k, label in ELF_ROWS.items()]
    lines.append(f"{'ELF speedup (judge / pyelftools)':<48} {e['speedup']:>8.1f}x"
                 f"{'':>18}>= 10,000/s, >= 5x")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="fewer rounds, smaller check trees")
    p.add_argument("--out", default=str(REPO_ROOT / "bench-results.json"))
    p.add_argument("--keep", action="store_true", help="keep the generated files")
    p.add_argument("--elf-only", action="store_true",
                   help="only the ELF verdict rates (needs gcc, not root)")
    p.add_argument("--booted-only", action="store_true",
                   help="only the figures on the booted Debian 12 of tests/test_booted.py: "
                        "flatpak install to the daemon answering over D-Bus, and what the "
                        "package manager hooks add to dpkg -i (root, systemd-nspawn, go)")
    p.add_argument("--hooks-only", action="store_true",
                   help="with --booted-only: only what the package manager hooks add")
    p.add_argument("--store-only", action="store_true",
                   help="only the costs of a validated snapshot (needs gcc, flatpak, gpg "
                        "and root)")
    p.add_argument("--rounds", type=int, metavar="N",
                   help="rounds of the interleaved whole-process runs (default 11; --quick: 5)")
    p.add_argument("--trigger-only", action="store_true",
                   help="only the trigger's rows: nothing changed, after an update, full, "
                        "the floor (root, flatpak, bubblewrap, gcc)")
    args = p.parse_args(argv)
    if args.booted_only:
        if booted_host.missing():
            print(f"bench: needs {', '.join(booted_host.missing())} for the booted host",
                  file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory(prefix="flatpak-sysext-bench.") as tmp:
            print("\n".join(booted_host.booted_rows(booted_host.run(Path(tmp), args.quick,
                                                                   args.hooks_only))))
        return 0
    if args.store_only:
        with tempfile.TemporaryDirectory(prefix="flatpak-sysext-bench.", dir="/var/tmp") as tmp:
            print("\n".join(store_rows(bench_store(Path(tmp), 5 if args.quick else 11))))
        return 0
    if args.elf_only:
        with tempfile.TemporaryDirectory(prefix="flatpak-sysext-bench.") as tmp:
            rounds = 3 if args.quick else 5
            print("\n".join(elf_rows(bench_elf(Path(tmp), 2000 if args.quick else 5000,
                                                rounds))))
        return 0
    if os.geteuid() != 0 or not all(shutil.which(c) for c in ("flatpak", "bwrap", "gcc")):
        print("bench: needs root, flatpak, bubblewrap and gcc (make deps installs them)",
              file=sys.stderr)
        return 2
    os.umask(0o022)  # generated trees must have the modes Flatpak gives them
    rounds = args.rounds or (5 if args.quick else 11)
    work = Path(tempfile.mkdtemp(prefix="flatpak-sysext-bench.", dir="/var/tmp"))
    global _spawner, BENCH_PY
    _spawner = Spawner(work)
    BENCH_PY = bench_python(work)
    try:
        t0 = time.perf_counter()
        template = generate.make_template(work)
        sizes = (100, 1000, 10000)
        worlds = [World(work, f"apps{n}", template, n, 4) for n in sizes]
        updated = [World(work, f"updated{n}", template, n, 4) for n in sizes]
        cold = [] if args.trigger_only else [World(work, "cold100x20", template, 1000, 20)]
        counts = {w.path.name: w.flatpak_count() for w in [*worlds, *updated, *cold]}
        print(f"generated in {time.perf_counter() - t0:.1f}s; flatpak list sees: "
              + ", ".join(f"{n} apps in {k}" for k, n in counts.items()), flush=True)
        results: dict[str, Any] = {
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "kernel": platform.release(), "bench_python": BENCH_PY},
            "flatpak_list_counts": counts,
        }
        results["noop"] = bench_noop(worlds, updated, rounds)
        if args.trigger_only:
            print("\n".join([f"interpreter: {BENCH_PY}", *noop_rows(results["noop"])]))
            return 0
        results["cold"] = bench_cold([*cold, worlds[-1]], max(3, rounds // 3))
        results["elf"] = bench_elf(work, 2000 if args.quick else 5000, max(3, rounds // 3))
        check_sizes = [5000, 10000, 20000] if args.quick else [25000, 50000, 100000]
        results["check"] = bench_check(work, check_sizes, template.static_exe, 3)
        results["store"] = bench_store(work, max(3, rounds // 3))
        if booted_host.missing():  # the rest stands without it
            print(f"bench: no booted-host figures: needs {', '.join(booted_host.missing())}")
        else:
            results["booted"] = booted_host.run(work, args.quick)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        print(table(results))
        print(f"results in {args.out}; total {time.perf_counter() - t0:.0f}s")
    finally:
        _spawner.close()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["elf-worker"]:
        elf_worker(sys.argv[2], sys.argv[3])
        sys.exit(0)
    sys.exit(main())
