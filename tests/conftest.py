from __future__ import annotations

from types import ModuleType

import pytest
from helpers import ROOT, TESTS, load_file

# The PostgreSQL fixtures (postgres_url, pg_admin) and a Ray cluster (ray_cluster), for
# every test folder.
pytest_plugins = ["helpers.postgres", "helpers.ray_cluster"]

__all__ = ["ROOT", "TESTS", "load_file"]


@pytest.fixture(scope="session")
def seeds() -> dict[str, ModuleType]:
    return {n: load_file(TESTS / "seeds" / f"seed_{n}.py") for n in ("000", "001", "002")}
