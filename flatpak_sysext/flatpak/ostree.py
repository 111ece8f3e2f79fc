# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Verifying a snapshot against the signed OSTree commit its deployment names.

Whatever can write the installation (every trigger Flatpak runs) can change a deployed
file or point ``active`` at a directory of its own making; the signed commit cannot be
changed. So before a snapshot is published the store checks, with nothing but the
repository's own objects and ``gpgv``:

- the commit object hashes to its name (:func:`read_commit`);
- one of its detached signatures (``objects/XX/REST.commitmeta``, ``ostree.gpgsigs``) is
  valid by a key of the pinned keyring (:func:`verify_signature`);
- it is bound to the app's ref and collection (:func:`check_binding`);
- the hash chain from the commit's root dirtree down to the declared directory, then every
  entry of the snapshot, matches the commit's records (:func:`verify_tree`).

docs/ARCHITECTURE.md#verifying-against-the-signed-commit says what is compared and why.
The repository's objects are read by :mod:`flatpak_sysext.ostreeobjects`, whose
:class:`VerifyError`, :class:`Commit`, :func:`read_commit` and :func:`repo_mode` this
module's callers use from here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
import subprocess
import tempfile

from flatpak_sysext.flatpak.gvariant import GVariantError, decode
from flatpak_sysext.flatpak.ostreeobjects import (
    COMMIT_UNAVAILABLE,
    CONTENT_MISMATCH,
    MAX_COMMIT,
    MAX_COMMITMETA,
    REF_BINDING_MISMATCH,
    SIGNATURE_INVALID,
    UNSUPPORTED_REPO,
    Commit,
    Dir,
    VerifyError,
    framed_header,
    load_dir,
    metadata_dict,
    object_path,
    read_commit,
    read_object,
    recorded_symlink,
    repo_mode,
    require_supported,
    symlink_checksum,
)
from flatpak_sysext.host import hostcommands
from flatpak_sysext.rules import ruleset
from flatpak_sysext.state import fileio, store

__all__ = ["COMMIT_UNAVAILABLE", "CONTENT_MISMATCH", "REF_BINDING_MISMATCH",
           "SIGNATURE_INVALID", "UNSUPPORTED_REPO", "Commit", "VerifyError", "check_binding",
           "read_commit", "repo_mode", "verify_signature", "verify_tree"]

MAX_SIGNATURES = 16
MAX_TREE_BYTES = 4 << 30
"""The default bound on the bytes of file content :func:`verify_tree` reads."""
MAX_HOPS = 40  # symlinks followed on the way to the declared directory, as the kernel does
GPGV_TIMEOUT = 60

DIRECTORY_BITS = 0o755
"""A directory's permission bits may hold no more than these: Flatpak checks every
directory of a system installation out as 0755 (0755 less the umask), whatever the
commit's dirmeta records, so the recorded mode is not what is deployed."""

_CHUNK = 1 << 20


def _signatures(repo: str, checksum: str) -> list[bytes]:
    where = object_path(repo, checksum, "commitmeta")
    try:
        data = fileio.read_regular(where, MAX_COMMITMETA)
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        raise VerifyError(SIGNATURE_INVALID, "", f"{where} cannot be read: {e}") from None
    try:
        entries = decode("a{sv}", data, "big")
    except GVariantError as e:
        raise VerifyError(SIGNATURE_INVALID, "", f"malformed {where}: {e}") from None
    meta = metadata_dict(entries, "the commit's detached metadata", SIGNATURE_INVALID)
    variant = meta.get("ostree.gpgsigs")
    if variant is None or variant.type != "aay":
        return []
    try:
        sigs = decode("aay", variant.data)
    except GVariantError as e:
        raise VerifyError(SIGNATURE_INVALID, "", f"malformed ostree.gpgsigs: {e}") from None
    assert isinstance(sigs, list)
    return [bytes(s) for s in sigs]


def _valid_signers(status: str) -> list[str]:
    """The primary-key fingerprints of the good signatures in gpgv's status output: those
    whose block (from NEWSIG) says GOODSIG, not EXPSIG, EXPKEYSIG or REVKEYSIG (which
    OSTree refuses too, while gpgv says VALIDSIG for them and exits 0), and VALIDSIG."""
    signers = []
    good = False
    for line in status.splitlines():
        parts = line.split()
        if parts[:1] != ["[GNUPG:]"] or len(parts) < 2:
            continue
        if parts[1] == "NEWSIG":
            good = False
        elif parts[1] == "GOODSIG":
            good = True
        elif parts[1] == "VALIDSIG" and good and len(parts) >= 3:
            signers.append(parts[11] if len(parts) > 11 else parts[2])
    return signers


def verify_signature(repo: str, checksum: str, keyring: bytes) -> tuple[str, ...]:
    """The primary-key fingerprints of ``keyring`` (an OpenPGP keyring's bytes) that made a
    valid detached signature of commit ``checksum``, checked with the host's ``gpgv``.

    Raises VerifyError: commit-unavailable as :func:`read_commit`; signature-invalid when
    the commit has no detached signature or none is valid by a key of ``keyring``.
    """
    commit = read_object(repo, checksum, "commit", MAX_COMMIT, "")
    sigs = _signatures(repo, checksum)
    if not sigs:
        raise VerifyError(SIGNATURE_INVALID, "", f"commit {checksum} carries no GPG signature")
    gpgv = hostcommands.tool("gpgv")
    if gpgv is None:
        raise VerifyError(SIGNATURE_INVALID, "", "no gpgv in /usr/bin or /bin to check the "
                          "commit's signature with (install gpgv)")
    found: list[str] = []
    with tempfile.TemporaryDirectory(prefix="flatpak-sysext-gpgv-") as home:
        ring = os.path.join(home, "pinned.gpg")
        data = os.path.join(home, "commit")
        for path, content in ((ring, keyring), (data, commit)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(content)
        for index, sig in enumerate(sigs[:MAX_SIGNATURES]):
            sig_path = os.path.join(home, f"sig{index}")
            with open(sig_path, "xb") as f:
                f.write(sig)
            try:
                proc = subprocess.run(
                    [gpgv, "--homedir", home, "--status-fd", "1", "--keyring", ring,
                     sig_path, data], stdin=subprocess.DEVNULL, capture_output=True,
                    timeout=GPGV_TIMEOUT, check=False, env={"LC_ALL": "C"})
            except (OSError, subprocess.TimeoutExpired) as e:
                raise VerifyError(SIGNATURE_INVALID, "", f"{gpgv} failed: {e}") from None
            if proc.returncode == 0:
                found += [fpr for fpr in _valid_signers(proc.stdout.decode("utf-8", "replace"))
                          if fpr not in found]
    if not found:
        raise VerifyError(SIGNATURE_INVALID, "", f"none of the {len(sigs)} signature(s) of "
                          f"commit {checksum} is valid by a key of the pinned keyring")
    return tuple(found)


def check_binding(commit: Commit, ref: str, collection: str | None) -> None:
    """Raise VerifyError(ref-binding-mismatch) unless ``commit`` is bound to ``ref``
    (``app/ID/ARCH/BRANCH``) and, when ``collection`` is given, to that collection: a
    validly signed commit of another app must not pass for this one."""
    if ref not in commit.ref_bindings:
        bound = ", ".join(commit.ref_bindings) or "no ref at all"
        raise VerifyError(REF_BINDING_MISMATCH, "", f"commit {commit.checksum} is bound to "
                          f"{bound}, not to {ref}")
    if collection is not None and commit.collection_binding != collection:
        raise VerifyError(REF_BINDING_MISMATCH, "", f"commit {commit.checksum} is bound to "
                          f"collection {commit.collection_binding or '(none)'}, not to "
                          f"{collection}")


def _load(repo: str, tree: str, meta: str, path: str, shown: str) -> Dir:
    """:func:`load_dir`, its errors naming ``path`` (in the declared tree, '' above it)
    and saying where (``shown``, the path in the deployment)."""
    try:
        return load_dir(repo, tree, meta, path)
    except VerifyError as e:
        raise VerifyError(e.code, path, f"{shown}: {e}") from None


def _descend(repo: str, mode: str, commit: Commit, subpath: str) -> Dir:
    """The commit's directory at ``subpath``, following the commit's own relative
    symlinks as the declared path is resolved on disk, never leaving ``files/``."""
    pending = [p for p in subpath.split("/") if p not in ("", ".")]
    if not pending or ".." in pending or pending[0] != "files" or len(pending) < 2:
        raise VerifyError(CONTENT_MISMATCH, "", f"{subpath!r} is not a path below files/")
    chain = [_load(repo, commit.root_tree, commit.root_meta, "", "the commit's root")]
    resolved: list[str] = []
    hops = 0
    while pending:
        name = pending.pop(0)
        shown = "/".join([*resolved, name])
        here = chain[-1]
        if name == "..":
            if len(resolved) <= 1:
                raise VerifyError(CONTENT_MISMATCH, "", f"{subpath}: a symlink in the commit "
                                  "leads out of files/")
            chain.pop()
            resolved.pop()
        elif name in here.dirs:
            chain.append(_load(repo, *here.dirs[name], "", shown))
            resolved.append(name)
        elif name in here.files:
            target = recorded_symlink(repo, mode, here.files[name], shown)
            hops += 1
            if target is None or target.startswith("/") or hops > MAX_HOPS:
                raise VerifyError(CONTENT_MISMATCH, "", f"{shown} is not a directory (nor a "
                                  "relative symlink to one) in the signed commit")
            pending[:0] = [p for p in target.split("/") if p not in ("", ".")]
        elif resolved == ["files"] and name in (".ref", "extra"):
            raise VerifyError(CONTENT_MISMATCH, "", f"{shown} is written by Flatpak at install "
                              "time and is not part of the signed commit: it cannot be verified")
        else:
            raise VerifyError(CONTENT_MISMATCH, "", f"{shown} is not in the signed commit")
    return chain[-1]


@dataclasses.dataclass
class _Walk:
    repo: str
    mode: str
    shown: str
    bytes_left: int
    entries_left: int
    max_depth: int

    def fail(self, rel: str, what: str) -> VerifyError:
        return VerifyError(CONTENT_MISMATCH, rel, f"{self.shown}/{rel}: {what}"
                           if rel else f"{self.shown}: {what}")


def verify_tree(repo: str, commit: Commit, subpath: str, tree: str, *,
                max_bytes: int = MAX_TREE_BYTES, max_entries: int = ruleset.MAX_ENTRIES,
                max_depth: int = ruleset.MAX_DEPTH) -> None:
    """Check that the directory ``tree`` (the snapshot of the deployment's ``subpath``,
    e.g. ``files/lib/extensions``) holds exactly what ``commit`` records there.

    Walks the commit's dirtrees down to ``subpath`` (each object checked against its
    parent's record), then compares ``tree`` entry by entry: the same names; each
    regular file's and symlink's content checksum (content, mode, symlink target), root
    ownership, no meaningful extended attribute, and directories as Flatpak checks them
    out. Never follows a symlink in ``tree``; reads at most ``max_bytes`` of content and
    ``max_entries`` entries, ``max_depth`` levels deep. Raises VerifyError on the first
    difference (content-mismatch) or an object that cannot be trusted
    (commit-unavailable, unsupported-repo).
    """
    mode = require_supported(repo)
    expected = _descend(repo, mode, commit, subpath)
    walk = _Walk(repo, mode, subpath.strip("/"), max_bytes, max_entries, max_depth)
    try:
        fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise walk.fail("", f"the snapshot {tree} cannot be opened: {e.strerror}") from None
    try:
        _compare_dir(walk, expected, fd, "", 0)
    finally:
        os.close(fd)


def _owner_and_xattrs(walk: _Walk, st: os.stat_result, fd: int | None, rel: str) -> None:
    if (st.st_uid, st.st_gid) != (0, 0):
        raise walk.fail(rel, f"owned by {st.st_uid}:{st.st_gid}; Flatpak deploys every file "
                        "owned by root")
    if fd is None:
        return
    kept = store.kept_xattrs(fd)  # the store keeps only those that change what a file does
    if kept:
        raise walk.fail(rel, f"carries the extended attribute {kept[0]}, which the signed "
                        "commit does not (Flatpak deploys none)")


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a symlink"
    return "a regular file" if stat.S_ISREG(mode) else "a special file"


def _compare_dir(walk: _Walk, expected: Dir, dfd: int, rel: str, depth: int) -> None:
    try:
        st = os.fstat(dfd)
        names = sorted(os.listdir(dfd))
    except OSError as e:
        raise walk.fail(rel, f"cannot be read: {e.strerror}") from None
    if stat.S_IMODE(st.st_mode) & ~DIRECTORY_BITS:
        raise walk.fail(rel, f"directory mode {stat.S_IMODE(st.st_mode):04o}; Flatpak checks "
                        f"directories out with at most {DIRECTORY_BITS:04o}")
    _owner_and_xattrs(walk, st, dfd, rel)
    walk.entries_left -= len(names)
    if walk.entries_left < 0:
        raise walk.fail(rel, "more entries than can be verified")
    wanted = expected.files.keys() | expected.dirs.keys()
    for name in names:
        if name not in wanted:
            raise walk.fail(os.path.join(rel, name), "is not in the signed commit")
    for name in sorted(wanted - set(names)):
        raise walk.fail(os.path.join(rel, name), "is in the signed commit but missing")
    for name in names:
        child = os.path.join(rel, name)
        try:
            _compare_entry(walk, expected, name, dfd, child, depth)
        except OSError as e:
            raise walk.fail(child, f"cannot be read: {e.strerror}") from None


def _compare_entry(walk: _Walk, expected: Dir, name: str, dfd: int, child: str,
                   depth: int) -> None:
    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    if name in expected.files:
        _compare_file(walk, expected.files[name], name, dfd, st, child)
        return
    if not stat.S_ISDIR(st.st_mode):
        raise walk.fail(child, f"is {_kind(st.st_mode)}; the signed commit has a directory")
    if depth + 1 > walk.max_depth:
        raise walk.fail(child, "deeper than can be verified")
    below = _load(walk.repo, *expected.dirs[name], child, f"{walk.shown}/{child}")
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    try:
        _compare_dir(walk, below, fd, child, depth + 1)
    finally:
        os.close(fd)


def _compare_file(walk: _Walk, want: str, name: str, dfd: int, st: os.stat_result,
                  rel: str) -> None:
    if stat.S_ISLNK(st.st_mode):
        _owner_and_xattrs(walk, st, None, rel)
        target = os.readlink(name, dir_fd=dfd)
        if symlink_checksum(target) != want:
            raise walk.fail(rel, f"is a symlink to {target!r}; the signed commit has "
                            f"{_recorded(walk, want) or 'other content here'}")
        return
    if not stat.S_ISREG(st.st_mode):
        raise walk.fail(rel, f"is {_kind(st.st_mode)}; the signed commit has a file")
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(now.st_mode):
            raise walk.fail(rel, "was replaced while being verified")
        _owner_and_xattrs(walk, now, fd, rel)
        walk.bytes_left -= now.st_size
        if walk.bytes_left < 0:
            raise walk.fail(rel, "more content than can be verified")
        digest = hashlib.sha256(framed_header(now.st_mode, ""))
        size = 0
        while chunk := os.read(fd, _CHUNK):
            size += len(chunk)
            if size > now.st_size:
                break
            digest.update(chunk)
    finally:
        os.close(fd)
    if size != now.st_size:
        raise walk.fail(rel, "changed size while being verified")
    if digest.hexdigest() != want:
        raise walk.fail(rel, _file_difference(walk, want, now))


def _recorded(walk: _Walk, want: str) -> str:
    """What the commit records as content ``want``, as far as the repository tells
    ("a symlink to 'x'", "a regular file of mode 0644"; "" when it does not): in
    bare-user-only the object is a symlink or a file with the recorded mode. Only for
    the message: the verdict is the checksum."""
    if walk.mode != "bare-user-only":
        return ""
    where = object_path(walk.repo, want, "file")
    try:
        st = os.lstat(where)
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(where)
            return f"a symlink to {target!r}" if symlink_checksum(target) == want else ""
    except OSError:
        return ""
    return f"a regular file of mode {stat.S_IMODE(st.st_mode):04o}" if stat.S_ISREG(
        st.st_mode) else ""


def _file_difference(walk: _Walk, want: str, st: os.stat_result) -> str:
    mode = f"a regular file of mode {stat.S_IMODE(st.st_mode):04o}"
    recorded = _recorded(walk, want)
    if recorded == mode:
        return "its content differs from the signed commit's"
    if recorded:
        return f"is {mode}; the signed commit has {recorded}"
    return f"is {mode} whose content or mode differs from the signed commit's"
