"""Round 34b, readmewalk34b: a new user's path through the README.

``load_dataset(path)`` of a CSV whose labels are real numbers (a regression file) said only
"labels must be integers, got non-integer values such as [281.7, ...]": the remedy, the
``targets="values"`` keyword the README names, was not in the message (the config and the
torch doctor's CLI name theirs: ``train.loss = "mse"``, ``--loss mse``)."""

import subprocess
import sys

import numpy as np
import pytest

from depthlab.data import load_dataset


def _regression_csv(tmp_path, negative=False):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 3))
    y = 300 + 50 * (x @ [1.0, 2.0, -1.0])
    if negative:
        y = np.round(y) - 1000  # whole numbers, but negative: no class numbers either
    path = tmp_path / "price.csv"
    rows = ["a,b,c,label"] + [",".join(f"{v:.6g}" for v in (*r, t)) for r, t in zip(x, y)]
    path.write_text("\n".join(rows) + "\n")
    return path, y


@pytest.mark.parametrize("negative", [False, True])
def test_real_valued_labels_name_the_targets_keyword_that_loads_them(tmp_path, negative):
    path, y = _regression_csv(tmp_path, negative)
    with pytest.raises(ValueError) as err:
        load_dataset(path, seed=0)
    msg = str(err.value)
    assert "\n" not in msg and "targets='values'" in msg, msg
    # the keyword named loads the file: float64 targets, the same numbers
    ds = load_dataset(path, seed=0, targets="values")
    got = np.sort(np.concatenate([ds.y_train, ds.y_val, ds.y_test]).ravel())
    np.testing.assert_allclose(got, np.sort(y), rtol=1e-5)  # written with 6 digits


def test_the_config_run_names_its_own_remedy_not_the_python_keyword(tmp_path):
    path, _ = _regression_csv(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\npath = "{path}"\n[model]\nsizes = ["auto", 4, "auto"]\n')
    r = subprocess.run([sys.executable, "-m", "depthlab", "run", str(cfg), "--out",
                        str(tmp_path / "out"), "-q"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip()
    assert 'train.loss = "mse" or "huber"' in line and "targets='values'" not in line, line
