# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The version of the tree rules, and the bounds every tree is held to.

Every verdict the cache keeps depends on the rules it was reached by: :data:`VERSION`
is part of the cache's fingerprint (context.Context.fingerprint), so a change of the
rules that ships with it discards the old verdicts even when the package's version
stays the same. Bump it with any change to what validate, elf, release or hostglibc
accept or report (contain and rules included), and with any change of the bounds below.
"""

from __future__ import annotations

VERSION = 7
"""1: the rules before there was a version; 2: the bounds below, root ownership, file
capabilities; 3: containment, symlinks inside the tree, the manifest; 4: names up to a
separator, drop-ins for shipped units only, tmpfiles links, writes and recursion, D-Bus
denials, udev builtins, attributes and sysctls; every privilege a unit takes is in the
manifest (manifest.GRANT_MODEL 2); 5: MAX_BYTES, the app ID
and the signed commit's checksums decided before and after the copy; 6: polkit actions'
defaults in the manifest (manifest.GRANT_MODEL 3); 7: user units apart from system units."""

MAX_ENTRIES = 100_000
"""Files, directories and symlinks in one tree: validating costs per entry."""
MAX_DEPTH = 32
"""Directories nested below the tree's root (``usr/lib/systemd/system`` is 4)."""
MAX_PATH = 1024
"""Bytes of a path relative to the tree's root: merged, it is that path under ``/``, and
the host must be able to name it (PATH_MAX is 4,096, and other tools have less)."""
MAX_BYTES = 1 << 30
"""Bytes of one tree, summed over its regular files' apparent size before anything is
copied (1 GiB; a Sysprof-sized tree is a few MiB): a sparse or huge file cannot fill the
service's state directory."""
