#!/usr/bin/python3 -I
# Flatpak runs every *.trigger after a transaction that installed, updated or
# uninstalled an app, as root and usually inside bubblewrap, with the installation's
# path as $1. `make install` substitutes the interpreter above.
import sys

from flatpak_sysext.trigger import main

sys.exit(main(sys.argv[1:]))
