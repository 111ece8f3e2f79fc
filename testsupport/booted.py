# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""A real Debian (12, 13 or unstable: :data:`RELEASES`) booted with systemd as PID 1, for
the booted-host tests.

Each release's root is made once with ``debootstrap`` from Debian's archive and cached outside the
clone (``$FLATPAK_SYSEXT_TEST_CACHE``, default ``/var/cache/flatpak-sysext-tests``); a test
session boots a throw-away copy of it with ``systemd-nspawn --boot`` and runs commands
inside with ``nsenter``. The project is installed inside as a packager would (``make
install`` on Debian's Python and packages), and extension daemons are static Go programs
built here with Debian's ``golang-go`` and ``golang-dbus-dev``. See docs/ARCHITECTURE.md,
"Booted-host tests".
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from testsupport.flatpak import FlatpakEnv

SOURCE_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(os.environ.get("FLATPAK_SYSEXT_TEST_CACHE", "/var/cache/flatpak-sysext-tests"))
# polkitd needs libpam-systemd for a logind; make and python3-* are what `make install`
# and the installed package use (gpgv checks each snapshot's commit signature: from trixie
# on apt no longer pulls it in); procps for the tests' own look at processes.
BASE_PACKAGES = ("systemd", "systemd-sysv", "libpam-systemd", "dbus", "polkitd", "flatpak",
                 "bubblewrap", "python3", "python3-pyelftools", "python3-jsonschema", "make",
                 "gpgv", "procps", "python3-jeepney")


@dataclass(frozen=True)
class Release:
    """A Debian release the booted-host tests run on: its suite, what its root holds
    beyond :data:`BASE_PACKAGES`, and what ``systemd-nspawn`` needs to boot it."""

    suite: str
    extra: tuple[str, ...] = ()
    # systemd 258 and later boot only on the unified cgroup hierarchy; nspawn gives a
    # container the host's (hybrid on these machines) unless told otherwise.
    unified_cgroup: bool = False

    @property
    def packages(self) -> tuple[str, ...]:
        """Everything ``debootstrap --include`` installs."""
        return BASE_PACKAGES + self.extra


# Debian 12 (systemd 252), 13 (257) and unstable (262 at the time of writing). The other
# package managers, for their hooks (tests/test_booted_pkgmanagers.py): pacman, dnf 4 with
# rpm (rpmbuild makes its test package) and zypper on bookworm; dnf5 and its actions
# plugin on sid, which has no dnf 4.
RELEASES = {
    "bookworm": Release("bookworm", ("pacman-package-manager", "dnf", "rpm", "zypper")),
    "trixie": Release("trixie"),
    "sid": Release("sid", ("dnf5", "rpm"), unified_cgroup=True),
}
RELEASE_IDS = tuple(RELEASES)
DEFAULT_MIRROR = "http://deb.debian.org/debian"
TOOLS = ("debootstrap", "systemd-nspawn", "nsenter", "go", "git")
GOPATH = "/usr/share/gocode"  # where Debian's golang-*-dev packages put their sources
DAEMON_SOURCE = Path(__file__).resolve().parent / "daemon"
INSIDE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

TreeBuilder = Callable[[Path], None]


def missing_tools() -> list[str]:
    """The host tools this module needs that are not installed."""
    return [t for t in TOOLS if shutil.which(t) is None]


def require_booting(*tools: str) -> None:
    """What booting a session root needs (root, missing_tools()) and ``tools`` on the
    host; skips, or fails in strict mode, for a test marked privileged."""
    from testsupport.prerequisites import require

    require(os.geteuid() == 0, "booting a container needs root")
    missing = missing_tools() + [t for t in tools if shutil.which(t) is None]
    require(not missing, f"missing tools: {' '.join(missing)}")


def mirror() -> str:
    """The Debian mirror apt uses here (first ``URIs:`` of a deb822 source), else Debian's."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    return DEFAULT_MIRROR


def root_key(release: Release) -> str:
    """What names a cached root: the suite and the package list (not the mirror)."""
    return hashlib.sha256("\n".join((release.suite, *release.packages)).encode()
                          ).hexdigest()[:12]


def cached_root(release: str = "bookworm") -> Path:
    """The cached root of ``release`` (a key of :data:`RELEASES`), made with debootstrap
    if it is missing.

    It is built in a temporary directory next to it and renamed when complete, under a
    lock, so an interrupted build leaves nothing that looks usable; the lock also keeps
    to one build at a time.
    """
    rel = RELEASES[release]

    def make(build: Path) -> Path:
        subprocess.run(["debootstrap", "--variant=minbase",
                        f"--include={','.join(rel.packages)}", rel.suite, str(build / "root"),
                        mirror()], check=True, stdout=subprocess.DEVNULL)
        return build / "root"

    return cached(CACHE_DIR / f"{rel.suite}-{root_key(rel)}", make)


def cached(final: Path, make: Callable[[Path], Path]) -> Path:
    """``final`` in the cache, made if missing by ``make`` in a temporary directory (it
    returns what to rename to ``final``), under the cache's lock: an interrupted build
    leaves nothing that looks usable, and there is one build at a time."""
    if final.is_dir():
        return final
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if final.is_dir():  # another session built it while we waited
            return final
        build = Path(tempfile.mkdtemp(prefix=f".build-{final.name}.", dir=CACHE_DIR))
        try:
            os.rename(make(build), final)
        finally:
            shutil.rmtree(build, ignore_errors=True)
    return final


class SessionRoot:
    """A throw-away copy of the cached root (``cp -a --reflink=auto``), deleted by ``remove``.

    Not an overlayfs mount with the cache as lower dir, although mounting is instant and
    the copy takes about 2 s: systemd-sysext's own overlay on top of an overlayfs root
    lists every directory under /usr as empty (files still open by name), so after a
    merge systemd finds no unit at all and cannot even power off.
    """

    def __init__(self, cache: Path) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="fsx-booted-", dir=CACHE_DIR))
        self.root = self.base / "root"
        subprocess.run(["cp", "-a", "--reflink=auto", str(cache), str(self.root)], check=True)

    def remove(self) -> None:
        """Delete the copy."""
        shutil.rmtree(self.base, ignore_errors=True)


class Machine:
    """A root booted with ``systemd-nspawn --boot``; commands run inside with nsenter."""

    def __init__(self, root: Path, name: str, release: str = "bookworm") -> None:
        self.root = root
        self.name = name
        self.release = RELEASES[release]
        self.log = root.parent / f"{name}.console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid1 = 0
        self.boots = 0
        self._prepare()

    def _prepare(self) -> None:
        # A fixed machine ID and a persistent journal, so journalctl sees every boot.
        (self.root / "etc/machine-id").write_text(os.urandom(16).hex() + "\n")
        (self.root / "var/log/journal").mkdir(parents=True, exist_ok=True)

    def boot(self, timeout: float = 120) -> float:
        """Boot and wait until the system is up (running or degraded); return the seconds."""
        start = time.monotonic()
        env = dict(os.environ)
        if self.release.unified_cgroup:
            env["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "1"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["systemd-nspawn", "-D", str(self.root), "--boot", "--register=no",
                 "--console=pipe", "--private-network", "--link-journal=no",
                 # No host systemd to make a scope for it in (its bus is absent).
                 "--keep-unit",
                 f"--machine={self.name}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=env)
        self.pid1 = self._find_pid1(start + timeout)
        state = ""
        while time.monotonic() < start + timeout:
            left = max(1.0, start + timeout - time.monotonic())
            try:
                state = self.run("systemctl", "is-system-running", "--wait",
                                 timeout=left).stdout.strip()
            except subprocess.TimeoutExpired:
                break
            if state in ("running", "degraded"):
                self.boots += 1
                return time.monotonic() - start
            time.sleep(0.2)  # too early: the bus may not be up yet
        self.kill()
        raise RuntimeError(f"{self.name} did not boot in {timeout}s (state {state!r}):\n"
                           + self.console_tail())

    def console_tail(self, lines: int = 40) -> str:
        """The end of the container's console output (it is deleted with the root)."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def _find_pid1(self, deadline: float) -> int:
        # nspawn starts the container's init with CLONE_PARENT: it is nspawn's child,
        # and PID 1 in its own namespace (the last NSpid field).
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited with {self.proc.returncode}:\n"
                                   + self.console_tail())
            for status in Path("/proc").glob("[0-9]*/status"):
                try:
                    fields = dict(line.split(":\t", 1) for line in
                                  status.read_text().splitlines() if ":\t" in line)
                except OSError:
                    continue
                if (fields.get("PPid") == str(self.proc.pid)
                        and fields.get("NSpid", "").split()[-1:] == ["1"]):
                    return int(status.parent.name)
            time.sleep(0.05)
        raise RuntimeError("no init process found under systemd-nspawn:\n"
                           + self.console_tail())

    def run(self, *cmd: str, check: bool = False, timeout: float = 300,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside, as root, with a clean environment (none of the host's)."""
        result = subprocess.run(
            ["nsenter", "-t", str(self.pid1), "-a", "/usr/bin/env", "-i",
             f"PATH={INSIDE_PATH}", "LANG=C.UTF-8", "HOME=/root", *cmd],
            capture_output=True, text=True, timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited with {result.returncode}:\n"
                                 f"{result.stdout}{result.stderr}")
        return result

    def poweroff(self, timeout: float = 60) -> None:
        """Shut down cleanly (SIGRTMIN+4 to systemd), killing it after ``timeout``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.pid1, signal.SIGRTMIN + 4)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def kill(self) -> None:
        """Stop the container at once."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            if self.pid1:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid1, signal.SIGKILL)
            self.proc.wait(30)
        self.proc = None

    def reboot(self, timeout: float = 120) -> float:
        """Power off and boot the same root again; return the seconds the boot took."""
        self.poweroff()
        return self.boot(timeout)

    def install_project(self, source: Path = SOURCE_ROOT) -> None:
        """Install flatpak-sysext the way a packager does, and enable its units.

        The working tree (tracked and untracked files git does not ignore) is copied to
        /usr/src/flatpak-sysext and installed there by ``make install PREFIX=/usr`` on
        Debian's python3, python3-pyelftools and python3-jsonschema.
        """
        dest = self.root / "usr/src/flatpak-sysext"
        files = subprocess.run(["git", "-C", str(source), "ls-files", "-z", "--cached",
                                "--others", "--exclude-standard"], check=True,
                               capture_output=True, text=True).stdout.split("\0")
        for name in filter(None, files):
            src = source / name
            if not src.is_file():  # deleted in the working tree, not yet in the index
                continue
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
        self.run("make", "-C", "/usr/src/flatpak-sysext", "install", "PREFIX=/usr",
                 "PYTHON=/usr/bin/python3", check=True)
        self.run("systemctl", "enable", "--now", "flatpak-sysext.path",
                 "flatpak-sysext.service", check=True)
        self.run("systemctl", "enable", "systemd-sysext.service", check=True)

    def add_repository(self, repo: Path, pubkey: Path, remote: str = "fsx") -> None:
        """Copy a signed Flatpak repository in and add it as a GPG-verified system remote."""
        self.sync_repository(repo)
        shutil.copy2(pubkey, self.root / "srv/fsx/pubkey.gpg")
        self.run("flatpak", "remote-add", "--system", "--gpg-import=/srv/fsx/pubkey.gpg",
                 remote, "file:///srv/fsx/repo", check=True)

    def sync_repository(self, repo: Path) -> None:
        """Copy the repository's current content (new commits, refs, summary) in."""
        shutil.copytree(repo, self.root / "srv/fsx/repo", symlinks=True, dirs_exist_ok=True)

    def flatpak(self, *args: str) -> str:
        """Run ``flatpak ARGS -y --noninteractive`` inside; it must succeed and show no
        traceback. Returns what it printed (stdout and stderr)."""
        result = self.run("flatpak", *args, "-y", "--noninteractive")
        out = result.stdout + result.stderr
        assert result.returncode == 0 and "Traceback" not in out, out
        return out

    def install_approved(self, app_id: str, remote: str = "fsx") -> None:
        """Install ``app_id``, consent to it with ``flatpak-sysext approve`` and wait until
        it is merged: the state a scenario that is not about consent starts from."""
        self.flatpak("install", "--system", remote, app_id)
        self.settle()
        self.run("flatpak-sysext", "approve", app_id, check=True)
        self.wait_for(lambda: app_id in self.merged(), f"{app_id} to be merged")

    def systemd_version(self) -> int:
        """The major version of the machine's systemd-sysext (``systemd 257 (...)``)."""
        return int(self.run("systemd-sysext", "--version", check=True).stdout.split()[1])

    def merged(self) -> list[str]:
        """The names systemd-sysext says are merged into /usr now."""
        result = self.run("cat", "/usr/.systemd-sysext/extensions")
        return result.stdout.split() if result.returncode == 0 else []

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
        """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.2)

    def settle(self, timeout: float = 120) -> None:
        """Wait until the path unit's reconcile (and any job it queued) has finished."""
        self.wait_for(lambda: self.run("systemctl", "list-jobs", "--no-legend")
                      .stdout.strip() == "" and self.run(
                          "systemctl", "is-active", "flatpak-sysext.service")
                      .stdout.strip() != "activating",
                      "flatpak-sysext.service to finish", timeout)


class Precondition(Exception):
    """A step before the one under test went wrong: an error, never a failure of the
    scenario (nor an expected one)."""


def precondition(condition: bool, what: str) -> None:
    """Raise :class:`Precondition` naming ``what`` unless ``condition`` holds."""
    if not condition:
        raise Precondition(what)


@contextlib.contextmanager
def booted_host(work: Path, name: str, publish: Callable[[FlatpakEnv], None],
                release: str = "bookworm") -> Iterator[tuple[Machine, FlatpakEnv]]:
    """A copy of the cached root of ``release`` booted as ``name``, with the project
    installed as a packager does and a GPG-signed repository added as the system remote
    ``fsx``, its apps published by ``publish`` first. Powered off and deleted on leaving."""
    publisher = FlatpakEnv(work / "publisher", signed=True)
    session = SessionRoot(cached_root(release))
    machine = Machine(session.root, f"{name}-{release}-{os.getpid()}", release)
    try:
        publish(publisher)
        machine.boot()
        machine.install_project()
        machine.add_repository(publisher.repo, publisher.pubkey)
        yield machine, publisher
    finally:
        machine.poweroff()
        session.remove()
        publisher.close()


def build_daemon(out: Path, version: str) -> Path:
    """Build the static Go D-Bus daemon (testsupport/daemon) answering ``version``."""
    env = dict(os.environ, GO111MODULE="off", GOPATH=GOPATH, CGO_ENABLED="0",
               GOCACHE=str(CACHE_DIR / "go-build"), GOFLAGS="")
    subprocess.run(["go", "build", "-ldflags", f"-X main.version={version}", "-o", str(out),
                    "."], cwd=DAEMON_SOURCE, env=env, check=True, capture_output=True)
    return out


def daemon_unit(app_id: str) -> str:
    """The systemd unit name of an app's daemon: ``<last part of the ID>-fsx.service``,
    named for the app as containment requires (docs/problems.md#unclassified-file)."""
    return f"{app_id.rsplit('.', 1)[-1].lower()}-fsx.service"


def daemon_tree(app_id: str, binary: Path, release: str = "ID=_any\n") -> TreeBuilder:
    """A sysext tree with a D-Bus-activated system service owning the bus name ``app_id``.

    The unit (Type=dbus), the D-Bus service file that activates it through systemd, a
    policy letting root own the name and anyone call it, and an extension-release
    (``release``: by default one that matches any host).
    """
    unit = daemon_unit(app_id)
    exe = f"/usr/libexec/{app_id}/fsx-daemon"

    def build(root: Path) -> None:
        files = {
            f"usr/lib/extension-release.d/extension-release.{app_id}": release,
            f"usr/lib/systemd/system/{unit}":
                f"[Unit]\nDescription={app_id} test daemon\n\n[Service]\nType=dbus\n"
                f"BusName={app_id}\nExecStart={exe} {app_id}\n",
            f"usr/share/dbus-1/system-services/{app_id}.service":
                f"[D-BUS Service]\nName={app_id}\nExec=/bin/false\nUser=root\n"
                f"SystemdService={unit}\n",
            f"usr/share/dbus-1/system.d/{app_id}.conf":
                '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration'
                ' 1.0//EN"\n "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n'
                f'<busconfig>\n  <policy user="root"><allow own="{app_id}"/></policy>\n'
                f'  <policy context="default"><allow send_destination="{app_id}"/></policy>\n'
                "</busconfig>\n",
        }
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        (root / exe.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(binary, root / exe.lstrip("/"))

    return build


def call_daemon(machine: Machine, app_id: str) -> subprocess.CompletedProcess[str]:
    """``busctl call`` the daemon's Version() on the system bus (activating it if needed)."""
    path = "/" + app_id.replace(".", "/")
    return machine.run("busctl", "call", "--system", app_id, path, app_id, "Version",
                       timeout=60)
