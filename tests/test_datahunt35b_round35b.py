"""Round 35b, data hunt: user data files through every door (run ids, splits, labels)."""

from __future__ import annotations

import json

import numpy as np
from helpers.cli import one_blas_thread, run_cli

from depthlab.data.idx import write_idx


def test_an_idx_images_files_labels_are_part_of_the_run_id(tmp_path, capsys, monkeypatch):
    # data.path = an IDX images file: the loader also reads its labels file beside it, but
    # the run id's content fingerprint hashed the images file alone: relabelled data (3
    # classes became 5) was refused as "has this config and is stored" (a sweep would have
    # taken the old run for a finished point, the playground its cached data set)
    one_blas_thread(monkeypatch)
    pixels = np.random.default_rng(0).integers(0, 256, (40, 3, 3), dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte", pixels)
    (tmp_path / "run.toml").write_text(
        '[data]\npath = "train-images-idx3-ubyte"\n[model]\nsizes = ["auto", 4, "auto"]\n'
        "[train]\nepochs = 1\nbatch_size = 20\n[probes]\nevery = 0\n")
    out = str(tmp_path / "out")
    runs = []
    for classes in (3, 5):
        rng = np.random.default_rng(classes)
        write_idx(tmp_path / "train-labels-idx1-ubyte",
                  rng.integers(0, classes, 40).astype(np.uint8))
        code, printed, err = run_cli(capsys, "run", tmp_path / "run.toml", "--out", out,
                                     "--quiet", "--json")
        assert code == 0, err
        runs.append(json.loads(printed))
    assert runs[0]["id"] != runs[1]["id"]


def test_idx_colour_images_keep_their_shape_for_a_conv_model(tmp_path):
    # an IDX file of colour images (N, H, W, C) (type 08, 4 dimensions, named idx4-ubyte as
    # IDX converters of CIFAR/SVHN name them): its labels file idx1 was not found (only
    # "idx3" was renamed to "idx1"), a folder of them held "no IDX training images", and a
    # 4-D file's example shape was dropped (kept only for 3-D), so `doctor --torch` gave a
    # Conv2d model flat rows of 192 numbers ("Expected 3D or 4D input to conv2d")
    from depthlab.data import load_dataset

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, 30).astype(np.uint8)
    write_idx(tmp_path / "train-images-idx4-ubyte", pixels)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    for path in (tmp_path / "train-images-idx4-ubyte", tmp_path):
        ds = load_dataset(path, val_fraction=0, test_fraction=0, dtype="float64")
        assert ds.info["image_shape"] == (8, 8, 3)
        # the rows are the file's images (pixels / 255) in the split's order, each example
        # of that shape (what `doctor --torch` moves to (N, C, H, W) for a Conv2d model)
        shaped = ds.x_train.reshape(-1, *ds.info["image_shape"])
        direct = pixels.astype(np.float64) / 255
        order = [int(np.argmin(np.abs(direct - s).sum(axis=(1, 2, 3)))) for s in shaped]
        assert sorted(order) == list(range(30))
        np.testing.assert_allclose(shaped, direct[order], rtol=0, atol=1e-15)
        assert (ds.y_train == labels[order]).all()


def test_torch_doctor_regression_file_split_as_depthlab_run_splits_it(tmp_path):
    # `depthlab doctor --torch --data FILE --loss mse` read real-valued targets with its own
    # split: a .npz's official x_test was ignored and 20% of x_train dropped as a "test"
    # part instead (28 of 40 rows trained on), IDX pixels were not scaled by 1/255 (the
    # classes path and `depthlab run` scale them), and --n beyond the rows was taken silently
    import pytest

    from depthlab.cli.torch_doctor import regression_dataset
    from depthlab.data import load_dataset

    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 3))
    y = x @ [1.0, 2.0, 3.0] + 0.25
    np.savez(tmp_path / "r.npz", x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    ds = regression_dataset(str(tmp_path / "r.npz"), seed=3, n=None)
    assert len(ds.x_train) + len(ds.x_val) == 40  # every training row, none held for a test
    run = load_dataset(tmp_path / "r.npz", seed=3, targets="values")
    np.testing.assert_array_equal(ds.x_val, run.x_val)  # `depthlab run`'s validation rows
    np.testing.assert_array_equal(ds.y_train.reshape(-1), run.y_train.reshape(-1).astype(
        np.float32))
    pixels = rng.integers(0, 256, (20, 2, 2), dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte", pixels)
    write_idx(tmp_path / "train-labels-idx1-ubyte", rng.random(20).astype(np.float32))
    ds = regression_dataset(str(tmp_path / "train-images-idx3-ubyte"), seed=0, n=None)
    assert ds.x_train.max() <= 1.0 and ds.info["image_shape"] == (2, 2)
    with pytest.raises(ValueError, match="n=500 is larger than the 50"):
        regression_dataset(str(tmp_path / "r.npz"), seed=0, n=500)
