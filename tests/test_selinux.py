# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""SELinux labels on snapshots (docs/platform.md#selinux): a real ``setfiles`` against the
real file contexts of Debian's ``selinux-policy-default``, on this host whose kernel has
SELinux off (ext4 stores ``security.selinux`` all the same, for root). The enforcing
host itself is tests/test_selinux_vm.py."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import jsonschema
import pytest

from flatpak_sysext import cli, config, context, output, reconcile
from flatpak_sysext.flatpak import installation
from flatpak_sysext.report import TreeReport
from flatpak_sysext.rules import elf, selinux, validate
from flatpak_sysext.rules.release import Host
from testsupport.deployments import DECL, HandMadeInstallation
from testsupport.flatpak import schema
from testsupport.prerequisites import require, require_available

POLICY = Path("/etc/selinux/default/contexts/files/file_contexts")
APP = "org.example.Daemon"
DAEMON = f"usr/libexec/{APP}/daemon"
UNIT = "usr/lib/systemd/system/daemon-example.service"
DBUS = f"usr/share/dbus-1/system.d/{APP}.conf"
HOST = Host({"ID": "debian", "VERSION_ID": "12"}, "x86-64")
TARGET = elf.ElfTarget.host()

pytestmark = pytest.mark.privileged


def _prerequisites() -> None:
    require(os.geteuid() == 0, "writing security.selinux needs root")
    require_available(POLICY.is_file() and shutil.which("setfiles") is not None
                      and shutil.which("matchpathcon") is not None,
                      "selinux-policy-default, policycoreutils and selinux-utils are needed")


def host_root(tmp_path: Path, *, enforcing: str | None = "1") -> Path:
    """A host root whose selinuxfs says SELinux is on (``enforcing``: its enforce file;
    None: off), with this machine's SELinux configuration, policy and setfiles."""
    root = tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    os.symlink("/etc/selinux", root / "etc/selinux")
    (root / "usr/sbin").mkdir(parents=True)
    os.symlink(shutil.which("setfiles") or "", root / "usr/sbin/setfiles")
    if enforcing is not None:
        (root / "sys/fs/selinux").mkdir(parents=True)
        (root / "sys/fs/selinux/enforce").write_text(enforcing)
    return root


def snapshot(where: Path, extra: dict[str, str] | None = None) -> Path:
    """A tree like a daemon's snapshot: program, unit, D-Bus policy (and ``extra``)."""
    files = {DAEMON: "#!/bin/sh\n", UNIT: "[Service]\n", DBUS: "<busconfig/>\n",
             f"usr/lib/extension-release.d/extension-release.{APP}": "ID=_any\n",
             **(extra or {})}
    for rel, text in files.items():
        (where / rel).parent.mkdir(parents=True, exist_ok=True)
        (where / rel).write_text(text)
    return where


def label_of(path: Path) -> str:
    return os.getxattr(path, selinux.XATTR, follow_symlinks=False).rstrip(b"\0").decode()


def matchpathcon(rel: str, path: Path) -> str:
    mode = "dir" if path.is_dir() else "file"
    return subprocess.run(["matchpathcon", "-n", "-m", mode, "/" + rel], check=True,
                          capture_output=True, text=True).stdout.strip()


def test_a_snapshot_gets_the_labels_its_paths_have_under_root(tmp_path: Path) -> None:
    _prerequisites()
    root = host_root(tmp_path)
    snap = snapshot(tmp_path / "store/org.example.Daemon.0123")
    selinux.label_snapshot(str(snap), str(root))
    entries = sorted(p for p in snap.rglob("*"))
    assert entries
    for path in entries:
        rel = str(path.relative_to(snap))
        assert label_of(path) == matchpathcon(rel, path), rel
    assert label_of(snap / DAEMON).split(":")[2] == "bin_t"
    assert label_of(snap / UNIT).split(":")[2] == "systemd_unit_t"
    # The snapshot's own directory keeps what its place in the store gives it.
    with pytest.raises(OSError):
        os.getxattr(snap, selinux.XATTR)
    assert selinux.labels_state(str(snap), str(root)) == "current"


def test_without_selinux_nothing_is_labeled_and_nothing_is_needed(tmp_path: Path) -> None:
    _prerequisites()
    root = host_root(tmp_path, enforcing=None)
    (root / "usr/sbin/setfiles").unlink()  # not needed: it is never run
    snap = snapshot(tmp_path / "snap")
    selinux.label_snapshot(str(snap), str(root))
    assert not selinux.keep_labels(str(snap), str(root))
    for path in [snap, *snap.rglob("*")]:
        assert os.listxattr(path, follow_symlinks=False) == []
    assert selinux.fingerprint(str(root)) == ""
    assert selinux.status_lines(252, str(root)) == []
    assert selinux.app_line(str(snap), None, str(root)) is None


def test_permissive_labels_too_and_setfiles_is_then_required(tmp_path: Path) -> None:
    _prerequisites()
    root = host_root(tmp_path, enforcing="0")
    (root / "usr/sbin/setfiles").unlink()
    with pytest.raises(OSError, match="setfiles is not in /usr/sbin"):
        selinux.label_snapshot(str(snapshot(tmp_path / "snap")), str(root))


def test_a_relabel_of_var_is_noticed_and_undone(tmp_path: Path) -> None:
    _prerequisites()
    root = host_root(tmp_path)
    snap = snapshot(tmp_path / "snap")
    selinux.label_snapshot(str(snap), str(root))
    want = label_of(snap / DAEMON)
    # What `restorecon -R /var` does to the store.
    for path in [*snap.rglob("*")]:
        os.setxattr(path, selinux.XATTR, b"system_u:object_r:var_lib_t:s0\0",
                    follow_symlinks=False)
    assert selinux.labels_state(str(snap), str(root)) == "stale"
    assert selinux.status_lines(257, str(root)) == ["SELinux: enforcing, policy default"]
    assert selinux.app_line(str(snap), (("bin_t", (DAEMON,)),), str(root)) == \
        "SELinux enforcing: labels stale (labeled again at the next run), types generic"
    # systemd before 257 labels the merged /usr after its meta directory: a limit, told.
    old = selinux.status_lines(252, str(root))
    assert old[:1] == ["SELinux: enforcing, policy default"]
    assert "systemd 252" in old[1] and "issue 34387" in old[1]
    assert selinux.keep_labels(str(snap), str(root))
    assert label_of(snap / DAEMON) == want
    assert not selinux.keep_labels(str(snap), str(root))  # current now: nothing to do


def test_a_policy_whose_file_contexts_change_relabels(tmp_path: Path) -> None:
    _prerequisites()
    root = host_root(tmp_path)
    snap = snapshot(tmp_path / "snap")
    selinux.label_snapshot(str(snap), str(root))
    before = selinux.fingerprint(str(root))
    # A copy of the policy with a local rule, as `semanage fcontext -a` writes one.
    policy = tmp_path / "selinux"
    shutil.copytree("/etc/selinux", policy, symlinks=True)
    (root / "etc/selinux").unlink()
    os.symlink(policy, root / "etc/selinux")
    local = policy / "default/contexts/files/file_contexts.local"
    local.write_text(f"/usr/libexec/{APP}(/.*)?\tsystem_u:object_r:usr_t:s0\n")
    assert selinux.fingerprint(str(root)) != before
    assert selinux.labels_state(str(snap), str(root)) == "stale"
    assert selinux.keep_labels(str(snap), str(root))
    assert label_of(snap / DAEMON).split(":")[2] == "usr_t"
    # The trigger's quick check watches it (trigger.inputs).
    assert str(root / "etc/selinux/default/contexts/files/file_contexts.local") \
        in selinux.watched_paths(str(root))


def _judge(tree: Path, contexts: str | None, root: Path) -> TreeReport:
    report = validate.validate_tree(str(tree), APP, HOST, TARGET)
    return selinux.judged(report, selinux.tree_types(str(tree), report.files, contexts,
                                                     str(root)))


def test_a_confined_entry_type_is_a_restricted_class(tmp_path: Path) -> None:
    _prerequisites()
    root = host_root(tmp_path)
    contexts = selinux.active(str(root))
    snap = snapshot(tmp_path / "snap", {"usr/sbin/sshd": "#!/bin/sh\n"})
    for d in [snap, *snap.rglob("*")]:
        d.chmod(0o755)
    # Without a policy labeling snapshots: not judged, in the manifest too.
    unjudged = _judge(snap, None, root)
    assert unjudged.manifest.selinux_types is None
    assert unjudged.manifest.to_json()["selinux_types"] == "not judged"
    assert not [c for c, _ in unjudged.restricted if c == selinux.CLASS]
    # Not labeled yet (judged where it is): what labeling would give, nothing written.
    before = _judge(snap, contexts, root)
    assert (selinux.CLASS, ("usr/sbin/sshd",)) in before.restricted
    assert dict(before.manifest.selinux_types or ())["sshd_exec_t"] == ("usr/sbin/sshd",)
    assert os.listxattr(snap / "usr/sbin/sshd") == []
    selinux.label_snapshot(str(snap), str(root))
    report = _judge(snap, contexts, root)
    assert report.manifest.selinux_types == before.manifest.selinux_types
    assert (selinux.CLASS, ("usr/sbin/sshd",)) in report.restricted
    types = dict(report.manifest.selinux_types or ())
    assert DAEMON in types["bin_t"] and UNIT in types["systemd_unit_t"]
    # A labeled snapshot says it with its own labels (read back, not asked again).
    os.setxattr(snap / DAEMON, selinux.XATTR, b"system_u:object_r:sshd_exec_t:s0\0")
    assert (selinux.CLASS, tuple(sorted([DAEMON, "usr/sbin/sshd"]))) in \
        _judge(snap, contexts, root).restricted
    # Not a grant: what consent compares is the same with or without the types.
    assert report.manifest.grants() == unjudged.manifest.grants()
    line = selinux.app_line(str(snap), report.manifest.selinux_types, str(root))
    assert line == ("SELinux enforcing: labels current, types not all generic: "
                    "sshd_exec_t (1 file)")
    generic = snapshot(tmp_path / "generic")
    selinux.label_snapshot(str(generic), str(root))
    assert not [c for c, _ in _judge(generic, contexts, root).restricted
                if c == selinux.CLASS]


def test_the_store_labels_each_new_snapshot_before_validating_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _prerequisites()
    # This kernel has SELinux off: say it is on; the policy and setfiles are this host's.
    monkeypatch.setattr(selinux, "enabled", lambda root="/": True)
    world = HandMadeInstallation(tmp_path)
    world.full()
    link = world.target / DECL
    target = Path(os.readlink(link))
    assert label_of(target / "usr").split(":")[2] == "usr_t"
    release = target / f"usr/lib/extension-release.d/extension-release.{DECL}"
    assert label_of(release) == matchpathcon(str(release.relative_to(target)), release)
    assert selinux.labels_state(str(target)) == "current"
    # A relabel of /var between runs: status says so, the next run labels it again.
    os.setxattr(target / "usr", selinux.XATTR, b"system_u:object_r:var_lib_t:s0\0")
    assert cli.main(["status", "--json"], world.environ) == 0
    status = json.loads(capsys.readouterr().out)
    jsonschema.validate(status, schema("status"))
    assert [i.get("selinux_labels") for i in status if i["app"] == DECL] == ["stale"]
    world.full()
    assert selinux.labels_state(str(target)) == "current"
    assert label_of(target / "usr").split(":")[2] == "usr_t"


def test_check_shows_the_types_the_policy_here_gives(tmp_path: Path) -> None:
    _prerequisites()
    tree = snapshot(tmp_path / "tree", {"usr/sbin/sshd": "#!/bin/sh\n"})
    for path in [tree, *tree.rglob("*")]:
        path.chmod(0o755)
    result = subprocess.run([sys.executable, "-m", "flatpak_sysext", "check", "--json",
                             str(tree)], capture_output=True, text=True)
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, schema("check"))
    assert doc["selinux_types"][DAEMON] == "bin_t"
    assert doc["selinux_types"][UNIT] == "systemd_unit_t"
    assert doc["selinux_types"]["usr/sbin/sshd"] == "sshd_exec_t"
    assert [(p["code"], p["path"]) for p in doc["problems"]] == [
        ("restricted-content", "usr/sbin/sshd")]
    assert os.listxattr(tree / DAEMON) == []  # setfiles -n: nothing written
    # Without a policy on the machine: not judged.
    assert selinux.policy_types(str(tree), [DAEMON], str(tmp_path / "nothing")) is None
    assert output.check_json(APP, str(tree), validate.validate_tree(
        str(tree), APP, HOST, TARGET), None)["selinux_types"] == "not judged"


def test_a_run_that_writes_nothing_judges_the_types_where_the_tree_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _prerequisites()
    monkeypatch.setattr(selinux, "enabled", lambda root="/": True)
    world = HandMadeInstallation(tmp_path)  # no run yet: no snapshot
    assert cli.main(["status", "--json"], world.environ) == 0
    status = json.loads(capsys.readouterr().out)
    jsonschema.validate(status, schema("status"))
    [item] = [i for i in status if i["app"] == DECL]
    assert not item["target"] or not os.path.exists(item["target"])
    rel = f"usr/lib/extension-release.d/extension-release.{DECL}"
    [release, *_] = (Path(str(item["installation"])) / "app" / DECL).glob(f"*/*/*/files/ext/{rel}")
    want = matchpathcon(rel, release).split(":")[2]
    assert item["manifest"]["selinux_types"] == {want: [rel]}
    assert os.listxattr(release) == []  # setfiles -n: nothing written
    # Its one status line: no snapshot has labels yet, the types are judged.
    assert cli.main(["status"], world.environ) == 0
    assert "  SELinux permissive: labels not judged, types generic" in \
        capsys.readouterr().out.splitlines()


def test_a_relabel_while_merged_refreshes_the_merged_view(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _prerequisites()
    monkeypatch.setattr(selinux, "enabled", lambda root="/": True)
    world = HandMadeInstallation(tmp_path)
    world.config.write_text(json.dumps({**json.loads(world.config.read_text()),
                                        "host_sync": True}))
    host = host_root(tmp_path)
    (host / "run/systemd/system").mkdir(parents=True)
    (host / "usr/.systemd-sysext").mkdir(parents=True)
    (host / "usr/.systemd-sysext/extensions").write_text(DECL + "\n")  # merged, as linked
    commands: list[str] = []

    def runner(argv: Sequence[str]) -> tuple[int, str]:
        commands.append(" ".join([os.path.basename(argv[0]), *argv[1:]]))
        return 0, ""

    insts = installation.system_installations(world.environ)
    ctx = dataclasses.replace(
        context.Context.create(config.load(str(world.config)), insts, world.environ),
        host_root=str(host), runner=runner)
    reconcile.reconcile(ctx, insts)
    target = Path(os.readlink(world.target / DECL))
    assert selinux.labels_state(str(target), str(host)) == "current"
    commands.clear()
    reconcile.reconcile(ctx, insts)
    assert commands == []  # labels current: nothing to do
    # `restorecon -R /var` while merged: the store is var_lib_t again.
    os.setxattr(target / "usr", selinux.XATTR, b"system_u:object_r:var_lib_t:s0\0")
    result = reconcile.reconcile(ctx, insts)
    assert selinux.labels_state(str(target), str(host)) == "current"
    assert result.applied == ()  # no link changed...
    assert commands[:1] == ["systemd-sysext refresh"]  # ...but the overlay is mounted again
    commands.clear()
    reconcile.reconcile(ctx, insts)
    assert commands == []


# What an extension ships, by what it is: each must get a generic type from either policy.
SHIPPED = (DAEMON, "usr/bin/tool", "usr/sbin/toold", "usr/lib/libtool.so.1", UNIT,
           "usr/lib/systemd/user/tool.service", "usr/lib/systemd/system-preset/50-tool.preset",
           DBUS, f"usr/share/dbus-1/system-services/{APP}.service",
           f"usr/share/polkit-1/actions/{APP}.policy", "usr/share/polkit-1/rules.d/50-tool.rules",
           "usr/lib/udev/rules.d/70-tool.rules", "usr/lib/sysusers.d/tool.conf",
           "usr/lib/tmpfiles.d/tool.conf", "usr/share/man/man8/toold.8",
           "usr/share/locale/de/LC_MESSAGES/tool.mo", "usr/share/fonts/tool/a.ttf",
           "usr/share/tool/data", f"usr/lib/extension-release.d/extension-release.{APP}",
           "opt/tool/bin/tool", "opt/tool/lib/libtool.so")
# Named after confined services: the policy gives them their types.
CONFINED = ("usr/sbin/sshd", "usr/lib/systemd/system/httpd-tool.service",
            "usr/lib/systemd/system/tool-power.service")


def _fedora() -> Path:
    from testsupport import fedorapolicy

    path = fedorapolicy.cached()
    if path is None:  # not require(): Fedora's source is not reachable from CI
        pytest.skip("Fedora's file contexts are not built (python -m testsupport.fedorapolicy)")
    return path


@pytest.mark.parametrize("policy", ["debian", "fedora"])
def test_what_an_extension_ships_is_generic_on_both_policies(tmp_path: Path,
                                                             policy: str) -> None:
    _prerequisites()
    contexts = str(POLICY if policy == "debian" else _fedora())
    tree = snapshot(tmp_path / "tree", {rel: "x\n" for rel in SHIPPED + CONFINED})
    found = selinux.tree_types(str(tree), [*SHIPPED, *CONFINED], contexts)
    assert found is not None
    odd = {rel: kind for rel, kind in found.items() if kind not in selinux.GENERIC}
    assert sorted(odd) == sorted(CONFINED), odd
    assert odd["usr/sbin/sshd"] == "sshd_exec_t"


def test_check_says_why_when_setfiles_cannot_judge(tmp_path: Path) -> None:
    _prerequisites()
    tree = snapshot(tmp_path / "tree")
    root = tmp_path / "host"
    contexts = root / "etc/selinux/broken/contexts/files/file_contexts"
    contexts.parent.mkdir(parents=True)
    (root / "etc/selinux/config").write_text("SELINUX=enforcing\nSELINUXTYPE=broken\n")
    contexts.write_text("this is not a file context specification\n")
    # No setfiles at all: the package that has it is named.
    with pytest.raises(OSError, match=r"setfiles is not in /usr/sbin or /sbin \(install "
                                      r"policycoreutils\)"):
        selinux.policy_types(str(tree), [DAEMON], str(root))
    # A setfiles that refuses the policy's file contexts: its own words, not a traceback.
    (root / "usr/sbin").mkdir(parents=True)
    os.symlink(shutil.which("setfiles") or "", root / "usr/sbin/setfiles")
    with pytest.raises(OSError, match=r"setfiles could not judge the tree's SELinux types: .+"):
        selinux.policy_types(str(tree), [DAEMON], str(root))
    assert os.listxattr(tree / DAEMON) == []


def test_a_file_name_cannot_forge_another_files_type(tmp_path: Path) -> None:
    # setfiles -n -v prints one path a line, unescaped: directories named so that one
    # file's path reads as setfiles' line for usr/sbin/sshd (sshd_exec_t) would give it
    # the type of that file's own path (usr_t, generic).
    _prerequisites()
    tree = snapshot(tmp_path / "tree", {"usr/sbin/sshd": "#!/bin/sh\n"})
    inner = tree / "usr/share" / "x\nWould relabel " / str(tree).lstrip("/") / "usr/sbin"
    inner.mkdir(parents=True)
    (inner / "sshd").write_text("")
    for path in [tree, *tree.rglob("*")]:
        path.chmod(0o755)
    # sshd already has its label, so setfiles prints no line of its own for it (whatever
    # order it walks the tree in): the forged line would be the only one.
    os.setxattr(tree / "usr/sbin/sshd", selinux.XATTR, b"system_u:object_r:sshd_exec_t:s0\0")
    files = [str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file()]
    types = selinux.policy_types(str(tree), files)
    assert types is not None and types["usr/sbin/sshd"] not in selinux.GENERIC, types
    assert selinux.CLASS in dict(selinux.judged(
        validate.validate_tree(str(tree), APP, HOST, TARGET), types).restricted)
