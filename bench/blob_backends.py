"""Blob store throughput by backend: the disk store vs S3 (moto's server on loopback).

Usage: python bench/blob_backends.py [MiB]   (default 256)

Streams MiB of bytes into each backend with ``put_stream`` and back with
``iter_chunks``, and prints MB/s both ways. moto's server is a Python process on
loopback, so the S3 figure measures shoal's client path plus moto, not a real store.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator

from shoal._store.blobs import Blobs, open_blobs

MiB = 1 << 20


def pieces(total: int) -> Iterator[bytes]:
    block = os.urandom(MiB)
    for i in range(0, total, MiB):
        yield block[: min(MiB, total - i)]


def measure(name: str, store: Blobs, total: int) -> None:
    t = time.perf_counter()
    digest, n = store.put_stream(pieces(total))
    put = time.perf_counter() - t
    t = time.perf_counter()
    got = sum(len(c) for c in store.iter_chunks(digest, 4 * MiB))
    get = time.perf_counter() - t
    assert got == n == total
    print(
        f"{name:5s} {total / MiB:6.0f} MiB  put {total / MiB / put:7.1f} MiB/s"
        f"  get {total / MiB / get:7.1f} MiB/s"
    )


def main() -> None:
    total = int(sys.argv[1] if len(sys.argv) > 1 else 256) * MiB
    with tempfile.TemporaryDirectory() as tmp:
        measure("disk", open_blobs(tmp), total)
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
    )
    try:
        import boto3

        boto3.client("s3").create_bucket(Bucket="bench")
        measure("s3", open_blobs("s3://bench/blobs"), total)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
