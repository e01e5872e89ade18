"""Content-addressed blobs on local disk.

A blob is named by the sha256 of its bytes, ``"sha256:<64 hex digits>"``, and lives at
``folder/<first 2 hex digits>/<other 62>``. Writes stream into a temporary file in
``folder/tmp`` and are renamed into place once complete and verified, so a reader never
sees a partial blob and a failed write leaves nothing behind. No method holds a whole
blob in memory. Folders are 0700 and blob files 0600: private to the service's user.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Protocol

from shoal._errors import ShoalError

__all__ = ["CHUNK", "BlobStore", "Blobs", "digest_of", "open_blobs", "write_hashed"]

CHUNK = 1 << 20  # 1 MiB
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")


def digest_of(data: bytes) -> str:
    """The blob name of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _hex(digest: str) -> str:
    found = _DIGEST.fullmatch(digest) if isinstance(digest, str) else None
    if found is None:
        raise ShoalError(
            f"{digest!r} is not a blob digest",
            code="blob.invalid",
            hint='a digest is "sha256:" followed by 64 lowercase hex digits',
        )
    return found.group(1)


class BlobStore:
    """Blobs in a folder, named by content digest.

    Parameters
    ----------
    folder
        Where blobs are kept (created if missing). Temporary files go to
        ``folder/tmp``, on the same file system, so that publishing a blob is one
        atomic rename.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._tmp = self.folder / "tmp"
        # Private to the service's user: folders 0700 (also ones an older version made
        # 0755), blob files 0600.
        for d in (self.folder, self._tmp):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            d.chmod(0o700)

    def _file(self, digest: str) -> Path:
        h = _hex(digest)
        return self.folder / h[:2] / h[2:]

    def put_stream(
        self, chunks: Iterable[bytes | bytearray | memoryview], expected: str | None = None
    ) -> tuple[str, int]:
        """Store the concatenation of ``chunks``.

        Parameters
        ----------
        chunks
            The blob's bytes, in pieces of any size (bytes, bytearray or memoryview).
        expected
            The digest the bytes must have, if known.

        Returns
        -------
        tuple[str, int]
            The blob's digest and length.

        Raises
        ------
        ShoalError
            ``blob.digest`` if the bytes do not match ``expected`` (nothing is stored),
            ``blob.invalid`` if ``expected`` is not a digest.
        """
        if expected is not None:
            _hex(expected)
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="put-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb", buffering=0) as out:
                digest, length = write_hashed(chunks, out)
                os.fsync(out.fileno())
            if expected is not None and digest != expected:
                raise ShoalError(
                    f"the uploaded bytes have digest {digest}, not {expected}",
                    code="blob.digest",
                    hint="upload the blob again; it was damaged or named wrongly",
                )
            final = self._file(digest)
            final.parent.mkdir(exist_ok=True, mode=0o700)
            os.chmod(tmp, 0o600)
            os.replace(tmp, final)  # atomic; an existing copy has the same bytes
            fsync_dir(final.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return digest, length

    def put_bytes(self, data: bytes) -> str:
        """Store ``data``; returns its digest."""
        view = memoryview(data)
        return self.put_stream(view[i : i + CHUNK] for i in range(0, len(view), CHUNK))[0]

    def exists(self, digest: str) -> bool:
        """Whether the blob is stored (False for a malformed digest)."""
        try:
            return self._file(digest).is_file()
        except ShoalError:
            return False

    def path(self, digest: str) -> Path:
        """The file holding the blob (read it, never write it).

        Raises
        ------
        ShoalError
            ``blob.missing`` if the blob is not stored, ``blob.invalid`` if the digest
            is malformed.
        """
        found = self._file(digest)
        if not found.is_file():
            raise ShoalError(
                f"no blob {digest}",
                code="blob.missing",
                hint="upload it first (PUT /v1/blobs/{digest})",
            )
        return found

    def size(self, digest: str) -> int:
        """The blob's length in bytes."""
        return self.path(digest).stat().st_size

    def open(self, digest: str) -> BinaryIO:
        """The blob opened for reading (close it, e.g. with ``with``)."""
        path = self.path(digest)
        try:
            return path.open("rb")
        except FileNotFoundError:
            raise ShoalError(f"no blob {digest}", code="blob.missing") from None

    def iter_chunks(self, digest: str, chunk: int = CHUNK) -> Iterator[bytes]:
        """The blob's bytes in pieces of at most ``chunk`` bytes.

        A missing blob raises here, not at the first read; the file is opened at the
        first read and closed when the iterator is exhausted or closed.
        """
        if chunk <= 0:
            raise ShoalError(f"chunk size {chunk} is not positive", code="blob.invalid")
        return _chunks(self.path(digest), chunk)


def _chunks(path: Path, chunk: int) -> Iterator[bytes]:
    with path.open("rb") as f:
        while piece := f.read(chunk):
            yield piece


def write_hashed(
    chunks: Iterable[bytes | bytearray | memoryview], out: BinaryIO
) -> tuple[str, int]:
    """Write ``chunks`` to ``out`` (opened unbuffered) and return their digest and length.

    Hashing and writing both release the GIL: each chunk is hashed in a second thread
    while this one writes it, so the cost is the slower of the two, not their sum. A
    chunk is done with before the next is asked for, so a producer may reuse its buffer.
    """
    hasher = hashlib.sha256()
    length = 0
    with ThreadPoolExecutor(1, thread_name_prefix="shoal-hash") as pool:
        for chunk in chunks:
            hashed = pool.submit(hasher.update, chunk)
            try:
                length += write_all(out, chunk)
            finally:
                hashed.result()
    return "sha256:" + hasher.hexdigest(), length


def write_all(out: BinaryIO, chunk: bytes | bytearray | memoryview) -> int:
    """Write all of ``chunk`` (an unbuffered file may write less than asked)."""
    view = memoryview(chunk).cast("B")
    done = 0
    while done < len(view):
        done += out.write(view[done:]) or 0
    return done


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in ``folder`` durable (not possible everywhere)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Blobs(Protocol):
    """What every blob backend offers (the disk :class:`BlobStore`, the S3 store)."""

    def put_stream(
        self, chunks: Iterable[bytes | bytearray | memoryview], expected: str | None = None
    ) -> tuple[str, int]: ...

    def put_bytes(self, data: bytes) -> str: ...

    def exists(self, digest: str) -> bool: ...

    def size(self, digest: str) -> int: ...

    def open(self, digest: str) -> BinaryIO: ...

    def iter_chunks(self, digest: str, chunk: int = CHUNK) -> Iterator[bytes]: ...


def open_blobs(location: str | os.PathLike[str]) -> Blobs:
    """The blob store at ``location``: ``s3://bucket[/prefix]`` (object storage, the
    ``s3`` extra; endpoint and credentials from the usual AWS settings) or a folder.

    Raises
    ------
    ShoalError
        ``blob.invalid`` for a URL scheme other than ``s3``; ``blob.backend`` if the
        ``s3`` extra is not installed.
    """
    text = os.fspath(location)
    scheme = text.split("://", 1)[0] if "://" in text else ""
    if scheme == "s3":
        from shoal._store.s3blobs import S3BlobStore  # boto3 only when asked for

        return S3BlobStore(text)
    if scheme and scheme != "file":
        raise ShoalError(
            f"blob store {text!r} has an unknown scheme {scheme!r}",
            code="blob.invalid",
            hint="give a folder or s3://bucket/prefix",
        )
    return BlobStore(text.removeprefix("file://"))
