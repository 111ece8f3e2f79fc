# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""A corpus of real and forged ELF files (built with gcc) for tests and benchmarks.

``build_corpus(dir)`` writes one file per ``EXPECTED`` key and returns their paths;
``EXPECTED`` maps each key to the code ``flatpak_sysext.elf.judge`` must return for it on the
machine gcc builds for (None: accepted or not ELF). The forged files start from real gcc
output and change single fields, re-encoded with pyelftools' own structs.
"""

from __future__ import annotations

import io
import pathlib
import shutil
import subprocess
import tempfile
from typing import Any

from elftools.elf.elffile import ELFFile
from elftools.elf.structs import ELFStructs

HELLO = '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n'
START = "void _start(void) { for (;;) ; }\n"  # needs no libc: links with -nostdlib
LIBRARY = '#include <stdio.h>\nvoid hello(void) { puts("hello"); }\n'

# What gcc builds: key -> (source, gcc arguments).
BUILDS = {
    "static": (HELLO, ["-static"]),
    "static-pie": (HELLO, ["-static-pie"]),
    "tiny-static": (START, ["-nostdlib", "-static"]),
    "tiny-static-pie": (START, ["-nostdlib", "-static-pie", "-fPIE"]),
    "dynamic": (HELLO, ["-pie", "-fPIE"]),
    "dynamic-no-pie": (HELLO, ["-no-pie"]),
    "shared": (LIBRARY, ["-shared", "-fPIC"]),
    "shared-no-needed": (LIBRARY, ["-shared", "-fPIC", "-nostdlib"]),
    "object": (LIBRARY, ["-c"]),
}

EXPECTED: dict[str, str | None] = {
    "static": None,
    "static-pie": None,
    "tiny-static": None,
    "tiny-static-pie": None,
    "dynamic": "dynamic-elf",
    "dynamic-no-pie": "dynamic-elf",
    "shared": "shared-library",
    "shared-no-needed": "shared-library",
    "object": "unsupported-elf",
    "core": "unsupported-elf",
    "foreign-machine": "foreign-elf",
    "foreign-class": "foreign-elf",
    "big-endian": "foreign-elf",
    "bad-class": "malformed-elf",
    "magic-only": "malformed-elf",
    "truncated-header": "malformed-elf",
    "truncated-phdrs": "malformed-elf",
    "phnum-65535": "malformed-elf",
    "phentsize": "malformed-elf",
    "dynamic-terabyte": "malformed-elf",
    "dynamic-offset-beyond": "malformed-elf",
    "strtab-nowhere": "malformed-elf",
    "interp-unterminated": "malformed-elf",
    "empty": None,
    "script": None,
    "data": None,
}


def build_corpus(dir: pathlib.Path) -> dict[str, pathlib.Path]:
    """Build every ``EXPECTED`` file in ``dir``; raises if gcc is missing or fails."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc is needed to build the ELF corpus")
    real: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as work:
        for name, (source, args) in BUILDS.items():
            src = pathlib.Path(work, name + ".c")
            src.write_text(source)
            out = pathlib.Path(work, name)
            subprocess.run([gcc, "-O2", *args, "-o", str(out), str(src)], check=True)
            real[name] = out.read_bytes()
    static, dynamic, pie = real["static"], real["dynamic"], real["tiny-static-pie"]
    machine = ehdr(static)["e_machine"]
    files = {
        **real,
        "core": edit_ehdr(static, e_type="ET_CORE"),
        "foreign-machine": edit_ehdr(
            static, e_machine="EM_X86_64" if machine == "EM_AARCH64" else "EM_AARCH64"
        ),
        "foreign-class": edit_ident(static, 4, 1 if static[4] == 2 else 2),
        "big-endian": edit_ident(static, 5, 2 if static[5] == 1 else 1),
        "bad-class": edit_ident(static, 4, 0),
        "magic-only": static[:4],
        "truncated-header": static[:40],
        "truncated-phdrs": static[: ehdr(static)["e_phoff"] + 20],
        "phnum-65535": edit_ehdr(static, e_phnum=65535),
        "phentsize": edit_ehdr(static, e_phentsize=ehdr(static)["e_phentsize"] + 8),
        "dynamic-terabyte": edit_phdr(pie, "PT_DYNAMIC", p_filesz=1 << 40),
        "dynamic-offset-beyond": edit_phdr(pie, "PT_DYNAMIC", p_offset=(1 << 64) - 16),
        "strtab-nowhere": edit_dyn(dynamic, "DT_STRTAB", d_val=0x7FFF_0000_0000),
        "interp-unterminated": edit_phdr(dynamic, "PT_INTERP", p_filesz=8),
        "empty": b"",
        "script": b"#!/bin/sh\necho hello\n",
        "data": bytes(range(256)) * 4,
    }
    paths = {}
    for name, data in files.items():
        path = dir / name
        path.write_bytes(data)
        paths[name] = path
    return paths


def _structs(data: bytes) -> ELFStructs:
    structs = ELFStructs(little_endian=data[5] == 1, elfclass=32 if data[4] == 1 else 64)
    structs.create_basic_structs()
    structs.create_advanced_structs()
    return structs


def ehdr(data: bytes) -> Any:
    """The parsed ELF header of ``data``."""
    return _structs(data).Elf_Ehdr.parse(data)


def _edit(data: bytes, struct: Any, offset: int, fields: dict[str, Any]) -> bytes:
    record = struct.parse(data[offset:])
    record.update(fields)
    encoded: bytes = struct.build(record)
    return data[:offset] + encoded + data[offset + len(encoded):]


def edit_ident(data: bytes, index: int, value: int) -> bytes:
    """``data`` with e_ident byte ``index`` set to ``value``."""
    return data[:index] + bytes([value]) + data[index + 1:]


def edit_ehdr(data: bytes, **fields: Any) -> bytes:
    """``data`` with ELF header fields replaced."""
    return _edit(data, _structs(data).Elf_Ehdr, 0, fields)


def edit_phdr(data: bytes, p_type: str, /, **fields: Any) -> bytes:
    """``data`` with fields of its first ``p_type`` program header replaced."""
    structs, header = _structs(data), ehdr(data)
    for index in range(header["e_phnum"]):
        offset = header["e_phoff"] + index * header["e_phentsize"]
        if structs.Elf_Phdr.parse(data[offset:])["p_type"] == p_type:
            return _edit(data, structs.Elf_Phdr, offset, fields)
    raise ValueError(f"no {p_type}")


def edit_dyn(data: bytes, d_tag: str, /, **fields: Any) -> bytes:
    """``data`` with fields (``d_tag``, ``d_val``) of its first ``d_tag`` dynamic entry replaced."""
    structs = _structs(data)
    segment = dynamic_segment(data)
    for index in range(segment["p_filesz"] // structs.Elf_Dyn.sizeof()):
        offset = segment["p_offset"] + index * structs.Elf_Dyn.sizeof()
        if structs.Elf_Dyn.parse(data[offset:])["d_tag"] == d_tag:
            return _edit(data, structs.Elf_Dyn, offset, fields)
    raise ValueError(f"no {d_tag}")


def dynamic_segment(data: bytes) -> Any:
    """The PT_DYNAMIC program header of ``data`` (read with pyelftools' ELFFile)."""
    for segment in ELFFile(io.BytesIO(data)).iter_segments():
        if segment["p_type"] == "PT_DYNAMIC":
            return segment.header
    raise ValueError("no PT_DYNAMIC")


class CountingFile(io.BytesIO):
    """A file that counts the bytes judge() reads and fails on unbounded reads or wild seeks."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.size = len(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1, /) -> bytes:
        assert size is not None and size >= 0, "unbounded read"
        data = super().read(size)
        self.bytes_read += len(data)
        return data

    def seek(self, offset: int, whence: int = 0, /) -> int:
        # A real file raises OverflowError beyond 2**63: judge must check offsets first.
        assert whence != io.SEEK_SET or 0 <= offset <= self.size, f"seek to {offset:#x}"
        return super().seek(offset, whence)
