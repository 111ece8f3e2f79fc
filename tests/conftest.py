"""Shared fixtures: a private Flatpak world per test, and the CI rule on skips."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.flatpaktools import FlatpakEnv, have_flatpak


def require(condition: bool, why: str) -> None:
    """Skip when ``condition`` is false, except in CI, where the real thing must run."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run this test, but {why}")
    pytest.skip(why)


def require_tracing() -> None:
    """What the fault and concurrency tests need: a real Flatpak, strace and unshare."""
    require(have_flatpak() and shutil.which("strace") is not None
            and shutil.which("unshare") is not None,
            "flatpak, bubblewrap, strace and unshare are needed, as root")


@pytest.fixture
def fenv(tmp_path: Path) -> Iterator[FlatpakEnv]:
    """A throw-away Flatpak installation with our trigger installed (sandboxed by bwrap)."""
    require(have_flatpak(), "flatpak and bubblewrap are needed, as root")
    env = FlatpakEnv(tmp_path / "world")
    env.install_trigger()
    yield env
    shutil.rmtree(tmp_path / "world", ignore_errors=True)
