# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Fedora's targeted policy's file contexts, built from its source with Debian's tools, for
tests/test_selinux.py (the generic type set judged against Fedora's policy too).

Fedora's packages are not reachable from here, its source is
(github.com/fedora-selinux/selinux-policy). ``make conf`` and ``make file_contexts`` of its
monolithic build need only make, m4 and Python (no checkpolicy): about a minute here.
Two things differ from Fedora's own modular build, which compiles each module apart: a
``.fc`` file without a final newline (``hostapd.fc``) would run into the next, and the
monolithic build enables modules Fedora ships as alternatives (``amavis`` and
``antivirus``...), whose specifications ``setfiles`` then refuses as contradictory; so
each ``.fc`` gets its newline and the first specification of a path wins. Paths under
``/usr`` and ``/opt`` that a tree names are not among those duplicates. The result is
cached (``$FLATPAK_SYSEXT_TEST_CACHE/fedora-selinux-policy-<commit>/``) and the test that
uses it is skipped where it is not: ``python -m testsupport.fedorapolicy CHECKOUT`` makes
it from a checkout of that repository.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from testsupport.booted import CACHE_DIR

COMMIT = "fd1d99621ded173a910d0e8cc077c53a70c135ae"
"""The source commit the cached file contexts were built from (2024-10-24)."""
FLAGS = ("MONOLITHIC=y", "TYPE=mcs", "NAME=targeted", "DISTRO=redhat", "UBAC=n")
"""What Fedora builds its ``targeted`` policy as (its spec file), monolithic."""


def cached() -> Path | None:
    """The cached ``file_contexts`` (its ``.subs_dist`` beside it), or None."""
    path = CACHE_DIR / f"fedora-selinux-policy-{COMMIT[:8]}/targeted/contexts/files/file_contexts"
    return path if path.is_file() else None


def _first_specifications(text: str) -> str:
    seen: set[tuple[str, str]] = set()
    out = []
    for line in text.splitlines(keepends=True):
        parts = line.split()
        if parts and not line.startswith("#"):
            key = (parts[0], parts[1] if len(parts) == 3 else "")
            if key in seen:
                continue
            seen.add(key)
        out.append(line)
    return "".join(out)


def build(checkout: Path) -> Path:
    """Build the file contexts from ``checkout`` (at :data:`COMMIT`) into the cache."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "policy"
        shutil.copytree(checkout, src, ignore=shutil.ignore_patterns(".git"))
        for fc in src.glob("policy/modules/*/*.fc"):
            if not fc.read_bytes().endswith(b"\n"):
                with fc.open("a") as f:
                    f.write("\n")
        for target in ("conf", "file_contexts"):
            subprocess.run(["make", "-C", str(src), *FLAGS, target], check=True,
                           stdout=subprocess.DEVNULL)
        dest = CACHE_DIR / f"fedora-selinux-policy-{COMMIT[:8]}/targeted/contexts/files"
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "file_contexts.subs_dist").write_bytes(
            (src / "config/file_contexts.subs_dist").read_bytes())
        (dest / "file_contexts").write_text(
            _first_specifications((src / "file_contexts").read_text()))
    return dest / "file_contexts"


if __name__ == "__main__":
    print(build(Path(sys.argv[1])))
