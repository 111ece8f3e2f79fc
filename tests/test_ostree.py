# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Verifying a snapshot against the signed OSTree commit: against repositories the real
``flatpak build-export`` signed with gpg and the real ``flatpak install`` deployed, and
the ways someone who can write the installation would try to get other content past it."""

from __future__ import annotations

import calendar
import contextlib
import dataclasses
import hashlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flatpak_sysext.flatpak import deployfile, gvariant, ostree, ostreeobjects
from flatpak_sysext.state import store
from testsupport import prerequisites
from testsupport.flatpak import ARCH, FlatpakEnv, daemon_tree, have_flatpak
from testsupport.ostreerepo import (
    Key,
    copy_repo,
    forge_commit,
    object_file,
    precreate_repo,
    write_signatures,
)

privileged = pytest.mark.privileged

APP = "org.fsx.Demo"
OTHER = "org.fsx.Other"
DECLARED = "files/lib/extensions"
DAEMON = f"usr/libexec/{APP}/demod"


def _demo_tree(root: Path) -> None:
    daemon_tree(APP, "v1")(root)
    (root / "usr/lib/demo-link").symlink_to(f"../libexec/{APP}/demod")
    (root / "usr/share/doc").mkdir()
    (root / "usr/share/doc/README").write_text("a readme\n")
    # The declared directory reached through a symlink of the app's own, as
    # installation.resolve_extension_root allows: files/alias -> lib.
    (root.parent.parent / "alias").symlink_to("lib")
    (root.parent.parent / "up").symlink_to("../..")


class World:
    """One signed repository, two apps installed from it into a system installation."""

    def __init__(self, root: Path) -> None:
        self.fenv = FlatpakEnv(root, signed=True)
        try:
            self.fenv.publish(APP, _demo_tree)
            self.fenv.install(APP)
            self.fenv.publish(OTHER, daemon_tree(OTHER, "v1"))
            self.fenv.install(OTHER)
        finally:
            self.fenv.close()  # the signing key's gpg-agent
        self.repo = self.fenv.system_dir / "repo"
        self.keyring = (self.repo / "test.trustedkeys.gpg").read_bytes()
        self.checksum = self.fenv.commit(APP)

    def snapshot(self, into: Path) -> Path:
        """The store's own copy of the app's declared tree, as the service makes it."""
        into.mkdir(exist_ok=True)
        return Path(store.make(str(self.fenv.deploy_files(APP) / "lib/extensions"),
                               str(into / "snapshot")))

    def commit(self) -> ostree.Commit:
        return ostree.read_commit(str(self.repo), self.checksum)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    prerequisites.require(have_flatpak(), "needs root, flatpak and bubblewrap")
    root = tmp_path_factory.mktemp("ostree-world")
    yield World(root)
    shutil.rmtree(root, ignore_errors=True)


def _refused(code: str, call: Callable[[], object]) -> ostree.VerifyError:
    with pytest.raises(ostree.VerifyError) as caught:
        call()
    assert caught.value.code == code, str(caught.value)
    return caught.value


def _flatpak_date(fenv: FlatpakEnv, app: str) -> int:
    """The commit date ``flatpak info`` shows (``Date: 2026-12-07 14:30:02 +0000``)."""
    info = fenv.flatpak("--system", "info", app).stdout
    date = next(line.split(":", 1)[1].strip() for line in info.splitlines()
                if line.strip().startswith("Date:"))
    assert date.endswith(" +0000")
    return calendar.timegm(time.strptime(date[:-6], "%Y-%m-%d %H:%M:%S"))


@privileged
def test_a_faithful_snapshot_of_a_signed_commit_verifies(world: World, tmp_path: Path) -> None:
    commit = world.commit()
    assert commit.timestamp == _flatpak_date(world.fenv, APP)
    ref = f"app/{APP}/{ARCH}/stable"
    assert commit.ref_bindings == (ref,)
    assert commit.collection_binding is None
    ostree.check_binding(commit, ref, None)
    # The remote's keyring, as ``flatpak remote-add --gpg-import`` wrote it.
    assert ostree.verify_signature(str(world.repo), commit.checksum,
                                   world.keyring) == (world.fenv.key_id,)
    snapshot = world.snapshot(tmp_path)
    ostree.verify_tree(str(world.repo), commit, DECLARED, str(snapshot))
    # The same directory named through the app's own symlink files/alias -> lib.
    ostree.verify_tree(str(world.repo), commit, "files/alias/extensions", str(snapshot))
    assert ostree.repo_mode(str(world.repo)) == "bare-user-only"


@privileged
def test_content_checksums_are_ostrees_own(world: World) -> None:
    """A bare-user-only deployment hard-links the repository's file objects, each named by
    the content checksum OSTree computed: the framing of the header is OSTree's."""
    objects = list((world.repo / "objects").glob("*/*.file"))
    name = {p: p.parent.name + p.name.removesuffix(".file") for p in objects}
    # Regular files are hard links to their objects; symlinks are made afresh.
    by_inode = {p.lstat().st_ino: name[p] for p in objects if not p.is_symlink()}
    by_target = {os.readlink(p): name[p] for p in objects if p.is_symlink()}
    kinds = set()
    for path in (world.fenv.deploy_files(APP) / "lib/extensions").rglob("*"):
        st = path.lstat()
        if path.is_symlink():
            header = ostreeobjects.framed_header(st.st_mode, os.readlink(path))
            assert hashlib.sha256(header).hexdigest() == by_target[os.readlink(path)], path
        elif path.is_file():
            header = ostreeobjects.framed_header(st.st_mode, "")
            assert hashlib.sha256(header + path.read_bytes()).hexdigest() == by_inode[
                st.st_ino], path
        kinds.add(path.is_symlink())
    assert kinds == {True, False}


def _write(path: str, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.write(data)


def _retarget(s: Path) -> None:
    (s / "usr/lib/demo-link").unlink()
    (s / "usr/lib/demo-link").symlink_to("/bin/sh")


def _file_to_symlink(s: Path) -> None:
    (s / "usr/share/doc/README").unlink()
    (s / "usr/share/doc/README").symlink_to("/etc/shadow")


def _directory_to_symlink(s: Path) -> None:
    shutil.rmtree(s / "usr/share/doc")
    (s / "usr/share/doc").symlink_to("/etc")


ATTACKS: dict[str, tuple[Callable[[Path], object], str]] = {
    # name: (what is done to the snapshot, the path the verdict names)
    "content": (lambda s: _write(str(s / DAEMON), b"#!/bin/sh\n"), DAEMON),
    "file-added": (lambda s: (s / "usr/lib/systemd/system/extra.service").write_text("x"),
                   "usr/lib/systemd/system/extra.service"),
    "file-removed": (lambda s: (s / "usr/share/doc/README").unlink(), "usr/share/doc/README"),
    "chmod": (lambda s: (s / "usr/share/doc/README").chmod(0o755), "usr/share/doc/README"),
    "symlink-retargeted": (_retarget, "usr/lib/demo-link"),
    "directory-added": (lambda s: (s / "usr/lib/sysctl.d").mkdir(), "usr/lib/sysctl.d"),
    "directory-chmod": (lambda s: (s / "usr/share/doc").chmod(0o775), "usr/share/doc"),
    "owner": (lambda s: os.chown(s / "usr/share/doc/README", 1000, 1000),
              "usr/share/doc/README"),
    "opaque-directory": (lambda s: os.setxattr(s / "usr/share", "trusted.overlay.opaque", b"y"),
                         "usr/share"),
    "file-made-symlink": (_file_to_symlink, "usr/share/doc/README"),
    "directory-made-symlink": (_directory_to_symlink, "usr/share/doc"),
}


@privileged
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_snapshot_that_differs_from_the_commit_is_refused(world: World, tmp_path: Path,
                                                             attack: str) -> None:
    snapshot = world.snapshot(tmp_path)
    change, path = ATTACKS[attack]
    change(snapshot)
    error = _refused(ostree.CONTENT_MISMATCH, lambda: ostree.verify_tree(
        str(world.repo), world.commit(), DECLARED, str(snapshot)))
    assert error.path == path
    assert f"{DECLARED}/{path}" in str(error)


@privileged
def test_what_differs_is_told(world: World, tmp_path: Path) -> None:
    snapshot = world.snapshot(tmp_path)
    commit = world.commit()

    def told() -> str:
        return str(_refused(ostree.CONTENT_MISMATCH, lambda: ostree.verify_tree(
            str(world.repo), commit, DECLARED, str(snapshot))))

    _retarget(snapshot)
    assert told().endswith(f"is a symlink to '/bin/sh'; the signed commit has a symlink to "
                           f"'../libexec/{APP}/demod'")
    os.unlink(snapshot / "usr/lib/demo-link")
    os.symlink(f"../libexec/{APP}/demod", snapshot / "usr/lib/demo-link")
    ATTACKS["chmod"][0](snapshot)
    assert told().endswith("is a regular file of mode 0755; the signed commit has a regular "
                           "file of mode 0644")
    (snapshot / "usr/share/doc/README").chmod(0o644)
    ATTACKS["content"][0](snapshot)
    assert told().endswith("demod: its content differs from the signed commit's")


@privileged
def test_a_deployment_made_by_hand_is_refused(world: World, tmp_path: Path) -> None:
    """The attack of issue 20: a copy of the active deployment with the daemon replaced,
    ``active`` pointed at it. Its deploy file still names the signed commit."""
    active = world.fenv.deploy_files(APP).parent
    fake = tmp_path / "fake"
    shutil.copytree(active, fake, symlinks=True)
    (fake / "files/lib/extensions" / DAEMON).write_text("#!/bin/sh\nexec /bin/sh\n")
    named = deployfile.read(str(fake / "deploy")).commit
    assert named == world.checksum
    snapshot = Path(store.make(str(fake / "files/lib/extensions"), str(tmp_path / "snap")))
    error = _refused(ostree.CONTENT_MISMATCH, lambda: ostree.verify_tree(
        str(world.repo), ostree.read_commit(str(world.repo), named), DECLARED, str(snapshot)))
    assert error.path == DAEMON


@privileged
def test_repository_objects_must_hash_to_their_names(world: World, tmp_path: Path) -> None:
    repo = copy_repo(world.repo, tmp_path / "repo")
    commit = world.commit()
    snapshot = world.snapshot(tmp_path)
    # A dirtree on the way to the declared directory, rewritten in place.
    files = ostreeobjects.load_dir(str(repo), commit.root_tree, commit.root_meta, "")
    tree, _meta = files.dirs["files"]
    dirtree = object_file(repo, tree, "dirtree")
    dirtree.write_bytes(dirtree.read_bytes() + b"\0")
    error = _refused(ostree.COMMIT_UNAVAILABLE, lambda: ostree.verify_tree(
        str(repo), commit, DECLARED, str(snapshot)))
    assert error.path == "" and str(error).startswith("files: dirtree object")
    assert "does not hash to its name" in str(error)
    # One inside the declared tree, missing: the verdict names it (usr/share).
    extensions = ostree.read_commit(str(world.repo), world.checksum)
    for name in ("files", "lib", "extensions", "usr", "share"):
        below = ostreeobjects.load_dir(str(world.repo), extensions.root_tree,
                                       extensions.root_meta, "")
        tree, meta = below.dirs[name]
        extensions = dataclasses.replace(extensions, root_tree=tree, root_meta=meta)
    object_file(repo, extensions.root_tree, "dirtree").unlink()
    dirtree.write_bytes(dirtree.read_bytes()[:-1])
    error = _refused(ostree.COMMIT_UNAVAILABLE, lambda: ostree.verify_tree(
        str(repo), commit, DECLARED, str(snapshot)))
    assert error.path == "usr/share"
    assert str(error).startswith(f"{DECLARED}/usr/share: dirtree object")
    # The commit object itself rewritten in place: neither read nor signature passes.
    obj = object_file(repo, world.checksum, "commit")
    obj.write_bytes(obj.read_bytes().replace(b"Export", b"Eksport"))
    _refused(ostree.COMMIT_UNAVAILABLE, lambda: ostree.read_commit(str(repo), world.checksum))
    _refused(ostree.COMMIT_UNAVAILABLE, lambda: ostree.verify_signature(
        str(repo), world.checksum, world.keyring))
    obj.unlink()
    error = _refused(ostree.COMMIT_UNAVAILABLE,
                     lambda: ostree.read_commit(str(repo), world.checksum))
    assert world.checksum in str(error)


@privileged
def test_only_a_signature_by_the_pinned_keyring_counts(world: World, tmp_path: Path) -> None:
    repo = copy_repo(world.repo, tmp_path / "repo")
    key = Key()
    try:
        # The signed commit, checked against another key's keyring.
        _refused(ostree.SIGNATURE_INVALID, lambda: ostree.verify_signature(
            str(repo), world.checksum, key.keyring))
        # A consistent forged commit: it reads, but the original's signature is not its own.
        forged = forge_commit(repo, world.checksum)
        assert ostree.read_commit(str(repo), forged).ref_bindings == world.commit().ref_bindings
        original = object_file(repo, world.checksum, "commitmeta")
        shutil.copy(original, object_file(repo, forged, "commitmeta"))
        _refused(ostree.SIGNATURE_INVALID, lambda: ostree.verify_signature(
            str(repo), forged, world.keyring))
        # Signed by a key of the forger's own: valid, but not by the pinned keyring.
        commit_bytes = object_file(repo, forged, "commit").read_bytes()
        write_signatures(repo, forged, [key.sign(commit_bytes)])
        _refused(ostree.SIGNATURE_INVALID, lambda: ostree.verify_signature(
            str(repo), forged, world.keyring))
        assert ostree.verify_signature(str(repo), forged, key.keyring) == (key.fingerprint,)
        # Both signatures: the pinned key's fingerprint is the one that counts.
        write_signatures(repo, forged, [b"garbage", key.sign(commit_bytes)])
        assert ostree.verify_signature(str(repo), forged, key.keyring) == (key.fingerprint,)
        # Unsigned.
        object_file(repo, forged, "commitmeta").unlink()
        error = _refused(ostree.SIGNATURE_INVALID, lambda: ostree.verify_signature(
            str(repo), forged, world.keyring))
        assert "no GPG signature" in str(error)
    finally:
        key.close()


@privileged
def test_a_signature_by_an_expired_key_does_not_count(world: World, tmp_path: Path) -> None:
    """gpgv says VALIDSIG and exits 0 for a good signature by an expired key (EXPKEYSIG
    instead of GOODSIG); OSTree does not count it as valid, neither does this."""
    repo = copy_repo(world.repo, tmp_path / "repo")
    key, other = Key(expired=True), Key()
    try:
        commit_bytes = object_file(repo, world.checksum, "commit").read_bytes()
        write_signatures(repo, world.checksum, [key.sign(commit_bytes)])
        _refused(ostree.SIGNATURE_INVALID, lambda: ostree.verify_signature(
            str(repo), world.checksum, key.keyring))
        # Two signatures in one blob: only the good one's key is told.
        write_signatures(repo, world.checksum, [other.sign(commit_bytes) + key.sign(
            commit_bytes)])
        assert ostree.verify_signature(str(repo), world.checksum, key.keyring + other.keyring
                                       ) == (other.fingerprint,)
    finally:
        key.close()
        other.close()


@privileged
def test_a_commit_of_another_app_is_not_this_apps(world: World) -> None:
    other = ostree.read_commit(str(world.repo), world.fenv.commit(OTHER))
    # It is signed by the same key, so the signature alone would let it pass.
    assert ostree.verify_signature(str(world.repo), other.checksum, world.keyring)
    error = _refused(ostree.REF_BINDING_MISMATCH, lambda: ostree.check_binding(
        other, f"app/{APP}/{ARCH}/stable", None))
    assert f"app/{OTHER}/{ARCH}/stable" in str(error)
    _refused(ostree.REF_BINDING_MISMATCH, lambda: ostree.check_binding(
        world.commit(), f"app/{APP}/{ARCH}/stable", "org.example.Pinned"))


@privileged
@pytest.mark.parametrize(("subpath", "says"), [
    ("files/extra/lib/extensions", "written by Flatpak at install time"),
    ("files/.ref", "written by Flatpak at install time"),
    ("files/up/files/lib", "leads out of files/"),
    ("files/lib/missing", "not in the signed commit"),
    (f"files/alias/extensions/{DAEMON}", "is not a directory"),
    ("export", "not a path below files/"),
])
def test_a_declared_path_outside_the_commit_is_refused(world: World, tmp_path: Path,
                                                        subpath: str, says: str) -> None:
    snapshot = world.snapshot(tmp_path)
    error = _refused(ostree.CONTENT_MISMATCH, lambda: ostree.verify_tree(
        str(world.repo), world.commit(), subpath, str(snapshot)))
    assert says in str(error)


@privileged
def test_a_repository_mode_it_cannot_verify_is_refused(world: World, tmp_path: Path) -> None:
    repo = copy_repo(world.repo, tmp_path / "repo")
    config = repo / "config"
    config.write_text(config.read_text().replace("mode=bare-user-only", "mode=archive-z2"))
    _refused(ostree.UNSUPPORTED_REPO, lambda: ostree.read_commit(str(repo), world.checksum))
    _refused(ostree.UNSUPPORTED_REPO, lambda: ostree.verify_tree(
        str(repo), world.commit(), DECLARED, str(world.snapshot(tmp_path))))
    config.unlink()
    _refused(ostree.UNSUPPORTED_REPO, lambda: ostree.repo_mode(str(repo)))


@privileged
def test_a_bare_user_installation_verifies_too(tmp_path: Path) -> None:
    """Installations made by older Flatpak versions keep their objects in bare-user mode
    (file objects carry their mode in an xattr; a symlink is a file holding its target)."""
    prerequisites.require(have_flatpak(), "needs root, flatpak and bubblewrap")
    fenv = FlatpakEnv(tmp_path / "world", signed=True)
    repo = precreate_repo(fenv.system_dir, "bare-user")
    try:
        fenv.publish(APP, _demo_tree)
        fenv.install(APP)
    finally:
        fenv.close()
    assert ostree.repo_mode(str(repo)) == "bare-user"
    commit = ostree.read_commit(str(repo), fenv.commit(APP))
    assert ostree.verify_signature(str(repo), commit.checksum, fenv.pubkey.read_bytes()) == (
        fenv.key_id,)
    snapshot = Path(store.make(str(fenv.deploy_files(APP) / "lib/extensions"),
                               str(tmp_path / "snapshot")))
    # Through files/alias -> lib: a symlink stored as a bare-user file object.
    ostree.verify_tree(str(repo), commit, "files/alias/extensions", str(snapshot))
    _retarget(snapshot)
    error = _refused(ostree.CONTENT_MISMATCH, lambda: ostree.verify_tree(
        str(repo), commit, DECLARED, str(snapshot)))
    assert error.path == "usr/lib/demo-link"


@privileged
@pytest.mark.parametrize("bound", ["max_bytes", "max_entries", "max_depth"])
def test_verify_tree_is_bounded(world: World, tmp_path: Path, bound: str) -> None:
    snapshot = world.snapshot(tmp_path)
    error = _refused(ostree.CONTENT_MISMATCH, lambda: ostree.verify_tree(
        str(world.repo), world.commit(), DECLARED, str(snapshot), **{bound: 2}))
    assert "than can be verified" in str(error)


# The GVariant reader itself: no root needed.

def test_gvariant_reads_and_writes_the_specifications_examples() -> None:
    # GVariant specification 1.0, §3.2: a string array and a (si) tuple.
    strings = b"i\0can\0has\0strings?\0\x02\x06\x0a\x13"
    assert gvariant.decode("as", strings) == ["i", "can", "has", "strings?"]
    assert gvariant.encode("as", ["i", "can", "has", "strings?"]) == strings
    pair = b"foo\0\xff\xff\xff\xff\x04"
    assert gvariant.decode("(si)", pair) == ("foo", -1)
    assert gvariant.encode("(si)", ("foo", -1)) == pair


def test_gvariant_types_are_bounded() -> None:
    with pytest.raises(gvariant.GVariantError, match="nested deeper"):
        gvariant.decode("a" * 40 + "y", b"")
    long_type = "(" + "y" * 300 + ")"
    with pytest.raises(gvariant.GVariantError, match="longer than"):
        gvariant.decode("v", b"\0" * 300 + b"\0" + long_type.encode())
    assert gvariant.decode("v", b"\x07\0y") == gvariant.Variant("y", b"\x07")


# Below the surrogates (which UTF-8 cannot encode) and above NUL; written without
# characters()' codec= and exclude_ arguments, which Debian 12's hypothesis lacks.
_names = st.text(st.characters(min_codepoint=1, max_codepoint=0xD7FF),
                 min_size=1, max_size=20).filter(lambda name: "/" not in name)
_sums = st.binary(min_size=32, max_size=32)


@settings(max_examples=200, deadline=None)
@given(st.tuples(st.lists(st.tuples(_names, _sums), max_size=8),
                 st.lists(st.tuples(_names, _sums, _sums), max_size=8)))
def test_a_dirtree_reads_back_as_written(value: tuple[object, ...]) -> None:
    data = gvariant.encode("(a(say)a(sayay))", value, "big")
    assert gvariant.decode("(a(say)a(sayay))", data, "big") == value


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(
    ["(a{sv}aya(say)sstayay)", "(a(say)a(sayay))", "(uuua(ayay))", "a{sv}", "aay",
     "(uuuusa(ayay))", "mv", "a(smv)"]))
def test_random_bytes_raise_nothing_but_gvariant_error(data: bytes, sig: str) -> None:
    try:
        value = gvariant.decode(sig, data, "big")
    except gvariant.GVariantError:
        return
    for entry in value if isinstance(value, list) else ():
        for member in entry if isinstance(entry, tuple) else ():
            if isinstance(member, gvariant.Variant):  # what a{sv}'s values hold
                with contextlib.suppress(gvariant.GVariantError):
                    gvariant.decode(member.type, member.data)


def _bare_repo(root: Path) -> Path:
    (root / "objects").mkdir(parents=True, exist_ok=True)
    (root / "config").write_text("[core]\nrepo_version=1\nmode=bare-user-only\n")
    return root


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_a_garbage_commit_object_is_a_verify_error(tmp_path: Path, data: bytes) -> None:
    repo = _bare_repo(tmp_path / "repo")
    name = hashlib.sha256(data).hexdigest()
    path = object_file(repo, name, "commit")
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    try:
        ostree.read_commit(str(repo), name)
    except ostree.VerifyError as e:
        assert e.code in (ostree.COMMIT_UNAVAILABLE, ostree.REF_BINDING_MISMATCH)
    try:
        ostree.verify_signature(str(repo), name, b"")
    except ostree.VerifyError as e:
        assert e.code == ostree.SIGNATURE_INVALID
    path.unlink()


def _store(repo: Path, data: bytes, kind: str) -> str:
    name = hashlib.sha256(data).hexdigest()
    path = object_file(repo, name, kind)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return name


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400), st.binary(max_size=100), st.binary(max_size=300))
def test_garbage_objects_below_a_commit_are_verify_errors(tmp_path: Path, tree: bytes,
                                                          meta: bytes, sigs: bytes) -> None:
    """Objects named by their hash (a forger can make any), holding random bytes."""
    repo = _bare_repo(tmp_path / "repo")
    commit = ostree.Commit(_store(repo, b"commit", "commit"), 0, (), None,
                           _store(repo, tree, "dirtree"), _store(repo, meta, "dirmeta"))
    object_file(repo, commit.checksum, "commitmeta").write_bytes(sigs)
    (tmp_path / "snapshot").mkdir(exist_ok=True)
    with contextlib.suppress(ostree.VerifyError):
        ostree.verify_tree(str(repo), commit, DECLARED, str(tmp_path / "snapshot"))
    with pytest.raises(ostree.VerifyError) as caught:
        ostree.verify_signature(str(repo), commit.checksum, b"")
    assert caught.value.code == ostree.SIGNATURE_INVALID


def test_a_huge_commit_object_is_not_read(tmp_path: Path) -> None:
    repo = _bare_repo(tmp_path / "repo")
    name = "ab" * 32
    path = object_file(repo, name, "commit")
    path.parent.mkdir()
    with open(path, "wb") as f:
        f.truncate(64 << 30)  # sparse: 64 GiB that take no room
    error = _refused(ostree.COMMIT_UNAVAILABLE, lambda: ostree.read_commit(str(repo), name))
    assert "larger than" in str(error)
    _refused(ostree.COMMIT_UNAVAILABLE, lambda: ostree.read_commit(str(repo), "../../etc"))
