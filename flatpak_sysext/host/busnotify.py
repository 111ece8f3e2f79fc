# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The service's D-Bus names, and the one message a reconcile sends it: ``Reread``, so
that the interface (dbusservice.py), started by D-Bus if it is not running, reads every
app's state again and signals ``AppChanged`` for each that changed
(docs/reference.md#d-bus-interface).

jeepney is imported only when a reconcile changed something: the trigger's quick path and
a run that changes nothing never load it.
"""

from __future__ import annotations

BUS_NAME = "org.flatpak.SystemExtensions1"
PATH = "/org/flatpak/SystemExtensions1"
INTERFACE = BUS_NAME
REREAD = "Reread"
AUTH_TIMEOUT = 1.0
"""Seconds to connect to the system bus: at boot, flatpak-sysext.service runs before
D-Bus, and a bus socket that is there but not answering yet must not hold it up."""


def reread() -> str | None:
    """Ask the interface to read the states again, without waiting for it to do so;
    None when sent, else why not (no system bus, at boot or in a container). A signal
    missed is no failure of the run: clients read the state itself."""
    try:
        from jeepney import DBusAddress, MessageFlag, new_method_call
        from jeepney.io.blocking import open_dbus_connection
    except ImportError as e:
        return str(e)
    msg = new_method_call(DBusAddress(PATH, BUS_NAME, INTERFACE), REREAD)
    msg.header.flags |= MessageFlag.no_reply_expected
    try:
        with open_dbus_connection("SYSTEM", auth_timeout=AUTH_TIMEOUT) as conn:
            conn.send(msg)
    except Exception as e:  # whatever the bus does, the reconcile's work is done
        return f"{type(e).__name__}: {e}"
    return None
