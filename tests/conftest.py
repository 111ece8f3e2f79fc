# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Shared fixtures (a private Flatpak world per test) and the check that keeps the
``privileged`` marker on every test that needs root, the real Flatpak or a booted host."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from testsupport import prerequisites
from testsupport.flatpak import FlatpakEnv
from testsupport.source import SOURCE_ROOT


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    # Fixtures of every scope are set up inside the protocol of the test that needs
    # them first: ``require`` then knows which test asked, and checks its marker.
    prerequisites.running(item)
    yield
    prerequisites.running(None)


@pytest.fixture(scope="session", autouse=True)
def _state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Never the real /var/lib/flatpak-sysext: a run whose environment does not name a
    state directory of its own gets this one (its files are per installation)."""
    name = "FLATPAK_SYSEXT_STATE_DIR"
    old = os.environ.get(name)
    os.environ[name] = str(tmp_path_factory.mktemp("service-state"))
    yield
    if old is None:
        del os.environ[name]
    else:
        os.environ[name] = old


@pytest.fixture
def fenv(tmp_path: Path) -> Iterator[FlatpakEnv]:
    """A throw-away Flatpak installation with our trigger installed (sandboxed by bwrap)."""
    prerequisites.require_flatpak()
    env = FlatpakEnv(tmp_path / "world")
    env.install_trigger()
    yield env
    shutil.rmtree(tmp_path / "world", ignore_errors=True)


@pytest.fixture(scope="session")
def debian_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package ``make deb`` builds from this tree: once a session (a minute), for
    the packaging checks and the booted host that installs it."""
    prerequisites.require_tools("dpkg-buildpackage", "dpkg-deb", "dh", "pybuild", "make")
    out = tmp_path_factory.mktemp("deb")
    build = subprocess.run(["make", "-s", "-C", str(SOURCE_ROOT), "deb", f"DEBDIR={out}"],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-5000:] + build.stderr[-5000:]
    (built,) = out.glob("*.deb")
    return built
