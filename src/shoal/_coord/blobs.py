"""The coordinator's blob routes over the store's content-addressed
:class:`~shoal._store.blobs.BlobStore` (module bundles and large values)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio.from_thread
from starlette.concurrency import run_in_threadpool

from shoal._coord.errors import ApiError, not_found
from shoal._errors import ShoalError
from shoal._store.blobs import BlobStore

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def check_digest(digest: str) -> None:
    """Raise 400 unless ``digest`` is ``sha256:<64 hex>``."""
    if not DIGEST.match(digest):
        raise ApiError(
            400,
            f"{digest!r} is not a digest",
            code="blob.digest",
            hint="name blobs 'sha256:' followed by 64 lowercase hex digits",
        )


def size_of(blobs: BlobStore, digest: str) -> int | None:
    """The blob's length, or None if it is not stored."""
    return blobs.size(digest) if blobs.exists(digest) else None


def file_of(blobs: BlobStore, digest: str, what: str = "blob") -> Path:
    """The file of a stored blob (400 for a malformed digest, 404 if missing)."""
    check_digest(digest)
    if not blobs.exists(digest):
        raise not_found(what, digest)
    return blobs.path(digest)


BATCH = 4 * 1024 * 1024


async def put_streamed(blobs: BlobStore, digest: str, stream: AsyncIterator[bytes]) -> int:
    """Store an upload as it arrives (never whole in memory); return its length.

    The store writes in a worker thread and pulls each chunk from the event loop.
    """
    check_digest(digest)

    async def next_batch() -> bytes | None:
        # The server hands the body over in ~64 KiB pieces; crossing from the writer
        # thread to the event loop once per piece costs more than the bytes themselves,
        # so each crossing collects up to BATCH bytes.
        parts: list[bytes] = []
        size = 0
        while size < BATCH:
            try:
                chunk = await stream.__anext__()
            except StopAsyncIteration:
                break
            parts.append(chunk)
            size += len(chunk)
        return b"".join(parts) if parts else None

    def chunks() -> Iterator[bytes]:
        while (chunk := anyio.from_thread.run(next_batch)) is not None:
            if chunk:
                yield chunk

    try:
        _, length = await run_in_threadpool(blobs.put_stream, chunks(), digest)
    except ShoalError as e:
        if e.code == "blob.digest":
            raise ApiError(
                400, e.message, code="blob.mismatch", hint="upload the exact bytes of the digest"
            ) from None
        raise
    return length
