"""Flatpak deployments written by hand, laid out as Flatpak lays them out, for tests
that need an installation but not the real ``flatpak``."""

from __future__ import annotations

import os
from pathlib import Path

DECLARE = "[X-SystemExtension]\npath=ext\n"
"""Metadata declaring ``files/ext`` as the app's system extension."""


def gvariant_deploy(origin: str, commit: str, subpaths: list[str]) -> bytes:
    """Serialise ``(ssasta{sv})`` with an empty dict, as GLib would (1-byte offsets)."""
    body = origin.encode() + b"\0"
    ends = [len(body)]
    body += commit.encode() + b"\0"
    ends.append(len(body))
    arr = b""
    arr_ends = []
    for s in subpaths:
        arr += s.encode() + b"\0"
        arr_ends.append(len(arr))
    arr += bytes(arr_ends)
    body += arr
    ends.append(len(body))
    body += b"\0" * (-len(body) % 8) + (1234).to_bytes(8, "big")
    return body + bytes(reversed(ends))


def deploy(base: Path, active: str, meta: str = DECLARE, *, branch: str = "stable",
           make_current: bool = True, app: str = "org.a.B") -> Path:
    """Write a deployment of ``app`` under the installation ``base`` and make it active
    (and current), as Flatpak does: each link replaced atomically by a rename."""
    ref = base / "app" / app / "x86_64" / branch
    dep = ref / active
    (dep / "files" / "ext").mkdir(parents=True)
    (dep / "deploy").write_bytes(gvariant_deploy("origin", active[:64], []))
    (dep / "metadata").write_text(f"[Application]\nname={app}\n\n{meta}")
    tmp = ref / "active.tmp"
    os.symlink(active, tmp)
    os.rename(tmp, ref / "active")
    if make_current:
        current = base / "app" / app / "current.tmp"
        os.symlink(f"x86_64/{branch}", current)
        os.rename(current, base / "app" / app / "current")
    return dep
