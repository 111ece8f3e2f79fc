# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Flatpak deployments written by hand, laid out as Flatpak lays them out, for tests
that need an installation but not the real ``flatpak``."""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import io
import json
import os
import stat
import time
from pathlib import Path

from flatpak_sysext import quick, trigger
from testsupport.ostreerepo import Key, write_signatures

DECLARE = "[X-SystemExtension]\npath=ext\n"
"""Metadata declaring ``files/ext`` as the app's system extension."""


def stamp_apps(installation: str | os.PathLike[str]) -> dict[str, str]:
    """What the quick check's stamp of ``installation`` records per app (name -> the
    identity of its ``current/active`` link), read from its text; {} without a stamp
    that decodes."""
    data = Path(quick.stamp_path(os.fspath(installation))).read_bytes()
    if quick.Stamp.decode(data) is None:
        return {}
    body = data.decode().partition("\napps\n")[2]
    return dict(line[2:].split("\0") for line in body.split("\n") if line.startswith("A "))


def gvariant_deploy(origin: str, commit: str, subpaths: list[str]) -> bytes:
    """Serialise ``(ssasta{sv})`` with an empty dict, as GLib would (1-byte offsets)."""
    body = origin.encode() + b"\0"
    ends = [len(body)]
    body += commit.encode() + b"\0"
    ends.append(len(body))
    arr = b""
    arr_ends = []
    for s in subpaths:
        arr += s.encode() + b"\0"
        arr_ends.append(len(arr))
    arr += bytes(arr_ends)
    body += arr
    ends.append(len(body))
    body += b"\0" * (-len(body) % 8) + (1234).to_bytes(8, "big")
    return body + bytes(reversed(ends))


def deploy(base: Path, active: str, meta: str = DECLARE, *, branch: str = "stable",
           make_current: bool = True, app: str = "org.a.B") -> Path:
    """Write a deployment of ``app`` under the installation ``base`` and make it active
    (and current), as Flatpak does: each link replaced atomically by a rename."""
    ref = base / "app" / app / "x86_64" / branch
    dep = ref / active
    (dep / "files" / "ext").mkdir(parents=True)
    (dep / "deploy").write_bytes(gvariant_deploy("origin", active[:64], []))
    (dep / "metadata").write_text(f"[Application]\nname={app}\n\n{meta}")
    tmp = ref / "active.tmp"
    os.symlink(active, tmp)
    os.rename(tmp, ref / "active")
    if make_current:
        current = base / "app" / app / "current.tmp"
        os.symlink(f"x86_64/{branch}", current)
        os.rename(current, base / "app" / app / "current")
    return dep


DECL = "org.q.Declares"
PLAIN = "org.q.Plain"
OTHER = "org.q.Other"
MARGIN_NS = 50_000_000
"""The quick check's margin for tests that patch it in (instead of 2 s)."""


class HandMadeInstallation:
    """A hand-made installation with one app that declares an extension and one that
    does not, a config and a target directory."""

    def __init__(self, root: Path, *, verified: bool = False) -> None:
        """With ``verified``, the config requires a GPG-verified remote and ``repo/config``
        has one, so policy reads it as it would on a real installation."""
        self.inst = root / "inst"
        self.verified = verified
        self.target = root / "extensions"
        self.config = root / "config.json"
        self.confdir = root / "etc-flatpak"
        self.confdir.mkdir(parents=True)
        self.config.write_text(json.dumps({"target_dir": str(self.target), "host_sync": False,
                                           "require_gpg_verified_remote": verified,
                                           "allow": ["*"]}))
        if verified:
            # The remote every hand-made deployment comes from (``deploy``), verifying.
            (self.inst / "repo").mkdir(parents=True)
            (self.inst / "repo" / "config").write_text(
                '[core]\nmode=bare-user-only\n\n[remote "origin"]\nurl=file:///nowhere\n'
                'gpg-verify=true\n')
        self.environ = {"FLATPAK_SYSTEM_DIR": str(self.inst),
                        "FLATPAK_CONFIG_DIR": str(self.confdir),
                        "FLATPAK_SYSEXT_CONFIG": str(self.config),
                        "FLATPAK_SYSEXT_STATE_DIR": str(root / "state")}
        self.commits = iter(f"{n:064x}" for n in range(1, 1000))
        self.deploy(DECL, DECLARE)
        self.deploy(PLAIN, "")
        self.changed()

    def deploy(self, app: str, meta: str) -> Path:
        """A new deployment of ``app``, valid as an extension if ``meta`` declares one."""
        dep = deploy(self.inst, next(self.commits), meta, app=app)
        rel = dep / "files/ext/usr/lib/extension-release.d"
        rel.mkdir(parents=True)
        (rel / f"extension-release.{app}").write_text("ID=_any\n")
        commit_deployment(self.inst, dep, app, signed=self.verified)
        return dep

    def changed(self) -> None:
        """What Flatpak does at the end of every deploy and uninstall."""
        (self.inst / ".changed").touch()

    def full(self) -> str:
        """A full trigger run; what it printed."""
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert trigger.run_full(str(self.inst), None, self.environ) == 0
        return out.getvalue()

    def quiet(self, environ: dict[str, str] | None = None) -> bool:
        return quick.quiet(str(self.inst), self.environ if environ is None else environ)

    def settle(self) -> None:
        """Let the margin pass and make a quiet full run leave its stamp (with
        MARGIN_NS patched into ``quick``)."""
        time.sleep(2 * MARGIN_NS / 1e9)
        assert self.full() == ""
        assert Path(quick.stamp_path(str(self.inst))).is_file()

    def links(self) -> dict[str, str]:
        return {p.name: os.readlink(p) for p in self.target.iterdir()}


@functools.cache
def _signing_key() -> Key:
    """One throw-away key for every hand-made installation that verifies (its agent is
    stopped when the tests end)."""
    key = Key()
    atexit.register(key.close)
    return key


def commit_deployment(installation: Path, dep: Path, app: str, branch: str = "stable", *,
                      signed: bool = False) -> str:
    """Commit what the hand-made deployment ``dep`` holds into the installation's
    ``repo`` (``bare-user-only``, bound to ``app/APP/x86_64/BRANCH``) as ``flatpak
    build-export`` would, and make its ``deploy`` file name that commit, so that the
    snapshot verifies like a real one (flatpak_sysext.ostree). ``signed``: signed by a
    throw-away key that ``repo/origin.trustedkeys.gpg`` holds. Returns the commit."""
    from flatpak_sysext.flatpak import gvariant
    from flatpak_sysext.flatpak.ostreeobjects import framed_header, symlink_checksum

    repo = installation / "repo"
    for sub in ("objects", "refs/heads", "tmp"):
        (repo / sub).mkdir(parents=True, exist_ok=True)
    config = repo / "config"
    if not config.exists():
        config.write_text("[core]\nrepo_version=1\nmode=bare-user-only\n")
    elif "[core]" not in config.read_text():
        config.write_text("[core]\nrepo_version=1\nmode=bare-user-only\n\n" + config.read_text())

    def store(data: bytes, kind: str) -> bytes:
        digest = hashlib.sha256(data).digest()
        where = repo / "objects" / digest.hex()[:2]
        where.mkdir(exist_ok=True)
        (where / f"{digest.hex()[2:]}.{kind}").write_bytes(data)
        return digest

    def tree(d: Path) -> tuple[bytes, bytes]:
        files, dirs = [], []
        for p in sorted(d.iterdir(), key=lambda p: p.name):
            st = p.lstat()
            if p.is_symlink():
                target = os.readlink(p)
                csum = symlink_checksum(target)
                obj = repo / "objects" / csum[:2] / f"{csum[2:]}.file"
                obj.parent.mkdir(exist_ok=True)
                if not obj.is_symlink():
                    os.symlink(target, obj)
                files.append((p.name, bytes.fromhex(csum)))
            elif stat.S_ISDIR(st.st_mode):
                dirs.append((p.name, *tree(p)))
            else:
                header = framed_header(stat.S_IFREG | stat.S_IMODE(st.st_mode), "")
                files.append((p.name, hashlib.sha256(header + p.read_bytes()).digest()))
        meta = store(gvariant.encode("(uuua(ayay))", (0, 0, stat.S_IFDIR | 0o755, []), "big"),
                     "dirmeta")
        return store(gvariant.encode("(a(say)a(sayay))", (files, dirs), "big"), "dirtree"), meta

    root_tree, root_meta = tree(dep / "files")
    top_meta = root_meta
    top = gvariant.encode("(a(say)a(sayay))", ([], [("files", root_tree, root_meta)]), "big")
    binding = gvariant.Variant("as", gvariant.encode("as", [f"app/{app}/x86_64/{branch}"]))
    commit = gvariant.encode("(a{sv}aya(say)sstayay)", (
        [("ostree.ref-binding", binding)], b"", [], "hand-made", "", int(time.time()),
        store(top, "dirtree"), top_meta), "big")
    checksum = store(commit, "commit").hex()
    if signed:
        write_signatures(repo, checksum, [_signing_key().sign(commit)])
        ring = repo / "origin.trustedkeys.gpg"
        if not ring.exists():  # as Flatpak does: once, at remote-add
            ring.write_bytes(_signing_key().keyring)
    deploy_file = dep / "deploy"
    deploy_file.write_bytes(gvariant_deploy("origin", checksum, []))
    return checksum
