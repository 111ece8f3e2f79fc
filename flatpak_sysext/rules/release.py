# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""systemd's env-file format and its rule for when an extension fits the host.

Everything here mirrors systemd (``src/basic/env-file.c``, ``src/shared/extension-util.c``,
``src/basic/os-util.c``, ``src/basic/architecture.c``), so that what we accept is exactly
what ``systemd-sysext merge`` will merge, on v252 (Debian 12) as on current releases.
Where versions differ, the choice is stated where it is made; where the verdict itself
differs (``ID_LIKE=``), it follows the host's own ``systemd-sysext --version``.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import sys
import types
from collections.abc import Callable, Iterator, Mapping

from flatpak_sysext.host.hostcommands import run_command, tool
from flatpak_sysext.report import Problem
from flatpak_sysext.rules import codes
from flatpak_sysext.state import fileio

MAX_ENV_FILE = 64 * 1024
"""How much of an env file we read; os-release files are a few hundred bytes."""

RELEASE_DIR = "usr/lib/extension-release.d"

_NEWLINE = "\n\r"
_WHITESPACE = " \t\n\r"
_COMMENTS = "#;"
_SHELL_NEED_ESCAPE = '"\\`$'

# uname's machine -> systemd's architecture name (architecture.c, uname_architecture()).
_ARCHITECTURES: dict[str, str] = dict(re.findall(r"(\S+):(\S+)", """
    aarch64:arm64 aarch64_be:arm64-be armv8l:arm armv8b:arm-be armv7ml:arm armv7mb:arm-be
    armv7l:arm armv7b:arm-be armv6l:arm armv6b:arm-be armv5tl:arm armv5tel:arm armv5tejl:arm
    armv5tejb:arm-be armv5teb:arm-be armv5tb:arm-be armv4tl:arm armv4tb:arm-be armv4l:arm
    armv4b:arm-be alpha:alpha arc:arc arceb:arc-be crisv32:cris x86_64:x86-64 i686:x86
    i586:x86 i486:x86 i386:x86 x32:x32 ia64:ia64 parisc64:parisc64 parisc:parisc
    loongarch64:loongarch64 m68k:m68k nios2:nios2 ppc64le:ppc64-le ppc64:ppc64 ppcle:ppc-le
    ppc:ppc riscv64:riscv64 riscv32:riscv32 s390x:s390x s390:s390 sh5:sh64 sh4a:sh sh4:sh
    sh3:sh sh2a:sh sh2:sh sparc64:sparc64 sparc:sparc tilegx:tilegx"""))

# A word of SYSEXT_SCOPE, as extract_first_word() keeping escapes cuts it ("a\ b" is one).
_SCOPE_WORD = re.compile(r"(?:\\.|\\$|[^ \t\n\r\\])+", re.S)

# Image names systemd (some version) strips or reads as something other than a plain
# directory image: a name ending so would not match its extension-release file.
_MANGLED_SUFFIXES = (".sysext", ".confext", ".raw", ".v", ".mstack")


def _pushes(text: str, comment_continuation: bool) -> Iterator[tuple[str, str]]:
    """Yield (key, value) in file order, as env-file.c's state machine pushes them."""
    key: list[str] = []
    value: list[str] = []
    key_ws: int | None = None  # index where trailing whitespace of the key starts
    value_ws: int | None = None  # same for an unquoted value
    state = "pre_key"

    def pushed() -> tuple[str, str]:
        k = "".join(key[:key_ws] if key_ws is not None else key)
        return k, "".join(value)

    for c in text:
        if state == "pre_key":
            if c in _COMMENTS:
                state = "comment"
            elif c not in _WHITESPACE:
                state, key, key_ws = "key", [c], None
        elif state == "key":
            if c in _NEWLINE:
                state = "pre_key"
            elif c == "=":
                state, value, value_ws = "pre_value", [], None
            else:
                if c not in _WHITESPACE:
                    key_ws = None
                elif key_ws is None:
                    key_ws = len(key)
                key.append(c)
        elif state == "pre_value":
            if c in _NEWLINE:
                state = "pre_key"
                yield pushed()
            elif c == "'":
                state = "single"
            elif c == '"':
                state = "double"
            elif c == "\\":
                state = "value_escape"
            elif c not in _WHITESPACE:
                state = "value"
                value.append(c)
        elif state == "value":
            if c in _NEWLINE:
                state = "pre_key"
                if value_ws is not None:
                    del value[value_ws:]
                yield pushed()
            elif c == "\\":
                state, value_ws = "value_escape", None
            else:
                if c not in _WHITESPACE:
                    value_ws = None
                elif value_ws is None:
                    value_ws = len(value)
                value.append(c)
        elif state == "value_escape":
            state = "value"
            if c not in _NEWLINE:  # an escaped newline continues the line
                value.append(c)
        elif state == "single":
            if c == "'":
                state = "pre_value"
            else:
                value.append(c)
        elif state == "double":
            if c == '"':
                state = "pre_value"
            elif c == "\\":
                state = "double_escape"
            else:
                value.append(c)
        elif state == "double_escape":
            state = "double"
            if c in _SHELL_NEED_ESCAPE:
                value.append(c)
            elif c != "\n":  # like the shell, other escapes keep their backslash
                value += ("\\", c)
        elif state == "comment":
            if c == "\\":
                state = "comment_escape"
            elif c in _NEWLINE:
                state = "pre_key"
        else:  # comment_escape
            # Up to v253 a backslash at the end of a comment also swallowed the next line.
            state = "pre_key" if c in _NEWLINE and not comment_continuation else "comment"
    if state not in ("pre_key", "key", "comment", "comment_escape"):
        if state == "value" and value_ws is not None:
            del value[value_ws:]
        yield pushed()


def invalid_utf8(s: str) -> bool:
    """Whether systemd's utf8_is_valid() would refuse ``s`` (decoded with surrogateescape).

    Besides undecodable bytes, systemd refuses the Unicode noncharacters.
    """
    for c in s:
        o = ord(c)
        if 0xD800 <= o <= 0xDFFF or 0xFDD0 <= o <= 0xFDEF or (o & 0xFFFE) == 0xFFFE:
            return True
    return False


def parse_env_file(data: bytes, *, comment_continuation: bool = False) -> dict[str, str]:
    """Parse systemd's env-file syntax (os-release, extension-release); never raises.

    Comments start with ``#`` or ``;`` at the start of a line; values may be quoted with
    ``'`` or ``"`` (pieces concatenate), a backslash escapes the next character and
    continues a line; there is no ``export`` keyword (``export A=b`` sets the key
    ``export A``); a line without ``=`` is skipped; the last duplicate wins; empty values
    are kept as "". Bytes that are not UTF-8 are decoded with surrogateescape, and
    parsing stops at a NUL byte: :func:`env_file_error` tells whether systemd would
    refuse the file instead. ``comment_continuation`` selects the behaviour of
    systemd < 254, where a comment ending in a backslash swallows the next line.
    """
    return dict(_pushes(_decode(data), comment_continuation))


def env_file_error(data: bytes, *, comment_continuation: bool = False) -> str | None:
    """Why systemd would refuse to read this env file at all, or None if it reads it.

    systemd refuses a file with a NUL byte, and one where any key or value is not
    valid UTF-8 (see :func:`invalid_utf8`); comments may hold anything.
    """
    if b"\0" in data:
        return "it contains a NUL byte"
    for key, value in _pushes(_decode(data), comment_continuation):
        if invalid_utf8(key) or invalid_utf8(value):
            shown = key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            return f"the entry '{shown}' is not valid UTF-8"
    return None


def _decode(data: bytes) -> str:
    # All the characters the syntax gives a meaning are ASCII, so parsing decoded text
    # is parsing the bytes.
    return data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def read_env_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read and parse ``path`` (symlinks followed) as systemd would; raises OSError.

    A file that is not regular or holds more than :data:`MAX_ENV_FILE` bytes cannot be
    read (OSError); one systemd would refuse to read (:func:`env_file_error`) gives an
    empty mapping, which is what systemd sees.
    """
    try:
        data = fileio.read_regular(path, MAX_ENV_FILE, follow=True)
    except ValueError as e:
        raise OSError(errno.EINVAL, f"{os.fspath(path)}: {e}") from None
    return {} if env_file_error(data) else parse_env_file(data)


@dataclasses.dataclass(frozen=True)
class Host:
    """What systemd-sysext compares an extension with: os-release and architecture."""

    os_release: Mapping[str, str]
    architecture: str
    """systemd's spelling, e.g. ``x86-64``."""
    systemd: tuple[int, int] | None = None
    """The host's systemd-sysext as (major, point release), e.g. (257, 13), when it
    matters (:func:`read_host` asks only a host with ``ID_LIKE=``); None: unknown."""

    def __post_init__(self) -> None:
        # A read-only copy, so a Host stays what it was when it was made.
        object.__setattr__(self, "os_release", types.MappingProxyType(dict(self.os_release)))

    def __hash__(self) -> int:
        return hash((tuple(sorted(self.os_release.items())), self.architecture, self.systemd))

    def get(self, key: str) -> str:
        """The value of ``key`` in os-release, "" if unset (systemd treats both alike)."""
        return self.os_release.get(key, "")


def architecture_from_uname(machine: str) -> str:
    """Map ``uname -m`` to systemd's architecture name; unknown names pass through."""
    if machine in ("mips", "mips64"):
        return machine + ("-le" if sys.byteorder == "little" else "")
    return _ARCHITECTURES.get(machine, machine)


def os_release_candidates(environ: Mapping[str, str]) -> list[str]:
    """The os-release files systemd-sysext reads, in order (the first that exists counts)."""
    override = environ.get("SYSTEMD_OS_RELEASE")
    return [override] if override is not None else ["/etc/os-release", "/usr/lib/os-release"]


ID_LIKE_FROM = (257, 13)
"""The first systemd-sysext seen to accept an extension whose ID is in the host's
``ID_LIKE=``: upstream from v258, and Debian 13's 257.13 already does (docs/platform.md);
earlier 257 releases are counted as not."""


def parse_systemd_version(output: str) -> tuple[int, int] | None:
    """(major, point) from ``systemd-sysext --version``'s first line, ``systemd 257
    (257.13-1)`` → (257, 13); a release without a point release gives (N, 0)."""
    match = re.match(r"systemd (\d+)(?: \((\d+)(?:\.(\d+))?)?", output)
    if match is None:
        return None
    major = int(match.group(1))
    point = int(match.group(3)) if match.group(3) and int(match.group(2)) == major else 0
    return major, point


def id_like_counts(systemd: tuple[int, int] | None) -> bool:
    """Whether a systemd-sysext of this version matches an extension's ID against the
    host's ``ID_LIKE=`` too; unknown counts as not (the stricter verdict)."""
    return systemd is not None and systemd >= ID_LIKE_FROM


def host_systemd_version() -> tuple[int, int] | None:
    """This host's systemd-sysext version (one ``--version`` run), None without one."""
    path = tool("systemd-sysext")
    if path is None:
        return None
    code, output = run_command((path, "--version"))
    return parse_systemd_version(output) if code == 0 else None


def read_host(environ: Mapping[str, str] = os.environ, root: str = "/",
              systemd: Callable[[], tuple[int, int] | None] = host_systemd_version) -> Host:
    """Read the host as systemd-sysext sees it.

    os-release comes from ``$SYSTEMD_OS_RELEASE`` if set (with no fallback, as in
    systemd), else from the first of ``/etc/os-release`` and ``/usr/lib/os-release`` that
    exists; unreadable means empty, which :func:`compatibility` reports. ``systemd`` gives
    the version of the host's systemd-sysext; it is asked only when os-release has
    ``ID_LIKE=``, the one thing whose verdict depends on it.
    """
    os_release: dict[str, str] = {}
    for candidate in os_release_candidates(environ):
        try:
            path = candidate if root == "/" else os.path.join(root, candidate.lstrip("/"))
            os_release = read_env_file(path)
            break
        except FileNotFoundError:
            continue
        except OSError:
            break  # systemd, too, only falls back when the file does not exist
    version = systemd() if os_release.get("ID_LIKE") else None
    return Host(os_release, architecture_from_uname(os.uname().machine), version)


def release_path(name: str) -> str:
    """Where the extension named ``name`` keeps its extension-release, relative to its root."""
    return f"{RELEASE_DIR}/extension-release.{name}"


def host_description(host: Host) -> str:
    """The host's os-release fields that matter, as ``ID=debian VERSION_ID=12``."""
    fields = [f"{k}={host.get(k)}" for k in ("ID", "VERSION_ID", "SYSEXT_LEVEL") if host.get(k)]
    return " ".join(fields) or "without ID"


def sample_release(host: Host) -> list[str]:
    """Lines of an extension-release that would match ``host`` exactly."""
    if not host.get("ID"):
        return ["ID=_any"]
    lines = [f"ID={host.get('ID')}"]
    if host.get("SYSEXT_LEVEL"):
        lines.append(f"SYSEXT_LEVEL={host.get('SYSEXT_LEVEL')}")
    elif host.get("VERSION_ID"):
        lines.append(f"VERSION_ID={host.get('VERSION_ID')}")
    return lines


def compatibility(ext: Mapping[str, str], host: Host, name: str) -> list[Problem]:
    """Why systemd-sysext would skip an extension with this extension-release on ``host``.

    The same decision as extension_release_validate(), every failing part reported:
    ``incompatible-scope``, ``incompatible-architecture``, ``incompatible-os``. Empty
    values count as unset, except in ``SYSEXT_SCOPE`` where systemd reads an empty list.
    An ID in the host's ``ID_LIKE`` counts as the host's own where the host's
    systemd-sysext does so (:func:`id_like_counts`); the versions are compared as usual.
    """
    path = release_path(name)
    here = f"this host is {host_description(host)}"
    problems: list[Problem] = []
    scope = ext.get("SYSEXT_SCOPE")
    if scope is not None and "system" not in _SCOPE_WORD.findall(scope):
        problems.append(Problem(codes.INCOMPATIBLE_SCOPE, path,
                                f"SYSEXT_SCOPE={scope} does not include 'system', so "
                                "systemd-sysext never merges it on a host; write "
                                "SYSEXT_SCOPE=system (or 'system portable') or drop the line"))
    arch = ext.get("ARCHITECTURE", "")
    if arch and arch not in ("_any", host.architecture):
        hint = ""
        if architecture_from_uname(arch) == host.architecture:
            hint = f" (systemd spells it {host.architecture})"
        problems.append(Problem(codes.INCOMPATIBLE_ARCHITECTURE, path,
                                f"ARCHITECTURE={arch} but this host is "
                                f"{host.architecture}{hint}; use "
                                f"ARCHITECTURE={host.architecture}, ARCHITECTURE=_any, or no "
                                "ARCHITECTURE line"))
    problems += _os_problems(ext, host, path, here)
    return problems


def _os_problems(ext: Mapping[str, str], host: Host, path: str, here: str) -> list[Problem]:
    def problem(text: str) -> list[Problem]:
        return [Problem(codes.INCOMPATIBLE_OS, path, text)]

    if not host.get("ID"):
        return problem("this host's os-release has no ID= (or systemd cannot read it), so "
                       "systemd-sysext merges no extension at all; fix the host's "
                       "/etc/os-release")
    ext_id = ext.get("ID", "")
    fix_id = f"use ID=_any to match every OS or {' with '.join(sample_release(host))}"
    if not ext_id:
        return problem(f"no ID= line; {here}: {fix_id}")
    if ext_id == "_any":
        return []
    liked = ext_id in host.get("ID_LIKE").split()
    if ext_id != host.get("ID") and not (liked and id_like_counts(host.systemd)):
        like = ""
        if liked:
            seen = ("an unknown version" if host.systemd is None
                    else f"version {host.systemd[0]}")
            like = (f" (ID_LIKE={host.get('ID_LIKE')}, but its systemd-sysext, "
                    f"{seen}, does not count ID_LIKE; {ID_LIKE_FROM[0]}.{ID_LIKE_FROM[1]} "
                    "and later do)")
        return problem(f"ID={ext_id} but {here}{like}; {fix_id}")
    host_version, host_level = host.get("VERSION_ID"), host.get("SYSEXT_LEVEL")
    if not host_version and not host_level:
        return []  # a rolling release: the ID is enough
    level = ext.get("SYSEXT_LEVEL", "")
    if host_level and level:
        if level != host_level:
            return problem(f"SYSEXT_LEVEL={level} but {here}; use SYSEXT_LEVEL={host_level} "
                           "(VERSION_ID is not compared when both set SYSEXT_LEVEL)")
        return []
    if host_version:
        version = ext.get("VERSION_ID", "")
        if not version:
            return problem(f"no VERSION_ID= line; {here}: add VERSION_ID={host_version}"
                           + (f" or SYSEXT_LEVEL={host_level}" if host_level else "")
                           + ", or use ID=_any")
        if version != host_version:
            return problem(f"VERSION_ID={version} but {here}; use VERSION_ID={host_version}"
                           + (f" or SYSEXT_LEVEL={host_level}" if host_level else "")
                           + ", or ID=_any")
    # A host with only SYSEXT_LEVEL accepts an extension without one: systemd's last branch.
    return []


def valid_image_name(name: str) -> str | None:
    """None if systemd-sysext uses ``name`` unchanged as an image name, else why not.

    image_name_is_valid() (a file name without control characters, valid UTF-8, not
    starting with ``.#``), plus: the file ``extension-release.NAME`` must fit in a file
    name; hidden names and names whose suffix some systemd version strips or reads as
    another image type would not match the extension-release file.
    """
    if not name:
        return "the name is empty"
    if "/" in name:
        return f"{name!r} contains '/', which no file name can"
    if name.startswith("."):
        return f"{name!r} starts with '.': systemd-sysext treats it as hidden or temporary"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"{name!r} contains a control character, which systemd refuses in image names"
    if invalid_utf8(name):
        return f"{name!r} is not valid UTF-8, which systemd refuses in image names"
    size = len(name.encode("utf-8"))
    limit = 255 - len("extension-release.")
    if size > limit:
        return (f"the name is {size} bytes long; extension-release.NAME must fit in a file "
                f"name, so at most {limit}")
    for suffix in _MANGLED_SUFFIXES:
        if name.endswith(suffix):
            return (f"{name!r} ends in {suffix!r}, which systemd-sysext strips or reads as "
                    "another image type in some versions, so the extension-release file "
                    "would not match; rename the app")
    return None
