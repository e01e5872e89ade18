"""Split one dataset into per-node shares for the simulator.

A share is written as ``out_dir / "node-{i:05d}" / <source name>``: the same file or
folder name as the source, holding node ``i``'s part of the samples. Samples keep their
source order inside a share.

Schemes
-------
``iid``
    A seeded shuffle cut into near-equal parts (sizes differ by at most one).
``dirichlet:ALPHA``
    For every class, the proportions over nodes are drawn from Dirichlet(ALPHA); small
    ALPHA (0.1) gives very skewed label mixes, large ALPHA (100) is close to iid. Every
    node gets at least one sample: a draw that leaves a node empty is redrawn a bounded
    number of times, then single samples are moved from the largest nodes.
``shards:K``
    Samples sorted by label are cut into ``n_nodes * K`` near-equal shards and every node
    gets ``K`` of them at random (the split of McMahan et al., 2017).

Formats
-------
``.npz``
    Every array whose first dimension is the number of samples is split along axis 0
    together; other arrays (class names, metadata) are copied whole to every node. The
    labels are the array named ``y``, ``label``, ``labels`` or ``target``.
``.npy``
    One array split along axis 0; ``iid`` only (it has no labels).
``.csv`` / ``.parquet``
    Rows; the labels are the column named ``label``, ``target``, ``y`` or ``class``. CSV
    fields are copied as text, so numbers are not reformatted.
folder
    Its files (recursively, relative paths kept) are the samples; ``iid`` only. Every
    node gets a folder.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from shoal._errors import ShoalError

__all__ = ["Scheme", "parse_scheme", "partition", "split_indices"]

IndexArray = npt.NDArray[np.intp]

#: Names of the label array in a ``.npz`` file, in order of preference.
NPZ_LABEL_NAMES = ("y", "label", "labels", "target")
#: Names of the label column in a ``.csv`` / ``.parquet`` file, in order of preference.
TABLE_LABEL_NAMES = ("label", "target", "y", "class")

#: How many Dirichlet draws are tried before empty nodes are filled by moving samples.
DIRICHLET_TRIES = 10
#: Above this many classes, labels with more than one class per two samples are refused.
MAX_DIRICHLET_CLASSES = 1000

_SCHEME_HELP = "use 'iid', 'dirichlet:ALPHA' (ALPHA > 0, e.g. 'dirichlet:0.5') or 'shards:K'"
_LABEL_HINT = "use a .npz with a 'y' array or a .csv with a 'label' column"


@dataclass(frozen=True)
class Scheme:
    """A parsed partition scheme.

    Attributes
    ----------
    kind
        ``"iid"``, ``"dirichlet"`` or ``"shards"``.
    alpha
        The Dirichlet concentration (``dirichlet`` only).
    shards
        Shards per node (``shards`` only).
    label
        The label column of a table (None: the first of ``label``, ``target``, ``y``,
        ``class``); written ``"dirichlet:0.5,label=income"``.
    """

    kind: Literal["iid", "dirichlet", "shards"]
    alpha: float = 0.0
    shards: int = 0
    label: str | None = None

    @property
    def needs_labels(self) -> bool:
        """Whether the scheme reads the labels of the samples."""
        return self.kind != "iid"

    def __str__(self) -> str:
        if self.label is not None:
            return f"{replace(self, label=None)},label={self.label}"
        if self.kind == "dirichlet":
            return f"dirichlet:{self.alpha:g}"
        if self.kind == "shards":
            return f"shards:{self.shards}"
        return "iid"


def parse_scheme(text: str | Scheme) -> Scheme:
    """Parse and validate a scheme string such as ``"dirichlet:0.5"``.

    Parameters
    ----------
    text
        ``"iid"``, ``"dirichlet:ALPHA"`` or ``"shards:K"`` (case and spaces ignored), or
        an already parsed `Scheme`, returned unchanged.

    Returns
    -------
    Scheme
        The parsed scheme.

    Raises
    ------
    ShoalError
        ``partition.scheme`` for an unknown scheme or a bad parameter.
    """
    if isinstance(text, Scheme):
        return text
    if not isinstance(text, str):
        raise ShoalError(
            f"partition scheme must be a string, got {type(text).__name__}",
            code="partition.scheme",
            hint=_SCHEME_HELP,
        )
    head, comma, tail = text.partition(",")
    if comma:  # ",label=COLUMN": the table's label column (its case kept)
        key, _, label = tail.partition("=")
        if key.strip().lower() != "label" or not label.strip():
            raise ShoalError(
                f"partition scheme {text!r}: after the comma give label=COLUMN",
                code="partition.scheme",
                hint="write e.g. 'dirichlet:0.5,label=target'",
            )
        return replace(parse_scheme(head), label=label.strip())
    kind, sep, arg = text.strip().lower().partition(":")
    kind, arg = kind.strip(), arg.strip()
    if kind == "iid" and not sep:
        return Scheme("iid")
    if kind == "dirichlet" and sep:
        try:
            alpha = float(arg)
        except ValueError:
            alpha = math.nan
        if not (math.isfinite(alpha) and alpha > 0):
            raise ShoalError(
                f"partition scheme {text!r}: alpha must be a positive number, got {arg!r}",
                code="partition.scheme",
                hint="write e.g. 'dirichlet:0.5'; smaller alpha means more skewed label mixes",
            )
        return Scheme("dirichlet", alpha=alpha)
    if kind == "shards" and sep:
        if not arg.isdigit() or int(arg) < 1:
            raise ShoalError(
                f"partition scheme {text!r}: K must be a positive whole number, got {arg!r}",
                code="partition.scheme",
                hint="write e.g. 'shards:2' (each node gets 2 label-sorted shards)",
            )
        return Scheme("shards", shards=int(arg))
    raise ShoalError(
        f"unknown partition scheme {text!r}", code="partition.scheme", hint=_SCHEME_HELP
    )


def split_indices(
    n_samples: int,
    n_nodes: int,
    scheme: str | Scheme,
    seed: int,
    labels: npt.ArrayLike | None = None,
) -> list[IndexArray]:
    """Decide which samples go to which node.

    Parameters
    ----------
    n_samples
        Number of samples.
    n_nodes
        Number of nodes; at most `n_samples`.
    scheme
        The scheme, as text or parsed.
    seed
        Seed of the random choices; the same inputs and seed give the same split.
    labels
        One label per sample (any sortable values); required unless the scheme is iid.

    Returns
    -------
    list of numpy.ndarray
        ``result[i]`` holds the sorted sample indices of node ``i``; every sample is in
        exactly one share and no share is empty.

    Raises
    ------
    ShoalError
        For a bad scheme, missing labels or fewer samples than nodes (see `partition`,
        which words these errors for a dataset).
    """
    sch = parse_scheme(scheme)
    arr = None if labels is None else np.asarray(labels)
    return _split("the samples", sch, n_samples, n_nodes, seed, arr)


def partition(
    source: Path, n_nodes: int, scheme: str | Scheme, seed: int, out_dir: Path, name: str
) -> list[Path]:
    """Write one share of a dataset per node.

    Parameters
    ----------
    source
        A ``.npz``, ``.npy``, ``.csv`` or ``.parquet`` file, or a folder of files.
    n_nodes
        Number of nodes; the dataset needs at least this many samples.
    scheme
        ``"iid"``, ``"dirichlet:ALPHA"`` or ``"shards:K"`` (see the module docstring).
    seed
        Seed of the split; the same inputs and seed write the same shares.
    out_dir
        Where the shares go: node ``i``'s share is
        ``out_dir / f"node-{i:05d}" / source.name``. An existing share at that path is
        replaced. Two datasets whose sources have the same file name need different
        `out_dir` values.
    name
        The dataset's name, used in error messages.

    Returns
    -------
    list of pathlib.Path
        The path of every node's share; the list index is the node index.

    Raises
    ------
    ShoalError
        ``partition.*``: a missing source, an unsupported format, a bad scheme, a scheme
        that needs labels on data without any, or fewer samples than nodes.
    """
    source = Path(source)
    out_dir = Path(out_dir)
    what = f"dataset {name!r} ({source})"
    try:
        sch = parse_scheme(scheme)
    except ShoalError as exc:
        raise ShoalError(f"{what}: {exc.message}", code=exc.code, hint=exc.hint) from None
    if not source.exists():
        raise ShoalError(
            f"{what} does not exist",
            code="partition.source",
            hint="check the path given for this dataset",
        )
    if isinstance(n_nodes, bool) or not isinstance(n_nodes, int) or n_nodes < 1:
        raise ShoalError(
            f"{what}: cannot split over {n_nodes!r} nodes",
            code="partition.nodes",
            hint="use a whole number of nodes, at least 1",
        )
    fmt = "folder" if source.is_dir() else source.suffix.lower()
    writer = _WRITERS.get(fmt)
    if writer is None:
        raise ShoalError(
            f"{what}: cannot partition {fmt or 'extensionless'} files",
            code="partition.format",
            hint="use a .npz, .npy, .csv or .parquet file, or a folder of files (iid only)",
        )
    targets = [out_dir / f"node-{i:05d}" / source.name for i in range(n_nodes)]
    writer(_Job(source, what, sch, n_nodes, seed, targets))
    return targets


# ---------------------------------------------------------------------------- splitting


def _split(
    what: str,
    sch: Scheme,
    n_samples: int,
    n_nodes: int,
    seed: int,
    labels: npt.NDArray[Any] | None,
) -> list[IndexArray]:
    _check_sizes(what, sch, n_samples, n_nodes)
    rng = np.random.default_rng(seed)
    if sch.kind == "iid":
        node_of = _iid(n_samples, n_nodes, rng)
    elif labels is None:
        raise ShoalError(
            f"{what}: scheme '{sch}' needs labels",
            code="partition.labels",
            hint="pass one label per sample",
        )
    else:
        codes = _label_codes(labels, n_samples, what)
        if sch.kind == "dirichlet":
            _check_classes(what, sch, codes)
            node_of = _dirichlet(codes, n_nodes, sch.alpha, rng)
        else:
            node_of = _shards(codes, n_nodes, sch.shards, rng)
    return _group(node_of, n_nodes)


def _check_sizes(what: str, sch: Scheme, n_samples: int, n_nodes: int) -> None:
    if n_nodes < 1:
        raise ShoalError(
            f"{what}: cannot split over {n_nodes} nodes",
            code="partition.nodes",
            hint="use at least 1 node",
        )
    if n_samples < n_nodes:
        raise ShoalError(
            f"{what} has {n_samples} samples, fewer than the {n_nodes} nodes, "
            "so some node would get nothing",
            code="partition.too_few",
            hint=f"use at most {n_samples} nodes or a larger dataset",
        )
    if sch.kind == "shards" and n_samples < n_nodes * sch.shards:
        raise ShoalError(
            f"{what} has {n_samples} samples, too few for scheme '{sch}' over {n_nodes} "
            f"nodes ({n_nodes * sch.shards} shards)",
            code="partition.too_few",
            hint=f"use fewer shards per node (at most {n_samples // n_nodes}) or fewer nodes",
        )


def _label_codes(labels: npt.NDArray[Any], n_samples: int, what: str) -> IndexArray:
    if labels.ndim != 1 or labels.shape[0] != n_samples:
        raise ShoalError(
            f"{what}: the labels have shape {labels.shape}, expected ({n_samples},)",
            code="partition.labels",
            hint="give exactly one label per sample",
        )
    try:
        _, codes = np.unique(labels, return_inverse=True)
    except TypeError as exc:
        raise ShoalError(
            f"{what}: the labels cannot be compared with each other ({exc})",
            code="partition.labels",
            hint="use labels of one type (all numbers or all strings), without missing values",
        ) from None
    return codes.reshape(-1).astype(np.intp, copy=False)


def _check_classes(what: str, sch: Scheme, codes: IndexArray) -> None:
    # A continuous target (one "class" per value) would make the split meaningless, and
    # its cost grows with classes x nodes.
    n_classes = int(codes.max()) + 1 if codes.size else 0
    if n_classes > MAX_DIRICHLET_CLASSES and 2 * n_classes > codes.size:
        raise ShoalError(
            f"{what} has {n_classes} distinct labels over {codes.size} samples; scheme "
            f"'{sch}' needs class labels, and these look continuous",
            code="partition.labels",
            hint="bin the target into classes, or use 'shards:K' (sorts by value) or 'iid'",
        )


def _equal_counts(n: int, parts: int) -> IndexArray:
    counts = np.full(parts, n // parts, dtype=np.intp)
    counts[: n % parts] += 1
    return counts


def _iid(n_samples: int, n_nodes: int, rng: np.random.Generator) -> IndexArray:
    node_of = np.empty(n_samples, dtype=np.intp)
    node_of[rng.permutation(n_samples)] = np.repeat(
        np.arange(n_nodes, dtype=np.intp), _equal_counts(n_samples, n_nodes)
    )
    return node_of


def _dirichlet(
    codes: IndexArray, n_nodes: int, alpha: float, rng: np.random.Generator
) -> IndexArray:
    n_samples = codes.shape[0]
    # Samples of each class, in a seeded random order.
    order = rng.permutation(n_samples)
    order = order[np.argsort(codes[order], kind="stable")]
    class_sizes = np.bincount(codes)
    class_starts = np.concatenate(([0], np.cumsum(class_sizes)))
    node_of = np.empty(n_samples, dtype=np.intp)
    nodes = np.arange(n_nodes, dtype=np.intp)
    for _ in range(DIRICHLET_TRIES):
        for c, size in enumerate(class_sizes.tolist()):
            if size == 0:
                continue
            p = rng.dirichlet(np.full(n_nodes, alpha))
            if not np.all(np.isfinite(p)) or p.sum() <= 0:  # underflow at tiny alpha
                p = np.zeros(n_nodes)
                p[rng.integers(n_nodes)] = 1.0
            # Cut the class at the cumulative proportions: node j gets floor-rounded
            # boundaries, so the counts sum exactly to the class size.
            bounds = np.floor(np.cumsum(p) / p.sum() * size).astype(np.intp)
            bounds[-1] = size
            counts = np.diff(np.concatenate(([0], bounds)))
            start = int(class_starts[c])
            node_of[order[start : start + size]] = np.repeat(nodes, counts)
        if np.bincount(node_of, minlength=n_nodes).min() >= 1:
            return node_of
    return _fill_empty(node_of, n_nodes, rng)


def _fill_empty(node_of: IndexArray, n_nodes: int, rng: np.random.Generator) -> IndexArray:
    """Give each empty node one sample, taken from the largest nodes first."""
    counts = np.bincount(node_of, minlength=n_nodes)
    empty = np.flatnonzero(counts == 0)
    if empty.size == 0:
        return node_of
    n_samples = node_of.shape[0]
    # Rank of every sample inside its node, in a random order. A node keeps its rank-0
    # sample; taking the highest ranks first levels the largest nodes down, so the
    # label skew of the draw is disturbed as little as possible.
    shuffled = rng.permutation(n_samples)
    by_node = shuffled[np.argsort(node_of[shuffled], kind="stable")]
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.empty(n_samples, dtype=np.intp)
    rank[by_node] = np.arange(n_samples) - np.repeat(starts, counts)
    donors = np.argsort(-rank, kind="stable")[: empty.size]
    node_of = node_of.copy()
    node_of[donors] = empty
    return node_of


def _shards(codes: IndexArray, n_nodes: int, per_node: int, rng: np.random.Generator) -> IndexArray:
    n_samples = codes.shape[0]
    n_shards = n_nodes * per_node
    # Sort by label (random order inside a class), cut into shards, deal shards out.
    order = rng.permutation(n_samples)
    order = order[np.argsort(codes[order], kind="stable")]
    shard_of_position = np.repeat(
        np.arange(n_shards, dtype=np.intp), _equal_counts(n_samples, n_shards)
    )
    node_of_shard = np.empty(n_shards, dtype=np.intp)
    node_of_shard[rng.permutation(n_shards)] = np.arange(n_shards) // per_node
    node_of = np.empty(n_samples, dtype=np.intp)
    node_of[order] = node_of_shard[shard_of_position]
    return node_of


def _group(node_of: IndexArray, n_nodes: int) -> list[IndexArray]:
    order = np.argsort(node_of, kind="stable").astype(np.intp, copy=False)
    counts = np.bincount(node_of, minlength=n_nodes)
    return list(np.split(order, np.cumsum(counts)[:-1]))


# ---------------------------------------------------------------------------- formats


@dataclass(frozen=True)
class _Job:
    source: Path
    what: str
    scheme: Scheme
    n_nodes: int
    seed: int
    targets: list[Path]

    def split(self, n_samples: int, labels: npt.NDArray[Any] | None) -> list[IndexArray]:
        return _split(self.what, self.scheme, n_samples, self.n_nodes, self.seed, labels)

    def no_labels(self, why: str) -> ShoalError:
        return ShoalError(
            f"{self.what}: scheme '{self.scheme}' needs labels; {why}",
            code="partition.labels",
            hint=f"{_LABEL_HINT}, or use partition='iid'",
        )

    def unreadable(self, exc: Exception) -> ShoalError:
        return ShoalError(
            f"{self.what} cannot be read: {exc}",
            code="partition.read",
            hint="check that the file is complete and in the format its extension says",
        )

    def prepare(self, target: Path) -> None:
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)


def _write_npz(job: _Job) -> None:
    try:
        with np.load(job.source, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as exc:
        raise job.unreadable(exc) from None
    label_key = next((k for k in NPZ_LABEL_NAMES if k in arrays), None)
    lengths = [a.shape[0] for a in arrays.values() if a.ndim >= 1]
    if label_key is not None:
        n_samples = arrays[label_key].shape[0] if arrays[label_key].ndim >= 1 else 0
    elif lengths:
        # No labels: the sample axis is the most common first dimension (ties: larger).
        values, freq = np.unique(lengths, return_counts=True)
        n_samples = int(values[freq == freq.max()].max())
    else:
        n_samples = 0
    if job.scheme.needs_labels and label_key is None:
        names = ", ".join(repr(k) for k in arrays) or "none"
        raise job.no_labels(f"it has no array named 'y', 'label', 'labels' or 'target' ({names})")
    labels = arrays[label_key] if label_key is not None else None
    shares = job.split(n_samples, labels)
    split = {k for k, a in arrays.items() if a.ndim >= 1 and a.shape[0] == n_samples}
    for idx, target in zip(shares, job.targets, strict=True):
        job.prepare(target)
        part = {k: (a[idx] if k in split else a) for k, a in arrays.items()}
        with target.open("wb") as f:
            np.savez(f, **part)


def _write_npy(job: _Job) -> None:
    if job.scheme.needs_labels:
        raise job.no_labels("a .npy file holds one array without labels")
    try:
        array = np.load(job.source, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise job.unreadable(exc) from None
    n_samples = array.shape[0] if array.ndim >= 1 else 0
    for idx, target in zip(job.split(n_samples, None), job.targets, strict=True):
        job.prepare(target)
        np.save(target, np.asarray(array[idx]))
    del array


def _table_label(job: _Job, columns: list[str]) -> str | None:
    if job.scheme.label is not None:  # named by the user: it must exist
        if job.scheme.label in columns:
            return job.scheme.label
        raise job.no_labels(f"it has no label column {job.scheme.label!r} (columns: {columns})")
    for wanted in TABLE_LABEL_NAMES:
        if wanted in columns:
            return wanted
    for wanted in TABLE_LABEL_NAMES:
        for col in columns:
            if col.strip().lower() == wanted:
                return col
    if job.scheme.needs_labels:
        shown = ", ".join(repr(c) for c in columns[:10]) + (", ..." if len(columns) > 10 else "")
        raise job.no_labels(
            f"it has no column named 'label', 'target', 'y' or 'class' (columns: {shown})"
        )
    return None


def _write_csv(job: _Job) -> None:
    try:
        import pandas as pd
    except ImportError:
        raise ShoalError(
            f"{job.what}: reading .csv files needs pandas",
            code="partition.format",
            hint="pip install pandas",
        ) from None
    try:
        # Read every field as text so that writing it back does not reformat numbers.
        frame = pd.read_csv(job.source, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise job.unreadable(exc) from None
    columns = [str(c) for c in frame.columns]
    label = _table_label(job, columns)
    labels = frame[label].to_numpy(dtype=str) if label is not None else None
    shares = job.split(len(frame), labels)
    header = frame.iloc[:0].to_csv(index=False, lineterminator="\n")
    body = frame.to_csv(index=False, header=False, lineterminator="\n")
    if body.count("\n") == len(frame):
        # Every row is one line (no quoted line breaks): format once, then cut lines.
        lines = np.array(body.split("\n")[:-1], dtype=object)
        for idx, target in zip(shares, job.targets, strict=True):
            job.prepare(target)
            target.write_text(header + "\n".join(lines[idx]) + "\n", encoding="utf-8", newline="")
        return
    for idx, target in zip(shares, job.targets, strict=True):
        job.prepare(target)
        frame.iloc[idx].to_csv(target, index=False, lineterminator="\n")


def _write_parquet(job: _Job) -> None:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ShoalError(
            f"{job.what}: reading .parquet files needs pyarrow",
            code="partition.format",
            hint="pip install pyarrow, or convert the dataset to .csv",
        ) from None
    try:
        table = pq.read_table(job.source)
    except Exception as exc:
        raise job.unreadable(exc) from None
    label = _table_label(job, list(table.column_names))
    labels = None
    if label is not None:
        labels = np.asarray(table.column(label).to_numpy(zero_copy_only=False))
    for idx, target in zip(job.split(table.num_rows, labels), job.targets, strict=True):
        job.prepare(target)
        pq.write_table(table.take(idx), target)


def _write_folder(job: _Job) -> None:
    if job.scheme.needs_labels:
        raise job.no_labels("a folder's files carry no labels")
    files = sorted(p.relative_to(job.source) for p in job.source.rglob("*") if p.is_file())
    if len(files) < job.n_nodes:
        raise ShoalError(
            f"{job.what} has {len(files)} files, fewer than the {job.n_nodes} nodes, "
            "so some node would get nothing",
            code="partition.too_few",
            hint=f"use at most {len(files)} nodes or split the data into more files",
        )
    for idx, target in zip(job.split(len(files), None), job.targets, strict=True):
        job.prepare(target)
        target.mkdir()
        for i in idx.tolist():
            dest = target / files[i]
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(job.source / files[i], dest)


_WRITERS = {
    ".npz": _write_npz,
    ".npy": _write_npy,
    ".csv": _write_csv,
    ".parquet": _write_parquet,
    "folder": _write_folder,
}
