# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""What the service and the trigger keep (store, consent, cache, requests), read safely."""
