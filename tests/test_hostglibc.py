# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""allow_host_glibc: executables that need only the host's glibc, judged against it.

Real binaries built here with gcc, real ones from Debian's coreutils, a simulated host
(a root holding a loader and a libc.so.6 that defines fewer versions), a real Flatpak
installation whose linked extension is unlinked when the host's glibc changes, and
forged version tables. What the binaries need is read with binutils' readelf, never
with the code under test.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flatpak_sysext import config, quick, trigger
from flatpak_sysext.report import TreeReport
from flatpak_sysext.rules import elf, hostglibc, release, validate
from testsupport.elfcorpus import CountingFile
from testsupport.flatpak import FlatpakEnv, compile_c, daemon_tree, schema, write_release
from testsupport.prerequisites import require_available, require_tools

APP = "org.fsx.Glibc"
DAEMON = "usr/libexec/daemon"
HELLO = '#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n'
MATH = r"""
#include <math.h>
#include <pthread.h>
#include <stdio.h>
static void *run(void *arg) { return arg; }
int main(int argc, char **argv) {
    pthread_t t;
    pthread_create(&t, 0, run, 0);
    pthread_join(t, 0);
    printf("%f\n", sqrt((double)argc + (argv[0][0] == 0)));
    return 0;
}
"""
ZLIB = '#include <stdio.h>\n#include <zlib.h>\nint main(void) { puts(zlibVersion()); return 0; }\n'
FAKE_LIBC_VERSIONS = ("GLIBC_2.2.5", "GLIBC_2.17")  # what the simulated host's libc defines


def readelf(*args: str) -> str:
    return subprocess.run(["readelf", "--wide", *args], check=True, capture_output=True,
                          text=True).stdout


def needed(path: Path) -> list[str]:
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^]]+)\]", readelf("-d", str(path)))


def interpreter(path: Path) -> str:
    found = re.search(r"Requesting program interpreter: ([^]]+)\]", readelf("-l", str(path)))
    assert found is not None
    return found.group(1)


def version_needs(path: Path) -> dict[str, set[str]]:
    """File -> versions, from readelf's .gnu.version_r listing."""
    text = readelf("-V", str(path)).split(".gnu.version_r", 1)[1]
    result: dict[str, set[str]] = {}
    current = ""
    for line in text.splitlines():
        file = re.search(r"File: (\S+)", line)
        name = re.search(r"Name: (\S+)", line)
        if file:
            current = file.group(1)
        elif name:
            result.setdefault(current, set()).add(name.group(1))
    return result


@pytest.fixture(scope="module")
def bins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    require_tools("gcc", "readelf")
    require_available(Path("/usr/include/zlib.h").is_file(), "zlib1g-dev is needed")
    out = tmp_path_factory.mktemp("bins")
    # DT_NEEDED libpthread.so.0, a stub since glibc 2.34, as binaries built before have it.
    noasneeded = "-Wl,--no-as-needed"
    built = {
        "libc": compile_c(HELLO, out / "libc"),
        "math": compile_c(MATH, out / "math", noasneeded, "-lm", "-l:libpthread.so.0"),
        "zlib": compile_c(ZLIB, out / "zlib", "-lz"),
        "rpath": compile_c(HELLO, out / "rpath", "-Wl,-rpath,/opt/fsx/lib"),
        "interp": compile_c(HELLO, out / "interp", "-Wl,--dynamic-linker=/opt/fsx/ld.so"),
        "audit": compile_c(HELLO, out / "audit", "-Wl,--audit,libfsxaudit.so"),
    }
    # The builds must be what each test says they are.
    assert needed(built["libc"]) == ["libc.so.6"]
    assert {"libm.so.6", "libpthread.so.0"} <= set(needed(built["math"]))
    assert "libz.so.1" in needed(built["zlib"])
    return built


@pytest.fixture(scope="module")
def old_host(tmp_path_factory: pytest.TempPathFactory, bins: dict[str, Path]) -> Path:
    """A host root whose loader is this host's and whose libc.so.6 defines only
    FAKE_LIBC_VERSIONS, built with gcc -shared and a version script."""
    root = tmp_path_factory.mktemp("oldhost")
    loader = interpreter(bins["libc"])
    (root / loader.lstrip("/")).parent.mkdir(parents=True)
    shutil.copy(os.path.realpath(loader), root / loader.lstrip("/"))
    multiarch = subprocess.run(["gcc", "-print-multiarch"], capture_output=True, text=True,
                               check=True).stdout.strip()
    libdir = root / "lib" / multiarch
    libdir.mkdir(parents=True)
    script = root / "libc.map"
    nodes = [f"{v} {{ global: fsx_{i}; }}{' ' + FAKE_LIBC_VERSIONS[i - 1] if i else ''};"
             for i, v in enumerate(FAKE_LIBC_VERSIONS)]
    script.write_text("\n".join(nodes) + "\n")
    src = root / "fake.c"
    src.write_text("".join(f"int fsx_{i}(void) {{ return {i}; }}\n"
                           for i in range(len(FAKE_LIBC_VERSIONS))))
    subprocess.run(["gcc", "-shared", "-fPIC", "-nostdlib", "-Wl,-soname,libc.so.6",
                    f"-Wl,--version-script={script}", "-o", str(libdir / "libc.so.6"),
                    str(src)], check=True)
    return root


def tree(tmp_path: Path, binary: Path) -> Path:
    root = tmp_path / "tree"
    write_release(root, APP)
    (root / DAEMON).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(binary, root / DAEMON)
    return root


def judge(tmp_path: Path, binary: Path, *, glibc_root: str | None = "/") -> TreeReport:
    target = elf.ElfTarget.host()
    host = None if glibc_root is None else hostglibc.HostGlibc(glibc_root, target)
    return validate.validate_tree(tree(tmp_path, binary), APP, release.read_host(os.environ),
                                  target, host_glibc=host)


def only_problem(report: TreeReport) -> str:
    [problem] = report.problems
    assert (problem.code, problem.path) == ("dynamic-elf", DAEMON)
    return problem.message


def test_a_daemon_needing_only_libc_is_admitted_only_with_the_key(
        tmp_path: Path, bins: dict[str, Path]) -> None:
    assert "link it statically" in only_problem(judge(tmp_path, bins["libc"], glibc_root=None))
    report = judge(tmp_path, bins["libc"])
    assert report.accepted, report.problems
    [(library, versions)] = report.host_glibc
    assert library == "libc.so.6"
    numbered = [v for v in version_needs(bins["libc"])["libc.so.6"] if v[6:7].isdigit()]
    top = max(numbered, key=lambda v: [int(n) for n in v[6:].split(".")])
    assert versions[0] == top


def test_libm_and_libpthread_are_glibc(tmp_path: Path, bins: dict[str, Path]) -> None:
    report = judge(tmp_path, bins["math"])
    assert report.accepted, report.problems
    assert {lib for lib, _ in report.host_glibc} == set(version_needs(bins["math"]))


@pytest.mark.parametrize("build, says", [
    ("zlib", ["libz.so.1", "not part of glibc"]),
    ("rpath", ["/opt/fsx/lib", "read files from elsewhere"]),
    ("audit", ["DT_AUDIT", "libfsxaudit.so"]),
    ("interp", ["/opt/fsx/ld.so", "not this host's glibc loader"]),
])
def test_what_glibc_alone_cannot_run_stays_dynamic_elf(
        tmp_path: Path, bins: dict[str, Path], build: str, says: list[str]) -> None:
    message = only_problem(judge(tmp_path, bins[build]))
    assert all(s in message for s in says), message
    assert "allow_host_glibc cannot admit it" in message


def test_a_version_the_host_lacks_is_named_with_what_the_host_has(
        tmp_path: Path, bins: dict[str, Path], old_host: Path) -> None:
    message = only_problem(judge(tmp_path, bins["libc"], glibc_root=str(old_host)))
    found = re.search(r"needs (\S+) from libc.so.6; this host's libc.so.6 defines up to (\S+)$",
                      message)
    assert found is not None, message
    assert found.group(1) in version_needs(bins["libc"])["libc.so.6"]
    assert found.group(1) not in FAKE_LIBC_VERSIONS
    assert found.group(2) == FAKE_LIBC_VERSIONS[-1]


def test_a_host_without_the_loader_admits_nothing(tmp_path: Path, bins: dict[str, Path]) -> None:
    (tmp_path / "empty").mkdir()
    message = only_problem(judge(tmp_path, bins["libc"], glibc_root=str(tmp_path / "empty")))
    assert f"this host has no glibc loader at {interpreter(bins['libc'])}" in message


def debian_binary(path: str, package: str) -> Path:
    owner = subprocess.run(["dpkg-query", "-S", path], capture_output=True, text=True)
    require_available(owner.returncode == 0 and owner.stdout.startswith(f"{package}:"),
            f"{path} from Debian's {package} is needed")
    return Path(path)


def test_debian_binaries(tmp_path: Path) -> None:
    cat = debian_binary("/bin/cat", "coreutils")
    ls = debian_binary("/bin/ls", "coreutils")
    assert needed(cat) == ["libc.so.6"]
    assert judge(tmp_path / "cat", cat).accepted
    others = [n for n in needed(ls) if n != "libc.so.6"]
    assert others  # libselinux.so.1 on Debian
    assert others[0] in only_problem(judge(tmp_path / "ls", ls))


def test_check_command_and_its_json(tmp_path: Path, bins: dict[str, Path],
                                    old_host: Path) -> None:
    root = tree(tmp_path, bins["libc"])

    def check(*args: str, glibc_root: str = "/") -> tuple[int, dict[str, object]]:
        env = dict(os.environ, **{config.GLIBC_ROOT_VARIABLE: glibc_root})
        result = subprocess.run([sys.executable, "-m", "flatpak_sysext", "check", "--json",
                                 *args, str(root)], capture_output=True, text=True, env=env)
        doc = json.loads(result.stdout)
        jsonschema.validate(doc, schema("check"))
        return result.returncode, doc

    code, doc = check()
    assert (code, doc["accepted"], doc["host_glibc"]) == (1, False, {})
    code, doc = check("--allow-host-glibc")
    assert (code, doc["accepted"]) == (0, True)
    assert list(doc["host_glibc"]) == ["libc.so.6"]  # type: ignore[call-overload]
    code, doc = check("--allow-host-glibc", glibc_root=str(old_host))
    assert (code, doc["accepted"]) == (1, False)


def test_config_key(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    for value, allowed in [(True, ["org.a.B"]), (False, []), (["org.a.*"], ["org.a.B"]),
                           (["org.x.*"], [])]:
        path.write_text(json.dumps({"allow_host_glibc": value}))
        cfg = config.load(str(path))
        assert [a for a in ["org.a.B"] if cfg.host_glibc_allowed(a)] == allowed
    path.write_text(json.dumps({"allow_host_glibc": "yes"}))
    with pytest.raises(config.ConfigError, match="allow_host_glibc"):
        config.load(str(path))


@pytest.mark.privileged
def test_a_glibc_change_unlinks_at_the_next_reconcile(
        fenv: FlatpakEnv, old_host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fenv.write_config({"allow_host_glibc": [APP]})
    fenv.publish(APP, daemon_tree(APP, "v1", static=False))
    fenv.install(APP)
    result = fenv.sysext("reconcile")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{APP}: linked" in result.stdout
    assert set(fenv.links()) == {APP}
    # The host's glibc is now older than what the daemon was built against.
    monkeypatch.setenv(config.GLIBC_ROOT_VARIABLE, str(old_host))
    result = fenv.sysext("reconcile")
    assert f"{APP}: unlinked" in result.stdout, result.stdout + result.stderr
    assert "this host's libc.so.6 defines up to" in result.stdout
    assert fenv.links() == {}
    status = fenv.status()[APP]
    assert status["state"] == "rejected"
    assert status["problems"][0]["code"] == "dynamic-elf"


@pytest.mark.privileged
def test_the_quick_check_sees_a_glibc_change(
        fenv: FlatpakEnv, bins: dict[str, Path], old_host: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A host root with this host's own loader and libc: the daemon fits it.
    host = tmp_path / "host"
    for path in (interpreter(bins["libc"]), hostglibc_path(old_host)):
        (host / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.realpath(path), host / path.lstrip("/"))
    monkeypatch.setattr(quick, "MARGIN_NS", 50_000_000)
    fenv.write_config({"allow_host_glibc": True})
    fenv.publish(APP, daemon_tree(APP, "v1", static=False))
    fenv.install(APP)
    env = dict(fenv.env, **{config.GLIBC_ROOT_VARIABLE: str(host)})
    basedir = str(fenv.system_dir)

    def full() -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            trigger.run_full(basedir, None, env)
        return out.getvalue()

    assert f"{APP}: linked" in full()
    time.sleep(0.2)
    assert full() == ""  # quiet: it leaves the quick check's stamp
    assert quick.quiet(basedir, env)
    # A glibc upgrade (here a downgrade) replaces libc.so.6.
    libc = host / hostglibc_path(old_host).lstrip("/")
    libc.unlink()
    shutil.copy(old_host / hostglibc_path(old_host).lstrip("/"), libc)
    assert not quick.quiet(basedir, env)
    assert f"{APP}: unlinked" in full()


def hostglibc_path(root: Path) -> str:
    """Where the simulated host keeps libc.so.6, as a host path."""
    [libc] = root.glob("lib/*/libc.so.6")
    return "/" + str(libc.relative_to(root))


# Forged version tables: (what is written, where, relative to the first Elf_Verneed).
FORGERIES = {
    "vn_version 2": (0, b"\x02\x00"),
    "vn_file beyond DT_STRSZ": (4, b"\xff\xff\xff\x7f"),
    "vn_aux beyond the file": (8, b"\xff\xff\xff\x0f"),
    "vn_next beyond the file": (12, b"\x00\x00\x00\x10"),
    "vna_name beyond DT_STRSZ": (16 + 8, b"\xff\xff\xff\x7f"),
    "vna_next beyond the file": (16 + 12, b"\x00\x00\x00\x10"),
}


def verneed_offset(path: Path) -> int:
    found = re.search(r"\.gnu\.version_r\s+VERNEED\s+\S+\s+(\S+)", readelf("-S", str(path)))
    assert found is not None
    return int(found.group(1), 16)


@pytest.mark.parametrize("forgery", FORGERIES)
def test_forged_version_needs_are_a_verdict_not_an_exception(
        tmp_path: Path, bins: dict[str, Path], forgery: str) -> None:
    assert sys.byteorder == "little" or pytest.skip("the forgeries are little-endian")
    data = bytearray(bins["libc"].read_bytes())
    where, value = FORGERIES[forgery]
    at = verneed_offset(bins["libc"]) + where
    data[at:at + len(value)] = value
    (tmp_path / "forged").write_bytes(data)
    report = judge(tmp_path, tmp_path / "forged")
    assert [p.code for p in report.problems] in (["malformed-elf"], ["dynamic-elf"])


def test_truncated_in_the_version_table(tmp_path: Path, bins: dict[str, Path]) -> None:
    data = bins["libc"].read_bytes()
    (tmp_path / "cut").write_bytes(data[:verneed_offset(bins["libc"]) + 20])
    report = judge(tmp_path, tmp_path / "cut")
    assert [p.code for p in report.problems] in (["malformed-elf"], ["dynamic-elf"])


@pytest.fixture(scope="module")
def seed(bins: dict[str, Path]) -> tuple[bytes, int, hostglibc.HostGlibc]:
    """The libc-only daemon, where its version table starts, and this host's glibc."""
    path = bins["libc"]
    return path.read_bytes(), verneed_offset(path), hostglibc.HostGlibc("/", elf.ElfTarget.host())


@settings(max_examples=int(os.environ.get("FLATPAK_SYSEXT_FUZZ_EXAMPLES", "300")),
          deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 95), st.integers(0, (1 << 32) - 1)),
                      min_size=1, max_size=4))
def test_fuzzed_version_tables(seed: tuple[bytes, int, hostglibc.HostGlibc],
                               edits: list[tuple[int, int]]) -> None:
    original, base, host = seed
    data = bytearray(original)
    for where, value in edits:  # 32-bit words anywhere in the first records and strings
        data[base + where:base + where + 4] = value.to_bytes(4, sys.byteorder)
    f = CountingFile(bytes(data))
    verdict = elf.judge(f, elf.ElfTarget.host(), hostglibc.GlibcJudge(host))
    assert f.bytes_read <= hostglibc.MAX_BYTES_READ
    assert verdict is None or verdict[0] in ("dynamic-elf", "malformed-elf"), verdict


def test_ld_so_cache_parsing_follows_the_file(tmp_path: Path) -> None:
    data = Path("/etc/ld.so.cache").read_bytes() if Path("/etc/ld.so.cache").is_file() else b""
    require_available(data.startswith(b"glibc-ld.so.cache1.1"), "a glibc ld.so.cache is needed")
    listing = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True,
                             check=True).stdout
    expected = re.search(r"\blibc\.so\.6 \([^)]*\) => (\S+)", listing)
    assert expected is not None
    parsed = hostglibc.parse_ld_so_cache(data, sys.byteorder == "little")
    assert expected.group(1) in parsed["libc.so.6"]
    assert hostglibc.parse_ld_so_cache(data[:100], sys.byteorder == "little") == {}
