# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The host's commands, as host sync and the package-transaction steps run them: by an
absolute path under :data:`TOOL_DIRS`, never through ``PATH`` and never a program a linked
extension provides (docs/reference.md#untrusted-input), through one :data:`Runner` so
that tests can record them, each outcome a :class:`~hoststate.Step`."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Callable, Collection, Sequence

from flatpak_sysext.state.hoststate import FAILED, OK, Step

Runner = Callable[[Sequence[str]], tuple[int, str]]
"""Runs one command (argv) and returns its exit status and its output."""

COMMAND_TIMEOUT = 300
UNIT_STEP_TIMEOUT = 20
"""How long host sync waits for ``systemctl stop`` or ``try-reload-or-restart`` of a
unit: systemctl returns once the unit's job is done, and a unit slow to stop (an
``ExecStop=`` that sleeps, a daemon ignoring SIGTERM; systemd's own TimeoutStopSec= is
90 s) must not hold host sync, and so every package manager waiting for its lock, for
minutes. systemd goes on with the job after systemctl is given up on; the step says so."""
UNIT_STEP_VERBS = frozenset({"stop", "try-reload-or-restart"})
MAX_MESSAGE = 400
TOOL_DIRS = ("usr/bin", "bin")
"""Where Debian, Fedora and Arch install systemctl, busctl, udevadm and systemd's tools:
every command runs by an absolute path found here, never through PATH."""


def command_timeout(argv: Sequence[str]) -> float:
    """How long :func:`run_command` waits for ``argv``: :data:`UNIT_STEP_TIMEOUT` for a
    unit step, else :data:`COMMAND_TIMEOUT`."""
    if os.path.basename(argv[0]) == "systemctl" and len(argv) > 1 and argv[1] in UNIT_STEP_VERBS:
        return UNIT_STEP_TIMEOUT
    return COMMAND_TIMEOUT


def run_command(argv: Sequence[str]) -> tuple[int, str]:
    """The real :data:`Runner`: run ``argv`` without input; stdout and stderr together."""
    timeout = command_timeout(argv)
    try:
        proc = subprocess.run(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout, check=False)
    except FileNotFoundError:
        return 127, f"{argv[0]}: command not found"
    except subprocess.TimeoutExpired:
        if timeout == UNIT_STEP_TIMEOUT:
            return 124, (f"not done after {timeout:g} s; systemd goes on with the job "
                         "(see 'systemctl list-jobs')")
        return 124, f"no answer after {timeout:g} s"
    except OSError as e:
        return 126, f"{argv[0]}: {e.strerror}"
    return proc.returncode, proc.stdout.decode("utf-8", "replace")


def _failure(code: int, output: str) -> str:
    text = " ".join(output.split())
    if len(text) > MAX_MESSAGE:
        text = "…" + text[-MAX_MESSAGE:]
    return f"exit status {code}" + (f": {text}" if text else "")


def tool(name: str, tools_root: str = "/", provided: Collection[str] = ()) -> str | None:
    """The absolute path of the host's ``name``: the first of :data:`TOOL_DIRS` (under
    ``tools_root``) that holds an executable file of that name.

    None when there is none, or when the one found is a path a linked extension provides
    (``provided``: its files, ``usr/bin/x``): merged, it would be the extension's program,
    and host sync runs as root.
    """
    for d in TOOL_DIRS:
        rel = f"{d}/{name}"
        if rel in provided or f"usr/{rel}" in provided:
            return None
        path = os.path.join(tools_root, rel)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def run_tool(argv: Sequence[str]) -> tuple[int, str]:
    """:data:`Runner` for commands named by their bare name (the package-transaction
    steps): ``argv[0]`` by its absolute path under :data:`TOOL_DIRS`, never through
    PATH; 127 if the host has no such program."""
    path = tool(argv[0])
    if path is None:
        return 127, f"{argv[0]}: not found as an executable in /usr/bin or /bin"
    return run_command((path, *argv[1:]))


@dataclasses.dataclass(frozen=True)
class Tools:
    """How host sync finds its commands: where, and what linked extensions provide."""

    root: str = "/"
    provided: frozenset[str] = frozenset()


def run_step(runner: Runner, step: str, argv: Sequence[str], tools: Tools,
         success: Collection[int] = (0,)) -> Step:
    path = tool(argv[0], tools.root, tools.provided)
    if path is None:
        return Step(step, FAILED, f"{argv[0]}: not found as an executable in /usr/bin or /bin, "
                                  "or provided by a linked extension; not run", tuple(argv))
    code, output = runner((path, *argv[1:]))
    if code in success:
        return Step(step, OK, "", tuple(argv))
    return Step(step, FAILED, _failure(code, output), tuple(argv))
