"""The codec's wire format: extension codes, the frame around out-of-band buffers, dtypes.

A value without array-like payloads encodes as one plain msgpack value. A value holding
arrays, tensors or tables encodes as a *frame*::

    0xC1 | version (1 byte) | body length (uint64 LE) | body | pad | buffer | pad | buffer ...

``0xC1`` is the one byte msgpack never uses, so a frame can't be mistaken for plain
msgpack. The body is msgpack; the raw bytes of each array live after it, each starting
at a multiple of ``ALIGN`` bytes from the start of the data section, and the body
refers to them with a ``BUFFER`` extension (offset, length). Keeping the bytes out of
the msgpack body is what makes decoding zero-copy: msgpack hands every extension
payload to Python as a fresh ``bytes`` copy, but a buffer reference only costs a
``memoryview`` slice of the caller's input.

Containers and array-likes are encoded as one-entry maps whose key is an empty
extension of a *marker* code and whose value is ordinary msgpack, e.g. a tuple is
``{ext(TUPLE): [items...]}``. That keeps the whole value in one msgpack pass (no nested
``packb`` per tuple) and lets the decoder rebuild them in ``object_hook``.
"""

from __future__ import annotations

import re
import struct
from typing import Any, Final

import numpy as np

from shoal._errors import CodecError

# Leaf extensions: the payload is the whole value.
BIGINT: Final = 1  # int outside msgpack's 64-bit range: signed big-endian two's complement
COMPLEX: Final = 2  # complex: two little-endian float64
BUFFER: Final = 3  # reference to an out-of-band buffer: uint64 LE offset, uint64 LE length

# Marker extensions: an empty payload used as the single key of a map.
TUPLE: Final = 16  # [items]
SET: Final = 17  # [items]
FROZENSET: Final = 18  # [items]
NDARRAY: Final = 32  # [dtype.str, shape, BUFFER]
NPSCALAR: Final = 33  # [dtype.str, raw bytes]
TENSOR: Final = 34  # [torch dtype name, NDARRAY]
DATAFRAME: Final = 48  # [column labels, column level names, BUFFER with an Arrow IPC stream]
SERIES: Final = 49  # [name, BUFFER with an Arrow IPC stream of one column]
ARROW_TABLE: Final = 50  # [BUFFER with an Arrow IPC stream]

MARKERS: Final = frozenset(
    {TUPLE, SET, FROZENSET, NDARRAY, NPSCALAR, TENSOR, DATAFRAME, SERIES, ARROW_TABLE}
)

MAGIC: Final = 0xC1
VERSION: Final = 1
HEAD: Final = struct.Struct("<BBQ")
REF: Final = struct.Struct("<QQ")
COMPLEX_PAIR: Final = struct.Struct("<dd")
# 64 bytes: cache-line and SIMD friendly; every dtype's alignment divides it.
ALIGN: Final = 64

SUPPORTED: Final = (
    "None, bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset, "
    "numpy arrays and scalars (numeric, bool, datetime, fixed-width str/bytes dtypes), "
    "torch tensors, pandas DataFrame and Series, pyarrow Table"
)

# Kinds whose bytes are the whole value: bool, ints, floats, complex, datetime, str, bytes.
DTYPE_KINDS: Final = frozenset("biufcmMSU")
# What ``dtype.str`` looks like for those kinds, e.g. '<f4', '|b1', '<U7', '<M8[ns]'.
_DTYPE_STR = re.compile(r"[<>|][biufcmMSU][0-9]{1,10}(\[[0-9]{0,10}[a-zA-Z]{1,2}\])?")


def align(n: int) -> int:
    """Round ``n`` up to the next multiple of ``ALIGN``."""
    return -(-n // ALIGN) * ALIGN


def malformed(what: str) -> CodecError:
    """Build the error raised for bytes that are not a valid encoded value."""
    return CodecError(
        f"cannot decode: {what}",
        code="codec.malformed",
        hint="the bytes were truncated or corrupted, or were not written by shoal's codec",
    )


def parse_dtype(text: object) -> np.dtype[Any]:
    """Turn a ``dtype.str`` read from the wire back into a dtype, strictly.

    Parameters
    ----------
    text
        The decoded header field.

    Returns
    -------
    numpy.dtype
        A dtype of one of the kinds in ``DTYPE_KINDS``.

    Raises
    ------
    CodecError
        If ``text`` is not the canonical ``dtype.str`` of a supported dtype (so object
        and structured dtypes, and anything numpy would parse with a warning, are refused).
    """
    if not isinstance(text, str) or _DTYPE_STR.fullmatch(text) is None:
        raise malformed(f"bad dtype {text!r}")
    try:
        dtype = np.dtype(text)
    except (TypeError, ValueError, OverflowError) as exc:
        raise malformed(f"bad dtype {text!r}") from exc
    if dtype.str != text or dtype.kind not in DTYPE_KINDS:
        raise malformed(f"bad dtype {text!r}")
    return dtype


def frame(body: bytes, buffers: list[tuple[int, memoryview]]) -> bytes:
    """Join a msgpack body and its out-of-band buffers into one frame (one copy)."""
    return b"".join(frame_parts(body, buffers))


def frame_parts(body: bytes, buffers: list[tuple[int, memoryview]]) -> list[bytes | memoryview]:
    """The pieces of a frame, in order, without joining them (for ``os.writev``).

    Parameters
    ----------
    body
        The msgpack body.
    buffers
        ``(offset, bytes)`` pairs, offsets relative to the data section, increasing and
        ``ALIGN``-aligned, as handed out while the body was packed.

    Returns
    -------
    list
        Header, body, padding and each buffer (as a view of the caller's array).
    """
    head = HEAD.pack(MAGIC, VERSION, len(body))
    start = align(len(head) + len(body))
    parts: list[bytes | memoryview] = [head, body, bytes(start - len(head) - len(body))]
    end = 0
    for offset, data in buffers:
        parts.append(bytes(offset - end))
        parts.append(data)
        end = offset + data.nbytes
    return parts


def split_frame(data: memoryview) -> tuple[memoryview, memoryview]:
    """Split a frame into its body and its data section, without copying.

    Parameters
    ----------
    data
        The whole input, a byte-format memoryview starting with ``MAGIC``.

    Returns
    -------
    tuple of memoryview
        The msgpack body and the data section that ``BUFFER`` offsets point into.
    """
    if data.nbytes < HEAD.size:
        raise malformed("truncated frame header")
    _, version, body_len = HEAD.unpack_from(data)
    if version != VERSION:
        raise malformed(f"frame version {version} is not supported (this shoal reads {VERSION})")
    body_end = HEAD.size + body_len
    if align(body_end) > data.nbytes:
        raise malformed("truncated frame body")
    return data[HEAD.size : body_end], data[align(body_end) :]
