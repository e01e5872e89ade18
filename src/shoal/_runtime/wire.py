"""Values on the wire: small ones inline, large ones as a slice of a segment file.

A wire value is ``{"inline": bytes}`` or ``{"file": path, "offset": o, "length": n}``;
both hold codec bytes. Large values are appended to a per-process segment file (one per
bucket, e.g. per iteration's results) instead of a file per value: creating a file costs
far more than appending to an open one, and a whole bucket can be dropped at once.
Readers ``pread`` moderate values and memory-map huge ones, so a 1 GB value is never
copied through a channel.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Any

from shoal._codec import decode, encode_parts

INLINE_MAX = 64 * 1024
MMAP_MIN = 16 * 1024 * 1024  # below this, one pread beats page-faulting a mapping

Wire = dict[str, Any]
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
        self._open: dict[str, tuple[int, Path]] = {}

    def write(self, parts: list[bytes | memoryview], bucket: str) -> Wire:
        """Append ``parts`` (one value) to the bucket's segment; return its wire reference."""
        entry = self._open.get(bucket)
        if entry is None:
            path = self.folder / f"{self.prefix}-{bucket}.seg"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            entry = (fd, path)
            self._open[bucket] = entry
            while len(self._open) > self._max_open:
                old = next(iter(self._open))
                os.close(self._open.pop(old)[0])
        fd, path = entry
        offset = os.lseek(fd, 0, os.SEEK_END)
        views = [memoryview(p).cast("B") for p in parts]
        length = sum(v.nbytes for v in views)
        while views:  # writev may write less than asked
            n = os.writev(fd, views)
            while views and n >= views[0].nbytes:
                n -= views.pop(0).nbytes
            if views and n:
                views[0] = views[0][n:]
        return {"file": str(path), "offset": offset, "length": length}

    def close(self) -> None:
        """Close every open segment."""
        for fd, _ in self._open.values():
            os.close(fd)
        self._open.clear()


def to_wire(value: Any, outbox: Outbox | None, bucket: str = "values") -> Wire:
    """Encode ``value``; append it to ``outbox`` when it is large (written straight from
    the value's arrays, never joined into one large ``bytes`` first)."""
    parts = encode_parts(value)
    size = sum(memoryview(p).nbytes for p in parts)
    if outbox is None or size <= INLINE_MAX:
        return {"inline": parts[0] if len(parts) == 1 else b"".join(parts)}
    return outbox.write(parts, bucket)


def wire_buffer(wire: Wire) -> Buffer:
    """The encoded bytes of a wire value (a memory map slice for a huge one)."""
    if "inline" in wire:
        data: bytes = wire["inline"]
        return data
    offset, length = int(wire["offset"]), int(wire["length"])
    fd = os.open(wire["file"], os.O_RDONLY)
    try:
        if length < MMAP_MIN:
            data = os.pread(fd, length, offset)
            if len(data) != length:
                raise OSError(f"{wire['file']} is shorter than the value it should hold")
            return data
        mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        return memoryview(mapped)[offset : offset + length]
    finally:
        os.close(fd)


def from_wire(wire: Wire) -> Any:
    """Decode a wire value; arrays are zero-copy views of the buffer read."""
    return decode(wire_buffer(wire))
