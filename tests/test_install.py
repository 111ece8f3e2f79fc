# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""``make install`` / ``make uninstall`` as a packager runs them (docs/packaging.md,
"Installing with make"), and the systemd units checked by ``systemd-analyze verify``."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from flatpak_sysext import config
from testsupport.prerequisites import require_tools
from testsupport.source import SOURCE_ROOT


def make(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["make", "-s", "-C", str(SOURCE_ROOT), *args,
                             f"PYTHON={sys.executable}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def files_under(root: Path) -> dict[str, int]:
    """Every file under ``root`` (relative path → permission bits)."""
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode)
            for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def site_dir(destdir: Path) -> Path:
    """Where the package went: the one directory holding flatpak_sysext/."""
    found = [p.parent for p in destdir.rglob("flatpak_sysext") if p.is_dir()]
    assert len(found) == 1, found
    return found[0]


def systemd_unit_dir() -> str:
    """Where this machine's systemd wants the units of PREFIX=/usr (pkg-config; Debian 12:
    lib/systemd/system), or usr/lib/systemd/system without pkg-config or systemd.pc."""
    found = subprocess.run(["pkg-config", "--variable=systemdsystemunitdir", "systemd"],
                           capture_output=True, text=True) if shutil.which("pkg-config") else None
    return (found.stdout.strip() if found else "").lstrip("/") or "usr/lib/systemd/system"


def test_make_install_into_a_destdir_then_uninstall(tmp_path: Path) -> None:
    require_tools("make")
    dest = tmp_path / "dest"
    make("install", f"DESTDIR={dest}", "PREFIX=/usr")
    units = systemd_unit_dir()

    site = site_dir(dest)
    source = SOURCE_ROOT / "flatpak_sysext"
    package = sorted(f"{site.relative_to(dest)}/flatpak_sysext/{p.relative_to(source)}"
                     for p in source.rglob("*.py") if "__pycache__" not in p.parts)
    schemas = sorted(f"{site.relative_to(dest)}/flatpak_sysext/schemas/{p.name}"
                     for p in (SOURCE_ROOT / "flatpak_sysext/schemas").glob("*.json"))
    assert str(site).startswith(f"{dest}/usr/lib/python3")
    assert files_under(dest) == {
        **{p: 0o644 for p in package + schemas},
        "usr/bin/flatpak-sysext": 0o755,
        "usr/share/flatpak/triggers/flatpak-sysext.trigger": 0o755,
        f"{units}/flatpak-sysext.service": 0o644,
        f"{units}/flatpak-sysext.path": 0o644,
        f"{units}/flatpak-sysext-dbus.service": 0o644,
        "usr/share/dbus-1/system.d/org.flatpak.SystemExtensions1.conf": 0o644,
        "usr/share/dbus-1/system-services/org.flatpak.SystemExtensions1.service": 0o644,
        "usr/share/polkit-1/actions/org.flatpak.systemextensions.policy": 0o644,
        "usr/share/doc/flatpak-sysext/examples/config.json.example": 0o644,
        "usr/share/man/man8/flatpak-sysext.8": 0o644,
        "etc/dpkg/dpkg.cfg.d/flatpak-sysext": 0o644,
        "etc/dnf/libdnf5-plugins/actions.d/flatpak-sysext.actions": 0o644,
        "etc/dnf/plugins/flatpak_sysext.conf": 0o644,
        f"{site.relative_to(dest)}/dnf-plugins/flatpak_sysext.py": 0o644,
        "usr/share/libalpm/hooks/00-flatpak-sysext-pre.hook": 0o644,
        "usr/share/libalpm/hooks/zz-flatpak-sysext-post.hook": 0o644,
        "usr/lib/zypp/plugins/commit/flatpak-sysext": 0o755,
    }
    # Every hook calls the installed command; the zypper plugin runs on PYTHON.
    dpkg_hook = (dest / "etc/dpkg/dpkg.cfg.d/flatpak-sysext").read_text()
    invoke = [line for line in dpkg_hook.splitlines() if "-invoke=" in line]
    assert len(invoke) == 3 and all("C=/usr/bin/flatpak-sysext " in line for line in invoke)
    zypper = (dest / "usr/lib/zypp/plugins/commit/flatpak-sysext").read_text()
    assert zypper.splitlines()[0] == f"#!{sys.executable}"

    # The interpreter is the one the package was installed for; the trigger keeps -I,
    # as it runs as root with the environment of whoever called flatpak.
    trigger = (dest / "usr/share/flatpak/triggers/flatpak-sysext.trigger").read_text()
    assert trigger.splitlines()[0] == f"#!{sys.executable} -I"
    assert trigger.splitlines()[1:] == (
        SOURCE_ROOT / "triggers/flatpak-sysext.trigger").read_text().splitlines()[1:]
    script = (dest / "usr/bin/flatpak-sysext").read_text()
    assert script.splitlines()[0] == f"#!{sys.executable}"
    service = (dest / units / "flatpak-sysext.service").read_text()
    assert "ExecStart=/usr/bin/flatpak-sysext reconcile\n" in service
    dbus_unit = (dest / units / "flatpak-sysext-dbus.service").read_text()
    assert "ExecStart=/usr/bin/flatpak-sysext dbus-service\n" in dbus_unit

    # The installed copy is what that interpreter imports and runs.
    env = dict(os.environ, PYTHONPATH=str(site))
    where = subprocess.run([sys.executable, "-c", "import flatpak_sysext; "
                            "print(flatpak_sysext.__file__)"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, check=True)
    assert where.stdout.strip() == f"{site}/flatpak_sysext/__init__.py"
    version = subprocess.run([str(dest / "usr/bin/flatpak-sysext"), "--version"], env=env,
                             cwd=tmp_path, capture_output=True, text=True, check=True)
    assert version.stdout.startswith("flatpak-sysext ")
    # The shipped schema is found in the installed copy (the example is validated by it).
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys; from flatpak_sysext import config; "
         "print(config.load(sys.argv[1]) == config.Config())",
         str(dest / "usr/share/doc/flatpak-sysext/examples/config.json.example")],
        env=env, cwd=tmp_path, capture_output=True, text=True)
    assert loaded.stdout == "True\n", loaded.stderr

    if shutil.which("man"):
        page = subprocess.run(["man", "--warnings", "-l", str(dest / "usr/share/man/man8/"
                                                                  "flatpak-sysext.8")],
                              env=dict(os.environ, MANWIDTH="80"), capture_output=True, text=True)
        assert page.returncode == 0 and page.stderr == "", page.stderr
        text = re.sub(".\b", "", page.stdout)  # Overstrike bold and underline.
        assert "flatpak-sysext reconcile [--installation PATH]" in text
        assert "EXTENSION_RELOAD_MANAGER=1" in text

    make("uninstall", f"DESTDIR={dest}", "PREFIX=/usr")
    assert files_under(dest) == {}


def test_the_example_config_holds_every_key_with_its_default(tmp_path: Path) -> None:
    example = SOURCE_ROOT / "examples/config.json"
    keys = json.loads(example.read_text()).keys()
    schema = json.loads((SOURCE_ROOT / "flatpak_sysext/schemas/config.schema.json").read_text())
    assert set(keys) == set(schema["properties"])
    assert config.load(str(example)) == config.Config()


def test_the_installed_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    require_tools("systemd-analyze", "make")
    # verify checks that ExecStart= exists and that man:flatpak-sysext(8) opens: install
    # for real under a throw-away prefix (no DESTDIR), so both are where the units say.
    prefix = tmp_path / "prefix"
    make("install", f"PREFIX={prefix}", f"SYSCONFDIR={prefix}/etc")
    units = prefix / "lib/systemd/system"
    service = (units / "flatpak-sysext.service").read_text()
    assert f"ExecStart={prefix}/bin/flatpak-sysext reconcile\n" in service
    result = subprocess.run(["systemd-analyze", "verify", str(units / "flatpak-sysext.service"),
                             str(units / "flatpak-sysext.path"),
                             str(units / "flatpak-sysext-dbus.service")],
                            env=dict(os.environ, MANPATH=str(prefix / "share/man")),
                            capture_output=True, text=True)
    # Unknown keys and bad values are only printed: any output is a failure.
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
