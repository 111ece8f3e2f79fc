# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The objects of an OSTree repository that :mod:`flatpak_sysext.ostree` verifies against:
commit, dirtree and dirmeta objects read bounded and checked against their names, and
the checksums OSTree gives file content.

Every object's name is the sha256 of what it holds (of a framed file header and the
content, for file objects), so anything read here is either what the commit names or a
:class:`VerifyError`; the repository itself is writable by what Flatpak runs as root,
and is trusted for nothing else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat

from flatpak_sysext.flatpak import keyfile
from flatpak_sysext.flatpak.gvariant import GVariantError, Variant, decode, encode
from flatpak_sysext.state import fileio

COMMIT_UNAVAILABLE = "commit-unavailable"
SIGNATURE_INVALID = "signature-invalid"
REF_BINDING_MISMATCH = "ref-binding-mismatch"
CONTENT_MISMATCH = "content-mismatch"
UNSUPPORTED_REPO = "unsupported-repo"

SUPPORTED_MODES = ("bare-user-only", "bare-user")
"""Repository modes whose commit, dirtree and dirmeta objects are plain files (every
system installation Flatpak has made since 0.10 is ``bare-user-only``)."""

MAX_COMMIT = 4 << 20
MAX_COMMITMETA = 1 << 20
MAX_DIRTREE = 16 << 20
MAX_DIRMETA = 64 << 10
MAX_SYMLINK = 4096

_COMMIT = "(a{sv}aya(say)sstayay)"
_DIRTREE = "(a(say)a(sayay))"
_DIRMETA = "(uuua(ayay))"
_FILE_HEADER = "(uuuusa(ayay))"
_SYMLINK_MODE = stat.S_IFLNK | 0o777


class VerifyError(Exception):
    """One reason content is not what was signed; ``code`` is a problem code, ``path``
    the path inside the declared tree ('' for the commit itself), ``str()`` a message a
    person can act on."""

    def __init__(self, code: str, path: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.path = path


@dataclasses.dataclass(frozen=True)
class Commit:
    """What the store needs of a commit object."""

    checksum: str
    timestamp: int
    """The commit's own timestamp (seconds since the epoch), for the downgrade check."""
    ref_bindings: tuple[str, ...]
    """``ostree.ref-binding``, else ``(xa.ref,)`` if present, else ()."""
    collection_binding: str | None
    root_tree: str
    root_meta: str


def repo_mode(repo: str) -> str:
    """``[core] mode`` of the repository's ``config`` ('' when it names none); raises
    VerifyError(unsupported-repo) when the config cannot be read."""
    try:
        groups = keyfile.read(os.path.join(repo, "config"))
    except (OSError, keyfile.KeyFileError) as e:
        raise VerifyError(UNSUPPORTED_REPO, "", f"{repo}/config cannot be read: {e}") from None
    return groups.get("core", {}).get("mode", "")


def require_supported(repo: str) -> str:
    mode = repo_mode(repo)
    if mode not in SUPPORTED_MODES:
        raise VerifyError(UNSUPPORTED_REPO, "", f"{repo} is a {mode or 'mode-less'} repository; "
                          f"only {' and '.join(SUPPORTED_MODES)} can be verified")
    return mode


def object_path(repo: str, checksum: str, kind: str) -> str:
    if len(checksum) != 64 or any(c not in "0123456789abcdef" for c in checksum):
        raise VerifyError(COMMIT_UNAVAILABLE, "", f"{checksum!r} is not an OSTree checksum")
    return os.path.join(repo, "objects", checksum[:2], f"{checksum[2:]}.{kind}")


def read_object(repo: str, checksum: str, kind: str, limit: int, path: str) -> bytes:
    """A metadata object's bytes, which must hash to its name."""
    where = object_path(repo, checksum, kind)
    try:
        data = fileio.read_regular(where, limit)
    except (OSError, ValueError) as e:
        raise VerifyError(COMMIT_UNAVAILABLE, path,
                          f"{kind} object {checksum} cannot be read: {e}") from None
    if hashlib.sha256(data).hexdigest() != checksum:
        raise VerifyError(COMMIT_UNAVAILABLE, path, f"{kind} object {checksum} does not hash "
                          "to its name: the repository's copy is corrupt or forged")
    return data


def _decode(sig: str, data: bytes, what: str, path: str) -> tuple[object, ...]:
    try:
        value = decode(sig, data, "big")
    except GVariantError as e:
        raise VerifyError(COMMIT_UNAVAILABLE, path, f"malformed {what}: {e}") from None
    assert isinstance(value, tuple)
    return value


def metadata_dict(entries: object, what: str,
                  code: str = COMMIT_UNAVAILABLE) -> dict[str, Variant]:
    """An ``a{sv}``'s entries; a key twice is refused with ``code`` (which one counts?)."""
    out: dict[str, Variant] = {}
    assert isinstance(entries, list)
    for key, value in entries:
        if key in out:
            raise VerifyError(code, "", f"{what} holds {key!r} twice")
        out[key] = value
    return out


def _lookup(meta: dict[str, Variant], key: str, sig: str) -> object:
    """The value of ``key`` if it has type ``sig``; None if absent."""
    variant = meta.get(key)
    if variant is None:
        return None
    if variant.type != sig:
        raise VerifyError(REF_BINDING_MISMATCH, "", f"{key} has type {variant.type}, not {sig}")
    try:
        return decode(sig, variant.data, "big")
    except GVariantError as e:
        raise VerifyError(COMMIT_UNAVAILABLE, "", f"malformed {key}: {e}") from None


def _checksum_of(raw: object, what: str) -> str:
    if not isinstance(raw, bytes) or len(raw) != 32:
        raise VerifyError(COMMIT_UNAVAILABLE, "", f"{what} is not a 32-byte checksum")
    return raw.hex()


def read_commit(repo: str, checksum: str) -> Commit:
    """Read the commit object ``checksum`` of ``repo`` (``<installation>/repo``), bounded.

    Raises VerifyError: unsupported-repo for a repository mode it cannot verify,
    commit-unavailable if the object is missing, unreadable, too large, malformed or does
    not hash to ``checksum``.
    """
    require_supported(repo)
    data = read_object(repo, checksum, "commit", MAX_COMMIT, "")
    meta_entries, _parent, _related, _subject, _body, timestamp, root, root_meta = _decode(
        _COMMIT, data, "commit object", "")
    meta = metadata_dict(meta_entries, "the commit's metadata")
    bindings = _lookup(meta, "ostree.ref-binding", "as")
    if bindings is None:
        ref = _lookup(meta, "xa.ref", "s")
        bindings = [] if ref is None else [ref]
    collection = _lookup(meta, "ostree.collection-binding", "s")
    assert isinstance(bindings, list) and isinstance(timestamp, int)
    return Commit(checksum=checksum, timestamp=timestamp,
                  ref_bindings=tuple(str(b) for b in bindings),
                  collection_binding=str(collection) if collection else None,
                  root_tree=_checksum_of(root, "the root dirtree"),
                  root_meta=_checksum_of(root_meta, "the root dirmeta"))



@dataclasses.dataclass(frozen=True)
class Dir:
    """One directory of the commit: its files' content checksums and its subdirectories'
    (dirtree, dirmeta) checksums, by name."""

    files: dict[str, str]
    dirs: dict[str, tuple[str, str]]


def load_dir(repo: str, tree: str, meta: str, path: str) -> Dir:
    """The dirtree ``tree`` and dirmeta ``meta``, each checked against its checksum."""
    dirmeta = _decode(_DIRMETA, read_object(repo, meta, "dirmeta", MAX_DIRMETA, path),
                      "dirmeta", path)
    mode = dirmeta[2]
    if not isinstance(mode, int) or not stat.S_ISDIR(mode):
        raise VerifyError(COMMIT_UNAVAILABLE, path, f"dirmeta {meta} is not a directory's")
    files_raw, dirs_raw = _decode(_DIRTREE, read_object(repo, tree, "dirtree", MAX_DIRTREE,
                                                         path), "dirtree", path)
    assert isinstance(files_raw, list) and isinstance(dirs_raw, list)
    files = {name: _checksum_of(csum, f"{path}/{name}") for name, csum in files_raw}
    dirs = {name: (_checksum_of(t, f"{path}/{name}"), _checksum_of(m, f"{path}/{name}"))
            for name, t, m in dirs_raw}
    names = [name for name, *_ in files_raw] + [name for name, *_ in dirs_raw]
    if len(set(names)) != len(names) or any(
            not n or "/" in n or n in (".", "..") for n in names):
        raise VerifyError(COMMIT_UNAVAILABLE, path, f"dirtree {tree} holds an invalid or "
                          "repeated name")
    return Dir(files, dirs)


def framed_header(mode: int, target: str) -> bytes:
    """What a content checksum starts with: the file header ``(uuuusa(ayay))`` (uid,
    gid, mode, rdev big-endian, symlink target, extended attributes), after its size as
    a big-endian u32 and four bytes of padding. uid and gid are 0 and there are no
    extended attributes: Flatpak commits (build-export canonicalises permissions and
    skips xattrs) and deploys (as root, in user mode) them so."""
    header = encode(_FILE_HEADER, (0, 0, mode, 0, target, []), "big")
    return len(header).to_bytes(4, "big") + b"\0" * 4 + header


def symlink_checksum(target: str) -> str:
    return hashlib.sha256(framed_header(_SYMLINK_MODE, target)).hexdigest()


def recorded_symlink(repo: str, mode: str, checksum: str, path: str) -> str | None:
    """The target of the symlink the commit records as content ``checksum``; None when
    that content is not a symlink. bare-user-only stores a symlink as a symlink,
    bare-user as a regular file holding the target and a NUL; either way the target is
    checked against the checksum."""
    where = object_path(repo, checksum, "file")
    try:
        if mode == "bare-user-only":
            if not stat.S_ISLNK(os.lstat(where).st_mode):
                return None
            target = os.readlink(where)
        else:
            raw = fileio.read_regular(where, MAX_SYMLINK)
            target = raw.removesuffix(b"\0").decode("utf-8")
    except (OSError, ValueError) as e:
        raise VerifyError(COMMIT_UNAVAILABLE, path, f"file object {checksum} cannot be read: "
                          f"{e}") from None
    return target if symlink_checksum(target) == checksum else None

