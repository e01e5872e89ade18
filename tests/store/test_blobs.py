"""The content-addressed blob store (shoal._store.blobs)."""

from __future__ import annotations

import hashlib
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal._errors import ShoalError
from shoal._store.blobs import CHUNK, BlobStore, digest_of

MiB = 1 << 20


def pattern(total: int, piece: int, seed: int = 7) -> Iterator[bytes]:
    """``total`` pseudo-random bytes in pieces of ``piece`` bytes, made on the fly."""
    block = hashlib.sha256(str(seed).encode()).digest() * (piece // 32 + 1)
    sent = 0
    k = 0
    while sent < total:
        n = min(piece, total - sent)
        yield bytes([k % 251]) + block[1:n]
        sent += n
        k += 1


def digest_and_length(chunks: Iterator[bytes]) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    for c in chunks:
        h.update(c)
        n += len(c)
    return "sha256:" + h.hexdigest(), n


def stored_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_put_bytes_round_trip_and_layout(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    data = b"hello blob"
    digest = blobs.put_bytes(data)
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest() == digest_of(data)
    hexd = digest.removeprefix("sha256:")
    assert blobs.path(digest) == tmp_path / "blobs" / hexd[:2] / hexd[2:]
    assert blobs.path(digest).read_bytes() == data
    assert blobs.exists(digest)
    assert blobs.size(digest) == len(data)
    with blobs.open(digest) as f:
        assert f.read() == data
    assert b"".join(blobs.iter_chunks(digest)) == data
    assert stored_files(tmp_path / "blobs") == [blobs.path(digest)]


def test_empty_blob(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    digest, length = blobs.put_stream(iter(()))
    assert (digest, length) == (digest_of(b""), 0)
    assert blobs.size(digest) == 0
    assert list(blobs.iter_chunks(digest)) == []


def test_put_twice_is_idempotent(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    first = blobs.put_bytes(b"x" * 1000)
    second, n = blobs.put_stream([b"x" * 10] * 100, expected=first)
    assert (second, n) == (first, 1000)
    assert stored_files(tmp_path) == [blobs.path(first)]


def test_stream_multi_megabyte_blob_in_bounded_memory(tmp_path: Path) -> None:
    total = 24 * MiB + 12345
    want_digest, want_len = digest_and_length(pattern(total, 300_000))
    blobs = BlobStore(tmp_path)
    tracemalloc.start()
    try:
        digest, length = blobs.put_stream(pattern(total, 300_000), expected=want_digest)
        _, peak_put = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        h = hashlib.sha256()
        sizes = []
        for chunk in blobs.iter_chunks(digest):
            h.update(chunk)
            sizes.append(len(chunk))
        _, peak_read = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (digest, length) == (want_digest, want_len)
    assert "sha256:" + h.hexdigest() == digest
    assert sum(sizes) == total and max(sizes) == CHUNK and len(sizes) == total // CHUNK + 1
    assert peak_put < 4 * MiB, f"put held {peak_put} bytes"
    assert peak_read < 4 * MiB, f"read held {peak_read} bytes"
    assert blobs.size(digest) == total


def test_iter_chunks_custom_size(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    digest = blobs.put_bytes(bytes(range(256)) * 10)
    chunks = list(blobs.iter_chunks(digest, chunk=1000))
    assert [len(c) for c in chunks] == [1000, 1000, 560]
    with pytest.raises(ShoalError) as err:
        blobs.iter_chunks(digest, chunk=0)
    assert err.value.code == "blob.invalid"


def test_digest_mismatch_leaves_nothing(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    wrong = digest_of(b"something else")
    with pytest.raises(ShoalError) as err:
        blobs.put_stream(pattern(3 * MiB, 65536), expected=wrong)
    assert err.value.code == "blob.digest"
    assert stored_files(tmp_path) == []
    assert not blobs.exists(wrong)
    real, _ = digest_and_length(pattern(3 * MiB, 65536))
    assert not blobs.exists(real)


def test_failing_stream_leaves_nothing(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)

    def broken() -> Iterator[bytes]:
        yield b"a" * MiB
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        blobs.put_stream(broken())
    assert stored_files(tmp_path) == []


def test_blob_appears_only_when_complete(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    total = 5 * MiB
    digest, _ = digest_and_length(pattern(total, MiB))
    seen_during: list[bool] = []

    def watched() -> Iterator[bytes]:
        for chunk in pattern(total, MiB):
            seen_during.append(blobs.exists(digest))
            yield chunk
        seen_during.append(blobs.exists(digest))

    blobs.put_stream(watched(), expected=digest)
    assert seen_during == [False] * 6
    assert blobs.exists(digest) and blobs.size(digest) == total


def test_concurrent_puts_of_one_blob(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    total = 2 * MiB
    digest, _ = digest_and_length(pattern(total, 100_000))
    errors: list[BaseException] = []

    def put() -> None:
        try:
            assert blobs.put_stream(pattern(total, 100_000), expected=digest) == (digest, total)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=put) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and not any(t.is_alive() for t in threads)
    assert stored_files(tmp_path) == [blobs.path(digest)]
    assert digest_and_length(blobs.iter_chunks(digest)) == (digest, total)


def test_missing_and_malformed_digests(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    missing = digest_of(b"never stored")
    assert not blobs.exists(missing)
    for call in (blobs.path, blobs.size, blobs.open, blobs.iter_chunks):
        with pytest.raises(ShoalError) as err:
            call(missing)
        assert err.value.code == "blob.missing"
    for bad in ["", "sha256:", "md5:" + "0" * 32, "sha256:" + "A" * 64, "sha256:../" + "0" * 61,
                "0" * 64, "sha256:" + "0" * 63]:  # fmt: skip
        assert not blobs.exists(bad)
        with pytest.raises(ShoalError) as err:
            blobs.path(bad)
        assert err.value.code == "blob.invalid"
        with pytest.raises(ShoalError) as err:
            blobs.put_stream([b"x"], expected=bad)
        assert err.value.code == "blob.invalid"
    assert stored_files(tmp_path) == []


def test_memoryview_and_bytearray_chunks(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    data = bytes(range(200)) * 50
    digest, n = blobs.put_stream([memoryview(data)[:5000], bytearray(data[5000:])])
    assert (digest, n) == (digest_of(data), len(data))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(chunks=st.lists(st.binary(max_size=5000), max_size=8), size=st.integers(1, 7000))
def test_round_trip_property(tmp_path: Path, chunks: list[bytes], size: int) -> None:
    blobs = BlobStore(tmp_path)
    data = b"".join(chunks)
    digest, length = blobs.put_stream(chunks)
    assert (digest, length) == (digest_of(data), len(data))
    got = list(blobs.iter_chunks(digest, chunk=size))
    assert b"".join(got) == data
    assert all(0 < len(c) <= size for c in got)
    assert list((tmp_path / "tmp").iterdir()) == []
