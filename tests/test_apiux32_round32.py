"""Round 32 (apiux32): the top-level Python API fed the inputs people really pass."""

from __future__ import annotations

import numpy as np
import pytest

from depthlab.data import load_dataset


@pytest.mark.parametrize("name", ["digits", "spirals"])
def test_load_dataset_keyword_typo_names_load_datasets_own_keyword(name: str) -> None:
    # `standardise=True` is a typo of load_dataset's own `standardize`; the message used to blame
    # the data set ("digits: unknown option(s) ['standardise']; accepted: []") with no hint
    with pytest.raises(TypeError) as err:
        load_dataset(name, standardise=True)
    msg = str(err.value)
    assert "'standardise'" in msg and "did you mean 'standardize'?" in msg
    assert "standardize" in msg.split("accepted")[1]  # the accepted list names it too
    # a data set's own option is still accepted, and its typo still hinted
    assert load_dataset("spirals", n=60, noise=0.1).x_train.shape[1] == 2
    with pytest.raises(TypeError, match="did you mean 'noise'"):
        load_dataset("spirals", n=60, nosie=0.1)


def test_load_dataset_file_keyword_typo_hints(tmp_path) -> None:
    path = tmp_path / "d.csv"
    rows = "".join(f"{i % 5},{i % 3},{i % 2}\n" for i in range(30))
    path.write_text("a,b,label\n" + rows)
    with pytest.raises(TypeError, match=r"'sed'.*did you mean 'seed'"):
        load_dataset(path, sed=1)
    ds = load_dataset(path, label="label", seed=1)
    assert ds.x_train.shape[1] == 2 and np.isfinite(ds.x_train).all()
