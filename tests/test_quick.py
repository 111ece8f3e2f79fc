# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The trigger's quick check: it ends a run only when the full run would do and say
nothing, and every change that matters sends the run down the full path.

The oracle is the full run itself: after each change, whatever ``quick.quiet`` answers
is checked against what ``trigger.run_full`` then does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from flatpak_sysext import quick
from flatpak_sysext.state import statefiles
from testsupport.deployments import (
    DECL,
    DECLARE,
    MARGIN_NS,
    OTHER,
    PLAIN,
    HandMadeInstallation,
    stamp_apps,
)
from testsupport.flatpak import FlatpakEnv, daemon_tree
from testsupport.prerequisites import require

# Every test needs root: the trigger acts only as root.
pytestmark = pytest.mark.privileged

@pytest.fixture
def settled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HandMadeInstallation:
    require(os.geteuid() == 0, "the trigger only acts as root")
    monkeypatch.setattr(quick, "MARGIN_NS", MARGIN_NS)
    w = HandMadeInstallation(tmp_path)
    assert f"{DECL}: linked" in w.full()
    w.settle()
    return w


def test_nothing_changed_is_quiet_and_so_is_the_full_run(settled: HandMadeInstallation) -> None:
    assert settled.quiet()
    assert settled.full() == ""


def _rewrite_config(w: HandMadeInstallation, **values: object) -> None:
    data = json.loads(w.config.read_text())
    data.update(values)
    w.config.write_text(json.dumps(data))


def _update(app: str, meta: str) -> Callable[[HandMadeInstallation], None]:
    def change(w: HandMadeInstallation) -> None:
        w.deploy(app, meta)
        w.changed()
    return change


def _uninstall(app: str) -> Callable[[HandMadeInstallation], None]:
    def change(w: HandMadeInstallation) -> None:
        shutil.rmtree(w.inst / "app" / app)
        w.changed()
    return change


def _unreadable_metadata(w: HandMadeInstallation) -> None:
    (w.deploy(OTHER, "") / "metadata").write_bytes(b"\xff\n")
    w.changed()


# Changes a full run does nothing about: the quick check must end the run.
IRRELEVANT: dict[str, Callable[[HandMadeInstallation], None]] = {
    "only .changed touched": HandMadeInstallation.changed,
    "app without extension updated": _update(PLAIN, ""),
    "app without extension installed": _update(OTHER, ""),
    "app without extension uninstalled": _uninstall(PLAIN),
}


@pytest.mark.parametrize("change", IRRELEVANT)
def test_changes_to_apps_that_declare_nothing_end_the_run(settled: HandMadeInstallation,
                                                          change: str) -> None:
    before = settled.links()
    IRRELEVANT[change](settled)
    stamp = Path(quick.stamp_path(str(settled.inst)))
    old = stamp.read_bytes()
    assert settled.quiet()
    # The stamp now knows the new deployments, so the next run is as quick.
    assert stamp.read_bytes() != old
    assert settled.quiet()
    assert settled.full() == "" and settled.links() == before


def test_a_foreign_entry_in_the_target_directory_is_no_gone_app(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 ) -> None:
    """What matters includes the target directory's entries, which need not be apps: one
    that is no installed app has not vanished from the installation."""
    require(os.geteuid() == 0, "the trigger only acts as root")
    monkeypatch.setattr(quick, "MARGIN_NS", MARGIN_NS)
    w = HandMadeInstallation(tmp_path)
    w.target.mkdir(parents=True, exist_ok=True)
    (w.target / "vendor.raw").write_bytes(b"")
    assert f"{DECL}: linked" in w.full()
    w.settle()
    _update(PLAIN, "")(w)
    assert w.quiet()
    assert w.full() == ""


# Changes a full run acts on: the quick check must let it run, and the full run says so.
RELEVANT: dict[str, tuple[Callable[[HandMadeInstallation], None], str]] = {
    "declaring app updated": (_update(DECL, DECLARE), f"{DECL}: relinked"),
    "declaring app uninstalled": (_uninstall(DECL), f"{DECL}: unlinked"),
    "app starts declaring": (_update(PLAIN, DECLARE), f"{PLAIN}: linked"),
    "new declaring app": (_update(OTHER, DECLARE), f"{OTHER}: linked"),
    "new app with unreadable metadata": (_unreadable_metadata, f"{OTHER}: cannot read"),
    "link removed by hand": (lambda w: (w.target / DECL).unlink(), f"{DECL}: linked"),
    "config denies the app": (lambda w: _rewrite_config(w, deny=[DECL]),
                              f"{DECL}: unlinked, denied"),
}


@pytest.mark.parametrize("change", RELEVANT)
def test_changes_that_matter_reach_the_full_run(settled: HandMadeInstallation, change: str) -> None:
    mutate, says = RELEVANT[change]
    mutate(settled)
    assert not settled.quiet()
    assert says in settled.full()


@pytest.mark.parametrize("change", ["config rewritten as it was", "installations.d added",
                                   "another environment", "repo config changed"])
def test_changed_inputs_make_a_full_run_even_if_it_has_nothing_to_do(
        settled: HandMadeInstallation, change: str) -> None:
    environ = dict(settled.environ)
    if change == "config rewritten as it was":
        settled.config.write_text(settled.config.read_text())
    elif change == "installations.d added":
        (settled.confdir / "installations.d").mkdir()
    elif change == "another environment":
        environ["FLATPAK_CONFIG_DIR"] = str(settled.confdir / "elsewhere")
    else:  # the hand-made deployments' commits are in repo/ (testsupport.deployments)
        config = settled.inst / "repo" / "config"
        config.write_text(config.read_text() + '[remote "added"]\nurl=file:///x\n')
    assert not settled.quiet(environ)


# How a stamp goes bad: (what is replaced, by what); None replaces the whole stamp.
CORRUPTIONS: dict[str, tuple[bytes, bytes] | None] = {
    "without its end": (b"end\n", b""),
    "not UTF-8": (b"end\n", b"R \xff\nend\n"),
    "unknown record": (b"end\n", b"X y\0z\nend\n"),
    "record without value": (b"end\n", b"A org.q.New\nend\n"),
    "unknown record in the head": (b"\napps\n", b"\nX y\0z\napps\n"),
    "no apps part": (b"\napps\n", b"\n"),
    "another installation": (b"\nB /", b"\nB /elsewhere/"),
    "an environment variable missing": (b"\nE SYSTEMD_OS_RELEASE\0\x01\n", b"\n"),
    "cut short": None,
    "empty": None,
}


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_a_bad_stamp_is_no_stamp(settled: HandMadeInstallation, how: str) -> None:
    stamp = Path(quick.stamp_path(str(settled.inst)))
    good = stamp.read_bytes()
    change = CORRUPTIONS[how]
    if change is None:
        bad = good[: len(good) // 2] if how == "cut short" else b""
    else:
        assert change[0] in good
        bad = good.replace(*change)
    stamp.write_bytes(bad)
    # The apps part is only read when Flatpak changed something: make it so.
    settled.changed()
    assert not settled.quiet()
    assert stamp.read_bytes() == bad
    assert settled.full() == ""


def test_what_changed_within_the_margin_is_not_trusted(settled: HandMadeInstallation,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quick, "MARGIN_NS", 10 * 10**9)
    stamp = Path(quick.stamp_path(str(settled.inst)))
    # The config was written seconds ago: a change to it within the same clock tick
    # would keep its signature, so no stamp may rest on it.
    stamp.unlink()
    assert settled.full() == ""
    assert not stamp.exists()
    assert not settled.quiet()


def test_a_discarded_cache_is_said_once(settled: HandMadeInstallation) -> None:
    # The trigger reconciles here (it can write the target and the state directory): the
    # cache is the service's.
    where = statefiles.installation_directory(settled.environ["FLATPAK_SYSEXT_STATE_DIR"],
                                              str(settled.inst))
    (Path(where) / "cache.json").write_text("{corrupt")
    said = settled.full()
    assert "cache.json" in said and "discarded" in said
    assert settled.full() == ""


def test_a_fresh_changed_file_is_recorded_as_unknown(settled: HandMadeInstallation) -> None:
    settled.changed()
    assert settled.quiet()
    changed = str(settled.inst / ".changed")
    stamp = quick.Stamp.decode(Path(quick.stamp_path(str(settled.inst))).read_bytes())
    assert stamp is not None and stamp.paths[changed] == quick.UNKNOWN


def test_a_name_the_stamp_cannot_hold_means_no_stamp(settled: HandMadeInstallation) -> None:
    stamp = Path(quick.stamp_path(str(settled.inst)))
    stamp.unlink()
    (settled.inst / "app" / "bad\nname").mkdir()
    time.sleep(2 * MARGIN_NS / 1e9)
    assert settled.full() == ""
    assert not stamp.exists()


def test_real_flatpak_updates_through_the_sandboxed_trigger(fenv: FlatpakEnv) -> None:
    """Flatpak's own transactions, trigger in bubblewrap: an update of an app without an
    extension ends quietly, an update of one with an extension is acted on."""
    app = "org.fsx.Quick"
    fenv.publish(app, daemon_tree(app, "v1"))
    fenv.publish(PLAIN, None, declare=None)
    fenv.install(app)
    fenv.install(PLAIN)
    assert fenv.sysext("reconcile").returncode == 0
    linked = fenv.links()
    assert list(linked) == [app]
    time.sleep(quick.MARGIN_NS / 1e9 + 0.1)
    hand = subprocess.run([str(fenv.triggers_dir / "flatpak-sysext.trigger"),
                           str(fenv.system_dir)],
                          env=fenv.env, capture_output=True, text=True, check=True)
    assert hand.stdout == ""
    stamp = Path(quick.stamp_path(str(fenv.system_dir)))
    assert stamp.is_file()

    cache = fenv.system_dir / "flatpak-sysext" / "cache.json"
    cached = cache.stat()
    fenv.publish(PLAIN, None, declare=None, extra_metadata="\n[Context]\nshared=network;\n")
    out = fenv.update()
    # The quick check handled it: a full run would have rewritten the cache, whose scan
    # memo remembers every app's deployment.
    assert (cache.stat().st_ino, cache.stat().st_mtime_ns) == (cached.st_ino,
                                                               cached.st_mtime_ns)
    assert "flatpak-sysext" not in out.stdout + out.stderr
    active = os.lstat(fenv.system_dir / "app" / PLAIN / "current" / "active")
    assert stamp_apps(fenv.system_dir)[PLAIN] == (f"{active.st_dev}:{active.st_ino}:"
                                                  f"{active.st_ctime_ns}")
    assert fenv.links() == linked

    fenv.publish(app, daemon_tree(app, "v2"))
    out = fenv.update()
    assert f"flatpak-sysext: {app}: relinked" in out.stdout + out.stderr
    assert "requested" in out.stdout + out.stderr
