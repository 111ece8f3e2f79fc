# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Judging one tree: validation, ELF, containment classes, the manifest, SELinux types.

Nothing here knows the host's state or the service's records."""
