"""Module bundles are deterministic: same content, same digest, on any machine."""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from pathlib import Path

from shoal._bundle import bundle_path, bundle_source, read_manifest

PKG = Path(__file__).parent / "seeds" / "modules" / "worker"


def _copy(dst: Path, mtime: int, reverse: bool) -> Path:
    dst.mkdir(parents=True)
    files = sorted(p for p in PKG.rglob("*.py"))
    for src in reversed(files) if reverse else files:  # different creation order
        target = dst / src.relative_to(PKG)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        os.utime(target, (mtime, mtime))
    return dst


def test_same_content_different_mtimes_and_order_give_one_digest(tmp_path: Path) -> None:
    a = bundle_path(_copy(tmp_path / "a" / "worker", 1_000_000, reverse=False))
    b = bundle_path(_copy(tmp_path / "b" / "worker", 1_700_000_000, reverse=True))
    assert a.digest == b.digest and a.data == b.data
    assert a.digest.startswith("sha256:") and len(a.digest) == 71


def test_one_byte_changes_the_digest(tmp_path: Path) -> None:
    root = _copy(tmp_path / "worker", 1_000_000, reverse=False)
    before = bundle_path(root).digest
    model = root / "model.py"
    model.write_bytes(model.read_bytes() + b" ")
    assert bundle_path(root).digest != before


def test_caches_and_bytecode_are_left_out(tmp_path: Path) -> None:
    root = _copy(tmp_path / "worker", 1_000_000, reverse=False)
    before = bundle_path(root).digest
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"\0junk")
    assert bundle_path(root).digest == before


def test_bundle_layout_and_manifest(tmp_path: Path) -> None:
    b = bundle_path(PKG)
    names = zipfile.ZipFile(io.BytesIO(b.data)).namelist()
    assert names == sorted(names)
    assert "worker/__init__.py" in names and "worker/model.py" in names
    assert read_manifest(b.data) == {"entry": "worker", "kind": "package", "format": "1"}
    single = bundle_path(PKG.parent / "aggregator.py")
    assert read_manifest(single.data)["entry"] == "aggregator"
    src = bundle_source("def main():\n    pass\n")
    assert src.kind == "source" and src.digest == bundle_source("def main():\n    pass\n").digest
