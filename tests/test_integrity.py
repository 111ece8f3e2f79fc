"""What a hostile app or a local user can do to the runs of everyone else, with the real
Flatpak (docs/reference.md#untrusted-input, docs/reference.md#locks,
docs/reference.md#state-directory).

Each case is what an attacker would actually do: ship a tree Flatpak deploys but the
host cannot name, take a lock, edit the files the sandboxed trigger can write.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testsupport.flatpak import FlatpakEnv, TreeBuilder, daemon_tree

pytestmark = pytest.mark.privileged

GOOD = "org.fsx.Good"
BAD = "org.fsx.Bad"


def deep_tree(app_id: str) -> TreeBuilder:
    """A valid daemon tree plus a file under 17 nested directories with 255-byte names:
    Flatpak deploys it (OSTree works relative to each directory), but its path on the
    host is longer than PATH_MAX."""
    base = daemon_tree(app_id, "deep")

    def build(root: Path) -> None:
        base(root)
        where = root / "usr/share" / app_id
        where.mkdir(parents=True)
        fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for i in range(17):
                name = chr(ord("a") + i) * 255
                os.mkdir(name, 0o755, dir_fd=fd)
                new = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = new
            os.close(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
        finally:
            os.close(fd)

    return build


def test_a_tree_the_host_cannot_name_is_rejected_and_stops_nobody(fenv: FlatpakEnv) -> None:
    fenv.publish(BAD, deep_tree(BAD))
    fenv.install(BAD)
    fenv.publish(GOOD, daemon_tree(GOOD, "good"))
    fenv.install(GOOD)
    for _ in range(2):  # and again: no verdict of the first run makes the second fail
        result = fenv.sysext("reconcile")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert fenv.links() == {GOOD: str(fenv.deploy_files(GOOD) / "lib/extensions")}
        bad = fenv.status()[BAD]
        assert bad["state"] == "rejected"
        assert {p["code"] for p in bad["problems"]} == {"path-too-long"}
