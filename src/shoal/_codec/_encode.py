"""Encoding: msgpack's ``default`` hook for every type plain msgpack doesn't know."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import msgpack
import numpy as np

from shoal._codec import _format as f
from shoal._errors import CodecError

_MIN_INT = -(2**63)
_MAX_INT = 2**64 - 1
# Marker keys are immutable, so one instance of each serves every value.
_KEY = {code: msgpack.ExtType(code, b"") for code in f.MARKERS}
# Column names the frames of pandas objects travel under; the real labels go beside them.
SERIES_COLUMN = "__shoal_series__"


class Unencodable(Exception):
    """Raised inside the msgpack hook; ``encode`` turns it into a CodecError with a path."""

    def __init__(self, obj: object, reason: str, hint: str, code: str = "codec.unsupported"):
        super().__init__(reason)
        self.obj = obj
        self.reason = reason
        self.hint = hint
        self.code = code


def type_name(obj: object) -> str:
    """Qualified name of ``obj``'s type, e.g. ``'mypkg.models.Net'``."""
    cls = type(obj)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _unsupported(obj: object) -> Unencodable:
    return Unencodable(
        obj,
        f"type {type_name(obj)!r} is not supported; supported: {f.SUPPORTED}",
        "convert it first, e.g. to a dict of supported values (dataclasses.asdict, vars()) "
        "or to a numpy array",
    )


def _import(name: str, obj: object, what: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise Unencodable(
            obj, f"{what} needs {name} to be encoded", f"pip install {name}", "codec.dependency"
        ) from None


def _check_dtype(obj: object, dtype: np.dtype[Any]) -> None:
    if dtype.kind in f.DTYPE_KINDS and dtype.fields is None:
        return
    raise Unencodable(
        obj,
        f"numpy {type(obj).__name__} of dtype {dtype} is not supported "
        "(only numeric, bool, datetime and fixed-width str/bytes dtypes are)",
        "convert it to a numeric or fixed-width string dtype (arr.astype(float), "
        "arr.astype(str)), or to a list",
    )


class Encoder:
    """State of one ``encode`` call: the out-of-band buffers handed out so far."""

    __slots__ = ("_end", "buffers")

    def __init__(self) -> None:
        self.buffers: list[tuple[int, memoryview]] = []
        self._end = 0

    def default(self, obj: object) -> object:
        """The msgpack ``default`` hook: return a msgpack-packable stand-in for ``obj``."""
        handler = _EXACT.get(type(obj))
        if handler is not None:
            return handler(self, obj)
        return self._fallback(obj)

    def add_buffer(self, data: memoryview) -> msgpack.ExtType:
        """Place ``data`` in the data section and return the reference to it."""
        offset = f.align(self._end)
        self._end = offset + data.nbytes
        self.buffers.append((offset, data))
        return msgpack.ExtType(f.BUFFER, f.REF.pack(offset, data.nbytes))

    def _fallback(self, obj: object) -> object:
        # numpy scalars subclass float/int/str/complex, so numpy comes before the builtins.
        if isinstance(obj, np.ndarray):
            ma = sys.modules.get("numpy.ma")
            if ma is not None and isinstance(obj, ma.MaskedArray):
                raise _unsupported(obj)  # encoding .data alone would drop the mask
            return _ndarray(self, obj)
        if isinstance(obj, np.generic):
            return _np_scalar(obj)
        # The value can only be a tensor or a frame if its library is already imported.
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(obj, torch.Tensor):
            return _tensor(torch, obj)
        pd = sys.modules.get("pandas")
        if pd is not None and isinstance(obj, pd.DataFrame):
            return _dataframe(self, obj)
        if pd is not None and isinstance(obj, pd.Series):
            return _series(self, obj)
        pa = sys.modules.get("pyarrow")
        if pa is not None and isinstance(obj, pa.Table):
            return {_KEY[f.ARROW_TABLE]: [self.add_buffer(_ipc(pa, obj))]}
        return _builtin_subclass(self, obj)


def _builtin_subclass(enc: Encoder, obj: object) -> object:
    # Subclasses (OrderedDict from state_dict(), namedtuples, IntEnum...) travel as their
    # base type: the value survives, the subclass does not.
    if isinstance(obj, dict):
        return dict(obj)
    if isinstance(obj, list):
        return list(obj)
    if isinstance(obj, tuple):
        return _tuple(enc, obj)
    if isinstance(obj, (set, frozenset)):
        return _set(enc, obj)
    if isinstance(obj, str):
        return str.__str__(obj)
    if isinstance(obj, int):
        number = int.__int__(obj)
        return number if _MIN_INT <= number <= _MAX_INT else _bigint(enc, number)
    if isinstance(obj, float):
        return float.__float__(obj)
    if isinstance(obj, complex):
        return _complex(enc, obj)
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj)
    raise _unsupported(obj)


def _bigint(enc: Encoder, obj: int) -> object:
    # msgpack only calls the hook for ints that overflow 64 bits.
    return msgpack.ExtType(f.BIGINT, obj.to_bytes(obj.bit_length() // 8 + 1, "big", signed=True))


def _complex(enc: Encoder, obj: complex) -> object:
    return msgpack.ExtType(f.COMPLEX, f.COMPLEX_PAIR.pack(obj.real, obj.imag))


def _tuple(enc: Encoder, obj: tuple[Any, ...]) -> object:
    return {_KEY[f.TUPLE]: list(obj)}


def _set(enc: Encoder, obj: set[Any] | frozenset[Any]) -> object:
    # Sorted when the elements allow it, so equal sets give equal bytes (and digests).
    try:
        items = sorted(obj)
    except TypeError:
        items = list(obj)
    return {_KEY[f.FROZENSET if isinstance(obj, frozenset) else f.SET]: items}


def _ndarray(enc: Encoder, arr: np.ndarray[Any, Any]) -> object:
    _check_dtype(arr, arr.dtype)
    if not arr.flags.c_contiguous:
        arr = np.array(arr, order="C")  # unlike ascontiguousarray, keeps 0-d arrays 0-d
    # A flat uint8 view: memoryview can't export datetime dtypes, and bytes are all we need.
    raw = arr.reshape(-1).view(np.uint8).data if arr.nbytes else memoryview(b"")
    return {_KEY[f.NDARRAY]: [arr.dtype.str, list(arr.shape), enc.add_buffer(raw)]}


def _np_scalar(obj: np.generic) -> object:
    _check_dtype(obj, obj.dtype)
    return {_KEY[f.NPSCALAR]: [obj.dtype.str, obj.tobytes()]}


def _tensor(torch: Any, obj: Any) -> object:
    try:
        # numpy() refuses tensors that need grad, live on a GPU, or carry conj/neg bits.
        tensor = obj.detach().cpu().resolve_conj().resolve_neg()
        name = str(tensor.dtype).removeprefix("torch.")
        try:
            arr = tensor.numpy()
        except TypeError:
            # A dtype numpy lacks (bfloat16, float8...): ship the bits as a same-size int.
            bits = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
            arr = tensor.view(bits[tensor.element_size()]).numpy()
    except (RuntimeError, TypeError, KeyError) as exc:
        raise Unencodable(
            obj,
            f"torch tensor could not be converted to numpy: {exc}",
            "convert it to a dense tensor of a standard dtype first",
        ) from exc
    return {_KEY[f.TENSOR]: [name, arr]}


def _ipc(pa: Any, table: Any) -> memoryview:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return memoryview(sink.getvalue())


def _arrow_from_pandas(obj: object, frame: Any) -> Any:
    pa = _import("pyarrow", obj, f"pandas {type(obj).__name__}")
    try:
        return pa.Table.from_pandas(frame, preserve_index=None)
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise Unencodable(
            obj,
            f"pandas {type(obj).__name__} could not be converted to Arrow: {exc}",
            "give each column one type Arrow understands (e.g. no mixed Python objects)",
        ) from exc


def _dataframe(enc: Encoder, df: Any) -> object:
    # Arrow wants unique string column names; travel under positional names and
    # restore the real labels (any supported value, duplicates allowed) on decode.
    renamed = df.copy(deep=False)
    renamed.columns = [str(i) for i in range(df.shape[1])]
    table = _arrow_from_pandas(df, renamed)
    pa = sys.modules["pyarrow"]
    labels, names = list(df.columns), list(df.columns.names)
    return {_KEY[f.DATAFRAME]: [labels, names, enc.add_buffer(_ipc(pa, table))]}


def _series(enc: Encoder, series: Any) -> object:
    table = _arrow_from_pandas(series, series.to_frame(name=SERIES_COLUMN))
    pa = sys.modules["pyarrow"]
    return {_KEY[f.SERIES]: [series.name, enc.add_buffer(_ipc(pa, table))]}


_EXACT: dict[type, Callable[[Encoder, Any], object]] = {
    int: _bigint,
    complex: _complex,
    tuple: _tuple,
    set: _set,
    frozenset: _set,
    np.ndarray: _ndarray,
}


def find_path(value: object, target: object, path: str = "value", depth: int = 0) -> str | None:
    """Where ``target`` sits inside ``value``, as an expression like ``value['a'][3]``.

    Parameters
    ----------
    value
        The value given to ``encode``.
    target
        The object that could not be encoded (found by identity).
    path
        The expression for ``value`` itself.
    depth
        Nesting level so far; the search gives up past msgpack's own nesting limit.

    Returns
    -------
    str or None
        The expression, or None if ``target`` was not found.
    """
    if value is target:
        return path
    if depth > 512:
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if find_path(key, target, "k", depth + 1) is not None:
                return f"the key {_short(key)} of {path}"
            found = find_path(item, target, f"{path}[{_short(key)}]", depth + 1)
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = find_path(item, target, f"{path}[{index}]", depth + 1)
            if found is not None:
                return found
    elif isinstance(value, (set, frozenset)):
        for item in value:
            if find_path(item, target, "e", depth + 1) is not None:
                return f"an element of {path}"
    return None


def _short(key: object) -> str:
    text = repr(key)
    return text if len(text) <= 40 else text[:37] + "..."


def encode_error(value: object, exc: Unencodable) -> CodecError:
    """The CodecError for ``exc``, naming where in ``value`` the bad object was found."""
    where = find_path(value, exc.obj) or "a part of the value"
    return CodecError(f"cannot encode {where}: {exc.reason}", code=exc.code, hint=exc.hint)
