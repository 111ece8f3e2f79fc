# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""What a systemd unit runs as and may do, read from its file and drop-ins, as grant
sentences (docs/reference.md#what-counts-as-a-grant).

The model is closed: a directive is harmless only when this module knows it is (the
allow-lists below, each argued); every other directive of the unit's sections counts
as a grant and is named in a sentence of its own (``unit X sets Foo=bar``). Directives
that decide who the unit runs as and what it may do get sentences that say so in
words. A unit's main file and its drop-ins are read as systemd reads them: one list of
assignments, the main file first, then the drop-ins by file name; a later assignment
of a single-valued directive wins, an empty one resets a list.

Pure functions on parsed assignments; manifest.py holds the ``Unit`` they describe.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence

Entry = tuple[str, str, str]
"""(section, key, value) of one assignment, in file order."""

EXEC_KEYS = frozenset({"ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload",
                       "ExecStop", "ExecStopPre", "ExecStopPost", "ExecCondition"})

# The section holding a unit type's own settings; systemd ignores (with a warning) any
# other section than these, [Unit] and [Install], so they are not read either.
TYPE_SECTIONS = {".service": "Service", ".socket": "Socket", ".mount": "Mount",
                 ".swap": "Swap", ".automount": "Automount", ".timer": "Timer",
                 ".path": "Path", ".slice": "Slice", ".scope": "Scope"}

# Single-valued directives: the last assignment wins, an empty one restores the default.
_SCALARS = frozenset({"User", "Group", "DynamicUser", "NoNewPrivileges", "PAMName",
                      "PermissionsStartOnly", "DevicePolicy", "RootDirectory", "RootImage",
                      "BusName", "Delegate"})
# List directives the model knows: assignments add up, an empty one resets the list.
# Any other directive keeps every assignment (an unknown one may not reset).
_LISTS = EXEC_KEYS | {"SupplementaryGroups", "AmbientCapabilities", "CapabilityBoundingSet",
                      "SecureBits", "DeviceAllow", "BindPaths", "BindReadOnlyPaths",
                      "Environment", "EnvironmentFile", "Wants", "Requires", "Requisite",
                      "BindsTo", "Upholds", "OnFailure", "OnSuccess", "Conflicts"}

# [Unit]: text for people, ordering, conditions, and limits on how it may be started,
# none of which runs anything or reaches another unit. Dependencies that start or stop
# other units (Wants=, Requires=, Conflicts=, OnFailure=...) are grants: Wants=reboot.target
# reboots the host when a unit running as nobody starts.
_HARMLESS_UNIT = frozenset({
    "Description", "Documentation", "After", "Before", "PartOf", "ReloadPropagatedFrom",
    "StopPropagatedFrom", "DefaultDependencies", "RefuseManualStart", "RefuseManualStop",
    "AllowIsolate", "IgnoreOnIsolate", "StopWhenUnneeded", "CollectMode",
    "StartLimitIntervalSec", "StartLimitBurst", "JobTimeoutSec", "JobRunningTimeoutSec",
    "SourcePath"})
# [Install] is read only by the administrator's `systemctl enable`; these make that unit
# start with a target, nothing else (Alias= and Also= name other units: grants).
_HARMLESS_INSTALL = frozenset({"WantedBy", "RequiredBy", "UpheldBy", "DefaultInstance"})
# The unit type's own section: how systemd supervises the process (type, restarts,
# timeouts, signals, logging identity, timer schedules) and hardening that only takes
# away from what the process could do by default. Not here: what changes what a
# set-user-ID program inside would read (TemporaryFileSystem= with a mode, BindPaths=),
# and what lifts a limit the host sets for every unit (IPAddressAllow= over a slice's
# IPAddressDeny=, TasksMax= over DefaultTasksMax=). Dropping hardening is not a grant:
# the process then has what a unit that never had it has, which its user, commands and
# capabilities already state.
_HARMLESS_TYPE = frozenset({
    "Type", "ExitType", "RemainAfterExit", "GuessMainPID", "PIDFile", "Restart", "RestartSec",
    "RestartSteps", "RestartMaxDelaySec", "RestartMode", "RestartPreventExitStatus",
    "RestartForceExitStatus", "SuccessExitStatus", "TimeoutSec", "TimeoutStartSec",
    "TimeoutStopSec", "TimeoutAbortSec", "TimeoutStartFailureMode", "TimeoutStopFailureMode",
    "RuntimeMaxSec", "RuntimeRandomizedExtraSec", "WatchdogSec", "NotifyAccess", "KillMode",
    "KillSignal", "RestartKillSignal", "FinalKillSignal", "WatchdogSignal", "SendSIGHUP",
    "SendSIGKILL", "OOMPolicy", "FileDescriptorStoreMax", "FileDescriptorStorePreserve",
    "WorkingDirectory", "UMask", "SyslogIdentifier", "SyslogFacility", "SyslogLevel",
    "SyslogLevelPrefix", "LogLevelMax", "LogRateLimitIntervalSec", "LogRateLimitBurst",
    "UnsetEnvironment", "PassEnvironment",
    "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateNetwork",
    "PrivateIPC", "PrivateUsers", "PrivateMounts", "ProtectKernelTunables",
    "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock",
    "ProtectHostname", "ProtectProc", "ProcSubset", "RestrictNamespaces", "RestrictRealtime",
    "RestrictSUIDSGID", "RestrictAddressFamilies", "RestrictFileSystems", "LockPersonality",
    "MemoryDenyWriteExecute", "SystemCallFilter", "SystemCallArchitectures",
    "SystemCallErrorNumber", "SystemCallLog", "RemoveIPC", "ReadOnlyPaths", "ReadWritePaths",
    "InaccessiblePaths", "NoExecPaths", "ExecPaths", "IPAddressDeny", "MemoryMax",
    "MemoryHigh", "CPUQuota",
    "OnActiveSec", "OnBootSec", "OnStartupSec", "OnUnitActiveSec", "OnUnitInactiveSec",
    "OnCalendar", "AccuracySec", "RandomizedDelaySec", "FixedRandomDelay", "Persistent",
    "RemainAfterElapse"})
# Harmless only with these values: output to the journal or nowhere (file:PATH is opened
# by the manager, as root, whatever User= says); NoNewPrivileges= turned on.
_OUTPUT = frozenset({"journal", "null", "inherit", "kmsg", "journal+console", "kmsg+console"})
_TRUE = frozenset({"1", "yes", "y", "true", "t", "on"})
_HARMLESS_VALUES = {"StandardOutput": _OUTPUT, "StandardError": _OUTPUT,
                    "StandardInput": frozenset({"null"}), "NoNewPrivileges": _TRUE}
# Read by the dynamic loader (LD_*), by glibc's tunables (CVE-2023-4911) and iconv.
_LOADER = ("LD_", "GLIBC_TUNABLES=", "GCONV_PATH=")
_STARTS = frozenset({"Wants", "Requires", "Requisite", "BindsTo", "Upholds", "OnFailure",
                     "OnSuccess"})


def true(value: str) -> bool:
    """systemd's reading of a boolean."""
    return value.lower() in _TRUE


def effective(unit_type: str, entries: Iterable[Entry]) -> list[Entry]:
    """The assignments systemd applies to a unit of ``unit_type`` (``.service``...), in
    order: those of its sections, without ``X-`` extensions (systemd ignores them), with
    single-valued directives reduced to their last value and lists reset where an empty
    assignment says so."""
    sections = {"Unit", "Install", TYPE_SECTIONS.get(unit_type, "")} - {""}
    out: list[Entry | None] = []
    at: dict[tuple[str, str], list[int]] = {}  # where each directive's assignments are
    for section, key, value in entries:
        if section not in sections or key.startswith("X-"):
            continue
        if key in _SCALARS or (key in _LISTS and not value):
            for i in at.pop((section, key), []):  # each index is dropped once: linear
                out[i] = None
        if value or key not in _SCALARS | _LISTS:
            at.setdefault((section, key), []).append(len(out))
            out.append((section, key, value))
    return [e for e in out if e is not None]


def harmless(section: str, key: str, value: str) -> bool:
    """Whether the model knows this assignment grants nothing (see the allow-lists)."""
    if section == "Unit":
        return key in _HARMLESS_UNIT or key.startswith(("Condition", "Assert"))
    if section == "Install":
        return key in _HARMLESS_INSTALL
    if key in _HARMLESS_VALUES:
        return value.lower() in _HARMLESS_VALUES[key]
    return key in _HARMLESS_TYPE


def _split(value: str) -> list[str]:
    try:
        return shlex.split(value)
    except ValueError:  # an unbalanced quote: systemd would refuse it; say it as written
        return [value]


def _commands(value: str) -> list[str]:
    """The command lines of an ``Exec*=`` value (`` ; `` separates several)."""
    out: list[str] = []
    current: list[str] = []
    for word in value.split():
        if word == ";":
            out.append(" ".join(current))
            current = []
        else:
            current.append(word)
    out.append(" ".join(current))
    return [c for c in out if c]


def _prefix(line: str) -> tuple[str, str]:
    at = 0
    while at < len(line) and line[at] in "@-:+!|":
        at += 1
    return line[:at], line[at:]


def programs(exec_lines: Sequence[str]) -> list[tuple[str, str]]:
    """(key, program) of every command line of ``Key=value`` ``Exec*=`` assignments: the
    first word after systemd's prefixes (``-/usr/bin/foo arg`` runs ``/usr/bin/foo``)."""
    out = []
    for entry in exec_lines:
        key, _, value = entry.partition("=")
        out += [(key, _prefix(line)[1].split(" ", 1)[0]) for line in _commands(value)]
    return out


def exec_sentences(name: str, user: str, exec_lines: Sequence[str],
                   permissions_start_only: bool) -> set[str]:
    """One sentence per command line: what it runs, as whom, and what its prefixes do."""
    who = "a dynamic user" if user == "dynamic" else user
    out = set()
    for entry in exec_lines:
        key, _, value = entry.partition("=")
        for line in _commands(value):
            prefixes, command = _prefix(line)
            notes = []
            if "+" in prefixes:
                as_ = "root with full privileges (+)"
            elif permissions_start_only and key != "ExecStart":
                as_ = "root with full privileges (PermissionsStartOnly=)"
            elif "!!" in prefixes:
                as_ = f"{who}, or as root where the kernel lacks ambient capabilities (!!)"
            elif "!" in prefixes:
                as_ = "root, User=, Group= and SupplementaryGroups= not applied (!)"
            else:
                as_ = who
            if "@" in prefixes:
                notes.append("@: its second word is its argv[0]")
            if "|" in prefixes:
                notes.append("|: through the user's login shell")
            if "-" in prefixes:
                notes.append("-: failure ignored")
            if ":" in prefixes:
                notes.append(":: no variable expansion")
            tail = f" ({'; '.join(notes)})" if notes else ""
            out.add(f"unit {name} runs {command} as {as_}{tail}")
    return out


def _capabilities(name: str, value: str, kind: str, verb: str) -> list[str]:
    words = value.upper().split()
    if value.startswith("~"):
        every = " ".join(words).lstrip("~")
        return [f"unit {name} {verb} every capability but {every} ({kind})"]
    return [f"unit {name} {verb} capability {c} ({kind})" for c in words]


def setting_sentences(name: str, section: str, key: str, value: str) -> list[str]:
    """The sentences for one assignment :func:`harmless` did not let through."""
    u = f"unit {name}"
    if section in ("Unit", "Install"):
        if key in _STARTS:
            return [f"{u} starts {w} ({key}=)" for w in value.split()]
        if key == "Conflicts":
            return [f"{u} stops {w} when it starts (Conflicts=)" for w in value.split()]
        return [f"{u} sets {key}={value}"]
    simple = {"Group": f"{u} runs as group {value}",
              "PAMName": f"{u} opens a PAM session for service {value}",
              "DevicePolicy": f"{u} has device policy {value}",
              "DeviceAllow": f"{u} may access device {value}",
              "RootDirectory": f"{u} runs in root directory {value}",
              "RootImage": f"{u} runs in root image {value}",
              "EnvironmentFile": f"{u} takes its environment from {value}",
              "NoNewPrivileges": f"{u} may gain privileges through set-user-ID programs "
                                 f"(NoNewPrivileges={value})",
              "Delegate": f"{u} manages its own cgroup subtree (Delegate={value})"}
    if key == "Delegate" and value.lower() in ("0", "no", "n", "false", "f", "off"):
        return []  # the default
    if key in simple:
        return [simple[key]]
    if key == "SupplementaryGroups":
        return [f"{u} gets supplementary group {g}" for g in value.split()]
    if key == "AmbientCapabilities":
        return _capabilities(name, value, "ambient", "gets")
    if key == "CapabilityBoundingSet":
        return _capabilities(name, value, "bounding set", "may keep")
    if key == "SecureBits":
        return [f"{u} sets secure bit {b}" for b in value.split()]
    if key in ("BindPaths", "BindReadOnlyPaths"):
        how = "read-only" if key == "BindReadOnlyPaths" else "read-write"
        return [f"{u} bind-mounts {b} {how} ({key}=)" for b in _split(value)]
    if key == "Environment":
        return [f"{u} sets {a} for the dynamic loader" if a.startswith(_LOADER)
                else f"{u} runs with {a} in its environment" for a in _split(value)]
    return [f"{u} sets {key}={value}"]


def sentences(name: str, user: str, exec_lines: Sequence[str],
              settings: Iterable[Entry]) -> set[str]:
    """Every grant sentence of a unit (:class:`manifest.Unit`'s fields)."""
    listed = list(settings)
    # The unit type's PermissionsStartOnly= changes what its commands run as: said there.
    pso = [(s, k, v) for s, k, v in listed
           if k == "PermissionsStartOnly" and s not in ("Unit", "Install")]
    out = exec_sentences(name, user, exec_lines, any(true(v) for _, _, v in pso))
    for section, key, value in listed:
        if (section, key, value) not in pso:
            out.update(setting_sentences(name, section, key, value))
    return out
