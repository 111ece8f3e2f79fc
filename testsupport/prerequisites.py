# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Skipping a test whose prerequisites are missing, or failing it in strict mode.

``FLATPAK_SYSEXT_TEST_STRICT=1`` (set by CI, which has root and every tool) turns such
a skip into a failure, so that a broken CI machine cannot pass by skipping. ``require``
is for what only a privileged run has (root, the real Flatpak and bubblewrap, a booted
host): a test that calls it without the ``privileged`` marker fails, so that
``pytest -m "not privileged"`` keeps selecting exactly what runs as any user.
``require_tools`` and ``require_available`` are for what any user may have (gcc, make,
a library's headers...).
"""

from __future__ import annotations

import os
import shutil

import pytest

from testsupport.flatpak import have_flatpak

STRICT_VARIABLE = "FLATPAK_SYSEXT_TEST_STRICT"
MARKER = "privileged"

_running: pytest.Item | None = None


def running(item: pytest.Item | None) -> None:
    """Record the test being run (tests/conftest.py calls this around each test)."""
    global _running
    _running = item


def strict() -> bool:
    """Whether missing prerequisites fail tests instead of skipping them."""
    return os.environ.get(STRICT_VARIABLE) == "1"


def _skip(why: str) -> None:
    if strict():
        pytest.fail(f"{STRICT_VARIABLE}=1 requires this test to run, but {why}")
    pytest.skip(why)


def require(condition: bool, why: str) -> None:
    """Skip when ``condition`` (root, the real Flatpak, a booted host...) is false,
    except in strict mode, where the test fails; the test must be marked privileged."""
    if _running is not None and _running.get_closest_marker(MARKER) is None:
        pytest.fail(f"{_running.nodeid} needs what only a privileged run has ({why}): "
                    f"mark it @pytest.mark.{MARKER}")
    if not condition:
        _skip(why)


def require_available(condition: bool, why: str) -> None:
    """Skip when ``condition`` is false (fail in strict mode), for what any user may have:
    a library's headers, a Python module, a file the distribution ships."""
    if not condition:
        _skip(why)


def require_tools(*tools: str) -> None:
    """Skip unless every program in ``tools`` is on PATH (fail in strict mode)."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        _skip(f"{', '.join(missing)} needed")


def require_flatpak() -> None:
    """What every test of a real Flatpak world needs."""
    require(have_flatpak(), "flatpak and bubblewrap are needed, as root")


def require_tracing() -> None:
    """What the fault and concurrency tests need: a real Flatpak, strace and unshare."""
    require(have_flatpak() and shutil.which("strace") is not None
            and shutil.which("unshare") is not None,
            "flatpak, bubblewrap, strace and unshare are needed, as root")
