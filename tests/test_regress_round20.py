"""Round 20 (regress20): the NumPy side's command line trains regressions from a user's file.

* ``depthlab run`` / ``sweep`` / ``doctor CONFIG`` with ``train.loss = "mse"``/``"huber"`` on a
  CSV or .npz whose labels are real numbers (was: "labels must be integers, got non-integer
  values such as [...]"): float targets, several CSV columns with ``data.label = [...]``,
  ``sizes`` "auto" output = number of target columns, no accuracy (None), losses stored.
* ``data.standardize_targets = true``: trained on standardized targets, the scale folded into
  the output layer (saved network and ``depthlab predict`` in the targets' units), final
  losses in the targets' units; the doctor's unscaled_targets cure verifies on a config.
* ``depthlab predict`` of a regression run: values, and the mean squared error when the
  targets are in the CSV.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from depthlab.cli import main


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def _reg_csv(tmp_path, n=200, scale=1.0, offset=0.0, seed=0, two=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=n)
    cols = {"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y * scale + offset}
    if two:
        cols["z"] = np.sin(y)
    pd.DataFrame(cols).to_csv(tmp_path / "reg.csv", index=False)
    return x, y


def _config(tmp_path, data, loss="mse", sizes='[3, 16, 1]', extra="", train=""):
    return _write(tmp_path, "reg.toml",
                  f'[model]\nsizes = {sizes}\n[train]\nloss = "{loss}"\nepochs = 3\n{train}'
                  f'[data]\n{data}\n{extra}')


def _run_json(tmp_path, cfg, capsys, *more):
    rc = main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet", "--json", *more])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return json.loads(captured.out)


def _split_like_loader(n, seed=0, val=0.1, test=0.2):
    """The rows of the train/val/test parts as load_dataset draws them (independently)."""
    from depthlab.backend import rng as make_rng

    _, split_rng = make_rng(seed).spawn(2)
    perm = split_rng.permutation(n)
    k_test, k_val = int(round(test * n)), int(round(val * n))
    return perm[k_test + k_val:], perm[k_test:k_test + k_val], perm[:k_test]


def test_run_trains_a_regression_on_a_csv_of_real_targets(tmp_path, capsys):
    x, y = _reg_csv(tmp_path)
    cfg = _config(tmp_path, 'path = "reg.csv"\nlabel = "y"')
    rec = _run_json(tmp_path, cfg, capsys)
    m = rec["metrics"]
    assert rec["status"] == "finished"
    assert m["train_acc"] is None and m["val_acc"] is None and m["test_acc"] is None
    # the test loss is the saved network's MSE on the test rows, computed here with NumPy
    from depthlab.persist import load

    net = load(rec["network"])
    _, _, test = _split_like_loader(len(y))
    xs = x.copy()
    tr, _, _ = _split_like_loader(len(y))
    mean, std = xs[tr].mean(0), xs[tr].std(0)
    pred = net.predict(((xs[test] - mean) / std).astype(np.float32))[:, 0].astype(np.float64)
    assert m["test_loss"] == pytest.approx(float(np.mean((pred - y[test]) ** 2)), rel=1e-5)


def test_run_reads_npz_targets_and_several_csv_target_columns(tmp_path, capsys):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(120, 4))
    y = np.stack([x.sum(1), x[:, 0] - 0.5], 1) + 0.25
    np.savez(tmp_path / "reg.npz", x=x, y=y)
    cfg = _config(tmp_path, 'path = "reg.npz"', loss="huber", sizes='["auto", 8, "auto"]')
    rec = _run_json(tmp_path, cfg, capsys)
    assert rec["config"]["model"]["sizes"] == [4, 8, 2]
    assert rec["metrics"]["test_acc"] is None
    _reg_csv(tmp_path, two=True)
    cfg = _config(tmp_path, 'path = "reg.csv"\nlabel = ["y", "z"]', sizes='[3, 8, "auto"]')
    rec = _run_json(tmp_path, cfg, capsys)
    assert rec["config"]["model"]["sizes"] == [3, 8, 2]


def test_classification_losses_keep_integer_labels_and_name_the_regression_losses(
        tmp_path, capsys):
    _reg_csv(tmp_path)
    cfg = _config(tmp_path, 'path = "reg.csv"\nlabel = "y"', loss="cross_entropy",
                  sizes='[3, 16, "auto"]')
    rc = main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1
    assert "labels must be integers, got non-integer values" in err
    assert 'train.loss = "mse" or "huber"' in err
    # integer labels under mse are still classes (one-hot rows, an accuracy)
    rng = np.random.default_rng(0)
    pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60),
                  "label": np.arange(60) % 3}).to_csv(tmp_path / "cls.csv", index=False)
    cfg = _config(tmp_path, 'path = "cls.csv"', sizes='[2, 8, "auto"]')
    rec = _run_json(tmp_path, cfg, capsys)
    assert rec["config"]["model"]["sizes"] == [2, 8, 3]
    assert rec["metrics"]["test_acc"] is not None


def test_targets_values_refused_with_a_loss_on_classes(tmp_path, capsys):
    _reg_csv(tmp_path)
    cfg = _config(tmp_path, 'path = "reg.csv"\nlabel = "y"\ntargets = "values"',
                  loss="cross_entropy")
    rc = main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and 'data.targets = "values"' in err and "cross_entropy" in err


def test_sweep_of_a_regression_stores_its_losses(tmp_path, capsys):
    _reg_csv(tmp_path)
    cfg = _config(tmp_path, 'path = "reg.csv"\nlabel = "y"',
                  extra='[sweep]\n"train.lr" = [0.01, 0.05]\n')
    rc = main(["sweep", str(cfg), "--out", str(tmp_path / "out"), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    from depthlab.experiments import Store

    with Store(str(tmp_path / "out"), create=False, readonly=True) as store:
        runs = store.runs()
    assert len(runs) == 2
    assert runs["test_loss"].notna().all() and runs["test_acc"].isna().all()


def test_doctor_finds_unscaled_targets_and_the_config_key_cures_them(tmp_path, capsys):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 3))
    y = 300 + 10 * (x @ np.array([1.0, -2.0, 0.5]))
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y}).to_csv(
        tmp_path / "reg.csv", index=False)
    train = 'optimizer = "adam"\nlr = 0.001\n'
    cfg = _config(tmp_path, 'path = "reg.csv"\nlabel = "y"', sizes="[3, 16, 16, 1]",
                  train=train)
    rc = main(["doctor", str(cfg), "--out", str(tmp_path / "out"), "--steps", "300",
               "--verify", "--json", "--quiet"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    diag = json.loads(out.out)
    kinds = [f["kind"] for f in diag["findings"]]
    assert "unscaled_targets" in kinds
    ver = next(v for v in diag["verifications"] if v["kind"] == "unscaled_targets")
    assert ver["helped"]
    finding = next(f for f in diag["findings"] if f["kind"] == "unscaled_targets")
    assert finding["prescription"] == {"standardize_targets": True}
    # the prescription is a key the config accepts: the doctor on it no longer finds it
    cfg = _config(tmp_path, 'path = "reg.csv"\nlabel = "y"\nstandardize_targets = true',
                  sizes="[3, 16, 16, 1]", train=train)
    rc = main(["doctor", str(cfg), "--out", str(tmp_path / "out"), "--steps", "300",
               "--json", "--quiet"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    diag = json.loads(out.out)
    assert "unscaled_targets" not in [f["kind"] for f in diag["findings"]]
    assert diag["settings"]["standardize_targets"] is True


def test_standardize_targets_folds_the_scale_into_the_saved_network(tmp_path, capsys):
    x, y = _reg_csv(tmp_path, scale=100.0, offset=1000.0)
    cfg = _config(tmp_path, 'path = "reg.csv"\nlabel = "y"\nstandardize_targets = true',
                  train='optimizer = "adam"\nlr = 0.01\n')
    rec = _run_json(tmp_path, cfg, capsys)
    from depthlab.persist import load

    net = load(rec["network"])
    tr, va, te = _split_like_loader(len(y))
    t = y * 100.0 + 1000.0
    mean, std = x[tr].mean(0), x[tr].std(0)

    def mse(rows):
        pred = net.predict(((x[rows] - mean) / std).astype(np.float32))[:, 0]
        return float(np.mean((pred.astype(np.float64) - t[rows]) ** 2))

    # the saved network predicts in the targets' units; the stored losses are in them too
    m = rec["metrics"]
    assert m["test_loss"] == pytest.approx(mse(te), rel=1e-4)
    assert m["val_loss"] == pytest.approx(mse(va), rel=1e-4)
    assert m["train_loss"] == pytest.approx(mse(tr), rel=1e-4)
    assert m["test_loss"] < 0.2 * float(np.var(t[te]))  # trained, not a constant's error
    # predict on the training CSV: values in the targets' units, scored by their MSE
    rc = main(["predict", rec["id"], str(tmp_path / "reg.csv"), "--dir",
               str(tmp_path / "out")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    lines = out.out.strip().splitlines()
    assert lines[0] == "output_0"
    pred = np.array([float(v) for v in lines[1:]])
    want = net.predict(((x - mean) / std).astype(np.float32))[:, 0]
    np.testing.assert_allclose(pred, want, rtol=1e-6)
    err = float(np.mean((pred - t) ** 2))
    assert f"200 rows, mean squared error {err:.6g}" in out.err
    assert "accuracy" not in out.err


def test_standardize_targets_is_refused_for_classes(tmp_path, capsys):
    rng = np.random.default_rng(0)
    pd.DataFrame({"a": rng.normal(size=60), "label": np.arange(60) % 3}).to_csv(
        tmp_path / "cls.csv", index=False)
    for loss in ("cross_entropy", "mse"):
        cfg = _config(tmp_path, 'path = "cls.csv"\nstandardize_targets = true', loss=loss,
                      sizes='[1, 4, "auto"]')
        rc = main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"])
        err = capsys.readouterr().err
        assert rc == 2 and len(err.strip().splitlines()) == 1
        assert "data.standardize_targets = true needs" in err


def test_predict_of_several_targets_drops_them_and_scores_them(tmp_path, capsys):
    x, y = _reg_csv(tmp_path, two=True)
    cfg = _config(tmp_path, 'path = "reg.csv"\nlabel = ["y", "z"]', sizes='[3, 8, "auto"]')
    rec = _run_json(tmp_path, cfg, capsys)
    # the target columns first, and one row without its targets (not scored)
    frame = pd.read_csv(tmp_path / "reg.csv")[["z", "a", "y", "b", "c"]]
    frame.loc[5, "y"] = np.nan
    frame.to_csv(tmp_path / "new.csv", index=False)
    with pytest.warns(UserWarning, match="line 7 has an empty cell in the target column 'y'"):
        rc = main(["predict", rec["id"], str(tmp_path / "new.csv"), "--dir",
                   str(tmp_path / "out"), "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    got = np.array(json.loads(out.out)["outputs"])
    assert json.loads(out.out)["classes"] is None
    from depthlab.persist import load

    net = load(rec["network"])
    tr, _, _ = _split_like_loader(len(y))
    mean, std = x[tr].mean(0), x[tr].std(0)
    want = net.predict(((x - mean) / std).astype(np.float32))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    t = np.stack([y, np.sin(y)], 1)
    keep = np.arange(len(y)) != 5
    err = float(np.mean((got[keep] - t[keep]) ** 2))
    assert f"199 of 200 rows with targets, mean squared error {err:.6g}" in out.err


def test_runs_table_shows_a_regression_runs_losses(tmp_path, capsys):
    _reg_csv(tmp_path)
    cfg = _config(tmp_path, 'path = "reg.csv"\nlabel = "y"')
    rec = _run_json(tmp_path, cfg, capsys)
    assert main(["runs", str(tmp_path / "out")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[4:7] == ["train_loss", "val_loss", "test_loss"]
    row = table[2].split()  # (the name cell is empty: id, kind, status, the three losses)
    assert row[0] == rec["id"]
    assert float(row[5]) == pytest.approx(rec["metrics"]["test_loss"], rel=1e-3)


@pytest.mark.parametrize("bad, said", [
    ("abc", "labels must be integers, column 'y' holds 'abc' on line 5, which is not a number"),
    ("inf", "label column 'y' holds inf on line 5; accepted: finite numbers"),
    ("", "label column 'y' is empty on line 5 (1 such row(s)); expected a class number (or a "
         "regression target)"),
])
def test_a_bad_target_cell_is_named_by_its_line(tmp_path, capsys, bad, said):
    _reg_csv(tmp_path)
    lines = (tmp_path / "reg.csv").read_text().splitlines()
    cells = lines[4].split(",")
    lines[4] = ",".join([*cells[:-1], bad])
    (tmp_path / "reg.csv").write_text("\n".join(lines) + "\n")
    cfg = _config(tmp_path, 'path = "reg.csv"\nlabel = "y"')
    rc = main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert said in err


def test_label_lists_and_targets_classes_are_refused_with_their_remedy(tmp_path, capsys):
    _reg_csv(tmp_path, two=True)
    cfg = _config(tmp_path, 'path = "reg.csv"\nlabel = ["y", "z"]', loss="cross_entropy",
                  sizes='[3, 8, "auto"]')
    rc = main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "data.label = ['y', 'z'] is a list of target columns" in err
    assert 'train.loss = "mse" or "huber"' in err
    cfg = _config(tmp_path, 'path = "reg.csv"\nlabel = "y"\ntargets = "classes"')
    rc = main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert 'labels must be integers, got non-integer values' in err
    assert 'data.targets = "classes" reads the labels as classes' in err


def test_integer_targets_read_as_classes_name_the_targets_key(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 2))
    price = np.round(2000 + 100 * x[:, 0]).astype(int)  # integer regression targets
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "price": price}).to_csv(
        tmp_path / "p.csv", index=False)
    cfg = _config(tmp_path, 'path = "p.csv"\nlabel = "price"', sizes='[2, 4, "auto"]')
    with pytest.warns(UserWarning, match='data.targets = "values" reads them as numbers'):
        rec = _run_json(tmp_path, cfg, capsys)
    assert rec["config"]["model"]["sizes"][-1] == price.max() + 1  # classes, as before
    # (targets standardized: prices near 2000 under mse at the default lr diverge, exit 3)
    cfg = _config(tmp_path, 'path = "p.csv"\nlabel = "price"\ntargets = "values"\n'
                  'standardize_targets = true', sizes='[2, 4, "auto"]')
    rec = _run_json(tmp_path, cfg, capsys)
    assert rec["config"]["model"]["sizes"] == [2, 4, 1]
    assert rec["metrics"]["test_acc"] is None


def test_load_dataset_reads_real_targets_of_an_npz_with_official_parts(tmp_path):
    from depthlab.data import load_dataset

    rng = np.random.default_rng(0)
    y_train, y_test = rng.normal(size=50) * 3 + 7, rng.normal(size=(10, 1))
    np.savez(tmp_path / "parts.npz", x_train=rng.normal(size=(50, 3)), y_train=y_train,
             x_test=rng.normal(size=(10, 3)), y_test=y_test)
    ds = load_dataset(tmp_path / "parts.npz", targets="values", val_fraction=0.2)
    assert ds.y_train.shape == (40, 1) and ds.y_test.shape == (10, 1)
    # the official part, as given (rows shuffled)
    np.testing.assert_array_equal(np.sort(ds.y_test[:, 0]), np.sort(y_test[:, 0]))
    # the pool's rows are split at random, every target kept once
    np.testing.assert_allclose(np.sort(np.concatenate([ds.y_train, ds.y_val])[:, 0]),
                               np.sort(y_train))
    assert "n_targets=1" in repr(ds)
    with pytest.raises(ValueError, match="digits: targets='values' applies to data files"):
        load_dataset("digits", targets="values")


def test_predict_scores_a_regression_on_an_npz_with_its_targets(tmp_path, capsys):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(90, 3))
    y = np.stack([x[:, 0] * 2 - 1, x[:, 1] + x[:, 2]], 1)
    np.savez(tmp_path / "reg.npz", x=x, y=y)
    cfg = _config(tmp_path, 'path = "reg.npz"', sizes='["auto", 8, "auto"]')
    rec = _run_json(tmp_path, cfg, capsys)
    rc = main(["predict", rec["id"], str(tmp_path / "reg.npz"), "--dir",
               str(tmp_path / "out"), "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    got = np.array(json.loads(out.out)["outputs"])
    assert got.shape == (90, 2) and json.loads(out.out)["classes"] is None
    err = float(np.mean((got - y) ** 2))
    assert f"90 rows, mean squared error {err:.6g}" in out.err


def test_sweep_progress_lines_of_a_regression_show_its_losses(tmp_path, capsys):
    _reg_csv(tmp_path)
    cfg = _config(tmp_path, 'path = "reg.csv"\nlabel = "y"',
                  extra='[sweep]\n"train.lr" = [0.01, 0.05]\n')
    rc = main(["sweep", str(cfg), "--out", str(tmp_path / "out")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    from depthlab.experiments import Store

    with Store(str(tmp_path / "out"), create=False, readonly=True) as store:
        runs = store.runs().set_index("id")
    lines = [ln for ln in (out.out + out.err).splitlines() if ": finished " in ln]
    assert len(lines) == 2
    for line in lines:
        rid = line.split()[1]
        assert f"val_loss={runs.loc[rid, 'val_loss']:.4g}" in line
        assert f"test_loss={runs.loc[rid, 'test_loss']:.4g}" in line


def test_report_of_a_regression_sweep_shows_and_ranks_by_its_losses(tmp_path, capsys):
    import re

    _reg_csv(tmp_path)
    cfg = _config(tmp_path, 'path = "reg.csv"\nlabel = "y"',
                  extra='[sweep]\n"train.lr" = [0.001, 0.05, 0.1]\n')
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert main(["report", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    from depthlab.experiments import Store

    with Store(str(tmp_path / "out"), create=False, readonly=True) as store:
        runs = store.runs()
    best = runs.loc[runs["val_loss"].idxmin()]
    html = (tmp_path / "out" / "report.html").read_text()
    text = re.sub(r"\s+", " ", re.sub("<[^>]+>", " ", re.sub(r"data:image[^\"]+", "", html)))
    assert "train loss val loss test loss steps" in text  # the sweep table's columns
    assert "val acc test acc steps" not in text
    assert "val_loss by train.lr" in text
    # the best run (expanded, badge 'best') is the one of the lowest validation loss
    head = text[text.index("The best run is expanded"):][:300]
    assert best["id"] in head.split(" finished best ")[0]
    assert f"val loss {best['val_loss']:.4g}" in head


def test_standardize_targets_with_an_identity_output_activation(tmp_path, capsys):
    x, y = _reg_csv(tmp_path, scale=50.0, offset=-400.0)
    cfg = _write(tmp_path, "reg.toml",
                 '[model]\nsizes = [3, 8, 1]\noutput_activation = "identity"\n[train]\n'
                 'loss = "huber"\nepochs = 3\n[data]\npath = "reg.csv"\nlabel = "y"\n'
                 'standardize_targets = true\n')
    rec = _run_json(tmp_path, cfg, capsys)
    assert rec["status"] == "finished"
    from depthlab.persist import load

    net = load(rec["network"])
    tr, _, te = _split_like_loader(len(y))
    mean, std = x[tr].mean(0), x[tr].std(0)
    pred = net.predict(((x[te] - mean) / std).astype(np.float32))[:, 0].astype(np.float64)
    d = np.abs(pred - (y[te] * 50.0 - 400.0))  # huber (delta 1) in the targets' units
    huber = np.where(d <= 1.0, 0.5 * d ** 2, d - 0.5).mean()
    assert rec["metrics"]["test_loss"] == pytest.approx(huber, rel=1e-4)
    cfg.write_text(cfg.read_text().replace('"identity"', '"tanh"'))
    rc = main(["run", str(cfg), "--out", str(tmp_path / "out2"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "model.output_activation = 'tanh' is in the way" in err


def test_a_csv_without_header_row_trains_on_every_row_and_predict_scores_it(tmp_path, capsys):
    x, y = _reg_csv(tmp_path)
    lines = (tmp_path / "reg.csv").read_text().splitlines()
    (tmp_path / "nohdr.csv").write_text("\n".join(lines[1:]) + "\n")
    cfg = _config(tmp_path, 'path = "nohdr.csv"\nlabel = 3')
    rec = _run_json(tmp_path, cfg, capsys)  # its first row was taken for the column names
    from depthlab.persist import load

    net = load(rec["network"])
    tr, _, te = _split_like_loader(len(y))  # all 200 rows, split as the loader splits them
    mean, std = x[tr].mean(0), x[tr].std(0)
    pred = net.predict(((x - mean) / std).astype(np.float32))[:, 0].astype(np.float64)
    assert rec["metrics"]["test_loss"] == pytest.approx(np.mean((pred[te] - y[te]) ** 2),
                                                        rel=1e-5)
    # predict: the same headerless file has its label column dropped and scored
    rc = main(["predict", rec["id"], str(tmp_path / "nohdr.csv"), "--dir",
               str(tmp_path / "out"), "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    got = np.array(json.loads(out.out)["outputs"])[:, 0]
    np.testing.assert_allclose(got, pred, rtol=1e-6)
    assert f"200 rows, mean squared error {np.mean((got - y) ** 2):.6g}" in out.err
    # a headerless file of the features alone is read whole
    (tmp_path / "x.csv").write_text("\n".join(",".join(ln.split(",")[:3]) for ln in lines[1:]))
    rc = main(["predict", rec["id"], str(tmp_path / "x.csv"), "--dir", str(tmp_path / "out"),
               "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    np.testing.assert_allclose(np.array(json.loads(out.out)["outputs"])[:, 0], pred, rtol=1e-6)
    # the default label name cannot be found without a header: one line naming the remedy
    cfg = _config(tmp_path, 'path = "nohdr.csv"')
    rc = main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "looks like data, not a header naming the columns (no label column 'label')" in err
    # pandas' names of an array's columns (0, 1, 2, 3) are a header
    (tmp_path / "named.csv").write_text("0,1,2,3\n" + "\n".join(lines[1:]) + "\n")
    cfg = _config(tmp_path, 'path = "named.csv"\nlabel = 3')
    rec = _run_json(tmp_path, cfg, capsys)
    assert rec["status"] == "finished"


def test_a_headerless_classification_csv_names_bad_cells_by_their_line(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = [f"{a!r},{b!r},{k}" for a, b, k in zip(rng.normal(size=60).tolist(),
                                                   rng.normal(size=60).tolist(),
                                                   (np.arange(60) % 3).tolist())]
    rows[6] = rows[6].rsplit(",", 1)[0] + ",x"
    (tmp_path / "c.csv").write_text("\n".join(rows) + "\n")
    cfg = _config(tmp_path, 'path = "c.csv"\nlabel = 2', loss="cross_entropy",
                  sizes='[2, 4, "auto"]')
    rc = main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "column '2' holds 'x' on line 7, which is not a number" in err
    rows[6] = rows[7]
    (tmp_path / "c.csv").write_text("\n".join(rows) + "\n")
    rec = _run_json(tmp_path, cfg, capsys)
    assert rec["config"]["model"]["sizes"] == [2, 4, 3]
    assert rec["metrics"]["test_acc"] is not None


@pytest.mark.parametrize("variant", ["trailing_comma", "byte_order_mark"])
def test_a_headerless_csv_with_trailing_commas_or_a_bom_is_read_whole(tmp_path, variant):
    from depthlab.data import load_dataset

    _, y = _reg_csv(tmp_path)
    rows = (tmp_path / "reg.csv").read_text().splitlines()[1:]
    if variant == "trailing_comma":
        (tmp_path / "n.csv").write_text("\n".join(r + "," for r in rows) + "\n")
    else:
        (tmp_path / "n.csv").write_text("\n".join(rows) + "\n", encoding="utf-8-sig")
    ds = load_dataset(tmp_path / "n.csv", label=3, targets="values", val_fraction=0,
                      test_fraction=0)
    assert ds.n_features == 3
    np.testing.assert_allclose(np.sort(ds.y_train[:, 0]), np.sort(y))  # every row, once


def test_a_first_row_of_whole_numbers_read_as_data_is_said(tmp_path):
    from depthlab.data import load_dataset

    rng = np.random.default_rng(0)
    pix = rng.integers(0, 256, size=(30, 4))
    lab = np.arange(30) % 2
    (tmp_path / "pix.csv").write_text("\n".join(
        ",".join(map(str, [k, *p])) for k, p in zip(lab, pix)) + "\n")
    with pytest.warns(UserWarning, match=r"its first row \(0, .*\) is read as data"):
        ds = load_dataset(tmp_path / "pix.csv", label=0, val_fraction=0, test_fraction=0)
    assert ds.sizes["train"] == 30 and ds.n_features == 4


def test_one_output_for_integer_targets_read_as_classes_names_the_targets_key(tmp_path,
                                                                                capsys):
    rng = np.random.default_rng(0)
    pd.DataFrame({"a": rng.normal(size=40), "y": np.arange(40) % 2}).to_csv(
        tmp_path / "b.csv", index=False)
    cfg = _config(tmp_path, 'path = "b.csv"\nlabel = "y"', sizes="[1, 4, 1]")
    rc = main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "has 2 classes; set it to 2" in err and 'data.targets = "values"' in err
    cfg = _config(tmp_path, 'path = "b.csv"\nlabel = "y"\ntargets = "values"',
                  sizes="[1, 4, 1]")
    rec = _run_json(tmp_path, cfg, capsys)
    assert rec["status"] == "finished" and rec["metrics"]["test_acc"] is None
