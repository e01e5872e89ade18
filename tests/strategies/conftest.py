"""The digits data, once per session."""

from __future__ import annotations

import pytest
from helpers.digits import Digits, digits_data


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Digits:
    """(the federated share as .npz, test X, test y)."""
    return digits_data(tmp_path_factory.mktemp("digits"))
