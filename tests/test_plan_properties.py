# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Property-based tests of the planner, applied for real
(docs/reference.md#links-and-ownership, #safety).

Random target directories hold every kind of entry (our links, links into another
system installation, foreign links, directories, files, FIFOs, dangling and relative
links, temporaries of ours and of others); random wanted maps and held names are planned
with ``plan.make_plan`` over ``targetdir.scan`` and applied with ``apply.apply`` in a real
directory. Then: the wanted state is reached, a second plan is empty, and nothing that
is not ours in scope was ever in an action or changed.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flatpak_sysext.flatpak.installation import Installation
from flatpak_sysext.host import apply, targetdir
from flatpak_sysext.plan import Entry, Kind, Link, Relink, RemoveTemporary, Unlink, make_plan

NAMES = [f"org.fsx.N{i}" for i in range(6)]
TEMPS = [".#flatpak-sysext.0123456789abcdef", ".#flatpak-sysext.fedcba9876543210"]
IGNORED = [".#org.fsx.N0.lck", ".#other"]
COMMITS = ["a" * 64, "b" * 64, "c" * 64]

# How an entry is made, given the two installations' paths: name of the kind → what
# ``targetdir.scan`` must call it (None: not listed at all, as systemd-sysext ignores it).
ENTRY_KINDS = {
    "ours": Kind.MANAGED,
    "other-installation": Kind.OTHER,
    "foreign-link": Kind.FOREIGN,
    "relative-link": Kind.FOREIGN,
    "unnormalised-link": Kind.FOREIGN,
    "prefix-lookalike": Kind.FOREIGN,
    "directory": Kind.FOREIGN,
    "file": Kind.FOREIGN,
    "fifo": Kind.FOREIGN,
}

NO_STORE = "/nonexistent/state"
"""The service's state directory: these links never lead into its store."""


@dataclasses.dataclass(frozen=True)
class World:
    root: Path

    @property
    def ours(self) -> Installation:
        return Installation("default", str(self.root / "inst"))

    @property
    def other(self) -> Installation:
        return Installation("extra", str(self.root / "inst-extra"))

    @property
    def target(self) -> Path:
        return self.root / "extensions"

    def deployment(self, inst: Installation, name: str, commit: str) -> str:
        return f"{inst.path}/app/{name}/x86_64/stable/{commit}/files/lib/extensions"


def make_entry(w: World, name: str, kind: str, commit: str) -> None:
    path = w.target / name
    if kind == "ours":
        os.symlink(w.deployment(w.ours, name, commit), path)
    elif kind == "other-installation":
        os.symlink(w.deployment(w.other, name, commit), path)
    elif kind == "foreign-link":
        os.symlink(f"/srv/images/{name}", path)
    elif kind == "relative-link":
        os.symlink(f"../inst/app/{name}/x86_64/stable/{commit}/files", path)
    elif kind == "unnormalised-link":
        # Points into our installation only after normalisation: not ours
        # (docs/reference.md#links-and-ownership).
        os.symlink(f"{w.ours.path}/app/../app/{name}/x86_64/stable/{commit}/files", path)
    elif kind == "prefix-lookalike":
        os.symlink(f"{w.ours.path}-not/app/{name}/x86_64/stable/{commit}/files", path)
    elif kind == "directory":
        path.mkdir()
        (path / "keep").write_text("mine")
    elif kind == "file":
        path.write_text("mine")
    else:
        os.mkfifo(path)


def snapshot(path: Path) -> tuple[int, int, str | None]:
    """What must not change about an entry that is not ours: inode, type, link text."""
    st_ = path.lstat()
    return st_.st_ino, stat.S_IFMT(st_.st_mode), (
        os.readlink(path) if stat.S_ISLNK(st_.st_mode) else None)


entries_strategy = st.dictionaries(
    st.sampled_from(NAMES),
    st.tuples(st.sampled_from(sorted(ENTRY_KINDS)), st.sampled_from(COMMITS)),
    max_size=len(NAMES))
temps_strategy = st.dictionaries(
    st.sampled_from(TEMPS + IGNORED),
    st.tuples(st.sampled_from(["ours", "other-installation", "file", "foreign-link"]),
              st.sampled_from(COMMITS)),
    max_size=4)
wanted_strategy = st.dictionaries(st.sampled_from(NAMES), st.sampled_from(COMMITS),
                                  max_size=len(NAMES))
held_strategy = st.frozensets(st.sampled_from(NAMES), max_size=3)


@settings(max_examples=400, deadline=None)
@given(entries=entries_strategy, temps=temps_strategy, wanted_commits=wanted_strategy,
       held=held_strategy, target_exists=st.booleans())
def test_applying_the_plan_reaches_the_wanted_state(
        entries: dict[str, tuple[str, str]], temps: dict[str, tuple[str, str]],
        wanted_commits: dict[str, str], held: frozenset[str], target_exists: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        w = World(Path(tmp))
        if target_exists or entries or temps:
            w.target.mkdir()
        for name, (kind, commit) in {**entries, **temps}.items():
            make_entry(w, name, kind, commit)
        wanted = {n: w.deployment(w.ours, n, c) for n, c in wanted_commits.items()}
        # Held names are those whose app could not be read: never wanted at the same time.
        held = held - set(wanted)
        before = {n: snapshot(w.target / n) for n in os.listdir(w.target)} \
            if w.target.exists() else {}

        scanned = targetdir.scan(str(w.target), [w.ours], [w.ours, w.other], NO_STORE)
        expected_kinds = {n: ENTRY_KINDS[k] for n, (k, _) in entries.items()}
        expected_kinds |= {n: Kind.TEMPORARY for n, (k, _) in temps.items()
                           if n in TEMPS and k == "ours"}
        assert {n: e.kind for n, e in scanned.items()} == expected_kinds

        plan = make_plan(wanted, scanned, held)
        ours = {n for n, e in scanned.items() if e.kind in (Kind.MANAGED, Kind.TEMPORARY)}
        for action in plan.actions:
            if isinstance(action, Link):
                assert action.name not in scanned
            else:
                assert action.name in ours, action
            assert not (isinstance(action, Unlink) and action.name in held)
        assert set(plan.conflicts) == {
            n for n in wanted if n in scanned and scanned[n].kind is not Kind.MANAGED}

        assert apply.apply(str(w.target), plan.actions) == []

        after = {n: snapshot(w.target / n) for n in os.listdir(w.target)} \
            if w.target.exists() else {}
        for name, snap in before.items():
            kept = name not in scanned or scanned[name].kind in (Kind.FOREIGN, Kind.OTHER)
            if kept or name in held:
                assert after.get(name) == snap, f"{name} changed"
        links = {n: os.readlink(w.target / n) for n in after
                 if (n in scanned and scanned[n].kind is Kind.MANAGED) or n not in before}
        expect: dict[str, str | None] = {n: t for n, t in wanted.items()
                                         if n not in plan.conflicts}
        expect |= {n: scanned[n].target for n in held
                   if n in scanned and scanned[n].kind is Kind.MANAGED}
        assert links == expect
        assert not [n for n in after if n in scanned and scanned[n].kind is Kind.TEMPORARY]

        rescanned = targetdir.scan(str(w.target), [w.ours], [w.ours, w.other], NO_STORE)
        again = make_plan(wanted, rescanned, held)
        assert again.actions == ()
        assert again.conflicts == plan.conflicts


@settings(max_examples=300, deadline=None)
@given(entries=entries_strategy, wanted_commits=wanted_strategy, held=held_strategy)
def test_the_plan_only_names_our_entries(
        entries: dict[str, tuple[str, str]], wanted_commits: dict[str, str],
        held: frozenset[str]) -> None:
    """The pure planner alone, simulated on a dict: every action is consistent."""
    w = World(Path("/nonexistent"))
    scanned: dict[str, Entry] = {}
    for name, (how, commit) in entries.items():
        inst = w.other if how == "other-installation" else w.ours
        target = w.deployment(inst, name, commit) if how in ("ours", "other-installation") \
            else None
        scanned[name] = Entry(name, ENTRY_KINDS[how], target)
    wanted = {n: w.deployment(w.ours, n, c) for n, c in wanted_commits.items()}
    plan = make_plan(wanted, scanned, held)
    state: dict[str, tuple[Kind, str | None]] = {n: (e.kind, e.target) for n, e in scanned.items()}
    for action in plan.actions:
        if isinstance(action, Link):
            assert action.name not in state
            state[action.name] = (Kind.MANAGED, action.target)
        elif isinstance(action, Relink):
            assert state[action.name] == (Kind.MANAGED, action.old)
            state[action.name] = (Kind.MANAGED, action.new)
        else:
            assert isinstance(action, (Unlink, RemoveTemporary))
            assert state.pop(action.name) == (Kind.MANAGED, action.old)
            assert action.name not in held
    for name, (kind, target) in state.items():
        if name in wanted and name not in plan.conflicts:
            assert (kind, target) == (Kind.MANAGED, wanted[name])
        elif kind is Kind.MANAGED and name not in wanted:
            assert name in held


def test_a_failed_directory_sync_blames_no_action(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Every link was made when only the final fsync fails: none of them may be
    reported as not applied, or host sync would skip it."""
    target = tmp_path / "extensions"
    actions = [Link("org.a.B", str(tmp_path / "b")), Link("org.a.C", str(tmp_path / "c"))]

    def fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", fsync)
    [failure] = apply.apply(str(target), actions)
    assert failure.action is None and "sync" in failure.message
    assert {p.name: os.readlink(p) for p in target.iterdir()} == {
        a.name: a.target for a in actions}
