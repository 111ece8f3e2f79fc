# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Consent: which apps the administrator lets put code that runs as root on the host.

A merged extension runs as root, so nothing is linked without consent: by the config's
``allow`` patterns (what a distribution or a fleet ships), or per app with
``flatpak-sysext approve APPID``. Consent given per app is pinned to two things:

- the app's origin as Flatpak knows it: the remote's URL, its collection ID, and the
  fingerprints of the keys in the remote's keyring (``repo/<remote>.trustedkeys.gpg``),
  never the remote's local name, which anyone who adds a remote chooses;
- what the extension grants (its manifest's grants): an update that grants nothing new
  is consented to already, one that grants more waits for consent again.

The records live in the service's root-only state directory; see
docs/reference.md#consent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from flatpak_sysext import fileio, keyfile, statefiles

FILE_NAME = "consent.json"
FORMAT = 1
MAX_SIZE = 16 << 20
MAX_KEYRING = 1 << 20
"""A remote's keyring holds a few keys of a few KiB each."""


@dataclasses.dataclass(frozen=True)
class Origin:
    """Where an app comes from, as far as trust goes."""

    url: str
    collection_id: str
    keys: tuple[str, ...]
    """Fingerprints of the primary keys in the remote's keyring, sorted."""

    def describe(self) -> str:
        """One line for people."""
        what = [self.url or "(no URL)"]
        if self.collection_id:
            what.append(f"collection {self.collection_id}")
        what.append(f"keys {', '.join(self.keys)}" if self.keys else "no keys")
        return "; ".join(what)

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "collection_id": self.collection_id, "keys": list(self.keys)}

    @classmethod
    def from_json(cls, data: Any) -> Origin:
        if not isinstance(data, dict):
            raise ValueError("origin is not an object")
        url, collection, keys = data.get("url"), data.get("collection_id"), data.get("keys")
        if not (isinstance(url, str) and isinstance(collection, str) and isinstance(keys, list)
                and all(isinstance(k, str) for k in keys)):
            raise ValueError("origin fields have the wrong types")
        return cls(url, collection, tuple(sorted(keys)))


def keyring_fingerprints(data: bytes) -> tuple[str, ...]:
    """The fingerprints of the primary public keys in an OpenPGP keyring (RFC 4880 and
    9580 packets), uppercase hex, sorted. Raises ValueError if it is not a keyring."""
    found: set[str] = set()
    at = 0
    while at < len(data):
        header = data[at]
        if not header & 0x80:
            raise ValueError(f"not an OpenPGP packet at byte {at}")
        if header & 0x40:  # new format
            tag = header & 0x3F
            first = data[at + 1] if at + 1 < len(data) else -1
            if 0 <= first < 192:
                length, start = first, at + 2
            elif 192 <= first < 224 and at + 2 < len(data):
                length, start = ((first - 192) << 8) + data[at + 2] + 192, at + 3
            elif first == 255:
                length, start = int.from_bytes(data[at + 2:at + 6], "big"), at + 6
            else:
                raise ValueError(f"unsupported packet length at byte {at}")
        else:  # old format
            tag, kind = (header >> 2) & 0x0F, header & 0x03
            if kind == 3:
                raise ValueError(f"indeterminate packet length at byte {at}")
            size = 1 << kind
            length, start = int.from_bytes(data[at + 1:at + 1 + size], "big"), at + 1 + size
        body = data[start:start + length]
        if len(body) != length:
            raise ValueError(f"packet cut short at byte {at}")
        if tag == 6 and body:  # a primary public key
            found.add(_fingerprint(body))
        at = start + length
    return tuple(sorted(found))


def _fingerprint(body: bytes) -> str:
    version = body[0]
    if version == 4:
        return hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest().upper()
    if version in (5, 6):
        prefix = b"\x9a" if version == 5 else b"\x9b"
        return hashlib.sha256(prefix + len(body).to_bytes(4, "big") + body).hexdigest().upper()
    raise ValueError(f"public key version {version} is not supported")


def origin_of(installation_path: str, remote: str) -> Origin | None:
    """The origin of apps from ``remote`` of the installation; None if the remote is not
    configured or its configuration or keyring cannot be read exactly (then nothing
    vouches for it, and no consent can match it)."""
    repo = os.path.join(installation_path, "repo")
    try:
        groups = keyfile.read(os.path.join(repo, "config"))
    except (OSError, keyfile.KeyFileError):
        return None
    keys = groups.get(f'remote "{remote}"')
    if keys is None or "/" in remote:
        return None
    try:
        ring = fileio.read_regular(os.path.join(repo, f"{remote}.trustedkeys.gpg"),
                                   MAX_KEYRING)
        fingerprints = keyring_fingerprints(ring)
    except FileNotFoundError:
        fingerprints = ()
    except (OSError, ValueError):
        return None
    return Origin(keys.get("url", ""), keys.get("collection-id", ""), fingerprints)


def grants_digest(grants: Iterable[str], model: int, origin: Origin) -> str:
    """sha256 over the sorted grant sentences, the grant model and the origin (URL,
    collection, key fingerprints): names exactly what a consent covers, so that consent
    given elsewhere can name it by digest."""
    doc = json.dumps({"grants": sorted(grants), "grant_model": model,
                      "origin": origin.to_json()}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Record:
    """Consent given to one app."""

    origin: Origin
    grants: frozenset[str]
    how: str
    """``approve`` (the command) or ``migrated`` (linked before consent existed)."""

    def to_json(self) -> dict[str, Any]:
        return {"origin": self.origin.to_json(), "grants": sorted(self.grants), "how": self.how}

    @classmethod
    def from_json(cls, data: Any) -> Record:
        if not isinstance(data, dict) or data.get("how") not in ("approve", "migrated"):
            raise ValueError("not a consent record")
        grants = data.get("grants")
        if not isinstance(grants, list) or not all(isinstance(g, str) for g in grants):
            raise ValueError("grants are not strings")
        return cls(Origin.from_json(data.get("origin")), frozenset(grants), data["how"])


class Store:
    """The consent records, in ``<state directory>/consent.json`` (root only).

    ``initialised`` is false until the first run that kept consent: that run records
    the apps linked at that moment (see :meth:`migrate`), once.
    """

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, FILE_NAME)
        self.records: dict[str, Record] = {}
        self.initialised = False
        self.warning: str | None = None

    def load(self) -> Store:
        """Read the records. A missing file is a store never initialised; a corrupt one
        is a warning and counts as empty, never as consent."""
        try:
            data = json.loads(fileio.read_regular(self.path, MAX_SIZE))
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ValueError("unknown format")
            apps = data.get("apps")
            if not isinstance(apps, dict):
                raise ValueError("apps is not an object")
            self.records = {str(k): Record.from_json(v) for k, v in apps.items()}
        except FileNotFoundError:
            return self
        except (OSError, ValueError) as e:
            self.records = {}
            self.warning = f"{self.path}: cannot be read ({e}); no app counts as consented"
        self.initialised = True
        return self

    def save(self) -> None:
        """Write the records atomically, root only; raises OSError."""
        statefiles.private_directory(os.path.dirname(self.path))
        data = {"format": FORMAT,
                "apps": {k: v.to_json() for k, v in sorted(self.records.items())}}
        statefiles.write_file(self.path, json.dumps(data, indent=1).encode() + b"\n", 0o600)
        self.initialised = True

    def approve(self, app_id: str, origin: Origin, grants: Iterable[str]) -> None:
        """Consent to ``app_id`` from ``origin`` granting ``grants`` (and less)."""
        self.records[app_id] = Record(origin, frozenset(grants), "approve")

    def revoke(self, app_id: str) -> bool:
        """Take the consent to ``app_id`` back; whether there was any."""
        return self.records.pop(app_id, None) is not None

    def migrate(self, linked: Mapping[str, Record]) -> None:
        """Keep ``linked`` (the records :func:`decide` made for apps linked before
        consent existed), if the store was never initialised: once."""
        if self.initialised:
            return
        self.records.update(linked)
        self.initialised = True


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether an app's current tree is consented to, and if not, what is missing."""

    consented: bool
    new_grants: frozenset[str] = frozenset()
    """What the tree grants beyond what was consented to (all of it, if nothing was)."""
    why: str = ""


def judge(record: Record | None, origin: Origin | None, grants: frozenset[str]) -> Verdict:
    """The verdict for a tree granting ``grants`` from ``origin``, given the ``record``."""
    if record is None:
        return Verdict(False, grants, "never consented to")
    if origin is None or origin != record.origin:
        now = origin.describe() if origin is not None else "an origin that cannot be read"
        return Verdict(False, grants, f"consented to from {record.origin.describe()}, "
                                      f"but it now comes from {now}")
    new = grants - record.grants
    if new:
        return Verdict(False, new, "it grants more than was consented to")
    return Verdict(True)


@dataclasses.dataclass(frozen=True)
class Decision:
    """Whether an app's extension may be linked, as far as consent goes."""

    by: str | None
    """What consents (``allow pattern 'org.x.*'``, ``approve``, ``migrated``), or None."""
    waiting: str = ""
    """Why it waits and what it would grant, for people, with the one command that
    consents."""
    new_grants: frozenset[str] = frozenset()
    migrate: Record | None = None
    """A record the first run keeps for an app linked before consent existed."""


def decide(allowed_by: str | None, store: Store, app_id: str, origin: Origin | None,
           grants: frozenset[str], linked_now: bool) -> Decision:
    """Consent for ``app_id`` (from ``origin``, granting ``grants``): the config's
    ``allow`` pattern that matched (``allowed_by``), else the store's record; a store
    never initialised consents, once, to what is linked now (upgrading must not take
    running extensions away)."""
    if allowed_by is not None:
        return Decision(f"allow pattern {allowed_by!r}")
    record = store.records.get(app_id)
    if record is None and not store.initialised and linked_now and origin is not None:
        record = Record(origin, grants, "migrated")
        return Decision("migrated", migrate=record)
    verdict = judge(record, origin, grants)
    if verdict.consented:
        assert record is not None
        return Decision(record.how)
    listing = "; ".join(sorted(verdict.new_grants)) or "nothing beyond its files"
    what = "it would grant" if record is None else f"{verdict.why}; new"
    return Decision(None, f"{what}: {listing}. To consent: flatpak-sysext approve {app_id}",
                    verdict.new_grants)
