# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The service's D-Bus interface on a booted host (docs/reference.md#d-bus-interface):
each Debian release under ``systemd-nspawn --boot`` (testsupport/booted.py), its own dbus-daemon
activating flatpak-sysext-dbus.service and its own polkitd deciding.

Two apps wait for consent. A user a polkit rule allows approves one with the command
line, which goes through the interface; a user no rule allows is refused, and told that
root or an authorization is needed; a stale grants digest is refused, whoever sends it;
a process inside the other app's sandbox, through Flatpak's D-Bus proxy, reads its own
state, sees no other app and cannot approve one; in a terminal, the command line's
pkttyagent asks for the administrator's password; idle, the service exits.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import jsonschema
import pytest

from testsupport import booted, dbuscall
from testsupport.booted import Machine
from testsupport.flatpak import FlatpakEnv, schema

pytestmark = [pytest.mark.privileged, pytest.mark.booted, pytest.mark.slow]

BY_USER = "org.fsx.ByUser"  # approved by an allowed user over D-Bus
SANDBOXED = "org.fsx.Sandboxed"  # asks for itself from inside its sandbox
BUS = "org.flatpak.SystemExtensions1"
ALLOWED, REFUSED = "alice", "bob"
RULE = f"""polkit.addRule(function(action, subject) {{
    if (action.id == "org.flatpak.systemextensions.approve" && subject.user == "{ALLOWED}")
        return polkit.Result.YES;
}});
"""


@dataclass
class Host:
    machine: Machine

    def call(self, *args: str, user: str = "root") -> tuple[int, str]:
        """fsx-dbuscall ARGS (a call without interactive authorization; errors by name)
        on the host, as ``user``."""
        cmd = ["fsx-dbuscall", *args]
        if user != "root":
            cmd = ["runuser", "-u", user, "--", *cmd]
        result = self.machine.run(*cmd, timeout=120)
        return result.returncode, result.stdout + result.stderr

    def field(self, app_id: str, key: str) -> str:
        """A string GetApp tells of ``app_id`` (Go prints the a{sv} as map[key:"value"])."""
        code, out = self.call("GetApp", app_id)
        assert code == 0, out
        found = re.search(rf'\b{key}:"([^"]*)"', out)
        assert found, out
        return found.group(1)

    def in_sandbox(self, *args: str) -> tuple[int, str]:
        """fsx-dbuscall ARGS inside SANDBOXED's sandbox, as root."""
        # Flatpak >= 1.15 has bwrap --disable-userns, which writes (in bwrap's own user
        # namespace) /proc/sys/user/max_user_namespaces, read-only in systemd-nspawn's
        # container: writable here in a mount namespace of this command's only.
        run = ["env", "XDG_RUNTIME_DIR=/run/user/0", "flatpak", "run",
               f"--command={dbuscall.CLIENT}", SANDBOXED, *args]
        result = self.machine.run(
            "unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount -o remount,bind,rw /proc/sys && exec "$@"', "sh", *run, timeout=120)
        return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope="module", params=booted.RELEASE_IDS)
def host(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest,
         ) -> Iterator[Host]:
    """A booted Debian release (each of testsupport.booted.RELEASES): two apps waiting,
    a user a polkit rule allows to approve and one it does not."""
    booted.require_booting("flatpak", "bwrap", "gpg")
    base = tmp_path_factory.mktemp("booted-dbus")
    daemon = booted.build_daemon(base / "fsx-daemon", "v1")
    client = dbuscall.build_client(base / "fsx-dbuscall")

    def publish(publisher: FlatpakEnv) -> None:
        publisher.publish(BY_USER, booted.daemon_tree(BY_USER, daemon))
        publisher.publish(SANDBOXED, dbuscall.calling_app_tree(SANDBOXED, daemon, client),
                          extra_metadata=dbuscall.TALK)

    with booted.booted_host(base, "fsx-dbus", publish, request.param) as (machine,
                                                                         _publisher):
        for user in (ALLOWED, REFUSED):
            machine.run("useradd", "-m", user, check=True)
        machine.run("sh", "-c", "cat > /etc/polkit-1/rules.d/50-fsx-test.rules",
                    input=RULE, check=True)
        machine.run("mkdir", "-m", "0700", "-p", "/run/user/0", check=True)
        shutil.copy2(client, machine.root / "usr/local/bin/fsx-dbuscall")
        for app_id in (BY_USER, SANDBOXED):
            machine.flatpak("install", "--system", "fsx", app_id)
        machine.settle()
        yield Host(machine)


def test_anyone_reads_the_apps_and_what_they_grant(host: Host) -> None:
    code, out = host.call("ListApps", user=REFUSED)
    assert code == 0, out
    assert f"[{BY_USER} waiting]" in out and f"[{SANDBOXED} waiting]" in out, out
    code, out = host.call("GetApp", BY_USER, user=REFUSED)
    assert code == 0, out
    assert booted.daemon_unit(BY_USER) in out and "file:///srv/fsx/repo" in out, out


def test_a_users_status_is_roots(host: Host) -> None:
    as_root = json.loads(host.machine.run("flatpak-sysext", "status", "--json",
                                          check=True).stdout)
    result = host.machine.run("runuser", "-u", REFUSED, "--", "flatpak-sysext", "status",
                              "--json")
    assert result.returncode == 0, result.stderr
    as_user = json.loads(result.stdout)
    jsonschema.validate(as_user, schema("status"))
    assert as_user == as_root
    item = next(i for i in as_user if i["app"] == BY_USER)
    assert item["remote"]["url"] == "file:///srv/fsx/repo" and item["remote"]["keys"]
    text = host.machine.run("runuser", "-u", REFUSED, "--", "flatpak-sysext", "status",
                            check=True).stdout
    assert f"  from: file:///srv/fsx/repo; keys {item['remote']['keys'][0]}" in text, text
    assert all(f"    {g}  (new)" in text.splitlines() for g in item["grants"]), text


def test_user_not_allowed_is_refused(host: Host) -> None:
    digest = host.field(BY_USER, "grants_digest")
    code, out = host.call("Approve", BY_USER, digest, user=REFUSED)
    assert code != 0 and "Error.InteractiveAuthorizationRequired" in out, out
    # The command line allows interaction; no agent can ask here, so polkit refuses.
    result = host.machine.run("runuser", "-u", REFUSED, "--", "flatpak-sysext", "approve",
                              BY_USER)
    assert result.returncode == 4, result.stdout + result.stderr
    assert "needs root, or an authorization" in result.stderr, result.stderr
    assert "remove it" not in result.stderr
    assert host.field(BY_USER, "state") == "waiting"


def test_stale_digest_is_refused(host: Host) -> None:
    code, out = host.call("Approve", BY_USER, "0" * 64)
    assert code != 0 and f"{BUS}.Error.Changed" in out, out
    assert host.field(BY_USER, "state") == "waiting"


def test_allowed_user_approves_and_the_daemon_answers(host: Host) -> None:
    result = host.machine.run("runuser", "-u", ALLOWED, "--", "flatpak-sysext", "approve",
                              BY_USER, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{BY_USER}: consented to" in result.stdout, result.stdout
    assert f"{BY_USER}: linked" in result.stdout, result.stdout
    assert host.field(BY_USER, "state") == "linked"
    assert BY_USER in host.machine.merged()
    uid = host.machine.run("id", "-u", ALLOWED, check=True).stdout.strip()
    record = json.loads(host.machine.run("cat", "/var/lib/flatpak-sysext/consent.json",
                                         check=True).stdout)["apps"][BY_USER]
    assert record["by"] == f"uid {uid} over D-Bus"
    daemon = booted.call_daemon(host.machine, BY_USER)
    assert daemon.returncode == 0 and daemon.stdout.strip() == 's "v1"', daemon.stderr
    status = host.machine.run("runuser", "-u", ALLOWED, "--", "flatpak-sysext", "status")
    assert f"{BY_USER}: linked" in status.stdout, status.stdout + status.stderr


def test_sandboxed_app_reads_its_own_state_only(host: Host) -> None:
    code, out = host.in_sandbox("GetApp", SANDBOXED)
    assert code == 0 and 'state:"waiting"' in out, out
    code, out = host.in_sandbox("ListApps")
    assert code == 0 and SANDBOXED in out and BY_USER not in out, out
    code, out = host.in_sandbox("GetApp", BY_USER)
    assert code != 0 and "org.freedesktop.DBus.Error.AccessDenied" in out, out
    code, out = host.in_sandbox("Revoke", BY_USER)
    assert code != 0 and "org.freedesktop.DBus.Error.AccessDenied" in out, out
    assert host.field(BY_USER, "state") == "linked"


def test_sandboxed_app_requests_consent_for_itself(host: Host) -> None:
    code, out = host.in_sandbox("Approve", SANDBOXED, host.field(SANDBOXED, "grants_digest"))
    # Root runs the sandbox here: polkit authorizes root without asking.
    assert code == 0 and f"{SANDBOXED}: consented to" in out, out
    assert host.field(SANDBOXED, "state") == "linked"


def test_in_a_terminal_the_authentication_agent_asks(host: Host) -> None:
    # No rule for revoke: the administrator's password, asked for by the pkttyagent the
    # command line starts on the user's terminal (script(1) gives it one).
    host.machine.run("chpasswd", input="root:fsx-admin\n", check=True)
    result = host.machine.run(
        "sh", "-c", f"(sleep 3; echo fsx-admin) | runuser -u {REFUSED} -- "
        f"script -qec 'flatpak-sysext revoke {BY_USER}' /dev/null", timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "AUTHENTICATING FOR org.flatpak.systemextensions.revoke" in out, out
    assert f"to stop {BY_USER} running code as root" in out, out  # the message names it
    assert f"{BY_USER}: consent taken back" in out, out
    assert host.field(BY_USER, "state") == "waiting"


LISTEN = """import sys
from jeepney import MatchRule
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection

bus, app, gone = sys.argv[1], sys.argv[2], sys.argv[3] == "gone"
rule = MatchRule(type="signal", sender=bus, interface=bus, member="AppChanged")
# The bus matches the name's owner; what arrives names the owner's unique name.
here = MatchRule(type="signal", interface=bus, member="AppChanged")
with open_dbus_connection("SYSTEM") as conn:
    conn.send_and_get_reply(message_bus.AddMatch(rule), timeout=10)
    print("ready", flush=True)
    with conn.filter(here) as signals:
        while True:
            body = conn.recv_until_filtered(signals, timeout=120).body
            print(*body, flush=True)
            if body[0] == app and (body[1] == "gone") == gone:
                break
"""


def signals_around(host: Host, app_id: str, gone: bool, *change: str) -> list[str]:
    """What a client of ``REFUSED``'s, subscribed to AppChanged from the bus name, hears
    until a signal says ``app_id`` is gone (or, without ``gone``, is not), while
    ``flatpak CHANGE`` runs as root."""
    host.machine.run("sh", "-c", "cat > /tmp/fsx-listen.py", input=LISTEN, check=True)
    want = "gone" if gone else "here"
    script = (f"runuser -u {REFUSED} -- python3 /tmp/fsx-listen.py {BUS} {app_id} {want} "
              "> /tmp/fsx-heard 2>&1 & pid=$!\n"
              "i=0; until grep -q ready /tmp/fsx-heard || [ $i -ge 100 ]; do sleep 0.1; "
              "i=$((i+1)); done\n"
              f"flatpak {' '.join(change)} -y --noninteractive >/dev/null 2>&1 || exit 3\n"
              "wait $pid; code=$?; cat /tmp/fsx-heard; exit $code")
    result = host.machine.run("sh", "-c", script, timeout=300)
    journal = host.machine.run("journalctl", "--no-pager", "-n", "80", "-u",
                               "flatpak-sysext.service", "-u", "flatpak-sysext-dbus.service",
                               "-u", "dbus.service").stdout
    assert result.returncode == 0, result.stdout + result.stderr + journal
    return result.stdout.splitlines()[1:]


def test_app_changed_follows_what_flatpak_does(host: Host) -> None:
    # The change is the service's reconcile after Flatpak's trigger: no Approve, no Revoke.
    heard = signals_around(host, SANDBOXED, True, "uninstall", "--system", SANDBOXED)
    assert heard[-1] == f"{SANDBOXED} gone", heard
    heard = signals_around(host, SANDBOXED, False, "install", "--system", "fsx", SANDBOXED)
    assert heard[-1] == f"{SANDBOXED} {host.field(SANDBOXED, 'state')}", heard
    # Each state once: a signal tells the state now.
    assert len({line for line in heard if line.startswith(f"{SANDBOXED} ")}) == 1, heard


def test_the_service_exits_when_idle(host: Host) -> None:
    unit = "flatpak-sysext-dbus.service"
    assert host.call("ListApps")[0] == 0
    assert host.machine.run("systemctl", "is-active", unit).stdout.strip() == "active"
    host.machine.wait_for(lambda: host.machine.run("systemctl", "is-active", unit)
                          .stdout.strip() == "inactive", f"{unit} to exit when idle", 90)
    assert host.machine.run("systemctl", "show", "-p", "Result", "--value", unit
                            ).stdout.strip() == "success"
