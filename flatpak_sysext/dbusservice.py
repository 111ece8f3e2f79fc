# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The service's system D-Bus interface (docs/reference.md#d-bus-interface).

``flatpak-sysext dbus-service`` runs it, D-Bus-activated as flatpak-sysext-dbus.service:
it owns BUS_NAME, answers every caller with what the apps declare and where they stand
(ListApps, GetApp), approves and revokes for callers polkit authorizes (Approve, Revoke:
the same code path as ``flatpak-sysext approve``, under the same lock), and exits when
idle. A caller inside a Flatpak sandbox reaches it through Flatpak's D-Bus proxy, and
reads and asks for its own app only.

:func:`dispatch` is the functional core (one call in, one reply out, a :class:`Backend`
for what it needs); :func:`serve` is the blocking jeepney loop around it, one thread per
call so that a polkit check waiting for a password never holds up other callers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import sys
import threading
from collections.abc import Mapping
from typing import Any, Protocol

from jeepney import (
    HeaderFields,
    MatchRule,
    Message,
    MessageFlag,
    MessageType,
    new_error,
    new_signal,
)
from jeepney import new_method_return as _return
from jeepney.bus_messages import message_bus
from jeepney.io.threading import DBusRouter, open_dbus_router
from jeepney.wrappers import DBusAddress

from flatpak_sysext import polkitauth
from flatpak_sysext.evaluate import AppStatus
from flatpak_sysext.host import busnotify
from flatpak_sysext.rules.manifest import GRANT_MODEL
from flatpak_sysext.state import consent

BUS_NAME = busnotify.BUS_NAME
PATH = busnotify.PATH
INTERFACE = busnotify.INTERFACE
ERROR_REFUSED = f"{BUS_NAME}.Error.Refused"
"""Approve or Revoke refused: not installed, rejected, denied, nothing to take back."""
ERROR_CHANGED = f"{BUS_NAME}.Error.Changed"
"""Approve's digest no longer names what the app grants and where it comes from."""
ERROR_FAILED = "org.freedesktop.DBus.Error.Failed"
ERROR_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
ERROR_INTERACTIVE = "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"
ERROR_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
ERROR_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
IDLE = 30.0
ERROR_LIMITS = "org.freedesktop.DBus.Error.LimitsExceeded"
MAX_WORKERS = 16
"""Calls answered at once (each in a thread: polkit's dialog may keep one for a minute)."""
"""Seconds without a call before the service exits (D-Bus starts it again)."""
POLKIT_TIMEOUT = 600.0
"""An authentication dialog left open: past this the call fails, as the caller's does."""
SIGNATURES = {"ListApps": "", "GetApp": "s", "Status": "", "Approve": "ss", "Revoke": "s",
              busnotify.REREAD: "", "Introspect": ""}
INTROSPECTION = f"""<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<node>
 <interface name="{INTERFACE}">
  <method name="ListApps"><arg direction="out" type="a(ss)" name="apps"/></method>
  <method name="GetApp"><arg direction="in" type="s" name="app"/>
   <arg direction="out" type="a{{sv}}" name="info"/></method>
  <method name="Status"><arg direction="out" type="s" name="json"/></method>
  <method name="Approve"><arg direction="in" type="s" name="app"/>
   <arg direction="in" type="s" name="grants_digest"/>
   <arg direction="out" type="s" name="outcome"/></method>
  <method name="Revoke"><arg direction="in" type="s" name="app"/>
   <arg direction="out" type="s" name="outcome"/></method>
  <method name="{busnotify.REREAD}"/>
  <signal name="AppChanged"><arg type="s" name="app"/><arg type="s" name="state"/></signal>
 </interface>
 <interface name="org.freedesktop.DBus.Introspectable">
  <method name="Introspect"><arg direction="out" type="s" name="xml"/></method>
 </interface>
</node>
"""


class Refused(Exception):
    """A consent call refused; ``error`` is its D-Bus error name."""

    def __init__(self, message: str, error: str = ERROR_REFUSED) -> None:
        super().__init__(message)
        self.error = error


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who sent a call."""

    sender: str
    app: str | None
    """The Flatpak app it runs as, or None outside any sandbox."""
    uid: int = -1

    def describe(self) -> str:
        """Who consents, for the consent record."""
        return f"uid {self.uid} over D-Bus" + (f" from {self.app}" if self.app else "")


@dataclasses.dataclass(frozen=True)
class AppInfo:
    """What GetApp tells of one app."""

    app_id: str
    state: str
    grants: tuple[str, ...]
    url: str = ""
    collection: str = ""
    keys: tuple[str, ...] = ()
    new_grants: tuple[str, ...] = ()
    digest: str = ""
    """consent.grants_digest of the grants and origin: what Approve names."""
    reason: str = ""

    def to_dbus(self) -> dict[str, tuple[str, Any]]:
        """The ``a{sv}`` GetApp answers."""
        return {"state": ("s", self.state), "grants": ("as", list(self.grants)),
                "url": ("s", self.url), "collection": ("s", self.collection),
                "keys": ("as", list(self.keys)), "new_grants": ("as", list(self.new_grants)),
                "grants_digest": ("s", self.digest), "reason": ("s", self.reason)}


def describe(app: AppStatus) -> AppInfo:
    """What GetApp tells of ``app``: its grants one per item, as ``check`` prints them,
    its origin, and the digest Approve names (empty when the remote cannot be read)."""
    grants = tuple(sorted(app.manifest.grants()))
    origin = consent.origin_of(app.installation.path, app.origin)
    if origin is None:
        return AppInfo(app.app_id, app.state, grants, new_grants=tuple(sorted(app.new_grants)),
                       reason=app.reason or f"its remote {app.origin!r} cannot be read")
    return AppInfo(app.app_id, app.state, grants, origin.url, origin.collection_id,
                   origin.keys, tuple(sorted(app.new_grants)),
                   consent.grants_digest(grants, GRANT_MODEL, origin), app.reason or "")


class Backend(Protocol):
    """What :func:`dispatch` needs from the host: the apps, polkit, the consent path."""

    def apps(self) -> list[AppInfo]:
        """Every app that declares a system extension."""
        ...

    def status(self) -> list[dict[str, Any]]:
        """The ``status --json`` document (schemas/status.schema.json)."""
        ...

    def reread(self) -> Mapping[str, str]:
        """Signal AppChanged for each change root's runs queued since the last time
        (state/announce.py); what was told."""
        ...

    def authorize(self, caller: Caller, action: str, details: Mapping[str, str],
                  interactive: bool) -> polkitauth.Verdict:
        """polkit's verdict on ``action`` for ``caller``."""
        ...

    def consent(self, command: str, app_id: str, digest: str | None, by: str) -> str:
        """Approve or revoke for ``by``; the outcome for people. Raises Refused."""
        ...


def _error(msg: Message, name: str, text: str) -> Message:
    return new_error(msg, name, "s", (text,))


def _not_installed(app_id: str) -> str:
    return f"{app_id}: not installed in a system installation, or declares no system extension"


def dispatch(msg: Message, caller: Caller, backend: Backend) -> Message:
    """The reply to the method call ``msg`` from ``caller``."""
    member = msg.header.fields.get(HeaderFields.member, "")
    signature = msg.header.fields.get(HeaderFields.signature, "")
    if member not in SIGNATURES:
        return _error(msg, ERROR_METHOD, f"no method {member!r}")
    if signature != SIGNATURES[member]:
        return _error(msg, ERROR_ARGS, f"{member} takes ({SIGNATURES[member]}), "
                                       f"not ({signature})")
    if member == "Introspect":
        return _return(msg, "s", (INTROSPECTION,))
    if member == busnotify.REREAD:
        # Anyone's: it signals only what root's runs queued, and costs next to nothing.
        backend.reread()
        return _return(msg, "", ())
    if member == "Status":
        # A sandboxed caller reads its own app only: no other app, entry nor warning.
        doc = [i for i in backend.status() if caller.app in (None, i["app"])]
        return _return(msg, "s", (json.dumps(doc, sort_keys=True),))
    apps = backend.apps()
    if member == "ListApps":
        return _return(msg, "a(ss)", ([(a.app_id, a.state) for a in apps
                                       if caller.app in (None, a.app_id)],))
    app_id = msg.body[0]
    if caller.app is not None and caller.app != app_id:
        return _error(msg, ERROR_DENIED, f"{caller.app} may ask only for itself, "
                                         f"not for {app_id}")
    info = next((a for a in apps if a.app_id == app_id), None)
    if member == "GetApp":
        if info is None:
            return _error(msg, ERROR_ARGS, _not_installed(app_id))
        return _return(msg, "a{sv}", (info.to_dbus(),))
    if info is None and member == "Approve":  # nothing to authorize (a record may be revoked)
        return _error(msg, ERROR_REFUSED, _not_installed(app_id))
    action = polkitauth.ACTION_APPROVE if member == "Approve" else polkitauth.ACTION_REVOKE
    details = {"app": app_id, "grants": "; ".join(info.grants) if info else ""}
    asks = polkitauth.interactive(msg)
    verdict = backend.authorize(caller, action, details, asks)
    if not verdict.allowed:
        if verdict.challenge and not asks:
            return _error(msg, ERROR_INTERACTIVE, f"{action} needs authentication: call "
                                                  "with interactive authorization allowed")
        return _error(msg, ERROR_DENIED, f"not authorized for {action}")
    try:
        outcome = backend.consent(member.lower(), app_id,
                                  msg.body[1] if member == "Approve" else None,
                                  caller.describe())
    except Refused as e:
        return _error(msg, e.error, str(e))
    return _return(msg, "s", (outcome,))


def changed_signal(app_id: str, state: str) -> Message:
    """AppChanged: ``app_id`` is now in ``state``."""
    return new_signal(DBusAddress(PATH, interface=INTERFACE), "AppChanged", "ss",
                      (app_id, state))


class HostBackend:
    """The real apps, the real polkit, the consent path of ``flatpak-sysext approve``."""

    def __init__(self, router: DBusRouter, environ: Mapping[str, str]) -> None:
        self.router = router
        self.environ = environ
        self.consenting = threading.Lock()
        """One consent call at a time: each evaluates, then takes the service's lock."""
        self.announcing = threading.Lock()
        """One reread at a time, so that each change is signalled once."""

    def _context(self) -> Any:
        from flatpak_sysext import config
        from flatpak_sysext.context import Context
        from flatpak_sysext.flatpak import installation

        try:
            cfg = config.load(config.config_path(None, self.environ), must_exist=False)
            insts = installation.system_installations(self.environ)
        except (config.ConfigError, installation.InstallationError) as e:
            raise Refused(str(e), ERROR_FAILED) from e
        return Context.create(cfg, insts, self.environ)

    def apps(self) -> list[AppInfo]:
        from flatpak_sysext.evaluate import evaluate

        ctx = self._context()
        return [describe(s) for s in evaluate(ctx, ctx.installations, save_cache=False).apps]

    def status(self) -> list[dict[str, Any]]:
        from flatpak_sysext import output
        from flatpak_sysext.evaluate import evaluate

        ctx = self._context()
        return output.status_json(ctx, evaluate(ctx, ctx.installations, save_cache=False))

    def authorize(self, caller: Caller, action: str, details: Mapping[str, str],
                  interactive: bool) -> polkitauth.Verdict:
        reply = self.router.send_and_get_reply(
            polkitauth.check_message(caller.sender, action, details, interactive),
            timeout=POLKIT_TIMEOUT)
        if reply.header.message_type is MessageType.error:
            return polkitauth.Verdict(False)
        return polkitauth.verdict(reply.body)

    def consent(self, command: str, app_id: str, digest: str | None, by: str) -> str:
        from flatpak_sysext import approval, output

        with self.consenting:
            try:
                ctx = self._context()
                lines, result = approval.consent_app(ctx, command, app_id, digest, by)
            except approval.Changed as e:
                raise Refused(str(e), ERROR_CHANGED) from e
            except approval.Refused as e:
                raise Refused(str(e)) from e
            output.print_reconcile(ctx, result, dry_run=False)  # to the journal
        self.reread()  # at once: the reconcile's own Reread then finds nothing queued
        # The reconcile's evaluation precedes what it applied: read the state again.
        state = next((a.state for a in self.apps() if a.app_id == app_id), "gone")
        return "\n".join([*lines, f"{app_id}: {state}"])

    def reread(self) -> dict[str, str]:
        from flatpak_sysext.state import announce

        with self.announcing:
            told = announce.take(self._context().state_dir)
            for app_id, state in told:
                self.router.send(changed_signal(app_id, state))
            return dict(told)


def identify(router: DBusRouter, sender: str, proc: str = "/proc") -> Caller:
    """The caller behind the bus name ``sender``: its process, and the Flatpak app that
    process runs as (through Flatpak's proxy: the proxy's, which shares the app's
    ``/.flatpak-info``). Raises ValueError if that cannot be told."""
    pid = router.send_and_get_reply(message_bus.GetConnectionUnixProcessID(sender),
                                    timeout=10)
    uid = router.send_and_get_reply(message_bus.GetConnectionUnixUser(sender), timeout=10)
    if MessageType.error in (pid.header.message_type, uid.header.message_type):
        raise ValueError(f"{sender}: its process cannot be told")
    return Caller(sender, polkitauth.sandboxed_app(int(pid.body[0]), proc), int(uid.body[0]))


def _handle(router: DBusRouter, backend: Backend, msg: Message) -> None:
    sender = msg.header.fields.get(HeaderFields.sender, "")
    try:
        # A reconcile does not wait for Reread: it is often gone when the service, which
        # D-Bus started for the call, reads it, and nothing of Reread depends on who sent it.
        caller = (Caller(sender, None) if msg.header.fields.get(HeaderFields.member)
                  == busnotify.REREAD else identify(router, sender))
        reply = dispatch(msg, caller, backend)
    except ValueError as e:
        reply = _error(msg, ERROR_DENIED, str(e))
    except Refused as e:
        reply = _error(msg, e.error, str(e))
    except Exception as e:  # one call's failure never ends the service for the others
        print(f"flatpak-sysext: {msg.header.fields.get(HeaderFields.member)} from {sender}: "
              f"{type(e).__name__}: {e}", file=sys.stderr)
        reply = _error(msg, ERROR_FAILED, f"{type(e).__name__}: {e}")
    if not msg.header.flags & MessageFlag.no_reply_expected:  # the bus refuses it otherwise
        router.send(reply)


def serve(environ: Mapping[str, str] | None = None, idle: float = IDLE) -> int:
    """Own BUS_NAME on the system bus and answer calls until ``idle`` seconds pass
    without one; returns the exit code."""
    env = os.environ if environ is None else environ
    calls: queue.Queue[Message] = queue.Queue()
    # The filter before the name: the call that activated us arrives as soon as we own it.
    with open_dbus_router("SYSTEM") as router, \
            router.filter(MatchRule(type="method_call"), queue=calls):
        got = router.send_and_get_reply(message_bus.RequestName(BUS_NAME, 4), timeout=10)
        if got.header.message_type is MessageType.error or got.body[0] != 1:
            print(f"flatpak-sysext: {BUS_NAME} cannot be owned: {got.body}", file=sys.stderr)
            return 1
        backend = HostBackend(router, env)
        # A reconcile's Reread that activated us is dropped by dbus-daemon when its
        # sender has already gone (it does not wait): what it queued is signalled now.
        try:
            backend.reread()
        except Exception as e:  # a signal missed is no failure: clients read the state
            print(f"flatpak-sysext: the queued AppChanged signals: {type(e).__name__}: {e}",
                  file=sys.stderr)
        _answer(router, backend, calls, idle)
    return 0


def _answer(router: DBusRouter, backend: Backend, calls: queue.Queue[Message],
            idle: float) -> None:
    """Each call in a thread of its own, until ``idle`` seconds pass without one and none
    is being answered; then the name is let go."""
    workers: list[threading.Thread] = []
    while True:
        workers = [w for w in workers if w.is_alive()]
        try:
            msg = calls.get(timeout=idle)
        except queue.Empty:
            if workers:
                continue
            # Calls sent from here on start a new instance; those already queued are
            # answered before this one exits.
            router.send_and_get_reply(message_bus.ReleaseName(BUS_NAME), timeout=10)
            break
        if len(workers) >= MAX_WORKERS:
            # Anyone may call Status, which evaluates every app as root: past this many
            # calls at once, the caller hears so instead of the service taking more.
            if not msg.header.flags & MessageFlag.no_reply_expected:
                router.send(_error(msg, ERROR_LIMITS, f"{MAX_WORKERS} calls are being "
                                   "answered; try again"))
            continue
        worker = threading.Thread(target=_handle, args=(router, backend, msg))
        worker.start()
        workers.append(worker)
    while not calls.empty():
        _handle(router, backend, calls.get())
    for worker in workers:
        worker.join()
