"""Large result values of a SQLite store, kept in files beside the database.

A node sends values up to 1 MiB inline, and the coordinator stores each result's value
in its row. In SQLite a 400 KB value is a chain of 100 overflow pages, written one WAL
frame (and one ``write``) at a time, read back by walking the chain, all under the one
writer lock every report of the round waits on. A value of 64 KiB or more (packed) is
written to its own file instead, and the row keeps a short reference: one ``write``
and an ``fsync`` outside the lock (bench/README.md has the A/B figures).

Files live in ``<database>-values/results/<swarm>/<iteration>/``, one per stored
result under a fresh random name, so a replaced or dropped result's file is deleted
without asking whether another row shares it. Each file is fsynced, and its folder,
before the row that names it commits: a row that survives a power cut names a file that
survived it too (SQLite's WAL with ``synchronous=NORMAL`` gives no ordering between
files to lean on). A failed transaction deletes the file it wrote; a crash between the
file and the commit leaves a file that no row names, deleted with its iteration's
results.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

from shoal._errors import ShoalError
from shoal._store.blobs import fsync_dir, write_all

#: A stored value's first byte when it names a file: msgpack never begins a value with
#: 0xc1 (the format's one unused byte), so a packed value cannot be taken for a name.
MARK = b"\xc1"
#: Packed values of at least this many bytes go to a file (the codec's inline limit).
SPILL_MIN = 64 * 1024


class ValueFiles:
    """The files of a SQLite store's large result values.

    Parameters
    ----------
    folder
        Where they live (``<database file>-values``); made when first needed.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def write(self, swarm_id: str, iteration: int, data: bytes) -> bytes:
        """Write ``data`` to a new file of the swarm's iteration, durably; return the
        reference to store in its row."""
        folder = self._iteration(swarm_id, iteration)
        name = uuid.uuid4().hex
        made = not folder.is_dir()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = folder / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb", buffering=0) as out:
                write_all(out, data)
                os.fsync(out.fileno())
            os.replace(tmp, folder / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(folder)
        if made:  # the new folders' own entries
            fsync_dir(folder.parent)
            fsync_dir(folder.parent.parent)
        return MARK + f"{folder.parent.name}/{iteration}/{name}".encode()

    def read(self, ref: bytes) -> bytes:
        """The bytes a reference names.

        Raises
        ------
        ShoalError
            ``store.value_missing`` if its file is gone.
        """
        path = self._path(ref)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ShoalError(
                f"the stored value file {path} is missing: the database names it, so the "
                "folder beside the database was changed or not restored with it",
                code="store.value_missing",
                hint=f"restore {self.folder} together with the database file; they are one backup",
            ) from None

    def remove(self, ref: bytes) -> None:
        """Delete the file a reference names (gone already: nothing to do)."""
        self._path(ref).unlink(missing_ok=True)

    def remove_iteration(self, swarm_id: str, iteration: int) -> None:
        """Delete every file of a swarm's iteration."""
        shutil.rmtree(self._iteration(swarm_id, iteration), ignore_errors=True)

    def _iteration(self, swarm_id: str, iteration: int) -> Path:
        # Any string may be a swarm id for the store: its digest is a safe folder name.
        swarm = hashlib.sha256(swarm_id.encode()).hexdigest()[:32]
        return self.folder / "results" / swarm / str(iteration)

    def _path(self, ref: bytes) -> Path:
        swarm, iteration, name = ref[len(MARK) :].decode().split("/")
        if not (swarm.isalnum() and iteration.lstrip("-").isdigit() and name.isalnum()):
            raise ShoalError(f"{ref!r} is not a stored value's reference", code="store.value_ref")
        return self.folder / "results" / swarm / iteration / name


def is_ref(data: bytes) -> bool:
    """Whether a stored value is a reference to a file."""
    return data[:1] == MARK
