# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The real ``systemd-sysext`` of a release's cached root (testsupport/booted.py), run in a
chroot inside a private mount namespace: what it merges for a given host os-release, so
that tests can hold our verdict to each release's own. Nothing reaches the root on disk:
the extensions and the os-release live on a tmpfs over its ``/run``, the merge is seen in
the namespace only.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

# One namespace per call: the root bind-mounted on itself so that, as the chroot's "/",
# it is a shared mount point (without shared propagation the merge "succeeds" and
# nothing is visible), a tmpfs on its /run, /proc for systemd's look at its mounts.
_SCRIPT = r"""
set -eu
root=$1 stage=$2
mount --make-rprivate /
mount --bind "$root" "$root"
mount --make-shared "$root"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/run"
cp -a "$stage/." "$root/run/"
chroot "$root" /usr/bin/env -i PATH=/usr/bin:/bin SYSTEMD_OS_RELEASE=/run/os-release \
    /bin/sh -ec "$3"
"""


def sysext_version(root: Path) -> str:
    """What ``systemd-sysext --version`` of ``root`` prints (run in a chroot)."""
    return subprocess.run(["chroot", str(root), "/usr/bin/systemd-sysext", "--version"],
                          check=True, capture_output=True, text=True).stdout


def merged_names(root: Path, work: Path, os_release: str,
                 releases: Mapping[str, str]) -> frozenset[str]:
    """The names ``systemd-sysext merge`` of ``root`` merges, with ``os_release`` as the
    host's (``SYSTEMD_OS_RELEASE``) and one directory image per entry of ``releases``
    (its name → its extension-release text)."""
    stage = work / "stage"
    subprocess.run(["rm", "-rf", str(stage)], check=True)
    for name, text in releases.items():
        rel = stage / "extensions" / name / "usr/lib/extension-release.d"
        rel.mkdir(parents=True)
        (rel / f"extension-release.{name}").write_text(text)
    (stage / "os-release").write_text(os_release)
    return frozenset(in_chroot(root, stage, "systemd-sysext merge >&2\n"
                               "cat /usr/.systemd-sysext/extensions 2>/dev/null || true\n"
                               ).split())


def in_chroot(root: Path, stage: Path, script: str) -> str:
    """Run the shell ``script`` in ``root``, in a mount namespace of its own, with the
    content of ``stage`` copied to its ``/run`` (a tmpfs) and ``SYSTEMD_OS_RELEASE`` set
    to ``/run/os-release``; return what it printed. It must succeed."""
    result = subprocess.run(["unshare", "-m", "sh", "-c", _SCRIPT, "sh", str(root), str(stage),
                             script], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"in {root}: {script!r} failed:\n{result.stderr}")
    return result.stdout
