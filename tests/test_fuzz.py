# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Fuzzing every parser fed by untrusted input (docs/problems.md, docs/reference.md#safety).

App metadata, ``repo/config`` and ``installations.d`` (key files), ``deploy`` files,
extension-release and os-release (env files) and ELF headers come from whoever built
the app or the machine. Whatever they hold, each parser returns a result or raises its
own documented rejection; no other exception may escape into a root-run trigger.

``FLATPAK_SYSEXT_FUZZ_EXAMPLES`` sets the examples per parser (default 500), e.g.
``FLATPAK_SYSEXT_FUZZ_EXAMPLES=100000 pytest tests/test_fuzz.py`` for a long run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flatpak_sysext.flatpak import deployfile, installation, keyfile
from flatpak_sysext.flatpak.installation import Declared, Installation, Unreadable
from flatpak_sysext.rules import elf, release
from testsupport.deployments import gvariant_deploy
from testsupport.elfcorpus import CountingFile, build_corpus
from testsupport.prerequisites import require_tools

EXAMPLES = int(os.environ.get("FLATPAK_SYSEXT_FUZZ_EXAMPLES", "500"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Pieces that mean something to a key file, so that random text reaches every branch.
KEYFILE_PIECES = ["[", "]", "=", "\\", "\\s", "\\n", "\\q", "#", "\n", "\r", " ", "\t",
                  "[Application]", "[X-SystemExtension]", '[remote "r"]',
                  '[Installation "x"]', "name", "path", "Path", "gpg-verify", "url",
                  "[de]", "\0", "\xff", "é", "lib/extensions", "../../..", "/abs"]
ENV_PIECES = ["=", "'", '"', "\\", "\n", "\r", "#", ";", " ", "\t", "\0", "ID", "_any",
              "VERSION_ID", "SYSEXT_LEVEL", "ARCHITECTURE", "SYSEXT_SCOPE", "x86-64",
              "system", "portable", "export ", "\udcff", "\ufffe", "é", "1.0", "12"]


def _text(pieces: list[str]) -> st.SearchStrategy[bytes]:
    return st.lists(st.sampled_from(pieces) | st.text(max_size=4), max_size=60).map(
        lambda parts: "".join(parts).encode("utf-8", "surrogateescape"))


def _mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    """``seed`` with bytes flipped, dropped or inserted, or truncated."""
    def mutate(edits: list[tuple[int, int, int]], cut: int | None) -> bytes:
        data = bytearray(seed)
        for op, where, value in edits:
            at = where % (len(data) + 1)
            if op == 0 and at < len(data):
                data[at] = value
            elif op == 1 and at < len(data):
                del data[at]
            else:
                data.insert(at, value)
        return bytes(data if cut is None else data[:cut])
    return st.builds(mutate, st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1 << 16),
                                                st.integers(0, 255)), max_size=8),
                     st.none() | st.integers(0, len(seed)))


keyfile_inputs = st.binary(max_size=512) | _text(KEYFILE_PIECES)


@FUZZ
@given(keyfile_inputs)
@example(b"[G]\nk=\\")
@example(b"[G\x00]\n")
@example(b"\xef\xbb\xbf[G]\nk=v\n")
def test_keyfile_parse(data: bytes) -> None:
    try:
        groups = keyfile.parse(data)
    except keyfile.KeyFileError as e:
        assert str(e)
        return
    for name, keys in groups.items():
        assert isinstance(name, str) and name
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in keys.items())


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(keyfile_inputs)
def test_installations_d(scratch: Path, data: bytes) -> None:
    """A broken installations.d file is an InstallationError, never anything else."""
    conf = scratch / "etc" / "installations.d"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "fuzz.conf").write_bytes(data)
    env = {"FLATPAK_SYSTEM_DIR": str(scratch / "sys"), "FLATPAK_CONFIG_DIR": str(scratch / "etc")}
    try:
        found = installation.system_installations(env)
    except installation.InstallationError as e:
        assert "fuzz.conf" in str(e)
        return
    assert found[0] == Installation("default", str(scratch / "sys"))
    assert all(os.path.isabs(i.path) for i in found)


DEPLOY_SEEDS = [gvariant_deploy("flathub", "a" * 64, []),
                gvariant_deploy("test-origin", "b" * 64, ["/lib", "/share/x"]),
                gvariant_deploy("", "", [""])]


@FUZZ
@given(st.binary(max_size=400) | st.sampled_from(DEPLOY_SEEDS).flatmap(_mutations))
@example(b"\x00" * 8 + b"\x09\x05\x01")
@example(gvariant_deploy("o", "c", ["/x"])[:-3] + b"\xff\xff\xff")
def test_deployfile_parse(data: bytes) -> None:
    try:
        info = deployfile.parse(data)
    except deployfile.DeployFileError as e:
        assert str(e)
        return
    assert isinstance(info.origin, str) and isinstance(info.commit, str)
    assert all(isinstance(s, str) for s in info.subpaths)


@pytest.fixture(scope="module")
def deployment(scratch: Path) -> Path:
    """A deployment laid out as Flatpak does, whose files the next test rewrites."""
    base = scratch / "inst"
    active = "c" * 64
    dep = base / "app" / "org.fsx.Fuzz" / "x86_64" / "stable" / active
    (dep / "files" / "lib" / "extensions").mkdir(parents=True)
    os.symlink("x86_64/stable", base / "app" / "org.fsx.Fuzz" / "current")
    os.symlink(active, dep.parent / "active")
    return dep


@FUZZ
@given(metadata=st.one_of(
           keyfile_inputs,
           _text(KEYFILE_PIECES).map(lambda b: b"[Application]\n[X-SystemExtension]\n" + b)),
       deploy=st.sampled_from(DEPLOY_SEEDS).flatmap(_mutations))
def test_read_app(deployment: Path, metadata: bytes, deploy: bytes) -> None:
    """The whole reading of an app from hostile metadata and deploy files."""
    (deployment / "metadata").write_bytes(metadata)
    (deployment / "deploy").write_bytes(deploy)
    base = deployment.parents[4]
    app = installation.read_app(Installation("default", str(base)), "org.fsx.Fuzz")
    assert app is None or isinstance(app, (Declared, Unreadable))
    if isinstance(app, Declared) and app.root is not None:
        assert app.root.startswith(str(deployment / "files") + "/")


HOST = release.Host({"ID": "debian", "VERSION_ID": "12"}, "x86-64")
env_inputs = st.binary(max_size=512) | _text(ENV_PIECES)


@FUZZ
@given(data=env_inputs, continuation=st.booleans())
@example(data=b"A='unterminated\\", continuation=False)
@example(data=b"#comment\\\nID=x", continuation=True)
def test_extension_release(data: bytes, continuation: bool) -> None:
    """extension-release: parsed (never raises) and judged against the host."""
    parsed = release.parse_env_file(data, comment_continuation=continuation)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in parsed.items())
    error = release.env_file_error(data, comment_continuation=continuation)
    assert error is None or isinstance(error, str)
    problems = release.compatibility(parsed, HOST, "org.fsx.Fuzz")
    assert all(p.code and p.message for p in problems)


@FUZZ
@given(os_release=env_inputs, ext=env_inputs)
def test_os_release(scratch: Path, os_release: bytes, ext: bytes) -> None:
    """The host's os-release, read from a file as the service does, then compared."""
    path = scratch / "os-release"
    path.write_bytes(os_release)
    host = release.read_host({"SYSTEMD_OS_RELEASE": str(path)})
    assert all(isinstance(v, str) for v in host.os_release.values())
    problems = release.compatibility(release.parse_env_file(ext), host, "org.fsx.Fuzz")
    assert all(p.code and p.message for p in problems)
    assert isinstance(release.host_description(host), str)




ELF_SEEDS = ("static", "static-pie", "tiny-static", "tiny-static-pie", "dynamic",
             "dynamic-no-pie", "shared", "object")
CODES = {"dynamic-elf", "shared-library", "unsupported-elf", "foreign-elf", "malformed-elf"}


@pytest.fixture(scope="module")
def elf_seeds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, bytes]]:
    require_tools("gcc")
    where = tmp_path_factory.mktemp("elf")
    paths = build_corpus(where)
    # judge() only reads the first page and what headers point at: keep the files whole
    # (offsets into them must stay meaningful) but mutate where the headers are.
    yield {k: paths[k].read_bytes() for k in ELF_SEEDS}
    shutil.rmtree(where, ignore_errors=True)


def _elf_mutation(seed: bytes, edits: list[tuple[int, int, int]], cut: int | None) -> bytes:
    data = bytearray(seed)
    for width, where, value in edits:
        # Mostly the headers, program headers and the first page; sometimes anywhere.
        at = where % (4096 if where & 1 else len(data))
        data[at:at + width] = value.to_bytes(8, "little")[:width]
    return bytes(data if cut is None else data[:cut])


@FUZZ
@given(key=st.sampled_from(ELF_SEEDS),
       edits=st.lists(st.tuples(st.sampled_from([1, 2, 4, 8]), st.integers(0, 1 << 24),
                                st.integers(0, (1 << 64) - 1) | st.sampled_from(
                                    [0, 1, 2, 3, 6, 0x7FFFFFFF, 0xFFFFFFFF, (1 << 63) - 1,
                                     (1 << 64) - 1])),
                      min_size=1, max_size=6),
       cut=st.none() | st.integers(0, 8192))
def test_elf_judge(elf_seeds: dict[str, bytes], key: str, edits: list[tuple[int, int, int]],
                   cut: int | None) -> None:
    data = _elf_mutation(elf_seeds[key], edits, cut)
    f = CountingFile(data)
    verdict = elf.judge(f, elf.ElfTarget.host())
    assert f.bytes_read <= elf.MAX_BYTES_READ
    if verdict is not None:
        code, message = verdict
        assert code in CODES and message and message.isprintable(), verdict


@FUZZ
@given(st.binary(max_size=256).map(lambda b: elf.ELF_MAGIC + b))
def test_elf_judge_random_after_the_magic(data: bytes) -> None:
    f = CountingFile(data)
    verdict = elf.judge(f, elf.ElfTarget.host())
    assert f.bytes_read <= elf.MAX_BYTES_READ
    assert verdict is None or verdict[0] in CODES
