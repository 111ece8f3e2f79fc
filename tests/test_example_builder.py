# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""examples/flatpak-builder builds with the real flatpak-builder, offline, into a signed
repository; its extension passes ``check``, and installed it waits for consent until
``approve`` links it (the recipe docs/app-developers.md gives)."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from testsupport import builder
from testsupport.flatpak import ARCH, consenting_to_nothing
from testsupport.prerequisites import require_tools

APP = "org.example.App"

pytestmark = [pytest.mark.privileged, pytest.mark.slow]


def test_example_builds_passes_check_and_waits_for_consent(tmp_path: Path) -> None:
    require_tools("flatpak-builder", "gcc", builder.BUSYBOX)
    env = consenting_to_nothing(tmp_path / "env")
    try:
        builder.publish_runtimes(env, builder.manifest())
        built = builder.build_example(env, tmp_path / "work")
        assert built.returncode == 0, built.stdout + built.stderr

        # The extension is declared through finish-args, in the metadata flatpak reads.
        metadata = configparser.ConfigParser(interpolation=None)
        metadata.read(tmp_path / "work/build/metadata")
        assert metadata["X-SystemExtension"]["path"] == "lib/extensions"
        tree = tmp_path / "work/build/files/lib/extensions"
        check = env.sysext("check", str(tree))
        assert check.returncode == 0, check.stdout + check.stderr
        assert f"{APP} ({tree}): accepted" in check.stdout, check.stdout

        env.flatpak("--system", "install", "-y", "--noninteractive", "test",
                    f"app/{APP}/{ARCH}/master")
        assert env.status()[APP]["state"] == "waiting"
        assert env.links() == {}
        approve = env.sysext("approve", APP)
        assert approve.returncode == 0, approve.stdout + approve.stderr
        assert env.status()[APP]["state"] == "linked"
        assert set(env.links()) == {APP}
    finally:
        env.close()
