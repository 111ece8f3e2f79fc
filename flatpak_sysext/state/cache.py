# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The validation cache: one JSON file per installation, keyed by deployment.

The service's is in its own state directory (root only): only it writes what it then
trusts. A sandboxed trigger cannot write there, and keeps its own in the installation,
for its own output only; nothing that acts reads that one.

Deployments are immutable (a new commit is a new deploy directory), so a verdict stays
true for as long as the deployment, the declared path and the host it was judged
against are the same. Anything unexpected in the file discards it: a cache may only
save work, never change an outcome.

It also remembers, per app, which deployment was read last and what it declares
(installation.read_installation), so that a run reads only the deployments that changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

from flatpak_sysext.flatpak.installation import Declared, Installation, Remembered
from flatpak_sysext.report import Problem, TreeReport
from flatpak_sysext.rules.contain import RESTRICTED
from flatpak_sysext.rules.manifest import Manifest
from flatpak_sysext.state import fileio, statefiles

NAME = "cache.json"
FORMAT = 4  # 4: the manifest has SELinux types
MAX_SIZE = 256 << 20
"""Far above what 10,000 extensions need (a few MB); a larger file is discarded."""


@dataclasses.dataclass(frozen=True)
class Key:
    """What a verdict depends on, besides the host."""

    deployment: str
    """``<ARCH>/<BRANCH>/<active_id>`` of the app."""
    declared_path: str


def host_fingerprint(*parts: object) -> str:
    """A short digest of everything about the host and the validator that verdicts use."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def _report_to_json(report: TreeReport) -> dict[str, Any]:
    return {
        "problems": [p.to_json() for p in report.problems],
        "warnings": [w.to_json() for w in report.warnings],
        "files": sorted(report.files),
        "host_glibc": {library: list(versions) for library, versions in report.host_glibc},
        "manifest": report.manifest.to_json(),
        "restricted": {cls: list(paths) for cls, paths in report.restricted},
    }


def _report_from_json(data: Any) -> TreeReport:
    files = data["files"]
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ValueError("files must be a list of strings")
    # Absent from entries judged before allow_host_glibc existed, which needed nothing.
    glibc = data.get("host_glibc", {})
    if not all(isinstance(v, list) and all(isinstance(x, str) for x in v)
               for v in glibc.values()):
        raise ValueError("host_glibc must map libraries to lists of versions")
    return TreeReport(
        problems=tuple(Problem.from_json(p) for p in data["problems"]),
        warnings=tuple(Problem.from_json(w) for w in data["warnings"]),
        files=frozenset(files),
        host_glibc=tuple((str(k), tuple(v)) for k, v in sorted(glibc.items())),
        manifest=Manifest.from_json(data["manifest"]),
        restricted=_restricted_from_json(data["restricted"]),
    )


def _restricted_from_json(data: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(data, dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in data.values()):
        raise ValueError("restricted must map classes to lists of paths")
    if not set(data) <= set(RESTRICTED):
        raise ValueError(f"unknown restricted classes {sorted(set(data) - set(RESTRICTED))}")
    return tuple((str(k), tuple(v)) for k, v in sorted(data.items()))


def _remembered_to_json(r: Remembered) -> list[Any]:
    d = r.declared
    if d is None:
        return [r.current, r.active]
    return [r.current, r.active, {"origin": d.origin, "commit": d.commit, "path": d.declared_path,
                                  "root": d.root, "problems": [p.to_json() for p in d.problems]}]


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return value


def _remembered_from_json(inst: Installation, app_id: str, data: Any) -> Remembered:
    if not isinstance(data, list) or len(data) not in (2, 3):
        raise ValueError(f"{app_id}: not a remembered deployment")
    current, active = _string(data[0]), _string(data[1])
    arch, sep, branch = current.partition("/")
    if not sep or "/" in branch or "/" in active:
        raise ValueError(f"{app_id}: not a deployment path: {current}/{active}")
    if len(data) == 2:
        return Remembered(current, active, None)
    d = data[2]
    root = d["root"]
    files = os.path.join(inst.path, "app", app_id, current, active, "files")
    if root is not None and (not isinstance(root, str) or not root.startswith(files + "/")):
        raise ValueError(f"{app_id}: extension root {root!r} is not in its deployment")
    declared = Declared(inst, app_id, arch, branch, active, _string(d["origin"]),
                        _string(d["commit"]), _string(d["path"]), root,
                        tuple(Problem.from_json(p) for p in d["problems"]))
    return Remembered(current, active, declared)


class Cache:
    """Verdicts of one installation, loaded once and saved if anything changed."""

    def __init__(self, inst: Installation, fingerprint: str, state_dir: str | None) -> None:
        """The cache of ``inst`` in the service's ``state_dir``, or with None the
        sandboxed trigger's own, in the installation."""
        self.inst = inst
        self.state_dir = state_dir
        where = (statefiles.directory(inst.path) if state_dir is None
                 else statefiles.installation_directory(state_dir, inst.path))
        self.path = os.path.join(where, NAME)
        self.fingerprint = fingerprint
        self.entries: dict[str, tuple[Key, TreeReport]] = {}
        self.scan: dict[str, Remembered] = {}
        """The memo of installation.read_installation, updated in place by it."""
        self._scan_saved: dict[str, Remembered] = {}
        self.dirty = False
        self.warning: str | None = None

    def load(self) -> None:
        """Read the file; a missing one is empty, a corrupt or stale one is discarded."""
        try:
            data = json.loads(fileio.read_regular(self.path, MAX_SIZE))
            if data.get("format") != FORMAT or data.get("host") != self.fingerprint:
                self.dirty = True
                return
            for app_id, entry in data["apps"].items():
                key = Key(str(entry["deployment"]), str(entry["declared_path"]))
                self.entries[app_id] = (key, _report_from_json(entry["report"]))
            for app_id, entry in data["scan"].items():
                self.scan[app_id] = _remembered_from_json(self.inst, app_id, entry)
            self._scan_saved = dict(self.scan)
        except (FileNotFoundError, PermissionError):
            return  # None yet, or (status as a user) not ours to read.
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
            # RecursionError: json's answer to nesting deep enough (a forged file).
            self.entries.clear()
            self.scan.clear()
            self.dirty = True
            self.warning = f"{self.path}: discarded a corrupt cache ({type(e).__name__}: {e})"

    def get(self, app_id: str, key: Key) -> TreeReport | None:
        """The cached verdict for this deployment, if there is one."""
        hit = self.entries.get(app_id)
        return hit[1] if hit is not None and hit[0] == key else None

    def put(self, app_id: str, key: Key, report: TreeReport) -> None:
        self.entries[app_id] = (key, report)
        self.dirty = True

    def retain(self, app_ids: set[str]) -> None:
        """Forget apps that are no longer installed."""
        for app_id in set(self.entries) - app_ids:
            del self.entries[app_id]
            self.dirty = True

    def save(self) -> None:
        """Write the file atomically if anything changed; raises OSError."""
        if not self.dirty and self.scan == self._scan_saved:
            return
        data = {
            "format": FORMAT,
            "host": self.fingerprint,
            "apps": {
                app_id: {"deployment": key.deployment, "declared_path": key.declared_path,
                         "report": _report_to_json(report)}
                for app_id, (key, report) in sorted(self.entries.items())
            },
            "scan": {app_id: _remembered_to_json(r) for app_id, r in sorted(self.scan.items())},
        }
        if self.state_dir is None:
            os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
        else:
            statefiles.installation_directory(self.state_dir, self.inst.path, create=True)
        statefiles.write_file(self.path, json.dumps(data, separators=(",", ":")).encode(),
                              mode=0o644 if self.state_dir is None else 0o600)
        self.dirty = False
        self._scan_saved = dict(self.scan)
