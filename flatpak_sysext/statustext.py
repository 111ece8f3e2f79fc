# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""``status`` for people, from the ``status --json`` document (schemas/status.schema.json),
so that root, who evaluates, and a user, who asks the D-Bus interface for that document
(dbusclient.py), read the same text (docs/reference.md#status).

One block per app, apps waiting for consent first: its state, where it comes from (the
remote's URL, collection and key fingerprints: what consent pins), its grants one per
line as ``check`` prints them, then one line per reason, hint, problem and warning.
Then the foreign entries and the global warnings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Item = Mapping[str, Any]

CONSENTS = ("flatpak-sysext approve {app} (as root, or as a user polkit authorizes), or "
            "the D-Bus call Approve")
"""How to consent, said under every app that waits (docs/reference.md#d-bus-interface)."""
_TO_CONSENT = ". To consent: flatpak-sysext approve "


def remote_line(remote: Mapping[str, Any] | None) -> str:
    """Where an app comes from, as consent pins it."""
    if remote is None:
        return "from: its remote cannot be read (nothing vouches for it)"
    what = [remote["url"] or "(no URL)"]
    if remote["collection_id"]:
        what.append(f"collection {remote['collection_id']}")
    keys = remote["keys"]
    what.append(f"keys {', '.join(keys)}" if keys else "no keys")
    return "from: " + "; ".join(what)


def _waiting_why(item: Item) -> str:
    """Why an app waits, without the ``; ``-joined grants the reason repeats (consent.py
    words it for the trigger's single line; here the grants follow one per line)."""
    reason = str(item["reason"] or "")
    why = reason.split(_TO_CONSENT, 1)[0]
    if why.startswith("it would grant: "):
        return "never consented to"
    return why.split("; new: ", 1)[0]


def app_lines(item: Item) -> list[str]:
    """One app's block: its first line unindented, the rest indented by two."""
    merged = ", merged" if item["merged"] else ""
    lines = [f"{item['app']}: {item['state']}{merged}"]
    commit = (item["commit"] or "")[:12]
    lines.append(f"installation: {item['installation']}  commit: {commit}  "
                 f"remote: {item['origin']}")
    lines.append(remote_line(item["remote"]))
    if item["target"]:
        lines.append(f"{item['link']} -> {item['target']}")
    if item["consent"]:
        lines.append(f"consented to by: {item['consent']}")
    if item["state"] == "waiting":
        lines.append(f"waiting for consent: {_waiting_why(item)}")
    elif item["reason"]:
        lines.append(str(item["reason"]))
    new = set(item["new_grants"])
    if item["grants"]:
        lines.append("grants:")
        lines.extend(f"  {g}{'  (new)' if g in new else ''}" for g in item["grants"])
    elif item["state"] in ("linked", "pending", "waiting", "conflict"):
        lines.append("grants nothing beyond its files")
    if item["state"] == "waiting":
        lines.append("to consent: " + CONSENTS.format(app=item["app"]))
    if item.get("selinux"):
        lines.append(str(item["selinux"]))
    lines.extend(f"hint: {h}" for h in item["hints"])
    lines.extend(f"{p['code']}: {p['path']}: {p['message']}" for p in item["problems"])
    lines.extend(f"warning: {w['code']}: {w['path']}: {w['message']}" for w in item["warnings"])
    return lines[:1] + [f"  {line}" for line in lines[1:]]


def status_lines(items: Sequence[Item],
                 nothing: str = "No system extensions declared.") -> list[str]:
    """The text of ``status`` for the document ``items``: the apps (waiting first), the
    foreign entries, then the warnings; ``nothing`` if there is no app nor entry."""
    apps = [i for i in items if i["app"] is not None]
    none = not apps and not any(i["state"] == "foreign" for i in items)
    lines = [nothing] if none else []
    for item in sorted(apps, key=lambda i: (i["state"] != "waiting", i["app"])):
        lines.extend(app_lines(item))
    lines.extend(f"{i['name']}: foreign (not ours, left alone)" for i in items
                 if i["state"] == "foreign")
    lines.extend(f"warning: {i['reason']}" for i in items if i["state"] == "warning")
    return lines
