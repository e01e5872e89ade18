"""Node metadata: column names and dtypes, never values (issue 17, point 7)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import shoal
from shoal import NodeProfile
from shoal.steps import metadata_artifact, table_metadata

pytestmark = pytest.mark.timeout(60)


def test_metadata_of_csv_and_parquet_and_of_every_node(tmp_path: Path) -> None:
    df = pd.DataFrame({"age": [31, 40], "income": [1.5, 2.5], "city": ["x", "y"]})
    want = {c: str(t) for c, t in df.dtypes.items()}  # "str" or "object" (pandas 2 or 3)
    assert set(want) == {"age", "income", "city"} and want["age"] == "int64"
    df.to_csv(tmp_path / "t.csv", index=False)
    df.to_parquet(tmp_path / "t.parquet")
    assert table_metadata(tmp_path / "t.csv") == want
    assert table_metadata(tmp_path / "t.parquet") == want

    nodes = [NodeProfile(name=f"n{i}", datasets={"t": tmp_path / "t.parquet"}) for i in range(2)]
    run = shoal.simulate(metadata_artifact("t"), nodes=nodes, executor="inline")
    assert run.globals["metadata"] == {"n0": want, "n1": want}
    assert "31" not in repr(run.globals)  # no values leave a node
