# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""What ``check`` tells an app developer who gets something wrong the first time: the
names that would pass, one problem for one cause, programs that are nowhere, what a
D-Bus activation file is, and where the extension is when ``check`` is given the app."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

from flatpak_sysext import cli
from flatpak_sysext.rules import classes, codes, contain, findings
from testsupport.containment import SYSPROF, SYSPROF_FILES, judge, refused, tree


@pytest.fixture(autouse=True)
def _umask() -> object:
    old = os.umask(0o022)
    yield
    os.umask(old)


def _renamed(files: dict[str, bytes], old: str, new: str) -> dict[str, bytes]:
    return {(new if path == old else path): data for path, data in files.items()}


UNIT = "usr/lib/systemd/system/sysprof3.service"


def test_a_unit_refusal_lists_names_that_pass_and_each_of_them_passes(
        tmp_path: pathlib.Path) -> None:
    report = judge(tree(tmp_path, _renamed(SYSPROF_FILES, UNIT,
                                           "usr/lib/systemd/system/profiler.service")))
    [problem] = contain.restricted_problems(report.restricted, frozenset(), SYSPROF)
    samples = classes.Namer(SYSPROF).samples(".service")
    assert f"names that pass: {', '.join(samples)}." in problem.message
    assert len(samples) == 5
    for i, sample in enumerate(samples):
        name = sample.replace("*", "helper")
        fixed = judge(tree(tmp_path / str(i), _renamed(
            SYSPROF_FILES, UNIT, f"usr/lib/systemd/system/{name}")))
        assert refused(fixed) == set(), name
    # Without the app ID (as before), only the administrator's way out is named.
    [bare] = contain.restricted_problems(report.restricted, frozenset())
    assert "names that pass" not in bare.message


def test_each_naming_class_says_what_passes() -> None:
    namer = classes.Namer("org.example.App")
    for cls, path in [("dbus-foreign-names", "usr/share/dbus-1/system.d/x.conf"),
                      ("foreign-polkit-actions", "usr/share/polkit-1/actions/x.policy"),
                      ("tmpfiles-foreign-paths", "usr/lib/tmpfiles.d/x.conf"),
                      ("sysusers-privileges", "usr/lib/sysusers.d/x.conf")]:
        [p] = contain.restricted_problems([(cls, (path,))], frozenset(), namer.given)
        assert "pass: " in p.message and "org.example.App" in p.message, cls


def test_a_dbus_activation_file_is_not_called_a_policy(tmp_path: pathlib.Path) -> None:
    service = "usr/share/dbus-1/system-services/org.gnome.Sysprof3.service"
    files = {**SYSPROF_FILES, service: SYSPROF_FILES[service].replace(
        b"Name=org.gnome.Sysprof3", b"Name=org.freedesktop.login1")}
    report = judge(tree(tmp_path, files))
    problems = {p.path: p.message
                for p in contain.restricted_problems(report.restricted, frozenset(), SYSPROF)}
    assert "D-Bus activation file" in problems[service]
    assert "policy" not in problems[service].split("(class")[0]


def test_a_wrong_name_is_one_problem(tmp_path: pathlib.Path) -> None:
    root = tree(tmp_path, {**SYSPROF_FILES, "usr/lib/org.gnome.Sysprof/data": b"x"})
    report = judge(root, "org.example.Other")
    everything = report.problems + tuple(
        contain.restricted_problems(report.restricted, frozenset(), "org.example.Other"))
    assert [p.code for p in everything] == [codes.MISSING_EXTENSION_RELEASE]
    # The units, D-Bus files, polkit actions and private directory named for Sysprof.
    assert "5 more of its files" in everything[0].message
    assert SYSPROF in everything[0].message
    # A cause of its own is still listed.
    bad = tree(tmp_path / "bad", {**SYSPROF_FILES, "usr/lib/sysctl.d/x.conf": b"a=1\n"})
    assert ("restricted-content", "usr/lib/sysctl.d/x.conf") in refused(
        judge(bad, "org.example.Other"))


def test_a_program_in_neither_the_tree_nor_the_host_is_a_warning(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    unit = SYSPROF_FILES[UNIT].replace(b"ExecStart=/usr/libexec/sysprofd",
                                       b"ExecStart=/usr/libexec/sysprofd\n"
                                       b"ExecStartPre=-/bin/true\n"
                                       b"ExecStartPost=/app/libexec/sysprofd --now\n"
                                       b"ExecReload=%S/x")
    root = tree(tmp_path, {**SYSPROF_FILES, UNIT: unit})
    warnings = findings.missing_programs(judge(root), os.path.lexists)
    assert [(w.code, w.path) for w in warnings] == [(codes.MISSING_PROGRAM, UNIT)]
    assert "ExecStartPost=/app/libexec/sysprofd" in warnings[0].message
    assert cli.main(["check", "--json", str(root)], {}) == 0
    out = json.loads(capsys.readouterr().out)
    assert [w["code"] for w in out["warnings"]] == [codes.MISSING_PROGRAM]
    # The same program, shipped where the merged tree puts it, is found.
    assert findings.missing_programs(judge(tree(tmp_path / "ok", SYSPROF_FILES)),
                                     lambda _: False) == []


@pytest.mark.parametrize("below", ["lib/extensions", "files/lib/extensions"])
def test_check_on_the_apps_root_names_the_extension_below(
        tmp_path: pathlib.Path, below: str, capsys: pytest.CaptureFixture[str]) -> None:
    tree(tmp_path / below, SYSPROF_FILES)
    assert cli.main(["check", str(tmp_path)], {}) == 2
    assert f"check {tmp_path / below} " in capsys.readouterr().err


def test_one_problem_is_one_problem(tmp_path: pathlib.Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    root = tree(tmp_path, {**SYSPROF_FILES, "usr/lib/sysctl.d/x.conf": b"a=1\n"})
    assert cli.main(["check", str(root)], {}) == 1
    assert "rejected (1 problem)" in capsys.readouterr().out


@pytest.mark.parametrize(("unit", "passes"), [
    ("sshd.service", True),       # the last element and the daemon's d
    ("ssh.service", True),        # the last element
    ("ssh-agent.service", True),  # the last element, then a separator
    ("sshx.service", False),      # a plain prefix: another name altogether
    ("sshdd.service", False),     # one d, not any suffix
])
def test_the_daemons_d_is_the_one_suffix_a_short_unit_name_may_have(
        tmp_path: pathlib.Path, unit: str, passes: bool) -> None:
    # docs/reference.md, "The daemon's d is intended": org.example.Ssh may ship sshd.service
    # (a host's own sshd.service is then shadows-host-file), and nothing else past "ssh".
    app = "org.example.Ssh"
    body = b"[Service]\nExecStart=/usr/libexec/org.example.Ssh/sshd\n"
    report = judge(tree(tmp_path, {f"usr/lib/systemd/system/{unit}": body,
                                   "usr/libexec/org.example.Ssh/sshd": b"#!/bin/sh\n"}, app=app),
                   app)
    assert ("foreign-units" not in dict(report.restricted)) is passes, report.restricted


def test_check_says_what_names_a_tree_when_nothing_does(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["check", str(empty)], {}) == 2
    assert "has no usr/ or opt/: not a system extension tree" in capsys.readouterr().err

    unnamed = tmp_path / "unnamed"
    (unnamed / "usr/libexec").mkdir(parents=True)
    assert cli.main(["check", str(unnamed)], {}) == 2
    err = capsys.readouterr().err
    assert "no usr/lib/extension-release.d/extension-release.<APP ID>" in err
    assert "ID=_any" in err

    # Named for the daemon, not the app: said so, not three renames of D-Bus names.
    misnamed = tree(tmp_path / "misnamed", SYSPROF_FILES, app="sysprofd")
    assert cli.main(["check", str(misnamed)], {}) == 2
    err = capsys.readouterr().err
    assert "extension-release.sysprofd: the name after 'extension-release.' must be the " \
           "app's ID" in err
    assert "restricted-content" not in err
