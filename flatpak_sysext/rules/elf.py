# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""ELF verdicts (docs/problems.md): only statically linked executables for the host may ship.

Every verdict reads a bounded number of bytes whatever the headers claim (at most
``MAX_BYTES_READ``): the first ``_HEAD`` bytes, which hold the ELF header, the program
headers, the interpreter path and, in small binaries, the dynamic string table; then at most
a few more bounded reads. pyelftools makes every format decision (field offsets and widths,
word size, byte order, enum names), but to judge thousands of files per second only the fields a
verdict needs are parsed, one at a time, with the field constructs of pyelftools' structs.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from collections.abc import Iterator
from typing import Any, BinaryIO, Protocol

from elftools.construct import ConstructError, Struct
from elftools.elf import enums
from elftools.elf.descriptions import describe_e_machine
from elftools.elf.elffile import ELFFile
from elftools.elf.structs import ELFStructs

from flatpak_sysext.rules import codes


class Admitter(Protocol):
    """What may admit an executable that needs a loader (hostglibc.GlibcJudge): None to
    admit it, else why not. A protocol, so that this module imports nothing of ours
    beyond the codes."""

    def admit(self, image: Dynamic) -> str | None: ...


ELF_MAGIC = b"\x7fELF"

_HEAD = 4096  # one page: headers, PT_INTERP and small .dynstr tables live there
_MAX_PHNUM = 128  # real executables have about a dozen program headers
_MAX_DYN = 1024  # dynamic entries scanned for DT_NULL; real ones have well under 100
_MAX_STR = 4096  # PATH_MAX, the kernel's own limit for the PT_INTERP path
_MAX_NAMES = 64  # DT_NEEDED names read (and named); more are only counted
# The largest records are Elf64_Phdr (56 bytes) and Elf64_Dyn (16 bytes).
MAX_BYTES_READ = _HEAD + _MAX_PHNUM * 56 + _MAX_DYN * 16 + _MAX_STR * (1 + _MAX_NAMES)

_CLASSES = {enums.ENUM_EI_CLASS["ELFCLASS32"]: 32, enums.ENUM_EI_CLASS["ELFCLASS64"]: 64}
_LITTLE_ENDIAN = {enums.ENUM_EI_DATA["ELFDATA2LSB"]: True, enums.ENUM_EI_DATA["ELFDATA2MSB"]: False}
_EI_CLASS, _EI_DATA, _EI_NIDENT = 4, 5, 16  # e_ident indices, as pyelftools' ELFFile reads them
_DF_1_PIE = enums.ENUM_DT_FLAGS_1["DF_1_PIE"]
_DYN_TAGS = frozenset({"DT_NEEDED", "DT_STRTAB", "DT_STRSZ", "DT_FLAGS_1"})
_ADVICE = "link it statically (gcc -static or -static-pie, musl, CGO_ENABLED=0, ...)"
_NOT_EXECUTABLES = {"ET_REL": "a relocatable object file", "ET_CORE": "a core dump"}


@dataclasses.dataclass(frozen=True)
class ElfTarget:
    """What the host runs: pyelftools' e_machine name (e.g. ``EM_X86_64``), class, byte order."""

    machine: str
    elfclass: int
    little_endian: bool

    @classmethod
    def host(cls) -> ElfTarget:
        """The target of the running interpreter's own executable (read once, then cached)."""
        return _host_target()

    def describe(self) -> str:
        """A person's name for the target, e.g. ``AArch64 (EM_AARCH64, 64-bit little-endian)``."""
        return _describe(self.machine, self.elfclass, self.little_endian)


@functools.cache
def _host_target() -> ElfTarget:
    error: OSError | None = None
    for path in ("/proc/self/exe", sys.executable):
        try:
            with open(path, "rb") as f:
                elf = ELFFile(f)
                return ElfTarget(str(elf.header.e_machine), elf.elfclass, elf.little_endian)
        except OSError as e:  # no /proc (or no sys.executable): try the next way
            error = e
    raise RuntimeError(f"cannot read the interpreter's executable: {error}")


def judge(f: BinaryIO, target: ElfTarget,
          glibc: Admitter | None = None) -> tuple[str, str] | None:
    """Judge one file's content by the ELF rules (docs/problems.md).

    Returns None for a file that does not start with the ELF magic (scripts, data) and for a
    statically linked executable (static or static-PIE) built for ``target``; otherwise
    ``(code, message)`` with code ``dynamic-elf``, ``shared-library``, ``unsupported-elf``,
    ``foreign-elf`` or ``malformed-elf``. ``f`` is a seekable binary file, read from offset 0
    and left open at an unspecified position. No content makes this raise; an I/O error
    while reading ``f`` (OSError) propagates, as it says nothing about the content.

    With ``glibc`` (allow_host_glibc), an executable that would be ``dynamic-elf`` because
    it needs a loader is handed to ``glibc.admit`` (hostglibc), which may admit it.
    """
    f.seek(0)
    head = f.read(_HEAD)
    if not head.startswith(ELF_MAGIC):
        return None
    try:
        return _judge(Reader(f, head, f.seek(0, os.SEEK_END)), target, glibc)
    except Malformed as e:
        return codes.MALFORMED_ELF, f"starts with the ELF magic but is malformed: {e}"


class Malformed(Exception):
    """The file cannot be parsed within our bounds; the text says where."""


class Reader:
    """Bounded reads of the judged file, served from its first page when possible."""

    def __init__(self, f: BinaryIO, head: bytes, size: int) -> None:
        self.f, self.head, self.size = f, head, size

    def at(self, offset: int, length: int, what: str) -> bytes:
        if offset + length > self.size:
            raise Malformed(f"{what} (at {offset:#x}, {length} bytes) lies beyond the end "
                             f"of the file ({self.size} bytes)")
        if offset + length <= len(self.head):
            return self.head[offset:offset + length]
        self.f.seek(offset)
        data = self.f.read(length)
        if len(data) != length:
            raise Malformed(f"{what}: short read (did the file change while being read?)")
        return data

    def cstring(self, offset: int, limit: int, what: str) -> str:
        if offset >= self.size:
            raise Malformed(f"{what} at {offset:#x} lies beyond the end of the file")
        data = self.at(offset, min(limit, self.size - offset), what)
        end = data.find(b"\0")
        if end < 0:
            raise Malformed(f"{what} at {offset:#x} is not NUL-terminated within {len(data)} "
                             "bytes")
        return _printable(data[:end])


class Record:
    """A pyelftools record struct whose fields are parsed one at a time, at the offsets and with
    the field constructs it defines: parsing a whole struct costs ~20 us, a field ~1 us."""

    def __init__(self, struct: Any, names: frozenset[str]) -> None:
        self.size: int = struct.sizeof()
        self.fields = {name: spec for name, spec in _flatten(struct, 0) if name in names}
        if self.fields.keys() != names:  # a pyelftools change, not an input problem
            raise RuntimeError(f"pyelftools' {struct.name} lacks {set(names - self.fields.keys())}")

    def get(self, record: bytes, name: str) -> Any:
        offset, size, field = self.fields[name]
        # Records are exactly sized and pyelftools' enums pass unknown values through, so this
        # should not fail; should a pyelftools version be stricter, the input is still malformed.
        try:
            return field.parse(record[offset:offset + size])
        except ConstructError as e:
            raise Malformed(f"pyelftools cannot parse its {name}: {e}") from e


def _flatten(struct: Any, offset: int) -> Iterator[tuple[str, tuple[int, int, Any]]]:
    for field in struct.subcons:
        size = field.sizeof()
        if isinstance(field, Struct):  # e_ident, within Elf_Ehdr
            yield from _flatten(field, offset)
        else:
            yield field.name, (offset, size, field)
        offset += size


_EHDR_FIELDS = frozenset({"EI_OSABI", "e_type", "e_machine", "e_phoff", "e_phentsize", "e_phnum"})
_PHDR_FIELDS = frozenset({"p_type", "p_offset", "p_vaddr", "p_filesz"})
_DYN_FIELDS = frozenset({"d_tag", "d_val"})


@functools.cache  # keys: 2 byte orders x 2 classes
def _ehdr(little_endian: bool, elfclass: int) -> Record:
    structs = ELFStructs(little_endian, elfclass)
    structs.create_basic_structs()
    return Record(structs.Elf_Ehdr, _EHDR_FIELDS)


@functools.lru_cache(maxsize=64)  # the machine is the target's, so few keys occur
def _layout(
    little_endian: bool, elfclass: int, e_type: str, machine: str, osabi: Any
) -> tuple[Record, Record]:
    """Elf_Phdr and Elf_Dyn, whose p_type and d_tag names depend on the machine and OS ABI."""
    structs = ELFStructs(little_endian, elfclass)
    structs.create_basic_structs()
    structs.create_advanced_structs(e_type, machine, osabi)
    return Record(structs.Elf_Phdr, _PHDR_FIELDS), Record(structs.Elf_Dyn, _DYN_FIELDS)


def _header(r: Reader) -> tuple[int, bool, Record, bytes]:
    """The class, byte order, Elf_Ehdr record and ELF header bytes of the file."""
    if len(r.head) < _EI_NIDENT:
        raise Malformed("it ends inside the ELF identification bytes")
    elfclass = _CLASSES.get(r.head[_EI_CLASS])
    little_endian = _LITTLE_ENDIAN.get(r.head[_EI_DATA])
    if elfclass is None:
        raise Malformed(f"invalid EI_CLASS {r.head[_EI_CLASS]} (neither 32- nor 64-bit)")
    if little_endian is None:
        raise Malformed(f"invalid EI_DATA {r.head[_EI_DATA]} (neither little- nor big-endian)")
    ehdr = _ehdr(little_endian, elfclass)
    return elfclass, little_endian, ehdr, r.at(0, ehdr.size, "the ELF header")


def _judge(r: Reader, target: ElfTarget, glibc: Admitter | None) -> tuple[str, str] | None:
    elfclass, little_endian, ehdr, header = _header(r)
    machine, e_type = ehdr.get(header, "e_machine"), ehdr.get(header, "e_type")
    if (machine, elfclass, little_endian) != (
        target.machine, target.elfclass, target.little_endian
    ):
        return codes.FOREIGN_ELF, (f"built for {_describe(machine, elfclass, little_endian)}, but "
                               f"this host is {target.describe()}")
    if e_type not in ("ET_EXEC", "ET_DYN"):
        kind = _NOT_EXECUTABLES.get(e_type) or f"an ELF file of type {e_type}"
        return codes.UNSUPPORTED_ELF, (f"{kind}, not an executable; ship only statically linked "
                                   "executables")
    phdr, dyn = _layout(little_endian, elfclass, e_type, machine, ehdr.get(header, "EI_OSABI"))
    interp_phdr, dynamic_phdr, loads = _segments(r, ehdr, header, phdr)
    interp = None
    if interp_phdr is not None:
        size = phdr.get(interp_phdr, "p_filesz")
        if not 2 <= size <= _MAX_STR:  # the kernel's bounds
            raise Malformed(f"PT_INTERP has an absurd size of {size} bytes")
        interp = r.cstring(phdr.get(interp_phdr, "p_offset"), size, "the PT_INTERP path")
    libs, pie = "", False
    if dynamic_phdr is not None:
        libs, pie = _dynamic(r, phdr, dyn, dynamic_phdr, loads)
    if e_type == "ET_DYN" and interp is None and not pie:
        uses = f"; it needs {libs}" if libs else ""
        return codes.SHARED_LIBRARY, (
            f"a shared library (ET_DYN without PT_INTERP or DF_1_PIE){uses}"
            "; ship only statically linked executables")
    needs = [f"the program interpreter {interp}"] if interp is not None else []
    if libs:
        needs.append(libs)
    if not needs:
        return None
    text = f"dynamically linked: needs {' and '.join(needs)}"
    if glibc is not None and interp is not None and dynamic_phdr is not None:
        image = Dynamic(r, little_endian, elfclass, phdr, dyn, dynamic_phdr, loads, interp)
        why = glibc.admit(image)
        if why is None:
            return None
        return codes.DYNAMIC_ELF, f"{text}, and allow_host_glibc cannot admit it: {why}"
    return codes.DYNAMIC_ELF, f"{text}; {_ADVICE}"


def _segments(
    r: Reader, ehdr: Record, header: bytes, phdr: Record
) -> tuple[bytes | None, bytes | None, list[bytes]]:
    """The PT_INTERP, PT_DYNAMIC (or None) and PT_LOAD program headers, unparsed."""
    phnum, phentsize = ehdr.get(header, "e_phnum"), ehdr.get(header, "e_phentsize")
    if not 1 <= phnum <= _MAX_PHNUM:
        raise Malformed(f"e_phnum is {phnum}; an executable has 1 to {_MAX_PHNUM} program headers")
    if phentsize != phdr.size:  # the kernel refuses any other size too
        raise Malformed(f"e_phentsize is {phentsize}, not {phdr.size}")
    table = r.at(ehdr.get(header, "e_phoff"), phnum * phentsize, "the program header table")
    found: dict[str, bytes] = {}
    loads = []
    for start in range(0, len(table), phentsize):
        record = table[start:start + phentsize]
        p_type = phdr.get(record, "p_type")
        if p_type == "PT_LOAD":
            loads.append(record)
        elif p_type in ("PT_INTERP", "PT_DYNAMIC"):
            if p_type in found:  # linkers never emit two; which one counts would be a guess
                raise Malformed(f"more than one {p_type}")
            found[p_type] = record
    return found.get("PT_INTERP"), found.get("PT_DYNAMIC"), loads


def _dynamic(
    r: Reader, phdr: Record, dyn: Record, segment: bytes, loads: list[bytes]
) -> tuple[str, bool]:
    """The DT_NEEDED libraries (as message text, "" if none) and whether DF_1_PIE is set."""
    offset, size = phdr.get(segment, "p_offset"), phdr.get(segment, "p_filesz")
    if offset + size > r.size:
        raise Malformed(f"PT_DYNAMIC (at {offset:#x}, {size} bytes) lies beyond the end of the "
                         f"file ({r.size} bytes)")
    count = size // dyn.size
    data = r.at(offset, min(count, _MAX_DYN) * dyn.size, "the dynamic section")
    needed: list[int] = []
    values: dict[str, int] = {}  # the last one wins, as in glibc's loader
    for start in range(0, len(data), dyn.size):
        record = data[start:start + dyn.size]
        tag = dyn.get(record, "d_tag")
        if tag == "DT_NULL":
            break
        if tag in _DYN_TAGS:
            value = dyn.get(record, "d_val")
            if tag == "DT_NEEDED":
                needed.append(value)
            else:
                values[tag] = value
    else:
        if count > _MAX_DYN:
            raise Malformed(f"no DT_NULL within the first {_MAX_DYN} dynamic entries")
    pie = bool(values.get("DT_FLAGS_1", 0) & _DF_1_PIE)
    if not needed:
        return "", pie
    if "DT_STRTAB" not in values:
        raise Malformed("DT_NEEDED entries but no DT_STRTAB")
    strtab = _file_offset(phdr, loads, values["DT_STRTAB"], "DT_STRTAB")
    strsz = values.get("DT_STRSZ")
    names = []
    for value in needed[:_MAX_NAMES]:
        limit = _MAX_STR
        if strsz is not None:
            if value >= strsz:
                raise Malformed(f"a DT_NEEDED name at {value:#x} lies beyond DT_STRSZ {strsz}")
            limit = min(limit, strsz - value)
        names.append(r.cstring(strtab + value, limit, "a DT_NEEDED library name"))
    more = f" and {len(needed) - _MAX_NAMES} more" if len(needed) > _MAX_NAMES else ""
    plural = "ies" if len(needed) > 1 else "y"
    return f"the shared librar{plural} {', '.join(names)}{more}", pie


def _file_offset(phdr: Record, loads: list[bytes], address: int, what: str,
                 length: int = 1) -> int:
    """The file offset of ``length`` bytes at a virtual address, through the PT_LOAD
    segment whose file contents hold them all (beyond them the loader sees zeros)."""
    for record in loads:
        vaddr = phdr.get(record, "p_vaddr")
        if vaddr <= address and address + length <= vaddr + phdr.get(record, "p_filesz"):
            return int(phdr.get(record, "p_offset") + address - vaddr)
    raise Malformed(f"{what} {address:#x} is in no PT_LOAD segment's file contents")


class Dynamic:
    """The loader's view of an ELF file, for hostglibc: its dynamic entries, found through
    PT_DYNAMIC (never through section headers, which a file may lack or forge), the
    strings of DT_STRTAB and the bytes at virtual addresses, every read bounded."""

    def __init__(self, r: Reader, little_endian: bool, elfclass: int, phdr: Record,
                 dyn: Record, segment: bytes, loads: list[bytes], interp: str | None) -> None:
        self.reader, self.little_endian, self.elfclass = r, little_endian, elfclass
        self.interp = interp
        self._phdr, self._loads = phdr, loads
        self.entries = _entries(r, phdr, dyn, segment)
        """(d_tag, d_val) up to DT_NULL; d_tag is pyelftools' name, or a number it lacks."""
        values = dict(self.entries)  # the last one wins, as in glibc's loader
        self._strtab, self._strsz = values.get("DT_STRTAB"), values.get("DT_STRSZ")

    def values(self, tag: str) -> list[int]:
        """The d_val of every entry with this d_tag, in order."""
        return [value for t, value in self.entries if t == tag]

    def string(self, offset: int, what: str) -> str:
        """The string at ``offset`` in DT_STRTAB, within DT_STRSZ and ``_MAX_STR`` bytes."""
        if self._strtab is None:
            raise Malformed(f"{what}: no DT_STRTAB")
        limit = _MAX_STR
        if self._strsz is not None:
            if offset >= self._strsz:
                raise Malformed(f"{what} at {offset:#x} lies beyond DT_STRSZ {self._strsz}")
            limit = min(limit, self._strsz - offset)
        start = _file_offset(self._phdr, self._loads, self._strtab, "DT_STRTAB")
        return self.reader.cstring(start + offset, limit, what)

    def at(self, address: int, length: int, what: str) -> bytes:
        """The ``length`` bytes the loader sees at virtual ``address``."""
        offset = _file_offset(self._phdr, self._loads, address, what, length)
        return self.reader.at(offset, length, what)


def _entries(r: Reader, phdr: Record, dyn: Record, segment: bytes) -> list[tuple[Any, int]]:
    offset, size = phdr.get(segment, "p_offset"), phdr.get(segment, "p_filesz")
    count = size // dyn.size
    data = r.at(offset, min(count, _MAX_DYN) * dyn.size, "the dynamic section")
    found: list[tuple[Any, int]] = []
    for start in range(0, len(data), dyn.size):
        record = data[start:start + dyn.size]
        tag = dyn.get(record, "d_tag")
        if tag == "DT_NULL":
            return found
        found.append((tag, dyn.get(record, "d_val")))
    if count > _MAX_DYN:
        raise Malformed(f"no DT_NULL within the first {_MAX_DYN} dynamic entries")
    return found  # the segment ends without DT_NULL: the loader stops there too


def read_dynamic(f: BinaryIO, target: ElfTarget) -> Dynamic | None:
    """The loader's view of the shared object ``f``; None if it is not an ELF file for
    ``target`` with a PT_DYNAMIC (the loader would skip it). Raises Malformed."""
    f.seek(0)
    head = f.read(_HEAD)
    if not head.startswith(ELF_MAGIC):
        return None
    r = Reader(f, head, f.seek(0, os.SEEK_END))
    elfclass, little_endian, ehdr, header = _header(r)
    machine, e_type = ehdr.get(header, "e_machine"), ehdr.get(header, "e_type")
    if (machine, elfclass, little_endian) != (
        target.machine, target.elfclass, target.little_endian
    ) or e_type != "ET_DYN":
        return None
    phdr, dyn = _layout(little_endian, elfclass, e_type, machine, ehdr.get(header, "EI_OSABI"))
    _, dynamic_phdr, loads = _segments(r, ehdr, header, phdr)
    if dynamic_phdr is None:
        return None
    return Dynamic(r, little_endian, elfclass, phdr, dyn, dynamic_phdr, loads, None)


def _describe(machine: str | int, elfclass: int, little_endian: bool) -> str:
    if isinstance(machine, str):  # pyelftools names it; its description may still be "<unknown>"
        name = f"{describe_e_machine(machine).strip('<>')} ({machine}"
    else:
        name = f"an unknown machine (e_machine {machine:#x}"
    return f"{name}, {elfclass}-bit {'little' if little_endian else 'big'}-endian)"


def _printable(raw: bytes) -> str:
    # Names come from the file: escape anything that could garble a terminal or a log line.
    text = raw.decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
