# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The D-Bus interface's message handling without a bus (dbusservice.dispatch, polkitauth):
who may read what, when polkit is asked and how its answer becomes the reply, and the
Flatpak app a caller runs as. The bus, polkitd and a sandbox for real:
tests/test_booted_dbus.py."""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from jeepney import (
    DBusAddress,
    HeaderFields,
    Message,
    MessageFlag,
    MessageType,
    new_error,
    new_method_call,
    new_method_return,
)
from jeepney.low_level import Parser

from flatpak_sysext import dbusservice, polkitauth
from flatpak_sysext.dbusservice import AppInfo, Caller, Refused
from flatpak_sysext.state import consent, statefiles
from testsupport.prerequisites import require

SERVICE = DBusAddress(dbusservice.PATH, bus_name=dbusservice.BUS_NAME,
                      interface=dbusservice.INTERFACE)
WAITING = AppInfo("org.x.One", "waiting", ("grant a", "grant b"), "https://x.example",
                  "", ("ABCD",), ("grant b",), "d1")
OTHER = AppInfo("org.x.Two", "linked", ("grant c",), digest="d2")


class FakeBackend:
    def __init__(self, verdict: polkitauth.Verdict | None = None,
                 refuse: Refused | None = None) -> None:
        self.verdict = verdict or polkitauth.Verdict(True)
        self.refuse = refuse
        self.asked: list[tuple[str, dict[str, str], bool]] = []
        self.consented: list[tuple[str, str, str | None, str]] = []
        self.reread_calls = 0

    def apps(self) -> list[AppInfo]:
        return [WAITING, OTHER]

    def reread(self) -> dict[str, str]:
        self.reread_calls += 1
        return {}

    def status(self) -> list[dict[str, Any]]:
        return [{"app": "org.x.One", "state": "waiting"}, {"app": "org.x.Two", "state": "linked"},
                {"app": None, "name": "x.raw", "state": "foreign"},
                {"app": None, "name": None, "state": "warning", "reason": "odd"}]

    def authorize(self, caller: Caller, action: str, details: Mapping[str, str],
                  interactive: bool) -> polkitauth.Verdict:
        self.asked.append((action, dict(details), interactive))
        return self.verdict

    def consent(self, command: str, app_id: str, digest: str | None, by: str) -> str:
        if self.refuse is not None:
            raise self.refuse
        self.consented.append((command, app_id, digest, by))
        return f"{app_id}: done"


def call(method: str, signature: str | None = None, body: tuple[Any, ...] = (),
         interactive: bool = False) -> Message:
    msg = new_method_call(SERVICE, method, signature, body)
    if interactive:
        msg.header.flags |= MessageFlag.allow_interactive_authorization
    # As it arrives: serialised and parsed again.
    parser = Parser()
    parser.add_data(msg.serialise(serial=7))
    got = parser.get_next_message()
    assert got is not None
    return got


def reply(msg: Message, caller: Caller, backend: FakeBackend) -> Message:
    out = dbusservice.dispatch(msg, caller, backend)
    out.serialise(serial=8)  # the body matches its signature
    return out


def error_name(msg: Message) -> str:
    assert msg.header.message_type is MessageType.error, msg.body
    return str(msg.header.fields[HeaderFields.error_name])


HOST = Caller(":1.5", None)
IN_ONE = Caller(":1.6", "org.x.One", 1000)


def test_list_apps_everyone_sees_all_a_sandbox_only_itself() -> None:
    backend = FakeBackend()
    assert reply(call("ListApps"), HOST, backend).body == (
        [("org.x.One", "waiting"), ("org.x.Two", "linked")],)
    assert reply(call("ListApps"), IN_ONE, backend).body == ([("org.x.One", "waiting")],)


def test_status_is_roots_document_and_a_sandbox_reads_its_own_app_only() -> None:
    backend = FakeBackend()
    assert json.loads(reply(call("Status"), HOST, backend).body[0]) == backend.status()
    assert json.loads(reply(call("Status"), IN_ONE, backend).body[0]) == \
        [{"app": "org.x.One", "state": "waiting"}]
    assert "<method name=\"Status\">" in reply(call("Introspect"), HOST, backend).body[0]


def test_reread_is_anyones_and_needs_no_sender_still_there() -> None:
    backend = FakeBackend()
    for caller in (HOST, IN_ONE):
        out = reply(call("Reread"), caller, backend)
        assert out.header.message_type is MessageType.method_return
    assert backend.reread_calls == 2
    router = GoneRouter()  # the reconcile that sent it has exited
    dbusservice._handle(router, backend, call("Reread"))
    assert backend.reread_calls == 3 and router.bus_calls == []
    dbusservice._handle(router, backend, call("ListApps"))
    assert error_name(router.sent[-1]) == dbusservice.ERROR_DENIED


def test_get_app_tells_grants_origin_new_and_digest() -> None:
    info = dict(reply(call("GetApp", "s", ("org.x.One",)), IN_ONE, FakeBackend()).body[0])
    assert info["grants"] == ("as", ["grant a", "grant b"])
    assert info["new_grants"] == ("as", ["grant b"])
    assert info["url"] == ("s", "https://x.example") and info["keys"] == ("as", ["ABCD"])
    assert info["grants_digest"] == ("s", "d1")


def test_sandbox_cannot_read_or_change_another_app() -> None:
    backend = FakeBackend()
    for msg in (call("GetApp", "s", ("org.x.Two",)),
                call("Approve", "ss", ("org.x.Two", "d2"), interactive=True),
                call("Revoke", "s", ("org.x.Two",), interactive=True)):
        assert error_name(reply(msg, IN_ONE, backend)) == dbusservice.ERROR_DENIED
    assert backend.asked == [] and backend.consented == []


def test_approve_asks_polkit_with_the_app_and_its_grants() -> None:
    backend = FakeBackend()
    out = reply(call("Approve", "ss", ("org.x.One", "d1"), interactive=True), IN_ONE,
                backend)
    assert out.body == ("org.x.One: done",)
    assert backend.asked == [(polkitauth.ACTION_APPROVE,
                              {"app": "org.x.One", "grants": "grant a; grant b"}, True)]
    assert backend.consented == [("approve", "org.x.One", "d1",
                                  "uid 1000 over D-Bus from org.x.One")]


def test_challenge_without_interaction_flag_is_interactive_authorization_required() -> None:
    backend = FakeBackend(polkitauth.Verdict(False, challenge=True))
    out = reply(call("Revoke", "s", ("org.x.Two",)), HOST, backend)
    assert error_name(out) == dbusservice.ERROR_INTERACTIVE
    assert backend.asked[0][2] is False and backend.consented == []


def test_not_authorized_is_access_denied() -> None:
    for verdict in (polkitauth.Verdict(False), polkitauth.Verdict(False, challenge=True)):
        backend = FakeBackend(verdict)
        out = reply(call("Approve", "ss", ("org.x.One", "d1"), interactive=True), HOST,
                    backend)
        assert error_name(out) == dbusservice.ERROR_DENIED
        assert backend.consented == []


def test_refusals_keep_their_error_names() -> None:
    backend = FakeBackend(refuse=Refused("org.x.One changed", dbusservice.ERROR_CHANGED))
    out = reply(call("Approve", "ss", ("org.x.One", "stale"), interactive=True), HOST,
                backend)
    assert error_name(out) == dbusservice.ERROR_CHANGED and out.body == ("org.x.One changed",)


def test_an_app_not_installed_is_refused_before_polkit_is_asked() -> None:
    backend = FakeBackend()
    assert error_name(reply(call("Approve", "ss", ("org.x.Gone", "d"), interactive=True),
                            HOST, backend)) == dbusservice.ERROR_REFUSED
    assert error_name(reply(call("GetApp", "s", ("org.x.Gone",)), HOST, backend)) == \
        dbusservice.ERROR_ARGS
    assert backend.asked == []


def test_wrong_arguments_and_unknown_methods() -> None:
    backend = FakeBackend()
    assert error_name(reply(call("Approve", "s", ("org.x.One",)), HOST, backend)) == \
        dbusservice.ERROR_ARGS
    assert error_name(reply(call("Remove"), HOST, backend)) == dbusservice.ERROR_METHOD
    assert backend.asked == []


def test_check_authorization_message_and_verdict() -> None:
    msg = polkitauth.check_message(":1.9", polkitauth.ACTION_REVOKE, {"app": "org.x.One"},
                                   allow_interaction=False)
    subject, action, details, flags, cancel = msg.body
    assert subject == ("system-bus-name", {"name": ("s", ":1.9")})
    assert (action, details, flags, cancel) == (polkitauth.ACTION_REVOKE,
                                                {"app": "org.x.One"}, 0, "")
    msg.serialise(serial=1)
    interactive = polkitauth.check_message(":1.9", polkitauth.ACTION_REVOKE, {}, True)
    assert interactive.body[3] == polkitauth.ALLOW_USER_INTERACTION
    assert polkitauth.verdict(((False, True, {}),)) == polkitauth.Verdict(False, True)


def test_sandboxed_app_from_flatpak_info(tmp_path: Path) -> None:
    root = tmp_path / "42" / "root"
    root.mkdir(parents=True)
    assert polkitauth.sandboxed_app(42, str(tmp_path)) is None  # not in a sandbox
    (root / ".flatpak-info").write_text("[Application]\nname=org.x.One\n")
    assert polkitauth.sandboxed_app(42, str(tmp_path)) == "org.x.One"
    (root / ".flatpak-info").write_text("[Runtime]\nname=org.x.Platform\n")
    with pytest.raises(ValueError, match="names no app"):
        polkitauth.sandboxed_app(42, str(tmp_path))


def test_grants_digest_covers_grants_model_and_origin() -> None:
    origin = consent.Origin("https://x.example", "", ("ABCD",))
    base = consent.grants_digest(["b", "a"], 2, origin)
    assert base == consent.grants_digest(["a", "b"], 2, origin)
    assert len({base, consent.grants_digest(["a"], 2, origin),
                consent.grants_digest(["a", "b"], 3, origin),
                consent.grants_digest(["a", "b"], 2, consent.Origin("https://y", "", ("ABCD",))),
                consent.grants_digest(["a", "b"], 2, consent.Origin("https://x.example", "c",
                                                                    ("ABCD",))),
                consent.grants_digest(["a", "b"], 2, consent.Origin("https://x.example", "",
                                                                    ("EF",)))}) == 6


def test_app_changed_signal() -> None:
    signal = dbusservice.changed_signal("org.x.One", "linked")
    signal.serialise(serial=3)
    assert signal.header.message_type is MessageType.signal
    assert signal.header.fields[HeaderFields.member] == "AppChanged"
    assert signal.body == ("org.x.One", "linked")


@pytest.mark.privileged
def test_a_state_directory_of_another_user_is_never_advised_away(tmp_path: Path) -> None:
    require(os.geteuid() == 0, "chown needs root")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, 12345, 12345)
    with pytest.raises(OSError) as raised:
        statefiles.private_directory(str(state))
    assert "remove" not in str(raised.value) and "uid 12345" in str(raised.value)


class FakeRouter:
    """What _answer and identify use of jeepney's router: replies are kept; the bus says
    every caller is this process (no /.flatpak-info: outside any sandbox)."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.bus_calls: list[str] = []

    def send(self, msg: Message) -> None:
        self.sent.append(msg)

    def send_and_get_reply(self, msg: Message, timeout: float | None = None) -> Message:
        member = str(msg.header.fields[HeaderFields.member])
        self.bus_calls.append(member)
        return new_method_return(msg, "u", (os.getpid(),))


class BlockingBackend(FakeBackend):
    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def authorize(self, caller: Caller, action: str, details: Mapping[str, str],
                  interactive: bool) -> polkitauth.Verdict:
        assert self.release.wait(30)  # a password dialog left open
        return super().authorize(caller, action, details, interactive)


def test_a_pending_polkit_check_blocks_no_other_caller() -> None:
    router, backend = FakeRouter(), BlockingBackend()
    calls: queue.Queue[Message] = queue.Queue()
    calls.put(call("Approve", "ss", ("org.x.One", "d1"), interactive=True))
    calls.put(call("ListApps"))
    loop = threading.Thread(target=dbusservice._answer,
                            args=(router, backend, calls, 0.2))
    loop.start()
    deadline = time.monotonic() + 10
    while not router.sent and time.monotonic() < deadline:
        time.sleep(0.01)
    # ListApps answered while Approve still waits for polkit.
    assert [m.body for m in router.sent] == [([("org.x.One", "waiting"),
                                                ("org.x.Two", "linked")],)]
    backend.release.set()
    loop.join(10)
    assert not loop.is_alive()  # idle: it let the name go and returned
    assert router.sent[1].body == ("org.x.One: done",)
    assert router.bus_calls[-1] == "ReleaseName"


def test_a_call_that_expects_no_reply_gets_none() -> None:
    # A reconcile's Reread expects none: dbus-daemon would refuse one, and log it.
    router, backend = FakeRouter(), FakeBackend()
    quiet = new_method_call(SERVICE, "Reread")
    quiet.header.flags |= MessageFlag.no_reply_expected
    dbusservice._handle(router, backend, quiet)
    assert router.sent == []
    dbusservice._handle(router, backend, call("ListApps"))
    assert [m.header.message_type for m in router.sent] == [MessageType.method_return]


class GoneRouter(FakeRouter):
    """The bus of a caller that has disconnected: it cannot say who that was."""

    def send_and_get_reply(self, msg: Message, timeout: float | None = None) -> Message:
        self.bus_calls.append(str(msg.header.fields[HeaderFields.member]))
        return new_error(msg, "org.freedesktop.DBus.Error.NameHasNoOwner")


def test_past_max_workers_a_caller_hears_limits_exceeded() -> None:
    # Anyone may call, and each call may cost a whole evaluation as root: calls past
    # MAX_WORKERS at once are refused, not queued into more threads.
    router, backend = FakeRouter(), BlockingBackend()
    calls: queue.Queue[Message] = queue.Queue()
    for i in range(dbusservice.MAX_WORKERS):
        calls.put(call("Approve", "ss", ("org.x.One", f"d{i}"), interactive=True))
    calls.put(call("ListApps"))
    loop = threading.Thread(target=dbusservice._answer, args=(router, backend, calls, 0.2))
    loop.start()
    deadline = time.monotonic() + 10
    while not router.sent and time.monotonic() < deadline:
        time.sleep(0.01)
    [refused] = router.sent
    assert refused.header.message_type is MessageType.error
    assert refused.header.fields[HeaderFields.error_name] == dbusservice.ERROR_LIMITS
    backend.release.set()
    loop.join(20)
    assert not loop.is_alive()
    assert len(router.sent) == dbusservice.MAX_WORKERS + 1
