# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The planner, without a filesystem: every combination of wanted, actual and held."""

from __future__ import annotations

import itertools

import pytest

from flatpak_sysext.plan import Entry, Kind, Link, Plan, Relink, RemoveTemporary, Unlink, make_plan

T1 = "/var/lib/flatpak/app/org.a.B/x86_64/stable/aaaa/files/lib/extensions"
T2 = "/var/lib/flatpak/app/org.a.B/x86_64/stable/bbbb/files/lib/extensions"
NAME = "org.a.B"

ENTRIES: dict[str, Entry | None] = {
    "absent": None,
    "managed-same": Entry(NAME, Kind.MANAGED, T1),
    "managed-old": Entry(NAME, Kind.MANAGED, T2),
    "other-installation": Entry(NAME, Kind.OTHER, T1),
    "foreign-symlink": Entry(NAME, Kind.FOREIGN, "/srv/images/b"),
    "foreign-directory": Entry(NAME, Kind.FOREIGN, None),
}

# (wanted?, entry, held?) → (actions, conflicts), as docs/reference.md#links-and-ownership
# and #safety describe them.
EXPECTED: dict[tuple[bool, str, bool], tuple[list[object], list[str]]] = {}
for held in (False, True):
    EXPECTED.update({
        (True, "absent", held): ([Link(NAME, T1)], []),
        (True, "managed-same", held): ([], []),
        (True, "managed-old", held): ([Relink(NAME, T2, T1)], []),
        (True, "other-installation", held): ([], [NAME]),
        (True, "foreign-symlink", held): ([], [NAME]),
        (True, "foreign-directory", held): ([], [NAME]),
        (False, "absent", held): ([], []),
        (False, "managed-same", held): ([] if held else [Unlink(NAME, T1)], []),
        (False, "managed-old", held): ([] if held else [Unlink(NAME, T2)], []),
        (False, "other-installation", held): ([], []),
        (False, "foreign-symlink", held): ([], []),
        (False, "foreign-directory", held): ([], []),
    })


@pytest.mark.parametrize(("wanted", "entry", "held"), sorted(EXPECTED))
def test_every_combination(wanted: bool, entry: str, held: bool) -> None:
    actual = ENTRIES[entry]
    plan = make_plan({NAME: T1} if wanted else {},
                     {NAME: actual} if actual is not None else {},
                     {NAME} if held else set())
    actions, conflicts = EXPECTED[(wanted, entry, held)]
    assert list(plan.actions) == actions
    assert list(plan.conflicts) == conflicts


def test_temporary_leftovers_are_removed_and_nothing_else_is_touched() -> None:
    tmp = ".#flatpak-sysext.0123456789abcdef"
    entries = {tmp: Entry(tmp, Kind.TEMPORARY, T1),
               "x.raw": Entry("x.raw", Kind.FOREIGN, None)}
    plan = make_plan({}, entries)
    assert plan.actions == (RemoveTemporary(tmp, T1),)
    assert not plan.changes_links


def test_many_names_combine_independently() -> None:
    names = [f"org.app.N{i}" for i in range(len(ENTRIES))]
    wanted = {n: T1 for n in names[::2]}
    entries = {}
    for n, (_, e) in zip(names, ENTRIES.items()):
        if e is not None:
            entries[n] = Entry(n, e.kind, e.target)
    plan = make_plan(wanted, entries)
    for n, (kind, _) in zip(names, ENTRIES.items()):
        single = make_plan({n: T1} if n in wanted else {},
                           {n: entries[n]} if n in entries else {})
        assert [a for a in plan.actions if a.name == n] == list(single.actions), kind
        assert (n in plan.conflicts) == (n in single.conflicts)


def test_applying_the_plan_reaches_the_wanted_state() -> None:
    """Simulate the actions on a dict: the result is exactly wanted plus foreign entries."""
    for combo in itertools.product([None, T1, T2], repeat=3):
        names = ["org.a.X", "org.a.Y", "org.a.Z"]
        entries = {n: Entry(n, Kind.MANAGED, t) for n, t in zip(names, combo) if t}
        entries["foreign.raw"] = Entry("foreign.raw", Kind.FOREIGN, None)
        wanted = {"org.a.X": T1, "org.a.Z": T2}
        plan: Plan = make_plan(wanted, entries)
        state = {n: e.target for n, e in entries.items()}
        for a in plan.actions:
            if isinstance(a, Link):
                assert a.name not in state
                state[a.name] = a.target
            elif isinstance(a, Relink):
                assert state[a.name] == a.old
                state[a.name] = a.new
            elif isinstance(a, (Unlink, RemoveTemporary)):
                assert state.pop(a.name) == a.old
        assert {n: t for n, t in state.items() if n != "foreign.raw"} == wanted
        assert state["foreign.raw"] is None
        final = {n: Entry(n, Kind.MANAGED, t) for n, t in state.items() if t}
        final["foreign.raw"] = entries["foreign.raw"]
        assert make_plan(wanted, final).actions == ()
