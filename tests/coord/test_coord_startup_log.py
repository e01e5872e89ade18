"""The coordinator starts quietly: alembic's migration lines only at --log-level debug
(issue #16, point 10)."""

from __future__ import annotations

from pathlib import Path

import pytest
from deploy_harness import deployment


@pytest.mark.slow
def test_alembic_lines_only_at_debug(tmp_path: Path) -> None:
    with deployment(tmp_path) as d:
        quiet = d.coordinator(state=tmp_path / "a", extra=["--log-level", "info"])
        loud = d.coordinator(state=tmp_path / "b", extra=["--log-level", "debug"])
        quiet_out, loud_out = quiet.output(), loud.output()
    assert "Uvicorn running" in quiet_out  # info lines are shown at info...
    assert "alembic" not in quiet_out  # ...but not alembic's steps
    assert "Running upgrade" in loud_out and "alembic" in loud_out
