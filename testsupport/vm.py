# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""A Debian 13 guest booted SELinux-enforcing under qemu, for tests/test_selinux_vm.py.

The guest's disk image is made once with ``debootstrap``, labeled offline here with the
guest policy's own ``setfiles`` (this host's kernel has SELinux off, but ext4 keeps the
``security.selinux`` xattrs it writes) and packed with ``mkfs.ext4 -d``; it is cached
outside the clone like the booted root (``$FLATPAK_SYSEXT_TEST_CACHE``) with the guest's
own kernel and initrd. A run boots a qcow2 layer over it with qemu's TCG (this machine's
``/dev/kvm`` does not run stock kernels), a read-only input disk carrying a script and its
files, and a results disk: a unit in the image mounts the input, runs its ``run`` script,
writes a tar of the results directory onto the results disk and powers off. See
docs/ARCHITECTURE.md, "Booted-host tests".
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

from testsupport.booted import CACHE_DIR, cached, mirror

SUITE = "trixie"
# The SELinux userland and policy, auditd for the AVC log, the kernel and initramfs to
# boot directly; the rest is what `make install` and a Flatpak system installation need
# (gpgv for the commit signatures: trixie's apt no longer pulls it in).
PACKAGES = ("systemd", "systemd-sysv", "udev", "libpam-systemd", "dbus", "polkitd",
            "flatpak", "bubblewrap", "python3", "python3-pyelftools", "python3-jsonschema",
            "make", "gpgv", "procps", "linux-image-amd64", "initramfs-tools", "selinux-basics",
            "selinux-policy-default", "selinux-utils", "policycoreutils", "auditd")
TOOLS = ("debootstrap", "qemu-system-x86_64", "qemu-img", "setfiles", "mkfs.ext4")
IMAGE_SIZE = "6G"
INPUT_SIZE_MB = 512
RESULTS_SIZE_MB = 256

# The unit in the image: after the system is up, run the input disk's script, put the
# results on the second disk and power off (also when the script fails). The input is
# mounted on /mnt, which is mnt_t: mount_t may not mount on a directory made at run time.
RUNNER = """#!/bin/sh
mkdir -p /var/tmp/fsx-results
mount -o ro /dev/vdc /mnt
sh /mnt/run /var/tmp/fsx-results > /var/tmp/fsx-results/run.log 2>&1
echo $? > /var/tmp/fsx-results/run.rc
cp /var/log/audit/audit.log /var/tmp/fsx-results/ 2>/dev/null
journalctl -b --no-pager > /var/tmp/fsx-results/journal.txt 2>&1
tar -cf /dev/vdb -C /var/tmp/fsx-results .
sync
systemctl poweroff --no-block
"""
UNIT = """[Unit]
Description=flatpak-sysext VM test
After=multi-user.target auditd.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/fsx-vm-runner
StandardOutput=journal+console
[Install]
WantedBy=multi-user.target
"""


def missing_tools() -> list[str]:
    """The host tools this module needs that are not installed."""
    return [t for t in TOOLS if shutil.which(t) is None]


def image_key() -> str:
    """What names a cached image: suite, packages and what is put into the root."""
    text = "\n".join((SUITE, *PACKAGES, IMAGE_SIZE, RUNNER, UNIT))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _configure(root: Path) -> None:
    (root / "etc/fstab").write_text("/dev/vda / ext4 rw,relatime 0 1\n")
    (root / "etc/hostname").write_text("fsx-selinux\n")
    (root / "etc/selinux/config").write_text("SELINUX=enforcing\nSELINUXTYPE=default\n")
    (root / "etc/machine-id").write_text(os.urandom(16).hex() + "\n")
    runner = root / "usr/local/sbin/fsx-vm-runner"
    runner.parent.mkdir(parents=True, exist_ok=True)
    runner.write_text(RUNNER)
    runner.chmod(0o755)
    (root / "etc/systemd/system/fsx-vm-test.service").write_text(UNIT)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "fsx-vm-test.service").symlink_to("/etc/systemd/system/fsx-vm-test.service")
    # Nothing to wait for: no network, no timers; and no first-boot updates (ldconfig,
    # the journal catalog, hwdb: a minute and more under TCG), debootstrap did them.
    for unit in ("systemd-networkd-wait-online.service", "apt-daily.timer",
                 "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer",
                 "ldconfig.service", "systemd-journal-catalog-update.service",
                 "systemd-hwdb-update.service", "systemd-update-done.service",
                 "man-db.timer", "dpkg-db-backup.timer"):
        (root / "etc/systemd/system" / unit).unlink(missing_ok=True)
        (root / "etc/systemd/system" / unit).symlink_to("/dev/null")


def _label(root: Path) -> None:
    # The guest's own setfiles, in a chroot: this host's may not read a newer policy.
    policy = sorted((root / "etc/selinux/default/policy").glob("policy.*"))[-1]
    subprocess.run(["chroot", str(root), "/usr/sbin/setfiles", "-m", "-F", "-c",
                    f"/etc/selinux/default/policy/{policy.name}",
                    "/etc/selinux/default/contexts/files/file_contexts", "/"],
                   check=True, stdout=subprocess.DEVNULL)


def cached_image() -> Path:
    """The directory holding ``root.img``, ``vmlinuz`` and ``initrd.img``, built if missing
    (booted.cached: in a temporary directory renamed when complete, under a lock)."""
    def make(build: Path) -> Path:
        root = build / "root"
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                        SUITE, str(root), mirror()], check=True, stdout=subprocess.DEVNULL)
        _configure(root)
        out = build / "image"
        out.mkdir()
        shutil.copy2(sorted((root / "boot").glob("vmlinuz-*"))[-1], out / "vmlinuz")
        shutil.copy2(sorted((root / "boot").glob("initrd.img-*"))[-1], out / "initrd.img")
        _label(root)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "fsxroot", "-d", str(root),
                        str(out / "root.img"), IMAGE_SIZE], check=True,
                       stdout=subprocess.DEVNULL)
        return out

    return cached(CACHE_DIR / f"selinux-{SUITE}-{image_key()}", make)


def run_guest(image: Path, inputs: Path, work: Path, timeout: float = 900) -> tuple[Path, float]:
    """Boot ``image`` enforcing with ``inputs`` (a directory with a ``run`` script) as its
    input disk; return the directory its results were unpacked into and the seconds the
    run took. The image itself is never written: the guest writes a qcow2 layer over it."""
    work.mkdir(parents=True, exist_ok=True)
    layer = work / "root.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b",
                    str(image / "root.img"), "-F", "raw", str(layer)], check=True)
    # The input disk's files are labeled here (mount's context= option is denied to
    # mount_t): usr_t, which every domain may read.
    for path in (inputs, *inputs.rglob("*")):
        os.setxattr(path, "security.selinux", b"system_u:object_r:usr_t:s0\0",
                    follow_symlinks=False)
    input_img = work / "input.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(inputs), str(input_img),
                    f"{INPUT_SIZE_MB}M"], check=True, stdout=subprocess.DEVNULL)
    results_img = work / "results.img"
    with open(results_img, "wb") as f:
        f.truncate(RESULTS_SIZE_MB << 20)
    serial = work / "serial.log"
    start = time.monotonic()
    with contextlib.suppress(subprocess.TimeoutExpired):  # what it wrote so far is read
        subprocess.run(
            ["qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "2",
             "-m", "2048", "-kernel", str(image / "vmlinuz"),
             "-initrd", str(image / "initrd.img"),
             "-append", "root=/dev/vda rw console=ttyS0 security=selinux selinux=1"
             " enforcing=1 audit=1 systemd.show_status=1",
             "-drive", f"file={layer},if=virtio,format=qcow2",
             "-drive", f"file={results_img},if=virtio,format=raw",
             "-drive", f"file={input_img},if=virtio,format=raw,readonly=on",
             "-display", "none", "-serial", f"file:{serial}", "-no-reboot", "-nic", "none"],
            check=True, timeout=timeout, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    seconds = time.monotonic() - start
    results = work / "results"
    results.mkdir(exist_ok=True)
    data = results_img.read_bytes()
    if data[:512].strip(b"\0"):
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(results, filter="data")
    if (results / "run.rc").exists():  # else kept, to look into (qemu-img, debugfs)
        layer.unlink()
        input_img.unlink()
    return results, seconds
