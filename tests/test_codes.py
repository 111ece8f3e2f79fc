# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The one registry of problem codes (flatpak_sysext/codes.py) and everything that lists
codes besides it: the JSON schemas, docs/problems.md, and what a cache may hold."""

from __future__ import annotations

import re
from typing import Any

import pytest

from flatpak_sysext.report import Problem
from flatpak_sysext.rules import codes
from testsupport.flatpak import schema
from testsupport.source import SOURCE_ROOT

PROBLEMS_DOC = SOURCE_ROOT / "docs" / "problems.md"


def _code_enum(document: Any) -> list[str]:
    enum = document["definitions"]["problem"]["properties"]["code"]["enum"]
    assert isinstance(enum, list)
    return [str(code) for code in enum]


@pytest.mark.parametrize("name", ["check", "status"])
def test_the_schemas_list_exactly_the_registry(name: str) -> None:
    enum = _code_enum(schema(name))
    assert sorted(enum) == enum, "keep the enum sorted, so a change reads as one line"
    assert set(enum) == codes.ALL


def test_every_code_has_a_section_and_a_row_in_the_problem_reference() -> None:
    text = PROBLEMS_DOC.read_text()
    sections = re.findall(r"^## (\S+)$", text, re.M)
    assert sorted(sections) == sorted(codes.ALL)
    rows = dict(re.findall(r"^\| `([a-z-]+)` \| (rejects|warns)", text, re.M))
    assert rows == {**{c: "rejects" for c in codes.REJECTIONS},
                    **{c: "warns" for c in codes.WARNINGS}}


def test_a_code_is_either_a_rejection_or_a_warning() -> None:
    assert not codes.REJECTIONS.keys() & codes.WARNINGS.keys()
    assert all(re.fullmatch(r"[a-z]+(-[a-z]+)*", code) for code in codes.ALL)


def test_a_problem_read_back_must_carry_a_known_code() -> None:
    # A cache edited to carry a made-up code (or a code from a later version that this
    # one does not know how to act on) is corrupt, not a new kind of verdict.
    assert Problem.from_json({"code": codes.SETUID, "path": "usr/bin/x", "message": "m"})
    with pytest.raises(ValueError, match="unknown problem code"):
        Problem.from_json({"code": "made-up", "path": "usr/bin/x", "message": "m"})
