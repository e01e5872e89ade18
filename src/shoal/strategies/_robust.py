"""Byzantine-robust aggregation rules on a stack of client updates.

Each takes ``updates``, an ``(n, d)`` array (one flat update per client), and returns
one ``(d,)`` vector. None of them can stream: a coordinate-wise median or trimmed mean
needs every client's value of a coordinate (an order statistic), and Krum / Bulyan need
every pairwise distance, so memory is O(n x model), not O(model).
"""

from __future__ import annotations

import numpy as np


def coordinate_median(updates: np.ndarray) -> np.ndarray:
    """Coordinate-wise median (Yin et al., 2018)."""
    return np.asarray(np.median(updates, axis=0))


def trimmed_mean(updates: np.ndarray, trim: float) -> np.ndarray:
    """Coordinate-wise trimmed mean (Yin et al., 2018).

    Per coordinate, the ``floor(trim * n)`` largest and as many smallest values are
    dropped and the rest averaged.

    Parameters
    ----------
    updates
        ``(n, d)``.
    trim
        The fraction cut at each end, ``0 <= trim < 0.5``.
    """
    if not 0 <= trim < 0.5:
        raise ValueError(f"trim={trim} must be in [0, 0.5)")
    n = updates.shape[0]
    k = int(np.floor(trim * n))
    ordered = np.sort(updates, axis=0)
    return np.asarray(ordered[k : n - k].mean(axis=0))


def _squared_distances(updates: np.ndarray) -> np.ndarray:
    sq = np.einsum("ij,ij->i", updates, updates)
    d = sq[:, None] + sq[None, :] - 2.0 * updates @ updates.T
    return np.asarray(np.maximum(d, 0.0))


def krum_scores(updates: np.ndarray, byzantine: int) -> np.ndarray:
    """Krum's score of each update (Blanchard et al., 2017).

    The score of update ``i`` is the sum of its squared distances to its
    ``n - f - 2`` nearest other updates; Krum picks the lowest.

    Raises
    ------
    ValueError
        Unless ``n > 2f + 2``, the bound under which Krum's guarantee holds.
    """
    n = updates.shape[0]
    if n <= 2 * byzantine + 2:
        raise ValueError(
            f"Krum needs more than 2f + 2 = {2 * byzantine + 2} updates for f={byzantine}; got {n}"
        )
    d = _squared_distances(updates)
    closest = n - byzantine - 2
    scores = np.empty(n)
    for i in range(n):
        others = np.delete(d[i], i)
        scores[i] = np.sort(others)[:closest].sum()
    return scores


def krum(updates: np.ndarray, byzantine: int, select: int = 1) -> np.ndarray:
    """Krum (``select=1``) or Multi-Krum: the mean of the ``select`` best-scored updates.

    Parameters
    ----------
    updates
        ``(n, d)``.
    byzantine
        ``f``, the number of Byzantine clients tolerated.
    select
        ``m``: how many updates Multi-Krum averages (1: plain Krum).
    """
    scores = krum_scores(updates, byzantine)
    if not 1 <= select <= updates.shape[0]:
        raise ValueError(f"select={select} must be between 1 and {updates.shape[0]}")
    chosen = np.argsort(scores, kind="stable")[:select]
    return np.asarray(updates[chosen].mean(axis=0))


def bulyan(updates: np.ndarray, byzantine: int) -> np.ndarray:
    """Bulyan (El Mhamdi et al., 2018) over Krum.

    1. Select ``theta = n - 2f`` updates by repeatedly taking Krum's choice among the
       updates not yet selected.
    2. Per coordinate, average the ``beta = theta - 2f`` selected values closest to
       their median.

    Raises
    ------
    ValueError
        Unless ``n >= 4f + 3``.
    """
    n = updates.shape[0]
    f = byzantine
    if n < 4 * f + 3:
        raise ValueError(f"Bulyan needs n >= 4f + 3 = {4 * f + 3} updates for f={f}; got {n}")
    remaining = list(range(n))
    selected: list[int] = []
    theta = n - 2 * f
    while len(selected) < theta:
        rest = updates[remaining]
        # Krum on the remaining set; with too few left for Krum's bound, the closest.
        if len(remaining) > 2 * f + 2:
            best = int(np.argmin(krum_scores(rest, f)))
        else:
            best = int(np.argmin(_squared_distances(rest).sum(axis=1)))
        selected.append(remaining.pop(best))
    chosen = updates[selected]
    beta = theta - 2 * f
    median = np.median(chosen, axis=0)
    nearest = np.argsort(np.abs(chosen - median), axis=0, kind="stable")[:beta]
    return np.asarray(np.take_along_axis(chosen, nearest, axis=0).mean(axis=0))
