# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The tree rules, on real hostile trees built in temporary directories (run as root)."""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import stat
import struct
import subprocess
import tempfile
import tracemalloc
from collections.abc import Iterator
from typing import Any, BinaryIO

import pytest

from flatpak_sysext.report import Problem, TreeReport
from flatpak_sysext.rules import elf, findings, validate
from flatpak_sysext.rules.placement import check as check_placement
from flatpak_sysext.rules.release import Host
from flatpak_sysext.rules.validate import validate_tree
from testsupport.prerequisites import require, require_tools

APP = "org.example.App"
RELEASE = f"usr/lib/extension-release.d/extension-release.{APP}"
HOST = Host({"ID": "debian", "VERSION_ID": "12"}, "x86-64")
TARGET = elf.ElfTarget.host()
needs_root = pytest.mark.usefixtures("as_root")


@pytest.fixture
def as_root() -> None:
    require(os.geteuid() == 0, "needs root (mknod)")


@pytest.fixture(autouse=True)
def _umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def make_tree(root: pathlib.Path, release: bytes | None = b"ID=debian\nVERSION_ID=12\n",
              files: dict[str, bytes] | None = None) -> pathlib.Path:
    """A valid extension tree: the extension-release, plus ``files`` (relative -> content)."""
    (root / "usr/lib/extension-release.d").mkdir(parents=True)
    if release is not None:
        (root / RELEASE).write_bytes(release)
    for rel, content in (files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    return root


def check(root: pathlib.Path | str, name: str = APP, host: Host = HOST) -> TreeReport:
    return validate_tree(root, name, host, TARGET)


# Where each file may lie and where symlinks lead is tests/test_contain.py's business:
# the trees here put files anywhere to exercise the other rules.
CONTAINMENT = frozenset({"unclassified-file", "escaping-symlink"})


def others(report: TreeReport) -> list[Problem]:
    """The problems of ``report`` other than containment's."""
    return [p for p in report.problems if p.code not in CONTAINMENT]


def codes(report: TreeReport) -> list[tuple[str, str]]:
    return [(p.code, p.path) for p in others(report)]


def test_clean_tree(tmp_path: pathlib.Path) -> None:
    make_tree(tmp_path, files={"usr/bin/tool.sh": b"#!/bin/sh\n", "opt/x/data": b"x"})
    (tmp_path / "usr/bin/tool.sh").chmod(0o755)
    os.symlink("tool.sh", tmp_path / "usr/bin/link")  # inside the tree: escaping-symlink
    report = check(tmp_path)
    assert report.problems == () and report.warnings == () and report.accepted
    assert report.files == {RELEASE, "usr/bin/tool.sh", "usr/bin/link", "opt/x/data"}


def test_root_itself(tmp_path: pathlib.Path) -> None:
    assert codes(check(tmp_path / "missing")) == [("not-a-directory", "")]
    make_tree(tmp_path)
    tmp_path.chmod(0o700)  # not merged: any mode but writable is fine
    assert check(tmp_path).accepted
    tmp_path.chmod(0o777)
    assert codes(check(tmp_path)) == [("unsafe-permissions", "")]


def test_missing_extension_release_explains(tmp_path: pathlib.Path) -> None:
    make_tree(tmp_path, release=None)
    (tmp_path / "usr/lib/extension-release.d/extension-release.org.other.App").write_text("ID=_any")
    [problem] = check(tmp_path).problems
    assert (problem.code, problem.path) == ("missing-extension-release", RELEASE)
    assert "org.other.App" in problem.message
    assert "ID=debian\n    VERSION_ID=12\n" in problem.message
    assert problem.message.endswith("ID=_any")


def test_missing_usr(tmp_path: pathlib.Path) -> None:
    (tmp_path / "opt").mkdir()
    [problem] = check(tmp_path).problems
    assert (problem.code, problem.path) == ("missing-extension-release", RELEASE)
    assert problem.message.startswith("usr is missing.")


def test_extension_release_symlink_is_not_followed(tmp_path: pathlib.Path) -> None:
    make_tree(tmp_path, release=None)
    os.symlink("/etc/os-release", tmp_path / RELEASE)
    report = check(tmp_path, host=Host({"ID": "x"}, "x86-64"))
    [problem] = others(report)  # and no compatibility problem: nothing was read
    assert (problem.code, problem.path) == ("missing-extension-release", RELEASE)
    assert "is a symlink to /etc/os-release" in problem.message


def test_symlinked_release_directory_is_not_followed(tmp_path: pathlib.Path) -> None:
    outside = make_tree(tmp_path / "outside")
    (tmp_path / "tree/usr").mkdir(parents=True)
    os.symlink(outside / "usr/lib", tmp_path / "tree/usr/lib")
    [problem] = others(check(tmp_path / "tree"))
    assert problem.code == "missing-extension-release"
    assert problem.message.startswith("usr/lib is a symlink, not a directory.")


@pytest.mark.privileged
@needs_root
def test_symlinked_directories_are_not_walked(tmp_path: pathlib.Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o777)
    outside.chmod(0o777)
    os.mknod(outside / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (outside / "suid").write_bytes(b"")
    (outside / "suid").chmod(0o4777)
    tree = make_tree(tmp_path / "tree")
    os.symlink(outside, tree / "usr/share")
    os.symlink("/", tree / "opt")
    os.symlink("..", tree / "usr/lib/up")
    report = check(tree)
    assert codes(report) == [("not-a-directory", "opt")]
    assert report.files == {RELEASE, "usr/share", "usr/lib/up"}


@pytest.mark.privileged
@needs_root
def test_hostile_tree_reports_everything(tmp_path: pathlib.Path) -> None:
    tree = make_tree(tmp_path, files={"usr/lib/os-release": b"ID=evil\n",
                                      "usr/bin/suid": b"", "usr/bin/sgid": b"",
                                      "usr/bin/open": b"", "etc/passwd": b"",
                                      "usr/share/private/x": b"", "usr/share/shared/x": b"",
                                      "etc/private/x": b""})
    os.mknod(tree / "usr/bin/null", stat.S_IFCHR | 0o644, os.makedev(1, 3))
    os.mknod(tree / "usr/bin/whiteout", stat.S_IFCHR | 0o644, 0)
    os.mknod(tree / "usr/bin/loop", stat.S_IFBLK | 0o644, os.makedev(7, 0))
    os.mkfifo(tree / "usr/bin/fifo", 0o644)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tree / "usr/bin/sock"))
    sock.close()
    (tree / "usr/bin/sock").chmod(0o755)
    (tree / "usr/bin/suid").chmod(0o4755)
    (tree / "usr/bin/sgid").chmod(0o2755)
    (tree / "usr/bin/open").chmod(0o666)
    (tree / "usr/share/private").chmod(0o700)
    (tree / "usr/share/shared").chmod(0o775)
    (tree / "etc/private").chmod(0o700)  # not merged: no 0755 rule
    report = check(tree)
    assert codes(report) == [
        ("special-file", "usr/bin/fifo"),
        ("special-file", "usr/bin/loop"),
        ("special-file", "usr/bin/null"),
        ("unsafe-permissions", "usr/bin/open"),
        ("setuid", "usr/bin/sgid"),
        ("special-file", "usr/bin/sock"),
        ("setuid", "usr/bin/suid"),
        ("special-file", "usr/bin/whiteout"),
        ("contains-os-release", "usr/lib/os-release"),
        ("unsafe-permissions", "usr/share/private"),
        ("unsafe-permissions", "usr/share/shared"),
    ]
    messages = {p.path: p.message for p in others(report) if p.code != "unsafe-permissions"}
    assert "overlayfs whiteout" in messages["usr/bin/whiteout"]
    assert "whiteout" not in messages["usr/bin/null"]
    assert "setuid" in messages["usr/bin/suid"] and "setgid" in messages["usr/bin/sgid"]
    assert [(w.code, w.path) for w in report.warnings] == [("ignored-top-level-entry", "etc")]
    assert "etc/passwd" not in report.files and "usr/bin/sock" in report.files


@pytest.mark.privileged
@needs_root
def test_overlay_attributes(tmp_path: pathlib.Path) -> None:
    tree = make_tree(tmp_path, files={"usr/lib/x": b"", "extra/y": b""})
    try:
        os.setxattr(tree / "usr/lib", "trusted.overlay.opaque", b"y")
    except OSError:
        pytest.skip("this file system keeps no trusted xattrs")
    os.setxattr(tree / "usr/lib/x", "trusted.overlay.whiteout", b"")
    os.setxattr(tree / "extra/y", "trusted.overlay.opaque", b"y")  # never merged
    os.setxattr(tree / "usr/lib/x", "user.comment", b"harmless")
    report = check(tree)
    assert codes(report) == [("special-file", "usr/lib"), ("special-file", "usr/lib/x")]
    assert "trusted.overlay.opaque" in others(report)[0].message


def test_non_utf8_names(tmp_path: pathlib.Path) -> None:
    tree = make_tree(tmp_path)
    bad = os.fsencode(str(tree / "usr/bin")) + b"/caf\xe9"
    os.makedirs(os.path.dirname(bad))
    with open(bad, "wb") as f:
        f.write(b"")
    os.chmod(bad, 0o666)
    report = check(tree)
    assert codes(report) == [("unsafe-permissions", "usr/bin/caf\\xe9")]
    assert "usr/bin/caf\udce9" in report.files  # the exact bytes, for the placement check
    assert os.path.exists(os.path.join(tree, "usr/bin/caf\udce9"))


def test_invalid_name_still_reports_the_rest(tmp_path: pathlib.Path) -> None:
    name = "org.example.App.sysext"
    tree = make_tree(tmp_path, files={"usr/bin/x": b""})
    (tree / "usr/bin/x").chmod(0o777)
    assert codes(check(tree, name)) == [
        ("invalid-name", ""),
        ("missing-extension-release",
         "usr/lib/extension-release.d/extension-release.org.example.App.sysext"),
        ("unsafe-permissions", "usr/bin/x"),
    ]
    assert codes(check(tree, "a/b")) == [("invalid-name", ""), ("unsafe-permissions", "usr/bin/x")]


@pytest.mark.parametrize(("content", "code", "fragment"), ids=[
    "other-os", "architecture", "scope", "nul", "latin-1", "huge"], argvalues=[
    (b"ID=fedora\n", "incompatible-os", "ID=fedora but this host is ID=debian VERSION_ID=12"),
    (b"ID=_any\nARCHITECTURE=arm64\n", "incompatible-architecture", "ARCHITECTURE=arm64"),
    (b"ID=_any\nSYSEXT_SCOPE=portable\n", "incompatible-scope", "SYSEXT_SCOPE=portable"),
    (b"ID=debian\0\n", "missing-extension-release", "NUL byte"),
    (b"ID=d\xe9bian\n", "missing-extension-release", "not valid UTF-8"),
    (b"ID=_any\n" + b"#" * 70000, "missing-extension-release", "larger than 65536 bytes"),
])
def test_extension_release_content(tmp_path: pathlib.Path, content: bytes, code: str,
                                   fragment: str) -> None:
    [problem] = check(make_tree(tmp_path, release=content)).problems
    assert (problem.code, problem.path) == (code, RELEASE)
    assert fragment in problem.message


def test_comment_continuation_is_judged_both_ways(tmp_path: pathlib.Path) -> None:
    # systemd 252 reads "ID=debian" as part of the comment; 254 and later read it.
    report = check(make_tree(tmp_path, release=b"# note \\\nID=debian\nVERSION_ID=12\n"))
    assert codes(report) == [("incompatible-os", RELEASE)]
    assert [(w.code, w.path) for w in report.warnings] == [
        ("ambiguous-extension-release", RELEASE)]


# --- ELF binaries ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def binaries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    require_tools("gcc")
    work = tmp_path_factory.mktemp("gcc")
    (work / "hello.c").write_text('#include <stdio.h>\nint main(void) { puts("hi"); }\n')
    built = {}
    for name, flags in {"static": ["-static"], "static-pie": ["-static-pie"],
                        "dynamic": []}.items():
        subprocess.run(["gcc", "-O1", *flags, "-o", str(work / name), str(work / "hello.c")],
                       check=True)
        built[name] = (work / name).read_bytes()
    return built


def test_elf_verdicts_flow_through(tmp_path: pathlib.Path, binaries: dict[str, bytes]) -> None:
    tree = make_tree(tmp_path, files={"usr/bin/static": binaries["static"],
                                      "usr/bin/static-pie": binaries["static-pie"],
                                      "usr/libexec/dynamic": binaries["dynamic"],
                                      "opt/app/broken": binaries["static"][:200],
                                      "extra/dynamic": binaries["dynamic"]})
    report = check(tree)
    assert codes(report) == [("malformed-elf", "opt/app/broken"),
                             ("dynamic-elf", "usr/libexec/dynamic")]
    assert "libc.so.6" in report.problems[1].message
    assert [w.path for w in report.warnings] == ["extra"]  # never merged, so not judged


# --- hostile shapes: depth, size, changes under the walk -------------------------------

@pytest.fixture
def fast_tmp(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    """A directory in memory where there is one: these trees cost disk I/O, not CPU."""
    if not os.access("/dev/shm", os.W_OK):
        yield tmp_path
        return
    path = pathlib.Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_deep_tree(fast_tmp: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    depth = 10_000
    tree = make_tree(fast_tmp)
    fd = os.open(tree / "usr", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(depth):
            os.mkdir("d", dir_fd=fd)
            new = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = new
            if level % 1000 == 999:
                os.close(os.open("f", os.O_CREAT | os.O_WRONLY, 0o666, dir_fd=fd))
                os.chmod("f", 0o666, dir_fd=fd)
        os.close(fd)
        fds = [_open_fds()]
        # The walk's own cost, beyond the bounds every tree is held to (rules).
        from flatpak_sysext.rules import ruleset

        monkeypatch.setattr(ruleset, "MAX_DEPTH", depth + 1)
        monkeypatch.setattr(ruleset, "MAX_PATH", 3 * depth)

        def counting_judge(f: BinaryIO, target: elf.ElfTarget,
                           glibc: object = None) -> tuple[str, str] | None:
            fds.append(_open_fds())
            return None

        monkeypatch.setattr(elf, "judge", counting_judge)
        tracemalloc.start()
        try:
            report = check(tree)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        # Holding each level's path would take depth² = 100 MB here.
        assert peak < 10 * 1024 * 1024, peak
        bottom = "usr/" + "d/" * depth + "f"
        found = others(report)
        assert len(found) == depth // 1000
        assert found[-1] == Problem("unsafe-permissions", bottom, found[-1].message)
        assert bottom in report.files and len(report.files) == depth // 1000 + 1
        assert max(fds) - fds[0] <= 4  # the directory, the file, and the root's
    finally:
        _remove_chain(tree / "usr", depth)


def _remove_chain(top: pathlib.Path, depth: int) -> None:
    # shutil.rmtree recurses: it cannot remove 10,000 levels.
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        new = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = new
    for _ in range(depth):
        parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = parent
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        for name in os.listdir(child):
            if name != "d":
                os.unlink(name, dir_fd=child)
        os.close(child)
        os.rmdir("d", dir_fd=fd)
    os.close(fd)


def test_many_files(fast_tmp: pathlib.Path) -> None:
    tree = make_tree(fast_tmp)
    for d in range(50):
        sub = tree / "usr/share/many" / str(d)
        sub.mkdir(parents=True)
        fd = os.open(sub, os.O_RDONLY | os.O_DIRECTORY)
        for i in range(400):
            os.mknod(str(i), stat.S_IFREG | 0o644, dir_fd=fd)  # fast: no descriptor
        os.close(fd)
    (tree / "usr/share/many/7/123").chmod(0o4755)
    report = check(tree)
    assert codes(report) == [("setuid", "usr/share/many/7/123")]
    assert len(report.files) == 50 * 400 + 1


def test_problems_per_code_are_bounded(tmp_path: pathlib.Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(findings, "MAX_PER_CODE", 3)
    tree = make_tree(tmp_path)
    for i in range(5):
        (tree / f"usr/{i}").write_bytes(b"")
        (tree / f"usr/{i}").chmod(0o777)
    assert codes(check(tree)) == [("unsafe-permissions", f"usr/{i}") for i in range(3)] + [
        ("unsafe-permissions", "")]
    assert check(tree).problems[-1].message == "and 2 more unsafe-permissions problems, not listed"


def test_directory_moved_during_walk(tmp_path: pathlib.Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    tree = make_tree(tmp_path, files={"usr/a/b/file": b""})
    (tree / "usr/c").mkdir()
    real = elf.judge

    def moving_judge(f: BinaryIO, target: elf.ElfTarget, glibc: object = None) -> Any:
        os.rename(tree / "usr/a/b", tree / "usr/c/b")  # ".." of b is now usr/c
        return real(f, target)

    monkeypatch.setattr(elf, "judge", moving_judge)
    with pytest.raises(validate.TreeChanged):
        check(tree)


# --- placement --------------------------------------------------------------------------

def test_check_placement(tmp_path: pathlib.Path) -> None:
    host = tmp_path / "host"
    (host / "usr/bin").mkdir(parents=True)
    (host / "usr/bin/tool").write_bytes(b"")
    (host / "usr/share/doc").mkdir(parents=True)
    (host / "usr/lib").mkdir()
    os.symlink("lib", host / "usr/lib64")
    (host / "usr/bin/ours").write_bytes(b"")  # shown by one of our merged extensions
    files = ["usr/bin/tool", "usr/bin/new", "usr/share/doc", "usr/lib64/libx.so",
             "usr/lib64/sub/y", "usr/bin/ours", "usr/share/a/b", "usr/share/c"]
    others = {"org.b.App": frozenset({"usr/bin/new", "usr/share/a"}),
              "org.c.App": ["usr/share/c/d"]}
    problems = check_placement(files, str(host), {"usr/bin/ours"}, others)
    assert [(p.code, p.path) for p in problems] == [
        ("shadows-host-file", "usr/lib64"),
        ("shadows-host-file", "usr/bin/tool"),
        ("shadows-host-file", "usr/share/doc"),
        ("conflicts-with-extension", "usr/share/a"),
        ("conflicts-with-extension", "usr/bin/new"),
        ("conflicts-with-extension", "usr/share/c"),
    ]
    messages = [p.message for p in problems]
    assert "the host's /usr/lib64 is a symlink" in messages[0]
    assert "is a directory: merged, this would hide everything" in messages[2]
    assert "is a directory here but a file in org.b.App" in messages[3]
    assert "org.b.App provides it too" in messages[4]
    assert "is a file here but a directory in org.c.App" in messages[5]
    assert check_placement([], str(host), (), {}) == []


def test_placement_of_a_real_tree(tmp_path: pathlib.Path) -> None:
    tree = make_tree(tmp_path / "tree", files={"usr/bin/sh": b"#!/bin/sh\n"})
    problems = check_placement(check(tree).files, "/", set(), {})
    assert [(p.code, p.path) for p in problems] == [("shadows-host-file", "usr/bin/sh")]


def test_bounds_on_a_tree(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flatpak_sysext.rules import ruleset

    deep = "usr/" + "/".join(f"d{i}" for i in range(ruleset.MAX_DEPTH)) + "/f"
    tree = make_tree(tmp_path / "deep", files={deep: b""})
    # The directory one level too deep is reported and not entered.
    assert codes(check(tree)) == [("too-deep", deep.rsplit("/", 1)[0])]
    long_name = "usr/share/" + "/".join(["n" * 200] * 6) + "/f"
    tree = make_tree(tmp_path / "long", files={long_name: b""})
    [(code, path)] = codes(check(tree))
    assert code == "path-too-long" and len(path) > ruleset.MAX_PATH >= len(path.rsplit("/", 1)[0])
    many = {f"usr/share/many/{i}": b"" for i in range(50)}
    tree = make_tree(tmp_path / "many", files=many)
    monkeypatch.setattr(ruleset, "MAX_ENTRIES", 40)
    report = check(tree)
    assert codes(report) == [("too-many-files", "")]
    assert len(report.files) < 40


@pytest.mark.privileged
@needs_root
def test_ownership_and_capabilities(tmp_path: pathlib.Path) -> None:
    tree = make_tree(tmp_path, files={"usr/bin/x": b"", "usr/bin/y": b""})
    os.chown(tree / "usr/bin/x", 65534, 65534)
    # cap_net_raw, permitted: what `setcap cap_net_raw=p` writes (VFS_CAP_REVISION_2).
    os.setxattr(tree / "usr/bin/y", "security.capability",
                struct.pack("<5I", 0x02000000, 1 << 13, 0, 0, 0))
    assert codes(check(tree)) == [("not-owned-by-root", "usr/bin/x"),
                                  ("file-capabilities", "usr/bin/y")]
    # A developer's own build tree (check): ownership is only a warning.
    report = validate_tree(tree, APP, HOST, TARGET, installed=False)
    assert codes(report) == [("file-capabilities", "usr/bin/y")]
    assert [(w.code, w.path) for w in report.warnings] == [("not-owned-by-root", "usr/bin/x")]
