# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""``systemd-sysext refresh``, as host sync runs it, on each release's real systemd-sysext
(testsupport/chrootsysext.py): a link moved to a new snapshot is merged, never skipped.

systemd 260 and later skip a refresh when they believe nothing changed
(``--always-refresh=yes`` opts out, and 252 refuses that option); an extension changed
in place goes unnoticed there. Host sync never changes a snapshot in place: an update is
a new snapshot in the store and the link is moved to it, which every release merges,
so host sync runs plain ``refresh`` everywhere (docs/reference.md#host-sync).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from testsupport import booted, chrootsysext

pytestmark = [pytest.mark.privileged, pytest.mark.merge, pytest.mark.slow]

# Two snapshots of one app, made in the same second with the same extension-release: only
# the link's target tells them apart. The link moves as targetdir moves it (a new link
# renamed over the old one). A refresh with nothing changed shows the release's skipping.
SCRIPT = r"""
mkdir -p /run/extensions
ln -s /run/snaps/one /run/extensions/fsx
systemd-sysext merge >/dev/null
cat /usr/share/fsx/which
systemd-sysext refresh 2>&1 | grep -q "no change was found" && echo skipped || echo refreshed
ln -s /run/snaps/two /run/extensions/.fsx.new && mv -T /run/extensions/.fsx.new /run/extensions/fsx
systemd-sysext refresh 2>&1 | grep -q "no change was found" && echo skipped || echo refreshed
cat /usr/share/fsx/which
rm /run/extensions/fsx
systemd-sysext refresh >/dev/null
cat /usr/share/fsx/which 2>/dev/null || echo gone
"""


@pytest.mark.parametrize("name", booted.RELEASE_IDS)
def test_a_relink_to_a_new_snapshot_is_always_merged(name: str, tmp_path: Path) -> None:
    booted.require_booting("unshare", "chroot")
    root = booted.cached_root(name)
    stage = tmp_path / "stage"
    for snap in ("one", "two"):
        tree = stage / "snaps" / snap / "usr"
        (tree / "lib/extension-release.d").mkdir(parents=True)
        (tree / "lib/extension-release.d/extension-release.fsx").write_text("ID=_any\n")
        (tree / "share/fsx").mkdir(parents=True)
        (tree / "share/fsx/which").write_text(f"{snap}\n")
    (stage / "os-release").write_text("ID=debian\n")
    version = chrootsysext.sysext_version(root)
    skips = int(version.split()[1]) >= 260
    seen = chrootsysext.in_chroot(root, stage, SCRIPT).split()
    assert seen == ["one", "skipped" if skips else "refreshed", "refreshed", "two", "gone"], (
        version)
