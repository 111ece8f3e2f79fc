"""The configuration file (SPEC §6): defaults, loading, validation against the shipped schema."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

DEFAULT_PATH = "/etc/flatpak-sysext/config.json"
MAX_SIZE = 1 << 20


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the key."""


@dataclasses.dataclass(frozen=True)
class Config:
    """The effective configuration; every field has the default of SPEC §6."""

    target_dir: str = "/var/lib/extensions"
    allow: tuple[str, ...] = ("*",)
    deny: tuple[str, ...] = ()
    remotes: tuple[str, ...] | None = None
    require_gpg_verified_remote: bool = True
    allow_host_shadowing: bool = False
    host_sync: bool = True


def config_path(explicit: str | None, environ: Mapping[str, str]) -> str:
    """The file to read: ``--config``, else ``$FLATPAK_SYSEXT_CONFIG``, else the default."""
    return explicit or environ.get("FLATPAK_SYSEXT_CONFIG") or DEFAULT_PATH


def _schema() -> Any:
    from importlib import resources

    text = resources.files("flatpak_sysext").joinpath("schemas/config.schema.json").read_text()
    return json.loads(text)


def _validate(path: str, data: Any) -> None:
    # jsonschema costs ~100 ms to import; only a file that exists pays for it, and the
    # default (no file) path of the trigger stays fast.
    import jsonschema

    validator = jsonschema.Draft7Validator(_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    err = errors[0]
    where = "/".join(str(p) for p in err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(data, dict):
        known = set(_schema()["properties"])
        unknown = sorted(k for k in data if k not in known)
        raise ConfigError(f"{path}: unknown key {', '.join(map(repr, unknown))}")
    key = f"key {where!r}" if where else "top level"
    raise ConfigError(f"{path}: {key}: {err.message}")


def load(path: str) -> Config:
    """Load and validate the configuration; a missing file gives the defaults.

    Raises ConfigError for anything else that prevents reading it exactly.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return Config()
    except OSError as e:
        raise ConfigError(f"{path}: cannot open: {e.strerror}") from None
    try:
        with os.fdopen(fd, "rb") as f:
            raw = f.read(MAX_SIZE + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    if len(raw) > MAX_SIZE:
        raise ConfigError(f"{path}: larger than {MAX_SIZE} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        where = f"line {e.lineno} column {e.colno}"
        raise ConfigError(f"{path}: invalid JSON at {where}: {e.msg}") from None
    _validate(path, data)
    defaults = Config()

    def strings(key: str) -> tuple[str, ...] | None:
        value = data.get(key, getattr(defaults, key))
        return None if value is None else tuple(value)

    return Config(
        target_dir=data.get("target_dir", defaults.target_dir),
        allow=strings("allow") or (),
        deny=strings("deny") or (),
        remotes=strings("remotes"),
        require_gpg_verified_remote=data.get("require_gpg_verified_remote",
                                             defaults.require_gpg_verified_remote),
        allow_host_shadowing=data.get("allow_host_shadowing", defaults.allow_host_shadowing),
        host_sync=data.get("host_sync", defaults.host_sync),
    )
