# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The package managers themselves: where each one's hook is installed and whether this
host has it (``status``), and which dnf5 commands change the installed system (dnf5's
early hook runs for every command). What a transaction does is :mod:`pkgtransaction`'s."""

from __future__ import annotations

import os

# dnf5's commands (and their aliases) that change the installed system, and the
# subcommands of those that only do so with one (``group install``, ``history undo``).
_DNF5_CHANGES = frozenset({"install", "in", "reinstall", "rei", "remove", "rm", "erase",
                           "upgrade", "up", "update", "downgrade", "dg", "distro-sync",
                           "dsync", "swap", "autoremove", "replay", "do", "builddep",
                           "debuginfo-install"})
_DNF5_CHANGES_WITH = {"group": {"install", "remove", "upgrade"},
                      "environment": {"install", "remove", "upgrade"},
                      "history": {"undo", "redo", "rollback", "replay"}}
_DNF5_OTHERS = frozenset({"advisory", "check", "check-upgrade", "clean", "download", "info",
                          "leaves", "list", "makecache", "mark", "module", "offline",
                          "provides", "repo", "repoquery", "search", "system-upgrade",
                          "versionlock", "config-manager", "copr", "changelog",
                          "needs-restarting", "reposync", "automatic", "help"})


def dnf5_changes_system(pid: int, host_root: str = "/") -> bool:
    """Whether process ``pid`` is the dnf5 command line running a command that changes
    the installed system: what dnf5's early hook (``repos_configured``, before dnf5's own
    read-only ``/usr`` check) must know before it unmerges anything, since the same hook
    runs for ``dnf5 search`` and ``makecache`` and inside dnf5daemon-server.

    The command is the first argument that names a dnf5 command (option values are
    skipped that way); an unreadable process is not dnf5.
    """
    proc = os.path.join(host_root, "proc", str(pid))
    try:
        exe = os.readlink(os.path.join(proc, "exe"))
        with open(os.path.join(proc, "cmdline"), "rb") as f:
            argv = f.read().decode("utf-8", "replace").split("\0")
    except OSError:
        return False
    if os.path.basename(exe) != "dnf5":
        return False
    words = [a for a in argv[1:] if a and not a.startswith("-")]
    for i, word in enumerate(words):
        if word in _DNF5_CHANGES:
            return True
        if word in _DNF5_CHANGES_WITH:
            return any(w in _DNF5_CHANGES_WITH[word] for w in words[i + 1:i + 2])
        if word in _DNF5_OTHERS:
            return False
    return False


# Where each package manager's hook is installed by default (README, "For packagers"),
# and the program that says the package manager is there.
HOOKS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("dpkg", "/usr/bin/dpkg", ("/etc/dpkg/dpkg.cfg.d/flatpak-sysext",)),
    ("dnf5", "/usr/bin/dnf5", ("/etc/dnf/libdnf5-plugins/actions.d/flatpak-sysext.actions",)),
    ("dnf4", "/usr/bin/dnf-3", ("/etc/dnf/plugins/flatpak_sysext.conf",)),
    ("pacman", "/usr/bin/pacman", ("/usr/share/libalpm/hooks/00-flatpak-sysext-pre.hook",
                                   "/usr/share/libalpm/hooks/zz-flatpak-sysext-post.hook")),
    ("zypper", "/usr/bin/zypper", ("/usr/lib/zypp/plugins/commit/flatpak-sysext",)),
)


def hook_status(host_root: str = "/") -> list[tuple[str, list[str]]]:
    """For each package manager on this host: its name and the hook files missing."""
    found = []
    for manager, program, files in HOOKS:
        if os.path.exists(os.path.join(host_root, program.lstrip("/"))):
            found.append((manager, [f for f in files
                                    if not os.path.isfile(os.path.join(host_root, f.lstrip("/")))]))
    return found
