"""Real tables (scikit-learn's bundled data) split over nodes, unevenly."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

SHARES = (0.05, 0.1, 0.2, 0.25, 0.4)  # five nodes, uneven


def split(df: pd.DataFrame, shares: tuple[float, ...] = SHARES, seed: int = 7) -> list[Any]:
    """``df``'s rows shuffled and cut into one frame per node, sized by ``shares``."""
    rows = np.random.default_rng(seed).permutation(len(df))
    cuts = (np.cumsum(shares)[:-1] * len(df)).astype(int)
    return [df.iloc[part].reset_index(drop=True) for part in np.split(rows, cuts)]


def _frame(loader: Any) -> pd.DataFrame:
    data = loader(as_frame=True)
    return data.frame.rename(columns=lambda c: str(c).replace(" ", "_"))


@pytest.fixture(scope="session")
def cancer() -> pd.DataFrame:
    """Breast cancer: 569 rows, 30 features, ``target`` in {0, 1}."""
    return _frame(load_breast_cancer)


@pytest.fixture(scope="session")
def wine() -> pd.DataFrame:
    """Wine: 178 rows, 13 features, ``target`` in {0, 1, 2}."""
    return _frame(load_wine)


@pytest.fixture(scope="session")
def diabetes() -> pd.DataFrame:
    """Diabetes: 442 rows, 10 features, a numeric ``target``."""
    return _frame(load_diabetes)


@pytest.fixture(scope="session")
def holed(cancer: pd.DataFrame) -> pd.DataFrame:
    """Breast cancer with about 10% of each feature's values missing."""
    rng = np.random.default_rng(3)
    df = cancer.copy()
    features = [c for c in df.columns if c != "target"]
    values = df[features].to_numpy(copy=True)
    values[rng.random(values.shape) < 0.1] = np.nan
    df[features] = values
    return df
