"""The validation cache: one JSON file per installation, keyed by deployment.

Deployments are immutable (a new commit is a new deploy directory), so a verdict stays
true for as long as the deployment, the declared path and the host it was judged
against are the same. Anything unexpected in the file discards it: a cache may only
save work, never change an outcome.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

from flatpak_sysext import apply
from flatpak_sysext.installation import Installation
from flatpak_sysext.report import Problem, TreeReport

FORMAT = 1


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
    }


def _report_from_json(data: Any) -> TreeReport:
    files = data["files"]
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ValueError("files must be a list of strings")
    return TreeReport(
        problems=tuple(Problem.from_json(p) for p in data["problems"]),
        warnings=tuple(Problem.from_json(w) for w in data["warnings"]),
        files=frozenset(files),
    )


class Cache:
    """Verdicts of one installation, loaded once and saved if anything changed."""

    def __init__(self, inst: Installation, fingerprint: str) -> None:
        self.path = os.path.join(apply.state_dir(inst), "cache.json")
        self.fingerprint = fingerprint
        self.entries: dict[str, tuple[Key, TreeReport]] = {}
        self.dirty = False
        self.warning: str | None = None

    def load(self) -> None:
        """Read the file; a missing one is empty, a corrupt or stale one is discarded."""
        try:
            with open(self.path, "rb") as f:
                data = json.loads(f.read())
            if data.get("format") != FORMAT or data.get("host") != self.fingerprint:
                self.dirty = True
                return
            for app_id, entry in data["apps"].items():
                key = Key(str(entry["deployment"]), str(entry["declared_path"]))
                self.entries[app_id] = (key, _report_from_json(entry["report"]))
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            self.entries.clear()
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
        if not self.dirty:
            return
        data = {
            "format": FORMAT,
            "host": self.fingerprint,
            "apps": {
                app_id: {"deployment": key.deployment, "declared_path": key.declared_path,
                         "report": _report_to_json(report)}
                for app_id, (key, report) in sorted(self.entries.items())
            },
        }
        os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
        apply.write_file(self.path, json.dumps(data, separators=(",", ":")).encode())
        self.dirty = False
