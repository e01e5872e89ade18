"""One blob contract, run against every backend: the disk store and S3.

The S3 backend runs against moto's server on a loopback port: a real S3 HTTP API
(multipart uploads, ranged gets), not moto's in-process mock of boto3.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal._errors import ShoalError
from shoal._store.blobs import Blobs, BlobStore, digest_of, open_blobs

MiB = 1 << 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on loopback, with throwaway credentials in the environment."""
    server_mod = pytest.importorskip("moto.server")
    pytest.importorskip("boto3")
    port = _free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    saved = {k: os.environ.get(k) for k in _AWS_ENV}
    url = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ENDPOINT_URL=url,
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",  # moto accepts any credentials
        AWS_DEFAULT_REGION="us-east-1",
    )
    try:
        yield url
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_AWS_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


def make_bucket(name: str) -> None:
    import boto3

    boto3.client("s3").create_bucket(Bucket=name)


@pytest.fixture(params=["disk", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Blobs:
    if request.param == "disk":
        return open_blobs(tmp_path / "blobs")
    request.getfixturevalue("s3_endpoint")
    bucket = "b" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:20]
    make_bucket(bucket)
    return open_blobs(f"s3://{bucket}/shoal/blobs")


def pattern(total: int, piece: int) -> Iterator[bytes]:
    block = hashlib.sha256(b"seed").digest() * (piece // 32 + 1)
    sent = k = 0
    while sent < total:
        n = min(piece, total - sent)
        yield bytes([k % 251]) + block[1:n]
        sent += n
        k += 1


def expected_of(total: int, piece: int) -> str:
    h = hashlib.sha256()
    for c in pattern(total, piece):
        h.update(c)
    return "sha256:" + h.hexdigest()


@pytest.mark.timeout(60)
def test_round_trip(blobs: Blobs) -> None:
    data = b"hello blob"
    digest = blobs.put_bytes(data)
    assert digest == digest_of(data)
    assert blobs.exists(digest)
    assert blobs.size(digest) == len(data)
    with blobs.open(digest) as f:
        assert f.read() == data
    assert b"".join(blobs.iter_chunks(digest, chunk=3)) == data
    assert blobs.put_bytes(data) == digest  # idempotent


@pytest.mark.timeout(60)
def test_empty_blob(blobs: Blobs) -> None:
    digest, length = blobs.put_stream(iter([]))
    assert (digest, length) == (digest_of(b""), 0)
    assert blobs.size(digest) == 0
    assert b"".join(blobs.iter_chunks(digest)) == b""


@pytest.mark.timeout(120)
def test_streamed_multipart_upload_and_download(blobs: Blobs) -> None:
    # 21 MiB in odd pieces: several S3 parts and a short last one.
    total, piece = 21 * MiB + 123, 777_777
    want = expected_of(total, piece)
    digest, length = blobs.put_stream(pattern(total, piece), expected=want)
    assert (digest, length) == (want, total)
    assert blobs.size(digest) == total
    h = hashlib.sha256()
    n = 0
    for c in blobs.iter_chunks(digest, chunk=MiB):
        assert len(c) <= MiB
        h.update(c)
        n += len(c)
    assert ("sha256:" + h.hexdigest(), n) == (want, total)


@pytest.mark.timeout(60)
def test_wrong_digest_stores_nothing(blobs: Blobs) -> None:
    wrong = digest_of(b"something else")
    with pytest.raises(ShoalError) as info:
        blobs.put_stream([b"abc"], expected=wrong)
    assert info.value.code == "blob.digest"
    assert not blobs.exists(wrong)
    assert not blobs.exists(digest_of(b"abc"))


@pytest.mark.timeout(60)
def test_missing_and_malformed(blobs: Blobs) -> None:
    absent = digest_of(b"never stored")
    assert not blobs.exists(absent)
    assert not blobs.exists("sha256:nope")
    for call in (blobs.size, blobs.open, blobs.iter_chunks):
        with pytest.raises(ShoalError) as info:
            call(absent)
        assert info.value.code == "blob.missing"
    with pytest.raises(ShoalError) as info:
        blobs.size("md5:00")
    assert info.value.code == "blob.invalid"
    with pytest.raises(ShoalError) as info:
        blobs.put_stream([b"x"], expected="sha256:XY")
    assert info.value.code == "blob.invalid"


@pytest.mark.timeout(60)
def test_failed_producer_leaves_nothing(blobs: Blobs) -> None:
    def broken() -> Iterator[bytes]:
        yield b"a" * MiB
        raise RuntimeError("producer died")

    with pytest.raises(RuntimeError):
        blobs.put_stream(broken())
    assert not blobs.exists(digest_of(b"a" * MiB))


def test_open_blobs_chooses_by_url(tmp_path: Path) -> None:
    assert isinstance(open_blobs(tmp_path / "x"), BlobStore)
    assert isinstance(open_blobs(f"file://{tmp_path / 'y'}"), BlobStore)
    with pytest.raises(ShoalError) as info:
        open_blobs("gs://bucket/prefix")
    assert info.value.code == "blob.invalid"
    assert "s3://" in (info.value.hint or "")
