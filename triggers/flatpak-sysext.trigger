#!/usr/bin/python3 -I
# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
# Flatpak runs every *.trigger after a transaction that installed, updated or
# uninstalled an app, as root and usually inside bubblewrap, with the installation's
# path as $1. `make install` substitutes the interpreter above.
import sys

if len(sys.argv) == 2 and not sys.argv[1].startswith("-"):
    # What Flatpak passes: the quick check answers most runs on its own; the rest of the
    # trigger is imported only when it cannot (the command line's modules never are).
    from flatpak_sysext import quick

    if quick.answers(sys.argv[1]):
        sys.exit(0)
    from flatpak_sysext.trigger import main

    sys.exit(main(sys.argv[1]))

from flatpak_sysext.cli import main as cli_main

sys.exit(cli_main(["trigger", *sys.argv[1:]]))
