"""The coordinator's blob routes over the store's content-addressed
:class:`~shoal._store.blobs.BlobStore` (module bundles and large values)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import re
from collections import deque
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio.from_thread
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from shoal._coord.access import USER, BlobAccess, node_holder, unreadable
from shoal._coord.errors import ApiError
from shoal._coord.storage import storage_full
from shoal._errors import ShoalError
from shoal._store.blobs import Blobs, BlobStore

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


def size_of(blobs: Blobs, digest: str) -> int | None:
    """The blob's length, or None if it is not stored."""
    return blobs.size(digest) if blobs.exists(digest) else None


def principal(request: Request, who: str) -> str:
    """The blob holder a request of ``who`` (what ``any_auth`` answered: ``"user"`` or a
    node id) stands for: :data:`~shoal._coord.access.USER` only with the user token, so
    a node enrolled under the id ``"user"`` is a node like any other."""
    if who == USER:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        expected: str = request.app.state.user_token
        if scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), expected.encode()
        ):
            return USER
    return node_holder(who)


def readable_file(
    blobs: Blobs, access: BlobAccess, who: str, digest: str, what: str = "blob"
) -> Path | None:
    """The file of a blob that holder ``who`` (:func:`principal`) may read as ``what``
    (``"blob"``: a value, through the blobs route; ``"bundle"``: through the bundles
    route); 400 for a malformed digest, 404 if it is not stored or not readable by
    ``who`` (:mod:`shoal._coord.access`). None: readable, but not a local file (an
    object store's blob): stream it with ``iter_chunks``.
    Blocks: call it in a worker thread."""
    check_digest(digest)
    kind = "bundle" if what == "bundle" else "value"
    if not blobs.exists(digest) or not access.may_read(who, digest, kind):
        raise unreadable(what, digest, who)
    return blobs.path(digest) if isinstance(blobs, BlobStore) else None


BATCH = 4 * 1024 * 1024
# Body bytes read ahead of the writer thread. The server stops reading the socket once
# ~64 KiB wait unread, so without a reader running beside the writer the network would
# idle while each batch is hashed and written; 16 MiB keeps both busy and bounds memory.
AHEAD = 16 * 1024 * 1024
DRAIN_S = 60.0  # after a failed write, how long the rest of an upload is read and dropped


async def put_streamed(blobs: Blobs, digest: str, stream: AsyncIterator[bytes]) -> int:
    """Store an upload as it arrives (never whole in memory); return its length.

    A task on the event loop reads the body into a bounded buffer while the store
    hashes and writes in a worker thread, so receiving and writing overlap.
    """
    check_digest(digest)
    ready: deque[bytes] = deque()
    buffered = 0
    done = False
    discard = False  # the writer failed: read the rest of the body, keep none of it
    changed = asyncio.Event()  # set whenever the reader or the writer made progress

    async def read() -> None:
        nonlocal buffered, done
        try:
            async for chunk in stream:
                while buffered >= AHEAD and not discard:
                    changed.clear()
                    await changed.wait()
                if chunk and not discard:
                    ready.append(chunk)
                    buffered += len(chunk)
                    changed.set()
        finally:
            done = True
            changed.set()

    async def next_batch() -> bytes | None:
        # One crossing from the writer thread per batch, not per ~64 KiB piece: the
        # crossing costs more than the bytes themselves.
        nonlocal buffered
        while not ready and not done:
            changed.clear()
            await changed.wait()
        if not ready:
            return None
        parts: list[bytes] = []
        size = 0
        while ready and size < BATCH:
            parts.append(ready.popleft())
            size += len(parts[-1])
        buffered -= size
        changed.set()
        return b"".join(parts)

    def chunks() -> Iterator[bytes]:
        while (chunk := anyio.from_thread.run(next_batch)) is not None:
            yield chunk

    reader = asyncio.ensure_future(read())
    try:
        try:
            _, length = await run_in_threadpool(blobs.put_stream, chunks(), digest)
        except OSError as e:
            full = storage_full(e, f"blob {digest}")
            if full is None:
                raise
            # Read the rest of the body before answering: a client still sending it
            # would otherwise see a broken connection (and retry) instead of the 507.
            discard = True
            ready.clear()
            changed.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader, DRAIN_S)
            raise full from None
        await reader  # re-raises a failed read (e.g. the client went away)
    except ShoalError as e:
        if e.code == "blob.digest":
            raise ApiError(
                400, e.message, code="blob.mismatch", hint="upload the exact bytes of the digest"
            ) from None
        raise
    finally:
        reader.cancel()
    return length
