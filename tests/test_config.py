"""The configuration file: every kind of bad file is one clear line and changes nothing,
the shipped example is the defaults, and the trigger's memo of a validated file is exact."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flatpak_sysext import config
from testsupport.flatpak import FlatpakEnv, daemon_tree, have_flatpak
from testsupport.prerequisites import require
from testsupport.source import PACKAGE_DIR, SOURCE_ROOT

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


# Through the command line with a real installation: nothing on the host changes.

@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlatpakEnv]:
    """APP linked, APP2 installed and waiting: any run that reads a config would act."""
    require(have_flatpak(), "flatpak and bubblewrap are needed, as root")
    root = tmp_path_factory.mktemp("config") / "world"
    env = FlatpakEnv(root)
    env.publish(APP, daemon_tree(APP, "v1"))
    env.publish(APP2, daemon_tree(APP2, "v1"))
    env.install(APP)
    result = env.sysext("reconcile")
    assert result.returncode == 0, result.stderr
    env.install(APP2)
    yield env
    shutil.rmtree(root, ignore_errors=True)


def snapshot(env: FlatpakEnv) -> dict[str, Any]:
    """The target directory and our state files, byte for byte and inode for inode."""
    def tree(d: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in sorted(d.rglob("*")) if d.exists() else []:
            st = p.lstat()
            data = os.readlink(p) if p.is_symlink() else (
                p.read_bytes() if p.is_file() else None)
            out[str(p.relative_to(d))] = (st.st_ino, st.st_mode, st.st_mtime_ns, data)
        return out
    return {"target": tree(env.target_dir), "state": tree(env.system_dir / "flatpak-sysext")}


@pytest.mark.parametrize(("make", "says"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_changes_nothing(world: FlatpakEnv, make: Maker, says: list[str]) -> None:
    bad = world.root / "bad.json"
    if bad.is_dir() and not bad.is_symlink():
        bad.rmdir()
    elif bad.exists() or bad.is_symlink():
        bad.unlink()
    make(bad)
    env = world.env | {"FLATPAK_SYSEXT_CONFIG": str(bad)}
    before = snapshot(world)
    assert before["target"] and before["state"]
    line = None
    for command in (["reconcile"], ["reconcile", "--dry-run"], ["status"], ["status", "--json"]):
        result = subprocess.run([world.python, "-m", "flatpak_sysext", *command], env=env,
                                capture_output=True, text=True)
        assert (result.returncode, result.stdout) == (2, ""), (command, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        line = line or result.stderr
        assert result.stderr == line, command
    assert line is not None and line.startswith(f"flatpak-sysext: {bad}: ")
    for word in says:
        assert word in line
    # The trigger, run by hand where it could write the target directory, says the same
    # on stdout and never fails the transaction.
    trigger = world.install_trigger()
    result = subprocess.run([str(trigger), str(world.system_dir)], env=env,
                            capture_output=True, text=True)
    assert (result.returncode, result.stdout, result.stderr) == (0, line, "")
    # --config names the file explicitly: the same line.
    result = world.sysext("reconcile", "--config", str(bad))
    assert (result.returncode, result.stderr) == (2, line)
    assert snapshot(world) == before


def test_explicit_missing_config_is_an_error(world: FlatpakEnv) -> None:
    before = snapshot(world)
    result = world.sysext("reconcile", "--config", str(world.root / "typo.json"))
    assert result.returncode == 2
    assert result.stderr == f"flatpak-sysext: {world.root / 'typo.json'}: cannot open: " \
        "file or symlink target missing\n"
    assert snapshot(world) == before


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
        f"{first.stdout.split('commit ')[1][:12]}\nflatpak-sysext: {warning}\n"
    # Nothing changed: the trigger stays quiet; reconcile and status still warn.
    assert fenv.run(str(trigger), str(fenv.system_dir)).stdout == ""
    again = fenv.sysext("reconcile")
    assert (again.returncode, again.stdout, again.stderr) == (0, "", f"warning: {warning}\n")
    assert f"warning: {warning}" in fenv.sysext("status").stdout
    doc = json.loads(fenv.sysext("reconcile", "--json").stdout)
    assert doc["warnings"] == [warning]
