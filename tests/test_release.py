# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""systemd's env-file syntax and compatibility rule, checked by table and against systemd."""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import glob
import itertools
import os
import pathlib
import re
from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flatpak_sysext.rules import release
from flatpak_sysext.rules.release import Host, compatibility, env_file_error, parse_env_file
from testsupport import booted, chrootsysext

DEBIAN = Host({"ID": "debian", "VERSION_ID": "12"}, "x86-64")
PATH = "usr/lib/extension-release.d/extension-release.org.example.App"

PARSE_CASES: list[tuple[bytes, dict[str, str]]] = [
    (b"", {}),
    (b"ID=debian\nVERSION_ID=12\n", {"ID": "debian", "VERSION_ID": "12"}),
    (b"ID=debian", {"ID": "debian"}),  # no final newline
    (b"  ID  =  debian  \n", {"ID": "debian"}),  # whitespace around key and value
    (b"ID=a b\tc \n", {"ID": "a b\tc"}),  # inner whitespace kept, trailing chomped
    (b"ID='a b' \n", {"ID": "a b"}),
    (b'ID="a b"\n', {"ID": "a b"}),
    (b"ID='a'\"b\"c\n", {"ID": "abc"}),  # quoted pieces concatenate
    (b"ID=\"a\" 'b'\n", {"ID": "ab"}),  # whitespace between quoted pieces is dropped
    (b"ID=a'b'\n", {"ID": "a'b'"}),  # quotes inside an unquoted value are literal
    (b"ID='a\\nb'\n", {"ID": "a\\nb"}),  # no escapes in single quotes
    (b"ID='a\nb'\n", {"ID": "a\nb"}),  # quotes span lines
    (b'ID="a\\"b\\\\c\\$d\\`e"\n', {"ID": 'a"b\\c$d`e'}),  # escapes the shell needs
    (b'ID="a\\nb"\n', {"ID": "a\\nb"}),  # other escapes keep their backslash
    (b'ID="a\\\nb"\n', {"ID": "ab"}),  # continuation inside double quotes
    (b"ID=a\\ b\\\\c\n", {"ID": "a b\\c"}),  # unquoted escapes drop the backslash
    (b"ID=a\\\nb\n", {"ID": "ab"}),  # continuation
    (b"ID=a \\\n  b\n", {"ID": "a   b"}),
    (b"ID=a\\ \n", {"ID": "a "}),  # an escaped trailing space stays
    (b"# ID=x\nID=y\n", {"ID": "y"}),
    (b"; ID=x\n  # indented comment\nID=y\n", {"ID": "y"}),
    (b"ID=y # not a comment\n", {"ID": "y # not a comment"}),
    (b"ID=x\nID=y\n", {"ID": "y"}),  # last duplicate wins
    (b"ID=\n", {"ID": ""}),
    (b"ID=''\n", {"ID": ""}),
    (b"ID\nVERSION_ID=1\n", {"VERSION_ID": "1"}),  # a line without '=' is skipped
    (b"export ID=x\n", {"export ID": "x"}),  # no 'export' keyword in systemd
    (b"A B=c\n", {"A B": "c"}),
    (b"==x\n", {"=": "x"}),
    (b"ID=a\r\nV=b\r\n", {"ID": "a", "V": "b"}),  # \r ends a line too
    (b"ID='unterminated\n", {"ID": "unterminated\n"}),
    (b"ID=\xc3\xa9t\xc3\xa9\n", {"ID": "\u00e9t\u00e9"}),
    (b"ID=a\0B=c\n", {"ID": "a"}),  # a C string: stops at NUL
]


@pytest.mark.parametrize(("data", "expected"), PARSE_CASES)
def test_parse_env_file(data: bytes, expected: dict[str, str]) -> None:
    assert parse_env_file(data) == expected


def test_comment_continuation_differs_before_systemd_254() -> None:
    data = b"# a comment \\\nID=debian\n"
    assert parse_env_file(data) == {"ID": "debian"}
    assert parse_env_file(data, comment_continuation=True) == {}


@pytest.mark.parametrize(("data", "error"), [
    (b"ID=debian\n", None),
    (b"# \xff in a comment is fine\nID=debian\n", None),
    (b"ID=a\0\n", "it contains a NUL byte"),
    (b"ID=\xff\n", "the entry 'ID' is not valid UTF-8"),
    (b"\xffD=x\n", "the entry '\\xffD' is not valid UTF-8"),
    (b"ID=\xef\xbf\xbe\n", "the entry 'ID' is not valid UTF-8"),  # U+FFFE, a noncharacter
    (b"ID=\xed\xa0\x80\n", "the entry 'ID' is not valid UTF-8"),  # an encoded surrogate
])
def test_env_file_error(data: bytes, error: str | None) -> None:
    assert env_file_error(data) == error


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_parser_never_raises(data: bytes, legacy: bool) -> None:
    assert isinstance(parse_env_file(data, comment_continuation=legacy), dict)
    error = env_file_error(data, comment_continuation=legacy)
    assert error is None or isinstance(error, str)


# --- against the installed systemd's own code -------------------------------------------

def _shared_library() -> tuple[Any, int] | None:
    paths = glob.glob("/usr/lib/*/systemd/libsystemd-shared-*.so")
    paths += glob.glob("/usr/lib/systemd/libsystemd-shared-*.so")
    for path in paths:
        match = re.search(r"libsystemd-shared-(\d+)", path)
        try:
            return ctypes.CDLL(path), int(match.group(1)) if match else 0
        except OSError:
            continue
    return None


SYSTEMD = _shared_library()
LIBC = ctypes.CDLL(ctypes.util.find_library("c"))
LIBC.fmemopen.restype = ctypes.c_void_p
LIBC.fmemopen.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p]
LIBC.fclose.argtypes = [ctypes.c_void_p]
needs_systemd = pytest.mark.skipif(SYSTEMD is None, reason="no libsystemd-shared here")


def _systemd_load_pairs(data: bytes) -> dict[str, str] | None:
    """systemd's load_env_file_pairs() on ``data``; None if it refuses the file."""
    assert SYSTEMD is not None
    lib = SYSTEMD[0]
    if not data:  # fmemopen() refuses an empty buffer
        return {}
    pairs = ctypes.POINTER(ctypes.c_char_p)()
    lib.load_env_file_pairs.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                        ctypes.POINTER(ctypes.POINTER(ctypes.c_char_p))]
    buf = ctypes.create_string_buffer(data, len(data))
    f = LIBC.fmemopen(buf, len(data), b"r")
    r = lib.load_env_file_pairs(f, b"test", ctypes.byref(pairs))
    LIBC.fclose(f)
    if r < 0:
        return None
    result: dict[str, str] = {}
    for i in itertools.count(0, 2):
        if not pairs or pairs[i] is None:
            return result
        result[pairs[i].decode()] = pairs[i + 1].decode()
    raise AssertionError("unreachable")


SYNTAX = st.lists(st.sampled_from([b"A", b"B", b"=", b" ", b"\t", b"\n", b"\r", b"'", b'"',
                                   b"\\", b"#", b";", b"x", b"$", b"`", b"\xff", b"\xc3\xa9",
                                   b"\xef\xbf\xbe", b"export ", b"\0"]), max_size=16)


@needs_systemd
@settings(max_examples=1000, deadline=None)
@given(SYNTAX)
def test_parser_agrees_with_systemd(pieces: list[bytes]) -> None:
    assert SYSTEMD is not None
    data = b"".join(pieces)
    legacy = SYSTEMD[1] < 254
    ours = None if env_file_error(data, comment_continuation=legacy) else parse_env_file(
        data, comment_continuation=legacy)
    assert ours == _systemd_load_pairs(data)


# --- compatibility ---------------------------------------------------------------------

def _codes(ext: dict[str, str], host: Host = DEBIAN) -> list[str]:
    return [p.code for p in compatibility(ext, host, "org.example.App")]


ROLLING = Host({"ID": "arch"}, "x86-64")
LEVELLED = Host({"ID": "debian", "VERSION_ID": "12", "SYSEXT_LEVEL": "2"}, "x86-64")
LEVEL_ONLY = Host({"ID": "debian", "SYSEXT_LEVEL": "2"}, "x86-64")
LIKE = Host({"ID": "ubuntu", "ID_LIKE": "debian", "VERSION_ID": "24.04"}, "x86-64")
LIKE_252 = dataclasses.replace(LIKE, systemd=(252, 39))
LIKE_257_12 = dataclasses.replace(LIKE, systemd=(257, 12))
LIKE_257 = dataclasses.replace(LIKE, systemd=(257, 13))
LIKE_262 = dataclasses.replace(LIKE, systemd=(262, 1))
NO_ID = Host({}, "x86-64")

COMPAT_CASES: list[tuple[dict[str, str], Host, list[str]]] = [
    ({"ID": "debian", "VERSION_ID": "12"}, DEBIAN, []),
    ({}, DEBIAN, ["incompatible-os"]),  # no release data at all
    ({"ID": ""}, DEBIAN, ["incompatible-os"]),  # empty = unset
    ({"ID": "_any"}, DEBIAN, []),  # _any skips every version check
    ({"ID": "_any", "VERSION_ID": "99", "SYSEXT_LEVEL": "9"}, LEVELLED, []),
    ({"ID": "fedora", "VERSION_ID": "12"}, DEBIAN, ["incompatible-os"]),
    ({"ID": "debian"}, DEBIAN, ["incompatible-os"]),  # host has VERSION_ID
    ({"ID": "debian", "VERSION_ID": ""}, DEBIAN, ["incompatible-os"]),
    ({"ID": "debian", "VERSION_ID": "11"}, DEBIAN, ["incompatible-os"]),
    ({"ID": "arch"}, ROLLING, []),  # a host without versions takes any
    ({"ID": "arch", "VERSION_ID": "1", "SYSEXT_LEVEL": "3"}, ROLLING, []),
    ({"ID": "debian", "SYSEXT_LEVEL": "2", "VERSION_ID": "11"}, LEVELLED, []),  # levels rule
    ({"ID": "debian", "SYSEXT_LEVEL": "1", "VERSION_ID": "12"}, LEVELLED, ["incompatible-os"]),
    ({"ID": "debian", "VERSION_ID": "12"}, LEVELLED, []),  # no level: compare versions
    ({"ID": "debian", "VERSION_ID": "11"}, LEVELLED, ["incompatible-os"]),
    ({"ID": "debian", "SYSEXT_LEVEL": "2"}, DEBIAN, ["incompatible-os"]),  # host: no level
    ({"ID": "debian"}, LEVEL_ONLY, []),  # host with only a level takes an ext without one
    ({"ID": "debian", "SYSEXT_LEVEL": "1"}, LEVEL_ONLY, ["incompatible-os"]),
    ({"ID": "debian", "VERSION_ID": "24.04"}, LIKE, ["incompatible-os"]),  # systemd unknown
    ({"ID": "debian", "VERSION_ID": "24.04"}, LIKE_252, ["incompatible-os"]),
    ({"ID": "debian", "VERSION_ID": "24.04"}, LIKE_257_12, ["incompatible-os"]),
    ({"ID": "debian", "VERSION_ID": "24.04"}, LIKE_257, []),  # Debian 13's counts ID_LIKE
    ({"ID": "debian", "VERSION_ID": "24.04"}, LIKE_262, []),
    ({"ID": "debian", "VERSION_ID": "12"}, LIKE_262, ["incompatible-os"]),  # versions still
    ({"ID": "fedora", "VERSION_ID": "24.04"}, LIKE_262, ["incompatible-os"]),
    ({"ID": "_any"}, NO_ID, ["incompatible-os"]),  # systemd-sysext refuses such a host
    ({"ID": "_any", "ARCHITECTURE": "x86-64"}, DEBIAN, []),
    ({"ID": "_any", "ARCHITECTURE": "_any"}, DEBIAN, []),
    ({"ID": "_any", "ARCHITECTURE": ""}, DEBIAN, []),
    ({"ID": "_any", "ARCHITECTURE": "arm64"}, DEBIAN, ["incompatible-architecture"]),
    ({"ID": "_any", "ARCHITECTURE": "x86_64"}, DEBIAN, ["incompatible-architecture"]),
    ({"ID": "_any", "SYSEXT_SCOPE": "system"}, DEBIAN, []),
    ({"ID": "_any", "SYSEXT_SCOPE": " portable\tsystem "}, DEBIAN, []),
    ({"ID": "_any", "SYSEXT_SCOPE": "portable"}, DEBIAN, ["incompatible-scope"]),
    ({"ID": "_any", "SYSEXT_SCOPE": "initrd"}, DEBIAN, ["incompatible-scope"]),
    ({"ID": "_any", "SYSEXT_SCOPE": ""}, DEBIAN, ["incompatible-scope"]),  # an empty list
    ({"ID": "_any", "SYSEXT_SCOPE": "systemd"}, DEBIAN, ["incompatible-scope"]),
    ({"SYSEXT_SCOPE": "portable", "ARCHITECTURE": "s390x", "ID": "fedora"}, DEBIAN,
     ["incompatible-scope", "incompatible-architecture", "incompatible-os"]),  # all reported
]


@pytest.mark.parametrize(("ext", "host", "codes"), COMPAT_CASES)
def test_compatibility(ext: dict[str, str], host: Host, codes: list[str]) -> None:
    assert _codes(ext, host) == codes
    assert all(p.path == PATH for p in compatibility(ext, host, "org.example.App"))


@pytest.mark.parametrize(("ext", "host", "message"), [
    ({"ID": "fedora", "VERSION_ID": "40"}, DEBIAN,
     "ID=fedora but this host is ID=debian VERSION_ID=12; use ID=_any to match every OS or "
     "ID=debian with VERSION_ID=12"),
    ({"ID": "debian", "VERSION_ID": "11"}, DEBIAN,
     "VERSION_ID=11 but this host is ID=debian VERSION_ID=12; use VERSION_ID=12, or ID=_any"),
    ({"ID": "debian"}, DEBIAN,
     "no VERSION_ID= line; this host is ID=debian VERSION_ID=12: add VERSION_ID=12, or use "
     "ID=_any"),
    ({"ID": "_any", "ARCHITECTURE": "x86_64"}, DEBIAN,
     "ARCHITECTURE=x86_64 but this host is x86-64 (systemd spells it x86-64); use "
     "ARCHITECTURE=x86-64, ARCHITECTURE=_any, or no ARCHITECTURE line"),
    ({"ID": "debian", "VERSION_ID": "24.04"}, LIKE_252,
     "ID=debian but this host is ID=ubuntu VERSION_ID=24.04 (ID_LIKE=debian, but its "
     "systemd-sysext, version 252, does not count ID_LIKE; 257.13 and later do); use ID=_any "
     "to match every OS or ID=ubuntu with VERSION_ID=24.04"),
])
def test_compatibility_messages(ext: dict[str, str], host: Host, message: str) -> None:
    assert [p.message for p in compatibility(ext, host, "org.example.App")] == [message]


def _systemd_validate() -> Callable[..., int] | None:
    # extension_release_validate()'s arguments changed in 254 and 258: only 252 and 253.
    if SYSTEMD is None or SYSTEMD[1] not in (252, 253):
        return None
    fn = SYSTEMD[0].extension_release_validate
    fn.argtypes = [ctypes.c_char_p] * 5 + [ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


@pytest.mark.skipif(_systemd_validate() is None, reason="needs libsystemd-shared 252 or 253")
def test_compatibility_agrees_with_systemd() -> None:
    validate = _systemd_validate()
    assert validate is not None
    arch = release.architecture_from_uname(os.uname().machine)
    values = {"ID": [None, "", "debian", "fedora", "_any"], "VERSION_ID": [None, "", "12", "13"],
              "SYSEXT_LEVEL": [None, "", "1", "2"],
              "ARCHITECTURE": [None, "", arch, "s390x", "_any", os.uname().machine],
              "SYSEXT_SCOPE": [None, "", "system", "portable", " initrd  system "]}
    for combo in itertools.product(*values.values()):
        ext = {k: v for k, v in zip(values, combo) if v is not None}
        strv = (ctypes.c_char_p * (2 * len(ext) + 1))(
            *[s.encode() for kv in ext.items() for s in kv], None)
        for version, level in itertools.product([None, "12", "13"], [None, "1", "2"]):
            host = {"ID": "debian", "VERSION_ID": version, "SYSEXT_LEVEL": level}
            expected = validate(b"x", b"debian", version and version.encode(),
                                level and level.encode(), b"system", ctypes.cast(strv,
                                                                                ctypes.c_void_p))
            ours = compatibility(ext, Host({k: v for k, v in host.items() if v}, arch), "x")
            assert (expected > 0) == (not ours), (ext, host)


def test_scope_with_escapes_is_judged_strictly() -> None:
    # systemd 252 splits "a\ system" into two words, later versions keep "a\ system" as one:
    # we take the stricter reading.
    assert _codes({"ID": "_any", "SYSEXT_SCOPE": "a\\ system"}) == ["incompatible-scope"]


# --- host ------------------------------------------------------------------------------

@pytest.mark.parametrize(("machine", "arch"), [
    ("x86_64", "x86-64"), ("aarch64", "arm64"), ("i686", "x86"), ("i386", "x86"),
    ("armv7l", "arm"), ("armv6l", "arm"), ("ppc64le", "ppc64-le"), ("ppc64", "ppc64"),
    ("s390x", "s390x"), ("riscv64", "riscv64"), ("loongarch64", "loongarch64"),
    ("something-new", "something-new"),
])
def test_architecture_from_uname(machine: str, arch: str) -> None:
    assert release.architecture_from_uname(machine) == arch


def _write(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_read_host_order(tmp_path: pathlib.Path) -> None:
    _write(tmp_path / "usr/lib/os-release", "ID=fromusr\n")
    assert release.read_host({}, str(tmp_path)).os_release == {"ID": "fromusr"}
    _write(tmp_path / "etc/os-release", "ID=frometc\n")
    assert release.read_host({}, str(tmp_path)).get("ID") == "frometc"
    _write(tmp_path / "other", "ID=fromenv\nVERSION_ID=1\n")
    host = release.read_host({"SYSTEMD_OS_RELEASE": "/other"}, str(tmp_path))
    assert dict(host.os_release) == {"ID": "fromenv", "VERSION_ID": "1"}
    assert host.architecture == release.architecture_from_uname(os.uname().machine)
    # $SYSTEMD_OS_RELEASE has no fallback, as in systemd
    assert release.read_host({"SYSTEMD_OS_RELEASE": "/missing"}, str(tmp_path)).os_release == {}


def test_read_host_refused_file_is_empty(tmp_path: pathlib.Path) -> None:
    (tmp_path / "os-release").write_bytes(b"ID=debian\nNAME=\xff\n")
    host = release.read_host({"SYSTEMD_OS_RELEASE": str(tmp_path / "os-release")})
    assert host.os_release == {}
    assert _codes({"ID": "_any"}, host) == ["incompatible-os"]


def test_host_is_frozen_and_hashable() -> None:
    source = {"ID": "debian"}
    host = Host(source, "x86-64")
    source["ID"] = "changed"
    assert host.get("ID") == "debian" and host.get("VERSION_ID") == ""
    with pytest.raises(TypeError):
        host.os_release["ID"] = "x"  # type: ignore[index]
    assert hash(host) == hash(Host({"ID": "debian"}, "x86-64"))
    assert host == Host({"ID": "debian"}, "x86-64")


def test_sample_release() -> None:
    assert release.sample_release(DEBIAN) == ["ID=debian", "VERSION_ID=12"]
    assert release.sample_release(LEVELLED) == ["ID=debian", "SYSEXT_LEVEL=2"]
    assert release.sample_release(ROLLING) == ["ID=arch"]
    assert release.sample_release(NO_ID) == ["ID=_any"]


# --- names -----------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "valid"), [
    ("org.example.App", True),
    ("org.example.Raw", True),
    ("a" * 237, True),
    ("a" * 238, False),  # extension-release.NAME would exceed 255 bytes
    ("é" * 119, False),  # counted in bytes
    ("", False), (".hidden", False), (".#lock", False), ("a/b", False), ("a\nb", False),
    ("a\x7fb", False), ("a\udcffb", False),
    ("org.example.App.sysext", False), ("org.example.App.raw", False),
    ("org.example.App.v", False), ("org.example.App.mstack", False),
    ("org.example.App.confext", False),
])
def test_valid_image_name(name: str, valid: bool) -> None:
    assert (release.valid_image_name(name) is None) is valid


@needs_systemd
@pytest.mark.parametrize("name", ["org.example.App", "", ".#x", "a/b", "a\tb", "a\x7f",
                                  "a" * 255, "a" * 256, ".", ".."])
def test_valid_image_name_is_stricter_than_systemd(name: str) -> None:
    assert SYSTEMD is not None
    fn = SYSTEMD[0].image_name_is_valid
    fn.argtypes, fn.restype = [ctypes.c_char_p], ctypes.c_bool
    if release.valid_image_name(name) is None:
        assert fn(name.encode())


# --- the verdict of each release's own systemd-sysext ----------------------------------

# Hosts derived from Debian and Ubuntu, and a plain one; every extension below is judged
# on each by the real systemd-sysext of each release's root and by us.
REAL_HOSTS = [
    'ID=fsxos\nID_LIKE="debian ubuntu"\nVERSION_ID=12\n',
    'ID=fsxos\nID_LIKE="debian ubuntu"\nVERSION_ID=12\nSYSEXT_LEVEL=2\n',
    "ID=fsxos\nID_LIKE=debian\n",
    "ID=debian\nVERSION_ID=12\n",
]
REAL_EXTENSIONS = [
    "ID=debian\nVERSION_ID=12\n", "ID=ubuntu\nVERSION_ID=12\n", "ID=debian\nVERSION_ID=11\n",
    "ID=debian\nSYSEXT_LEVEL=2\n", "ID=ubuntu\nSYSEXT_LEVEL=3\n", "ID=debian\n",
    "ID=fsxos\nVERSION_ID=12\n", "ID=fsxos\nSYSEXT_LEVEL=2\n", "ID=fedora\nVERSION_ID=12\n",
    "ID=_any\n", 'ID="debian ubuntu"\nVERSION_ID=12\n', "ID=deb\nVERSION_ID=12\n",
]


@pytest.mark.privileged
@pytest.mark.merge
@pytest.mark.slow
@pytest.mark.parametrize("name", booted.RELEASE_IDS)
def test_verdict_is_the_real_systemd_sysext_of_each_release(
        name: str, tmp_path: pathlib.Path) -> None:
    booted.require_booting("unshare", "chroot")
    root = booted.cached_root(name)
    version = release.parse_systemd_version(chrootsysext.sysext_version(root))
    assert version is not None
    names = {f"e{i}": text for i, text in enumerate(REAL_EXTENSIONS)}
    disagree = []
    for os_release in REAL_HOSTS:
        merged = chrootsysext.merged_names(root, tmp_path, os_release, names)
        (tmp_path / "os-release").write_text(os_release)
        host = release.read_host({"SYSTEMD_OS_RELEASE": str(tmp_path / "os-release")},
                                 systemd=lambda: version)
        for ext_name, text in names.items():
            ours = not compatibility(parse_env_file(text.encode()), host, ext_name)
            if ours != (ext_name in merged):
                disagree.append(f"host {os_release!r}, extension {text!r}: systemd "
                                f"{'merges' if ext_name in merged else 'skips'}, we say "
                                f"{'compatible' if ours else 'incompatible'}")
    assert not disagree, f"{version}:\n" + "\n".join(disagree)


def test_a_new_systemd_discards_cached_verdicts() -> None:
    """The verdict on an ID_LIKE host follows its systemd-sysext: a cached one made
    under another version must not be reused."""
    from flatpak_sysext.config import Config
    from flatpak_sysext.context import Context

    def fingerprint(host: Host) -> str:
        return Context(Config(), (), host).fingerprint()

    assert fingerprint(LIKE_252) != fingerprint(LIKE_257)
    assert fingerprint(LIKE) == fingerprint(dataclasses.replace(LIKE))
