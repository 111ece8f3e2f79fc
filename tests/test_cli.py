# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The command line: exit codes, and JSON output that matches the shipped schemas."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from flatpak_sysext.rules import ruleset
from testsupport.flatpak import FlatpakEnv, compile_c, daemon_tree, schema, write_release

APP = "org.fsx.Profiler"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flatpak_sysext", *args], capture_output=True,
                          text=True, env=env)


def test_schemas_are_valid_draft7() -> None:
    for name in ("config", "check", "status", "reconcile"):
        jsonschema.Draft7Validator.check_schema(schema(name))


@pytest.mark.privileged
def test_status_and_reconcile_json_match_their_schemas(fenv: FlatpakEnv) -> None:
    fenv.publish(APP, daemon_tree(APP, "v1"))
    fenv.publish("org.fsx.Bad", daemon_tree("org.fsx.Bad", "x", static=False))
    fenv.install(APP)
    fenv.install("org.fsx.Bad")
    fenv.target_dir.mkdir(exist_ok=True)
    (fenv.target_dir / "other.raw").write_bytes(b"")
    dry = fenv.sysext("reconcile", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    doc = json.loads(dry.stdout)
    jsonschema.validate(doc, schema("reconcile"))
    jsonschema.validate(doc["extensions"], schema("status"))
    assert doc["dry_run"] is True
    assert doc["actions"] == [f"link {APP} -> {fenv.snapshot(APP)}"]
    assert not (fenv.target_dir / APP).exists()

    real = fenv.sysext("reconcile", "--json")
    assert real.returncode == 0
    doc = json.loads(real.stdout)
    jsonschema.validate(doc, schema("reconcile"))
    commit = doc["extensions"][1]["commit"][:12]
    assert commit == fenv.commit(APP)[:12]
    # The trigger judged org.fsx.Bad at install time, but in the sandbox: the service
    # trusts no verdict it did not reach itself, so that one is news to it too.
    assert doc["changes"][0] == f"{APP}: linked, commit {commit}"
    assert [c.split(":")[:2] for c in doc["changes"][1:]] == [["org.fsx.Bad", " rejected"]]
    again = json.loads(fenv.sysext("reconcile", "--json").stdout)
    assert again["changes"] == []

    states = {name: i["state"] for name, i in fenv.status().items()}
    assert states == {APP: "linked", "org.fsx.Bad": "rejected", "other.raw": "foreign"}


def test_check_exit_codes_and_json(tmp_path: Path) -> None:
    good = tmp_path / "good"
    write_release(good, "org.fsx.Good")
    (good / "usr/bin").mkdir(parents=True)
    compile_c(r'int main(void){return 0;}', good / "usr/bin/gooddaemon", "-static")
    for d in [good, *good.rglob("*")]:
        if d.is_dir():
            d.chmod(0o755)
    result = run("check", str(good), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, schema("check"))
    assert doc["name"] == "org.fsx.Good" and doc["accepted"] is True

    compile_c(r'int main(void){return 0;}', good / "usr/bin/dynamic")
    result = run("check", str(good), "--json")
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, schema("check"))
    problems = [(p["code"], p["path"]) for p in doc["problems"]]
    assert problems == [("dynamic-elf", "usr/bin/dynamic")]
    text = run("check", str(good))
    assert text.returncode == 1 and "dynamic-elf: usr/bin/dynamic" in text.stdout

    # Naming: the single extension-release suffix, or --name; two files is a usage error.
    write_release(good, "org.fsx.Second")
    ambiguous = run("check", str(good))
    assert ambiguous.returncode == 2 and "--name" in ambiguous.stderr
    named = run("check", str(good), "--name", "org.fsx.Second", "--json")
    assert json.loads(named.stdout)["name"] == "org.fsx.Second"


@pytest.mark.parametrize("args", [[], ["bogus"], ["check"], ["reconcile", "--no-such-flag"],
                                  ["check", "/nonexistent/tree"]])
def test_usage_errors_exit_2_without_traceback(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("flatpak-sysext:")


def test_trigger_is_silent_for_non_root_and_unknown_installations(tmp_path: Path) -> None:
    env = dict(os.environ, FLATPAK_SYSTEM_DIR=str(tmp_path / "system"),
               FLATPAK_CONFIG_DIR=str(tmp_path / "etc"),
               FLATPAK_SYSEXT_STATE_DIR=str(tmp_path / "state"))
    result = run("trigger", str(tmp_path / "not-an-installation"), env=env)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_check_judges_against_the_os_release_it_is_given(tmp_path: Path) -> None:
    """``--os-release FILE`` means what SYSTEMD_OS_RELEASE means; the output names the
    file the verdict was reached against, given or not."""
    tree = tmp_path / "tree"
    write_release(tree, "org.fsx.Target", "ID=fsxtest\n")
    for d in [tree, *tree.rglob("*")]:
        if d.is_dir():
            d.chmod(0o755)
    target = tmp_path / "os-release"
    target.write_text("ID=fsxtest\n")
    env = {k: v for k, v in os.environ.items() if k != "SYSTEMD_OS_RELEASE"}

    given = run("check", str(tree), "--os-release", str(target), "--json", env=env)
    assert given.returncode == 0, given.stdout + given.stderr
    doc = json.loads(given.stdout)
    jsonschema.validate(doc, schema("check"))
    assert doc["accepted"] is True and doc["os_release"] == str(target)
    text = run("check", str(tree), "--os-release", str(target), env=env)
    assert text.returncode == 0
    assert f"compatibility judged against {target}\n" in text.stdout

    # Without it: this host, whose os-release does not say ID=fsxtest.
    host = next(p for p in ("/etc/os-release", "/usr/lib/os-release") if os.path.exists(p))
    mine = run("check", str(tree), "--json", env=env)
    assert mine.returncode == 1
    doc = json.loads(mine.stdout)
    jsonschema.validate(doc, schema("check"))
    assert doc["os_release"] == host
    assert [p["code"] for p in doc["problems"]] == ["incompatible-os"]
    assert f"compatibility judged against {host}\n" in run("check", str(tree), env=env).stdout

    missing = run("check", str(tree), "--os-release", str(tmp_path / "none"), env=env)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert f"--os-release {tmp_path / 'none'}" in missing.stderr


def test_check_applies_the_services_byte_bound(tmp_path: Path) -> None:
    # The service copies nothing of a tree past ruleset.MAX_BYTES (apparent size: a sparse
    # file counts what it claims); check says so before a developer publishes it.
    tree = tmp_path / "big"
    write_release(tree, "org.fsx.Big")
    (tree / "usr/share/org.fsx.Big").mkdir(parents=True)
    with open(tree / "usr/share/org.fsx.Big/data", "wb") as f:
        f.truncate(ruleset.MAX_BYTES - 4096)
    for d in [tree, *tree.rglob("*")]:
        d.chmod(0o755 if d.is_dir() else 0o644)
    under = run("check", str(tree))
    assert under.returncode == 0, under.stdout  # under the bound: copied
    with open(tree / "usr/share/org.fsx.Big/more", "wb") as f:
        f.truncate(4096)
    (tree / "usr/share/org.fsx.Big/more").chmod(0o644)
    result = run("check", str(tree), "--json")
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, schema("check"))
    assert result.returncode == 1
    assert [p["code"] for p in doc["problems"]] == ["tree-too-large"]
