# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The Debian packaging reference (packaging/debian) builds with ``make deb`` (the sdist,
``dpkg-buildpackage -b``, the tests run inside the build), passes lintian, and its .deb
holds every file where Debian wants it, with the units enabled by its maintainer scripts.
Nothing is installed on this machine."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from testsupport.prerequisites import require_tools

pytestmark = pytest.mark.slow  # builds the package: minutes

REPO_ROOT = Path(__file__).resolve().parent.parent
# Tools of the build itself (dpkg-dev, debhelper, dh-python, lintian); the Build-Depends
# are checked by dpkg-buildpackage, which fails naming what is missing.
BUILD_TOOLS = ["dpkg-buildpackage", "dpkg-deb", "dh", "pybuild", "lintian", "make"]


def deb_files(deb: Path) -> dict[str, tarfile.TarInfo]:
    """The .deb's data members (``dpkg -c``), by path without the leading ``./``."""
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True,
                          check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name.removeprefix("./"): m for m in tar.getmembers()}


def deb_read(deb: Path, path: str) -> str:
    """The text of one file of the .deb."""
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True,
                          check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.extractfile(f"./{path}")
        assert member is not None, path
        return member.read().decode()


def systemd_unit_dir() -> str:
    """Where this machine's systemd wants packaged units (Debian 12: /lib/systemd/system)."""
    found = subprocess.run(["pkg-config", "--variable=systemdsystemunitdir", "systemd"],
                           capture_output=True, text=True)
    return found.stdout.strip() or "/usr/lib/systemd/system"


@pytest.fixture
def deb(debian_package: Path) -> Path:
    require_tools(*BUILD_TOOLS)
    return debian_package


def test_make_deb_builds_a_lintian_clean_package(deb: Path) -> None:
    lint = subprocess.run(["lintian", "--fail-on", "error,warning", str(deb)],
                          capture_output=True, text=True)
    tags = [line for line in lint.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert (lint.returncode, tags) == (0, []), lint.stdout + lint.stderr

    files = deb_files(deb)
    site = "usr/lib/python3/dist-packages/flatpak_sysext"
    package = REPO_ROOT / "flatpak_sysext"
    sources = [f"{site}/{p.relative_to(package)}" for p in package.rglob("*.py")]
    sources += [f"{site}/schemas/{p.name}"
                for p in (REPO_ROOT / "flatpak_sysext/schemas").glob("*.json")]
    assert [p for p in sources if p not in files] == []

    # The trigger where Flatpak reads triggers, run by Debian's Python, isolated (-I).
    trigger = "usr/share/flatpak/triggers/flatpak-sysext.trigger"
    assert stat.S_IMODE(files[trigger].mode) == 0o755
    assert deb_read(deb, trigger).splitlines()[0] == "#!/usr/bin/python3 -I"
    assert deb_read(deb, "usr/bin/flatpak-sysext").startswith("#!/usr/bin/python3\n")

    # The units where systemd (and dh_installsystemd) look, enabled by the postinst.
    units = systemd_unit_dir().lstrip("/")
    assert {f"{units}/flatpak-sysext.service", f"{units}/flatpak-sysext.path"} <= files.keys()
    postinst = subprocess.run(["dpkg-deb", "-I", str(deb), "postinst"], capture_output=True,
                              text=True, check=True).stdout
    for unit in ("flatpak-sysext.service", "flatpak-sysext.path"):
        assert f"deb-systemd-helper enable '{unit}'" in postinst

    # The D-Bus interface: activated, never enabled (no [Install]).
    assert {f"{units}/flatpak-sysext-dbus.service",
            "usr/share/dbus-1/system.d/org.flatpak.SystemExtensions1.conf",
            "usr/share/dbus-1/system-services/org.flatpak.SystemExtensions1.service",
            "usr/share/polkit-1/actions/org.flatpak.systemextensions.policy"} <= files.keys()
    assert "usr/share/man/man8/flatpak-sysext.8.gz" in files
    # dpkg's hook only, a conffile (it outlives a removal: docs/reference.md#package-managers).
    hooks = {p for p in files if "libalpm" in p or "zypp" in p or "dnf" in p}
    assert hooks == set()
    conffiles = subprocess.run(["dpkg-deb", "-I", str(deb), "conffiles"], capture_output=True,
                               text=True, check=True).stdout.split()
    assert conffiles == ["/etc/dpkg/dpkg.cfg.d/flatpak-sysext"]
    assert "usr/share/doc/flatpak-sysext/copyright" in files
    examples = [p for p in files if p.startswith("usr/share/doc/flatpak-sysext/")
                and p.endswith("config.json.example")]
    assert len(examples) == 1, sorted(files)
    assert deb_read(deb, examples[0]) == (REPO_ROOT / "examples/config.json").read_text()

    fields = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"], capture_output=True,
                            text=True, check=True).stdout
    depends = {d.strip().split()[0] for d in fields.split(",")}
    assert {"python3-pyelftools", "python3-jsonschema", "python3-jeepney", "flatpak",
            "systemd", "gpgv"} <= depends


def run_prerm(deb: Path, tmp_path: Path, remove_all: str, *args: str) -> tuple[int, list[str]]:
    """The .deb's prerm run with ``args`` against fakes of the commands it calls (nothing
    on this machine is stopped or removed): its exit status and the calls, in order.
    ``remove_all``: the fake ``flatpak-sysext remove-all``'s exit status, or "absent"."""
    prerm = tmp_path / "prerm"
    prerm.write_bytes(subprocess.run(["dpkg-deb", "-I", str(deb), "prerm"],
                                     capture_output=True, check=True).stdout)
    fakes, log = tmp_path / "bin", tmp_path / "calls"
    fakes.mkdir(exist_ok=True)
    log.write_text("")
    helps = "2" if remove_all == "absent" else "0"
    runs = "2" if remove_all == "absent" else remove_all
    scripts = {
        # argparse exits 2 on an unknown subcommand, --help included.
        "flatpak-sysext": f'echo "flatpak-sysext $*" >> {log}\n'
                          f'case "$*" in "remove-all --help") exit {helps};;'
                          f' remove-all) exit {runs};; esac',
        "deb-systemd-invoke": f'echo "deb-systemd-invoke $*" >> {log}',
        "py3clean": f'echo "py3clean $*" >> {log}',
    }
    for name, script in scripts.items():
        (fakes / name).write_text(f"#!/bin/sh\n{script}\n")
        (fakes / name).chmod(0o755)
    # debhelper's snippet stops the units only without DPKG_ROOT and where systemd runs.
    env = dict(os.environ, PATH=f"{fakes}:/usr/bin:/bin")
    env.pop("DPKG_ROOT", None)
    done = subprocess.run(["sh", str(prerm), *args], env=env, capture_output=True, text=True)
    return done.returncode, log.read_text().splitlines()


def test_the_prerm_removes_the_links_on_removal_only_after_stopping_the_units(
        deb: Path, tmp_path: Path) -> None:
    status, calls = run_prerm(deb, tmp_path, "0", "remove")
    assert status == 0
    assert [c for c in calls if c.endswith("remove-all")] == ["flatpak-sysext remove-all"]
    # Before py3clean: while an extension is merged /usr is read-only, and the bytecode
    # could not be removed.
    assert calls.index("flatpak-sysext remove-all") < calls.index("py3clean -p flatpak-sysext")
    if Path("/run/systemd/system").is_dir():
        stop = calls.index("deb-systemd-invoke stop flatpak-sysext.path flatpak-sysext.service")
        assert stop < calls.index("flatpak-sysext remove-all")

    status, calls = run_prerm(deb, tmp_path, "0", "upgrade", "0.1.0-1")
    assert (status, [c for c in calls if c.startswith("flatpak-sysext")]) == (0, [])


def test_the_prerm_lets_the_removal_go_on_without_remove_all_or_when_it_fails(
        deb: Path, tmp_path: Path) -> None:
    status, calls = run_prerm(deb, tmp_path, "absent", "remove")
    assert (status, [c for c in calls if c.endswith("remove-all")]) == (0, [])
    status, calls = run_prerm(deb, tmp_path, "1", "remove")
    assert status == 0 and "flatpak-sysext remove-all" in calls
    assert calls[-1] == "py3clean -p flatpak-sysext"  # the rest of the prerm still ran
