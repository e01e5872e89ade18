"""Decoding: msgpack's ``ext_hook`` and ``object_hook`` rebuild what ``_encode`` wrote."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from shoal._codec import _format as f
from shoal._codec._encode import SERIES_COLUMN
from shoal._errors import CodecError

_MAX_DIMS = 64  # numpy's own limit


class _Marker:
    """What a marker extension decodes to; only ever meant to be a one-entry map's key."""

    __slots__ = ("code",)

    def __init__(self, code: int) -> None:
        self.code = code


_MARKER = {code: _Marker(code) for code in f.MARKERS}


def _import(name: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise CodecError(
            f"cannot decode: the value holds {what}, which needs {name}",
            code="codec.dependency",
            hint=f"pip install {name}",
        ) from None


def _fields(payload: object, n: int, what: str) -> list[Any]:
    if not isinstance(payload, list) or len(payload) != n:
        raise f.malformed(f"bad {what} header")
    return payload


class Decoder:
    """State of one ``decode`` call.

    Parameters
    ----------
    section
        The frame's data section that buffer references point into, or None for a
        plain msgpack value (which has no buffers).
    writable
        Copy arrays out of the input instead of viewing it.
    """

    __slots__ = ("_open", "_section", "_writable")

    def __init__(self, section: memoryview | None, writable: bool) -> None:
        self._section = section
        self._writable = writable
        # Markers seen minus markers consumed as map keys: a marker anywhere else (a
        # list item, a map with more keys) leaves this above zero, and finish() refuses.
        self._open = 0

    def finish(self, value: object) -> object:
        """Check the whole input was well-formed and return the decoded value."""
        if self._open:
            raise f.malformed("extension marker outside its map")
        return value

    def ext_hook(self, code: int, payload: bytes) -> object:
        """The msgpack ``ext_hook``: decode one extension value."""
        if code in f.MARKERS:
            if payload:
                raise f.malformed(f"marker extension {code} with a payload")
            self._open += 1
            return _MARKER[code]
        if code == f.BIGINT and payload:
            return int.from_bytes(payload, "big", signed=True)
        if code == f.COMPLEX and len(payload) == f.COMPLEX_PAIR.size:
            return complex(*f.COMPLEX_PAIR.unpack(payload))
        if code == f.BUFFER and len(payload) == f.REF.size:
            return self._buffer(*f.REF.unpack(payload))
        if code in (f.BIGINT, f.COMPLEX, f.BUFFER):
            raise f.malformed(f"extension {code} with a payload of {len(payload)} bytes")
        raise f.malformed(f"unknown extension type code {code}")

    def _buffer(self, offset: int, length: int) -> memoryview:
        if self._section is None:
            raise f.malformed("buffer reference in a value without a frame")
        if offset + length > self._section.nbytes:
            raise f.malformed("buffer reference past the end of the input (truncated?)")
        return self._section[offset : offset + length]  # a view: this is the zero-copy

    def object_hook(self, obj: dict[Any, Any]) -> object:
        """The msgpack ``object_hook``: turn marker maps back into their values."""
        if len(obj) != 1:
            return obj
        key, payload = next(iter(obj.items()))
        if type(key) is not _Marker:
            return obj
        self._open -= 1
        return _BUILD[key.code](self, payload)

    def ndarray(self, payload: object) -> np.ndarray[Any, Any]:
        """Rebuild a numpy array over its buffer (copied only if ``writable``)."""
        text, shape, raw = _fields(payload, 3, "array")
        dtype = f.parse_dtype(text)
        if (
            not isinstance(shape, list)
            or len(shape) > _MAX_DIMS
            or not all(type(n) is int and n >= 0 for n in shape)
        ):
            raise f.malformed(f"bad array shape {shape!r}")
        if not isinstance(raw, memoryview) or math.prod(shape) * dtype.itemsize != raw.nbytes:
            raise f.malformed(f"array of shape {shape} and dtype {text} does not match its bytes")
        arr: np.ndarray[Any, Any] = np.ndarray(tuple(shape), dtype, buffer=raw)
        return arr.copy() if self._writable else arr

    def np_scalar(self, payload: object) -> np.generic:
        """Rebuild a numpy scalar of the encoded dtype."""
        text, raw = _fields(payload, 2, "numpy scalar")
        dtype = f.parse_dtype(text)
        if not isinstance(raw, bytes) or len(raw) != dtype.itemsize:
            raise f.malformed(f"numpy scalar of dtype {text} does not match its bytes")
        scalar: np.generic = np.ndarray((), dtype, buffer=raw)[()]
        return scalar

    def tensor(self, payload: object) -> Any:
        """Rebuild a torch tensor, importing torch only now."""
        name, arr = _fields(payload, 2, "tensor")
        torch = _import("torch", "a torch tensor")
        dtype = getattr(torch, name, None) if isinstance(name, str) else None
        if not isinstance(dtype, torch.dtype) or not isinstance(arr, np.ndarray):
            raise f.malformed(f"bad tensor header {name!r}")
        if not (arr.flags.writeable and arr.flags.aligned and arr.dtype.isnative):
            # torch warns on read-only arrays and refuses foreign byte order.
            arr = arr.astype(arr.dtype.newbyteorder("="), order="C")
        try:
            tensor = torch.from_numpy(arr)
            return tensor if tensor.dtype == dtype else tensor.view(dtype)
        except (RuntimeError, TypeError) as exc:
            raise f.malformed(f"tensor of dtype {name} does not match its bytes") from exc

    def _arrow(self, raw: object) -> Any:
        if not isinstance(raw, memoryview):
            raise f.malformed("bad table header")
        pa = _import("pyarrow", "an Arrow table or a pandas object")
        try:
            return pa.ipc.open_stream(pa.py_buffer(raw)).read_all()
        except (pa.ArrowException, ValueError) as exc:
            raise f.malformed(f"bad Arrow stream: {exc}") from exc

    def arrow_table(self, payload: object) -> Any:
        """Rebuild a pyarrow Table (its buffers view the input; Arrow data is immutable)."""
        (raw,) = _fields(payload, 1, "table")
        return self._arrow(raw)

    def dataframe(self, payload: object) -> Any:
        """Rebuild a pandas DataFrame with its original column labels."""
        labels, names, raw = _fields(payload, 3, "DataFrame")
        pd = _import("pandas", "a pandas DataFrame")
        df = self._arrow(raw).to_pandas()
        if not isinstance(labels, list) or len(labels) != df.shape[1]:
            raise f.malformed("DataFrame column labels do not match its columns")
        columns = pd.Index(labels, tupleize_cols=True) if labels else df.columns
        if isinstance(names, list) and len(names) == columns.nlevels:
            columns = columns.set_names(names)
        df.columns = columns
        return df.copy(deep=True) if self._writable else df

    def series(self, payload: object) -> Any:
        """Rebuild a pandas Series with its original name."""
        name, raw = _fields(payload, 2, "Series")
        _import("pandas", "a pandas Series")
        df = self._arrow(raw).to_pandas()
        if list(df.columns) != [SERIES_COLUMN]:
            raise f.malformed("Series stream does not hold exactly one column")
        series = df[SERIES_COLUMN]
        series.name = name
        return series.copy(deep=True) if self._writable else series


def _items(payload: object) -> list[Any]:
    if not isinstance(payload, list):
        raise f.malformed("bad collection")
    return payload


_BUILD: dict[int, Callable[[Decoder, object], object]] = {
    f.TUPLE: lambda d, p: tuple(_items(p)),
    f.SET: lambda d, p: set(_items(p)),
    f.FROZENSET: lambda d, p: frozenset(_items(p)),
    f.NDARRAY: Decoder.ndarray,
    f.NPSCALAR: Decoder.np_scalar,
    f.TENSOR: Decoder.tensor,
    f.DATAFRAME: Decoder.dataframe,
    f.SERIES: Decoder.series,
    f.ARROW_TABLE: Decoder.arrow_table,
}
