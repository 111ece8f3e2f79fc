# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Every privilege a unit takes is a grant (flatpak_sysext/unitgrants.py,
docs/reference.md#what-counts-as-a-grant): an update that adds any of them waits for
consent, and what it waits for is named."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flatpak_sysext.rules import contain, unitgrants
from flatpak_sysext.rules.manifest import Manifest
from flatpak_sysext.state import consent
from flatpak_sysext.state.consent import Origin, Record
from testsupport.flatpak import FlatpakEnv, TreeBuilder, consenting_to_nothing, daemon_tree

APP = "org.fsx.Grants"
UNITS = "usr/lib/systemd/system"
UNIT = f"{UNITS}/grantsd.service"
DAEMON = f"/usr/libexec/{APP}/grantsd"
START = f"{DAEMON} --foreground"
V1 = (f"[Unit]\nDescription={APP} daemon\nAfter=network.target\n\n"
      f"[Service]\nType=dbus\nBusName={APP}\nUser=nobody\nExecStart={START}\n"
      "Restart=on-failure\nProtectSystem=strict\nPrivateTmp=yes\nNoNewPrivileges=yes\n"
      "StandardOutput=journal\nX-Vendor=anything\n\n[Install]\nWantedBy=multi-user.target\n")
ORIGIN = Origin("https://example.org/repo", "", ("AB" * 20,))


def manifest(files: dict[str, str]) -> Manifest:
    """The manifest containment collects from a tree of these files (and the daemon)."""
    everything = {f"usr/libexec/{APP}/grantsd": "", **files}
    contents = {p: c.encode() for p, c in everything.items() if contain.needs_content(p)}
    problems, _, m = contain.contain(APP, everything, contents)
    assert problems == []
    return m


def grants(files: dict[str, str]) -> frozenset[str]:
    return manifest(files).grants()


def _with(service_lines: str) -> str:
    return V1.replace("[Service]\n", f"[Service]\n{service_lines}\n")


# The privileges the review saw an update take without consent: (what, the line its
# unit's [Service] gains, the sentence that must be new).
TAKEN = [
    ("ExecStartPre=+", f"ExecStartPre=+{DAEMON} --setup",
     f"unit grantsd.service runs {DAEMON} --setup as root with full privileges (+)"),
    ("ExecStartPost=!", "ExecStartPost=!/usr/bin/chown -R nobody /var/lib",
     "unit grantsd.service runs /usr/bin/chown -R nobody /var/lib as root, User=, Group= "
     "and SupplementaryGroups= not applied (!)"),
    ("AmbientCapabilities=", "AmbientCapabilities=cap_sys_admin",
     "unit grantsd.service gets capability CAP_SYS_ADMIN (ambient)"),
    ("SupplementaryGroups=", "SupplementaryGroups=video disk",
     "unit grantsd.service gets supplementary group disk"),
    ("an unknown directive", "ImportCredential=*", "unit grantsd.service sets ImportCredential=*"),
    ("LD_PRELOAD in Environment=", 'Environment="LD_PRELOAD=/usr/lib/x.so" MODE=fast',
     "unit grantsd.service sets LD_PRELOAD=/usr/lib/x.so for the dynamic loader"),
]
# (what an update adds, the files it adds or changes, the sentence that must be new)
UPDATES = [(what, {UNIT: _with(line)}, new) for what, line, new in TAKEN] + [
    ("ExecStartPre=!!", {UNIT: _with(f"ExecStartPre=!!{DAEMON} --caps")},
     f"unit grantsd.service runs {DAEMON} --caps as nobody, or as root where the kernel "
     "lacks ambient capabilities (!!)"),
    ("ExecStartPre=@", {UNIT: _with(f"ExecStartPre=@{DAEMON} grants-helper")},
     f"unit grantsd.service runs {DAEMON} grants-helper as nobody (@: its second word is "
     "its argv[0])"),
    ("a prefix that ignores failure", {UNIT: V1.replace(f"={START}", f"=-{START}")},
     f"unit grantsd.service runs {START} as nobody (-: failure ignored)"),
    ("a second command after ;", {UNIT: _with(f"ExecStartPre={DAEMON} ; +/bin/sh -c id")},
     "unit grantsd.service runs /bin/sh -c id as root with full privileges (+)"),
    ("other arguments", {UNIT: V1.replace(START, f"{DAEMON} -x")},
     f"unit grantsd.service runs {DAEMON} -x as nobody"),
    ("CapabilityBoundingSet=", {UNIT: _with("CapabilityBoundingSet=~CAP_SYS_MODULE")},
     "unit grantsd.service may keep every capability but CAP_SYS_MODULE (bounding set)"),
    ("Group=", {UNIT: _with("Group=shadow")}, "unit grantsd.service runs as group shadow"),
    ("a drop-in of its own unit setting User=root",
     {UNIT: V1, f"{UNITS}/grantsd.service.d/10-root.conf": "[Service]\nUser=root\n"},
     f"unit grantsd.service runs {START} as root"),
    ("EnvironmentFile=", {UNIT: _with("EnvironmentFile=-/etc/default/grants")},
     "unit grantsd.service takes its environment from -/etc/default/grants"),
    ("NoNewPrivileges= off", {UNIT: V1.replace("NoNewPrivileges=yes", "NoNewPrivileges=no")},
     "unit grantsd.service may gain privileges through set-user-ID programs "
     "(NoNewPrivileges=no)"),
    ("PAMName=", {UNIT: _with("PAMName=login")},
     "unit grantsd.service opens a PAM session for service login"),
    ("PermissionsStartOnly=",
     {UNIT: _with(f"PermissionsStartOnly=yes\nExecStartPre={DAEMON} --setup")},
     f"unit grantsd.service runs {DAEMON} --setup as root with full privileges "
     "(PermissionsStartOnly=)"),
    ("DeviceAllow=", {UNIT: _with("DeviceAllow=/dev/sda rw")},
     "unit grantsd.service may access device /dev/sda rw"),
    ("Delegate=", {UNIT: _with("Delegate=yes")},
     "unit grantsd.service manages its own cgroup subtree (Delegate=yes)"),
    ("RootDirectory=", {UNIT: _with("RootDirectory=/var/lib/org.fsx.Grants/root")},
     "unit grantsd.service runs in root directory /var/lib/org.fsx.Grants/root"),
    ("BindPaths=", {UNIT: _with("BindReadOnlyPaths=/etc/shadow:/run/x")},
     "unit grantsd.service bind-mounts /etc/shadow:/run/x read-only (BindReadOnlyPaths=)"),
    ("SecureBits=", {UNIT: _with("SecureBits=keep-caps")},
     "unit grantsd.service sets secure bit keep-caps"),
    ("output to a host file", {UNIT: _with("StandardOutput=file:/etc/passwd")},
     "unit grantsd.service sets StandardOutput=file:/etc/passwd"),
    ("a unit it starts", {UNIT: V1.replace("After=", "Wants=reboot.target\nAfter=")},
     "unit grantsd.service starts reboot.target (Wants=)"),
    ("D-Bus activation without systemd as root",
     {UNIT: V1, f"usr/share/dbus-1/system-services/{APP}.service":
      f"[D-BUS Service]\nName={APP}\nExec={DAEMON} --bus\nUser=root\n"},
     f"D-Bus activation of {APP} runs {DAEMON} --bus as root"),
    ("an alias that enabling writes over a host unit",
     {UNIT: V1 + "Alias=ssh.service\n"}, "unit grantsd.service sets Alias=ssh.service"),
]


@pytest.mark.parametrize("files,new", [u[1:] for u in UPDATES], ids=[u[0] for u in UPDATES])
def test_an_update_that_takes_a_privilege_waits_and_names_it(
        files: dict[str, str], new: str) -> None:
    approved = Record(ORIGIN, grants({UNIT: V1}), "approve")
    after = grants(files)
    now = consent.Now(ORIGIN, after, True, None, "c1")
    verdict = consent.judge(approved, now)
    assert not verdict.consented
    assert new in verdict.new_grants, sorted(verdict.new_grants)
    decision = consent.decide(None, _store(approved), APP, now, True)
    assert decision.by is None and new in decision.waiting


def _store(record: Record) -> consent.Store:
    store = consent.Store("/nonexistent")
    store.records[APP] = record
    store.initialised = True
    return store


# Directives whose value may restate what the unit already is (User=nobody, the default
# DynamicUser=no, Delegate=no, PermissionsStartOnly= with no command but ExecStart=).
_RESTATING = {"User", "DynamicUser", "Delegate", "PermissionsStartOnly", "BusName", "Type",
              "ExecStart"}
_DIRECTIVES = st.one_of(
    st.sampled_from(["ImportCredential", "LoadCredential", "OpenFile", "StateDirectory",
                     "RuntimeDirectory", "ListenStream", "Sockets", "Slice", "TTYPath",
                     "OOMScoreAdjust", "LimitNOFILE", "ExecSearchPath", "KeyringMode",
                     "IPAddressAllow", "TasksMax", "TemporaryFileSystem", "Nice",
                     "CPUSchedulingPolicy", "StandardInput", "StandardOutput"]),
    st.from_regex(r"\A[A-Z][A-Za-z]{2,24}\Z"))


@settings(max_examples=300, deadline=None)
@given(_DIRECTIVES, st.from_regex(r"\A[\w/:.~=@+*-][\w /:.~=@+*-]{0,40}\Z"))
def test_the_model_is_closed_whatever_a_unit_says_that_is_not_harmless_is_a_grant(
        key: str, value: str) -> None:
    value = value.strip()
    if key in _RESTATING or unitgrants.harmless("Service", key, value):
        return
    assert grants({UNIT: _with(f"{key}={value}")}) - grants({UNIT: V1})


def test_assignments_apply_as_systemd_reads_them() -> None:
    d = f"{UNITS}/grantsd.service.d"
    root_last = {UNIT: V1, f"{d}/10-a.conf": "[Service]\nUser=nobody\n",
                 f"{d}/20-b.conf": "[Service]\nUser=root\n"}
    root_first = {UNIT: V1, f"{d}/10-a.conf": "[Service]\nUser=root\n",
                  f"{d}/20-b.conf": "[Service]\nUser=nobody\n"}
    # Drop-ins apply after the unit, in file name order; the last User= wins.
    assert f"unit grantsd.service runs {START} as root" in grants(root_last)
    assert f"unit grantsd.service runs {START} as root" not in grants(root_first)
    # An empty assignment resets a list: the drop-in replaces the command, as systemd does.
    replaced = grants({UNIT: V1, f"{d}/50-x.conf": "[Service]\nExecStart=\n"
                                                   "ExecStart=+/bin/sh -c id\n"})
    assert "unit grantsd.service runs /bin/sh -c id as root with full privileges (+)" \
        in replaced
    assert f"unit grantsd.service runs {START} as nobody" not in replaced
    # User= outside [Service] is ignored by systemd: the unit runs as root, and says so.
    misplaced = grants({UNIT: V1.replace("User=nobody\n", "").replace(
        "[Unit]\n", "[Unit]\nUser=nobody\n")})
    assert {f"unit grantsd.service runs {START} as root",
            "unit grantsd.service sets User=nobody"} <= misplaced


def test_a_unit_that_only_restricts_and_supervises_grants_what_it_runs_as_whom() -> None:
    hardened = _with("CapabilityBoundingSet=\nProtectHome=yes\nSystemCallFilter=@system-service"
                     "\nRestrictNamespaces=yes\nTimeoutStopSec=5\nKillMode=mixed\n"
                     "StandardError=null\nReadWritePaths=/var/lib/org.fsx.Grants")
    hardened += "[Unit]\nConditionPathExists=/dev/kvm\nDocumentation=man:grantsd(8)\n"
    expected = {f"unit grantsd.service runs {START} as nobody",
                f"unit grantsd.service is started on demand for D-Bus name {APP}",
                f"owns D-Bus name {APP}"}
    assert grants({UNIT: V1}) == grants({UNIT: hardened}) == expected


def test_units_round_trip_through_json_with_their_settings() -> None:
    m = manifest({UNIT: _with("AmbientCapabilities=CAP_NET_RAW\nExecStartPre=+/bin/true")})
    assert m.units[0].settings == (("Service", "AmbientCapabilities", "CAP_NET_RAW"),)
    assert Manifest.from_json(json.loads(json.dumps(m.to_json()))) == m
    activated = manifest({UNIT: V1, f"usr/share/dbus-1/system-services/{APP}.service":
                          f"[D-BUS Service]\nName={APP}\nExec={DAEMON}\nUser=nobody\n"})
    assert activated.dbus_activated == ((APP, DAEMON, "nobody"),)
    assert Manifest.from_json(json.loads(json.dumps(activated.to_json()))) == activated
    data = m.to_json()
    for broken in ([["Service", "AmbientCapabilities"]], [[1, 2, 3]], "x"):
        data["units"][0]["settings"] = broken
        with pytest.raises(ValueError):
            Manifest.from_json(data)


def test_a_user_unit_runs_as_each_user_not_as_root_and_stays_apart_from_a_system_unit(
        ) -> None:
    # usr/lib/systemd/user: every user's own manager may start it, as that user (User= is
    # not for user units). A system unit of the same name is another unit.
    user_unit = "usr/lib/systemd/user/grantsd.service"
    agent = f"/usr/libexec/{APP}/agent"
    m = manifest({UNIT: V1, user_unit: f"[Service]\nExecStart={agent}\nUser=root\n"
                                        "AmbientCapabilities=CAP_NET_RAW\n"})
    assert [u.name for u in m.units] == [u.name for u in m.user_units] == ["grantsd.service"]
    assert m.units[0].exec == (f"ExecStart={START}",)  # nothing of the user unit's
    assert {g for g in m.grants() if g.startswith("user ")} == {
        f"user unit grantsd.service runs {agent} as each user whose session starts it",
        "user unit grantsd.service gets capability CAP_NET_RAW (ambient)"}
    assert f"unit grantsd.service runs {START} as nobody" in m.grants()
    assert not any(agent in g and "as root" in g for g in m.grants())
    assert Manifest.from_json(json.loads(json.dumps(m.to_json()))) == m


def _daemon(message: str, unit: str, drop_ins: dict[str, str] | None = None) -> TreeBuilder:
    """``daemon_tree``'s daemon, with this unit file and these drop-ins of it."""
    base = daemon_tree(APP, message)

    def build(root: Path) -> None:
        base(root)
        (root / UNIT).write_text(unit)
        for name, text in (drop_ins or {}).items():
            (root / f"{UNIT}.d").mkdir(exist_ok=True)
            (root / f"{UNIT}.d" / name).write_text(text)
    return build


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FlatpakEnv]:
    """A signed repository and an installation that consents to nothing."""
    env = consenting_to_nothing(tmp_path / "world")
    yield env
    env.close()


@pytest.mark.privileged
def test_updates_that_take_root_wait_for_consent_through_flatpak(world: FlatpakEnv) -> None:
    world.publish(APP, _daemon("v1", V1))
    world.install(APP)
    approve = world.sysext("approve", APP)
    assert approve.returncode == 0 and f"{APP}: linked" in approve.stdout, approve.stdout
    # v2 takes, in its unit, each privilege the review saw taken without consent.
    v2 = _with("\n".join(line for _, line, _ in TAKEN))
    for version, tree, new in [
            ("v2", _daemon("v2", v2), {sentence for _, _, sentence in TAKEN}),
            ("v3", _daemon("v3", v2, {"50-root.conf": "[Service]\nUser=root\n"}),
             {f"unit grantsd.service runs {START} as root"})]:
        world.publish(APP, tree)
        updated = world.update()
        # The install output names what is new, as does the next reconcile.
        assert all(n in updated.stdout + updated.stderr for n in new), (version, updated)
        out = world.sysext("reconcile")
        assert f"{APP}: unlinked, waiting:" in out.stdout, (version, out.stdout)
        assert all(n in out.stdout for n in new), (version, out.stdout)
        st = world.status()[APP]
        assert st["state"] == "waiting" and new <= set(st["new_grants"]), (version, st)
        assert world.links() == {}
        assert world.sysext("approve", APP).returncode == 0
        assert set(world.links()) == {APP}
