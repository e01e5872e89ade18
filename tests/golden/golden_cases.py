"""What the golden files hold, shared by ``regenerate.py`` (which writes them) and
``test_golden.py`` (which checks them): the swarm of the plan, one engine event of each
type, and the codec's values.

Each golden file is rendered by a function here, so the test can compare a file with
what this version of shoal writes, byte for byte.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from shoal._codec import _format
from shoal._coord.events import LOG_VERSION, encode_event
from shoal._engine.messages import (
    Event,
    FailureKind,
    InstanceFailed,
    InstanceStarted,
    InstanceSucceeded,
    InvokeCalled,
    NextIterScheduled,
    NodeJoined,
    NodeLost,
    NodeRestarted,
    StopRequested,
    StopSwarmCalled,
    SwarmSubmitted,
    TimerFired,
)
from shoal._plan import Plan
from shoal._plan.schema import PLAN_SCHEMA_VERSION

GOLDEN = Path(__file__).resolve().parent
ROOT = GOLDEN.parent.parent

PLAN_FILE = GOLDEN / f"plan_v{PLAN_SCHEMA_VERSION}.json"
#: A plan of version 1 (modules keyed by bundle digest) that this shoal must still read;
#: the event-log golden embeds it in its SwarmSubmitted record.
PLAN_V1_FILE = GOLDEN / "plan_v1.json"
#: A plan of version 2 (every global bare base64 of its codec encoding): still read.
PLAN_V2_FILE = GOLDEN / "plan_v2.json"
EVENTS_FILE = GOLDEN / f"events_v{LOG_VERSION}.json"
CODEC_FILE = GOLDEN / f"codec_v{_format.VERSION}.json"
#: ``shoal export``'s target, relative to the checkout (it ends up in the plan's source).
PLAN_TARGET = "tests/golden/golden_swarm.py:GoldenSwarm"
#: Packages whose own bytes (Arrow IPC, pandas metadata) sit inside some codec frames.
ARROW_PACKAGES = ("pandas", "pyarrow")


# ---------------------------------------------------------------------------- plan
def export_plan() -> str:
    """The plan ``shoal export`` writes for the golden swarm, run from the checkout."""
    with tempfile.TemporaryDirectory(prefix="shoal-golden-") as tmp:
        out = Path(tmp) / "plan.json"
        done = subprocess.run(
            [sys.executable, "-m", "shoal", "export", PLAN_TARGET, "-o", str(out)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"shoal export failed:\n{done.stdout}\n{done.stderr}")
        return out.read_text(encoding="utf-8")


# -------------------------------------------------------------------------- events
def events(plan: Plan) -> list[Event]:
    """One event of each type (two of ``NodeJoined``: with and without images), every
    field away from its default."""
    iid = "swarm-1/0/train/0/1"
    return [
        NodeJoined("node-00001", 1.0, frozenset({"mnist", "digits"}), True, frozenset({"py311"})),
        NodeJoined("node-00002", 1.5),
        NodeLost("node-00002", 2.0, "heartbeat lost"),
        NodeRestarted("node-00001", 2.5, "restarted with a new agent"),
        SwarmSubmitted("swarm-1", plan, 3.0, 7),
        InstanceStarted(iid, 4.0),
        InstanceSucceeded(iid, 5.0),
        InstanceFailed("swarm-1/0/t/1/0", 5.5, "ValueError: x", "Traceback", FailureKind.TIMEOUT),
        StopSwarmCalled(iid, 6.0),
        NextIterScheduled(iid, 6.5, "train", ("node-00001", "node-00002")),
        StopRequested("swarm-1", 7.0, "stopped by user"),
        TimerFired(8.25),
        InvokeCalled(iid, 9.0, iid + "#0", "train", ("node-00001",), 1, 30.0),
        # Added without a version bump (older logs never hold the field): a loop's value.
        InstanceSucceeded("swarm-1/0.2/agg/0/0", 9.5, loop_value=0.75),
    ]


def render_events(plan: Plan) -> str:
    """The events golden: each record's bytes (hex) and, for reading, its msgpack map."""
    records = []
    for event in events(plan):
        data = encode_event(event)
        records.append(
            {"event": type(event).__name__, "doc": msgpack.unpackb(data), "hex": data.hex()}
        )
    return json.dumps({"log_version": LOG_VERSION, "records": records}, indent=1) + "\n"


# --------------------------------------------------------------------------- codec
def codec_values() -> dict[str, Callable[[], object]]:
    """The values of the codec golden, by name (made on demand: pandas and pyarrow are
    imported only for their own values)."""

    def pandas() -> Any:
        import pandas

        return pandas

    def pyarrow() -> Any:
        import pyarrow

        return pyarrow

    return {
        "none": lambda: None,
        "bools": lambda: [True, False],
        "int": lambda: 42,
        "int_negative": lambda: -7,
        "int_big": lambda: 2**100,
        "int_big_negative": lambda: -(2**70),
        "float": lambda: 1.5,
        "float_nan": lambda: math.nan,
        "complex": lambda: 1 - 2j,
        "str": lambda: "héllo, wörld",
        "bytes": lambda: b"\x00\x01\xfe\xff",
        "list": lambda: [1, "two", 3.0, None],
        "tuple": lambda: (1, (2, 3)),
        "set": lambda: {1, 2, 3},
        "frozenset": lambda: frozenset({4, 5}),
        "nested": lambda: {
            "a": [1, {"b": b"c"}],
            "d": (True, None),
            7: "an int key",
            (1, 2): "a tuple key",
        },
        "float32": lambda: np.array([1.5, -2.0, 3.25], dtype=np.float32),
        "int64_2d": lambda: np.arange(6, dtype=np.int64).reshape(2, 3),
        "bool_array": lambda: np.array([True, False, True]),
        "zero_d": lambda: np.array(3.5),
        "non_contiguous": lambda: np.arange(12, dtype=np.int64).reshape(3, 4)[:, ::2],
        "fortran_order": lambda: np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
        "empty_array": lambda: np.zeros((0, 3)),
        "datetime64": lambda: np.array(["2024-01-01", "2024-02-29"], dtype="M8[D]"),
        "unicode_array": lambda: np.array(["ab", "c"]),
        "np_float32": lambda: np.float32(2.5),
        "np_int64": lambda: np.int64(-9),
        "arrays_in_dict": lambda: {
            "W": np.ones((2, 2)),
            "b": np.zeros(3, dtype=np.float32),
            "n": 10,
        },
        "dataframe": lambda: pandas().DataFrame(
            {"x": [1, 2], "y": [0.5, 1.5], "z": ["a", "b"]}, index=[10, 20]
        ),
        "series": lambda: pandas().Series([1.0, 2.0], name="s"),
        "arrow_table": lambda: pyarrow().table({"a": [1, 2], "b": ["x", "y"]}),
    }


#: Values whose frames hold bytes that pandas or pyarrow write (and may change).
ARROW_VALUES = frozenset({"dataframe", "series", "arrow_table"})


def versions() -> dict[str, str]:
    """The versions of the packages whose bytes the Arrow values' frames hold."""
    return {name: metadata.version(name) for name in ARROW_PACKAGES}


def render_codec() -> str:
    """The codec golden: each value's encoding (hex), and the pandas / pyarrow versions
    that wrote the Arrow values."""
    from shoal._codec import encode

    frames = {name: encode(make()).hex() for name, make in codec_values().items()}
    doc = {"codec_version": _format.VERSION, "arrow_written_by": versions(), "values": frames}
    return json.dumps(doc, indent=1) + "\n"


def envelope(data: bytes) -> tuple[int, Any, list[bytes]]:
    """A frame's version, its msgpack body with each buffer reference replaced by
    ``("buffer", index)`` (extensions kept as ``msgpack.ExtType``), and its buffers."""
    head, body_len = data[1], _format.HEAD.unpack_from(data)[2]
    section = data[_format.align(_format.HEAD.size + body_len) :]
    buffers: list[bytes] = []

    def ext(code: int, payload: bytes) -> object:
        if code != _format.BUFFER:
            return msgpack.ExtType(code, payload)
        offset, length = _format.REF.unpack(payload)
        buffers.append(section[offset : offset + length])
        return ("buffer", len(buffers) - 1)

    body = data[_format.HEAD.size : _format.HEAD.size + body_len]
    doc = msgpack.unpackb(body, ext_hook=ext, strict_map_key=False, use_list=False)
    return head, doc, buffers


def assert_same(got: object, want: object, where: str = "value") -> None:
    """Fail unless ``got`` is ``want``'s equal, of the same types all the way down."""
    assert type(got) is type(want), f"{where}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray)
        assert (got.dtype, got.shape) == (want.dtype, want.shape), where
        assert np.array_equal(got, want), where
    elif type(want).__module__.startswith("pandas"):
        import pandas.testing

        if type(want).__name__ == "DataFrame":
            pandas.testing.assert_frame_equal(got, want)  # type: ignore[arg-type]
        else:
            pandas.testing.assert_series_equal(got, want)  # type: ignore[arg-type]
    elif type(want).__module__.startswith("pyarrow"):
        assert got.equals(want), where  # type: ignore[attr-defined]
    elif isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), where
        for key in want:
            assert_same(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, (list, tuple)):
        assert isinstance(got, (list, tuple)) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and math.isnan(want):
        assert isinstance(got, float) and math.isnan(got), where
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"
