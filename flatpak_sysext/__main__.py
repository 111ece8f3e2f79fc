"""Entry point for ``python3 -m flatpak_sysext``."""

import sys

from flatpak_sysext.cli import main

sys.exit(main())
