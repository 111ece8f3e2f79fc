# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Everything that changes the host: links, systemd-sysext, reloads, units, package hooks."""
