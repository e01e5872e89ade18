"""Node metadata: the column names and dtypes of a node's table, never its values.

The artifact author builds queries from it (Ferdelance's project metadata). Locally,
:func:`table_metadata` reads a ``.csv`` / ``.parquet`` file; on a federation,
:func:`metadata_artifact` asks every node for its dataset's columns.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from shoal._steps._entity import StepsError
from shoal._steps._operation import Environment, Operation


def frame_metadata(df: Any) -> dict[str, str]:
    """``{column: dtype name}`` of a data frame."""
    return {str(c): str(t) for c, t in df.dtypes.items()}


def table_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{column: dtype name}`` of a ``.csv`` or ``.parquet`` table.

    A parquet file's schema is read without its rows; a CSV's dtypes are pandas'
    inference over its rows (read here, on the machine holding it).
    """
    import pandas as pd

    file = Path(path)
    if file.suffix == ".parquet":
        import pyarrow.parquet as pq

        return frame_metadata(pq.read_schema(file).empty_table().to_pandas())
    if file.suffix == ".csv":
        return frame_metadata(pd.read_csv(file))
    raise StepsError(
        f"table {file} is neither .csv nor .parquet",
        hint="give a .csv or .parquet file",
    )


class Metadata(Operation):
    """A node's columns and dtypes as product ``"metadata"`` (no values leave it)."""

    reads_data: ClassVar[bool] = True

    def run(self, env: Environment) -> None:
        """Describe the local frame."""
        env.products["metadata"] = frame_metadata(env.df)


class CollectMetadata(Operation):
    """On the initiator: ``{node: {column: dtype}}`` as product ``"metadata"``."""

    def run(self, env: Environment) -> None:
        """Gather every node's description."""
        env.products["metadata"] = dict(sorted(env.resources.get("metadata", {}).items()))


def metadata_artifact(dataset: str) -> Any:
    """An artifact whose global ``"metadata"`` is every node's ``{column: dtype}``."""
    from shoal._steps._artifact import Artifact, Collect, Finalize, Parallel

    return Artifact(
        steps=[
            Parallel(operation=Metadata(), distribution=Collect()),
            Finalize(operation=CollectMetadata()),
        ],
        dataset=dataset,
        name="metadata",
    )
