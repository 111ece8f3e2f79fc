"""``make bench``: what flatpak-sysext costs as installations grow, beside baselines.

Every figure is a whole process (spawn to exit, with its peak RSS from ``wait4``), the
median of runs interleaved with their baseline in the same session, so a busy machine
slows both alike. Needs root (the trigger does nothing otherwise), flatpak and gcc.

    .venv/bin/python bench/bench.py [--quick] [--out bench-results.json] [--keep]

Measured (issue 6): the no-op trigger at 100/1,000/10,000 apps (10% with an extension,
warm cache, every link already in place) against ``python -I -c pass``; a cold reconcile
(no cache, no links); ELF verdicts per second against the obvious pyelftools code; and
``check`` on trees of 25k/50k/100k files. Nothing here asserts: people judge the table.
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
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench import generate  # noqa: E402
from tests.flatpaktools import TRIGGER, compile_c  # noqa: E402

PY = sys.executable


class Measure:
    """One run of a child: wall seconds and peak RSS in MiB."""

    def __init__(self, seconds: float, rss_mib: float) -> None:
        self.seconds, self.rss_mib = seconds, rss_mib


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
        return Measure(answer["seconds"], answer["rss_kib"] / 1024)

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
                                      "require_gpg_verified_remote": False}))
        confdir = work / "etc-flatpak"
        confdir.mkdir(exist_ok=True)
        self.env = dict(os.environ, FLATPAK_SYSTEM_DIR=str(self.path),
                        FLATPAK_CONFIG_DIR=str(confdir), FLATPAK_SYSEXT_CONFIG=str(config))

    def flatpak_count(self) -> int:
        """How many apps the real ``flatpak list`` sees in this installation."""
        out = subprocess.run(["flatpak", "--system", "list", "--app", "--columns=application"],
                             env=self.env, capture_output=True, text=True, check=True).stdout
        return len(out.split())

    def trigger(self) -> Measure:
        return run([PY, "-I", str(TRIGGER), str(self.path)], self.env)

    def reconcile(self) -> Measure:
        return run([PY, "-I", "-m", "flatpak_sysext", "reconcile", "--installation",
                    str(self.path)], self.env)

    def cold_reconcile(self) -> Measure:
        """A reconcile with no cache and no links: every extension validated and linked."""
        (self.path / "flatpak-sysext" / "cache.json").unlink(missing_ok=True)
        shutil.rmtree(self.target, ignore_errors=True)
        return self.reconcile()


def bare() -> Measure:
    return run([PY, "-I", "-c", "pass"])


def bench_noop(worlds: list[World], rounds: int) -> dict[str, Any]:
    for w in worlds:  # warm: links made, cache and config memo written
        w.reconcile()
        out = subprocess.run([PY, "-I", str(TRIGGER), str(w.path)], env=w.env,
                             capture_output=True, text=True, check=True).stdout
        if out:
            raise SystemExit(f"the no-op trigger said something:\n{out}")
    cases: dict[str, Callable[[], Measure]] = {"bare": bare}
    cases.update({f"trigger-{w.apps}": w.trigger for w in worlds})
    res = interleaved(cases, rounds)
    base = median_s(res["bare"])
    rows = {name: {"median_s": median_s(ms), "x_bare": median_s(ms) / base,
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
    if kind == "judge":
        from flatpak_sysext import elf

        target = elf.ElfTarget.host()

        def verdict(path: str) -> bool:
            with open(path, "rb") as f:
                return elf.judge(f, target) is None
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
    loops: dict[str, list[float]] = {"judge": [], "pyelftools": []}

    def worker(kind: str) -> Callable[[], Measure]:
        def go() -> Measure:
            start = time.perf_counter()
            out = subprocess.run([PY, "-I", __file__, "elf-worker", kind, str(listing)],
                                 capture_output=True, text=True, check=True).stdout
            data = json.loads(out)
            if data["accepted"] != count:
                raise SystemExit(f"{kind} accepted {data['accepted']} of {count} static files")
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
            run, [PY, "-I", "-m", "flatpak_sysext", "check", str(tree), "--json"])
    res = interleaved(cases, rounds)
    return {name: {"files": n, "median_s": median_s(ms), "max_rss_mib": max_rss(ms),
                   "runs": len(ms)} for (name, ms), n in zip(res.items(), sizes)}


def table(results: dict[str, Any]) -> str:
    lines = [f"{'case':<34} {'median':>9} {'x bare':>7} {'peak RSS':>9}  target"]
    targets = {"trigger-1000": "<= 2.5x", "trigger-10000": "< 5x"}
    for name, r in results["noop"].items():
        x = f"{r['x_bare']:.2f}x"
        lines.append(f"{'no-op ' + name:<34} {r['median_s'] * 1000:>7.0f}ms {x:>7} "
                     f"{r['max_rss_mib']:>6.1f}MiB  {targets.get(name, '')}")
    for name, r in results["cold"].items():
        lines.append(f"{name:<34} {r['median_s'] * 1000:>7.0f}ms {'':>7} "
                     f"{r['max_rss_mib']:>6.1f}MiB  <= 1 s (100 ext), <= 100 MiB")
    for name, r in results["check"].items():
        lines.append(f"{name + ' files':<34} {r['median_s'] * 1000:>7.0f}ms {'':>7} "
                     f"{r['max_rss_mib']:>6.1f}MiB")
    e = results["elf"]
    for k in ("judge", "pyelftools"):
        lines.append(f"{'ELF verdicts, ' + k:<34} {e[k]['files_per_s']:>7.0f}/s")
    lines.append(f"{'ELF speedup (judge / pyelftools)':<34} {e['speedup']:>8.1f}x"
                 f"{'':>18}>= 10,000/s, >= 5x")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="fewer rounds, smaller check trees")
    p.add_argument("--out", default=str(REPO_ROOT / "bench-results.json"))
    p.add_argument("--keep", action="store_true", help="keep the generated files")
    args = p.parse_args(argv)
    if os.geteuid() != 0 or not shutil.which("flatpak") or not shutil.which("gcc"):
        print("bench: needs root, flatpak and gcc (make deps installs them)", file=sys.stderr)
        return 2
    os.umask(0o022)  # generated trees must have the modes Flatpak gives them
    rounds = 5 if args.quick else 11
    work = Path(tempfile.mkdtemp(prefix="flatpak-sysext-bench.", dir="/var/tmp"))
    global _spawner
    _spawner = Spawner(work)
    try:
        t0 = time.perf_counter()
        template = generate.make_template(work)
        worlds = [World(work, f"apps{n}", template, n, 4) for n in (100, 1000, 10000)]
        cold = World(work, "cold100x20", template, 1000, 20)
        counts = {w.path.name: w.flatpak_count() for w in [*worlds, cold]}
        print(f"generated in {time.perf_counter() - t0:.1f}s; flatpak list sees: "
              + ", ".join(f"{n} apps in {k}" for k, n in counts.items()), flush=True)
        results: dict[str, Any] = {
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "kernel": platform.release()},
            "flatpak_list_counts": counts,
        }
        results["noop"] = bench_noop(worlds, rounds)
        results["cold"] = bench_cold([cold, worlds[-1]], max(3, rounds // 3))
        results["elf"] = bench_elf(work, 2000 if args.quick else 5000, max(3, rounds // 3))
        sizes = [5000, 10000, 20000] if args.quick else [25000, 50000, 100000]
        results["check"] = bench_check(work, sizes, template.static_exe, 3)
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
