# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Consent: which apps the administrator lets put code that runs as root on the host.

A merged extension runs as root, so nothing is linked without consent: by the config's
``allow`` patterns (what a distribution or a fleet ships), or per app with
``flatpak-sysext approve APPID``. Consent is pinned to:

- the app's origin as Flatpak knows it: the remote's URL, its collection ID, and the
  fingerprints of the keys in the remote's keyring, never the remote's local name, which
  anyone who adds a remote chooses;
- the keyring itself (keyring.py): its bytes are kept in the service's state, and the
  commit of every snapshot is checked against them; for ``allow`` patterns it is pinned
  at the first link (trust on first use);
- for a remote that does not verify signatures, the exact commit approved: every new
  commit waits (nothing proves who made it);
- what the extension grants (its manifest's grants, in the grant model of
  manifest.GRANT_MODEL): an update that grants nothing new is consented to already,
  one that grants more waits for consent again;
- the last linked commit's timestamp: an older commit (a rollback) waits.

The records live in the service's root-only state directory; see
docs/reference.md#consent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flatpak_sysext.rules.manifest import GRANT_MODEL
from flatpak_sysext.state import fileio, keyring, statefiles

FILE_NAME = "consent.json"
FORMAT = 2
"""1: origin, grants, how; 2: the pinned keyring and commit, the grant model and digest,
who consented, the last linked commit (one migration, :meth:`Store.upgrade`)."""
MAX_SIZE = 16 << 20
FIRST_USE = "keyring pinned at this first link (trust on first use)"
"""What the output says of an app an ``allow`` pattern consents to, at its first link."""


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


def origin_of(installation_path: str, remote: str) -> Origin | None:
    """The origin of apps from ``remote`` of the installation; None if the remote is not
    configured or its configuration or keyring cannot be read exactly (then nothing
    vouches for it, and no consent can match it)."""
    keys = keyring.remote_group(installation_path, remote)
    ring = keyring.remote_keyring(installation_path, remote)
    if keys is None or ring is None:
        return None
    try:
        fingerprints = keyring.keyring_fingerprints(ring)
    except ValueError:
        return None
    return Origin(keys.get("url", ""), keys.get("collection-id", ""), fingerprints)


def grants_digest(grants: Iterable[str], model: int, origin: Origin) -> str:
    """sha256 over the sorted grant sentences, the grant model and the origin (URL,
    collection, key fingerprints): names exactly what a consent covers, so that consent
    given elsewhere can name it by digest."""
    doc = json.dumps({"grants": sorted(grants), "grant_model": model,
                      "origin": origin.to_json()}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()


_HOW = ("approve", "allow", "migrated")


@dataclasses.dataclass(frozen=True)
class Record:
    """Consent given to one app, and what it is pinned to."""

    origin: Origin
    grants: frozenset[str]
    how: str
    """``approve`` (the command), ``allow`` (a config pattern; the record keeps what was
    pinned at the first link) or ``migrated`` (linked before consent existed)."""
    by: str = ""
    """Who consented: ``uid N`` for approve, the pattern for allow."""
    keyring: str = ""
    """The digest of the pinned keyring (keyring.py); "" for a remote that does not
    verify signatures."""
    commit: str = ""
    """For a remote that does not verify signatures: the one commit consented to."""
    grant_model: int = GRANT_MODEL
    linked_commit: str = ""
    linked_timestamp: int = 0
    """The commit linked last and its timestamp: an older commit waits (no rollback)."""

    @property
    def grants_digest(self) -> str:
        """:func:`grants_digest` of this record."""
        return grants_digest(self.grants, self.grant_model, self.origin)

    def to_json(self) -> dict[str, Any]:
        return {"origin": self.origin.to_json(), "grants": sorted(self.grants),
                "grant_model": self.grant_model, "grants_digest": self.grants_digest,
                "how": self.how, "by": self.by, "keyring": self.keyring,
                "commit": self.commit, "linked_commit": self.linked_commit,
                "linked_timestamp": self.linked_timestamp}

    @classmethod
    def from_json(cls, data: Any, version: int = FORMAT) -> Record:
        if not isinstance(data, dict) or data.get("how") not in _HOW:
            raise ValueError("not a consent record")
        grants = data.get("grants")
        if not isinstance(grants, list) or not all(isinstance(g, str) for g in grants):
            raise ValueError("grants are not strings")
        origin = Origin.from_json(data.get("origin"))
        if version == 1:  # before the grant model had a number: 1
            return cls(origin, frozenset(grants), data["how"], grant_model=1)
        by, ring, commit, linked = (data.get(k) for k in ("by", "keyring", "commit",
                                                            "linked_commit"))
        model, stamp = data.get("grant_model"), data.get("linked_timestamp")
        if not (isinstance(by, str) and isinstance(ring, str) and isinstance(commit, str)
                and isinstance(linked, str) and isinstance(model, int)
                and isinstance(stamp, int)):
            raise ValueError("record fields have the wrong types")
        record = cls(origin, frozenset(grants), data["how"], by, ring, commit, model, linked,
                     stamp)
        if data.get("grants_digest") != record.grants_digest:
            raise ValueError("grants_digest does not match the grants")
        return record


class Store:
    """The consent records, in ``<state directory>/consent.json`` (root only), and the
    pinned keyrings beside them (``keyrings/``).

    ``initialised`` is false until the first run that kept consent: that run records
    the apps linked at that moment (see :meth:`migrate`), once. ``outdated``: the file
    is of format 1; its records keep grant model 1 until :meth:`upgrade` meets their
    app installed (a record of an app not installed waits for it so).
    """

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, FILE_NAME)
        self.records: dict[str, Record] = {}
        self.initialised = False
        self.outdated = False
        self.warning: str | None = None
        self._offered: dict[str, bytes] = {}

    def load(self) -> Store:
        """Read the records. A missing file is a store never initialised; a corrupt one
        is a warning and counts as empty, never as consent."""
        try:
            data = json.loads(fileio.read_regular(self.path, MAX_SIZE))
            if not isinstance(data, dict) or data.get("format") not in (1, FORMAT):
                raise ValueError("unknown format")
            apps = data.get("apps")
            if not isinstance(apps, dict):
                raise ValueError("apps is not an object")
            self.records = {str(k): Record.from_json(v, data["format"]) for k, v in apps.items()}
            self.outdated = data["format"] != FORMAT
        except FileNotFoundError:
            return self
        except (OSError, ValueError) as e:
            self.records = {}
            self.warning = f"{self.path}: cannot be read ({e}); no app counts as consented"
        self.initialised = True
        return self

    def save(self) -> None:
        """Write the keyrings the records pin, then the records, atomically, root only;
        raises OSError."""
        statefiles.private_directory(os.path.dirname(self.path))
        for record in self.records.values():
            if record.keyring in self._offered:
                keyring.pin(self.state_dir, self._offered[record.keyring])
        data = {"format": FORMAT,
                "apps": {k: v.to_json() for k, v in sorted(self.records.items())}}
        statefiles.write_file(self.path, json.dumps(data, indent=1).encode() + b"\n", 0o600)
        self.initialised = True
        self.outdated = False

    def offer(self, ring: bytes) -> str:
        """A remote's keyring as read now: its digest, which a record may pin (the bytes
        are written with the records)."""
        name = keyring.digest(ring)
        self._offered[name] = ring
        return name

    def keyring(self, name: str) -> bytes | None:
        """The keyring bytes a record pins (None if they are gone or altered)."""
        return self._offered.get(name) or keyring.pinned(self.state_dir, name)

    def approve(self, app_id: str, origin: Origin, grants: Iterable[str], *, by: str,
                ring: str, commit: str) -> None:
        """Consent to ``app_id`` from ``origin`` granting ``grants`` (and less), checked
        with the keyring ``ring`` (a digest; "" for a remote that does not verify, which
        is pinned to ``commit``). Linking this commit is no rollback, whatever came
        before."""
        self.records[app_id] = Record(origin, frozenset(grants), "approve", by, ring, commit,
                                      linked_commit=commit)

    def revoke(self, app_id: str) -> bool:
        """Take the consent to ``app_id`` back; whether there was any."""
        return self.records.pop(app_id, None) is not None

    def upgrade(self, app_id: str, ring: bytes | None, grants: frozenset[str] | None,
                commit: str) -> None:
        """Bring a format-1 record to this format: pin ``ring`` (the remote's keyring now)
        where its fingerprints are the record's, take ``grants`` (of the snapshot linked
        now, by the current grant model) and pin ``commit`` (that snapshot's, for a remote
        that does not verify), so that the upgrade unlinks nobody."""
        record = self.records[app_id]
        pin = ""
        try:
            if ring and keyring.keyring_fingerprints(ring) == record.origin.keys:
                pin = self.offer(ring)
        except ValueError:
            pass
        self.records[app_id] = dataclasses.replace(
            record, keyring=pin, commit="" if pin else commit,
            grants=record.grants if grants is None else grants,
            grant_model=record.grant_model if grants is None else GRANT_MODEL)

    def migrate(self, kept: Mapping[str, Record]) -> bool:
        """Keep ``kept`` (what :func:`decide` says to record for the apps linked: those
        linked before consent existed, pins of the first link, the commit linked last);
        whether the file needs saving."""
        changed = (not self.initialised or self.outdated
                   or any(self.records.get(k) != v for k, v in kept.items()))
        self.records.update(kept)
        self.initialised = True
        return changed


@dataclasses.dataclass(frozen=True)
class Now:
    """An app as it is now, as far as consent goes."""

    origin: Origin | None
    grants: frozenset[str]
    signed: bool
    """Whether its remote verifies signatures."""
    keyring: str | None
    """The digest of its remote's keyring now (None: it cannot be read)."""
    commit: str
    timestamp: Callable[[], int | None] = lambda: None
    """The commit's timestamp, read only when needed (None if it cannot be)."""


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether an app's current tree is consented to, and if not, what is missing."""

    consented: bool
    new_grants: frozenset[str] = frozenset()
    """What the tree grants beyond what was consented to (all of it, if nothing was)."""
    why: str = ""


def _pins(record: Record, now: Now) -> str | None:
    """Why the app no longer matches what ``record`` pinned (keyring, commit, no
    rollback), or None."""
    if now.signed and record.keyring and now.keyring != record.keyring:
        return "its remote's keyring is no longer the one pinned at consent"
    if not now.signed and record.how != "allow" and now.commit != record.commit:
        return (f"its remote does not verify signatures, and commit {now.commit[:12]} is "
                "not the one consented to")
    if record.linked_timestamp and now.commit != record.linked_commit:
        stamp = now.timestamp()
        if stamp is not None and stamp < record.linked_timestamp:
            return (f"commit {now.commit[:12]} is older than commit "
                    f"{record.linked_commit[:12]} linked before (a rollback)")
    return None


def judge(record: Record | None, now: Now) -> Verdict:
    """The verdict for the app as it is ``now``, given the ``record``."""
    if record is None:
        return Verdict(False, now.grants, "never consented to")
    origin = now.origin
    if origin is None or origin != record.origin:
        told = origin.describe() if origin is not None else "an origin that cannot be read"
        return Verdict(False, now.grants, f"consented to from {record.origin.describe()}, "
                                          f"but it now comes from {told}")
    why = _pins(record, now)
    if why is not None:
        return Verdict(False, now.grants - record.grants, why)
    new = now.grants - record.grants
    if new and record.grant_model != GRANT_MODEL:
        # Sentences of an older model say less (model 2 left polkit's defaults out):
        # what they do not say was not consented to.
        return Verdict(False, new, f"consent was given to grants described by grant model "
                                   f"{record.grant_model}, which said less than model "
                                   f"{GRANT_MODEL} says")
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
    keep: Record | None = None
    """A record to keep if the app is linked: consent for an app linked before consent
    existed, the keyring an allow pattern's app is pinned to at its first link, the
    commit linked last."""


def _linked(record: Record, now: Now) -> Record | None:
    """``record`` with the commit now linked, if that is news."""
    if now.commit == record.linked_commit:
        return None
    return dataclasses.replace(record, linked_commit=now.commit,
                               linked_timestamp=now.timestamp() or record.linked_timestamp)


def _allowed(pattern: str, app_id: str, record: Record | None, now: Now) -> Decision:
    if record is not None:
        why = _pins(record, now)
        if why is not None:
            return Decision(None, f"{why}. To consent: flatpak-sysext approve {app_id}")
        return Decision(f"allow pattern {pattern!r}", keep=_linked(record, now))
    if now.origin is None or (now.signed and now.keyring is None):
        return Decision(f"allow pattern {pattern!r}")  # nothing to pin: none is kept
    first = Record(now.origin, now.grants, "allow", pattern,
                   now.keyring or "" if now.signed else "")
    pinned = f"; {FIRST_USE}" if now.signed else ""
    return Decision(f"allow pattern {pattern!r}{pinned}", keep=_linked(first, now))


def decide(allowed_by: str | None, store: Store, app_id: str, now: Now,
           linked_now: bool) -> Decision:
    """Consent for ``app_id`` as it is ``now``: the config's ``allow`` pattern that
    matched (``allowed_by``), else the store's record; a store never initialised
    consents, once, to what is linked now (upgrading must not take running extensions
    away)."""
    record = store.records.get(app_id)
    if allowed_by is not None:
        return _allowed(allowed_by, app_id, record, now)
    if record is not None and record.how == "allow":
        record = None  # what a pattern pinned is no consent once the pattern is gone
    if record is None and not store.initialised and linked_now and now.origin is not None:
        ring = (now.keyring or "") if now.signed else ""
        first = Record(now.origin, now.grants, "migrated", "", ring,
                       "" if now.signed else now.commit)
        return Decision("migrated", keep=_linked(first, now))
    verdict = judge(record, now)
    if verdict.consented:
        assert record is not None
        return Decision(record.how, keep=_linked(record, now))
    listing = "; ".join(sorted(verdict.new_grants)) or "nothing beyond its files"
    if record is None:
        what = f"it would grant: {listing}"
    elif verdict.new_grants:
        what = f"{verdict.why}; new: {listing}"
    else:
        what = verdict.why
    return Decision(None, f"{what}. To consent: flatpak-sysext approve {app_id}",
                    verdict.new_grants)
