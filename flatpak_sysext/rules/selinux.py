# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""SELinux: label every snapshot for the host's policy, keep the labels right, judge types
(docs/platform.md#selinux).

overlayfs shows each merged file with the label of its topmost layer's real file, and
each merged directory with that of the topmost layer's directory. A snapshot copied under
``/var/lib/flatpak-sysext`` is ``var_lib_t`` throughout: merged, it would relabel the
host's own ``/usr/lib`` and ``/usr/share``, systemd could not start its units and
dbus-daemon would skip its policy. So, when the kernel has SELinux on, the copy's
``usr/`` and ``opt/`` are labeled as if they lived at ``/``, by the distribution's own
``setfiles -r`` against the loaded policy's file contexts, before validation judges the
copy: the labels are part of what was validated.

The policy's identity (a digest of its file contexts) and the label ``usr/`` got are
recorded on the snapshot's directory in the extended attribute :data:`MARK`. A policy
update that changes file contexts, or a relabel of ``/var`` (``restorecon -R /var``,
``/.autorelabel``: the store is ``var_lib_t`` again), is noticed by :func:`keep_labels`
at every run (two ``getxattr``) and at boot before ``systemd-sysext.service`` merges,
and the snapshot is labeled again; merged, the run refreshes it (reconcile.py): the
overlay keeps the labels it read.

Types: a tree names its files, so it could name one to match a file-context rule that
gives the entry type of a confined domain (``usr/sbin/sshd`` is ``sshd_exec_t``). The
types a tree's files get (:func:`tree_types`: a labeled snapshot's own, else what
``setfiles -n`` says labeling would give) go into its manifest, and those outside
:data:`GENERIC` are the restricted class :data:`CLASS` (:func:`judged`).

Imported by the trigger's input list: only ``os`` and ``hashlib`` at import time.
"""

from __future__ import annotations

import hashlib
import os
import subprocess

TYPE_CHECKING = False  # Not typing's: see quick.py.
if TYPE_CHECKING:
    from collections.abc import Iterable

    from flatpak_sysext.report import TreeReport

SELINUXFS = "sys/fs/selinux"
CONFIG = "etc/selinux/config"
XATTR = "security.selinux"
MARK = "trusted.flatpak-sysext.selinux"
"""On a labeled snapshot's directory: ``<policy identity> <label of usr/ or opt/>``."""
SETFILES = ("usr/sbin/setfiles", "sbin/setfiles")
NO_LABELS = "FLATPAK_SYSEXT_TEST_NO_SELINUX_LABELS"
"""Tests only (the enforcing VM's negative control): ``1`` leaves snapshots unlabeled."""
CLASS = "selinux-types"
NOT_JUDGED = "not judged"
TIMEOUT = 300

GENERIC = frozenset({
    # Programs, libraries, data, man pages, locales, fonts: both policies, by path.
    "bin_t", "lib_t", "usr_t", "man_t", "locale_t", "fonts_t",
    # Unit files: Debian's reference policy (system, user), and Fedora's (both).
    "systemd_unit_t", "systemd_user_unit_t", "systemd_unit_file_t",
    # udev rules: the reference policy's type for usr/lib/udev/rules.d (Fedora: lib_t).
    "udev_rules_t",
})
"""The types an extension may give its files without the administrator's say: what
Debian's reference policy and Fedora's targeted policy give programs, libraries, data, man
pages, locales, fonts, units and udev rules by path (D-Bus and polkit configuration under
``/usr/share`` is plain ``usr_t`` in both). What these let a domain do is read or execute
them: a service systemd starts from ``bin_t`` gets the domain any unlabeled third-party
daemon gets (``initrc_t`` on the reference policy, ``unconfined_service_t`` on Fedora's),
and a rules file is judged as a grant of its own. Anything else is a type some confined
domain is entered through or trusts: ``*_exec_t`` (``usr/sbin/sshd``), ``ld_so_t``,
``textrel_shlib_t`` (text relocations allowed), the unit types of named services
(``power_unit_t``, ``httpd_unit_file_t``: a unit named ``*power*``, ``httpd*``)."""


def _host(root: str, rel: str) -> str:
    return os.path.join(root, rel)


def enabled(root: str = "/") -> bool:
    """Whether the kernel has SELinux on (selinuxfs is mounted), enforcing or not."""
    return os.path.exists(_host(root, f"{SELINUXFS}/enforce"))


def enforcing(root: str = "/") -> bool:
    """Whether SELinux is enforcing."""
    try:
        with open(_host(root, f"{SELINUXFS}/enforce"), "rb") as f:
            return f.read(16).strip() == b"1"
    except OSError:
        return False


def policy_name(root: str = "/") -> str | None:
    """``SELINUXTYPE`` of /etc/selinux/config: the policy the system loads."""
    try:
        with open(_host(root, CONFIG), encoding="utf-8", errors="replace") as f:
            lines = f.read(1 << 16).splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.strip().partition("=")
        if key.strip() == "SELINUXTYPE" and value.strip():
            name = value.strip().strip("\"'")
            return name if "/" not in name and name not in (".", "..") else None
    return None


def file_contexts(root: str = "/") -> str | None:
    """The loaded policy's file contexts, if the configuration names one that exists."""
    name = policy_name(root)
    if name is None:
        return None
    path = _host(root, f"etc/selinux/{name}/contexts/files/file_contexts")
    return path if os.path.isfile(path) else None


def watched_paths(root: str = "/") -> list[str]:
    """What a change of the policy's file contexts changes (the trigger's quick check)."""
    path = file_contexts(root)
    return [_host(root, CONFIG), *([path, path + ".local", path + ".subs",
                                    path + ".subs_dist"] if path else [])]


def identity(contexts: str) -> str:
    """The policy's identity as labels see it: a digest of its file contexts and the
    local and substitution files beside them (semanage writes those)."""
    h = hashlib.sha256()
    for suffix in ("", ".local", ".subs", ".subs_dist"):
        try:
            with open(contexts + suffix, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = b"\0absent"
        h.update(len(data).to_bytes(8, "big") + data)
    return h.hexdigest()[:32]


def active(root: str = "/") -> str | None:
    """The file contexts to label snapshots with: None when SELinux is off or has no
    policy here (nothing is labeled, nothing new is required), or the test switch says so."""
    if os.environ.get(NO_LABELS) == "1" or not enabled(root):
        return None
    return file_contexts(root)


def fingerprint(root: str = "/") -> str:
    """What verdicts depend on: the policy labeling snapshots, or "" when none does."""
    contexts = active(root)
    return identity(contexts) if contexts else ""


def _setfiles(root: str) -> str:
    for rel in SETFILES:
        path = _host(root, rel)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise OSError("SELinux is enabled but setfiles is not in /usr/sbin or /sbin "
                  "(install policycoreutils)")


def _labeled_dirs(snapshot: str) -> list[str]:
    return [os.path.join(snapshot, d) for d in ("usr", "opt")
            if os.path.isdir(os.path.join(snapshot, d))
            and not os.path.islink(os.path.join(snapshot, d))]


def _get(path: str | int, name: str = XATTR) -> str | None:
    try:
        value = (os.getxattr(path, name) if isinstance(path, int)
                 else os.getxattr(path, name, follow_symlinks=False))
        return value.rstrip(b"\0").decode("utf-8", "replace")
    except OSError:
        return None


def label(snapshot: str, contexts: str, root: str = "/") -> None:
    """Give ``snapshot``'s ``usr/`` and ``opt/`` the labels the same paths under ``/``
    get from ``contexts`` (user ``system_u`` included: ``-F``), and record the policy's
    identity on ``snapshot``. Raises OSError if setfiles fails."""
    dirs = _labeled_dirs(snapshot)
    if dirs:
        # -r: paths are matched as if SNAPSHOT were /. Only usr/ and opt/: on SNAPSHOT
        # itself -r would make it root_t; it keeps the label of its place in the store.
        argv = [_setfiles(root), "-F", "-r", snapshot, contexts, *dirs]
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=TIMEOUT, check=False)
        if proc.returncode != 0:
            text = " ".join(proc.stderr.decode("utf-8", "replace").split())[-400:]
            raise OSError(f"setfiles could not label the snapshot: {text}")
    seen = _get(dirs[0]) if dirs else ""
    os.setxattr(snapshot, MARK, f"{identity(contexts)} {seen}".encode())


def label_snapshot(snapshot: str, root: str = "/") -> None:
    """Label a new snapshot for the host's policy, when SELinux is on (store pipeline:
    copy, label, validate, publish)."""
    contexts = active(root)
    if contexts is not None:
        label(snapshot, contexts, root)


def current(snapshot: str, contexts: str) -> bool:
    """Whether ``snapshot`` was labeled for this policy and still has its labels: the
    recorded identity matches, and ``usr/`` (or ``opt/``) still has the recorded label."""
    mark = _get(snapshot, MARK)
    if mark is None:
        return False
    ident, _, seen = mark.partition(" ")
    dirs = _labeled_dirs(snapshot)
    return ident == identity(contexts) and (_get(dirs[0]) if dirs else "") == seen


def keep_labels(snapshot: str, root: str = "/") -> bool:
    """Label ``snapshot`` again if the policy changed or its labels are gone; whether it
    was. A no-op without SELinux."""
    contexts = active(root)
    if contexts is None or current(snapshot, contexts):
        return False
    label(snapshot, contexts, root)
    return True


def labels_state(snapshot: str, root: str = "/") -> str | None:
    """For ``status``: ``current`` or ``stale`` (labeled again at the next run); None
    without SELinux."""
    contexts = active(root)
    if contexts is None:
        return None
    return "current" if current(snapshot, contexts) else "stale"


def _type(context: str | None) -> str:
    parts = (context or "").split(":")
    return parts[2] if len(parts) >= 3 else "unlabeled"


def _merged(files: Iterable[str]) -> list[str]:
    """Only what is merged has a type that matters (the rest never leaves the store)."""
    return [rel for rel in files if rel.startswith(("usr/", "opt/"))]


def tree_types(tree: str, files: Iterable[str], contexts: str | None,
               root: str = "/") -> dict[str, str] | None:
    """The SELinux type each of ``files`` (under ``usr/`` and ``opt/``) of ``tree`` gets
    from the policy whose file contexts are ``contexts``; None (not judged) without one.

    A snapshot this module labeled for that policy, and whose labels are current, says it
    with its own labels (two ``getxattr`` a file); any other tree (a deployment judged
    where it is by a run that writes nothing, a snapshot whose labels are stale) is asked
    of ``setfiles -n``, which decides exactly as :func:`label` would and changes nothing.
    """
    if contexts is None:
        return None
    files = _merged(files)
    if current(tree, contexts):
        return {rel: _type(_get(os.path.join(tree, rel))) for rel in files}
    return _would(tree, files, contexts, root)


def by_type(found: dict[str, str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``{path: type}`` as the manifest keeps it: each type with its paths, all sorted."""
    out: dict[str, list[str]] = {}
    for rel, kind in found.items():
        out.setdefault(kind, []).append(rel)
    return tuple((kind, tuple(sorted(paths))) for kind, paths in sorted(out.items()))


def judged(report: TreeReport, found: dict[str, str] | None) -> TreeReport:
    """``report`` with the types of :func:`tree_types` in its manifest, and the files of a
    type outside :data:`GENERIC` as the restricted class :data:`CLASS`; unchanged (the
    manifest's types not judged) for None."""
    if found is None:
        return report
    import dataclasses

    restricted = dict(report.restricted)
    restricted.update((k, tuple(v)) for k, v in _restricted(found).items())
    return dataclasses.replace(
        report, manifest=dataclasses.replace(report.manifest, selinux_types=by_type(found)),
        restricted=tuple(sorted(restricted.items())))


def _restricted(found: dict[str, str]) -> dict[str, list[str]]:
    odd = sorted(p for p, t in found.items() if t not in GENERIC)
    return {CLASS: odd} if odd else {}


def policy_types(tree: str, files: Iterable[str], root: str = "/") -> dict[str, str] | None:
    """For ``check``: the type each file would get from the policy installed here (SELinux
    on or not); None where there is no policy."""
    return tree_types(tree, files, file_contexts(root), root)


def _would(tree: str, files: list[str], contexts: str, root: str) -> dict[str, str]:
    """The types ``setfiles -n -v`` says ``files`` would get: it lists what it would
    relabel; a file it does not list has its type already. Measured: 0.4 s for 1400
    files, as ``matchpathcon`` of the same paths, which would judge them by the mode of
    whatever the host has at each path (``-r`` here judges the tree's own)."""
    dirs = _labeled_dirs(tree)
    if not dirs or not files:
        return {}
    if any("\n" in rel for rel in files):
        # setfiles prints one path a line, unescaped: a name with a line break could
        # print a line for another file of the tree and give it a type of its choosing.
        return {rel: UNJUDGED for rel in files}
    argv = [_setfiles(root), "-n", "-v", "-F", "-r", tree, contexts, *dirs]
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=TIMEOUT, check=False)
    if proc.returncode != 0:
        text = " ".join(proc.stderr.decode("utf-8", "replace").split())[-400:]
        raise OSError(f"setfiles could not judge the tree's SELinux types: {text}")
    would = {}
    prefix = "Would relabel " + os.path.join(tree, "")
    for line in (proc.stdout + proc.stderr).decode("utf-8", "surrogateescape").splitlines():
        # "Would relabel PATH from OLD to NEW"
        head, sep, new = line.rpartition(" to ")
        what, sep2, _ = head.rpartition(" from ")
        if sep and sep2 and what.startswith(prefix):
            would[what[len(prefix):]] = _type(new)
    return {rel: would[rel] if rel in would else _type(_get(os.path.join(tree, rel)))
            for rel in files}


UNJUDGED = "unjudged (a file name with a line break)"
"""The type of every file of a tree that ``setfiles -n`` cannot be asked about: not generic,
so such a tree is the restricted class :data:`CLASS`."""


FIXED_IN = 257
"""systemd labels the merged /usr root right from this version on (issue 34387, PR 35132)."""


def status_lines(systemd: int | None, root: str = "/") -> list[str]:
    """What ``status`` says of SELinux once: its mode and policy, and the limit of systemd
    before 257 (each app's labels: :func:`app_line`). Nothing when the kernel has
    SELinux off."""
    if not enabled(root):
        return []
    mode = "enforcing" if enforcing(root) else "permissive"
    lines = [f"SELinux: {mode}, policy {policy_name(root) or '(none)'}"
             + ("" if file_contexts(root) else ": no file contexts, snapshots are not labeled")]
    if systemd is not None and systemd < FIXED_IN:
        lines.append(f"warning: systemd {systemd} labels the merged /usr after its own "
                     "directory while anything is merged: generators, udev and dbus-daemon "
                     "are denied search on /usr (systemd issue 34387, fixed in 257; "
                     "docs/platform.md#selinux)")
    return lines


def app_line(snapshot: str | None,
             found: tuple[tuple[str, tuple[str, ...]], ...] | None,
             root: str = "/") -> str | None:
    """``status``'s one line on an app: the mode, whether its linked ``snapshot``'s labels
    are current (``not judged``: none linked, or no policy labels here), and its files'
    types (the manifest's) where they are not all generic. None with SELinux off."""
    if not enabled(root):
        return None
    mode = "enforcing" if enforcing(root) else "permissive"
    labels = (labels_state(snapshot, root) if snapshot else None) or NOT_JUDGED
    if labels == "stale":
        labels += " (labeled again at the next run)"
    if found is None:
        types = NOT_JUDGED
    else:
        odd = [f"{kind} ({len(paths)} {'file' if len(paths) == 1 else 'files'})"
               for kind, paths in found if kind not in GENERIC]
        types = "not all generic: " + ", ".join(odd) if odd else "generic"
    return f"SELinux {mode}: labels {labels}, types {types}"
