"""Deterministic module bundles.

A bundle is an uncompressed zip (stored entries: deflate output can differ between zlib
versions, and the digest must be the same on every machine) with sorted entries, a fixed
timestamp and fixed permissions, plus a ``shoal-module.json`` manifest naming the entry
point. Its identity is the sha256 of the zip bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shoal._errors import BundleError

MANIFEST = "shoal-module.json"
SOURCE_ENTRY = "shoal_module_source"  # import name given to modules written as source text
_EPOCH = (1980, 1, 1, 0, 0, 0)
_SKIP_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache"}
_SKIP_SUFFIXES = {".pyc", ".pyo"}
_SKIP_NAMES = {".DS_Store"}

Kind = Literal["file", "package", "source"]


@dataclass(frozen=True)
class Bundle:
    """A module's code as bytes, with its digest and import entry point."""

    digest: str
    data: bytes
    kind: Kind
    entry: str


def _zip(files: dict[str, bytes], manifest: dict[str, str]) -> bytes:
    files = {**files, MANIFEST: json.dumps(manifest, sort_keys=True).encode()}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.create_system = 3  # unix, whatever the host
            zf.writestr(info, files[name])
    return buf.getvalue()


def _package_files(root: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part in _SKIP_DIRS for part in rel.parts):
            continue
        if path.is_dir() or path.suffix in _SKIP_SUFFIXES or path.name in _SKIP_NAMES:
            continue
        out[(Path(root.name) / rel).as_posix()] = path.read_bytes()
    return out


def bundle_path(path: Path) -> Bundle:
    """Bundle a single ``.py`` file or a package folder (with ``__init__.py``)."""
    if path.is_file():
        if path.suffix != ".py":
            raise BundleError(f"module file {path} is not a .py file", hint="point to a .py file")
        files = {path.name: path.read_bytes()}
        kind: Kind = "file"
        entry = path.stem
    elif path.is_dir():
        if not (path / "__init__.py").is_file():
            raise BundleError(
                f"module folder {path} has no __init__.py",
                hint="add __init__.py defining main()",
            )
        files = _package_files(path)
        kind = "package"
        entry = path.name
    else:
        raise BundleError(f"module path {path} does not exist", hint="check the path")
    return _make(files, kind, entry)


def bundle_source(source: str) -> Bundle:
    """Bundle a module given as source text."""
    return _make({f"{SOURCE_ENTRY}.py": source.encode()}, "source", SOURCE_ENTRY)


def _make(files: dict[str, bytes], kind: Kind, entry: str) -> Bundle:
    data = _zip(files, {"entry": entry, "kind": kind, "format": "1"})
    return Bundle("sha256:" + hashlib.sha256(data).hexdigest(), data, kind, entry)


def read_manifest(data: bytes) -> dict[str, str]:
    """Return the manifest of a bundle (entry point and kind)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        manifest: dict[str, str] = json.loads(zf.read(MANIFEST))
    return manifest
