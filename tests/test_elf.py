# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""flatpak_sysext.elf: verdicts on real gcc output, forged headers, truncations and fuzzing."""

from __future__ import annotations

import io
import pathlib
import platform
import random
import shutil
import subprocess
import sys
from typing import Any

import pytest
from elftools.elf.dynamic import DynamicSegment
from elftools.elf.elffile import ELFFile
from elftools.elf.segments import InterpSegment
from hypothesis import given, settings
from hypothesis import strategies as st

from flatpak_sysext.rules.elf import ELF_MAGIC, MAX_BYTES_READ, ElfTarget, judge
from testsupport.elfcorpus import (
    EXPECTED,
    CountingFile,
    build_corpus,
    dynamic_segment,
    edit_dyn,
    edit_ehdr,
    edit_phdr,
)
from testsupport.prerequisites import require_tools

HOST = ElfTarget.host()
CODES = {"dynamic-elf", "shared-library", "unsupported-elf", "foreign-elf", "malformed-elf"}




def verdict(data: bytes, target: ElfTarget = HOST) -> tuple[str, str] | None:
    """judge() on ``data``, checking the invariants every verdict must keep."""
    f = CountingFile(data)
    result = judge(f, target)
    assert f.bytes_read <= MAX_BYTES_READ
    assert not f.closed
    if result is not None:
        code, message = result
        assert code in CODES and message and message.isprintable()
    return result


def code_of(data: bytes, target: ElfTarget = HOST) -> str | None:
    result = verdict(data, target)
    return None if result is None else result[0]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    require_tools("gcc")
    paths = build_corpus(tmp_path_factory.mktemp("elf"))
    return {name: path.read_bytes() for name, path in paths.items()}


def test_host_target_is_the_running_machine() -> None:
    machines = {"x86_64": "EM_X86_64", "aarch64": "EM_AARCH64", "i686": "EM_386"}
    assert HOST.machine == machines.get(platform.machine(), HOST.machine)
    assert HOST.elfclass == (64 if sys.maxsize > 2**32 else 32)
    assert HOST.little_endian == (sys.byteorder == "little")
    assert ElfTarget.host() is HOST  # cached


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_verdict(corpus: dict[str, bytes], name: str, tmp_path: pathlib.Path) -> None:
    assert code_of(corpus[name]) == EXPECTED[name]
    path = tmp_path / name  # a real file, as callers pass it, gives the same verdict
    path.write_bytes(corpus[name])
    with path.open("rb") as f:
        assert judge(f, HOST) == verdict(corpus[name])
        assert not f.closed


@pytest.mark.parametrize("name", ["dynamic", "dynamic-no-pie"])
def test_dynamic_message_names_interpreter_and_libraries(
    corpus: dict[str, bytes], name: str
) -> None:
    elf = ELFFile(io.BytesIO(corpus[name]))
    interp = next(s.get_interp_name() for s in elf.iter_segments() if isinstance(s, InterpSegment))
    result = verdict(corpus[name])
    assert result is not None
    assert f"program interpreter {interp}" in result[1]
    assert "libc.so.6" in result[1]
    assert "-static" in result[1]


def test_shared_library_messages(corpus: dict[str, bytes]) -> None:
    with_libc, bare = verdict(corpus["shared"]), verdict(corpus["shared-no-needed"])
    assert with_libc is not None and "needs the shared library libc.so.6" in with_libc[1]
    assert bare is not None and "needs" not in bare[1]


def test_foreign_names_both_machines(corpus: dict[str, bytes]) -> None:
    other = ElfTarget("EM_AARCH64", 64, True)
    if other == HOST:
        other = ElfTarget("EM_X86_64", 64, True)
    result = verdict(corpus["static"], other)
    assert result is not None and result[0] == "foreign-elf"
    assert HOST.machine in result[1] and other.machine in result[1]
    # Foreign is decided before anything else: even an object file or a broken one is foreign.
    assert code_of(corpus["object"], other) == "foreign-elf"
    assert code_of(corpus["phnum-65535"], other) == "foreign-elf"


@pytest.mark.skipif(platform.machine() != "x86_64", reason="gcc -m32 needs an x86-64 gcc")
def test_real_i386_executable(tmp_path: pathlib.Path) -> None:
    src, out = tmp_path / "start.c", tmp_path / "start"
    src.write_text("void _start(void) { for (;;) ; }\n")
    subprocess.run(["gcc", "-m32", "-nostdlib", "-static", "-o", str(out), str(src)], check=True)
    result = verdict(out.read_bytes())
    assert result is not None and result[0] == "foreign-elf" and "EM_386, 32-bit" in result[1]
    assert code_of(out.read_bytes(), ElfTarget("EM_386", 32, True)) is None


def test_many_needed_libraries_are_counted(tmp_path: pathlib.Path) -> None:
    require_tools("gcc")
    src = tmp_path / "x.c"
    src.write_text("int x;\n")
    lib = ["gcc", "-shared", "-fPIC", "-nostdlib"]
    subprocess.run([*lib, "-o", str(tmp_path / "libx0.so"), str(src)], check=True)
    for i in range(1, 70):
        shutil.copy(tmp_path / "libx0.so", tmp_path / f"libx{i}.so")
    libs = [f"-l:libx{i}.so" for i in range(70)]
    out = tmp_path / "big.so"
    subprocess.run([*lib, "-o", str(out), str(src), f"-L{tmp_path}", "-Wl,--no-as-needed", *libs],
                   check=True)
    result = verdict(out.read_bytes())
    assert result is not None and result[0] == "shared-library"
    assert "libx0.so, libx1.so" in result[1] and "libx63.so and 6 more" in result[1]


def test_forged_dynamic_sections(corpus: dict[str, bytes]) -> None:
    dynamic, pie = corpus["dynamic"], corpus["tiny-static-pie"]
    assert code_of(edit_dyn(dynamic, "DT_STRSZ", d_val=1)) == "malformed-elf"
    assert code_of(edit_dyn(dynamic, "DT_STRTAB", d_tag="DT_DEBUG")) == "malformed-elf"
    # A PIE without PT_INTERP that needs a library is still a dynamic executable.
    assert code_of(edit_dyn(pie, "DT_DEBUG", d_tag="DT_NEEDED", d_val=0)) == "dynamic-elf"
    # Without DF_1_PIE, an ET_DYN without PT_INTERP is a shared library.
    assert code_of(edit_dyn(pie, "DT_FLAGS_1", d_val=0)) == "shared-library"


def test_dynamic_entries_are_bounded(corpus: dict[str, bytes]) -> None:
    pie = corpus["tiny-static-pie"]
    padded = pie + b"\xff" * 20000  # tags of -1: never DT_NULL
    assert code_of(edit_phdr(padded, "PT_DYNAMIC", p_offset=len(pie), p_filesz=20000)) == (
        "malformed-elf"
    )
    # A short dynamic section that just lacks DT_NULL ends with its segment (no DF_1_PIE).
    assert code_of(edit_phdr(padded, "PT_DYNAMIC", p_offset=len(pie), p_filesz=1600)) == (
        "shared-library"
    )


def test_forged_program_headers(corpus: dict[str, bytes]) -> None:
    dynamic, static = corpus["dynamic"], corpus["static"]
    assert code_of(edit_phdr(dynamic, "PT_NOTE", p_type="PT_INTERP")) == "malformed-elf"
    assert code_of(edit_phdr(dynamic, "PT_INTERP", p_filesz=1 << 40)) == "malformed-elf"
    assert code_of(edit_phdr(dynamic, "PT_INTERP", p_offset=1 << 60)) == "malformed-elf"
    assert code_of(edit_ehdr(static, e_phnum=0)) == "malformed-elf"
    assert code_of(edit_ehdr(static, e_phnum=129)) == "malformed-elf"
    assert code_of(edit_ehdr(static, e_phoff=(1 << 64) - 1)) == "malformed-elf"
    assert code_of(edit_ehdr(static, e_type=0x1234)) == "unsupported-elf"
    assert code_of(edit_ehdr(static, e_type="ET_NONE")) == "unsupported-elf"


def test_names_from_the_file_are_escaped(corpus: dict[str, bytes]) -> None:
    dynamic = corpus["dynamic"]
    interp = b"/lib64/ld-linux-x86-64.so.2"
    if interp not in dynamic:
        pytest.skip("not an x86-64 gcc")
    hostile = b"/lib64/\x1b[31m\n\xffx-x86-64.so.2"
    assert len(hostile) == len(interp)
    result = verdict(dynamic.replace(interp, hostile))
    assert result is not None and "/lib64/\\x1b[31m\\n\\xffx-x86" in result[1]


def test_judge_reads_from_the_start(corpus: dict[str, bytes]) -> None:
    f = io.BytesIO(corpus["dynamic"])
    f.seek(0, io.SEEK_END)
    result = judge(f, HOST)
    assert result is not None and result[0] == "dynamic-elf"


def required_end(data: bytes) -> int:
    """How much of ``data`` a verdict needs: headers, interpreter, dynamic section, names."""
    elf = ELFFile(io.BytesIO(data))
    ends: list[int] = [elf["e_phoff"] + elf["e_phnum"] * elf["e_phentsize"]]
    for segment in elf.iter_segments():
        if segment["p_type"] == "PT_INTERP":
            ends.append(segment["p_offset"] + segment["p_filesz"])
        if isinstance(segment, DynamicSegment):
            ends.append(segment["p_offset"] + segment["p_filesz"])
            tags = {tag.entry.d_tag: tag.entry.d_val for tag in segment.iter_tags()}
            strtab = next(elf.address_offsets(tags["DT_STRTAB"]))
            for tag in segment.iter_tags("DT_NEEDED"):
                ends.append(data.index(b"\0", strtab + tag.entry.d_val) + 1)
    return max(ends)


@pytest.mark.parametrize("name", ["dynamic", "tiny-static-pie", "shared", "static"])
def test_truncated_at_every_offset(corpus: dict[str, bytes], name: str) -> None:
    data, end = corpus[name], required_end(corpus[name])
    whole = verdict(data)
    for cut in range(min(len(data), end + 512)):
        result = verdict(data[:cut])
        if cut < len(ELF_MAGIC):
            assert result is None
        elif cut < end:
            assert result is not None and result[0] == "malformed-elf", cut
        else:
            assert result == whole, cut


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=8192))
def test_random_bytes_after_the_magic(tail: bytes) -> None:
    verdict(ELF_MAGIC + tail)


@settings(max_examples=1000, deadline=None)
@given(st.integers(0, 3), st.integers(0, 3), st.binary(max_size=8192))
def test_random_headers(elfclass: int, data: int, tail: bytes) -> None:
    verdict(ELF_MAGIC + bytes([elfclass, data]) + tail)


@pytest.fixture(scope="session")
def mutation_targets(corpus: dict[str, bytes]) -> list[tuple[bytes, Any]]:
    """Binaries worth mutating, each with a strategy for the offsets their verdict depends on."""
    targets = []
    for name in ("dynamic", "dynamic-no-pie", "tiny-static-pie", "shared"):
        dynamic = dynamic_segment(corpus[name])
        offsets = st.one_of(
            st.integers(0, 127),  # the ELF header
            st.integers(0, 4095),  # program headers, interpreter, .dynstr
            st.integers(dynamic["p_offset"], dynamic["p_offset"] + dynamic["p_filesz"] - 1),
            st.integers(0, len(corpus[name]) - 1),
        )
        targets.append((corpus[name], offsets))
    return targets


@settings(max_examples=1000, deadline=None)
@given(st.data())
def test_mutated_real_binaries(mutation_targets: list[tuple[bytes, Any]], data: Any) -> None:
    original, offsets = data.draw(st.sampled_from(mutation_targets))
    binary = bytearray(original)
    patches = st.tuples(offsets, st.binary(min_size=1, max_size=8))
    for offset, patch in data.draw(st.lists(patches, min_size=1, max_size=8)):
        binary[offset:offset + len(patch)] = patch
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(binary))))
    verdict(bytes(binary[:cut]))


def test_many_seeded_mutations(mutation_targets: list[tuple[bytes, Any]]) -> None:
    # Hypothesis spends milliseconds per example; plain seeded mutations add breadth cheaply.
    rng = random.Random(0)
    for _ in range(10000):
        original, _ = rng.choice(mutation_targets)
        binary = bytearray(original)
        for _ in range(rng.randint(1, 4)):
            end = rng.choice([128, 4096, len(binary)])  # header, first page, anywhere
            offset = rng.randrange(end)
            patch = rng.randbytes(rng.choice([1, 2, 4, 8]))
            binary[offset:offset + len(patch)] = patch
        verdict(bytes(binary))


class ShrinkingFile(io.BytesIO):
    """A file truncated by someone else between judge()'s size check and its reads."""

    def seek(self, offset: int, whence: int = 0, /) -> int:
        position = super().seek(offset, whence)
        return position + 100000 if whence == io.SEEK_END else position


def test_file_shrinking_while_judged(corpus: dict[str, bytes]) -> None:
    result = judge(ShrinkingFile(corpus["dynamic"][:8192]), HOST)
    assert result is not None and result[0] == "malformed-elf" and "short read" in result[1]
