#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# The example app's command. Its daemon runs on the host only once the administrator has
# consented (flatpak-sysext approve), so the app must expect it to be missing and say
# what to do, rather than fail. A real app asks the system bus whether its daemon's name
# is activatable (org.freedesktop.DBus.ListActivatableNames contains org.example.App)
# and shows this only when it is not.
cat <<'MESSAGE'
org.example.App needs its system daemon, which is not running on this system yet.
Flatpak installed it, and it waits for the administrator's consent. To review what it
would get from the host, and to allow it, run as root:

    flatpak-sysext status
    flatpak-sysext approve org.example.App
MESSAGE
