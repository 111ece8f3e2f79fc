# SPDX-License-Identifier: LGPL-2.1-or-later
"""dnf (4) plugin: the system extensions leave /usr while dnf changes it.

``resolved`` runs before dnf's RPM transaction test, which counts a read-only /usr as
full; ``transaction`` after the transaction. If dnf stops in between (the user says no,
an error, a kill), flatpak-sysext's guard re-merges once dnf has exited. See
flatpak-sysext(8), PACKAGE MANAGERS.
"""

import os
import subprocess

import dnf

COMMAND = "/usr/bin/flatpak-sysext"


def _run(action):
    if not os.access(COMMAND, os.X_OK):  # flatpak-sysext was removed: nothing to do
        return 0
    return subprocess.call([COMMAND, "package-transaction", action, "--holder",
                            str(os.getpid())])


class FlatpakSysext(dnf.Plugin):
    name = "flatpak_sysext"

    def __init__(self, base, cli):
        super().__init__(base, cli)
        self.began = False

    def resolved(self):
        # Only for the running system, and only for a transaction that changes packages.
        if self.base.conf.installroot != "/" or not self.base.transaction:
            return
        if _run("begin") != 0:
            raise dnf.exceptions.Error("flatpak-sysext could not take the system extensions "
                                       "out of /usr")
        self.began = True

    def transaction(self):
        if self.began:
            _run("end")
            self.began = False
