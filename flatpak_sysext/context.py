# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""What a run depends on besides the installations' contents: the :class:`Context`.

The configuration, the system installations, the host (os-release, architecture, its
glibc where ``allow_host_glibc`` asks), where the service keeps its state and the
consent records, and how host commands run. Its fingerprint is what every cached verdict
depends on besides the tree.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from flatpak_sysext import __version__
from flatpak_sysext.config import Config, glibc_root
from flatpak_sysext.flatpak.installation import Installation
from flatpak_sysext.host import hostcommands
from flatpak_sysext.rules import ruleset, selinux
from flatpak_sysext.rules.release import Host, read_host
from flatpak_sysext.state import cache, consent, statefiles

if TYPE_CHECKING:
    from flatpak_sysext.rules.elf import ElfTarget
    from flatpak_sysext.rules.hostglibc import HostGlibc


@functools.cache
def _executable_ident() -> bytes:
    """The start of the interpreter's ELF header, up to ``e_machine``.

    These bytes decide ``ElfTarget.host()`` (class, byte order, machine): reading them
    keeps the cache's host fingerprint exact without importing pyelftools (tens of
    milliseconds) in a run that validates nothing.
    """
    for path in ("/proc/self/exe", sys.executable):
        try:
            with open(path, "rb") as f:
                return f.read(20)
        except OSError:
            continue
    return b""


@dataclasses.dataclass(frozen=True)
class Context:
    """Everything a run depends on besides the installations' contents."""

    config: Config
    installations: tuple[Installation, ...]
    host: Host
    host_root: str = "/"
    runner: hostcommands.Runner = hostcommands.run_command
    """Runs the host's commands (systemd-sysext, systemctl…); tests record them."""
    tools_root: str = "/"
    """Where host sync finds /usr/bin and /bin (``FLATPAK_SYSEXT_TOOLS_ROOT``; tests)."""

    state_dir: str = statefiles.SERVICE_DIR
    """The service's own state directory (statefiles.service_directory)."""
    sandboxed: bool = False
    """A sandboxed trigger's run: it cannot write the service's state, and keeps its
    verdicts in the installation instead (which the service never reads)."""

    @classmethod
    def create(cls, config: Config, installations: Sequence[Installation],
               environ: Mapping[str, str]) -> Context:
        return cls(config, tuple(installations), read_host(environ),
                   glibc_root=glibc_root(environ),
                   tools_root=environ.get("FLATPAK_SYSEXT_TOOLS_ROOT") or "/",
                   state_dir=statefiles.service_directory(environ))

    @property
    def elf_target(self) -> ElfTarget:
        """What ELF files must be built for; pyelftools is loaded only when asked."""
        from flatpak_sysext.rules import elf

        return elf.ElfTarget.host()

    def fingerprint(self) -> str:
        """What every cached verdict depends on besides the tree: a different one
        discards the cache."""
        return cache.host_fingerprint(__version__, ruleset.VERSION,
                                      sorted(self.host.os_release.items()),
                                      self.host.architecture, self.host.systemd,
                                      _executable_ident(), selinux.fingerprint(self.host_root),
                                      *self._glibc_fingerprint())

    # allow_host_glibc (hostglibc.py): verdicts depend on the host's glibc too.
    glibc_root: str = "/"
    """Where the host's glibc is read (``FLATPAK_SYSEXT_GLIBC_ROOT``; tests)."""

    @functools.cached_property
    def consents(self) -> consent.Store:
        """The administrator's consent records (consent.py), read once per run."""
        return consent.Store(self.state_dir).load()

    @functools.cached_property
    def host_glibc(self) -> HostGlibc:
        """The host's glibc, read once per run and only if allow_host_glibc is used."""
        from flatpak_sysext.rules import hostglibc

        return hostglibc.HostGlibc(self.glibc_root, self.elf_target)

    def glibc_for(self, app_id: str) -> HostGlibc | None:
        """The host glibc ``app_id``'s tree is judged against, if allow_host_glibc admits it."""
        return self.host_glibc if self.config.host_glibc_allowed(app_id) else None

    def _glibc_fingerprint(self) -> tuple[object, ...]:
        if not self.config.allow_host_glibc:
            return ()
        return self.config.allow_host_glibc, self.host_glibc.identity()
