# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""flatpak-sysext: link the system extensions Flatpak apps declare into systemd-sysext."""

__version__ = "0.1.0"
