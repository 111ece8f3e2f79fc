# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""What ``status`` tells an administrator who must decide (statustext.py, output.py,
docs/reference.md#status): grants one per line, also for a linked app; where the app
comes from before consent; the polkit defaults; a hint on ``pending`` and on units that
are not enabled; the global warnings in ``--json``; why ``approve`` refuses."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from flatpak_sysext import approval, config, output, statustext
from flatpak_sysext.evaluate import AppStatus
from flatpak_sysext.flatpak.installation import Installation
from flatpak_sysext.report import Problem
from flatpak_sysext.rules.manifest import Manifest, PolkitAction, Unit
from flatpak_sysext.state import consent
from flatpak_sysext.state.consent import Origin
from testsupport.flatpak import consenting_to_nothing, daemon_tree, schema

APP = "org.fsx.Decide"
INST = Installation("default", "/var/lib/flatpak")
ORIGIN = Origin("https://example.org/repo", "org.example.Repo", ("AB" * 20, "CD" * 20))
MANIFEST = Manifest(units=(Unit("decide.service", "root", ("ExecStart=/usr/libexec/decide",)),),
                    polkit_actions=(PolkitAction(f"{APP}.run", "no", "no", "yes"),),
                    executables=("/usr/bin/decide",))
GRANTS = sorted(MANIFEST.grants())


def status(state: str, **kw: object) -> AppStatus:
    base: dict[str, object] = dict(
        app_id=APP, installation=INST, state=state, link=f"/var/lib/extensions/{APP}",
        target=None, commit="c0ffee" * 10, origin="example", problems=(), warnings=(),
        manifest=MANIFEST)
    return AppStatus(**{**base, **kw})  # type: ignore[arg-type]


def waiting(record: consent.Record | None) -> AppStatus:
    """A waiting app whose reason consent.decide words, as evaluate takes it."""
    now = consent.Now(ORIGIN, MANIFEST.grants(), True, "k", "c1")
    store = consent.Store("/nonexistent")
    store.initialised = True
    if record is not None:
        store.records[APP] = record
    decision = consent.decide(None, store, APP, now, False)
    assert decision.by is None
    return status("waiting", reason=decision.waiting, new_grants=decision.new_grants)


def lines_of(s: AppStatus, merged: frozenset[str] = frozenset(),
             hints: Sequence[str] = ()) -> list[str]:
    item = output.app_json(s, merged, None, ORIGIN, hints)
    jsonschema.validate([item], schema("status"))
    return statustext.app_lines(item)


@pytest.mark.parametrize("record", [
    None, consent.Record(ORIGIN, frozenset(GRANTS[:1]), "approve", keyring="k")])
def test_a_waiting_app_shows_its_grants_one_per_line_and_where_it_comes_from(
        record: consent.Record | None) -> None:
    s = waiting(record)
    lines = lines_of(s)
    assert lines[0] == f"{APP}: waiting"
    grant_lines = [line.strip().removesuffix("  (new)") for line in lines
                   if line.startswith("    ")]
    assert grant_lines == GRANTS
    for grant in GRANTS:  # never joined on one line
        assert sum(grant in line for line in lines) == 1
    marked = {line.strip().removesuffix("  (new)") for line in lines if line.endswith("(new)")}
    assert marked == set(s.new_grants)
    text = "\n".join(lines)
    for key in ORIGIN.keys:
        assert key in text
    assert ORIGIN.url in text and ORIGIN.collection_id in text
    assert f"flatpak-sysext approve {APP}" in text and "Approve" in text
    why = next(line for line in lines if "waiting for consent:" in line)
    assert ("never consented to" in why) == (record is None)


def test_polkit_defaults_read_as_what_they_allow() -> None:
    text = "\n".join(lines_of(status("linked", consent="approve")))
    assert (f"polkit action {APP}.run: any active user without authentication, "
            "others refused") in text
    assert "administrator" not in text


def test_a_linked_app_still_shows_its_grants_and_what_consents() -> None:
    lines = lines_of(status("linked", target="/snap", consent="approve"), frozenset({APP}))
    assert lines[0] == f"{APP}: linked, merged"
    assert [line.strip() for line in lines if line.startswith("    ")] == GRANTS
    assert "  consented to by: approve" in lines


def test_pending_and_units_not_enabled_get_a_hint() -> None:
    item = output.app_json(status("pending", target="/snap", consent="approve"),
                           frozenset(), hints=[output.PENDING])
    assert f"  hint: {output.PENDING}" in statustext.app_lines(item)
    asked: list[tuple[str, ...]] = []

    def systemctl(argv: Sequence[str]) -> tuple[int, str]:
        asked.append(tuple(argv))
        return {"a.service": (1, "disabled\n"), "b.service": (0, "enabled\n"),
                "c.service": (1, "masked\n")}[argv[-1]]

    hints = output.unit_hints(["a.service", "b.service", "c.service", "t@.service"], systemctl)
    assert [a[1:] for a in asked] == [("is-enabled", u) for u in ("a.service", "b.service",
                                                                  "c.service")]
    assert asked[0][0].startswith("/")  # by absolute path
    assert hints == [output.UNIT_STATES["disabled"].format(unit="a.service"),
                     output.UNIT_STATES["masked"].format(unit="c.service")]
    assert "systemctl enable a.service" in hints[0]


def test_waiting_apps_come_first_and_warnings_last() -> None:
    later = output.app_json(status("linked", app_id="org.aaa.First"), frozenset(), None, ORIGIN)
    wait = output.app_json(waiting(None), frozenset(), None, ORIGIN)
    warning: dict[str, Any] = {"app": None, "name": None, "state": "warning", "installation": None,
               "link": None, "target": None, "problems": [], "reason": "the cache is odd"}
    doc = [later, wait, warning]
    jsonschema.validate(doc, schema("status"))
    lines = statustext.status_lines(doc)
    assert lines[0] == f"{APP}: waiting"
    assert lines.index("org.aaa.First: linked") > lines.index(f"{APP}: waiting")
    assert lines[-1] == "warning: the cache is odd"
    unreadable = output.app_json(status("waiting"), frozenset(), None, None)
    assert "  from: its remote cannot be read (nothing vouches for it)" in \
        statustext.app_lines(unreadable)


@pytest.mark.parametrize("s, says", [
    (status("denied", reason="denied by the configuration's deny pattern 'org.fsx.*'"),
     "deny pattern 'org.fsx.*'"),
    (status("rejected", problems=(Problem("setuid", "usr/bin/x", "setuid"),
                                  Problem("dynamic-elf", "usr/bin/y", "dynamic"))),
     "dynamic-elf, setuid"),
    (status("linked", consent="allow pattern 'org.*'"), "allow pattern 'org.*'"),
])
def test_approve_says_why_it_refuses(s: AppStatus, says: str) -> None:
    assert says in approval.refused_why(s)


@pytest.mark.privileged
def test_status_of_a_real_installation_is_one_to_decide_from(tmp_path: Path) -> None:
    env = consenting_to_nothing(tmp_path / "world")
    try:
        env.publish(APP, daemon_tree(APP, "v1"))
        env.publish("org.fsx.Bad", daemon_tree("org.fsx.Bad", "x", static=False))
        env.install(APP)
        env.install("org.fsx.Bad")
        items = json.loads(env.sysext("status", "--json", check=True).stdout)
        jsonschema.validate(items, schema("status"))
        item = next(i for i in items if i["app"] == APP)
        assert item["remote"] == {"url": f"file://{env.repo}", "collection_id": "",
                                  "keys": [env.key_id]}
        assert item["grants"] == item["new_grants"] and item["grants"]
        warning = config.target_dir_warning(config.load(str(env.config_file)))
        assert warning and {"state": "warning", "reason": warning}.items() <= \
            next(i for i in items if i["state"] == "warning").items()

        text = env.sysext("status", check=True).stdout.splitlines()
        assert text[0] == f"{APP}: waiting"  # before org.fsx.Bad, waiting first
        block = text[:text.index("org.fsx.Bad: rejected")]
        assert f"  from: file://{env.repo}; keys {env.key_id}" in block
        assert [f"    {g}  (new)" for g in item["grants"]] == \
            [line for line in block if line.startswith("    ")]
        assert f"warning: {warning}" in text

        bad = env.sysext("approve", "org.fsx.Bad")
        assert bad.returncode == 1
        codes = sorted({p["code"] for p in next(i for i in items
                                                 if i["app"] == "org.fsx.Bad")["problems"]})
        assert f"({', '.join(codes)}; flatpak-sysext status says where)" in bad.stderr
    finally:
        env.close()
