# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Where the tests find the project's data files, and the trigger as the tests install it.

The data files (triggers/, examples/, systemd/, the Makefile) are read from
``$FLATPAK_SYSEXT_SOURCE_ROOT``, by default this repository: a distribution that runs the
tests from its build tree, with the package elsewhere on ``PYTHONPATH``, points it at the
unpacked source.
"""

from __future__ import annotations

import os
from pathlib import Path

import flatpak_sysext

SOURCE_ROOT = Path(os.environ.get("FLATPAK_SYSEXT_SOURCE_ROOT")
                   or Path(__file__).resolve().parent.parent)
TRIGGER = SOURCE_ROOT / "triggers" / "flatpak-sysext.trigger"
PACKAGE_DIR = Path(flatpak_sysext.__file__).resolve().parent
"""The package under test, wherever the interpreter found it (not necessarily SOURCE_ROOT)."""

_SHEBANG = "#!/usr/bin/python3"
_IMPORT = "import sys\n"


def installed_trigger(python: str) -> str:
    """The trigger file as the tests install it: run by ``python``, and finding the
    package under test even when only ``PYTHONPATH`` leads to it.

    The trigger runs ``python -I``, which ignores ``PYTHONPATH`` (on purpose: root runs
    it with the caller's environment), so the package's parent directory is put first on
    ``sys.path`` by the file itself. ``make install`` substitutes only the interpreter.
    """
    text = TRIGGER.read_text()
    if not text.startswith(_SHEBANG) or _IMPORT not in text:
        raise ValueError(f"{TRIGGER}: no {_SHEBANG} line or no {_IMPORT!r} to extend")
    text = text.replace(_SHEBANG, f"#!{python}", 1)
    return text.replace(_IMPORT, f"{_IMPORT}sys.path.insert(0, {str(PACKAGE_DIR.parent)!r})\n",
                        1)
