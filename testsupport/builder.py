# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Building the flatpak-builder example offline: a hand-made runtime and SDK.

flatpak-builder runs every build command inside the SDK, so the SDK needs a shell and
the tools the manifest calls: a statically linked busybox (Debian's busybox-static) and
a link for each of its applets is enough. The runtime and SDK are published under the
names and version the manifest asks for, into a throw-away :class:`FlatpakEnv`'s
repository, and installed there; nothing is downloaded.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from testsupport.flatpak import ARCH, FlatpakEnv

BUSYBOX = "/bin/busybox"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "flatpak-builder"
MANIFEST = EXAMPLE / "org.example.App.json"


def manifest() -> dict[str, Any]:
    """The example's flatpak-builder manifest."""
    data: dict[str, Any] = json.loads(MANIFEST.read_text())
    return data


def _busybox_tree(usr: Path) -> None:
    """``usr`` (the runtime's /usr) with busybox and a link per applet in bin/."""
    bin_dir = usr / "bin"
    bin_dir.mkdir(parents=True)
    shutil.copy2(BUSYBOX, bin_dir / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], check=True, capture_output=True,
                             text=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (bin_dir / applet).symlink_to("busybox")


def publish_runtimes(env: FlatpakEnv, data: dict[str, Any]) -> None:
    """Publish and install the manifest's runtime and SDK, both made of busybox."""
    version = data["runtime-version"]
    runtime, sdk = data["runtime"], data["sdk"]
    for name in (runtime, sdk):
        tree = env.builds / name
        shutil.rmtree(tree, ignore_errors=True)
        _busybox_tree(tree / "usr")  # build-export --runtime exports usr/
        (tree / "files").mkdir()  # which flatpak checks for, as in any build directory
        (tree / "metadata").write_text(
            f"[Runtime]\nname={name}\nruntime={runtime}/{ARCH}/{version}\n"
            f"sdk={sdk}/{ARCH}/{version}\n")
        env.flatpak("build-export", *sign_options(env), "--runtime", str(env.repo),
                    str(tree), version)
    env.flatpak("build-update-repo", *sign_options(env), str(env.repo))
    env.add_remote("test", verify=env.signed)
    for name in (runtime, sdk):
        env.flatpak("--system", "install", "-y", "--noninteractive", "test",
                    f"runtime/{name}/{ARCH}/{version}")


def build_example(env: FlatpakEnv, work: Path) -> subprocess.CompletedProcess[str]:
    """Run flatpak-builder on a copy of the example (its daemon compiled static first),
    exporting into the env's repository, offline; the build directory is ``work/build``."""
    src = work / "src"
    shutil.copytree(EXAMPLE, src)
    subprocess.run(["gcc", "-static", "-O2", "-o", str(src / "appd"), str(src / "appd.c")],
                   check=True)
    return env.run("flatpak-builder", "--disable-rofiles-fuse", "--disable-download",
                   "--state-dir", str(work / "state"), *sign_options(env),
                   f"--repo={env.repo}", str(work / "build"), str(src / MANIFEST.name),
                   check=False)


def sign_options(env: FlatpakEnv) -> list[str]:
    """The options of flatpak build-export, build-update-repo and flatpak-builder that
    sign with the env's key (none for an unsigned repository)."""
    if env.gpg_home is None:
        return []
    return [f"--gpg-sign={env.key_id}", f"--gpg-homedir={env.gpg_home}"]
