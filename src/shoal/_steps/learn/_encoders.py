"""Encoders whose categories are the union of every node's: OneHotEncoder, LabelBinarizer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import model_validator

from shoal._steps.learn._base import FederatedTransformer, State
from shoal._steps.learn._deps import LearnError


def _categories(series: Any) -> list[Any]:
    return sorted(v.item() if isinstance(v, np.generic) else v for v in series.dropna().unique())


def _union(lists: Sequence[list[Any]]) -> list[Any]:
    try:
        return sorted({v for values in lists for v in values})
    except TypeError as exc:
        raise LearnError(
            f"categories of mixed types cannot be ordered: {lists}",
            code="learn.stats",
            hint="cast the column to one type on every node before encoding",
        ) from exc


class FederatedOneHotEncoder(FederatedTransformer):
    """One 0/1 column per category, categories from every node (``OneHotEncoder``).

    A node sends each column's distinct values; the fitted ``categories`` are their
    sorted union, scikit-learn's ``categories_`` on the pooled data. Each input column is
    replaced by columns ``<prefix>_<category>`` (prefix: ``features_out`` or the input
    name). A missing value is all zeros. ``handle_unknown="error"`` refuses a category
    the fit did not see; ``"ignore"`` encodes it as all zeros.
    """

    handle_unknown: Literal["error", "ignore"] = "error"

    def local(self, df: Any, state: State | None = None) -> dict[str, Any]:
        """Each column's distinct values."""
        self._check(df)
        return {"categories": [_categories(df[c]) for c in self.features_in]}

    def merge(self, stats: Sequence[dict[str, Any]], state: State | None = None) -> State:
        """The sorted union of the categories, per column."""
        stats = self._stats(stats)
        n = len(self.features_in)
        return {"categories": [_union([s["categories"][j] for s in stats]) for j in range(n)]}

    def output_columns(self, fitted: State) -> list[str]:
        """The names of the columns written, in order."""
        return [
            f"{prefix}_{cat}"
            for prefix, cats in zip(self.columns_out, fitted["categories"], strict=True)
            for cat in cats
        ]

    def transform(self, df: Any, fitted: State | None = None) -> Any:
        """``df`` with each input column replaced by its one-hot columns."""
        f = self._fitted(fitted)
        self._check(df)
        out = df.drop(columns=self.features_in)
        for src, prefix, cats in zip(
            self.features_in, self.columns_out, f["categories"], strict=True
        ):
            col = df[src]
            unknown = col.notna() & ~col.isin(cats)
            if self.handle_unknown == "error" and bool(unknown.any()):
                raise LearnError(
                    f"FederatedOneHotEncoder: column {src!r} has categories "
                    f"{sorted(set(col[unknown].tolist()))} that the fit did not see",
                    code="learn.column",
                    hint="fit on every node's data, or give handle_unknown='ignore'",
                )
            for cat in cats:
                out[f"{prefix}_{cat}"] = (col == cat).astype(np.float64)
        return out


class FederatedLabelBinarizer(FederatedTransformer):
    """A label column as one-vs-all columns, classes from every node (``LabelBinarizer``).

    Fitted ``classes`` are the sorted union of every node's labels (scikit-learn's
    ``classes_`` on the pooled labels). Like scikit-learn, two classes give one column
    (``pos_label`` for ``classes[1]``), more give one column per class, named
    ``<prefix>_<class>`` (prefix: ``features_out`` or the label's name).
    """

    neg_label: int = 0
    pos_label: int = 1

    @model_validator(mode="after")
    def _one_label(self) -> FederatedLabelBinarizer:
        if len(self.features_in) != 1:
            raise LearnError(
                f"FederatedLabelBinarizer binarizes one label column, not {self.features_in}",
                code="learn.params",
                hint="give features_in='<label column>'",
            )
        return self

    def local(self, df: Any, state: State | None = None) -> dict[str, Any]:
        """The node's distinct labels."""
        self._check(df)
        return {"classes": _categories(df[self.features_in[0]])}

    def merge(self, stats: Sequence[dict[str, Any]], state: State | None = None) -> State:
        """The sorted union of the labels."""
        return {"classes": _union([s["classes"] for s in self._stats(stats)])}

    def output_columns(self, fitted: State) -> list[str]:
        """The names of the columns written, in order."""
        classes, prefix = fitted["classes"], self.columns_out[0]
        if len(classes) <= 2:
            return [prefix]
        return [f"{prefix}_{c}" for c in classes]

    def binarize(self, labels: Any, fitted: State) -> np.ndarray[Any, Any]:
        """The label matrix scikit-learn's ``transform`` gives (n, 1) or (n, classes)."""
        classes = fitted["classes"]
        y = np.asarray(labels)
        if len(classes) <= 2:
            hit = (y == classes[-1]) if len(classes) == 2 else np.zeros(len(y), dtype=bool)
            mat = hit[:, None]
        else:
            mat = y[:, None] == np.asarray(classes, dtype=object)[None, :]
        return np.where(mat, self.pos_label, self.neg_label).astype(np.int64)

    def transform(self, df: Any, fitted: State | None = None) -> Any:
        """``df`` with the label column replaced by its binarized columns."""
        f = self._fitted(fitted)
        self._check(df)
        mat = self.binarize(df[self.features_in[0]].to_numpy(), f)
        out = df.drop(columns=self.features_in)
        for j, name in enumerate(self.output_columns(f)):
            out[name] = mat[:, j]
        return out
