"""The node's caches: module bundles and large values, by digest, fetched once.

``<state_dir>/cache/bundles/<hex>/`` holds an extracted bundle and
``<state_dir>/cache/blobs/<hex>`` a value's codec bytes. Both are written atomically
(temporary name, then rename), so a present entry is always complete and is never
fetched again. Large values a task produced are uploaded once per digest.

A task never sees the blob cache itself, which holds the values of every swarm the node
serves: each instance gets a folder of its own (its *view*, bound read-only into its
sandbox), and every value a world call returns it is hard-linked there (:meth:`view`):
the same file, no copy, so a large value is still mapped, not read. The cache folders
are private to the agent's user (0700; cached values 0600, unless the executor runs
tasks as another user, see ``Caches(shared=True)``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
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
    shared
        Leave cached values readable by other users (0644): an executor that runs tasks
        as another user (an OCI container as ``nobody``) must read them. The folders stay
        0700, so other users of the machine still cannot reach them.
    """

    def __init__(self, root: Path, client: CoordinatorClient, shared: bool = False) -> None:
        self.bundles = root / "bundles"
        self.blobs = root / "blobs"
        for d in (root, self.bundles, self.blobs):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            d.chmod(0o700)  # also when an older agent made it 0755
        self._client = client
        self._locks = _Locks()
        self._uploaded: set[str] = set()
        self._mode = 0o644 if shared else 0o600
        self._copied = False  # warned that views fall back to copies
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
                path.chmod(self._mode)
                self.fetches += 1
        return path

    def view(self, digest: str, folder: Path) -> Path:
        """Blob ``digest`` in an instance's view ``folder``, downloaded on first use.

        The view holds a hard link to the cached file (the same bytes, no copy). Where
        a link is impossible (the view on another file system, links refused) it holds a
        copy, and the agent says so once.
        """
        cached = self.blob(digest)
        seen = folder / cached.name
        if seen.is_file():
            return seen
        try:
            os.link(cached, seen)
        except FileExistsError:
            pass
        except OSError as e:
            if not self._copied:
                self._copied = True
                log.warning("cannot hard-link cached values into task views (%s): copying", e)
            tmp = folder / f".{cached.name}.tmp"
            shutil.copyfile(cached, tmp)
            os.replace(tmp, seen)
        return seen

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
