"""Dataset partitioning for the simulator: schemes, formats, determinism, errors."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal._data.partition import Scheme, parse_scheme, partition, split_indices
from shoal._errors import ShoalError

SCHEMES = ["iid", "dirichlet:0.5", "shards:2"]
N_NODES = 7


# ---------------------------------------------------------------------------- helpers


def labelled(n: int = 300, n_classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    rng.shuffle(y)
    # Row i carries its own index in column 0, so shares can be traced back.
    X = np.column_stack([np.arange(n), rng.random((n, 3))]).astype(np.float64)
    return X, y


def digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        for f in files:
            if f.is_file():
                h.update(str(f.relative_to(p.parent)).encode())
                h.update(f.read_bytes())
    return h.hexdigest()


def label_skew(shares: list[np.ndarray], y: np.ndarray) -> float:
    """Mean total-variation distance between each node's label mix and the global one."""
    classes = np.unique(y)
    overall = np.array([(y == c).mean() for c in classes])
    dists = []
    for idx in shares:
        mix = np.array([(y[idx] == c).mean() for c in classes])
        dists.append(0.5 * np.abs(mix - overall).sum())
    return float(np.mean(dists))


def check_cover(shares: list[np.ndarray], n: int, n_nodes: int) -> None:
    assert len(shares) == n_nodes
    assert all(len(s) >= 1 for s in shares)
    assert all(np.all(np.diff(s) > 0) for s in shares)  # source order kept
    np.testing.assert_array_equal(np.sort(np.concatenate(shares)), np.arange(n))


# ---------------------------------------------------------------------------- schemes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("iid", Scheme("iid")),
        (" IID ", Scheme("iid")),
        ("dirichlet:0.5", Scheme("dirichlet", alpha=0.5)),
        ("Dirichlet: 1e-1", Scheme("dirichlet", alpha=0.1)),
        ("shards:2", Scheme("shards", shards=2)),
    ],
)
def test_parse_scheme(text: str, expected: Scheme) -> None:
    assert parse_scheme(text) == expected
    assert parse_scheme(str(expected)) == expected
    assert parse_scheme(expected) is expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "unknown partition scheme"),
        ("random", "unknown partition scheme"),
        ("iid:3", "unknown partition scheme"),
        ("dirichlet", "unknown partition scheme"),
        ("dirichlet:0", "alpha must be a positive number"),
        ("dirichlet:-1", "alpha must be a positive number"),
        ("dirichlet:abc", "alpha must be a positive number"),
        ("dirichlet:inf", "alpha must be a positive number"),
        ("dirichlet:nan", "alpha must be a positive number"),
        ("shards:0", "K must be a positive whole number"),
        ("shards:1.5", "K must be a positive whole number"),
        ("shards:", "K must be a positive whole number"),
    ],
)
def test_parse_scheme_rejects(text: str, fragment: str) -> None:
    with pytest.raises(ShoalError) as info:
        parse_scheme(text)
    assert info.value.code == "partition.scheme"
    assert fragment in str(info.value)
    assert info.value.hint


# ---------------------------------------------------------------------------- splitting


@pytest.mark.parametrize("scheme", SCHEMES)
def test_split_covers_every_sample_once(scheme: str) -> None:
    _, y = labelled()
    shares = split_indices(len(y), N_NODES, scheme, seed=3, labels=y)
    check_cover(shares, len(y), N_NODES)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_split_is_deterministic_per_seed(scheme: str) -> None:
    _, y = labelled()
    a = split_indices(len(y), N_NODES, scheme, seed=1, labels=y)
    b = split_indices(len(y), N_NODES, scheme, seed=1, labels=y)
    c = split_indices(len(y), N_NODES, scheme, seed=2, labels=y)
    assert all(np.array_equal(x, z) for x, z in zip(a, b, strict=True))
    assert not all(np.array_equal(x, z) for x, z in zip(a, c, strict=True))


def test_iid_sizes_are_near_equal() -> None:
    shares = split_indices(1003, 10, "iid", seed=0)
    sizes = [len(s) for s in shares]
    assert sum(sizes) == 1003
    assert max(sizes) - min(sizes) <= 1


def test_dirichlet_small_alpha_is_skewed() -> None:
    _, y = labelled(n=2000)
    iid = label_skew(split_indices(len(y), 20, "iid", 0, labels=y), y)
    skewed = label_skew(split_indices(len(y), 20, "dirichlet:0.1", 0, labels=y), y)
    flat = label_skew(split_indices(len(y), 20, "dirichlet:1000", 0, labels=y), y)
    assert iid < 0.2
    assert flat < 0.2
    assert skewed > 0.5
    # With alpha 0.1 most nodes are dominated by a few classes.
    shares = split_indices(len(y), 20, "dirichlet:0.1", 0, labels=y)
    top = [Counter(y[s].tolist()).most_common(1)[0][1] / len(s) for s in shares]
    assert np.median(top) > 0.5


def test_dirichlet_leaves_no_node_empty_when_tight() -> None:
    # As many samples as nodes and a tiny alpha: redraws cannot help, samples are moved.
    y = np.repeat(np.arange(5), 10)
    shares = split_indices(len(y), 50, "dirichlet:0.01", seed=0, labels=y)
    check_cover(shares, 50, 50)
    assert all(len(s) == 1 for s in shares)
    shares = split_indices(len(y), 40, "dirichlet:0.05", seed=4, labels=y)
    check_cover(shares, 50, 40)


def test_dirichlet_scales_to_ten_thousand_nodes() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 30_000)
    shares = split_indices(len(y), 10_000, "dirichlet:0.1", seed=0, labels=y)
    check_cover(shares, len(y), 10_000)


def test_shards_give_each_node_few_classes() -> None:
    y = np.repeat(np.arange(10), 100)
    shares = split_indices(len(y), 10, "shards:2", seed=0, labels=y)
    check_cover(shares, len(y), 10)
    assert all(len(s) == 100 for s in shares)
    assert all(len(np.unique(y[s])) <= 2 for s in shares)


def test_string_labels() -> None:
    y = np.array(["cat", "dog", "eel"] * 20)
    for scheme in SCHEMES:
        check_cover(split_indices(len(y), 6, scheme, 0, labels=y), len(y), 6)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 400),
    data=st.data(),
    scheme=st.sampled_from(["iid", "dirichlet:0.05", "dirichlet:2", "shards:1", "shards:3"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_split_property(n: int, data: st.DataObject, scheme: str, seed: int) -> None:
    per_node = parse_scheme(scheme).shards or 1
    if n < per_node:
        return
    n_nodes = data.draw(st.integers(1, n // per_node))
    y = data.draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    shares = split_indices(n, n_nodes, scheme, seed, labels=np.array(y))
    check_cover(shares, n, n_nodes)


# ---------------------------------------------------------------------------- formats


def write_source(tmp: Path, fmt: str, n: int = 300) -> tuple[Path, np.ndarray, np.ndarray]:
    X, y = labelled(n)
    if fmt == "npz":
        path = tmp / "data.npz"
        np.savez(path, X=X, y=y, classes=np.array([f"c{i}" for i in range(10)]))
    elif fmt == "npy":
        path = tmp / "data.npy"
        np.save(path, X)
    else:
        frame = pd.DataFrame({"row": np.arange(n), "f": X[:, 1], "label": y})
        path = tmp / f"data.{fmt}"
        if fmt == "csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
    return path, X, y


def read_share(path: Path, fmt: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Row ids and labels of one share."""
    if fmt == "npz":
        with np.load(path) as npz:
            assert npz["X"].shape[0] == npz["y"].shape[0]
            assert list(npz["classes"]) == [f"c{i}" for i in range(10)]  # copied whole
            return npz["X"][:, 0].astype(int), npz["y"]
    if fmt == "npy":
        return np.load(path)[:, 0].astype(int), None
    frame = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
    assert list(frame.columns) == ["row", "f", "label"]
    return frame["row"].to_numpy(), frame["label"].to_numpy()


FORMAT_SCHEMES = [
    (fmt, scheme)
    for fmt in ["npz", "npy", "csv", "parquet"]
    for scheme in SCHEMES
    if fmt != "npy" or scheme == "iid"
]


@pytest.mark.parametrize(("fmt", "scheme"), FORMAT_SCHEMES)
def test_format_scheme(tmp_path: Path, fmt: str, scheme: str) -> None:
    source, _, y = write_source(tmp_path, fmt)
    out = tmp_path / "out"
    paths = partition(source, N_NODES, scheme, 5, out, "data")
    assert paths == [out / f"node-{i:05d}" / source.name for i in range(N_NODES)]
    rows = []
    for p in paths:
        ids, labels = read_share(p, fmt)
        assert len(ids) >= 1
        assert np.all(np.diff(ids) > 0)
        if labels is not None:
            np.testing.assert_array_equal(labels, y[ids])  # rows stay whole
        rows.append(ids)
    np.testing.assert_array_equal(np.sort(np.concatenate(rows)), np.arange(len(y)))
    # The files hold exactly the shares split_indices computes.
    expected = split_indices(len(y), N_NODES, scheme, 5, labels=y)
    assert all(np.array_equal(a, b) for a, b in zip(rows, expected, strict=True))


@pytest.mark.parametrize(("fmt", "scheme"), FORMAT_SCHEMES)
def test_format_deterministic(tmp_path: Path, fmt: str, scheme: str) -> None:
    source, _, _ = write_source(tmp_path, fmt)
    a = digest(partition(source, N_NODES, scheme, 1, tmp_path / "a", "data"))
    b = digest(partition(source, N_NODES, scheme, 1, tmp_path / "b", "data"))
    c = digest(partition(source, N_NODES, scheme, 2, tmp_path / "c", "data"))
    again = digest(partition(source, N_NODES, scheme, 1, tmp_path / "a", "data"))
    assert a == b == again
    assert a != c


def test_csv_fields_are_copied_as_text(tmp_path: Path) -> None:
    source = tmp_path / "t.csv"
    source.write_text('id,x,note,target\n1,0.10,"a, b",u\n2,1e3,,v\n3,007,"line\nbreak",u\n')
    paths = partition(source, 2, "iid", 0, tmp_path / "out", "t")
    text = "".join(p.read_text() for p in paths)
    for field in ["0.10", "1e3", "007", '"a, b"', '"line\nbreak"']:
        assert field in text
    assert all(p.read_text().startswith("id,x,note,target\n") for p in paths)


def test_npz_without_labels_uses_common_length(tmp_path: Path) -> None:
    source = tmp_path / "d.npz"
    np.savez(source, a=np.arange(20), b=np.ones((20, 2)), meta=np.arange(3))
    paths = partition(source, 4, "iid", 0, tmp_path / "out", "d")
    total = 0
    for p in paths:
        with np.load(p) as npz:
            assert npz["a"].shape[0] == npz["b"].shape[0] == 5
            assert list(npz["meta"]) == [0, 1, 2]
            total += npz["a"].shape[0]
    assert total == 20


def test_folder_iid(tmp_path: Path) -> None:
    source = tmp_path / "texts"
    (source / "sub").mkdir(parents=True)
    names = [f"f{i:02d}.txt" for i in range(9)] + ["sub/deep.txt"]
    for name in names:
        (source / name).write_text(f"content of {name}")
    paths = partition(source, 3, "iid", 0, tmp_path / "out", "texts")
    assert [p.name for p in paths] == ["texts"] * 3
    seen = []
    for p in paths:
        assert p.is_dir()
        files = [f for f in p.rglob("*") if f.is_file()]
        assert 3 <= len(files) <= 4
        for f in files:
            rel = f.relative_to(p).as_posix()
            assert f.read_text() == f"content of {rel}"
            seen.append(rel)
    assert sorted(seen) == sorted(names)
    # Running again replaces the shares instead of mixing old and new files.
    again = partition(source, 3, "iid", 1, tmp_path / "out", "texts")
    assert sum(len([f for f in p.rglob("*") if f.is_file()]) for p in again) == 10


def test_many_nodes_write(tmp_path: Path) -> None:
    source = tmp_path / "big.npz"
    rng = np.random.default_rng(0)
    np.savez(source, X=rng.random((3000, 4)), y=rng.integers(0, 10, 3000))
    paths = partition(source, 1000, "dirichlet:0.3", 0, tmp_path / "out", "big")
    assert len(paths) == 1000
    sizes = []
    for p in paths:
        with np.load(p) as npz:
            sizes.append(npz["y"].shape[0])
    assert min(sizes) >= 1
    assert sum(sizes) == 3000


# ---------------------------------------------------------------------------- errors


def error_of(*args: object) -> ShoalError:
    with pytest.raises(ShoalError) as info:
        partition(*args)  # type: ignore[arg-type]
    return info.value


def test_labels_needed_on_npy(tmp_path: Path) -> None:
    source, _, _ = write_source(tmp_path, "npy")
    err = error_of(source, 3, "dirichlet:0.5", 0, tmp_path / "out", "digits")
    assert err.code == "partition.labels"
    text = str(err)
    assert "'digits'" in text and "data.npy" in text and "dirichlet:0.5" in text
    assert "needs labels" in text
    assert "use a .npz with a 'y' array or a .csv with a 'label' column" in text
    assert not (tmp_path / "out").exists()


def test_labels_needed_on_folder(tmp_path: Path) -> None:
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "a.txt").write_text("x")
    err = error_of(tmp_path / "f", 1, "shards:1", 0, tmp_path / "out", "texts")
    assert err.code == "partition.labels"
    assert "'texts'" in str(err) and "shards:1" in str(err)


def test_missing_label_column_lists_columns(tmp_path: Path) -> None:
    source = tmp_path / "t.csv"
    pd.DataFrame({"a": range(10), "b": range(10)}).to_csv(source, index=False)
    err = error_of(source, 2, "dirichlet:1", 0, tmp_path / "out", "t")
    assert err.code == "partition.labels"
    assert "'a', 'b'" in str(err) and "'label'" in str(err)
    # iid does not need labels.
    assert len(partition(source, 2, "iid", 0, tmp_path / "out", "t")) == 2


def test_missing_label_array_lists_arrays(tmp_path: Path) -> None:
    source = tmp_path / "d.npz"
    np.savez(source, X=np.zeros((10, 2)), targets=np.zeros(10))
    err = error_of(source, 2, "shards:1", 0, tmp_path / "out", "d")
    assert err.code == "partition.labels"
    assert "'X', 'targets'" in str(err)


def test_label_column_found_case_insensitively(tmp_path: Path) -> None:
    source = tmp_path / "t.csv"
    pd.DataFrame({"x": range(20), "Class": [0, 1] * 10}).to_csv(source, index=False)
    paths = partition(source, 2, "shards:1", 0, tmp_path / "out", "t")
    assert [pd.read_csv(p)["Class"].nunique() for p in paths] == [1, 1]


@pytest.mark.parametrize("fmt", ["npz", "csv", "parquet", "npy"])
def test_fewer_samples_than_nodes(tmp_path: Path, fmt: str) -> None:
    source, _, _ = write_source(tmp_path, fmt, n=5)
    err = error_of(source, 6, "iid", 0, tmp_path / "out", "small")
    assert err.code == "partition.too_few"
    assert "'small'" in str(err) and "5 samples" in str(err) and "6 nodes" in str(err)
    assert "at most 5 nodes" in str(err)


def test_too_few_for_shards(tmp_path: Path) -> None:
    source, _, _ = write_source(tmp_path, "npz", n=20)
    err = error_of(source, 5, "shards:5", 0, tmp_path / "out", "d")
    assert err.code == "partition.too_few"
    assert "shards:5" in str(err) and "at most 4" in str(err)


def test_too_few_files(tmp_path: Path) -> None:
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "a.txt").write_text("x")
    err = error_of(tmp_path / "f", 2, "iid", 0, tmp_path / "out", "texts")
    assert err.code == "partition.too_few"
    assert "1 files" in str(err)


def test_bad_scheme_names_the_dataset(tmp_path: Path) -> None:
    source, _, _ = write_source(tmp_path, "npz")
    err = error_of(source, 2, "dirichlet:0", 0, tmp_path / "out", "digits")
    assert err.code == "partition.scheme"
    assert "'digits'" in str(err) and "alpha" in str(err)
    err = error_of(source, 2, "powerlaw", 0, tmp_path / "out", "digits")
    assert "unknown partition scheme 'powerlaw'" in str(err)
    assert "dirichlet:ALPHA" in str(err)


def test_unsupported_and_missing_sources(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    err = error_of(tmp_path / "notes.txt", 1, "iid", 0, tmp_path / "out", "notes")
    assert err.code == "partition.format"
    assert ".txt" in str(err) and "folder" in str(err)
    err = error_of(tmp_path / "absent.npz", 1, "iid", 0, tmp_path / "out", "absent")
    assert err.code == "partition.source"
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    err = error_of(tmp_path / "broken.npz", 1, "iid", 0, tmp_path / "out", "broken")
    assert err.code == "partition.read"


@pytest.mark.parametrize("n_nodes", [0, -1, True, 2.5])
def test_bad_node_count(tmp_path: Path, n_nodes: object) -> None:
    source, _, _ = write_source(tmp_path, "npz")
    err = error_of(source, n_nodes, "iid", 0, tmp_path / "out", "d")
    assert err.code == "partition.nodes"


def test_continuous_target_refused_for_dirichlet() -> None:
    y = np.linspace(0, 1, 5000)
    with pytest.raises(ShoalError) as info:
        split_indices(len(y), 10, "dirichlet:0.5", 0, labels=y)
    assert info.value.code == "partition.labels"
    assert "continuous" in str(info.value)
    check_cover(split_indices(len(y), 10, "shards:2", 0, labels=y), len(y), 10)


def test_errors_are_picklable() -> None:
    import pickle

    with pytest.raises(ShoalError) as info:
        parse_scheme("nope")
    again = pickle.loads(pickle.dumps(info.value))
    assert again.code == "partition.scheme" and str(again) == str(info.value)
