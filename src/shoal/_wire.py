"""Values on the wire: small ones inline, large ones as a slice of a segment file.

A wire value holds codec bytes in one of three shapes (the one definition of each, used
by the task side, the stores, the node agent, the coordinator and the client):

- :class:`InlineWire` ``{"inline": bytes}``: a small value, in the message itself;
- :class:`FileWire` ``{"file": path, "offset": o, "length": n}``: a slice of a file on
  this machine (a segment file, a node's blob cache);
- :class:`BlobWire` ``{"blob": "sha256:...", "length": n}``: a blob stored by content
  digest (``PUT /v1/blobs/{digest}``), between a node agent and the coordinator.

:data:`Wire` is any of them; :data:`NetWire` (inline or blob) is what crosses the
network, as a file path means nothing on another machine.

Large values are appended to a per-process segment file (one per bucket, e.g. per
iteration's results) instead of a file per value: creating a file costs far more than
appending to an open one, and a whole bucket can be dropped at once.
Readers ``pread`` moderate values and memory-map huge ones, so a 1 GB value is never
copied through a channel.

A dropped bucket's segments are recycled (:func:`retire_bucket`): the next bucket
overwrites a file whose pages are already in the page cache, which costs half of
appending to a new one (50 vs 109 us per 400 KB here). Only segments that no reader
ever mapped are recycled, as a mapped view would see the new bytes: huge values go to
their own ``-big`` segments, which are deleted instead.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, final

from shoal._codec import decode, encode_parts

if TYPE_CHECKING:
    from typing_extensions import TypedDict as TypedDict
else:
    try:  # pydantic (the coordinator validates these shapes) needs this one before 3.12
        from typing_extensions import TypedDict
    except ImportError:  # pragma: no cover - a task image with only numpy and msgpack
        from typing import TypedDict

INLINE_MAX = 64 * 1024
# A stream reads ahead in batches of about this many bytes, two batches in flight: the
# next values are read while the caller works on this one, for at most ~3 batches of
# extra memory. Huge values are mapped, not read, so they never fill a batch.
READ_AHEAD_BATCH = 2 * 1024 * 1024
MMAP_MIN = 16 * 1024 * 1024  # below this, one pread beats page-faulting a mapping

BIG = "-big"  # suffix of the buckets that hold values readers map (never recycled)
FREE = "free-"  # prefix of retired segments waiting to be reused


@final
class InlineWire(TypedDict):
    """A small value: its codec bytes."""

    inline: bytes


@final
class FileWire(TypedDict):
    """``length`` codec bytes at ``offset`` in the file ``file`` (on this machine)."""

    file: str
    offset: int
    length: int


@final
class BlobWire(TypedDict):
    """A value stored as a blob of ``length`` bytes under its ``sha256:<hex>`` digest."""

    blob: str
    length: int


Wire = InlineWire | FileWire | BlobWire
NetWire = InlineWire | BlobWire
Buffer = bytes | memoryview


class Outbox:
    """Appends large encoded values to segment files named ``{prefix}-{bucket}.seg``.

    Parameters
    ----------
    folder
        Where segments are written (the store's blob folder in the simulator).
    prefix
        Unique per writing process.
    max_open
        Segments kept open; older buckets are closed (their files stay).
    """

    def __init__(self, folder: Path, prefix: str, max_open: int = 4) -> None:
        self.folder = folder
        self.prefix = prefix
        self._max_open = max_open
        self._open: dict[str, tuple[int, str]] = {}
        # Where each bucket's next value goes. A recycled segment may be longer than
        # what this outbox wrote, so its end is not the file's size.
        self._ends: dict[str, int] = {}

    def _segment(self, bucket: str) -> tuple[int, str]:
        entry = self._open.get(bucket)
        if entry is not None:
            return entry
        path = self.folder / f"{self.prefix}-{bucket}.seg"
        if bucket not in self._ends and not bucket.endswith(BIG):
            _claim_free(self.folder, path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        entry = self._open[bucket] = (fd, str(path))
        self._ends.setdefault(bucket, 0)
        while len(self._open) > self._max_open:
            os.close(self._open.pop(next(iter(self._open)))[0])
        return entry

    def write(self, parts: list[bytes | memoryview], bucket: str) -> FileWire:
        """Write ``parts`` (one value) after the bucket's last value; return its wire
        reference."""
        views = [memoryview(p).cast("B") for p in parts]
        length = sum(v.nbytes for v in views)
        if length >= MMAP_MIN:
            bucket += BIG
        fd, path = self._segment(bucket)
        offset = at = self._ends[bucket]
        while views:  # pwritev may write less than asked
            n = os.pwritev(fd, views, at)
            at += n
            while views and n >= views[0].nbytes:
                n -= views.pop(0).nbytes
            if views and n:
                views[0] = views[0][n:]
        self._ends[bucket] = at
        return {"file": path, "offset": offset, "length": length}

    def close(self) -> None:
        """Close every open segment."""
        for fd, _ in self._open.values():
            os.close(fd)
        self._open.clear()


def _claim_free(folder: Path, path: Path) -> None:
    """Rename a retired segment to ``path`` if there is one (the rename is atomic, so
    two writers never claim the same file)."""
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(FREE):
                with contextlib.suppress(FileNotFoundError):  # another writer claimed it
                    os.rename(entry.path, path)
                    return


def retire_bucket(folder: Path, bucket: str) -> list[Path]:
    """Retire every segment of ``bucket`` in ``folder``: the ones no reader mapped are
    kept for reuse; the others are returned, for the caller to delete."""
    with os.scandir(folder) as entries:
        names = [e.name for e in entries if not e.name.startswith(FREE)]
    doomed = []
    for name in names:
        if name.endswith(f"-{bucket}.seg"):
            with contextlib.suppress(FileNotFoundError):
                os.rename(folder / name, folder / f"{FREE}{name}")
        elif name.endswith(f"-{bucket}{BIG}.seg"):
            doomed.append(folder / name)
    return doomed


def free_segments(folder: Path) -> list[Path]:
    """The retired segments waiting in ``folder`` (for deleting at the end of a run)."""
    with os.scandir(folder) as entries:
        return [Path(e.path) for e in entries if e.name.startswith(FREE)]


def to_wire(value: Any, outbox: Outbox | None, bucket: str = "values") -> Wire:
    """Encode ``value``; append it to ``outbox`` when it is large (written straight from
    the value's arrays, never joined into one large ``bytes`` first)."""
    parts = encode_parts(value)
    size = sum(memoryview(p).nbytes for p in parts)
    if outbox is None or size <= INLINE_MAX:
        first = parts[0]
        if len(parts) == 1 and isinstance(first, bytes):
            return {"inline": first}
        return {"inline": b"".join(parts)}
    return outbox.write(parts, bucket)


class SegmentReader:
    """Reads wire values, keeping each segment file open until :meth:`close`: a stream
    of 1000 results held in two segments opens two files, not 1000.

    Use it for one pass over values that stay stored meanwhile (a stream, a select):
    an open file is only valid while its segment is not retired.
    """

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}

    def buffer(self, wire: Wire) -> Buffer:
        """The encoded bytes of a wire value (a memory map slice for a huge one)."""
        if "inline" in wire:
            data: bytes = wire["inline"]
            return data
        if "blob" in wire:
            raise ValueError(
                f"blob {wire['blob']} is not on this machine: fetch it into a file first"
            )
        offset, length, path = int(wire["offset"]), int(wire["length"]), wire["file"]
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = os.open(path, os.O_RDONLY)
        if length < MMAP_MIN:
            data = os.pread(fd, length, offset)
            if len(data) != length:
                raise OSError(f"{path} is shorter than the value it should hold")
            return data
        mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        return memoryview(mapped)[offset : offset + length]

    def value(self, wire: Wire) -> Any:
        """Decode a wire value; arrays are zero-copy views of the buffer read."""
        return decode(self.buffer(wire))

    def values(self, wires: list[Wire]) -> Iterator[Any]:
        """Decode ``wires`` in order, reading ahead in a helper thread.

        Reading a 400 KB value from the page cache costs about as much as a mean over
        it, so while the caller works on one value the thread reads the next ones: a
        streaming aggregation then runs on two cores, not one.
        """
        batches = _batches(wires)
        if len(batches) < 3:  # too few to be worth a thread
            for wire in wires:
                yield self.value(wire)
            return
        with ThreadPoolExecutor(1, thread_name_prefix="shoal-read-ahead") as pool:
            ahead: deque[Future[list[Buffer]]] = deque()
            for batch in batches:
                ahead.append(pool.submit(self._read, batch))
                if len(ahead) > 2:
                    for buf in ahead.popleft().result():
                        yield decode(buf)
            while ahead:
                for buf in ahead.popleft().result():
                    yield decode(buf)

    def _read(self, batch: list[Wire]) -> list[Buffer]:
        return [self.buffer(wire) for wire in batch]

    def close(self) -> None:
        """Close every file opened."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> SegmentReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _batches(wires: list[Wire]) -> list[list[Wire]]:
    """Consecutive runs of ``wires`` of about READ_AHEAD_BATCH bytes each."""
    batches: list[list[Wire]] = [[]]
    size = 0
    for wire in wires:
        if size >= READ_AHEAD_BATCH:
            batches.append([])
            size = 0
        batches[-1].append(wire)
        length = 0 if "inline" in wire else int(wire["length"])
        size += length if length < MMAP_MIN else 0
    return batches if wires else []


def wire_buffer(wire: Wire) -> Buffer:
    """The encoded bytes of a wire value (a memory map slice for a huge one)."""
    with SegmentReader() as reader:
        return reader.buffer(wire)


def from_wire(wire: Wire) -> Any:
    """Decode a wire value; arrays are zero-copy views of the buffer read."""
    return decode(wire_buffer(wire))
