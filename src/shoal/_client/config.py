"""Where the client finds the coordinator's URL, the user token and the CA.

In order: the arguments; a profile named by ``--profile`` or ``SHOAL_PROFILE``; the
environment (``SHOAL_COORDINATOR``, ``SHOAL_TOKEN``); the project profile that ``shoal
up`` wrote in this folder or one above it (``.shoal/up/profile.toml``); the config file.
``shoal up`` writes the same profile to ``~/.config/shoal/profiles/local.toml`` too, so
``--profile local`` finds it from any folder. Profiles hold the token: they are written
with mode 0600 and their contents are never printed.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shoal._errors import ShoalError

_ENV_URL = "SHOAL_COORDINATOR"
_ENV_TOKEN = "SHOAL_TOKEN"
_ENV_CA = "SHOAL_CA_CERT"
_ENV_PROFILE = "SHOAL_PROFILE"
PROJECT_PROFILE = Path(".shoal") / "up" / "profile.toml"  # as `shoal up`'s default --state
_PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


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


def profile_path(name: str) -> Path:
    """Where the named profile lives.

    Parameters
    ----------
    name
        The profile's name: 1 to 64 letters, digits, ``.``, ``_`` or ``-``.

    Returns
    -------
    pathlib.Path
        ``$XDG_CONFIG_HOME/shoal/profiles/NAME.toml``.

    Raises
    ------
    ShoalError
        ``client.config`` when the name is not a valid profile name.
    """
    if not _PROFILE_NAME.fullmatch(name):
        raise ShoalError(
            f"{name!r} is not a profile name",
            code="client.config",
            hint="use 1 to 64 letters, digits, '.', '_' or '-', e.g. --profile local",
        )
    return config_path().parent / "profiles" / f"{name}.toml"


def project_profile(start: Path | None = None) -> Path | None:
    """The profile ``shoal up`` wrote in ``start`` (default: the working folder) or the
    nearest folder above it, if any."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / PROJECT_PROFILE
        if candidate.is_file():
            return candidate
    return None


def write_profile(path: Path, url: str, token: str, note: str = "") -> None:
    """Write a profile (URL and token) readable by its owner only (0600), atomically.

    Parameters
    ----------
    path
        The profile file; its folder is made (0700) if missing.
    url, token
        The coordinator's URL and the user token.
    note
        A comment line for the reader (e.g. who wrote it).
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lines = [f"# {note}"] if note else []
    lines += ["# holds a secret token: keep this file private (mode 0600)"]
    lines += [f"coordinator = {json.dumps(url)}", f"token = {json.dumps(token)}", ""]
    # mkstemp makes the file 0600 before the token is written; rename makes it whole.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".profile-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def _source_of(path: Path, what: str) -> dict[str, Any]:
    config = _read_config(path)
    for key in ("coordinator", "token", "ca_cert"):
        value = config.get(key)
        if value is not None and not isinstance(value, str):
            raise ShoalError(
                f"{key} in {what} {path} is a {type(value).__name__}, not a string",
                code="client.config",
                hint=f'write {key} = "..." with quotes',
            )
    return config


def _named_profile(name: str) -> tuple[Path, dict[str, Any]]:
    path = profile_path(name)
    if not path.is_file():
        folder = path.parent
        known = sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []
        raise ShoalError(
            f"there is no profile {name!r} ({path} does not exist)",
            code="client.config",
            hint=(f"known profiles: {', '.join(known)}; " if known else "")
            + "`shoal up` writes the profile 'local' (or the one its --profile names)",
        )
    return path, _source_of(path, "the profile")


def _sources(profile: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Where URL, token and CA may come from, first wins (after the arguments).

    Lazy: a file is read only when the sources before it lacked something, so a broken
    config file does not matter while the environment gives both.
    """
    name = profile or os.environ.get(_ENV_PROFILE) or None
    if name:
        path, values = _named_profile(name)
        yield f"profile {name!r} ({path})", values
    yield (
        "the environment",
        {
            "coordinator": os.environ.get(_ENV_URL),
            "token": os.environ.get(_ENV_TOKEN),
            "ca_cert": os.environ.get(_ENV_CA),
        },
    )
    local = project_profile()
    if local is not None:
        yield f"the profile {local} that `shoal up` wrote", _source_of(local, "the profile")
    yield str(config_path()), _source_of(config_path(), "the shoal config file")


def _first(
    sources: Iterator[tuple[str, dict[str, Any]]], seen: list[tuple[str, dict[str, Any]]], key: str
) -> tuple[str, str] | None:
    """The first source giving ``key`` (reading further sources only as needed)."""
    for where, values in seen:
        if values.get(key):
            return where, str(values[key])
    for where, values in sources:
        seen.append((where, values))
        if values.get(key):
            return where, str(values[key])
    return None


def resolve(
    url: str | None = None, token: str | None = None, profile: str | None = None
) -> tuple[str, str]:
    """Find the coordinator URL and the user token.

    Each comes from the argument if given, else the named profile (``profile``, else
    ``SHOAL_PROFILE``), else the environment (``SHOAL_COORDINATOR``, ``SHOAL_TOKEN``),
    else the profile ``shoal up`` wrote in this folder or one above it
    (``.shoal/up/profile.toml``), else the config file (``coordinator = "..."``,
    ``token = "..."`` in :func:`config_path`).

    Parameters
    ----------
    url, token
        Given explicitly: they win.
    profile
        A profile name (``~/.config/shoal/profiles/NAME.toml``); it must exist.

    Returns
    -------
    tuple of str
        The URL (without a trailing slash) and the token.

    Raises
    ------
    ShoalError
        ``client.config`` when either cannot be found, the profile does not exist or
        the URL is malformed.
    """
    sources = _sources(profile)
    seen: list[tuple[str, dict[str, Any]]] = []
    url_from = "the argument"
    if not url:
        found = _first(sources, seen, "coordinator")
        if found:
            url_from, url = found
    if not url:
        raise ShoalError(
            "no coordinator URL given",
            code="client.config",
            hint=f"start one here with `shoal up` (later commands in this folder find it), "
            f"pass --coordinator URL or --profile NAME or Client(url=...), export "
            f'{_ENV_URL}=URL, or write coordinator = "URL" in {config_path()}',
        )
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ShoalError(
            f"coordinator URL {url!r} (from {url_from}) has no http:// or https:// scheme",
            code="client.config",
            hint=f"write it as https://{url}, or http://{url} for a coordinator without TLS",
        )
    if not token:
        # The URL's own source first: a profile's token belongs with its URL.
        own = [(w, v) for w, v in seen if w == url_from]
        found = _first(iter(own), [], "token") or _first(sources, seen, "token")
        if found:
            token = found[1]
    if not token:
        raise ShoalError(
            f"no user token given for the coordinator at {url}",
            code="client.config",
            hint=f"pass --token T or Client(token=...), export {_ENV_TOKEN}=T, or write "
            f'token = "T" in {config_path()}; the token is printed by `shoal coordinator '
            "start` and kept in <state>/user-token",
        )
    return url, token.strip()


def ca_from_config(profile: str | None = None) -> str | None:
    """The CA bundle to trust: ``ca_cert`` from the first source that gives one (the
    named profile, ``SHOAL_CA_CERT``, the project profile, the config file)."""
    found = _first(_sources(profile), [], "ca_cert")
    return found[1] if found else None
