# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""``allow_host_glibc``: admit executables that need nothing but the host's own glibc.

An executable is admitted only if the host's loader would run it with files of the host's
glibc alone: its PT_INTERP is the canonical loader of its architecture, present on the
host; every DT_NEEDED is one of glibc's libraries (``GLIBC_LIBRARIES``) that the host
has; nothing makes the loader read other files (``FORBIDDEN``); and every version it
needs (DT_VERNEED) is defined (DT_VERDEF) by the copy the host's loader would load.
Both tables are read as the loader reads them: through PT_DYNAMIC and the chains of
``vn_next``/``vd_next``, never through section headers, each read bounded (elf.Dynamic).

Libraries are found the way glibc's loader finds them once DT_RPATH and DT_RUNPATH are
ruled out: ``/etc/ld.so.cache`` first (what ``ldconfig`` made of ``/etc/ld.so.conf``;
the loader never reads ld.so.conf itself), then its built-in trusted directories. The
cache's format (glibc's ``dl-cache.h``) is read bounded; a cache that cannot be read is
skipped, as the loader skips it. The directories are the union of what Debian-style
(multiarch) and Fedora-style (lib64) builds of glibc compile in: a file found only there
is still the host's own glibc, since only the libraries glibc itself ships are looked
for.

Every host path is taken under a root (``/`` on a real host) so that tests can present
another glibc; ``FLATPAK_SYSEXT_GLIBC_ROOT`` sets it for the whole command
(docs/configuration.md).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import struct
from typing import Any

from elftools.elf.structs import ELFStructs

from flatpak_sysext.rules import elf

# (e_machine, class, little-endian) -> (glibc's canonical loader, Debian's multiarch triplet).
LOADERS: dict[tuple[str, int, bool], tuple[str, str]] = {
    ("EM_X86_64", 64, True): ("/lib64/ld-linux-x86-64.so.2", "x86_64-linux-gnu"),
    ("EM_386", 32, True): ("/lib/ld-linux.so.2", "i386-linux-gnu"),
    ("EM_AARCH64", 64, True): ("/lib/ld-linux-aarch64.so.1", "aarch64-linux-gnu"),
    ("EM_ARM", 32, True): ("/lib/ld-linux-armhf.so.3", "arm-linux-gnueabihf"),
    ("EM_PPC64", 64, True): ("/lib64/ld64.so.2", "powerpc64le-linux-gnu"),
    ("EM_S390", 64, False): ("/lib/ld64.so.1", "s390x-linux-gnu"),
    ("EM_RISCV", 64, True): ("/lib/ld-linux-riscv64-lp64d.so.1", "riscv64-linux-gnu"),
}

# glibc's own shared libraries (its shlib-versions file), less those a program never
# links: the NSS modules (loaded by name at run time), libthread_db (for debuggers),
# and libcrypt and libnsl, which distributions now take from libxcrypt and libnsl2.
# The loader's own soname (LOADERS) counts too.
GLIBC_LIBRARIES = frozenset({
    "libc.so.6", "libm.so.6", "libmvec.so.1", "libpthread.so.0", "libdl.so.2", "librt.so.1",
    "libresolv.so.2", "libutil.so.1", "libanl.so.1", "libBrokenLocale.so.1",
    "libc_malloc_debug.so.0",
})
PRIVATE = "GLIBC_PRIVATE"
"""glibc's internal interface between its own libraries, different in every build."""

# Every string-valued dynamic entry that makes the loader read files a tree could name.
FORBIDDEN = ("DT_RPATH", "DT_RUNPATH", "DT_AUDIT", "DT_DEPAUDIT", "DT_FILTER", "DT_AUXILIARY")
_DF_1_NODEFLIB = 0x800  # the loader then skips ld.so.cache and the trusted directories
_VER_FLG_BASE = 0x1  # a DT_VERDEF entry naming the library itself, not a version

LD_SO_CACHE = "/etc/ld.so.cache"
_MAX_CACHE = 16 << 20  # real caches are well under 1 MiB
_CACHE_NEW = b"glibc-ld.so.cache1.1"
_CACHE_OLD = b"ld.so-1.7.0"
_MAX_NEEDED = 64  # DT_NEEDED names; more is never only glibc
_MAX_VERNEED = 64  # DT_VERNEED files followed through vn_next
_MAX_VERSIONS = 1024  # version records (Vernaux, or Verdef) followed in one file
_NUMBERED = re.compile(r"GLIBC_(\d+(?:\.\d+)*)")
# What admit() may read of a judged file on top of elf.judge's own reads: the dynamic
# table again (1024 entries of at most 16 bytes), a bounded string (4096 bytes, as elf
# reads them) per name, and a 16-byte record per version entry.
MAX_BYTES_READ = (elf.MAX_BYTES_READ + 1024 * 16
                  + (_MAX_NEEDED + 1 + _MAX_VERNEED + _MAX_VERSIONS) * 4096
                  + (_MAX_VERNEED + _MAX_VERSIONS) * 16)


@functools.lru_cache(maxsize=4)  # keys: 2 byte orders x 2 classes
def _records(little_endian: bool, elfclass: int) -> dict[str, elf.Record]:
    structs = ELFStructs(little_endian, elfclass)
    structs.create_basic_structs()
    structs.create_advanced_structs()
    return {
        "verneed": elf.Record(structs.Elf_Verneed, frozenset(
            {"vn_version", "vn_file", "vn_aux", "vn_next"})),
        "vernaux": elf.Record(structs.Elf_Vernaux, frozenset({"vna_name", "vna_next"})),
        "verdef": elf.Record(structs.Elf_Verdef, frozenset(
            {"vd_version", "vd_flags", "vd_aux", "vd_next"})),
        "verdaux": elf.Record(structs.Elf_Verdaux, frozenset({"vda_name"})),
    }


def _last(image: elf.Dynamic, tag: str) -> int | None:
    values = image.values(tag)
    return values[-1] if values else None


def version_needs(image: elf.Dynamic) -> list[tuple[str, str]]:
    """(library, version) for every DT_VERNEED requirement, as the loader follows them."""
    address = _last(image, "DT_VERNEED")
    if address is None:
        return []
    rec = _records(image.little_endian, image.elfclass)
    verneed, vernaux = rec["verneed"], rec["vernaux"]
    needs: list[tuple[str, str]] = []
    for _ in range(_MAX_VERNEED):
        entry = image.at(address, verneed.size, "a DT_VERNEED entry")
        if verneed.get(entry, "vn_version") != 1:  # the loader refuses any other
            raise elf.Malformed(f"a DT_VERNEED entry has version "
                                f"{verneed.get(entry, 'vn_version')}, not 1")
        library = image.string(verneed.get(entry, "vn_file"), "a DT_VERNEED file name")
        aux = address + verneed.get(entry, "vn_aux")
        while True:
            if len(needs) >= _MAX_VERSIONS:
                raise elf.Malformed(f"more than {_MAX_VERSIONS} DT_VERNEED versions")
            record = image.at(aux, vernaux.size, "a DT_VERNEED version")
            needs.append((library, image.string(vernaux.get(record, "vna_name"),
                                                "a DT_VERNEED version name")))
            if vernaux.get(record, "vna_next") == 0:
                break
            aux += vernaux.get(record, "vna_next")
        if verneed.get(entry, "vn_next") == 0:
            return needs
        address += verneed.get(entry, "vn_next")
    raise elf.Malformed(f"DT_VERNEED names more than {_MAX_VERNEED} files")


def version_definitions(image: elf.Dynamic) -> frozenset[str]:
    """The versions a shared object defines (DT_VERDEF), less its own name."""
    address = _last(image, "DT_VERDEF")
    if address is None:
        return frozenset()
    rec = _records(image.little_endian, image.elfclass)
    verdef, verdaux = rec["verdef"], rec["verdaux"]
    names = set()
    for _ in range(_MAX_VERSIONS):
        entry = image.at(address, verdef.size, "a DT_VERDEF entry")
        if verdef.get(entry, "vd_version") != 1:
            raise elf.Malformed(f"a DT_VERDEF entry has version "
                                f"{verdef.get(entry, 'vd_version')}, not 1")
        if not verdef.get(entry, "vd_flags") & _VER_FLG_BASE:
            aux = image.at(address + verdef.get(entry, "vd_aux"), verdaux.size,
                           "a DT_VERDEF name")
            names.add(image.string(verdaux.get(aux, "vda_name"), "a DT_VERDEF version name"))
        if verdef.get(entry, "vd_next") == 0:
            return frozenset(names)
        address += verdef.get(entry, "vd_next")
    raise elf.Malformed(f"DT_VERDEF has more than {_MAX_VERSIONS} entries")


def latest(versions: Any) -> str | None:
    """The highest numbered ``GLIBC_x.y`` among ``versions`` (None if there is none)."""
    numbered = [(tuple(int(n) for n in m.group(1).split(".")), v)
                for v in versions for m in [_NUMBERED.fullmatch(v)] if m]
    return max(numbered)[1] if numbered else None


def parse_ld_so_cache(data: bytes, little_endian: bool) -> dict[str, list[str]]:
    """Library name -> paths, in the cache's order, from ``/etc/ld.so.cache``'s bytes.

    Only glibc's "new" format (alone, or after the old one) is read, and only entries
    for no particular hardware capability (glibc's own libraries have none); anything
    malformed gives {} (the loader then uses its trusted directories).
    """
    order = "<" if little_endian else ">"
    start = 0
    if data.startswith(_CACHE_OLD) and len(data) >= 16:
        (old,) = struct.unpack_from(order + "I", data, 12)
        start = (16 + old * 12 + 7) & ~7  # the new table follows, aligned to 8 bytes
    if data[start:start + len(_CACHE_NEW)] != _CACHE_NEW or len(data) < start + 48:
        return {}
    (count,) = struct.unpack_from(order + "I", data, start + 20)
    table = start + 48
    if count > (len(data) - table) // 24:
        return {}
    found: dict[str, list[str]] = {}
    for flags, key, value, _, hwcap in struct.iter_unpack(
            order + "iIIIQ", data[table:table + 24 * count]):
        if hwcap or (flags & 0xFF) not in (1, 3):  # FLAG_ELF, FLAG_ELF_LIBC6
            continue
        name, path = _cstring(data, start + key), _cstring(data, start + value)
        if name is None or path is None:
            return {}
        found.setdefault(name, []).append(path)
    return found


def _cstring(data: bytes, offset: int) -> str | None:
    end = data.find(b"\0", offset, offset + 4096)
    return None if end < 0 else os.fsdecode(data[offset:end])


class Library:
    """One glibc library as the host's loader would load it."""

    def __init__(self, path: str, versions: frozenset[str]) -> None:
        self.path, self.versions = path, versions


class HostGlibc:
    """The glibc under ``root`` for programs built for ``target``; reads files on demand."""

    def __init__(self, root: str, target: elf.ElfTarget) -> None:
        self.root, self.target = root, target
        known = LOADERS.get((target.machine, target.elfclass, target.little_endian))
        self.loader: str | None = known[0] if known else None
        triplet = known[1] if known else ""
        self.soname = os.path.basename(self.loader) if self.loader else None
        lib64 = ["/lib64/", "/usr/lib64/"] if target.elfclass == 64 else []
        self.directories = [f"/lib/{triplet}/", f"/usr/lib/{triplet}/", *lib64, "/lib/",
                            "/usr/lib/"]
        self._cache: dict[str, list[str]] | None = None
        self._libraries: dict[str, Library | None] = {}

    def host_path(self, path: str) -> str:
        """Where the host's ``path`` is under the root."""
        return os.path.join(self.root, path.lstrip("/"))

    def _ld_so_cache(self) -> dict[str, list[str]]:
        if self._cache is None:
            try:
                with open(self.host_path(LD_SO_CACHE), "rb") as f:
                    data = f.read(_MAX_CACHE + 1)
            except OSError:
                data = b""
            big = len(data) > _MAX_CACHE
            self._cache = {} if big else parse_ld_so_cache(data, self.target.little_endian)
        return self._cache

    def candidates(self, name: str) -> list[str]:
        """Where the loader looks for the library ``name``, in its order."""
        if name == self.soname and self.loader is not None:
            return [self.loader]  # already loaded: it is the program interpreter
        return self._ld_so_cache().get(name, []) + [d + name for d in self.directories]

    def library(self, name: str) -> Library | None:
        """The copy of ``name`` the loader would load, None if the host has none.

        A copy that is malformed or for another machine is skipped, as the loader skips it.
        """
        if name not in self._libraries:
            self._libraries[name] = None
            for path in self.candidates(name):
                try:
                    with open(self.host_path(path), "rb") as f:
                        image = elf.read_dynamic(f, self.target)
                        if image is not None:
                            self._libraries[name] = Library(path, version_definitions(image))
                            break
                except (OSError, elf.Malformed):
                    continue
        return self._libraries[name]

    def identity(self) -> str:
        """A digest of what every verdict of this module depends on: each glibc library
        the loader would load, with the versions it defines."""
        parts = [repr((self.root, self.loader))]
        for name in sorted(GLIBC_LIBRARIES | {self.soname or ""}):
            lib = self.library(name) if name else None
            parts.append(repr((name, None) if lib is None else
                              (name, lib.path, sorted(lib.versions))))
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]

    def watched_paths(self) -> list[str]:
        """What a glibc upgrade changes, cheap to stat: the loader, the cache, libc.so.6."""
        paths = [LD_SO_CACHE, *([self.loader] if self.loader else []),
                 *self.candidates("libc.so.6")]
        return [self.host_path(p) for p in dict.fromkeys(paths)]


class GlibcJudge:
    """allow_host_glibc for one tree: admits executables, and remembers what they need."""

    def __init__(self, host: HostGlibc) -> None:
        self.host = host
        self.needs: dict[str, set[str]] = {}

    def requirements(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """Per library, what the admitted executables need of the host: the highest
        numbered version (every glibc defines all older ones) and any unnumbered one."""
        result = []
        for library, versions in sorted(self.needs.items()):
            top = latest(versions)
            others = sorted(v for v in versions if not _NUMBERED.fullmatch(v))
            result.append((library, tuple(([top] if top else []) + others)))
        return tuple(result)

    def admit(self, image: elf.Dynamic) -> str | None:
        """None if the host's glibc alone runs ``image``; else what is missing. Raises
        elf.Malformed for a table the loader could not follow."""
        host = self.host
        if host.loader is None:
            return f"flatpak-sysext knows no glibc loader for {host.target.describe()}"
        if image.interp != host.loader:
            return (f"its program interpreter is {image.interp}, not this host's glibc "
                    f"loader {host.loader}")
        if host.library(host.soname or "") is None:
            return f"this host has no glibc loader at {host.loader}"
        for tag in FORBIDDEN:
            for value in image.values(tag):
                text = image.string(value, f"the {tag} string")
                return (f"it has {tag} {text!r}, which makes the loader read files from "
                        "elsewhere; remove it (no -rpath, no audit or filter libraries)")
        if (_last(image, "DT_FLAGS_1") or 0) & _DF_1_NODEFLIB:
            return "it has DF_1_NODEFLIB, so the loader would not find glibc (-z nodefaultlib)"
        values = image.values("DT_NEEDED")
        if len(values) > _MAX_NEEDED:
            return f"it needs {len(values)} libraries; glibc has fewer"
        needed = [image.string(v, "a DT_NEEDED library name") for v in values]
        foreign = [n for n in needed if n not in GLIBC_LIBRARIES and n != host.soname]
        if foreign:
            which = "it is" if len(foreign) == 1 else "they are"
            return (f"it needs {', '.join(foreign)}, and {which} not part of glibc; link "
                    f"{'it' if len(foreign) == 1 else 'them'} statically")
        missing = [n for n in needed if host.library(n) is None]
        if missing:
            return f"it needs {', '.join(missing)}, which this host does not have"
        needs = version_needs(image)
        for library, version in needs:
            lib = host.library(library) if library in needed else None
            if lib is None:
                return f"it needs version {version} of {library}, which is not in its DT_NEEDED"
            if version == PRIVATE:
                return (f"it needs {PRIVATE} from {library}, glibc's internal interface, "
                        "which changes with every glibc build")
            if version not in lib.versions:
                top = latest(lib.versions)
                has = (f"defines up to {top}" if top else "defines no GLIBC_ version")
                return f"needs {version} from {library}; this host's {library} {has}"
        for library, version in needs:
            self.needs.setdefault(library, set()).add(version)
        return None
