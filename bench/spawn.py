# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""A small process that runs the benchmark's children and reports their cost.

Linux counts a child's peak RSS from the memory of the process it was forked from, so a
child spawned by the benchmark itself (tens of MiB of generated-installation state) would
report the benchmark's size. This process stays as small as a bare interpreter and does
the spawning: one JSON request per line on stdin (``argv``, ``env``, ``stderr`` path), one
JSON answer per line on stdout (``seconds``, ``cpu_seconds`` (user and system), ``rss_kib``,
``exit``).
"""

import json
import os
import sys
import time


def main() -> None:
    for line in sys.stdin:
        req = json.loads(line)
        err = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        null = os.open(os.devnull, os.O_WRONLY)
        actions = [(os.POSIX_SPAWN_DUP2, null, 1), (os.POSIX_SPAWN_DUP2, err, 2)]
        start = time.perf_counter()
        pid = os.posix_spawnp(req["argv"][0], req["argv"], req["env"], file_actions=actions)
        _, status, usage = os.wait4(pid, 0)
        seconds = time.perf_counter() - start
        os.close(err)
        os.close(null)
        print(json.dumps({"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
                          "rss_kib": usage.ru_maxrss,
                          "exit": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    main()
