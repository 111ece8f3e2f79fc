# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Validated snapshots (docs/reference.md#snapshots): an exact copy or none, and an
unlinked snapshot kept until nothing can use it any more."""

from __future__ import annotations

import os
import stat
import struct
import tempfile
from pathlib import Path

import pytest

from flatpak_sysext.rules import ruleset
from flatpak_sysext.state import store
from testsupport.prerequisites import require, require_available


def tree(root: Path) -> Path:
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/daemon").write_bytes(b"\x7fELF" + bytes(range(256)) * 100)
    (root / "usr/bin/daemon").chmod(0o755)
    (root / "usr/share").mkdir()
    (root / "usr/share/data").write_text("data\n")
    (root / "usr/share/data").chmod(0o600)
    os.symlink("../bin/daemon", root / "usr/share/link")
    os.symlink("/etc", root / "usr/share/dirlink")  # never followed, copied as it is
    return root


def listing(root: Path) -> dict[str, tuple[int, int, bytes | str | None]]:
    """Every entry: type and mode, owner, and its content or link text."""
    out: dict[str, tuple[int, int, bytes | str | None]] = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        data = (os.readlink(p) if p.is_symlink() else p.read_bytes()
                if stat.S_ISREG(st.st_mode) else None)
        out[str(p.relative_to(root))] = (st.st_mode, st.st_uid, data)
    return out


def test_a_snapshot_is_an_exact_copy(tmp_path: Path) -> None:
    src = tree(tmp_path / "src")
    dest = tmp_path / "state/installations/x/store/org.example.App.0123456789abcdef"
    copy = store.make(str(src), str(dest))
    assert os.path.basename(copy).startswith(".#") and not dest.exists()
    assert listing(Path(copy)) == listing(src)
    for d in (tmp_path / "state", tmp_path / "state/installations"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
    store.publish(copy, str(dest))
    assert listing(dest) == listing(src) and not os.path.exists(copy)


@pytest.mark.privileged
def test_what_validation_judges_is_copied_too(tmp_path: Path) -> None:
    require(os.geteuid() == 0, "chown and security.capability need root")
    src = tree(tmp_path / "src")
    os.chown(src / "usr/share/data", 65534, 65534)
    caps = struct.pack("<5I", 0x02000000, 1 << 13, 0, 0, 0)
    os.setxattr(src / "usr/bin/daemon", "security.capability", caps)
    copy = Path(store.make(str(src), str(tmp_path / "state/i/x/store/a")))
    assert (copy / "usr/share/data").stat().st_uid == 65534
    assert os.getxattr(copy / "usr/bin/daemon", "security.capability") == caps


@pytest.mark.parametrize("what", ["fifo", "entries", "depth"])
def test_what_a_snapshot_cannot_hold_leaves_none(tmp_path: Path, what: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    src = tree(tmp_path / "src")
    if what == "fifo":
        os.mkfifo(src / "usr/share/fifo")
    elif what == "entries":
        monkeypatch.setattr(ruleset, "MAX_ENTRIES", 5)
    else:
        monkeypatch.setattr(ruleset, "MAX_DEPTH", 1)
    parent = tmp_path / "state/i/x/store"
    with pytest.raises(store.Unfaithful):
        store.make(str(src), str(parent / "a"))
    assert os.listdir(parent) == []


def test_an_unlinked_snapshot_stays_until_a_later_boot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = str(tmp_path / "state")
    where = Path(store.directory(state, "/inst"))
    old, new = where / "org.example.App.1111111111111111", where / "org.example.App.2222"
    for snapshot in (old, new):
        store.publish(store.make(str(tree(tmp_path / snapshot.name)), str(snapshot)), str(snapshot))
    leftover = where / ".#org.example.App.3333.0123456789abcdef"
    leftover.mkdir()
    monkeypatch.setattr(store, "boot_id", lambda: "boot-1")
    store.collect(state, "/inst", {str(new)})
    # Released in this boot: the old overlay or a daemon may still use it.
    assert old.is_dir() and new.is_dir() and not leftover.exists()
    store.collect(state, "/inst", {str(new)})
    assert old.is_dir()
    monkeypatch.setattr(store, "boot_id", lambda: "boot-2")
    store.collect(state, "/inst", {str(new)})
    assert not old.exists() and new.is_dir()
    assert sorted(os.listdir(where)) == [new.name]


def test_holes_stay_holes(tmp_path: Path) -> None:
    src = tree(tmp_path / "src")
    sparse = src / "usr/share/sparse"
    with open(sparse, "wb") as f:
        f.write(b"head")
        f.seek(64 << 20)
        f.write(b"tail")
    require_available(sparse.stat().st_blocks * 512 < 1 << 20, "the filesystem keeps holes")
    copy = Path(store.make(str(src), str(tmp_path / "state/i/x/store/a")))
    st = (copy / "usr/share/sparse").stat()
    assert (copy / "usr/share/sparse").read_bytes() == sparse.read_bytes()
    assert st.st_size == (64 << 20) + 4 and st.st_blocks * 512 < 1 << 20


def test_a_copy_crosses_filesystems(tmp_path: Path) -> None:
    # The state directory on a tmpfs, the installation on another filesystem:
    # copy_file_range says EXDEV, and a plain read/write copy takes over.
    shm = Path("/dev/shm")
    require_available(shm.is_dir() and os.stat(shm).st_dev != os.stat(tmp_path).st_dev,
            "/dev/shm on a filesystem of its own")
    src = tree(tmp_path / "src")
    with open(src / "usr/share/sparse", "wb") as f:
        f.write(b"x" * 70000)
        f.seek(8 << 20)
        f.write(b"y")
    state = Path(tempfile.mkdtemp(dir=shm, prefix="fsx-exdev-"))
    try:
        copy = store.make(str(src), str(state / "i/x/store/a"))
        assert listing(Path(copy)) == listing(src)
    finally:
        store.discard(str(state))


def test_the_byte_bound_counts_apparent_size_and_stops_early(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tree(tmp_path / "src")
    with open(src / "usr/share/huge", "wb") as f:
        f.truncate(1 << 40)  # 1 TiB of holes: no room taken, every byte counted
    assert store.apparent_size(str(src)) > 1 << 40
    monkeypatch.setattr(ruleset, "MAX_BYTES", 10)
    assert store.apparent_size(str(src)) > 10
