# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""A polkit action's grant says whom it authorizes by default and how
(docs/reference.md#what-counts-as-a-grant): ``allow_active=yes`` never reads like
``auth_admin``, a change of defaults is a new grant, and consent given when the grants
did not say so (grant model 2) is asked for again."""

from __future__ import annotations

import json

import pytest

from flatpak_sysext.rules import contain, manifest
from flatpak_sysext.rules.manifest import GRANT_MODEL, Manifest, PolkitAction
from flatpak_sysext.state import consent
from flatpak_sysext.state.consent import Origin, Record

APP = "org.fsx.Polkit"
ACTION = f"{APP}.profile"
POLICY = "usr/share/polkit-1/actions/{}.policy"
ORIGIN = Origin("https://example.org/repo", "", ("AB" * 20,))


def policy(defaults: str, action: str = ACTION) -> bytes:
    return (f'<?xml version="1.0"?>\n<policyconfig><action id="{action}">'
            f"<description>x</description><message>x</message>"
            f"<defaults>{defaults}</defaults></action></policyconfig>").encode()


def polkit_grants(*files: bytes) -> set[str]:
    """The polkit sentences containment collects from a tree of these policy files."""
    contents = {POLICY.format(f"{APP}.{i}"): data for i, data in enumerate(files)}
    problems, _, m = contain.contain(APP, contents, contents)
    assert problems == []
    return {g for g in m.grants() if g.startswith("polkit action ")}


def said(value: str) -> str:
    return manifest.POLKIT_ANSWERS[value]


def test_an_action_any_active_user_may_use_without_a_password_says_so() -> None:
    got = polkit_grants(policy("<allow_any>auth_admin</allow_any><allow_inactive>auth_admin"
                               "</allow_inactive><allow_active>yes</allow_active>"))
    assert got == {f"polkit action {ACTION}: any active user {said('yes')}, "
                   f"others {said('auth_admin')}"}
    assert "without authentication" in said("yes") and "administrator" in said("auth_admin")


def test_defaults_left_out_are_polkits_no_and_equal_ones_are_said_once() -> None:
    assert polkit_grants(policy("")) == {f"polkit action {ACTION}: any user {said('no')}"}
    three = polkit_grants(policy("<allow_inactive>auth_self</allow_inactive>"
                                 "<allow_active>auth_admin_keep</allow_active>"))
    assert three == {f"polkit action {ACTION}: any active user {said('auth_admin_keep')}, "
                     f"inactive users {said('auth_self')}, others {said('no')}"}
    odd = polkit_grants(policy("<allow_active>maybe</allow_active>"))
    assert odd == {f"polkit action {ACTION}: any active user 'maybe' (which polkit does not "
                   f"know), others {said('no')}"}


def test_relaxing_a_default_is_a_new_grant() -> None:
    before = polkit_grants(policy("<allow_active>auth_admin</allow_active>"))
    after = polkit_grants(policy("<allow_active>yes</allow_active>"))
    assert before and after and not after <= before


def test_polkit_actions_round_trip_through_json_and_are_strict() -> None:
    m = Manifest(polkit_actions=(PolkitAction(ACTION, "no", "auth_self", "yes"),))
    assert Manifest.from_json(json.loads(json.dumps(m.to_json()))) == m
    for bad in ([ACTION], [{"id": ACTION}], [{**m.to_json()["polkit_actions"][0], "x": ""}]):
        with pytest.raises(ValueError):
            Manifest.from_json({**m.to_json(), "polkit_actions": bad})


def test_consent_given_under_grant_model_2_asks_again_for_polkit_actions_only() -> None:
    assert GRANT_MODEL == 3
    daemon = {"unit x.service runs /usr/libexec/x as root"}
    now_grants = frozenset(daemon | polkit_grants(policy("<allow_active>yes</allow_active>")))
    old = Record(ORIGIN, frozenset(daemon | {f"polkit action {ACTION}"}), "approve",
                 grant_model=2, keyring="k")
    verdict = consent.judge(old, consent.Now(ORIGIN, now_grants, True, "k", "c1"))
    assert not verdict.consented
    assert verdict.new_grants == now_grants - daemon
    assert "grant model 2" in verdict.why
    # An app whose sentences model 3 says alike stays consented to.
    plain = Record(ORIGIN, frozenset(daemon), "approve", grant_model=2, keyring="k")
    assert consent.judge(plain, consent.Now(ORIGIN, frozenset(daemon), True, "k",
                                            "c1")).consented
    # Approved again, the record is of the current model and matches.
    again = Record(ORIGIN, now_grants, "approve", keyring="k")
    assert again.grant_model == GRANT_MODEL
    assert consent.judge(again, consent.Now(ORIGIN, now_grants, True, "k", "c1")).consented
