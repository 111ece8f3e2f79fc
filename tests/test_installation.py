# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Reading installations: key files, deploy files, and resolving the declared path."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flatpak_sysext.flatpak import deployfile, installation, keyfile, layout
from flatpak_sysext.flatpak.installation import Declared, Installation, Unreadable
from testsupport.deployments import gvariant_deploy


def test_deploy_file_round_trip() -> None:
    data = gvariant_deploy("flathub", "a" * 64, ["/lib", "/share"])
    assert deployfile.parse(data) == deployfile.DeployInfo("flathub", "a" * 64,
                                                           ("/lib", "/share"))


@pytest.mark.parametrize("data", [b"", b"\x00\x00\x00", b"abc\x05\x04\x03",
                                  gvariant_deploy("o", "c", [])[:-1] + b"\xff"])
def test_malformed_deploy_files_are_rejected(data: bytes) -> None:
    with pytest.raises(deployfile.DeployFileError):
        deployfile.parse(data)


def test_keyfile_follows_gkeyfile() -> None:
    parsed = keyfile.parse(b"# c\n[Application]\nname = org.a.B\n\n[X-SystemExtension]\n"
                           b"path=lib\\sext\\\\x\nname[de]=y\n")
    assert parsed == {"Application": {"name": "org.a.B"},
                      "X-SystemExtension": {"path": "lib ext\\x", "name[de]": "y"}}


@pytest.mark.parametrize("data", [b"key=outside\n", b"[open\n", b"[G]\nnovalue\n",
                                  b"[G]\nk=\\q\n", b"[G]\nk=\xff\n"])
def test_malformed_keyfiles_are_rejected(data: bytes) -> None:
    with pytest.raises(keyfile.KeyFileError):
        keyfile.parse(data)


def make_deployment(base: Path, app: str = "org.a.B", meta: str = "") -> Path:
    active = "b" * 64
    ref = base / "app" / app / "x86_64" / "stable"
    dep = ref / active
    (dep / "files").mkdir(parents=True)
    os.symlink("x86_64/stable", base / "app" / app / "current")
    os.symlink(active, ref / "active")
    (dep / "deploy").write_bytes(gvariant_deploy("origin", active, []))
    (dep / "metadata").write_text(f"[Application]\nname={app}\n\n{meta}")
    return dep


def read_one(base: Path) -> Declared | Unreadable | None:
    return installation.read_app(Installation("default", str(base)), "org.a.B")


@pytest.mark.parametrize(("declared", "layout", "code"), [
    ("/etc", None, "escapes-deployment"),
    ("../../..", None, "escapes-deployment"),
    ("lib/../../x", None, "escapes-deployment"),
    ("ext", ("ext", "/etc"), "escapes-deployment"),
    ("ext", ("ext", "../../../../../.."), "escapes-deployment"),
    ("ext/usr", ("ext", "/usr/lib/.."), "escapes-deployment"),
    ("missing", None, "not-a-directory"),
    ("afile", "file", "not-a-directory"),
])
def test_declared_paths_out_of_the_deployment_are_refused(
        tmp_path: Path, declared: str, layout: object, code: str) -> None:
    dep = make_deployment(tmp_path, meta=f"[X-SystemExtension]\npath={declared}\n")
    files = dep / "files"
    if isinstance(layout, tuple):
        os.symlink(layout[1], files / layout[0])
    elif layout == "file":
        (files / "afile").write_text("x")
    app = read_one(tmp_path)
    assert isinstance(app, Declared)
    assert app.root is None
    assert [p.code for p in app.problems] == [code]


def test_a_symlink_inside_the_deployment_is_resolved(tmp_path: Path) -> None:
    dep = make_deployment(tmp_path, meta="[X-SystemExtension]\npath=lib/extensions\n")
    (dep / "files/share/ext").mkdir(parents=True)
    (dep / "files/lib").mkdir()
    os.symlink("../share/ext", dep / "files/lib/extensions")
    app = read_one(tmp_path)
    assert isinstance(app, Declared) and app.problems == ()
    assert app.root == str((dep / "files/share/ext").resolve())


@pytest.mark.parametrize(("link", "target"), [
    ("current", "../../../etc"), ("current", "x86_64/stable/../../.."),
    ("active", "../../../../etc"), ("active", "/etc"),
])
def test_hostile_current_and_active_links_are_unreadable(
        tmp_path: Path, link: str, target: str) -> None:
    dep = make_deployment(tmp_path, meta="[X-SystemExtension]\n")
    where = dep.parent.parent.parent if link == "current" else dep.parent
    (where / link).unlink()
    os.symlink(target, where / link)
    assert isinstance(read_one(tmp_path), Unreadable)


def test_apps_without_the_group_and_runtimes_are_ignored(tmp_path: Path) -> None:
    make_deployment(tmp_path)
    assert read_one(tmp_path) is None
    assert installation.read_installation(Installation("default", str(tmp_path))) == []
    assert not layout.may_matter(str(tmp_path), "org.a.B")


@pytest.mark.parametrize("declares", [False, True])
def test_a_bad_deploy_file_matters_only_for_an_app_that_declares(
        tmp_path: Path, declares: bool) -> None:
    dep = make_deployment(tmp_path, meta="[X-SystemExtension]\n" if declares else "")
    (dep / "deploy").write_bytes(b"not a GVariant")
    found = read_one(tmp_path)
    assert isinstance(found, Unreadable) if declares else found is None
    assert layout.may_matter(str(tmp_path), "org.a.B") is declares


@pytest.mark.parametrize("how", ["bad metadata", "metadata is a symlink", "deployment is a symlink",
                                 "current escapes", "active not a commit"])
def test_what_cannot_be_read_may_matter(tmp_path: Path, how: str) -> None:
    dep = make_deployment(tmp_path)
    appdir = tmp_path / "app" / "org.a.B"
    if how == "bad metadata":
        (dep / "metadata").write_bytes(b"\xff")
    elif how == "metadata is a symlink":
        (dep / "metadata").rename(dep / "real-metadata")
        os.symlink("real-metadata", dep / "metadata")
    elif how == "deployment is a symlink":
        dep.rename(tmp_path / "moved")
        os.symlink(tmp_path / "moved", dep)
    elif how == "current escapes":
        (appdir / "current").unlink()
        os.symlink("../../..", appdir / "current")
    else:
        (dep.parent / "active").unlink()
        os.symlink("latest", dep.parent / "active")
    assert isinstance(read_one(tmp_path), Unreadable)
    assert layout.may_matter(str(tmp_path), "org.a.B")


# The names' grammars, as regular expressions: the oracle for layout's checks.
APP_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*){2,}")
BRANCH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
ACTIVE = re.compile(r"[0-9a-f]{64}(-[A-Za-z0-9_.-]+)?")
NAME_CHARS = "aZ_9-.\n/ é\0f"


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=NAME_CHARS, max_size=12), st.sampled_from(["", "0" * 64, "a" * 63]))
def test_name_checks_match_flatpaks_grammar(name: str, prefix: str) -> None:
    assert layout.valid_app_id(name) == bool(APP_ID.fullmatch(name))
    assert layout.valid_branch(name) == bool(BRANCH.fullmatch(name))
    assert layout.valid_active(prefix + name) == bool(ACTIVE.fullmatch(prefix + name))
    long = ".".join([name] * 3) + "x" * 250
    assert layout.valid_app_id(long) == (len(long) <= 255 and bool(APP_ID.fullmatch(long)))


def test_installations_d(tmp_path: Path) -> None:
    conf = tmp_path / "etc" / "installations.d"
    conf.mkdir(parents=True)
    (tmp_path / "extra").mkdir()
    (conf / "extra.conf").write_text(f'[Installation "extra"]\nPath={tmp_path}/extra\n')
    env = {"FLATPAK_SYSTEM_DIR": str(tmp_path / "sys"), "FLATPAK_CONFIG_DIR": str(tmp_path / "etc")}
    insts = installation.system_installations(env)
    assert [(i.id, i.path) for i in insts] == [("default", str(tmp_path / "sys")),
                                               ("extra", str(tmp_path / "extra"))]
    (conf / "broken.conf").write_text("Path=/x\n")
    with pytest.raises(installation.InstallationError, match=r"broken\.conf"):
        installation.system_installations(env)
