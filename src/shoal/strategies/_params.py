"""Models as flat vectors: every strategy computes on one float64 vector per model.

A model is what a swarm keeps in a global: one array, or a dict of arrays (``{"W": ...,
"b": ...}``), possibly nested. :func:`flatten` turns it into a vector and a
:class:`Layout`; ``layout.unflatten(vector)`` gives the same structure back, so the
maths never depends on how a user shapes a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

#: One array, or a (nested) dict of arrays.
Weights = Any


@dataclass(frozen=True)
class Layout:
    """Where each array of a model lies in its flat vector.

    Attributes
    ----------
    entries
        ``(path, shape, dtype)`` per array, in vector order; ``path`` is the tuple of
        dict keys leading to it (empty for a bare array).
    """

    entries: tuple[tuple[tuple[str, ...], tuple[int, ...], str], ...]

    @property
    def size(self) -> int:
        """Length of the flat vector."""
        return sum(int(np.prod(shape)) for _, shape, _ in self.entries)

    def unflatten(self, vector: np.ndarray) -> Weights:
        """The model whose flat form is ``vector`` (arrays keep their dtypes)."""
        vector = np.asarray(vector)
        if vector.shape != (self.size,):
            raise ValueError(f"a vector of {vector.shape} does not fit a model of {self.size}")
        if len(self.entries) == 1 and self.entries[0][0] == ():
            _, shape, dtype = self.entries[0]
            return vector.reshape(shape).astype(dtype)
        out: dict[str, Any] = {}
        start = 0
        for path, shape, dtype in self.entries:
            n = int(np.prod(shape))
            node = out
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = vector[start : start + n].reshape(shape).astype(dtype)
            start += n
        return out


def _walk(weights: Weights, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], np.ndarray]]:
    if isinstance(weights, Mapping):
        found = []
        for key in sorted(weights):  # sorted: two nodes flatten a model the same way
            found.extend(_walk(weights[key], (*path, str(key))))
        return found
    return [(path, np.asarray(weights))]


def flatten(weights: Weights) -> tuple[np.ndarray, Layout]:
    """A model as one float64 vector, and the layout that gives it back.

    Parameters
    ----------
    weights
        An array or a (nested) dict of arrays.

    Returns
    -------
    tuple
        ``(vector, layout)``.
    """
    parts = _walk(weights, ())
    if not parts:
        raise ValueError("a model needs at least one array")
    layout = Layout(tuple((p, a.shape, a.dtype.str) for p, a in parts))
    vector = np.concatenate([a.astype(np.float64).ravel() for _, a in parts])
    return vector, layout
