# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The configuration file: every kind of bad file is one clear line and changes nothing,
the shipped example is the defaults, and the trigger's memo of a validated file is exact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flatpak_sysext import config
from testsupport.deployments import commit_deployment, deploy
from testsupport.flatpak import FlatpakEnv, daemon_tree
from testsupport.prerequisites import require
from testsupport.source import PACKAGE_DIR, SOURCE_ROOT, installed_trigger

APP = "org.fsx.Profiler"
APP2 = "org.fsx.Tracer"

Maker = Callable[[Path], None]


def text(content: str | bytes) -> Maker:
    def make(path: Path) -> None:
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return make


def directory(path: Path) -> None:
    path.mkdir()


def dangling(path: Path) -> None:
    path.symlink_to(path.parent / "nowhere.json")


def loop(path: Path) -> None:
    path.symlink_to(path.name)


def fifo(path: Path) -> None:
    os.mkfifo(path)


# (id, how to make the file, what the one line must say besides the file's name)
BAD: list[tuple[str, Maker, list[str]]] = [
    ("wrong-type", text('{"allow": "org.fsx.*"}'), ["'allow'", "not of type 'array'"]),
    ("wrong-item-type", text('{"deny": ["a", 5]}'), ["'deny[1]'"]),
    ("empty-glob", text('{"deny": [""]}'), ["'deny[0]'"]),
    ("bool-as-string", text('{"host_sync": "no"}'), ["'host_sync'", "true or false"]),
    ("remotes-string", text('{"remotes": "flathub"}'), ["'remotes'"]),
    ("unknown-key", text('{"dney": ["org.fsx.*"]}'), ["unknown key 'dney'", "'deny'"]),
    ("duplicate-key", text('{"deny": ["org.fsx.*"], "deny": []}'), ["'deny'", "more than once"]),
    ("broken-json", text('{"deny": ['), ["invalid JSON", "line 1"]),
    ("trailing-comma", text('{"deny": [],}'), ["invalid JSON"]),
    ("not-utf8", text(b'{"deny": ["org.fsx.\xe9"]}'), ["not UTF-8"]),
    ("empty-file", text(""), ["empty file"]),
    ("whitespace-only", text(" \n"), ["empty file"]),
    ("top-level-array", text("[]"), ["top level", "object"]),
    ("top-level-null", text("null"), ["top level", "object"]),
    ("empty-target-dir", text('{"target_dir": ""}'), ["'target_dir'", "absolute path"]),
    ("relative-target-dir", text('{"target_dir": "extensions"}'),
     ["'target_dir'", "absolute path"]),
    ("root-target-dir", text('{"target_dir": "//"}'), ["'target_dir'", "root directory"]),
    ("deeply-nested", text("[" * 100_000), ["nested too deeply"]),
    ("too-large", text(" " * (config.MAX_SIZE + 1)), ["larger than"]),
    ("directory", directory, ["cannot read", "directory"]),
    ("dangling-symlink", dangling, ["cannot open"]),
    ("symlink-loop", loop, ["cannot open"]),
    ("fifo", fifo, ["not a regular file"]),
]


@pytest.mark.parametrize(("make", "says"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_is_one_line_naming_file_and_key(tmp_path: Path, make: Maker,
                                                    says: list[str]) -> None:
    path = tmp_path / "config.json"
    make(path)
    with pytest.raises(config.ConfigError) as exc:
        config.load(str(path))
    message = str(exc.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    for word in says:
        assert word in message


def test_missing_file_is_the_defaults_unless_named_explicitly(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.json")
    assert config.load(path) == config.Config()
    with pytest.raises(config.ConfigError, match=r"absent\.json: cannot open"):
        config.load(path, must_exist=True)


def test_example_has_every_key_with_its_default() -> None:
    example = SOURCE_ROOT / "examples" / "config.json"
    schema = json.loads((PACKAGE_DIR / config.SCHEMA).read_text())
    data = json.loads(example.read_text())
    assert set(data) == set(schema["properties"])
    assert data == {k: v["default"] for k, v in schema["properties"].items()}
    assert config.load(str(example)) == config.Config()


def test_every_key_is_read(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({
        "target_dir": "/run/extensions/", "allow": ["org.*"], "deny": ["org.bad.*"],
        "remotes": ["flathub"], "require_gpg_verified_remote": False,
        "allow_host_shadowing": True, "host_sync": False}))
    assert config.load(str(path)) == config.Config(
        target_dir="/run/extensions", allow=("org.*",), deny=("org.bad.*",),
        remotes=("flathub",), require_gpg_verified_remote=False, allow_host_shadowing=True,
        host_sync=False)


@pytest.mark.parametrize(("target", "warned", "says"), [
    ("/var/lib/extensions", False, ""),
    ("/etc/extensions", False, ""),
    ("/run/extensions", False, ""),
    ("/usr/lib/extensions", True, "only up to v253"),
    ("/usr/local/lib/extensions", True, "only up to v253"),
    ("/srv/extensions", True, "not a systemd-sysext search directory"),
])
def test_target_dir_warning(target: str, warned: bool, says: str) -> None:
    warning = config.target_dir_warning(config.Config(target_dir=target))
    assert (warning is not None) == warned
    assert says in (warning or "")


# The memo: the trigger skips jsonschema for bytes it has validated before.

def load_in_child(path: Path, memo: Path) -> tuple[str, bool]:
    """Load in a fresh interpreter: (the Config or the error, whether jsonschema got imported)."""
    code = ("import sys\nfrom flatpak_sysext import config\n"
            "try:\n    print(config.load(sys.argv[1], memo_dir=sys.argv[2]))\n"
            "except config.ConfigError as e:\n    print(e)\n"
            "print('jsonschema' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code, str(path), str(memo)], check=True,
                         capture_output=True, text=True).stdout.splitlines()
    return out[0], out[1] == "True"


def test_memo_skips_jsonschema_only_for_the_same_bytes(tmp_path: Path) -> None:
    path, memo = tmp_path / "config.json", tmp_path / "state"
    path.write_text('{"deny": ["org.bad.*"]}')
    first, imported = load_in_child(path, memo)
    assert imported and "deny=('org.bad.*',)" in first
    assert (memo / config.MEMO_NAME).is_file()
    again, imported = load_in_child(path, memo)
    assert again == first and not imported

    # Same size, same mtime, different bytes: a typo made in place is still caught.
    st = path.stat()
    path.write_text('{"dney": ["org.bad.*"]}')
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    error, imported = load_in_child(path, memo)
    assert imported and "unknown key 'dney'" in error
    # A failed validation leaves no memo behind that could vouch for it.
    error, imported = load_in_child(path, memo)
    assert imported and "unknown key 'dney'" in error


def test_memo_is_discarded_when_corrupt_or_for_another_schema(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, memo = tmp_path / "config.json", tmp_path / "state"
    path.write_text('{"host_sync": false}')
    config.load(str(path), memo_dir=str(memo))
    good = (memo / config.MEMO_NAME).read_bytes()
    for junk in (b"", b"\xff" * 300, b"0" * 64 + b"\n"):
        (memo / config.MEMO_NAME).write_bytes(junk)
        assert load_in_child(path, memo)[1], junk
        assert (memo / config.MEMO_NAME).read_bytes() == good

    # A package update that changes the schema invalidates every memo.
    real = config._schema_text()
    schema = json.loads(real)
    del schema["properties"]["host_sync"]
    monkeypatch.setattr(config, "_schema_text", lambda: json.dumps(schema).encode())
    with pytest.raises(config.ConfigError, match="unknown key 'host_sync'"):
        config.load(str(path), memo_dir=str(memo))


def test_unwritable_memo_dir_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{}")
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert config.load(str(path), memo_dir=str(blocker / "state")) == config.Config()


# Through the command line and the trigger: nothing on the host changes. A hand-made
# installation is enough for that (and ten times quicker than flatpak); a real
# transaction is below.

class HandMadeInstallation:
    """A system installation written by hand: APP linked by a reconcile, APP2 deployed
    since and waiting, so that any run that read a config would act."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.inst = root / "inst"
        self.target = root / "extensions"
        confdir = root / "etc-flatpak"
        confdir.mkdir(parents=True)
        config_file = root / "config.json"
        config_file.write_text(json.dumps({"target_dir": str(self.target), "host_sync": False,
                                           "require_gpg_verified_remote": False,
                                           "allow": ["*"]}))
        self.env = dict(os.environ) | {"FLATPAK_SYSTEM_DIR": str(self.inst),
                                       "FLATPAK_CONFIG_DIR": str(confdir),
                                       "FLATPAK_SYSEXT_CONFIG": str(config_file),
                                       "FLATPAK_SYSEXT_STATE_DIR": str(root / "state")}
        self.deploy(APP, "a" * 64)
        result = self.sysext("reconcile")
        assert (result.returncode, result.stdout.split(",")[0]) == (0, f"{APP}: linked"), \
            result.stderr
        self.deploy(APP2, "b" * 64)

    def deploy(self, app: str, commit: str) -> None:
        """Deploy ``app`` at ``commit`` with a valid, empty extension."""
        files = deploy(self.inst, commit, app=app) / "files"
        release = files / "ext/usr/lib/extension-release.d"
        release.mkdir(parents=True)
        (release / f"extension-release.{app}").write_text("ID=_any\n")
        commit_deployment(self.inst, files.parent, app)

    def sysext(self, *args: str, env: dict[str, str] | None = None,
               ) -> subprocess.CompletedProcess[str]:
        """Run the command line as an admin would."""
        return subprocess.run([sys.executable, "-m", "flatpak_sysext", *args],
                              env=self.env if env is None else env, capture_output=True,
                              text=True)

    def snapshot(self) -> dict[str, Any]:
        """The target directory and our state files, byte for byte and inode for inode."""
        def tree(d: Path) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for p in sorted(d.rglob("*")) if d.exists() else []:
                st = p.lstat()
                data = os.readlink(p) if p.is_symlink() else (
                    p.read_bytes() if p.is_file() else None)
                out[str(p.relative_to(d))] = (st.st_ino, st.st_mode, st.st_mtime_ns, data)
            return out
        return {"target": tree(self.target), "state": tree(self.inst / "flatpak-sysext"),
                "service": tree(self.root / "state")}


@pytest.fixture(scope="module")
def linked_installation(tmp_path_factory: pytest.TempPathFactory) -> HandMadeInstallation:
    return HandMadeInstallation(tmp_path_factory.mktemp("config"))


@pytest.mark.parametrize(("make", "says"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_changes_nothing(linked_installation: HandMadeInstallation, tmp_path: Path,
                                    make: Maker, says: list[str]) -> None:
    inst = linked_installation
    bad = tmp_path / "bad.json"
    make(bad)
    env = inst.env | {"FLATPAK_SYSEXT_CONFIG": str(bad)}
    before = inst.snapshot()
    assert before["target"] and before["service"]
    line = None
    for command in (["reconcile"], ["reconcile", "--dry-run"], ["status"], ["status", "--json"]):
        result = inst.sysext(*command, env=env)
        assert (result.returncode, result.stdout) == (2, ""), (command, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        line = line or result.stderr
        assert result.stderr == line, command
    assert line is not None and line.startswith(f"flatpak-sysext: {bad}: ")
    for word in says:
        assert word in line
    # --config names the file explicitly: the same line.
    result = inst.sysext("reconcile", "--config", str(bad))
    assert (result.returncode, result.stderr) == (2, line)
    assert inst.snapshot() == before


@pytest.mark.privileged
@pytest.mark.parametrize("make", [b[1] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_in_the_trigger_is_the_same_line_on_stdout(
        linked_installation: HandMadeInstallation, tmp_path: Path, make: Maker) -> None:
    """The trigger, run by hand where it could write the target directory, says what the
    command line says, on stdout, and never fails the transaction."""
    require(os.geteuid() == 0, "the trigger only acts as root")
    inst = linked_installation
    bad = tmp_path / "bad.json"
    make(bad)
    env = inst.env | {"FLATPAK_SYSEXT_CONFIG": str(bad)}
    line = inst.sysext("status", env=env).stderr
    trigger = tmp_path / "flatpak-sysext.trigger"
    trigger.write_text(installed_trigger(sys.executable))
    trigger.chmod(0o755)
    before = inst.snapshot()
    result = subprocess.run([str(trigger), str(inst.inst)], env=env, capture_output=True,
                            text=True)
    assert (result.returncode, result.stdout, result.stderr) == (0, line, "")
    assert inst.snapshot() == before


def test_explicit_missing_config_is_an_error(linked_installation: HandMadeInstallation) -> None:
    inst = linked_installation
    before = inst.snapshot()
    result = inst.sysext("reconcile", "--config", str(inst.root / "typo.json"))
    assert result.returncode == 2
    assert result.stderr == f"flatpak-sysext: {inst.root / 'typo.json'}: cannot open: " \
        "file or symlink target missing\n"
    assert inst.snapshot() == before


@pytest.mark.privileged
def test_bad_config_during_a_real_transaction(fenv: FlatpakEnv) -> None:
    fenv.config_file.write_text(json.dumps({"target_dir": str(fenv.target_dir), "dney": []}))
    fenv.publish(APP, daemon_tree(APP, "v1"))
    out = fenv.install(APP)  # Raises if flatpak failed: the trigger must not fail it.
    assert f"flatpak-sysext: {fenv.config_file}: unknown key 'dney'" in out.stdout
    assert not (fenv.system_dir / "flatpak-sysext" / "request").exists()
    assert not fenv.target_dir.exists()
    fenv.write_config({})
    result = fenv.sysext("reconcile")
    assert result.returncode == 0 and f"{APP}: linked" in result.stdout


@pytest.mark.privileged
def test_target_dir_warning_through_the_command_line(fenv: FlatpakEnv) -> None:
    fenv.publish(APP, daemon_tree(APP, "v1"))
    fenv.install(APP)
    # The sandboxed trigger could write its memo: the next ones skip jsonschema.
    assert (fenv.system_dir / "flatpak-sysext" / config.MEMO_NAME).is_file()
    warning = config.target_dir_warning(config.Config(target_dir=str(fenv.target_dir)))
    assert warning is not None
    trigger = fenv.install_trigger()
    first = fenv.run(str(trigger), str(fenv.system_dir))
    assert first.stdout == f"flatpak-sysext: {APP}: linked, commit " \
        f"{first.stdout.split('commit ')[1][:12]}\nflatpak-sysext: warning: {warning}\n"
    # Nothing changed: the trigger stays quiet; reconcile and status still warn.
    assert fenv.run(str(trigger), str(fenv.system_dir)).stdout == ""
    again = fenv.sysext("reconcile")
    assert (again.returncode, again.stdout, again.stderr) == (0, "", f"warning: {warning}\n")
    assert f"warning: {warning}" in fenv.sysext("status").stdout
    doc = json.loads(fenv.sysext("reconcile", "--json").stdout)
    assert doc["warnings"] == [warning]
