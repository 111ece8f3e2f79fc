# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""A Flatpak app that calls flatpak-sysext's D-Bus interface from inside its sandbox, for
tests/test_booted_dbus.py: the static Go client testsupport/dbuscall in ``/app/bin``,
beside a working daemon extension (booted.daemon_tree), and the bus policy an app's
``--system-talk-name=org.flatpak.SystemExtensions1`` finish-arg writes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from testsupport import booted

SOURCE = Path(__file__).resolve().parent / "dbuscall"
CLIENT = "/app/bin/fsx-dbuscall"
TALK = "\n[System Bus Policy]\norg.flatpak.SystemExtensions1=talk\n"
"""What ``flatpak build-finish --system-talk-name=org.flatpak.SystemExtensions1`` adds to
the app's metadata."""


def build_client(out: Path) -> Path:
    """Build fsx-dbuscall statically with Debian's golang-dbus-dev, as booted.build_daemon
    builds the daemon."""
    env = dict(os.environ, GO111MODULE="off", GOPATH=booted.GOPATH, CGO_ENABLED="0",
               GOCACHE=str(booted.CACHE_DIR / "go-build"), GOFLAGS="")
    subprocess.run(["go", "build", "-o", str(out), "."], cwd=SOURCE, env=env, check=True,
                   capture_output=True)
    return out


def calling_app_tree(app_id: str, daemon: Path, client: Path) -> booted.TreeBuilder:
    """The extension tree of booted.daemon_tree, and the client in the app's /app/bin
    (the tree is /app/lib/extensions: two levels below /app)."""
    extension = booted.daemon_tree(app_id, daemon)

    def build(root: Path) -> None:
        extension(root)
        bindir = root.parent.parent / "bin"
        bindir.mkdir(parents=True, exist_ok=True)
        (bindir / "fsx-dbuscall").write_bytes(client.read_bytes())
        (bindir / "fsx-dbuscall").chmod(0o755)

    return build
