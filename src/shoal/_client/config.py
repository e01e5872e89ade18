"""Where the client finds the coordinator's URL, the user token and the CA: arguments,
then the environment, then the config file."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from shoal._errors import ShoalError

_ENV_URL = "SHOAL_COORDINATOR"
_ENV_TOKEN = "SHOAL_TOKEN"
_ENV_CA = "SHOAL_CA_CERT"


def config_path() -> Path:
    """Where the client's config file lives.

    Returns
    -------
    pathlib.Path
        ``$XDG_CONFIG_HOME/shoal/config.toml``, by default
        ``~/.config/shoal/config.toml``.
    """
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "shoal" / "config.toml"


def _read_config(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ShoalError(
            f"cannot read the shoal config file {path}: {e}",
            code="client.config",
            hint="fix its permissions, or set SHOAL_COORDINATOR and SHOAL_TOKEN instead",
        ) from None
    try:
        return _parse_toml(text)
    except ValueError as e:
        raise ShoalError(
            f"the shoal config file {path} is not valid TOML: {e}",
            code="client.config",
            hint='write lines such as coordinator = "https://host:8750" and token = "..."',
        ) from None


def _parse_toml(text: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib

        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(str(e)) from None
    return _parse_flat_toml(text)


def _parse_flat_toml(text: str) -> dict[str, Any]:
    """``key = "string"`` lines only: enough for the client config on Python 3.10."""
    out: dict[str, Any] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ValueError(f'line {n}: expected key = "value"')
        if value.startswith("'") and value.endswith("'") and len(value) >= 2:
            out[key] = value[1:-1]
        elif value.startswith('"'):
            try:
                out[key] = json.loads(value)
            except json.JSONDecodeError:
                raise ValueError(f"line {n}: bad string {value}") from None
        else:
            raise ValueError(f"line {n}: only string values are supported here")
    return out


def resolve(url: str | None = None, token: str | None = None) -> tuple[str, str]:
    """Find the coordinator URL and the user token.

    Each comes from the argument if given, else the environment (``SHOAL_COORDINATOR``,
    ``SHOAL_TOKEN``), else the config file (``coordinator = "..."``,
    ``token = "..."`` in :func:`config_path`).

    Returns
    -------
    tuple of str
        The URL (without a trailing slash) and the token.

    Raises
    ------
    ShoalError
        ``client.config`` when either cannot be found or the URL is malformed.
    """
    config: dict[str, Any] | None = None

    def from_config(key: str) -> str | None:
        nonlocal config
        if config is None:
            config = _read_config(config_path())
        value = config.get(key)
        if value is not None and not isinstance(value, str):
            raise ShoalError(
                f"{key} in {config_path()} is a {type(value).__name__}, not a string",
                code="client.config",
                hint=f'write {key} = "..." with quotes',
            )
        return value or None

    url = url or os.environ.get(_ENV_URL) or from_config("coordinator")
    if not url:
        raise ShoalError(
            "no coordinator URL given",
            code="client.config",
            hint=f"pass --coordinator URL or Client(url=...), export {_ENV_URL}=URL, or write "
            f'coordinator = "URL" in {config_path()}; `shoal up` and `shoal coordinator '
            "start` print the URL",
        )
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ShoalError(
            f"coordinator URL {url!r} has no http:// or https:// scheme",
            code="client.config",
            hint=f"write it as https://{url}, or http://{url} for a coordinator without TLS",
        )
    token = token or os.environ.get(_ENV_TOKEN) or from_config("token")
    if not token:
        raise ShoalError(
            f"no user token given for the coordinator at {url}",
            code="client.config",
            hint=f"pass --token T or Client(token=...), export {_ENV_TOKEN}=T, or write "
            f'token = "T" in {config_path()}; the token is printed by `shoal coordinator '
            "start` and kept in <state>/user-token",
        )
    return url, token.strip()


def ca_from_config() -> str | None:
    """The CA bundle to trust, from ``SHOAL_CA_CERT`` or the config's ``ca_cert``."""
    return os.environ.get(_ENV_CA) or _read_config(config_path()).get("ca_cert") or None
