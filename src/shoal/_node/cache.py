"""The node's caches: module bundles and large values, by digest, fetched once.

``<state_dir>/cache/bundles/<hex>/`` holds an extracted bundle and
``<state_dir>/cache/blobs/<hex>`` a value's codec bytes. Both are written atomically
(temporary name, then rename), so a present entry is always complete and is never
fetched again. Large values a task produced are uploaded once per digest.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

from shoal._node.client import CoordinatorClient, file_chunks
from shoal._runtime.loader import extract_bundle

log = logging.getLogger("shoal.node")


class _Locks:
    """One lock per digest, so two instances never fetch the same thing at once."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def __call__(self, digest: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(digest, threading.Lock())


class Caches:
    """Bundle and blob caches under ``root``.

    Parameters
    ----------
    root
        ``<state_dir>/cache``.
    client
        Fetches what is missing.
    """

    def __init__(self, root: Path, client: CoordinatorClient) -> None:
        self.bundles = root / "bundles"
        self.blobs = root / "blobs"
        for d in (self.bundles, self.blobs):
            d.mkdir(parents=True, exist_ok=True)
        self._client = client
        self._locks = _Locks()
        self._uploaded: set[str] = set()
        self.fetches = 0  # downloads made (bundles and blobs): tests check "never twice"

    def bundle(self, digest: str) -> Path:
        """The extracted bundle ``digest``, downloaded on first use."""
        folder = self.bundles / digest.removeprefix("sha256:")
        if folder.is_dir():
            return folder
        with self._locks(digest):
            if folder.is_dir():
                return folder
            zip_path = self.bundles / f".{folder.name}.zip"
            self._client.download(f"/v1/bundles/{digest}", zip_path, digest)
            self.fetches += 1
            log.info("fetched bundle %s", digest)
            try:
                return extract_bundle(zip_path.read_bytes(), digest, self.bundles)
            finally:
                zip_path.unlink(missing_ok=True)

    def blob(self, digest: str) -> Path:
        """The cached file of blob ``digest``, downloaded on first use."""
        path = self.blobs / digest.removeprefix("sha256:")
        if path.is_file():
            return path
        with self._locks(digest):
            if not path.is_file():
                self._client.download(f"/v1/blobs/{digest}", path, digest)
                self.fetches += 1
        return path

    def publish(self, path: Path, offset: int, length: int) -> str:
        """Upload a slice of a file as a blob (once per digest); return its digest."""
        sha = hashlib.sha256()
        for chunk in file_chunks(path, offset, length):
            sha.update(chunk)
        digest = "sha256:" + sha.hexdigest()
        if digest not in self._uploaded:
            with self._locks(digest):
                if digest not in self._uploaded:
                    self._client.upload(digest, path, offset, length)
                    self._uploaded.add(digest)
        return digest
