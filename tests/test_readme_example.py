# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""README's "For app developers" layout passes ``check`` as written.

The layout is read from README.md itself, so the test stays true when the README changes:
each listed file is given the ordinary content for its kind (a static daemon, a unit that
runs it, the D-Bus policy, service file and polkit action that name the app).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from testsupport.flatpak import compile_c
from testsupport.prerequisites import require_tools

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "/app/lib/extensions/"


def readme_layout() -> list[str]:
    """The paths (relative to the tree) in the first code block of "For app developers"."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## For app developers\n", 1)[1]
    block = re.search(r"^```\n(.*?)^```$", section, re.S | re.M)
    assert block is not None, "README's 'For app developers' has no layout block"
    paths = [line.split()[0] for line in block.group(1).splitlines() if line.strip()]
    assert paths and all(p.startswith(PREFIX) for p in paths), paths
    return [p[len(PREFIX):] for p in paths]


def materialize(root: Path, paths: list[str]) -> str:
    """Write each path with the usual content for its kind; the app ID it ships."""
    [release] = [p for p in paths if p.startswith("usr/lib/extension-release.d/")]
    app_id = release.rsplit("extension-release.", 1)[1]
    [daemon] = [p for p in paths if p.startswith("usr/libexec/")]
    [unit] = [Path(p).name for p in paths if p.startswith("usr/lib/systemd/system/")]
    contents = {
        "usr/lib/extension-release.d/": "ID=_any\n",
        "usr/lib/systemd/system/": (f"[Unit]\nDescription={app_id} daemon\n\n[Service]\n"
                                    f"Type=dbus\nBusName={app_id}\nExecStart=/{daemon}\n"),
        "usr/share/dbus-1/system.d/": (
            '<busconfig><policy user="root">'
            f'<allow own="{app_id}"/></policy></busconfig>\n'),
        "usr/share/dbus-1/system-services/": (
            f"[D-BUS Service]\nName={app_id}\nExec=/bin/false\nUser=root\n"
            f"SystemdService={unit}\n"),
        "usr/share/polkit-1/actions/": (
            '<?xml version="1.0"?>\n<policyconfig>\n'
            f'<action id="{app_id}.run"><description>Run</description>'
            '<message>Run</message><defaults><allow_any>no</allow_any>'
            '<allow_inactive>no</allow_inactive><allow_active>auth_admin</allow_active>'
            '</defaults></action>\n</policyconfig>\n'),
    }
    for rel in paths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel == daemon:
            compile_c(r"int main(void){return 0;}", path, "-static")
            continue
        [content] = [c for d, c in contents.items() if rel.startswith(d)]
        path.write_text(content)
    for d in [root, *root.rglob("*")]:
        d.chmod(0o755 if d.is_dir() or d == root / daemon else 0o644)
    return app_id


def test_readme_example_layout_passes_check(tmp_path: Path) -> None:
    require_tools("gcc")
    tree = tmp_path / "lib/extensions"
    app_id = materialize(tree, readme_layout())
    result = subprocess.run([sys.executable, "-m", "flatpak_sysext", "check", str(tree)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert app_id in result.stdout


def test_readme_finish_args_are_the_built_examples() -> None:
    # The fragment README gives for flatpak-builder is what the example built in CI uses.
    section = (ROOT / "README.md").read_text().split("\n## For app developers\n", 1)[1]
    block = re.search(r"```json\n(.*?)```", section, re.S)
    assert block is not None, "README's 'For app developers' has no flatpak-builder fragment"
    fragment = json.loads("{" + block.group(1).strip() + "}")
    manifest = json.loads((ROOT / "examples/flatpak-builder/org.example.App.json").read_text())
    assert fragment["finish-args"] == manifest["finish-args"]
