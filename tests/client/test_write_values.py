"""``shoal results -o FILE``: the format follows the values, and the CLI says which."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from shoal._cli.render import show, write_values
from shoal._codec import decode


def test_json_data_is_written_as_json(tmp_path: Path) -> None:
    values = {"node-00000": {"n": 3, "acc": 0.5, "tags": ["a", None]}, "node-00001": 7}
    path, fmt, why = write_values(values, tmp_path / "out.json")
    assert (path, fmt, why) == (tmp_path / "out.json", "json", None)
    assert json.loads(path.read_text()) == values


def test_arrays_go_to_npz_and_the_suffix_follows(tmp_path: Path) -> None:
    values = {
        "node-00000": {"W": np.ones((2, 3)), "b": np.zeros(3), "steps": 4},
        "node-00001": {"W": np.full((2, 3), 2.0), "b": np.ones(3), "steps": np.int64(5)},
    }
    path, fmt, why = write_values(values, tmp_path / "weights.json")
    assert path == tmp_path / "weights.npz" and fmt == "npz"
    assert why is not None and "json" in why
    with np.load(path) as npz:
        assert set(npz.files) == {f"node-0000{i}/{k}" for i in (0, 1) for k in ("W", "b", "steps")}
        assert np.array_equal(npz["node-00001/W"], np.full((2, 3), 2.0))
        assert int(npz["node-00001/steps"]) == 5


def test_anything_else_is_codec_msgpack(tmp_path: Path) -> None:
    values = {"node-00000": {"name": "x", "w": np.arange(3)}, "node-00001": {1, 2}}
    path, fmt, _ = write_values(values, tmp_path / "mixed")
    assert path == tmp_path / "mixed.msgpack" and fmt == "msgpack"
    back = decode(path.read_bytes())
    assert back["node-00001"] == {1, 2} and list(back["node-00000"]["w"]) == [0, 1, 2]


def test_an_asked_format_that_fits_is_kept(tmp_path: Path) -> None:
    path, fmt, why = write_values({"a": 1}, tmp_path / "x.msgpack")
    assert (path.name, fmt, why) == ("x.msgpack", "msgpack", None)
    path, fmt, _ = write_values({"a": np.ones(2)}, tmp_path / "y.npz")
    assert (path.name, fmt) == ("y.npz", "npz")
    path, fmt, _ = write_values({"a": float("nan")}, tmp_path / "z.json")
    assert fmt == "npz"  # NaN is not JSON


def test_show_summarises_arrays() -> None:
    assert show({"W": np.zeros((64, 10))}) == "{'W': array(64, 10) float64}"
    assert show("x" * 200).endswith("...") and len(show("x" * 200)) == 80
