# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Generated Flatpak installations, real enough for ``flatpak list``, made in seconds.

One app is built and installed with the real ``flatpak`` (testsupport/flatpak.py); its
deployment is the template. Every generated app is a clone of it under another ID: the same
layout Flatpak writes (``app/<ID>/current -> ARCH/BRANCH``, ``active -> <commit>``, the
deploy directory with ``deploy``, ``metadata``, ``export/`` and ``files/.ref``), the
template's ``deploy`` GVariant with only the 64-hex commit replaced (same length, so every
framing offset stays valid and the bytes are what Flatpak would have written), and its
``metadata`` with ``name=`` set to the new ID. Installing 10,000 apps through Flatpak would
take hours; cloning takes seconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from testsupport.flatpak import ARCH, FlatpakEnv, compile_c

TEMPLATE_ID = "org.fsx.BenchTemplate"
BRANCH = "stable"
EXTENSION_PATH = "lib/extensions"
TINY_STATIC = "void _start(void) { for (;;) ; }\n"  # no libc: a few KiB with -nostdlib


@dataclass(frozen=True)
class Template:
    """What every generated app is cloned from."""

    system_dir: Path
    """The real installation the template app was installed into (with its repo)."""
    deploy: bytes
    commit: str
    metadata: str
    static_exe: Path
    """A tiny statically linked executable, hard-linked into extension trees."""


def make_template(work: Path) -> Template:
    """Install one real app with flatpak and build a tiny static executable."""
    env = FlatpakEnv(work / "template")
    env.publish(TEMPLATE_ID, None, declare=None)
    env.install(TEMPLATE_ID)
    deploy_dir = (env.system_dir / "app" / TEMPLATE_ID / ARCH / BRANCH / "active").resolve()
    exe = compile_c(TINY_STATIC, work / "tiny-static", "-O2", "-nostdlib", "-static")
    return Template(env.system_dir, (deploy_dir / "deploy").read_bytes(), deploy_dir.name,
                    (deploy_dir / "metadata").read_text(), exe)


def app_id(i: int) -> str:
    return f"org.fsx.bench.App{i:05d}"


def commit_of(app: str) -> str:
    return hashlib.sha256(app.encode()).hexdigest()


def write_tree(root: Path, app: str, files: int, exe: Path) -> None:
    """A sysext tree like Sysprof's with ``files`` files (at least 4): extension-release,
    a static daemon, its unit, its D-Bus policy, then more data files and daemons."""
    rel = root / "usr/lib/extension-release.d"
    rel.mkdir(parents=True)
    (rel / f"extension-release.{app}").write_text("ID=_any\n")
    libexec = root / "usr/libexec" / app
    libexec.mkdir(parents=True)
    units = root / "usr/lib/systemd/system"
    units.mkdir(parents=True)
    dbus = root / "usr/share/dbus-1/system.d"
    dbus.mkdir(parents=True)
    short = app.rsplit(".", 1)[-1].lower()
    os.link(exe, libexec / f"{short}d")  # deployed files are hard links into the repo
    (units / f"{short}d.service").write_text(f"[Service]\nExecStart=/usr/libexec/{app}/{short}d\n")
    (dbus / f"{app}.conf").write_text(
        f'<busconfig><policy user="root"><allow own="{app}"/></policy></busconfig>\n')
    data = root / "usr/share" / app
    data.mkdir(parents=True)
    for n in range(files - 4):
        if n % 4 == 3:
            os.link(exe, libexec / f"helper{n}")
        else:
            (data / f"data{n}.txt").write_text(f"{app} {n}\n")


def make_installation(template: Template, dest: Path, apps: int, *, every: int = 10,
                      files: int = 4) -> list[str]:
    """An installation at ``dest`` with ``apps`` apps; every ``every``-th one declares a
    system extension of ``files`` files. Returns the IDs of those that declare one."""
    shutil.copytree(template.system_dir, dest, symlinks=True)
    shutil.rmtree(dest / "app" / TEMPLATE_ID)
    old = template.commit.encode()
    assert template.deploy.count(old) == 1, "the template's deploy file holds its commit once"
    declared: list[str] = []
    for i in range(apps):
        app = app_id(i)
        commit = commit_of(app)
        ref = dest / "app" / app / ARCH / BRANCH
        dep = ref / commit
        (dep / "files").mkdir(parents=True)
        (dep / "export").mkdir()
        (dep / "files" / ".ref").touch()
        (dep / "deploy").write_bytes(template.deploy.replace(old, commit.encode()))
        meta = template.metadata.replace(f"name={TEMPLATE_ID}\n", f"name={app}\n")
        if i % every == 0:
            meta += f"\n[X-SystemExtension]\npath={EXTENSION_PATH}\n"
            write_tree(dep / "files" / EXTENSION_PATH, app, files, template.static_exe)
            declared.append(app)
        (dep / "metadata").write_text(meta)
        os.symlink(commit, ref / "active")
        os.symlink(f"{ARCH}/{BRANCH}", dest / "app" / app / "current")
    return declared


def update_plain_app(installation: Path, app: str) -> None:
    """Do to ``app`` (one that declares nothing) what ``flatpak update`` does: deploy
    another commit beside the active one, swap ``active`` to it atomically, remove the
    old deployment and touch ``.changed``. Alternates between two commits."""
    ref = installation / "app" / app / ARCH / BRANCH
    old = os.readlink(ref / "active")
    new = commit_of(app) if old != commit_of(app) else commit_of(app + ".next")
    shutil.copytree(ref / old, ref / new, symlinks=True)
    os.symlink(new, ref / ".active-new")
    os.rename(ref / ".active-new", ref / "active")
    shutil.rmtree(ref / old)
    (installation / ".changed").touch()


def make_check_tree(root: Path, name: str, files: int, exe: Path) -> None:
    """A valid extension tree of ``files`` files, 1,000 per directory, 1% static ELF."""
    rel = root / "usr/lib/extension-release.d"
    rel.mkdir(parents=True)
    (rel / f"extension-release.{name}").write_text("ID=_any\n")
    for n in range(files - 1):
        d = root / "usr/share" / name / f"d{n // 1000:03d}"
        if n % 1000 == 0:
            d.mkdir(parents=True)
        if n % 100 == 99:
            os.link(exe, d / f"exe{n}")
        else:
            (d / f"f{n}.txt").write_bytes(b"x\n")


def make_elf_files(dest: Path, exes: list[Path], count: int) -> list[Path]:
    """``count`` distinct small static executables: copies of ``exes`` in turn, each with
    a unique trailer (bytes past the last segment, which no loader or reader looks at)."""
    dest.mkdir(parents=True)
    blobs = [e.read_bytes() for e in exes]
    out = []
    for n in range(count):
        path = dest / f"exe{n:05d}"
        path.write_bytes(blobs[n % len(blobs)] + n.to_bytes(8, "little"))
        out.append(path)
    return out
