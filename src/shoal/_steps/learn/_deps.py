"""The error of this library and its lazy imports (pandas, scikit-learn: ``shoal[steps]``)."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from types import ModuleType
from typing import Any

from shoal._errors import ShoalError


class LearnError(ShoalError):
    """Bad input to a federated transformer or model: names the object and the fix."""

    code = "learn"


def _import(name: str, dist: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise LearnError(
            f"federated transformers and models need {dist}, which is not installed",
            code="learn.dependency",
            hint="pip install 'shoal[steps]'",
        ) from exc


def pandas() -> Any:
    """The pandas module, or a :class:`LearnError` naming the ``steps`` extra."""
    return _import("pandas", "pandas")


def sklearn_ensemble() -> Any:
    """``sklearn.ensemble``, or a :class:`LearnError` naming the ``steps`` extra."""
    return _import("sklearn.ensemble", "scikit-learn")


def require_columns(df: Any, columns: Iterable[str], who: str) -> None:
    """Raise naming the columns that exist when ``df`` lacks one of ``columns``."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise LearnError(
            f"{who}: no column {missing} in the data; its columns are {list(df.columns)}",
            code="learn.column",
            hint="name columns that exist (node metadata lists them)",
        )
