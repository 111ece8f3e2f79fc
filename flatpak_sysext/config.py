# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The configuration file: defaults, loading, validation against the shipped schema.

The keys are documented in docs/configuration.md.

Every way a file can be wrong is a ``ConfigError`` whose message is one line naming the
file and, where there is one, the key. Nothing is guessed: an unknown key, a duplicate
key or a file that cannot be read exactly is an error, never a silent fallback to the
(less strict) defaults, because a typo must not weaken the policy.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import os
import stat
from collections.abc import Mapping
from typing import Any

from flatpak_sysext.state import fileio, statefiles

DEFAULT_PATH = "/etc/flatpak-sysext/config.json"
MAX_SIZE = 1 << 20
SCHEMA = "schemas/config.schema.json"
MEMO_NAME = "config-validated"
"""File in a state directory holding the digest of the last config that validated."""

# Where systemd-sysext looks for images, in its order (docs/platform.md#search-directories).
SEARCH_DIRS = ("/etc/extensions", "/run/extensions", "/var/lib/extensions")
OLD_SEARCH_DIRS = ("/usr/local/lib/extensions", "/usr/lib/extensions")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the key."""


@dataclasses.dataclass(frozen=True)
class Config:
    """The effective configuration; every field has its documented default."""

    target_dir: str = "/var/lib/extensions"
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    remotes: tuple[str, ...] | None = None
    require_gpg_verified_remote: bool = True
    allow_host_shadowing: bool = False
    host_sync: bool = True
    allow_host_glibc: tuple[str, ...] = ()
    """App-ID globs whose executables may need the host's glibc (``true`` is ``("*",)``)."""

    host_classes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(app-ID glob, restricted classes) pairs: what ``host_classes`` allows."""

    def classes_allowed(self, app_id: str) -> frozenset[str]:
        """The restricted classes (contain.RESTRICTED) ``app_id`` may ship."""
        return frozenset(c for glob, classes in self.host_classes
                         if fnmatch.fnmatchcase(app_id, glob) for c in classes)

    def host_glibc_allowed(self, app_id: str) -> bool:
        """Whether ``app_id``'s tree is judged with allow_host_glibc (hostglibc)."""
        return any(fnmatch.fnmatchcase(app_id, p) for p in self.allow_host_glibc)


def config_path(explicit: str | None, environ: Mapping[str, str]) -> str:
    """The file to read: ``--config``, else ``$FLATPAK_SYSEXT_CONFIG``, else the default."""
    return explicit or environ.get("FLATPAK_SYSEXT_CONFIG") or DEFAULT_PATH


GLIBC_ROOT_VARIABLE = "FLATPAK_SYSEXT_GLIBC_ROOT"
"""Where allow_host_glibc looks for the host's glibc instead of ``/`` (tests;
docs/configuration.md)."""


def glibc_root(environ: Mapping[str, str]) -> str:
    """The root under which allow_host_glibc reads the host's glibc: ``/`` by default."""
    return environ.get(GLIBC_ROOT_VARIABLE) or "/"


def target_dir_warning(cfg: Config) -> str | None:
    """A warning if systemd-sysext would never see links made in ``cfg.target_dir``."""
    if cfg.target_dir in SEARCH_DIRS:
        return None
    if cfg.target_dir in OLD_SEARCH_DIRS:
        return (f"target_dir {cfg.target_dir} is searched by systemd-sysext only up to "
                f"v253; use one of {', '.join(SEARCH_DIRS)}")
    return (f"target_dir {cfg.target_dir} is not a systemd-sysext search directory "
            f"({', '.join(SEARCH_DIRS)}): linked extensions are not merged from there")


def _schema_text() -> bytes:
    # Next to this module, as setuptools and `make install` put package data; read
    # directly because importlib.resources costs the trigger a few ms of imports.
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), SCHEMA), "rb") as f:
        return f.read()


_JSON_TYPES = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}


def _key_name(path: Any) -> str:
    """``allow[0]`` for the JSON path ``["allow", 0]``."""
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


def _validate(path: str, data: Any, schema: Any) -> None:
    # jsonschema costs ~50-100 ms to import, more than the whole no-op trigger may
    # take: it is imported only here, and ``load`` skips this for a known-good file.
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(data),
                    key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return
    err = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    props = schema["properties"]
    if err.validator == "additionalProperties" and isinstance(data, dict):
        import difflib

        unknown = sorted(k for k in data if k not in props)
        hints = [f"{k!r} (did you mean {m[0]!r}?)" if m else repr(k) for k in unknown
                 for m in [difflib.get_close_matches(k, list(props), n=1)]]
        word = "key" if len(unknown) == 1 else "keys"
        raise ConfigError(f"{path}: unknown {word} {', '.join(hints)}{more}")
    if not err.absolute_path:
        kind = _JSON_TYPES.get(type(data), "a number")
        raise ConfigError(f"{path}: the top level must be a JSON object, not {kind}")
    top = props.get(err.absolute_path[0], {})
    expected = top.get("x-expected")
    hint = f" (expected {expected})" if expected else ""
    raise ConfigError(
        f"{path}: key {_key_name(err.absolute_path)!r}: {err.message}{hint}{more}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of duplicate keys; an admin may have meant the first.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(key)
        result[key] = value
    return result


def _read(path: str, *, must_exist: bool) -> bytes | None:
    """The file's bytes, None if it does not exist (and need not)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        # A dangling symlink is a file someone meant to be there, not "no config".
        if must_exist or os.path.islink(path):
            raise ConfigError(f"{path}: cannot open: file or symlink target missing") from None
        return None
    except OSError as e:
        raise ConfigError(f"{path}: cannot open: {e.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        # A directory cannot be read; a FIFO or a device could block or never end.
        if stat.S_ISDIR(mode):
            raise ConfigError(f"{path}: cannot read: is a directory")
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{path}: cannot read: not a regular file")
        raw = b""
        while len(raw) <= MAX_SIZE:
            chunk = os.read(fd, MAX_SIZE + 1 - len(raw))
            if not chunk:
                break
            raw += chunk
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_SIZE:
        raise ConfigError(f"{path}: larger than {MAX_SIZE} bytes")
    return raw


def _parse(path: str, raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 (byte {e.start})") from None
    if not text.strip():
        raise ConfigError(f"{path}: empty file (write {{}} for the defaults)")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except ValueError as e:
        raise ConfigError(f"{path}: key {e.args[0]!r} appears more than once") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid JSON: nested too deeply") from None


def _memo_read(memo_dir: str | None) -> str | None:
    if memo_dir is None:
        return None
    try:
        data = fileio.read_regular(os.path.join(memo_dir, MEMO_NAME), 256)
    except (OSError, ValueError):
        return None
    return data.decode("ascii", "replace").strip()


def _memo_write(memo_dir: str, digest: str) -> None:
    # Best effort: a memo only saves work, and a read-only state directory must not
    # turn a valid config into an error.
    try:
        os.makedirs(memo_dir, mode=0o755, exist_ok=True)
        statefiles.write_file(os.path.join(memo_dir, MEMO_NAME), f"{digest}\n".encode())
    except OSError:
        pass


def load(path: str, *, must_exist: bool = False, memo_dir: str | None = None) -> Config:
    """Load and validate the configuration; a missing file gives the defaults.

    ``must_exist`` makes a missing file an error (for an explicit ``--config``).
    With ``memo_dir`` (a directory only root can write), the digest of a file that
    validated is remembered there, and a later load of the very same bytes against the
    very same schema skips the schema validation, which is a pure function of the two.
    Raises ConfigError for anything that prevents reading the file exactly.
    """
    raw = _read(path, must_exist=must_exist)
    if raw is None:
        return Config()
    data = _parse(path, raw)
    schema_text = _schema_text()
    digest = hashlib.sha256(b"%d:%b%b" % (len(schema_text), schema_text, raw)).hexdigest()
    if memo_dir is not None and _memo_read(memo_dir) == digest:
        return _config(path, data)
    _validate(path, data, json.loads(schema_text))
    cfg = _config(path, data)
    if memo_dir is not None:
        _memo_write(memo_dir, digest)
    return cfg


def _config(path: str, data: dict[str, Any]) -> Config:
    """The Config of a document that passed the schema."""
    defaults = Config()

    def strings(key: str) -> tuple[str, ...] | None:
        value = data.get(key, getattr(defaults, key))
        return None if value is None else tuple(value)

    glibc = data.get("allow_host_glibc", False)
    target = data.get("target_dir", defaults.target_dir)
    # "/var/lib/extensions/" and "/var/lib//extensions" mean the default; only the
    # normalised spelling is compared with systemd's search directories.
    target = "/" + os.path.normpath(target).lstrip("/")
    if target == "/":
        raise ConfigError(f"{path}: key 'target_dir': must not be the root directory")
    return Config(
        target_dir=target,
        allow=strings("allow") or (),
        deny=strings("deny") or (),
        remotes=strings("remotes"),
        require_gpg_verified_remote=data.get("require_gpg_verified_remote",
                                             defaults.require_gpg_verified_remote),
        allow_host_shadowing=data.get("allow_host_shadowing", defaults.allow_host_shadowing),
        host_sync=data.get("host_sync", defaults.host_sync),
        allow_host_glibc=("*",) if glibc is True else tuple(glibc or ()),
        host_classes=tuple((k, tuple(v)) for k, v in sorted(data.get("host_classes", {}).items())),
    )
