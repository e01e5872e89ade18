"""Content-addressed blobs in S3-compatible object storage (optional extra ``s3``).

The same contract as the disk :class:`~shoal._store.blobs.BlobStore`: a blob is named
by the sha256 of its bytes and lives at ``prefix/<first 2 hex>/<other 62>`` in a
bucket. Uploads stream as a multipart upload into a temporary key under
``prefix/tmp/``, are verified against the digest, then copied into place and the
temporary key deleted, so a reader never sees a partial or unverified blob. Downloads
stream the object body. Neither holds a whole blob in memory.

Endpoint, region and credentials come from boto3's usual sources (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``~/.aws/config`` ...); they are never logged or kept here.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO, cast
from urllib.parse import urlparse

from shoal._errors import ShoalError
from shoal._store.blobs import CHUNK, _hex

__all__ = ["PART", "S3BlobStore"]

# S3's multipart minimum is 5 MiB per part (except the last); 8 MiB keeps the part
# count under S3's 10,000 limit up to ~80 GB, and the copy step below goes further.
PART = 8 << 20
# CopyObject is limited to 5 GB; larger blobs are copied part by part.
_COPY_MAX = 5 << 30


def _client() -> Any:
    try:
        import boto3  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - depends on the install
        raise ShoalError(
            "S3 blobs need boto3",
            code="blob.backend",
            hint="pip install 'shoal[s3]'",
        ) from None
    return boto3.client("s3")


class S3BlobStore:
    """Blobs in an S3 bucket under a key prefix, named by content digest.

    Parameters
    ----------
    url
        ``s3://bucket`` or ``s3://bucket/prefix``.
    client
        A boto3 S3 client (default: one from the environment's AWS settings).
    """

    def __init__(self, url: str, client: Any | None = None) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ShoalError(
                f"{url!r} is not an S3 blob location",
                code="blob.invalid",
                hint="name it s3://bucket or s3://bucket/prefix",
            )
        self.url = url
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self._s3 = client if client is not None else _client()

    def _key(self, digest: str) -> str:
        h = _hex(digest)
        return self._join(f"{h[:2]}/{h[2:]}")

    def _join(self, rest: str) -> str:
        return f"{self.prefix}/{rest}" if self.prefix else rest

    def put_stream(
        self, chunks: Iterable[bytes | bytearray | memoryview], expected: str | None = None
    ) -> tuple[str, int]:
        """Store the concatenation of ``chunks`` (see the disk store's method)."""
        if expected is not None:
            _hex(expected)
        tmp = self._join(f"tmp/put-{uuid.uuid4().hex}")
        upload = self._s3.create_multipart_upload(Bucket=self.bucket, Key=tmp)["UploadId"]
        hasher = hashlib.sha256()
        length = 0
        parts: list[dict[str, Any]] = []
        buf = bytearray()
        try:

            def flush() -> None:
                n = len(parts) + 1
                got = self._s3.upload_part(
                    Bucket=self.bucket, Key=tmp, UploadId=upload, PartNumber=n, Body=bytes(buf)
                )
                parts.append({"PartNumber": n, "ETag": got["ETag"]})
                buf.clear()

            for chunk in chunks:
                hasher.update(chunk)
                length += len(memoryview(chunk).cast("B"))
                buf += chunk
                if len(buf) >= PART:
                    flush()
            if buf or not parts:
                flush()  # an empty blob is one empty part
            self._s3.complete_multipart_upload(
                Bucket=self.bucket, Key=tmp, UploadId=upload, MultipartUpload={"Parts": parts}
            )
            upload = ""
            digest = "sha256:" + hasher.hexdigest()
            if expected is not None and digest != expected:
                raise ShoalError(
                    f"the uploaded bytes have digest {digest}, not {expected}",
                    code="blob.digest",
                    hint="upload the blob again; it was damaged or named wrongly",
                )
            if not self.exists(digest):  # an existing copy has the same bytes
                self._publish(tmp, self._key(digest), length)
        finally:
            if upload:
                self._s3.abort_multipart_upload(Bucket=self.bucket, Key=tmp, UploadId=upload)
            else:
                self._s3.delete_object(Bucket=self.bucket, Key=tmp)
        return digest, length

    def _publish(self, src: str, dst: str, length: int) -> None:
        # Server-side copy: the bytes do not come back through this process.
        source = {"Bucket": self.bucket, "Key": src}
        if length <= _COPY_MAX:
            self._s3.copy_object(Bucket=self.bucket, Key=dst, CopySource=source)
            return
        upload = self._s3.create_multipart_upload(Bucket=self.bucket, Key=dst)["UploadId"]
        try:
            parts = []
            for n, start in enumerate(range(0, length, _COPY_MAX), 1):
                end = min(start + _COPY_MAX, length) - 1
                got = self._s3.upload_part_copy(
                    Bucket=self.bucket,
                    Key=dst,
                    UploadId=upload,
                    PartNumber=n,
                    CopySource=source,
                    CopySourceRange=f"bytes={start}-{end}",
                )
                parts.append({"PartNumber": n, "ETag": got["CopyPartResult"]["ETag"]})
            self._s3.complete_multipart_upload(
                Bucket=self.bucket, Key=dst, UploadId=upload, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            self._s3.abort_multipart_upload(Bucket=self.bucket, Key=dst, UploadId=upload)
            raise

    def put_bytes(self, data: bytes) -> str:
        """Store ``data``; returns its digest."""
        view = memoryview(data)
        return self.put_stream(view[i : i + CHUNK] for i in range(0, len(view), CHUNK))[0]

    def _head(self, digest: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError  # type: ignore[import-untyped]

        try:
            head: dict[str, Any] = self._s3.head_object(Bucket=self.bucket, Key=self._key(digest))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return head

    def exists(self, digest: str) -> bool:
        """Whether the blob is stored (False for a malformed digest)."""
        try:
            return self._head(digest) is not None
        except ShoalError:
            return False

    def size(self, digest: str) -> int:
        """The blob's length in bytes (``blob.missing`` if not stored)."""
        head = self._head(digest)
        if head is None:
            raise _missing(digest)
        return int(head["ContentLength"])

    def open(self, digest: str, start: int = 0) -> BinaryIO:
        """The blob (from byte ``start``) as a streamed, readable file (close it)."""
        from botocore.exceptions import ClientError

        extra = {"Range": f"bytes={start}-"} if start else {}
        try:
            got = self._s3.get_object(Bucket=self.bucket, Key=self._key(digest), **extra)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise _missing(digest) from None
            raise
        # A buffered reader: read(n) answers n bytes (short only at the end).
        return cast(BinaryIO, io.BufferedReader(_Body(got["Body"]), CHUNK))

    def iter_chunks(self, digest: str, chunk: int = CHUNK) -> Iterator[bytes]:
        """The blob's bytes in pieces of at most ``chunk`` bytes (a missing blob raises
        here, not at the first read)."""
        if chunk <= 0:
            raise ShoalError(f"chunk size {chunk} is not positive", code="blob.invalid")
        body = self.open(digest)
        return _chunks(body, chunk)


def _chunks(body: BinaryIO, chunk: int) -> Iterator[bytes]:
    with body:
        while piece := body.read(chunk):
            yield piece


def _missing(digest: str) -> ShoalError:
    return ShoalError(
        f"no blob {digest}",
        code="blob.missing",
        hint="upload it first (PUT /v1/blobs/{digest})",
    )


class _Body(io.RawIOBase):
    """botocore's StreamingBody as a file object (``with``, ``read``)."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data: bytes = self._body.read(None if size is None or size < 0 else size)
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()
