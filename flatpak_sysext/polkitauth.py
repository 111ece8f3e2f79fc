# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Who calls the D-Bus interface, and whether polkit lets them: the messages to polkit's
``CheckAuthorization`` and what its answer means, and the Flatpak app a sandboxed caller
runs as (docs/reference.md#d-bus-interface).

Pure functions over jeepney messages; the bus loop (dbusservice.py) sends them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from jeepney import DBusAddress, Message, MessageFlag, new_method_call

from flatpak_sysext.flatpak import keyfile

ACTION_APPROVE = "org.flatpak.systemextensions.approve"
ACTION_REVOKE = "org.flatpak.systemextensions.revoke"
AUTHORITY = DBusAddress("/org/freedesktop/PolicyKit1/Authority",
                        bus_name="org.freedesktop.PolicyKit1",
                        interface="org.freedesktop.PolicyKit1.Authority")
ALLOW_USER_INTERACTION = 1
"""CheckAuthorizationFlags: polkit may ask the caller's authentication agent."""
FLATPAK_INFO_MAX = 64 << 10


@dataclasses.dataclass(frozen=True)
class Verdict:
    """polkit's answer to one check."""

    allowed: bool
    challenge: bool = False
    """Not allowed now, but it would be after authentication (an agent asking)."""


def interactive(msg: Message) -> bool:
    """Whether the caller set ALLOW_INTERACTIVE_AUTHORIZATION on its call: only then may
    polkit make its authentication agent ask."""
    return bool(msg.header.flags & MessageFlag.allow_interactive_authorization)


def check_message(sender: str, action: str, details: Mapping[str, str],
                  allow_interaction: bool) -> Message:
    """``CheckAuthorization`` of ``action`` for the bus name ``sender``; ``details`` are
    what the action's message and an administrator's rules can name (``$(app)``)."""
    subject = ("system-bus-name", {"name": ("s", sender)})
    flags = ALLOW_USER_INTERACTION if allow_interaction else 0
    return new_method_call(AUTHORITY, "CheckAuthorization", "(sa{sv})sa{ss}us",
                           (subject, action, dict(details), flags, ""))


def verdict(body: tuple[Any, ...]) -> Verdict:
    """The ``(bba{ss})`` result of ``CheckAuthorization``."""
    (allowed, challenge, _details), = body
    return Verdict(bool(allowed), bool(challenge))


def sandboxed_app(pid: int, proc: str = "/proc") -> str | None:
    """The Flatpak app ID process ``pid`` runs as, from its ``/.flatpak-info`` as portals
    read it; None for a process outside any Flatpak sandbox.

    Flatpak binds that file read-only into the sandbox and into its D-Bus proxy's, so a
    sandboxed app cannot change it. Raises ValueError when the process has one that does
    not name an app (a runtime's sandbox, a damaged file): such a caller is refused, never
    taken for a process outside any sandbox.
    """
    path = os.path.join(proc, str(pid), "root", ".flatpak-info")
    try:
        groups = keyfile.read(path)
    except FileNotFoundError:
        return None
    except (OSError, keyfile.KeyFileError) as e:
        raise ValueError(f"{path}: cannot be read ({e})") from e
    name = groups.get("Application", {}).get("name", "")
    if not name:
        raise ValueError(f"{path}: names no app")
    return name
