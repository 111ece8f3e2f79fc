# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Entry point for ``python3 -m flatpak_sysext``."""

import sys

from flatpak_sysext.cli import main

sys.exit(main())
