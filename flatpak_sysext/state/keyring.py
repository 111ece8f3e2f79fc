# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The keyring a remote's commits are checked with, and its pinned copies.

What OSTree itself uses for a remote: ``repo/<remote>.trustedkeys.gpg`` and the files of
the remote's ``gpgkeypath=``; the global keyrings (``/usr/share/ostree/trusted.gpg.d``)
only when the remote has none. At consent the service keeps the keyring's bytes in its
root-only state directory (``keyrings/<sha256>.gpg``), named by their digest: what a
commit's signature is checked against from then on, whatever the writable ``repo/``
says later (docs/reference.md#consent).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

from flatpak_sysext.flatpak import keyfile
from flatpak_sysext.state import fileio, statefiles

MAX_KEYRING = 1 << 20
"""A remote's keyring holds a few keys of a few KiB each."""
GLOBAL_KEYRINGS = "/usr/share/ostree/trusted.gpg.d"
KEYRINGS = "keyrings"


def keyring_fingerprints(data: bytes) -> tuple[str, ...]:
    """The fingerprints of the primary public keys in an OpenPGP keyring (RFC 4880 and
    9580 packets), uppercase hex, sorted. Raises ValueError if it is not a keyring."""
    found: set[str] = set()
    at = 0
    while at < len(data):
        header = data[at]
        if not header & 0x80:
            raise ValueError(f"not an OpenPGP packet at byte {at}")
        if header & 0x40:  # new format
            tag = header & 0x3F
            first = data[at + 1] if at + 1 < len(data) else -1
            if 0 <= first < 192:
                length, start = first, at + 2
            elif 192 <= first < 224 and at + 2 < len(data):
                length, start = ((first - 192) << 8) + data[at + 2] + 192, at + 3
            elif first == 255:
                length, start = int.from_bytes(data[at + 2:at + 6], "big"), at + 6
            else:
                raise ValueError(f"unsupported packet length at byte {at}")
        else:  # old format
            tag, kind = (header >> 2) & 0x0F, header & 0x03
            if kind == 3:
                raise ValueError(f"indeterminate packet length at byte {at}")
            size = 1 << kind
            length, start = int.from_bytes(data[at + 1:at + 1 + size], "big"), at + 1 + size
        body = data[start:start + length]
        if len(body) != length:
            raise ValueError(f"packet cut short at byte {at}")
        if tag == 6 and body:  # a primary public key
            found.add(_fingerprint(body))
        at = start + length
    return tuple(sorted(found))


def _fingerprint(body: bytes) -> str:
    version = body[0]
    if version == 4:
        return hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest().upper()
    if version in (5, 6):
        prefix = b"\x9a" if version == 5 else b"\x9b"
        return hashlib.sha256(prefix + len(body).to_bytes(4, "big") + body).hexdigest().upper()
    raise ValueError(f"public key version {version} is not supported")


def _files(path: str) -> list[str]:
    """A keyring path: the file itself, or a directory's ``*.gpg`` files, sorted."""
    if os.path.isdir(path):
        return [os.path.join(path, n) for n in sorted(os.listdir(path)) if n.endswith(".gpg")]
    return [path]


def remote_group(installation_path: str, remote: str) -> Mapping[str, str] | None:
    """The ``[remote "NAME"]`` group of the installation's ``repo/config``; None if the
    remote is not configured or the file cannot be read exactly."""
    try:
        groups = keyfile.read(os.path.join(installation_path, "repo", "config"))
    except (OSError, keyfile.KeyFileError):
        return None
    return None if "/" in remote else groups.get(f'remote "{remote}"')


def remote_keyring(installation_path: str, remote: str) -> bytes | None:
    """The keyring OSTree checks ``remote``'s commits with, concatenated (b"" if there is
    none); None if the remote is not configured or a keyring cannot be read exactly, or
    the whole is past MAX_KEYRING (then nothing vouches for it)."""
    keys = remote_group(installation_path, remote)
    if keys is None:
        return None
    repo = os.path.join(installation_path, "repo")
    paths = [os.path.join(repo, f"{remote}.trustedkeys.gpg")]
    if keys.get("gpgkeypath"):
        paths += [p.strip() for p in keys["gpgkeypath"].replace(",", ";").split(";")
                  if os.path.isabs(p.strip())]
    data = b""
    try:
        for path in paths:
            for name in _files(path) if os.path.lexists(path) else []:
                data += fileio.read_regular(name, MAX_KEYRING - len(data))
        if not data:  # the remote has none of its own
            for name in _files(GLOBAL_KEYRINGS) if os.path.isdir(GLOBAL_KEYRINGS) else []:
                data += fileio.read_regular(name, MAX_KEYRING - len(data))
    except (OSError, ValueError):
        return None
    return data


def digest(data: bytes) -> str:
    """The name a keyring is pinned under."""
    return hashlib.sha256(data).hexdigest()


def pin(state_dir: str, data: bytes) -> str:
    """Keep ``data`` in the state directory (root only); returns its digest."""
    name = digest(data)
    where = os.path.join(state_dir, KEYRINGS)
    statefiles.private_directory(where)
    path = os.path.join(where, f"{name}.gpg")
    if not os.path.exists(path):
        statefiles.write_file(path, data, mode=0o600)
    return name


def pinned(state_dir: str, name: str) -> bytes | None:
    """The keyring pinned as ``name``, if it is there and still has that digest."""
    try:
        data = fileio.read_regular(os.path.join(state_dir, KEYRINGS, f"{name}.gpg"),
                                   MAX_KEYRING)
    except (OSError, ValueError):
        return None
    return data if digest(data) == name else None
