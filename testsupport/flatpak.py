# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Throw-away Flatpak installations built with the real ``flatpak``.

Used by the tests, ``make bench`` and ``make demo``. Everything lives under one directory: the
repository, the system installation, Flatpak's config and triggers directories, the
target directory and flatpak-sysext's config, so nothing on the host is touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from flatpak_sysext import config, context
from flatpak_sysext.context import Context
from flatpak_sysext.flatpak import installation
from flatpak_sysext.flatpak.installation import Installation
from testsupport.source import installed_trigger

RUNTIME = "org.fsx.Platform"
ARCH = subprocess.run(["flatpak", "--default-arch"], capture_output=True, text=True,
                      check=False).stdout.strip() if shutil.which("flatpak") else "x86_64"

TreeBuilder = Callable[[Path], None]


def have_flatpak() -> bool:
    """Whether the real flatpak and bubblewrap are installed and we are root."""
    return bool(shutil.which("flatpak") and shutil.which("bwrap")) and os.geteuid() == 0


def compile_c(source: str, out: Path, *flags: str) -> Path:
    """Compile a C program with gcc (``-static``, ``-static-pie``… in ``flags``)."""
    src = out.with_suffix(".c")
    src.write_text(source)
    subprocess.run(["gcc", "-O1", "-o", str(out), str(src), *flags], check=True)
    src.unlink()
    return out


DAEMON_C = r"""
#include <stdio.h>
int main(void) { puts("%s"); return 0; }
"""


def write_release(root: Path, name: str, content: str = "ID=_any\n") -> None:
    d = root / "usr/lib/extension-release.d"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"extension-release.{name}").write_text(content)


def daemon_tree(app_id: str, message: str, *, static: bool = True,
                release: str = "ID=_any\n") -> TreeBuilder:
    """A sysext tree like Sysprof's: a daemon, its unit and its D-Bus policy."""
    short = app_id.rsplit(".", 1)[-1].lower()
    daemon = short if short.endswith("d") else f"{short}d"

    def build(root: Path) -> None:
        write_release(root, app_id, release)
        libexec = root / "usr/libexec" / app_id
        libexec.mkdir(parents=True)
        flags = ["-static"] if static else []
        compile_c(DAEMON_C % message, libexec / daemon, *flags)
        units = root / "usr/lib/systemd/system"
        units.mkdir(parents=True)
        (units / f"{daemon}.service").write_text(
            f"[Unit]\nDescription={app_id} daemon\n\n[Service]\n"
            f"ExecStart=/usr/libexec/{app_id}/{daemon}\n")
        dbus = root / "usr/share/dbus-1/system.d"
        dbus.mkdir(parents=True)
        (dbus / f"{app_id}.conf").write_text(
            "<busconfig><policy user=\"root\">"
            f"<allow own=\"{app_id}\"/></policy></busconfig>\n")

    return build


def schema(name: str) -> Any:
    """One of the package's JSON schemas, ``schemas/NAME.schema.json``."""
    text = resources.files("flatpak_sysext").joinpath(f"schemas/{name}.schema.json").read_text()
    return json.loads(text)


def status_by_name(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    """The output of a successful ``status --json``, checked against its schema, by name
    (its global warnings left out)."""
    assert result.returncode == 0, result.stderr
    items = json.loads(result.stdout)
    jsonschema.validate(items, schema("status"))
    return {item["name"]: item for item in items if item["state"] != "warning"}


class FlatpakEnv:
    """A private Flatpak world: repository, system installation, triggers, target dir.

    With ``signed=True`` the repository is signed with a throw-away GPG key and the
    ``test`` remote verifies it, as on a real system; call ``close()`` to stop the key's
    gpg-agent.
    """

    def __init__(self, root: Path, python: str = sys.executable, *, signed: bool = False) -> None:
        self.root = root
        self.repo = root / "repo"
        self.system_dir = root / "system"
        self.config_dir = root / "etc-flatpak"
        self.triggers_dir = root / "triggers"
        self.target_dir = root / "extensions"
        self.config_file = root / "flatpak-sysext.json"
        self.state_dir = root / "state"
        """The service's own state directory (``FLATPAK_SYSEXT_STATE_DIR``)."""
        self.builds = root / "builds"
        self.python = python
        for d in (self.config_dir, self.triggers_dir, self.builds):
            d.mkdir(parents=True, exist_ok=True)
        self.signed = signed
        self.gpg_home: Path | None = None
        self.pubkey = root / "pubkey.gpg"
        self.key_id = ""
        if signed:
            self._make_key()
        self.write_config({})
        self._runtime_ready = False

    def _make_key(self) -> None:
        # gpg-agent's socket lives in the home directory and its path must fit in
        # sun_path (108 bytes), which pytest's tmp_path can exceed: use a short one.
        home = Path(tempfile.mkdtemp(prefix="fsx-gpg-"))
        self.gpg_home = home
        gpg = ["gpg", "--batch", "--quiet", "--homedir", str(home)]
        subprocess.run([*gpg, "--passphrase", "", "--pinentry-mode", "loopback",
                        "--quick-gen-key", "flatpak-sysext tests <tests@fsx.invalid>",
                        "ed25519", "sign", "never"], check=True, capture_output=True)
        listing = subprocess.run([*gpg, "--with-colons", "--list-secret-keys"], check=True,
                                 capture_output=True, text=True).stdout
        self.key_id = next(line.split(":")[9] for line in listing.splitlines()
                           if line.startswith("fpr:"))
        self.pubkey.write_bytes(subprocess.run([*gpg, "--export", self.key_id], check=True,
                                               capture_output=True).stdout)

    def _sign(self) -> list[str]:
        """Options of build-export, build-update-repo and build-bundle that sign."""
        if self.gpg_home is None:
            return []
        return [f"--gpg-sign={self.key_id}", f"--gpg-homedir={self.gpg_home}"]

    def close(self) -> None:
        """Stop the signing key's gpg-agent and remove its home (nothing to do if unsigned)."""
        if self.gpg_home is not None:
            subprocess.run(["gpgconf", "--homedir", str(self.gpg_home), "--kill", "all"],
                           check=False, capture_output=True)
            shutil.rmtree(self.gpg_home, ignore_errors=True)
            self.gpg_home = None

    @property
    def env(self) -> dict[str, str]:
        """The environment for flatpak and flatpak-sysext (both honour these variables)."""
        env = dict(os.environ)
        env.update({
            "FLATPAK_SYSTEM_DIR": str(self.system_dir),
            "FLATPAK_CONFIG_DIR": str(self.config_dir),
            "FLATPAK_TRIGGERSDIR": str(self.triggers_dir),
            "FLATPAK_SYSEXT_CONFIG": str(self.config_file),
            "FLATPAK_SYSEXT_STATE_DIR": str(self.state_dir),
        })
        return env

    def write_config(self, values: Mapping[str, Any]) -> None:
        """Write flatpak-sysext's config; GPG verification is required iff the repo is signed.

        Every app is consented to by an ``allow`` pattern, as a fleet's configuration
        would: the tests of consent itself set ``allow`` to what they need."""
        data = {"target_dir": str(self.target_dir), "require_gpg_verified_remote": self.signed,
                "host_sync": False, "allow": ["*"]}
        data.update(values)
        self.config_file.write_text(json.dumps(data))

    def install_trigger(self) -> Path:
        """Install our trigger as a package would, with this interpreter substituted
        (and the package under test on its path, see ``testsupport.source``)."""
        dest = self.triggers_dir / "flatpak-sysext.trigger"
        dest.write_text(installed_trigger(self.python))
        dest.chmod(0o755)
        return dest

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True,
                              check=check)

    def flatpak(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = self.run("flatpak", *args, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"flatpak {' '.join(args)} failed:\n{result.stderr}")
        return result

    def sysext(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run our command line the way the service or an admin would."""
        return self.run(self.python, "-m", "flatpak_sysext", *args, check=check)

    def commit(self, app_id: str) -> str:
        """The commit Flatpak itself says the installed app is at."""
        return self.flatpak("--system", "info", "--show-commit", app_id).stdout.strip()

    def status(self) -> dict[str, dict[str, Any]]:
        """``flatpak-sysext status --json`` by extension name, checked against its schema."""
        return status_by_name(self.sysext("status", "--json"))

    def _ensure_runtime(self) -> None:
        if self._runtime_ready:
            return
        rt = self.builds / "runtime"
        (rt / "usr").mkdir(parents=True, exist_ok=True)
        (rt / "files").mkdir(exist_ok=True)
        (rt / "metadata").write_text(
            f"[Runtime]\nname={RUNTIME}\nruntime={RUNTIME}/{ARCH}/1\nsdk={RUNTIME}/{ARCH}/1\n")
        self.flatpak("build-export", *self._sign(), "--runtime", str(self.repo), str(rt), "1")
        self.flatpak("build-update-repo", *self._sign(), str(self.repo))
        self.add_remote("test", verify=self.signed)
        self._runtime_ready = True

    def add_remote(self, name: str, *, verify: bool) -> None:
        """Add a remote for the repository, verifying its signatures or not."""
        gpg = [f"--gpg-import={self.pubkey}"] if verify else ["--no-gpg-verify"]
        self.flatpak("--system", "remote-add", *gpg, name, f"file://{self.repo}")

    def publish(self, app_id: str, tree: TreeBuilder | None, *, branch: str = "stable",
                declare: str | None = "lib/extensions", extra_metadata: str = "") -> None:
        """Build an app whose ``/app/<declare>`` is made by ``tree`` and export it."""
        self._ensure_runtime()
        appdir = self.builds / f"{app_id}-{branch}"
        shutil.rmtree(appdir, ignore_errors=True)
        (appdir / "files").mkdir(parents=True)
        (appdir / "export").mkdir()
        meta = (f"[Application]\nname={app_id}\nruntime={RUNTIME}/{ARCH}/1\n"
                f"sdk={RUNTIME}/{ARCH}/1\ncommand=true\n")
        if declare is not None:
            meta += f"\n[X-SystemExtension]\npath={declare}\n"
            if tree is not None:
                root = appdir / "files" / declare
                root.mkdir(parents=True, exist_ok=True)
                tree(root)
        (appdir / "metadata").write_text(meta + extra_metadata)
        self.flatpak("build-export", *self._sign(), str(self.repo), str(appdir), branch)
        self.flatpak("build-update-repo", *self._sign(), str(self.repo))

    def install_daemons(self, *app_ids: str) -> None:
        """Publish and install, for each ID, an app whose extension is a working daemon."""
        for app_id in app_ids:
            self.publish(app_id, daemon_tree(app_id, "v1"))
            self.install(app_id)

    def installed_for_the_service(self, app_id: str, builder: TreeBuilder) -> tuple[
            str, list[Installation], Context]:
        """``app_id`` published with ``builder`` and installed with no trigger to run (so
        what happens next is the service's), and what a run on the host takes: the
        installation's real path, the system installations and a context over them."""
        (self.triggers_dir / "flatpak-sysext.trigger").unlink()
        self.publish(app_id, builder)
        self.install(app_id)
        insts = installation.system_installations(self.env)
        ctx = context.Context.create(config.load(str(self.config_file)), insts, self.env)
        return os.path.realpath(self.system_dir), insts, ctx

    def install(self, app_id: str, branch: str = "stable", *,
                remote: str = "test") -> subprocess.CompletedProcess[str]:
        return self.flatpak("--system", "install", "-y", "--noninteractive", remote,
                            f"app/{app_id}/{ARCH}/{branch}")

    def install_bundle(self, app_id: str, branch: str = "stable", *,
                       with_key: bool = False) -> subprocess.CompletedProcess[str]:
        """Install the published app from a single-file bundle (``flatpak install --bundle``).

        Flatpak then creates a ``<name>-origin`` remote, which verifies signatures only if
        the bundle carries a key (``with_key``, signed repositories only).
        """
        bundle = self.builds / f"{app_id}-{branch}.flatpak"
        keys = [f"--gpg-keys={self.pubkey}"] if with_key else []
        self.flatpak("build-bundle", *keys, str(self.repo), str(bundle), app_id, branch)
        return self.flatpak("--system", "install", "-y", "--noninteractive", "--bundle",
                            str(bundle))

    def update(self) -> subprocess.CompletedProcess[str]:
        return self.flatpak("--system", "update", "-y", "--noninteractive")

    def uninstall(self, app_id: str) -> subprocess.CompletedProcess[str]:
        return self.flatpak("--system", "uninstall", "-y", "--noninteractive", app_id)

    def links(self) -> dict[str, str]:
        """Every symlink in the target directory, name → target."""
        if not self.target_dir.exists():
            return {}
        return {p.name: os.readlink(p) for p in self.target_dir.iterdir() if p.is_symlink()}

    def service_file(self, name: str) -> Path:
        """One of the service's files about this installation (``cache.json``,
        ``hostsync.json``, ``links.json``), in its own state directory."""
        from flatpak_sysext.state import statefiles

        real = os.path.realpath(self.system_dir)
        return Path(statefiles.installation_directory(str(self.state_dir), real)) / name

    def snapshot(self, app_id: str, branch: str = "stable",
                 declared: str = "lib/extensions") -> str:
        """Where the link of the app's active deployment points: its snapshot in the
        service's store, named as docs/reference.md#links-and-ownership says."""
        from flatpak_sysext.state import store

        active = (self.system_dir / "app" / app_id / ARCH / branch / "active").readlink()
        real = os.path.realpath(self.system_dir)
        return os.path.join(store.directory(str(self.state_dir), real), store.snapshot_name(
            app_id, f"{ARCH}/{branch}/{active}", declared))

    def deploy_files(self, app_id: str, branch: str = "stable") -> Path:
        """The ``files/`` of the app's active deployment, resolved."""
        active = self.system_dir / "app" / app_id / ARCH / branch / "active"
        return active.resolve() / "files"


def consenting_to_nothing(root: Path) -> FlatpakEnv:
    """A signed repository and a system installation, the trigger installed, whose
    configuration consents to nothing (the default); the caller closes it."""
    from testsupport.prerequisites import require_flatpak  # which imports this module

    require_flatpak()
    env = FlatpakEnv(root, signed=True)
    env.install_trigger()
    env.write_config({"allow": []})
    return env
