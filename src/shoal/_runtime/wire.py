"""Values on the wire: small ones inline, large ones as a file that is memory-mapped.

A wire value is ``{"inline": bytes}`` or ``{"file": path}``; both hold codec bytes.
Files let a 1 GB result move between processes without a copy in any channel.
"""

from __future__ import annotations

import mmap
import os
import uuid
from pathlib import Path
from typing import Any

from shoal._codec import decode, encode

INLINE_MAX = 64 * 1024

Wire = dict[str, Any]


def to_wire(value: Any, outbox: Path | None) -> Wire:
    """Encode ``value``; spill it to a file in ``outbox`` when it is large."""
    data = encode(value)
    if outbox is None or len(data) <= INLINE_MAX:
        return {"inline": data}
    path = outbox / f"{uuid.uuid4().hex}.val"
    with open(path, "wb") as f:
        f.write(data)
    return {"file": str(path)}


Buffer = bytes | memoryview


def wire_buffer(wire: Wire) -> Buffer:
    """The encoded bytes of a wire value (a memory map for a file value)."""
    if "inline" in wire:
        data: bytes = wire["inline"]
        return data
    return map_file(wire["file"])


def from_wire(wire: Wire) -> Any:
    """Decode a wire value; arrays in a file value are zero-copy views of a memory map."""
    return decode(wire_buffer(wire))


def map_file(path: str | os.PathLike[str]) -> memoryview:
    """Map a file read-only (an empty file maps to an empty view)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return memoryview(b"")
        return memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))


def wire_size(wire: Wire) -> int:
    """Bytes of the encoded value."""
    if "inline" in wire:
        return len(wire["inline"])
    return os.path.getsize(wire["file"])
