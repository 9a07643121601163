"""Round 32 (onehot32): a CSV whose label is a list of one-hot columns is read as classes by a
classification loss, as a .npz of one-hot ``y`` rows is."""

from __future__ import annotations

import json

import numpy as np
from helpers.cli import one_blas_thread, run_cli


def _onehot_csv(path, rows: int = 60, broken_row: int | None = None):
    """A CSV of two features and one-hot columns y0, y1, y2 (class = the index of the 1);
    ``broken_row``: that row holds two 1s."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 2))
    cls = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5).astype(int)
    hot = np.eye(3, dtype=int)[cls]
    if broken_row is not None:
        hot[broken_row] = [1, 1, 0]
    lines = ["a,b,y0,y1,y2"] + [f"{a:.6f},{b:.6f},{h[0]},{h[1]},{h[2]}"
                                for (a, b), h in zip(x, hot, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return x, cls


CONFIG = """\
name = "onehot"
[data]
path = "{path}"
label = ["y0", "y1", "y2"]
test_fraction = 0.25
val_fraction = 0.0
standardize = false
[model]
sizes = ["auto", 6, "auto"]
[train]
loss = "cross_entropy"
epochs = 2
batch_size = 16
[probes]
every = 100
"""


def test_onehot_csv_columns_train_as_classes_and_predict_scores_them(tmp_path, capsys,
                                                                     monkeypatch):
    """`label = ["y0","y1","y2"]` of one-hot columns with cross_entropy was refused ("only a
    regression loss takes" a list) while a .npz of one-hot `y` trained as classes. It trains
    on 3 classes now: the stored test accuracy is the saved network's argmax against the
    index of each test row's 1, and `depthlab predict` on the CSV scores it the same way."""
    import depthlab as dl
    from depthlab.experiments.runner import prepare

    one_blas_thread(monkeypatch)
    data = tmp_path / "f.csv"
    x, cls = _onehot_csv(data)
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(path=data.as_posix()))
    out = tmp_path / "res"
    code, stdout, err = run_cli(capsys, "run", config, "--out", out, "--quiet", "--json")
    assert code == 0, err
    record = json.loads(stdout)
    net = dl.load(out / "models" / f"{record['id']}.npz")
    assert net.predict(x).shape == (len(x), 3)
    import tomllib

    prep = prepare(tomllib.loads(config.read_text()))
    assert prep.data.n_classes == 3
    direct = float((net.predict(prep.data.x_test).argmax(axis=1) == prep.data.y_test).mean())
    from depthlab.experiments import Store

    with Store(out, create=False, readonly=True) as store:
        stored = store.runs().set_index("id").loc[record["id"], "test_acc"]
    assert abs(float(stored) - direct) < 1e-12, (stored, direct)
    code, pred, err = run_cli(capsys, "predict", out / "models" / f"{record['id']}.npz", data)
    assert code == 0, err
    whole = float((net.predict(x).argmax(axis=1) == cls).mean())
    assert f"accuracy {whole:.4f}" in err, err


def test_columns_that_are_not_one_hot_are_refused_naming_the_row(tmp_path, capsys,
                                                                 monkeypatch):
    """Not one-hot (row 7 holds 1, 1, 0): the one-line refusal (exit 2) says which row and
    why, not only that a list needs a regression loss."""
    one_blas_thread(monkeypatch)
    data = tmp_path / "f.csv"
    _onehot_csv(data, broken_row=7)
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(path=data.as_posix()))
    code, _, err = run_cli(capsys, "run", config, "--out", tmp_path / "res", "--quiet")
    assert code == 2, err
    line = err.strip().splitlines()[-1]
    assert "row 7" in line and "not one-hot" in line and "[1, 1, 0]" in line, err
    assert "mse" in line, err  # the regression alternative is still named
