"""shoal's codec: how values cross a process boundary. msgpack, never pickle.

Supported values: None, bool, int (any size), float, complex, str, bytes, list, tuple,
dict (any supported hashable keys), set, frozenset, numpy arrays and scalars, torch
tensors, pandas DataFrame and Series, and pyarrow Tables. Subclasses of the builtin
types (``OrderedDict``, namedtuples, ``IntEnum``...) are encoded as their base type;
``bytearray`` and ``memoryview`` decode as ``bytes``. Anything else raises
:class:`~shoal._errors.CodecError` naming its type and where it was found.

Arrays travel as raw bytes outside the msgpack body (see ``_format``), so decoding them
is zero-copy: a decoded array is a read-only view of the input buffer (or a writable
one if the input is a ``bytearray``) and keeps the input alive. Pass ``writable=True``
to get independent, writable copies instead.

torch, pandas and pyarrow are imported only when a value needs them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

import msgpack
import numpy as np

from shoal._codec import _format
from shoal._codec._decode import Decoder
from shoal._codec._encode import Encoder, Unencodable, encode_error
from shoal._errors import CodecError

__all__ = ["decode", "decode_b64", "digest", "encode", "encode_b64", "encode_parts"]


def encode(value: object) -> bytes:
    """Encode a value to bytes (see :func:`encode_parts`, which this joins)."""
    parts = encode_parts(value)
    return parts[0] if len(parts) == 1 and isinstance(parts[0], bytes) else b"".join(parts)


def encode_parts(value: object) -> list[bytes | memoryview]:
    """Encode a value to bytes.

    Parameters
    ----------
    value
        A value built from the supported types (see the module docstring), nested freely.

    Returns
    -------
    list
        The encoding in pieces: one ``bytes`` of plain msgpack if the value holds no
        arrays, tensors or tables; otherwise a frame's pieces (header, msgpack body,
        padding, and views of the raw buffers), so a writer can ``os.writev`` them
        without first copying a large array into one ``bytes``.

    Raises
    ------
    CodecError
        If some part of ``value`` can't be encoded; the message names the type and its
        place in the value (``value['model'][3]``).
    """
    if type(value) is np.ndarray and value.flags.c_contiguous and value.nbytes:
        prefix = _array_prefix(value)
        if prefix is not None:
            return [prefix, value.reshape(-1).view(np.uint8).data]
    encoder = Encoder()
    try:
        body: bytes = msgpack.packb(
            value, default=encoder.default, use_bin_type=True, strict_types=True, datetime=False
        )
    except Unencodable as exc:
        raise encode_error(value, exc) from None
    except (ValueError, TypeError, OverflowError) as exc:
        # From msgpack itself: nesting past its limit (or a cycle), or a str that isn't
        # valid Unicode (lone surrogates).
        reason = "it nests too deeply or contains itself" if "recursion" in str(exc) else exc
        raise CodecError(f"cannot encode the value: {reason}", code="codec.unsupported") from exc
    if not encoder.buffers:
        return [body]
    return _format.frame_parts(body, encoder.buffers)


def decode(data: bytes | bytearray | memoryview, *, writable: bool = False) -> Any:
    """Decode bytes written by :func:`encode`.

    Parameters
    ----------
    data
        The encoded bytes. Decoded arrays view this buffer, so don't modify it while
        they're in use.
    writable
        If True, copy arrays (and pandas objects) out of ``data`` so they can be
        modified; by default they are read-only views (zero-copy).

    Returns
    -------
    Any
        The value, with tuples, sets, numpy dtypes and scalar types as encoded.

    Raises
    ------
    CodecError
        If ``data`` is truncated, corrupted or not an encoded value, or holds a tensor or
        table whose library is not installed.
    """
    try:
        view = memoryview(data).cast("B")
    except TypeError as exc:
        raise _format.malformed(f"expected contiguous bytes, got {type(data).__name__}") from exc
    if view.nbytes and view[0] == _format.MAGIC:
        body, section = _format.split_frame(view)
        known = _ARRAY_BODIES.get(body.tobytes())
        if known is not None and known[2] <= section.nbytes:
            dtype, shape, nbytes = known
            arr: np.ndarray[Any, Any] = np.ndarray(shape, dtype, buffer=section[:nbytes])
            return arr.copy() if writable else arr
        decoder = Decoder(section, writable)
    else:
        body, decoder = view, Decoder(None, writable)
    try:
        value = msgpack.unpackb(
            body,
            ext_hook=decoder.ext_hook,
            object_hook=decoder.object_hook,
            raw=False,
            strict_map_key=False,
        )
    except CodecError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        # Truncation, bad UTF-8, an unhashable key, trailing bytes...
        raise _format.malformed(str(exc) or type(exc).__name__) from exc
    value = decoder.finish(value)
    if type(value) is np.ndarray and value.nbytes:
        _array_prefix(value)  # the next array of this dtype and shape takes the fast path
    return value


# One plain array is the common large value (a model's weights, a client's update), and
# its frame's head depends only on its dtype and shape: the head is built once per pair,
# and decoding recognises its msgpack body by its bytes, skipping the Python hooks. These
# are what the general path would produce and check, so both paths give equal results.
_ARRAY_HEADS: dict[tuple[str, tuple[int, ...]], bytes | None] = {}
_ARRAY_BODIES: dict[bytes, tuple[np.dtype[Any], tuple[int, ...], int]] = {}
_ARRAY_CACHE_MAX = 256  # distinct (dtype, shape) pairs; past it the tables start over


def _array_prefix(arr: np.ndarray[Any, Any]) -> bytes | None:
    """The frame's bytes before the data of a plain array like ``arr`` (None if its
    dtype is not one the codec encodes: the general path then raises the error)."""
    key = (arr.dtype.str, arr.shape)
    if key in _ARRAY_HEADS:
        return _ARRAY_HEADS[key]
    if len(_ARRAY_HEADS) >= _ARRAY_CACHE_MAX:
        _ARRAY_HEADS.clear()
        _ARRAY_BODIES.clear()
    encoder = Encoder()
    try:
        body: bytes = msgpack.packb(arr, default=encoder.default, use_bin_type=True)
    except Unencodable:
        _ARRAY_HEADS[key] = None
        return None
    parts = _format.frame_parts(body, encoder.buffers)
    prefix = b"".join(parts[:-1])  # head, body, padding; the last part is the data
    _ARRAY_HEADS[key] = prefix
    _ARRAY_BODIES[body] = (arr.dtype, arr.shape, arr.nbytes)
    return prefix


def digest(data: bytes | bytearray | memoryview) -> str:
    """Content digest of encoded bytes, as ``"sha256:<hex>"``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def encode_b64(value: object) -> str:
    """:func:`encode`, as standard base64 text (how plans store globals)."""
    return base64.b64encode(encode(value)).decode("ascii")


def decode_b64(text: str, *, writable: bool = False) -> Any:
    """:func:`decode` the base64 text written by :func:`encode_b64`."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _format.malformed(f"not valid base64: {exc}") from exc
    return decode(data, writable=writable)
