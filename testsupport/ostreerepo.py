# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""What an attacker who can write a Flatpak installation's repository can do to it, for
the tests of flatpak_sysext.ostree: forge commit objects (consistent ones, named by their
own hash), drop or replace their detached signatures, sign with a key of their own."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from flatpak_sysext.flatpak import gvariant

COMMIT = "(a{sv}aya(say)sstayay)"


def object_file(repo: Path, checksum: str, kind: str) -> Path:
    """Where a repository keeps the object ``checksum`` of type ``kind`` (commit...)."""
    return repo / "objects" / checksum[:2] / f"{checksum[2:]}.{kind}"


class Key:
    """A throw-away OpenPGP signing key of one's own; ``close()`` stops its agent.

    ``expired``: a key made and used in 2020 that expired a day later (its signatures
    are good, by a key that has expired since)."""

    def __init__(self, *, expired: bool = False) -> None:
        # A short home: gpg-agent's socket path must fit in sun_path.
        self.home = Path(tempfile.mkdtemp(prefix="fsx-key-"))
        self._gpg = ["gpg", "--batch", "--quiet", "--homedir", str(self.home)]
        self._when = ["--faked-system-time", "20200101T010000"] if expired else []
        subprocess.run([*self._gpg, *self._when, "--passphrase", "", "--pinentry-mode",
                        "loopback", "--quick-gen-key", "someone else <else@fsx.invalid>",
                        "ed25519", "sign", "1d" if expired else "never"], check=True,
                       capture_output=True)
        listing = subprocess.run([*self._gpg, "--with-colons", "--list-secret-keys"],
                                 check=True, capture_output=True, text=True).stdout
        self.fingerprint = next(line.split(":")[9] for line in listing.splitlines()
                                if line.startswith("fpr:"))
        self.keyring = subprocess.run([*self._gpg, "--export", self.fingerprint], check=True,
                                      capture_output=True).stdout
        """The public key, as a keyring's bytes."""

    def sign(self, data: bytes) -> bytes:
        """A binary detached signature of ``data``, as ostree stores it."""
        return subprocess.run([*self._gpg, *self._when, "--detach-sign", "-u", self.fingerprint,
                               "--output", "-"], input=data, check=True,
                              capture_output=True).stdout

    def close(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"],
                       check=False, capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)


def write_signatures(repo: Path, checksum: str, signatures: list[bytes]) -> None:
    """Give commit ``checksum`` the detached metadata ``{'ostree.gpgsigs': signatures}``."""
    sigs = gvariant.Variant("aay", gvariant.encode("aay", signatures))
    object_file(repo, checksum, "commitmeta").write_bytes(
        gvariant.encode("a{sv}", [("ostree.gpgsigs", sigs)]))


def forge_commit(repo: Path, checksum: str, *, subject: str = "forged",
                 root_tree: str | None = None, root_meta: str | None = None) -> str:
    """A consistent copy of commit ``checksum`` (same metadata and bindings, another
    subject, optionally another root): stored under its own hash, which it returns.
    Nothing signs it."""
    data = object_file(repo, checksum, "commit").read_bytes()
    value = gvariant.decode(COMMIT, data, "big")
    assert isinstance(value, tuple)
    meta, parent, related, _subject, body, timestamp, tree, dirmeta = value
    forged = gvariant.encode(COMMIT, (
        meta, parent, related, subject, body, timestamp,
        bytes.fromhex(root_tree) if root_tree else tree,
        bytes.fromhex(root_meta) if root_meta else dirmeta), "big")
    name = hashlib.sha256(forged).hexdigest()
    object_file(repo, name, "commit").parent.mkdir(exist_ok=True)
    object_file(repo, name, "commit").write_bytes(forged)
    return name


def copy_repo(repo: Path, dest: Path) -> Path:
    """A copy of a repository (objects, config, keyrings) to tamper with."""
    shutil.copytree(repo, dest, symlinks=True)
    return dest


def precreate_repo(system_dir: Path, mode: str) -> Path:
    """Make an installation's repository in ``mode`` before Flatpak first uses it (Flatpak
    opens a repository it finds; installations made by old versions are ``bare-user``)."""
    repo = system_dir / "repo"
    for sub in ("objects", "refs/heads", "refs/remotes", "refs/mirrors", "state", "tmp",
                "extensions"):
        (repo / sub).mkdir(parents=True)
    (repo / "config").write_text(f"[core]\nrepo_version=1\nmode={mode}\n")
    return repo
