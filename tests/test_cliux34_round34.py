"""Round 34 (cliux34): the CLI, data loading and the run store as a demanding user meets them."""

from __future__ import annotations

import warnings

import numpy as np
from helpers.cli import assert_one_line_error, one_blas_thread, run_cli


def test_float16_labels_train_without_a_raw_numpy_warning(tmp_path, capsys, monkeypatch):
    """A .npz of float16 class labels (0.0/1.0, as np.float16 arrays save them) printed
    "depthlab: warning: overflow encountered in cast" beside a finished run: the label-size
    check compared the float16 labels with 2**63, which float16 cannot hold. The labels are
    read as the classes they are."""
    from depthlab.data import load_dataset

    one_blas_thread(monkeypatch)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2))
    y = (x[:, 0] > 0).astype(np.float16)
    np.savez(tmp_path / "h.npz", x=x, y=y)
    config = tmp_path / "h.toml"
    config.write_text('[data]\npath = "h.npz"\n[model]\nsizes = ["auto", 4, "auto"]\n'
                      "[train]\nepochs = 1\n")
    code, _, err = run_cli(capsys, "run", config, "--out", tmp_path / "r", "--quiet")
    assert code == 0, err
    assert "overflow" not in err and "warning" not in err, err
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any NumPy warning fails the load
        data = load_dataset(tmp_path / "h.npz", seed=0, val_fraction=0.0, test_fraction=0.0)
    assert sorted(data.y_train.tolist()) == sorted(y.astype(int).tolist())


def test_mnist1d_noise_past_float64_is_refused_not_trained_on_zeros(tmp_path, capsys,
                                                                   monkeypatch):
    """mnist1d with data.options.iid_noise_scale = 1e200 trained a run on features that were
    all 0 (chance loss 2.303, exit 0): the generator divides by its features' std, which
    overflows to inf, so every feature became 0 while the non-finite check saw nothing."""
    from depthlab.data import load_dataset

    one_blas_thread(monkeypatch)
    ok = load_dataset("mnist1d", n=20, seed=0, val_fraction=0.0, test_fraction=0.0,
                      standardize=False, iid_noise_scale=1e100)  # large, still in range
    assert np.isfinite(ok.x_train).all() and float(np.std(ok.x_train)) > 0.5
    config = tmp_path / "m.toml"
    config.write_text('[data]\nname = "mnist1d"\nn = 20\n[data.options]\n'
                      'iid_noise_scale = 1e200\n[model]\nsizes = ["auto", 4, "auto"]\n'
                      "[train]\nepochs = 1\n")
    code, out, err = run_cli(capsys, "run", config, "--out", tmp_path / "r", "--quiet")
    assert_one_line_error(code, err, "iid_noise_scale=1e+200")
    assert not (tmp_path / "r" / "models").exists()


def test_a_bad_mnist1d_option_in_a_grid_is_refused_before_any_point_runs(tmp_path, capsys,
                                                                         monkeypatch):
    """mnist1d's generator options were checked only by its loader, when a point ran: a
    [sweep] of data.options with a typo (foo) or a negative length ran the grid and stored
    those points as failed ("load_dataset() got an unknown option 'foo'"), where a bad
    option of clusters or spirals refuses the whole config before anything runs."""
    one_blas_thread(monkeypatch)
    config = tmp_path / "m.toml"
    base = ('[data]\nname = "mnist1d"\nn = 20\n[model]\nsizes = ["auto", 4, "auto"]\n'
            "[train]\nepochs = 1\n[sweep]\n")
    config.write_text(base + '"data.options" = [{iid_noise_scale = 0.1}, {iid_nosie_scale = 1}]\n')
    code, _, err = run_cli(capsys, "sweep", config, "--out", tmp_path / "r", "--quiet")
    assert_one_line_error(code, err, "data.options.iid_nosie_scale", "'mnist1d'",
                          'did you mean "iid_noise_scale"')
    config.write_text(base + '"data.options" = [{}, {final_seq_length = -1}]\n')
    code, _, err = run_cli(capsys, "sweep", config, "--out", tmp_path / "r", "--quiet")
    assert_one_line_error(code, err, "data.options.final_seq_length = -1", "an integer >= 1")
    assert not (tmp_path / "r" / "depthlab.db").exists()


def test_predict_refuses_a_header_that_names_a_column_twice(tmp_path, capsys, monkeypatch):
    """Training refuses a CSV whose header names a column twice; predict read 'a,label,label'
    with pandas' renaming ('label.1'), dropped the first label column and fed the second one
    to the network as its feature 'b' ("columns ['label.1'] are not the network's features
    ['a', 'b']; taken by position"), then scored the predictions."""
    one_blas_thread(monkeypatch)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2))
    rows = [f"{a:.3f},{b:.3f},{int(a > 0)}" for a, b in x]
    (tmp_path / "t.csv").write_text("a,b,label\n" + "\n".join(rows) + "\n")
    config = tmp_path / "t.toml"
    config.write_text('[data]\npath = "t.csv"\n[model]\nsizes = ["auto", 4, "auto"]\n'
                      "[train]\nepochs = 1\n")
    code, _, err = run_cli(capsys, "run", config, "--out", tmp_path / "r", "--quiet", "--json")
    assert code == 0, err
    run = next((tmp_path / "r" / "models").glob("*.npz")).stem
    dup = tmp_path / "dup.csv"
    dup.write_text("a,label,label\n" + "\n".join(f"{a:.3f},{int(a > 0)},{int(a > 0)}"
                                                 for a, _ in x) + "\n")
    code, out, err = run_cli(capsys, "predict", run, dup, "--dir", tmp_path / "r",
                             "--to", tmp_path / "p.csv")
    assert_one_line_error(code, err, "dup.csv", "['label']", "more than once")
    assert not (tmp_path / "p.csv").exists()
