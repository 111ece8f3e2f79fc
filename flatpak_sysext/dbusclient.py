# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""``approve``, ``revoke`` and ``status`` for a user other than root: through the
service's D-Bus interface (dbusservice.py), where polkit decides and the user's
authentication agent asks; in a terminal without one, ``pkttyagent`` is started for the
call, as systemctl does (docs/reference.md#d-bus-interface).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from jeepney import DBusAddress, HeaderFields, Message, MessageFlag, MessageType, new_method_call
from jeepney.io.blocking import open_dbus_connection

from flatpak_sysext import dbusservice, statustext
from flatpak_sysext.host import hostcommands

SERVICE = DBusAddress(dbusservice.PATH, bus_name=dbusservice.BUS_NAME,
                      interface=dbusservice.INTERFACE)
NEEDS = ("needs root, or an authorization polkit gives through an authentication agent "
         "(none could ask here: run it as root, or where one runs, e.g. under pkttyagent)")


class CallFailed(Exception):
    """A call the service refused or could not answer; ``error`` is the D-Bus error."""

    def __init__(self, error: str, text: str) -> None:
        super().__init__(text)
        self.error = error


def call(method: str, signature: str | None = None, body: tuple[Any, ...] = (),
         interactive: bool = False) -> tuple[Any, ...]:
    """Call ``method`` of the service on the system bus; its reply's body. Raises
    CallFailed, OSError when there is no system bus."""
    msg = new_method_call(SERVICE, method, signature, body)
    if interactive:
        msg.header.flags |= MessageFlag.allow_interactive_authorization
    with open_dbus_connection("SYSTEM") as conn:
        reply: Message = conn.send_and_get_reply(msg, timeout=dbusservice.POLKIT_TIMEOUT + 60)
    if reply.header.message_type is MessageType.error:
        text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
        raise CallFailed(reply.header.fields.get(HeaderFields.error_name, ""), text)
    return tuple(reply.body)


@contextlib.contextmanager
def _agent() -> Iterator[None]:
    """``pkttyagent`` for this process while the block runs, if stdin is a terminal;
    nothing otherwise."""
    exe = hostcommands.tool("pkttyagent")
    if exe is None or not sys.stdin.isatty():
        yield
        return
    ready, tell = os.pipe()
    # --fallback lets a desktop's agent ask instead, but polkit uses a fallback agent only
    # for a process in a login session (not under su, runuser, sudo without one).
    fallback = ["--fallback"] if os.environ.get("XDG_SESSION_ID") else []
    agent = subprocess.Popen([exe, "--process", str(os.getpid()), "--notify-fd", str(tell),
                              *fallback], pass_fds=(tell,))
    os.close(tell)
    try:
        os.read(ready, 1)  # closed once the agent is registered, or has exited
        os.close(ready)
        yield
    finally:
        agent.terminate()
        agent.wait()


def _unvariant(info: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    return {k: v for k, (_sig, v) in info.items()}


def app_info(app_id: str) -> dict[str, Any]:
    """GetApp: what the service tells of ``app_id``."""
    return _unvariant(call("GetApp", "s", (app_id,))[0])


def consent(command: str, app_id: str) -> int:
    """``approve`` or ``revoke`` through the service; the exit code."""
    try:
        if command == "approve":
            info = app_info(app_id)
            print(f"{app_id} grants:" if info["grants"] else f"{app_id} grants nothing "
                  "beyond its files")
            for grant in info["grants"]:
                print(f"  {grant}")
            keys = ", ".join(info["keys"]) or "no keys"
            print(f"from {info['url'] or '(no URL)'}; collection "
                  f"{info['collection'] or '(none)'}; {keys}")
            args: tuple[Any, ...] = (app_id, info["grants_digest"])
            with _agent():
                outcome = call("Approve", "ss", args, interactive=True)[0]
        else:
            with _agent():
                outcome = call("Revoke", "s", (app_id,), interactive=True)[0]
    except CallFailed as e:
        if e.error in (dbusservice.ERROR_DENIED, dbusservice.ERROR_INTERACTIVE):
            print(f"flatpak-sysext: {command} {NEEDS} ({e})", file=sys.stderr)
            return 4
        print(f"flatpak-sysext: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"flatpak-sysext: {command} needs root, or the service's D-Bus interface, "
              f"which cannot be reached ({e})", file=sys.stderr)
        return 4
    print(outcome)
    return 0


def status(as_json: bool) -> int:
    """``status`` through the service, which reads the consent records as root: the same
    document as root's ``status --json``, and the same text (statustext.py)."""
    try:
        doc = json.loads(call("Status")[0])
    except (CallFailed, OSError, ValueError) as e:
        print(f"flatpak-sysext: status as a user other than root needs the service's D-Bus "
              f"interface, which does not answer ({e})", file=sys.stderr)
        return 4
    if as_json:
        json.dump(doc, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
        return 0
    for line in statustext.status_lines(doc):
        print(line)
    return 0
