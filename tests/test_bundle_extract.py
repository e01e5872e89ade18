"""What a node unpacks from a bundle is bounded (issue #14, point 7): a zip bomb is
refused before anything is written; a real bundle extracts as before."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zipfile
import zlib
from pathlib import Path

import pytest

from shoal._bundle import bundle_path
from shoal._errors import ShoalError
from shoal._runtime import loader
from shoal._runtime.loader import extract_bundle

pytestmark = pytest.mark.timeout(60)

PKG = Path(__file__).parent / "seeds" / "modules" / "worker"
mib = 1 << 20


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _zeros_zip(mebibytes: int, name: str = "zeros.bin") -> bytes:
    """A deflated entry of that many MiB of zeros (about 1 KiB per MiB: a zip bomb)."""
    buf = io.BytesIO()
    with (
        zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf,
        zf.open(name, "w", force_zip64=True) as out,
    ):
        chunk = bytes(mib)
        for _ in range(mebibytes):
            out.write(chunk)
    return buf.getvalue()


def _written(cache: Path) -> int:
    return sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())


def test_a_real_bundle_still_extracts(tmp_path: Path) -> None:
    b = bundle_path(PKG)
    folder = extract_bundle(b.data, b.digest, tmp_path)
    assert folder == tmp_path / b.digest.removeprefix("sha256:")
    for src in PKG.rglob("*.py"):
        assert (folder / "worker" / src.relative_to(PKG)).read_bytes() == src.read_bytes()
    assert extract_bundle(b.data, b.digest, tmp_path) == folder  # once
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]


def test_the_default_bounds_are_far_above_real_modules() -> None:
    bounds = (loader.MAX_BUNDLE_BYTES, loader.MAX_BUNDLE_RATIO, loader.RATIO_FROM_BYTES)
    assert bounds == (1 << 30, 200, mib)


def test_a_zip_bomb_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    data = _zeros_zip(64)  # 64 MiB of zeros in about 64 KiB
    assert len(data) < mib
    digest = _digest(data)
    with pytest.raises(ShoalError) as err:
        extract_bundle(data, digest, tmp_path)  # the default bounds
    e = err.value
    assert e.code == "module.bundle_limit"
    assert digest in e.message and "'zeros.bin'" in e.message
    assert "200:1" in e.message and f"{64 * mib} bytes" in e.message
    assert e.hint is not None and "uncompressed" in e.hint
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing left behind


def test_the_total_size_is_bounded(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(5):  # 5 MiB, stored: every ratio is 1:1
            zf.writestr(f"part{i}.bin", os.urandom(mib))
    data = buf.getvalue()
    with pytest.raises(ShoalError) as err:
        extract_bundle(data, _digest(data), tmp_path, max_bytes=4 * mib)
    assert err.value.code == "module.bundle_limit"
    assert f"expands to {5 * mib} bytes" in err.value.message
    assert f"limit of {4 * mib} bytes" in err.value.message
    assert list(tmp_path.iterdir()) == []
    extract_bundle(data, _digest(data), tmp_path, max_bytes=5 * mib)  # at the bound: fine
    assert _written(tmp_path) == 5 * mib


def _lie_about_size(data: bytes, size: int) -> bytes:
    """Rewrite the uncompressed size of the (only) entry in both of its headers."""
    out = bytearray(data)
    central = out.index(b"PK\x01\x02")
    local = out.index(b"PK\x03\x04")
    # ZIP64 entries keep their sizes in an extra field; this bomb is small enough for
    # the 32-bit fields, which zipfile reads when they are not 0xFFFFFFFF.
    struct.pack_into("<I", out, central + 24, size)
    struct.pack_into("<I", out, local + 22, size)
    return bytes(out)


def test_headers_that_lie_cannot_write_more_than_they_declare(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", bytes(32 * mib))  # 32-bit size fields
    data = _lie_about_size(buf.getvalue(), 1000)  # "1000 bytes": passes the checks
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo("zeros.bin")
    assert (info.file_size, info.CRC) == (1000, zlib.crc32(bytes(32 * mib)))
    with pytest.raises(ShoalError) as err:
        extract_bundle(data, _digest(data), tmp_path)
    assert err.value.code == "module.bundle" and "CRC" in err.value.message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "name", ["../escape.py", "/abs.py", "a/../../b.py", "back\\slash.py"], ids=str
)
def test_unsafe_names_are_refused(tmp_path: Path, name: str) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(name, b"x = 1\n")
    data = buf.getvalue()
    with pytest.raises(ShoalError, match="unsafe entry") as err:
        extract_bundle(data, _digest(data), tmp_path / "cache")
    assert err.value.code == "module.bundle"
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_zip_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ShoalError) as err:
        extract_bundle(b"PK not a zip", "sha256:" + "0" * 64, tmp_path)
    assert err.value.code == "module.bundle" and "sha256:" + "0" * 64 in err.value.message
    assert list(tmp_path.iterdir()) == []
