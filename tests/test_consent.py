# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Consent (flatpak_sysext/consent.py, docs/reference.md#consent): nothing is linked
without the administrator's consent, consent is pinned to the app's origin and to what
its extension grants, and an update that grants more waits for consent again."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flatpak_sysext.state import consent, keyring
from flatpak_sysext.state.consent import Origin, Record, Store
from testsupport.flatpak import FlatpakEnv, daemon_tree
from testsupport.prerequisites import require_flatpak, require_tools

APP = "org.fsx.Consent"
APP2 = "org.fsx.Later"


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlatpakEnv]:
    """A signed repository's remote added the way Flatpak adds it (no root needed for
    the repository; the remote is added to a throw-away installation)."""
    require_tools("flatpak", "gpg")
    env = FlatpakEnv(tmp_path_factory.mktemp("signed") / "world", signed=True)
    env.publish("org.fsx.Origin", None, declare=None)
    yield env
    env.close()


@pytest.mark.privileged
def test_the_origin_is_the_url_and_the_keyring_not_the_remote_name(signed: FlatpakEnv) -> None:
    origin = consent.origin_of(str(signed.system_dir), "test")
    # gpg's own fingerprint of the key that signs the repository.
    assert origin == Origin(f"file://{signed.repo}", "", (signed.key_id,))
    assert consent.origin_of(str(signed.system_dir), "absent") is None


GPG_PACKET = bytes([0x99, 0x00, 0x0D]) + bytes([4]) + b"\x00" * 12  # an old-format key


def test_keyring_parsing_is_strict() -> None:
    assert len(keyring.keyring_fingerprints(GPG_PACKET)) == 1
    for broken in (b"\x00", GPG_PACKET[:-1], bytes([0x99, 0x00, 0x02, 3, 0])):
        with pytest.raises(ValueError):
            keyring.keyring_fingerprints(broken)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_keyring_bytes_give_fingerprints_or_value_error(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        keyring.keyring_fingerprints(data)


ORIGIN = Origin("https://example.org/repo", "", ("AB" * 20,))


def now(origin: Origin | None, grants: set[str], *, signed: bool = True,
        ring: str | None = "k1", commit: str = "c1", stamp: int | None = 100) -> consent.Now:
    return consent.Now(origin, frozenset(grants), signed, ring, commit, lambda: stamp)


def test_the_verdict_follows_origin_and_grants() -> None:
    record = Record(ORIGIN, frozenset({"a", "b"}), "approve", keyring="k1")
    assert consent.judge(None, now(ORIGIN, {"a"})).consented is False
    assert consent.judge(record, now(ORIGIN, {"a"})).consented
    more = consent.judge(record, now(ORIGIN, {"a", "c"}))
    assert (more.consented, more.new_grants) == (False, frozenset({"c"}))
    moved = consent.judge(record, now(Origin("https://evil.example/repo", "", ORIGIN.keys),
                                      {"a"}))
    assert not moved.consented and "now comes from https://evil.example/repo" in moved.why
    rekeyed = consent.judge(record, now(Origin(ORIGIN.url, "", ("CD" * 20,)), {"a"}))
    assert not rekeyed.consented
    assert not consent.judge(record, now(None, set())).consented


def test_the_verdict_follows_the_pins() -> None:
    record = Record(ORIGIN, frozenset({"a"}), "approve", keyring="k1", linked_commit="c1",
                    linked_timestamp=100)
    # The same fingerprints in other keyring bytes: not the keyring pinned.
    swapped = consent.judge(record, now(ORIGIN, {"a"}, ring="k2"))
    assert not swapped.consented and "keyring" in swapped.why
    older = consent.judge(record, now(ORIGIN, {"a"}, commit="c0", stamp=99))
    assert not older.consented and "rollback" in older.why
    assert consent.judge(record, now(ORIGIN, {"a"}, commit="c2", stamp=101)).consented
    # Unsigned: the one commit approved, and no other.
    plain = Record(ORIGIN, frozenset({"a"}), "approve", commit="c1")
    assert consent.judge(plain, now(ORIGIN, {"a"}, signed=False)).consented
    new = consent.judge(plain, now(ORIGIN, {"a"}, signed=False, commit="c2", stamp=200))
    assert not new.consented and "does not verify signatures" in new.why


def test_an_allow_pattern_pins_the_keyring_at_the_first_link(tmp_path: Path) -> None:
    store = Store(str(tmp_path)).load()
    first = consent.decide("org.*", store, "org.a.B", now(ORIGIN, {"a"}), True)
    assert first.by is not None and "trust on first use" in first.by
    assert first.keep is not None and (first.keep.keyring, first.keep.how) == ("k1", "allow")
    store.migrate({"org.a.B": first.keep})
    assert consent.decide("org.*", store, "org.a.B", now(ORIGIN, {"a", "z"}), True).by
    assert consent.decide("org.*", store, "org.a.B", now(ORIGIN, {"a"}, ring="k2"),
                          True).by is None
    # Without the pattern, what it pinned is no consent.
    assert consent.decide(None, store, "org.a.B", now(ORIGIN, {"a"}), True).by is None


def test_the_store_round_trips_and_migrates_once(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "state")).load()
    assert not store.initialised
    linked = now(ORIGIN, {"x"})
    first = consent.decide(None, store, "org.a.B", linked, True)
    assert first.by == "migrated" and first.keep is not None
    assert store.migrate({"org.a.B": first.keep})
    # Once: a store initialised consents to nothing new by migration.
    assert consent.decide(None, store, "org.c.D", linked, True).by is None
    assert not store.migrate({"org.a.B": first.keep})  # nothing new to save
    store.offer(b"ring")
    store.save()
    again = Store(str(tmp_path / "state")).load()
    assert again.initialised and again.records == {"org.a.B": first.keep}
    assert os.stat(again.path).st_mode & 0o777 == 0o600


@pytest.mark.parametrize("content", [b"{", b"[]", json.dumps({"format": 1, "apps": {
    "org.a.B": {"origin": {"url": 1}, "grants": [], "how": "approve"}}}).encode()])
def test_a_corrupt_store_consents_to_nothing(tmp_path: Path, content: bytes) -> None:
    (tmp_path / consent.FILE_NAME).write_bytes(content)
    store = Store(str(tmp_path)).load()
    assert store.records == {} and store.initialised and store.warning


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FlatpakEnv]:
    """A signed repository and a system installation whose configuration consents to
    nothing: the default."""
    require_flatpak()
    env = FlatpakEnv(tmp_path / "world", signed=True)
    env.install_trigger()
    env.write_config({"allow": []})
    yield env
    env.close()


def _status(env: FlatpakEnv, app_id: str = APP) -> dict[str, Any]:
    return env.status()[app_id]


def _with_polkit(message: str) -> Any:
    daemon = daemon_tree(APP, message)

    def build(root: Path) -> None:
        daemon(root)
        actions = root / "usr/share/polkit-1/actions"
        actions.mkdir(parents=True)
        (actions / f"{APP}.policy").write_text(
            '<?xml version="1.0"?>\n<policyconfig><action id="org.fsx.Consent.trace">'
            "<description>trace</description><defaults><allow_any>no</allow_any>"
            "</defaults></action></policyconfig>\n")
    return build


@pytest.mark.privileged
def test_nothing_is_linked_without_consent_and_approve_links(world: FlatpakEnv) -> None:
    world.publish(APP, daemon_tree(APP, "v1"))
    out = world.install(APP)
    said = [line for line in (out.stdout + out.stderr).splitlines() if APP in line]
    # The install output says what it would grant and the one command that consents.
    assert any("waiting" in line and f"flatpak-sysext approve {APP}" in line
               and "consentd.service" in line for line in said), said
    assert world.sysext("reconcile").returncode == 0
    assert world.links() == {}
    st = _status(world)
    assert (st["state"], st["consent"]) == ("waiting", None)
    assert set(st["new_grants"]) == consent_grants(st) != set()
    approve = world.sysext("approve", APP)
    assert approve.returncode == 0, approve.stderr
    assert f"{APP}: consented to, from file://{world.repo}" in approve.stdout
    assert f"{APP}: linked" in approve.stdout
    assert set(world.links()) == {APP}
    assert _status(world)["consent"] == "approve"
    # Consent is the administrator's, in the service's root-only state directory.
    record = world.state_dir / consent.FILE_NAME
    assert os.stat(record).st_mode & 0o777 == 0o600
    revoke = world.sysext("revoke", APP)
    assert revoke.returncode == 0 and f"{APP}: unlinked" in revoke.stdout, revoke.stdout
    assert world.links() == {}


def consent_grants(st: dict[str, Any]) -> set[str]:
    """The grants of a status item's manifest, as the manifest module states them."""
    from flatpak_sysext.rules.manifest import Manifest

    return set(Manifest.from_json(st["manifest"]).grants())


@pytest.mark.privileged
def test_an_update_that_grants_more_waits_and_one_that_does_not_is_linked(
        world: FlatpakEnv) -> None:
    world.publish(APP, daemon_tree(APP, "v1"))
    world.install(APP)
    assert world.sysext("approve", APP).returncode == 0
    # v2 grants the same: linked with no question.
    world.publish(APP, daemon_tree(APP, "v2"))
    world.update()
    out = world.sysext("reconcile")
    assert f"{APP}: relinked" in out.stdout
    before = consent_grants(_status(world))
    # v3 adds a polkit action: the older version is unlinked, and the output says what
    # is new, and how to consent.
    world.publish(APP, _with_polkit("v3"))
    world.update()
    out = world.sysext("reconcile")
    assert f"{APP}: unlinked, waiting:" in out.stdout, out.stdout
    assert "org.fsx.Consent.trace" in out.stdout and f"approve {APP}" in out.stdout
    st = _status(world)
    assert st["state"] == "waiting"
    assert set(st["new_grants"]) == consent_grants(st) - before != set()
    assert world.links() == {}
    assert world.sysext("approve", APP).returncode == 0
    assert set(world.links()) == {APP}


@pytest.mark.privileged
def test_consent_is_pinned_to_the_origin_not_the_remote_name(world: FlatpakEnv) -> None:
    world.publish(APP, daemon_tree(APP, "v1"))
    world.install(APP)
    assert world.sysext("approve", APP).returncode == 0
    # Same remote name, another URL: whoever controls it is not who was consented to.
    world.flatpak("--system", "remote-modify", "--url=file:///srv/elsewhere", "test")
    out = world.sysext("reconcile")
    assert f"{APP}: unlinked, waiting:" in out.stdout, out.stdout
    assert "now comes from file:///srv/elsewhere" in out.stdout


@pytest.mark.privileged
def test_allow_patterns_never_cover_a_bundle(world: FlatpakEnv) -> None:
    world.write_config({"allow": ["org.fsx.*"]})
    world.publish(APP, daemon_tree(APP, "v1"))
    world.publish(APP2, daemon_tree(APP2, "v1"))
    world.install(APP)
    world.install_bundle(APP2, with_key=True)  # a key inside the bundle: "verified"
    assert world.sysext("reconcile").returncode == 0
    assert set(world.links()) == {APP}
    assert _status(world, APP)["consent"] == "allow pattern 'org.fsx.*'"
    assert _status(world, APP2)["state"] == "waiting"


@pytest.mark.privileged
def test_what_was_linked_before_consent_existed_stays_linked_once(world: FlatpakEnv) -> None:
    world.write_config({"allow": ["*"]})
    world.publish(APP, daemon_tree(APP, "v1"))
    world.install(APP)
    assert world.sysext("reconcile").returncode == 0
    # As after upgrading from a version without consent: no records, nothing allowed.
    (world.state_dir / consent.FILE_NAME).unlink()
    world.write_config({"allow": []})
    assert world.sysext("reconcile").returncode == 0
    assert set(world.links()) == {APP}
    assert _status(world)["consent"] == "migrated"
    # Once: an app installed afterwards waits.
    world.publish(APP2, daemon_tree(APP2, "v1"))
    world.install(APP2)
    assert world.sysext("reconcile").returncode == 0
    assert set(world.links()) == {APP}
    assert _status(world, APP2)["state"] == "waiting"
