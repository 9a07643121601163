"""Tests for depthlab.data: built-in data sets, splits, standardization, user files, errors."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

from depthlab.backend import rng
from depthlab.data import (
    DATASETS,
    Dataset,
    list_datasets,
    load_dataset,
    make_clusters,
    make_shapeset,
    make_spirals,
    read_idx,
    write_idx,
)
from depthlab.data import fashion_mnist as fmnist_mod
from depthlab.data.shapeset import (
    CLASS_NAMES,
    EXPECTED_FREQUENCIES,
    _extents,
    _sample_poses,
    rasterize,
)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Keep the mnist5k cache out of the user's home during tests (one folder per session)."""
    monkeypatch.setenv("DEPTHLAB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _rows(a: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in np.ascontiguousarray(a)}


def _all(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.concatenate([ds.x_train, ds.x_val, ds.x_test]),
        np.concatenate([ds.y_train, ds.y_val, ds.y_test]),
    )


# --------------------------------------------------------------------------- built-ins

BUILTIN_CASES = [
    ("mnist5k", {}, 5000, 784, 10),
    ("digits", {}, 1797, 64, 10),
    ("mnist1d", {"n": 400}, 400, 40, 10),
    ("shapeset", {"n": 500}, 500, 1024, 9),
    ("clusters", {"n": 500}, 500, 64, 10),
    ("spirals", {"n": 300}, 300, 2, 2),
]


@pytest.mark.parametrize("name,kw,total,d,k", BUILTIN_CASES, ids=[c[0] for c in BUILTIN_CASES])
def test_builtin_shapes_dtypes_and_classes(name, kw, total, d, k):
    ds = load_dataset(name, seed=1, **kw)
    assert ds.name == name
    assert ds.n_features == d and ds.n_classes == k
    sizes = ds.sizes
    assert sum(sizes.values()) == total
    assert sizes["test"] == round(0.2 * total) and sizes["val"] == round(0.1 * total)
    for split in ("train", "val", "test"):
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.ndim == 2 and x.shape[1] == d and y.shape == (x.shape[0],)
        assert np.isfinite(x).all()
    _, y = _all(ds)
    assert y.min() >= 0 and y.max() < k
    assert len(np.unique(y)) == k  # every class occurs


def test_pixel_ranges_and_image_shapes():
    m = load_dataset("mnist5k")
    assert m.info["image_shape"] == (28, 28)
    assert m.x_train.min() == 0.0 and m.x_train.max() == 1.0
    dg = load_dataset("digits")
    assert dg.info["image_shape"] == (8, 8) and dg.x_train.max() == 1.0
    # digits pixels are k/16
    assert np.allclose(dg.x_train * 16, np.round(dg.x_train * 16), atol=1e-5)


def test_float64_on_request():
    ds = load_dataset("clusters", n=200, dtype="float64")
    assert ds.x_train.dtype == np.float64
    ds = load_dataset("mnist5k", n=300, dtype="float64")
    assert ds.x_train.dtype == np.float64
    assert np.allclose(ds.x_train * 255, np.round(ds.x_train * 255))


@pytest.mark.parametrize("name,kw", [("mnist5k", {"n": 1000}), ("shapeset", {"n": 300}),
                                     ("mnist1d", {"n": 200}), ("clusters", {"n": 300}),
                                     ("spirals", {"n": 300}), ("digits", {})])
def test_determinism_from_seed(name, kw):
    a = load_dataset(name, seed=7, **kw)
    b = load_dataset(name, seed=7, **kw)
    c = load_dataset(name, seed=8, **kw)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, f"x_{split}"), getattr(b, f"x_{split}"))
        np.testing.assert_array_equal(getattr(a, f"y_{split}"), getattr(b, f"y_{split}"))
    assert not np.array_equal(a.x_train, c.x_train)


@pytest.mark.parametrize("name,kw", [("mnist5k", {}), ("clusters", {"n": 600}), ("digits", {})])
def test_splits_are_disjoint_and_cover(name, kw):
    ds = load_dataset(name, seed=3, **kw)
    tr, va, te = _rows(ds.x_train), _rows(ds.x_val), _rows(ds.x_test)
    assert not (tr & va) and not (tr & te) and not (va & te)
    # splits of the full set cover all distinct rows
    full = load_dataset(name, seed=3, val_fraction=0.0, test_fraction=0.0, **kw)
    assert tr | va | te == _rows(full.x_train)


def test_mnist5k_is_shuffled_and_cached():
    cache = os.environ["DEPTHLAB_CACHE"]
    ds = load_dataset("mnist5k", seed=0)
    assert set(np.unique(ds.y_val)) == set(range(10))
    assert set(np.unique(ds.y_test)) == set(range(10))
    assert len(np.unique(ds.y_train[:50])) > 5  # not sorted by class
    assert os.path.isfile(os.path.join(cache, "mnist5k.npz"))
    assert not [f for f in os.listdir(cache) if f.endswith(".tmp")]  # atomic write left no temp
    # a second load (from the cache) is identical
    again = load_dataset("mnist5k", seed=0)
    np.testing.assert_array_equal(again.x_train, ds.x_train)


def test_n_subsamples_fixed_data_sets():
    ds = load_dataset("mnist5k", n=1000, seed=2)
    assert sum(ds.sizes.values()) == 1000
    with pytest.raises(ValueError, match="larger than the 5000"):
        load_dataset("mnist5k", n=6000)


def test_mnist1d_leaves_global_rng_alone():
    np_state = np.random.get_state()[1].copy()
    load_dataset("mnist1d", n=50, seed=3)
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)


def test_clusters_and_spirals_options():
    ds = load_dataset("clusters", n=300, d=5, n_classes=3, separation=10.0)
    assert ds.n_features == 5 and ds.n_classes == 3
    x, y, means = make_clusters(3000, rng(0), d=5, n_classes=3, separation=10.0)
    assert np.allclose(np.linalg.norm(means, axis=1), 10.0, rtol=1e-5)
    # class means are recovered and noise has unit variance
    for k in range(3):
        assert np.allclose(x[y == k].mean(0), means[k], atol=0.15)
    assert abs((x - means[y]).std() - 1.0) < 0.05
    xs, ys = make_spirals(400, rng(0), n_classes=4, noise=0.0)
    assert xs.shape == (400, 2) and set(ys) == {0, 1, 2, 3}
    assert np.linalg.norm(xs, axis=1).max() <= 1.0 + 1e-6  # radius t in [0, 1] without noise
    with pytest.raises(ValueError, match="noise"):
        load_dataset("spirals", noise=-1.0)


# --------------------------------------------------------------------------- standardization

def test_standardization_uses_training_statistics_only():
    raw = load_dataset("clusters", n=600, seed=4)
    ds = load_dataset("clusters", n=600, seed=4, standardize=True)
    assert np.abs(ds.x_train.mean(0)).max() < 1e-4
    assert np.allclose(ds.x_train.std(0), 1.0, atol=1e-4)
    assert np.abs(ds.x_val.mean(0)).max() > 1e-2  # val is not re-centred on itself
    mu, sd = raw.x_train.mean(0, dtype=np.float64), raw.x_train.std(0, dtype=np.float64)
    np.testing.assert_allclose(ds.x_val, (raw.x_val - mu) / sd, atol=1e-4)
    np.testing.assert_allclose(ds.x_test, (raw.x_test - mu) / sd, atol=1e-4)
    assert ds.x_train.dtype == np.float32
    np.testing.assert_allclose(ds.info["standardization"]["mean"], mu, atol=1e-5)
    # standardized() returns a new Dataset and leaves the original alone
    again = raw.standardized()
    np.testing.assert_array_equal(again.x_val, ds.x_val)
    assert np.abs(raw.x_train.mean(0)).max() > 0.05


def test_standardization_constant_features():
    ds = load_dataset("digits", seed=0).standardized()
    assert np.isfinite(ds.x_train).all() and np.isfinite(ds.x_test).all()
    std = ds.info["standardization"]["std"]
    const = np.flatnonzero(load_dataset("digits", seed=0).x_train.std(0) == 0)
    assert const.size > 0
    assert np.all(std[const] == 1.0)
    assert np.all(ds.x_train[:, const] == 0.0)


# --------------------------------------------------------------------------- shapeset

def test_shapeset_label_frequencies_and_pixels():
    x, y, types = make_shapeset(6000, rng(11))
    assert x.shape == (6000, 1024) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    freq = np.bincount(y, minlength=9) / y.size
    np.testing.assert_allclose(freq, EXPECTED_FREQUENCIES, atol=0.02)
    assert np.isclose(EXPECTED_FREQUENCIES.sum(), 1.0) and len(CLASS_NAMES) == 9
    # labels agree with the shapes drawn
    single = types[:, 1] < 0
    np.testing.assert_array_equal(y[single], types[single, 0])
    assert (y[~single] >= 3).all()
    # grey levels: background in [-1, -0.1] or [0.1, 1]; both polarities occur
    corner = x[:, 0]
    assert ((corner <= -0.1 + 1e-6) | (corner >= 0.1 - 1e-6)).all()
    assert 0.4 < (corner > 0).mean() < 0.6
    # one grey per object: 2 levels with one shape, 3 with two (overlap <= 50% keeps both visible)
    levels = np.array([np.unique(r).size for r in x[:300]])
    np.testing.assert_array_equal(levels, np.where(single[:300], 2, 3))


def test_shapeset_shapes_inside_and_rasterized_correctly():
    types = np.repeat(np.arange(3), 400)
    pose = _sample_poses(types, rng(0), 32)
    lo_x, hi_x, lo_y, hi_y = _extents(types, pose[:, 0], pose[:, 1], pose[:, 2])
    assert (pose[:, 3] + lo_x >= 0).all() and (pose[:, 3] + hi_x <= 32).all()
    assert (pose[:, 4] + lo_y >= 0).all() and (pose[:, 4] + hi_y <= 32).all()
    assert (pose[:, :2] >= 0.2 * 32).all() and (pose[:, :2] <= 0.8 * 32).all()
    steps = pose[:, 2] / (2 * np.pi / 255)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-9)
    # areas: triangle 1/2, parallelogram 3/4, ellipse pi/4 of s_x * s_y
    fixed = np.array([[20.0, 16.0, 0.3, 16.0, 16.0]] * 3)
    area = rasterize(np.arange(3), fixed).sum(axis=(1, 2))
    np.testing.assert_allclose(area, np.array([0.5, 0.75, np.pi / 4]) * 320, rtol=0.05)


def test_shapeset_of_ten_thousand_images():
    # its speed is a benchmark's business, not a timed test's (CI's 2 loaded cores took 6 s)
    ds = load_dataset("shapeset", n=10_000, seed=0)
    assert sum(ds.sizes.values()) == 10_000 and ds.info["image_shape"] == (32, 32)


# --------------------------------------------------------------------------- IDX

@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, suffix, dtype):
    a = (rng(0).standard_normal((5, 3, 4)) * 50).astype(dtype)
    path = write_idx(tmp_path / f"a-idx3{suffix}", a)
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype) and b.shape == (5, 3, 4)
    np.testing.assert_array_equal(a, b)
    raw = path.read_bytes()
    if suffix:
        raw = gzip.decompress(raw)
    code = {np.uint8: 8, np.int8: 9, np.int16: 11, np.int32: 12, np.float32: 13, np.float64: 14}
    assert raw[:4] == bytes([0, 0, code[dtype], 3])
    assert int.from_bytes(raw[4:8], "big") == 5  # big-endian dims


def _write_idx_pair(folder, prefix, n, gz=True, seed=0):
    g = rng(seed)
    x = g.integers(0, 256, (n, 6, 5), dtype=np.uint8)
    y = g.integers(0, 4, n).astype(np.uint8)
    ext = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", x)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", y)
    return x, y


def test_idx_folder_and_file(tmp_path):
    x, y = _write_idx_pair(tmp_path, "train", 120, gz=True)
    xt, yt = _write_idx_pair(tmp_path, "t10k", 30, gz=False, seed=1)
    ds = load_dataset(tmp_path, seed=0, val_fraction=0.25)
    assert ds.sizes == {"train": 90, "val": 30, "test": 30}
    assert ds.info["test_split"] == "official" and ds.info["image_shape"] == (6, 5)
    assert ds.n_features == 30 and ds.x_train.max() <= 1.0
    assert _rows(ds.x_test) == _rows((xt.reshape(30, -1) / np.float32(255)).astype(np.float32))
    assert _rows(np.round(ds.x_test * 255).astype(np.uint8)) == _rows(xt.reshape(30, -1))
    one = load_dataset(str(tmp_path / "train-images-idx3-ubyte.gz"), test_fraction=0.2)
    assert sum(one.sizes.values()) == 120 and one.info["test_split"] == "random"
    full = np.sort(_all(one)[1])
    np.testing.assert_array_equal(full, np.sort(y.astype(np.int64)))


def test_idx_errors(tmp_path):
    bad = tmp_path / "bad-images-idx3-ubyte"
    bad.write_bytes(b"\x08\x03\x00\x00" + bytes(20))
    (tmp_path / "bad-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 1, 0]))
    with pytest.raises(ValueError, match="bad IDX magic.*") as e:
        read_idx(bad)
    assert "bad-images-idx3-ubyte" in str(e.value)
    with pytest.raises(ValueError, match="magic"):
        load_dataset(bad)
    trunc = tmp_path / "t.idx"
    trunc.write_bytes(bytes([0, 0, 8, 2, 0, 0, 0, 4, 0, 0, 0, 4]) + bytes(10))
    with pytest.raises(ValueError, match="size mismatch"):
        read_idx(trunc)
    # images without a labels file next to them
    write_idx(tmp_path / "lonely-images-idx3-ubyte", np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(FileNotFoundError, match="lonely-labels-idx1-ubyte"):
        load_dataset(tmp_path / "lonely-images-idx3-ubyte")
    # mismatched lengths
    write_idx(tmp_path / "mm-images-idx3-ubyte", np.zeros((3, 2, 2), np.uint8))
    write_idx(tmp_path / "mm-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="mismatched lengths"):
        load_dataset(tmp_path / "mm-images-idx3-ubyte")


# --------------------------------------------------------------------------- npz / csv

def test_npz_layouts(tmp_path):
    g = rng(0)
    x = g.standard_normal((100, 3))
    y = g.integers(0, 3, 100)
    np.savez(tmp_path / "a.npz", x=x, y=y)
    np.savez(tmp_path / "b.npz", X=x, y=y)
    np.savez(tmp_path / "c.npz", x_train=x[:80], y_train=y[:80], x_test=x[80:], y_test=y[80:])
    a = load_dataset(tmp_path / "a.npz", seed=1)
    b = load_dataset(str(tmp_path / "b.npz"), seed=1)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.sizes == {"train": 70, "val": 10, "test": 20} and a.n_classes == 3
    assert a.x_train.dtype == np.float32 and _rows(_all(a)[0]) == _rows(x.astype(np.float32))
    c = load_dataset(tmp_path / "c.npz", seed=1)
    assert c.sizes == {"train": 72, "val": 8, "test": 20} and c.info["test_split"] == "official"
    assert _rows(c.x_test) == _rows(x[80:].astype(np.float32))
    np.savez(tmp_path / "d.npz", features=x, y=y)
    with pytest.raises(ValueError, match="unrecognised .npz keys.*x_train"):
        load_dataset(tmp_path / "d.npz")


def test_csv_files(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,b,label\n" + "".join(f"{i},{i * 0.5},{i % 2}\n" for i in range(20)))
    ds = load_dataset(p, val_fraction=0.0, test_fraction=0.25, seed=0)
    assert ds.n_features == 2 and ds.n_classes == 2 and ds.sizes["test"] == 5
    x, y = _all(ds)
    np.testing.assert_array_equal(y, x[:, 0].astype(int) % 2)
    q = tmp_path / "e.csv"
    q.write_text("cls,f1\n" + "".join(f"{i % 3},{i}\n" for i in range(12)))
    assert load_dataset(q, label="cls", test_fraction=0.0, val_fraction=0.0).n_classes == 3
    with pytest.raises(ValueError, match="no label column 'label'.*cls"):
        load_dataset(q)
    nohead = tmp_path / "f.csv"
    nohead.write_text("1,2,0\n3,4,1\n")
    with pytest.raises(ValueError, match="header row"):
        load_dataset(nohead)


# --------------------------------------------------------------------------- errors

def test_unknown_name_lists_builtins():
    with pytest.raises(ValueError) as e:
        load_dataset("cifar10")
    msg = str(e.value)
    assert all(name in msg for name in DATASETS) and "path" in msg


def test_missing_file_names_it(tmp_path):
    missing = tmp_path / "nothere.npz"
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        load_dataset(missing)
    with pytest.raises(FileNotFoundError, match="nothere.csv"):
        load_dataset(str(tmp_path / "nothere.csv"))


def test_bad_contents_raise_value_errors(tmp_path):
    g = rng(0)
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 4)), y=np.zeros(0, int))
    with pytest.raises(ValueError, match="empty.npz.*empty data set"):
        load_dataset(tmp_path / "empty.npz")
    x = g.standard_normal((20, 3))
    x[4, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.arange(20) % 2)
    with pytest.raises(ValueError, match="nan.npz.*NaN/inf"):
        load_dataset(tmp_path / "nan.npz")
    x[4, 1] = np.inf
    np.savez(tmp_path / "inf.npz", x=x, y=np.arange(20) % 2)
    with pytest.raises(ValueError, match="inf.npz.*NaN/inf"):
        load_dataset(tmp_path / "inf.npz")
    np.savez(tmp_path / "frac.npz", x=g.standard_normal((20, 3)), y=np.linspace(0, 1, 20))
    with pytest.raises(ValueError, match="frac.npz.*labels must be integers"):
        load_dataset(tmp_path / "frac.npz")
    np.savez(tmp_path / "str.npz", x=g.standard_normal((3, 3)), y=np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match="str.npz.*labels must be integers"):
        load_dataset(tmp_path / "str.npz")
    np.savez(tmp_path / "mm.npz", x=g.standard_normal((20, 3)), y=np.zeros(19, int))
    with pytest.raises(ValueError, match="mm.npz.*mismatched lengths: 20.*19"):
        load_dataset(tmp_path / "mm.npz")
    csv = tmp_path / "nanc.csv"
    csv.write_text("a,label\n1.0,0\n,1\n2.0,1\n")
    with pytest.raises(ValueError, match="nanc.csv.*NaN"):
        load_dataset(csv)
    txt = tmp_path / "data.txt"
    txt.write_text("hello")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_dataset(txt)
    # integral float labels are fine
    np.savez(tmp_path / "ok.npz", x=g.standard_normal((20, 3)), y=(np.arange(20) % 2) * 1.0)
    assert load_dataset(tmp_path / "ok.npz").y_train.dtype == np.int64


def test_argument_errors():
    with pytest.raises(ValueError, match="val_fraction"):
        load_dataset("spirals", val_fraction=1.2)
    with pytest.raises(ValueError, match="leaves no training data"):
        load_dataset("spirals", val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="n=0"):
        load_dataset("spirals", n=0)
    with pytest.raises(ValueError, match="seed"):
        load_dataset("spirals", seed=-1)
    with pytest.raises(ValueError, match="unknown dtype"):
        load_dataset("spirals", dtype="float16")
    with pytest.raises(TypeError, match="unknown option.*wobble.*accepted"):
        load_dataset("clusters", wobble=3)
    with pytest.raises(TypeError, match="unknown option.*wobble"):
        load_dataset("mnist1d", n=20, wobble=3)


def test_list_datasets():
    entries = list_datasets()
    assert [e["name"] for e in entries] == list(DATASETS)
    for e in entries:
        assert {"name", "n_samples", "n_features", "n_classes", "source", "available"} <= set(e)
        assert isinstance(e["available"], bool)
    by_name = {e["name"]: e for e in entries}
    assert "apt-get install dataset-fashion-mnist" in by_name["fashion-mnist"]["how_to_get"]
    assert by_name["mnist5k"]["n_samples"] == 5000 and by_name["shapeset"]["n_classes"] == 9
    assert by_name["shapeset"]["available"] and by_name["clusters"]["available"]


# --------------------------------------------------------------------------- Fashion-MNIST

def test_fashion_mnist_missing_folder_explains(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", path=tmp_path)


def test_fashion_mnist_from_folder_copy(tmp_path, monkeypatch):
    """A fake Fashion-MNIST folder passed via the environment variable (no real data needed)."""
    _write_idx_pair(tmp_path, "train", 60, gz=True)
    _write_idx_pair(tmp_path, "t10k", 10, gz=True, seed=1)
    monkeypatch.setenv("DEPTHLAB_FASHION_MNIST", str(tmp_path))
    ds = load_dataset("fashion_mnist", val_fraction=0.1)
    assert ds.sizes == {"train": 54, "val": 6, "test": 10} and ds.name == "fashion-mnist"


def test_fashion_mnist_real():
    if not fmnist_mod.available():
        pytest.skip(
            "Fashion-MNIST files absent: apt-get install dataset-fashion-mnist "
            "(or set DEPTHLAB_FASHION_MNIST to a folder with the IDX files)"
        )
    ds = load_dataset("fashion-mnist", seed=0)
    assert ds.sizes["train"] + ds.sizes["val"] == 60000 and ds.sizes["test"] == 10000
    assert ds.n_features == 784 and ds.n_classes == 10 and ds.info["test_split"] == "official"
    assert ds.x_train.dtype == np.float32 and 0.0 <= ds.x_test.min() and ds.x_test.max() <= 1.0
    assert set(np.unique(ds.y_test)) == set(range(10))
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    small = load_dataset("fashion-mnist", n=700, seed=0)
    assert small.sizes["test"] == 100 and sum(small.sizes.values()) == 700
