# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""End to end on an SELinux-enforcing host: Debian 13 (systemd 257, the reference policy
``default``) booted under qemu with ``enforcing=1`` (testsupport/vm.py).

One boot runs one script inside, in phases: the project installed by ``make install``; a
signed app with a static daemon, its unit, D-Bus service and policy and a polkit action
installed with ``flatpak install --system`` and approved; an update; ``restorecon -R`` of
the store followed by a run; an uninstall; and, last, a negative control: a second app
merged with labeling switched off (``FLATPAK_SYSEXT_TEST_NO_SELINUX_LABELS=1``), which
must show the denials the labels prevent. The tests read what the script left.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testsupport import booted, vm
from testsupport.booted import daemon_unit
from testsupport.flatpak import FlatpakEnv

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

APP = "org.fsx.SELinux"
BAD = "org.fsx.Unlabeled"  # the negative control's app
EXPECTED_DOMAIN = "system_u:system_r:initrc_t:s0"
"""What the reference policy gives a bin_t program systemd starts (Fedora's:
unconfined_service_t)."""
POLKIT = f"usr/share/polkit-1/actions/{APP}.policy"

RUN = r"""#!/bin/sh
# The guest's side: $1 is where results go. Each phase leaves files the tests read.
R=$1
IN=/mnt
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root
set -x
mark() {  # the results so far go onto the results disk too, in case the run never ends
  echo "$1 $(date +%s.%N)" >> "$R/phases"; echo "fsx-phase $1" > /dev/console
  cp /var/log/audit/audit.log "$R/"; tar -cf /dev/vdb -C "$R" .; sync
}
wait_for() {  # at most 3 minutes
  i=0
  while ! eval "$1"; do
    i=$((i+1)); [ $i -gt 360 ] && echo "fsx-timeout $1" > /dev/console && return 1; sleep 0.5
  done
}
settle() {
  # (this script's own unit is a start job until it ends)
  wait_for '[ -z "$(systemctl list-jobs --no-legend | grep -v fsx-vm-test)" ] &&
    [ "$(systemctl is-active flatpak-sysext.service)" != activating ]'
}
merged() { tr ' ' '\n' < /usr/.systemd-sysext/extensions 2>/dev/null | grep -qx "$1"; }
call() {
  busctl call --system "$1" "/$(echo "$1" | tr . /)" "$1" Version > "$R/$2.call" 2>&1
  echo $? > "$R/$2.rc"
}
labels() {  # every path the extension shows under /, with its label and matchpathcon's
  snap=$(readlink -e "/var/lib/extensions/$1"); echo "$snap" > "$R/$2.snapshot"
  stat -c %C "$snap/usr" > "$R/$2.snapusr"
  (cd "$snap" && find usr opt 2>/dev/null) | while read -r p; do
    echo "/$p $(stat -c %C "/$p") $(matchpathcon -n "/$p")"
  done > "$R/$2.labels"
}
mark start
getenforce > "$R/getenforce"
systemctl --version | head -1 > "$R/systemd"
cp -r "$IN/src" /usr/src/flatpak-sysext
make -C /usr/src/flatpak-sysext install PREFIX=/usr PYTHON=/usr/bin/python3 > "$R/make.log" 2>&1
restorecon -R /usr /etc  # as a package's files would be
systemctl daemon-reload
systemctl enable --now flatpak-sysext.path flatpak-sysext.service
systemctl enable systemd-sysext.service
mkdir -p /srv/fsx && cp -r "$IN/repo1" /srv/fsx/repo && cp "$IN/pubkey.gpg" /srv/fsx/
restorecon -R /srv
flatpak remote-add --system --gpg-import=/srv/fsx/pubkey.gpg fsx file:///srv/fsx/repo
mark install
flatpak install --system -y --noninteractive fsx "$APP" > "$R/install.log" 2>&1
settle
flatpak-sysext approve "$APP" > "$R/approve.log" 2>&1
wait_for "merged $APP"
call "$APP" v1
ps -eo label,args | grep '[f]sx-daemon' > "$R/v1.domain"
labels "$APP" v1
mark update
rm -rf /srv/fsx/repo && cp -r "$IN/repo2" /srv/fsx/repo && restorecon -R /srv
flatpak update --system -y --noninteractive > "$R/update.log" 2>&1
settle
wait_for '[ "$(readlink -e /var/lib/extensions/$APP)" != "$(cat $R/v1.snapshot)" ]'
call "$APP" v2
labels "$APP" v2
mark relabel
restorecon -R /var/lib/flatpak-sysext
stat -c %C "$(cat "$R/v2.snapshot")/usr" > "$R/restorecon.snapusr"
# What the merged view shows once its inodes are looked up again (any time the kernel
# evicts them): the store's new labels. The overlay keeps what it read until refreshed.
sync; echo 2 > /proc/sys/vm/drop_caches; echo $? > "$R/drop_caches.rc"
labels "$APP" restorecon
flatpak-sysext status > "$R/status-stale.txt" 2>&1
flatpak-sysext reconcile > "$R/reconcile.log" 2>&1
labels "$APP" relabel
call "$APP" relabel
flatpak-sysext status > "$R/status.txt" 2>&1
mark uninstall
flatpak uninstall --system -y --noninteractive "$APP" > "$R/uninstall.log" 2>&1
settle
wait_for "! merged $APP"
merged "$APP"; echo $? > "$R/uninstalled.rc"
mark negative
mkdir -p /etc/systemd/system/flatpak-sysext.service.d
printf '[Service]\nEnvironment=FLATPAK_SYSEXT_TEST_NO_SELINUX_LABELS=1\n' \
  > /etc/systemd/system/flatpak-sysext.service.d/no-labels.conf
restorecon -R /etc/systemd/system
systemctl daemon-reload
export FLATPAK_SYSEXT_TEST_NO_SELINUX_LABELS=1
flatpak install --system -y --noninteractive fsx "$BAD" > "$R/negative-install.log" 2>&1
settle
flatpak-sysext approve "$BAD" > "$R/negative-approve.log" 2>&1
wait_for "merged $BAD"
call "$BAD" negative
labels "$BAD" negative
# The issue's first reproduction: systemd refuses to start a unit whose file is var_lib_t.
systemctl daemon-reload
systemctl start "$BADUNIT" > "$R/negative-start.log" 2>&1; echo $? > "$R/negative-start.rc"
systemd-sysext unmerge
mark end
journalctl -b -o short-unix --no-pager > "$R/journal-unix.txt" 2>&1
"""


@dataclass
class Results:
    dir: Path
    seconds: float

    def text(self, name: str) -> str:
        path = self.dir / name
        return path.read_text(errors="replace") if path.exists() else ""

    def phases(self) -> dict[str, float]:
        return {name: float(t) for name, t in (line.split() for line in
                                               self.text("phases").splitlines())}

    def denials(self, start: str, end: str) -> list[str]:
        """The AVC and USER_AVC records between two phase marks."""
        marks = self.phases()
        out = []
        for line in self.text("audit.log").splitlines():
            found = re.match(r"type=(USER_AVC|AVC) msg=audit\((\d+\.\d+):", line)
            if found and marks[start] <= float(found.group(2)) < marks[end]:
                out.append(line)
        return out

    def mislabeled(self, phase: str) -> list[str]:
        """Paths the extension shows whose label is not what the policy gives them."""
        rows = [line.split() for line in self.text(f"{phase}.labels").splitlines()]
        assert rows, f"no labels recorded for {phase}:\n" + self.text("run.log")[-3000:]
        return [" ".join(r) for r in rows if len(r) != 3 or r[1] != r[2]]


def polkit_action(app_id: str) -> str:
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE policyconfig PUBLIC '
            '"-//freedesktop//DTD PolicyKit Policy Configuration 1.0//EN"\n '
            '"http://www.freedesktop.org/standards/PolicyKit/1/policyconfig.dtd">\n'
            f'<policyconfig>\n  <action id="{app_id}.call">\n    <description>call'
            '</description>\n    <defaults><allow_any>auth_admin</allow_any>'
            '<allow_inactive>auth_admin</allow_inactive><allow_active>yes</allow_active>'
            '</defaults>\n  </action>\n</policyconfig>\n')


def tree(app_id: str, binary: Path) -> booted.TreeBuilder:
    """testsupport/booted.py's daemon (unit, D-Bus service and policy), a polkit action too."""
    daemon = booted.daemon_tree(app_id, binary)

    def build(root: Path) -> None:
        daemon(root)
        action = root / f"usr/share/polkit-1/actions/{app_id}.policy"
        action.parent.mkdir(parents=True, exist_ok=True)
        action.write_text(polkit_action(app_id))

    return build


def copy_source(dest: Path) -> None:
    """The working tree as git sees it (tracked and untracked, not ignored)."""
    files = subprocess.run(["git", "-C", str(booted.SOURCE_ROOT), "ls-files", "-z", "--cached",
                            "--others", "--exclude-standard"], check=True,
                           capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, files):
        src = booted.SOURCE_ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Results]:
    """The enforcing guest's run of RUN, with its inputs built here."""
    booted.require_booting("flatpak", "bwrap", "gpg", *vm.TOOLS)
    base = tmp_path_factory.mktemp("selinux-vm")
    image = vm.cached_image()
    inputs = base / "inputs"
    inputs.mkdir()
    copy_source(inputs / "src")
    v1 = booted.build_daemon(base / "fsx-daemon-v1", "v1")
    v2 = booted.build_daemon(base / "fsx-daemon-v2", "v2")
    publisher = FlatpakEnv(base / "publisher", signed=True)
    try:
        publisher.publish(APP, tree(APP, v1))
        publisher.publish(BAD, tree(BAD, v1))
        shutil.copytree(publisher.repo, inputs / "repo1", symlinks=True)
        publisher.publish(APP, tree(APP, v2))
        shutil.copytree(publisher.repo, inputs / "repo2", symlinks=True)
        shutil.copy2(publisher.pubkey, inputs / "pubkey.gpg")
    finally:
        publisher.close()
    (inputs / "run").write_text(f"APP={APP}\nBAD={BAD}\nBADUNIT={daemon_unit(BAD)}\n" + RUN)
    results, seconds = vm.run_guest(image, inputs, base / "vm")
    print(f"enforcing guest: {seconds:.0f} s")
    yield Results(results, seconds)


def test_the_guest_is_enforcing_on_systemd_257(guest: Results) -> None:
    assert guest.text("getenforce").strip() == "Enforcing", guest.text("run.log")[-3000:]
    assert guest.text("systemd").startswith("systemd 257")


def test_installed_daemon_answers_in_its_domain_with_every_label_right(guest: Results) -> None:
    assert guest.text("v1.rc").strip() == "0", guest.text("v1.call") + guest.text("run.log")
    assert guest.text("v1.call").strip() == 's "v1"'
    assert guest.text("v1.domain").split()[0] == EXPECTED_DOMAIN, guest.text("v1.domain")
    assert guest.mislabeled("v1") == []
    assert any(line.startswith(f"/{POLKIT} ") for line in guest.text("v1.labels").splitlines())


def test_update_labels_the_new_snapshot_and_restarts_the_daemon(guest: Results) -> None:
    assert guest.text("v2.snapshot") != guest.text("v1.snapshot")
    assert guest.text("v2.call").strip() == 's "v2"', guest.text("v2.call")
    assert guest.mislabeled("v2") == []


def test_a_relabel_of_the_store_is_undone_by_the_next_run(guest: Results) -> None:
    # restorecon put the store back to var_lib_t; status said so; the run labeled it again.
    assert ":var_lib_t:" in guest.text("restorecon.snapusr")
    # Looked up afresh, the merged view showed the store's var_lib_t: the overlay, not
    # only the store, had to be brought back (a refresh after the relabel).
    assert guest.text("drop_caches.rc").strip() == "0", guest.text("run.log")[-3000:]
    assert any(":var_lib_t:" in line.split()[1]
               for line in guest.text("restorecon.labels").splitlines()), \
        guest.text("restorecon.labels")
    assert "SELinux enforcing: labels stale" in guest.text("status-stale.txt")
    assert ":usr_t:" in guest.text("relabel.snapusr")
    assert guest.mislabeled("relabel") == []
    assert guest.text("relabel.call").strip() == 's "v2"', guest.text("relabel.call")
    status = guest.text("status.txt")
    assert "SELinux: enforcing, policy default" in status, status
    assert "  SELinux enforcing: labels current, types generic" in status, status


def test_no_denial_names_the_extension_and_dbus_loads_its_policy(guest: Results) -> None:
    assert guest.text("uninstalled.rc").strip() == "1"  # not merged any more
    names = ("var_lib_t", APP, daemon_unit(APP), "fsx-daemon", "flatpak-sysext",
             "/var/lib/extensions")
    denials = [d for d in guest.denials("install", "negative") if any(n in d for n in names)]
    assert denials == []
    marks = guest.phases()
    dbus_errors = [line for line in guest.text("journal-unix.txt").splitlines()
                   if APP in line and "dbus" in line.lower()
                   and marks["install"] <= float(line.split()[0]) < marks["negative"]
                   and re.search(r"(?i)error|fail|denied", line)]
    assert dbus_errors == []


def test_negative_control_unlabeled_extension_is_denied(guest: Results) -> None:
    # The same kind of tree, merged with labeling switched off: var_lib_t throughout,
    # and the denials the labels prevent.
    assert ":var_lib_t:" in guest.text("negative.snapusr")
    assert guest.mislabeled("negative") != []
    assert guest.text("negative.rc").strip() != "0", guest.text("negative.call")
    denials = [d for d in guest.denials("negative", "end") if "var_lib_t" in d]
    assert denials, guest.text("audit.log")[-3000:]
    # systemd refuses to start the unit whose file is var_lib_t (the first
    # reproduction), and dbus-daemon to read its policy.
    assert guest.text("negative-start.rc").strip() != "0", guest.text("negative-start.log")
    unit = daemon_unit(BAD)
    start = [d for d in denials if "type=USER_AVC" in d and "{ start }" in d
             and "tclass=service" in d and unit in d]
    assert start, "\n".join(denials)
    assert [d for d in denials if "{ read }" in d and "dbus" in d], "\n".join(denials)
    print("negative control's denials:", *denials, sep="\n")
