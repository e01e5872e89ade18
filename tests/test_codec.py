"""Tests of shoal's codec: round trips, zero-copy decoding, and every refusal."""

from __future__ import annotations

import base64
import enum
import math
import struct
import subprocess
import sys
from collections import OrderedDict, namedtuple
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from shoal._codec import _format, decode, decode_b64, digest, encode, encode_b64
from shoal._codec._encode import Encoder
from shoal._errors import CodecError


def same(a: Any, b: Any) -> bool:
    """Structural equality that also demands equal types and treats NaN as equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    if isinstance(a, (set, frozenset)):
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    return bool(a == b)


def same_array(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> bool:
    """Bit-exact equality of dtype (byte order included), shape and contents."""
    return a.dtype.str == b.dtype.str and a.shape == b.shape and a.tobytes() == b.tobytes()


# --- builtin values --------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**300), max_value=2**300)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)
hashables = st.recursive(
    scalars | st.complex_numbers(allow_nan=False),
    lambda inner: st.lists(inner, max_size=3).map(tuple) | st.frozensets(inner, max_size=3),
    max_leaves=8,
)
values = st.recursive(
    scalars | st.floats() | st.complex_numbers(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(hashables, inner, max_size=4)
        | st.sets(hashables, max_size=4)
        | st.frozensets(hashables, max_size=4)
    ),
    max_leaves=20,
)


@given(values)
@settings(max_examples=300)
def test_nested_builtins_round_trip(value: Any) -> None:
    assert same(decode(encode(value)), value)


def test_round_trip_keeps_containers_and_keys() -> None:
    value = {
        "t": (1, (2, "x"), ()),
        1: "int key",
        (1, 2): "tuple key",
        frozenset({1}): {"a", "b"},
        None: [2**64, -(2**63) - 1, 10**40, -(10**40)],
        "c": complex(1.5, -2),
        "nan": float("nan"),
    }
    assert same(decode(encode(value)), value)


def test_same_detects_differences() -> None:
    # The round-trip tests are only as good as this comparison.
    assert not same((1,), [1])
    assert not same({1}, frozenset({1}))
    assert not same(1, 1.0)
    assert not same(0.0, -0.0)
    assert same(float("nan"), float("nan"))


def test_builtin_subclasses_travel_as_their_base_type() -> None:
    class Level(enum.IntEnum):
        HIGH = 2**70

    class Color(str, enum.Enum):
        RED = "red"

    point = namedtuple("point", "x y")
    value = [OrderedDict(a=1), point(1, 2), Level.HIGH, Color.RED, bytearray(b"ab")]
    assert same(decode(encode(value)), [{"a": 1}, (1, 2), 2**70, "red", b"ab"])


def test_equal_sets_encode_equal() -> None:
    words = [f"w{i}" for i in range(50)]
    assert encode(set(words)) == encode(set(reversed(words)))


# --- numpy ------------------------------------------------------------------------------

dtypes = (
    hnp.boolean_dtypes()
    | hnp.integer_dtypes(endianness="?")
    | hnp.unsigned_integer_dtypes(endianness="?")
    | hnp.floating_dtypes(endianness="?", sizes=(16, 32, 64))
    | hnp.complex_number_dtypes(endianness="?")
    | hnp.unicode_string_dtypes(endianness="?")
    | hnp.byte_string_dtypes()
    | hnp.datetime64_dtypes(endianness="?")
    | hnp.timedelta64_dtypes(endianness="?")
)


@given(hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)))
@settings(max_examples=200)
def test_arrays_round_trip(arr: np.ndarray[Any, Any]) -> None:
    out = decode(encode(arr))
    assert isinstance(out, np.ndarray)
    assert same_array(out, arr)


@pytest.mark.parametrize(
    "view",
    [
        lambda a: a[::2],
        lambda a: a.T,
        lambda a: a[:, ::-1],
        lambda a: np.asfortranarray(a),
        lambda a: a.astype(">f8")[1:, 1:],
    ],
)
def test_non_contiguous_arrays_round_trip(view: Any) -> None:
    arr = view(np.arange(24, dtype=np.float64).reshape(4, 6))
    out = decode(encode(arr))
    assert out.flags.c_contiguous
    assert same_array(out, np.ascontiguousarray(arr))


def test_zero_d_and_empty_arrays_keep_their_shape() -> None:
    for arr in [np.array(3.5), np.zeros((0,)), np.zeros((2, 0, 3), np.int16), np.array("")]:
        out = decode(encode(arr))
        assert same_array(out, arr)


@pytest.mark.parametrize(
    "scalar",
    [
        np.float16(1.5),
        np.float32(-0.0),
        np.float64("nan"),
        np.int8(-3),
        np.uint64(2**64 - 1),
        np.complex64(1 - 2j),
        np.bool_(True),
        np.str_("héllo"),
        np.bytes_(b"ab"),
        np.datetime64("2020-01-02", "D"),
        np.timedelta64(5, "ms"),
    ],
)
def test_numpy_scalars_round_trip(scalar: np.generic) -> None:
    out = decode(encode({"s": scalar}))["s"]
    assert type(out) is type(scalar)
    assert out.dtype == scalar.dtype
    assert out.tobytes() == scalar.tobytes()


def test_arrays_decode_zero_copy_and_read_only() -> None:
    arr = np.random.default_rng(0).random((200, 500), dtype=np.float32)
    data = encode({"w": arr, "n": 3})
    out = decode(data)["w"]
    assert np.shares_memory(out, np.frombuffer(data, np.uint8))
    assert not out.flags.writeable
    assert out.ctypes.data % out.dtype.alignment == 0
    assert same_array(out, arr)


def test_writable_decode_copies() -> None:
    arr = np.arange(10, dtype=np.int32)
    data = encode([arr])
    out = decode(data, writable=True)[0]
    assert not np.shares_memory(out, np.frombuffer(data, np.uint8))
    out[0] = 99  # must not raise
    assert decode(data)[0][0] == 0


def test_bytearray_and_memoryview_inputs_decode() -> None:
    arr = np.arange(6, dtype=np.uint16).reshape(2, 3)
    data = encode(arr)
    shared = bytearray(data)
    out = decode(shared)
    assert np.shares_memory(out, np.frombuffer(shared, np.uint8))
    assert same_array(decode(memoryview(b"xx" + data)[2:]), arr)


def test_encode_copies_array_bytes_once_and_in_bulk() -> None:
    # The payload is the array's own bytes, found in one piece in the output.
    arr = np.random.default_rng(1).random(100_000).astype(np.float32)
    data = encode(arr)
    assert arr.tobytes() in data
    assert len(data) < arr.nbytes + 256


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(7, dtype=">i2"),
        np.zeros((3, 4), np.float32),
        np.array(2.5),
        np.array(["ab", "c"]),
        np.array(["2020-01-02"], dtype="datetime64[D]"),
    ],
)
def test_plain_arrays_take_a_fast_path_with_the_general_bytes(arr: np.ndarray[Any, Any]) -> None:
    # A plain array skips the msgpack hooks; its bytes and its decoding must be exactly
    # those of the general path, which an array inside a container still takes.
    encoder = Encoder()
    body = msgpack.packb(arr, default=encoder.default, use_bin_type=True)
    general = _format.frame(body, encoder.buffers)
    for _ in range(2):  # the second time from the cached head
        assert encode(arr) == general
        out = decode(general)
        assert same_array(out, arr)
        assert not out.flags.writeable
        assert np.shares_memory(out, np.frombuffer(general, np.uint8))
    copy = decode(general, writable=True)
    assert copy.flags.writeable and same_array(copy, arr)
    assert same_array(decode(encode([arr]))[0], arr)


# --- pandas / arrow / torch -------------------------------------------------------------


def test_dataframe_round_trip() -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    df = pd.DataFrame(
        {
            "i": [1, 2, 3],
            "f": [1.5, np.nan, 3.0],
            "s": ["x", None, "z"],
            "b": [True, False, True],
            "t": pd.to_datetime(["2020-01-01", "2021-02-03", "2022-03-04"]),
            "c": pd.Categorical(["u", "v", "u"]),
            7: np.array([1, 2, 3], dtype=np.int8),
        },
        index=pd.Index([10, 20, 30], name="idx"),
    )
    out = decode(encode({"df": df}))["df"]
    pd.testing.assert_frame_equal(out, df)


def test_series_round_trip() -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    series = pd.Series([1.0, 2.5], index=pd.Index(["a", "b"], name="k"), name=("x", 1))
    pd.testing.assert_series_equal(decode(encode(series)), series)


def test_arrow_table_round_trip() -> None:
    pa = pytest.importorskip("pyarrow")
    table = pa.table({"x": [1, 2, None], "y": ["a", "b", "c"]})
    assert decode(encode(table)).equals(table)


def test_dataframe_without_pyarrow_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    pd = pytest.importorskip("pandas")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` fail
    with pytest.raises(CodecError, match="pip install pyarrow") as info:
        encode({"df": pd.DataFrame({"a": [1]})})
    assert "value['df']" in str(info.value)


def test_import_is_light() -> None:
    heavy = "{'torch', 'pandas', 'pyarrow'}"
    code = f"import sys, shoal._codec; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_torch_tensors_round_trip() -> None:
    torch = pytest.importorskip("torch")
    for tensor in [
        torch.arange(12, dtype=torch.float32).reshape(3, 4).T,
        torch.tensor(3, dtype=torch.int64),
        torch.randn(5, dtype=torch.bfloat16, requires_grad=True),
        torch.tensor([True, False]),
    ]:
        out = decode(encode({"t": tensor}))["t"]
        assert isinstance(out, torch.Tensor)
        assert out.dtype == tensor.dtype and out.shape == tensor.shape
        assert torch.equal(out, tensor.detach())


# --- refusals ----------------------------------------------------------------------------


class Opaque:
    pass


def test_unsupported_type_names_type_and_path() -> None:
    with pytest.raises(CodecError) as info:
        encode({"model": [1, 2, 3, Opaque()]})
    message = str(info.value)
    assert f"{__name__}.Opaque" in message
    assert "value['model'][3]" in message
    assert "numpy array" in message and "dict" in message
    assert info.value.code == "codec.unsupported"


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ((1, {"k": Opaque()}), "value[1]['k']"),
        ({Opaque(): 1}, "the key"),
        ({"s": {(1, Opaque())}}, "an element of value['s']"),
        (Opaque(), "cannot encode value:"),
    ],
)
def test_unsupported_paths(value: Any, where: str) -> None:
    with pytest.raises(CodecError, match="Opaque") as info:
        encode(value)
    assert where in str(info.value)


def test_lambda_is_refused() -> None:
    with pytest.raises(CodecError, match="function"):
        encode([lambda: 1])


@pytest.mark.parametrize(
    "arr",
    [
        np.array([1, "a", None], dtype=object),
        np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")]),
        np.ma.masked_array([1, 2], mask=[0, 1]),
    ],
)
def test_unsupported_arrays(arr: np.ndarray[Any, Any]) -> None:
    with pytest.raises(CodecError) as info:
        encode({"w": arr})
    assert "value['w']" in str(info.value)


def test_cycle_is_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(CodecError, match="nests too deeply"):
        encode(loop)


# --- malformed input ---------------------------------------------------------------------


def _frame_of(body: object, raw: bytes) -> bytes:
    """A frame with a hand-written body and one buffer, to forge bad headers."""
    packed = msgpack.packb(body, use_bin_type=True)
    return _format.frame(packed, [(0, memoryview(raw))])


def _array_body(dtype: object, shape: object, offset: int, length: int) -> object:
    ref = msgpack.ExtType(_format.BUFFER, _format.REF.pack(offset, length))
    return {msgpack.ExtType(_format.NDARRAY, b""): [dtype, shape, ref]}


def test_forged_frame_decodes() -> None:
    # The forgery helpers produce valid frames; only the corruptions below are refused.
    out = decode(_frame_of(_array_body("<f4", [2], 0, 8), np.ones(2, "<f4").tobytes()))
    assert same_array(out, np.ones(2, "<f4"))


@pytest.mark.parametrize(
    ("dtype", "shape", "length"),
    [
        ("<f4", [3], 8),  # shape says 12 bytes, the buffer holds 8
        ("<f4", [1], 8),  # shape says 4 bytes, the buffer holds 8
        ("|O8", [1], 8),  # object dtype
        ("<f4,<i4", [1], 8),  # structured dtype
        ("a8", [1], 8),  # non-canonical spelling
        ("<i1", [8], 8),  # non-canonical byte order
        ("<f4", [-2], 8),
        ("<f4", "2", 8),
        ("<f4", [2], 64),  # buffer runs past the end
    ],
)
def test_bad_array_headers(dtype: str, shape: object, length: int) -> None:
    data = _frame_of(_array_body(dtype, shape, 0, length), bytes(8))
    with pytest.raises(CodecError) as info:
        decode(data)
    assert info.value.code == "codec.malformed"


@pytest.mark.parametrize(
    "value",
    [
        {"a": np.arange(5, dtype=np.int64), "b": (1, 2.5, "x"), "c": np.zeros(0)},
        np.arange(5, dtype=np.int64),  # a plain array: the fast path must refuse it too
    ],
)
def test_every_truncation_is_refused(value: Any) -> None:
    data = encode(value)
    decode(data)  # the array's head is now known to the fast path
    for end in range(len(data)):
        with pytest.raises(CodecError):
            decode(data[:end])


def test_unknown_frame_version() -> None:
    data = bytearray(encode(np.arange(3)))
    assert data[1] == _format.VERSION
    data[1] = _format.VERSION + 1
    with pytest.raises(CodecError, match="version"):
        decode(data)


def test_unknown_extension_code() -> None:
    with pytest.raises(CodecError, match="unknown extension type code 99"):
        decode(msgpack.packb([1, msgpack.ExtType(99, b"x")]))


@pytest.mark.parametrize(
    "data",
    [
        msgpack.packb([msgpack.ExtType(_format.TUPLE, b"")]),  # marker outside a map
        msgpack.packb({msgpack.ExtType(_format.TUPLE, b""): [1], "x": 2}),  # map has more keys
        msgpack.packb({msgpack.ExtType(_format.TUPLE, b"x"): [1]}),  # marker with a payload
        msgpack.packb(msgpack.ExtType(_format.BUFFER, _format.REF.pack(0, 0))),  # no frame
        msgpack.packb(msgpack.ExtType(_format.COMPLEX, b"123")),
        b"\x92\x01",  # incomplete array
        b"\x01\x02",  # trailing bytes
        b"\xa2\xff\xfe",  # invalid UTF-8
        b"",
    ],
)
def test_malformed_input(data: bytes) -> None:
    with pytest.raises(CodecError) as info:
        decode(data)
    assert info.value.code == "codec.malformed"


# --- digest and base64 -------------------------------------------------------------------


def test_digest() -> None:
    expected = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert digest(b"abc") == expected
    assert digest(memoryview(b"xabc")[1:]) == expected


@given(values)
def test_base64_round_trip(value: Any) -> None:
    text = encode_b64(value)
    assert base64.b64decode(text, validate=True) == encode(value)
    assert same(decode_b64(text), value)


def test_base64_with_arrays_and_bad_text() -> None:
    arr = np.arange(4.0)
    assert same_array(decode_b64(encode_b64({"g": arr}))["g"], arr)
    with pytest.raises(CodecError):
        decode_b64("not base64!")
