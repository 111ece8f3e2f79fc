# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The sdist is what distributions build from: it must hold everything ``make install-data``,
the tests and the packaging references need, and build without setuptools warnings."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from testsupport.prerequisites import require_available, require_tools

REPO_ROOT = Path(__file__).resolve().parent.parent
# What is not source: checkouts' and builds' leftovers.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__",
                                    ".*_cache", ".hypothesis", "bench-results.json")
# Directories shipped whole beside the package.
SHIPPED_DIRS = ["bench", "dbus", "demo", "docs", "examples", "hooks", "packaging", "polkit",
                "systemd", "tests",
                "testsupport", "triggers"]


def backend(call: str, out: Path, cwd: Path) -> tuple[Path, str]:
    """Run setuptools' PEP 517 hook ``call`` (build_sdist, build_wheel) in ``cwd`` with this
    interpreter, every warning shown: the built file and what was printed."""
    result = subprocess.run(
        [sys.executable, "-W", "always", "-c",
         f"import sys, setuptools.build_meta as b; print(b.{call}(sys.argv[1]))", str(out)],
        cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return out / result.stdout.splitlines()[-1], result.stdout + result.stderr


def installed(source: Path, dest: Path) -> dict[str, bytes]:
    """``make install-data`` from ``source`` into ``dest``: every file, with its content."""
    result = subprocess.run(["make", "-s", "-C", str(source), "install-data", f"DESTDIR={dest}",
                             "PREFIX=/usr", f"PYTHON={sys.executable}"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*") if p.is_file()}


def test_the_sdist_builds_a_wheel_and_installs_the_data_as_the_checkout_does(
        tmp_path: Path) -> None:
    require_tools("make")
    require_available(importlib.util.find_spec("setuptools") is not None,
                      "setuptools is needed")
    # A copy: building writes an egg-info into the source tree.
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO_ROOT, checkout, ignore=NOT_SOURCE)
    sdist, printed = backend("build_sdist", tmp_path, checkout)
    # setuptools' own warnings are classes named *Warning (the deprecated licence table,
    # data installed as a package, beta configuration); distutils' "warning:" lines are
    # not counted (e.g. byte-compiling disabled by PYTHONDONTWRITEBYTECODE).
    assert not re.findall(r"\w+Warning\b", printed), printed

    with tarfile.open(sdist) as tar:
        # The "data" filter where this Python has it (3.12 warns without a filter).
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(tmp_path / "unpacked", **safe)  # type: ignore[arg-type]
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    expected = {"LICENSE", "Makefile", "README.md", "pyproject.toml", "setup.cfg"}
    expected |= {str(p.relative_to(checkout)) for d in SHIPPED_DIRS if (checkout / d).is_dir()
                 for p in (checkout / d).rglob("*") if p.is_file()}
    shipped = {str(p.relative_to(unpacked)) for p in unpacked.rglob("*") if p.is_file()}
    assert expected - shipped == set()

    # The wheel built from the sdist, as a distribution's tooling does: schemas included,
    # the version from the package, the licence declared, again without a warning.
    (tmp_path / "wheel").mkdir()
    wheel, printed = backend("build_wheel", tmp_path / "wheel", unpacked)
    assert not re.findall(r"\w+Warning\b", printed), printed
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        headers = whl.read(metadata).decode().splitlines()
    schemas = {f"flatpak_sysext/schemas/{p.name}"
               for p in (REPO_ROOT / "flatpak_sysext/schemas").glob("*.json")}
    assert schemas and schemas <= names
    version = re.search(r'^__version__ = "(.+)"$',
                        (REPO_ROOT / "flatpak_sysext/__init__.py").read_text(), re.M)
    assert version is not None and f"Version: {version.group(1)}" in headers
    assert {"License: LGPL-2.1-or-later", "License-Expression: LGPL-2.1-or-later"} & set(headers)
    assert any(n.endswith("/LICENSE") for n in names)

    # Installed from the sdist, the data files are those the checkout installs.
    from_checkout = installed(checkout, tmp_path / "dest-checkout")
    assert "usr/share/flatpak/triggers/flatpak-sysext.trigger" in from_checkout
    assert installed(unpacked, tmp_path / "dest-sdist") == from_checkout
