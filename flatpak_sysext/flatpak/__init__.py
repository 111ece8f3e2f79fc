# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Flatpak's on-disk format, read only: installations, deploy files, keyfiles, OSTree commits."""
