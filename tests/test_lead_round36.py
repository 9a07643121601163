"""Round 36 (lead): a report folder that cannot be written is refused before any figure is
drawn."""

from __future__ import annotations

import pytest


def _store_with_a_run(tmp_path):
    from depthlab.experiments import Store, execute

    config = {"name": "tiny", "data": {"name": "spirals", "seed": 0, "n": 100},
              "model": {"sizes": ["auto", "auto"], "depth": 1, "width": 4,
                        "activation": "tanh", "init": "glorot_uniform"},
              "train": {"loss": "cross_entropy", "optimizer": "sgd", "lr": 0.05,
                        "batch_size": "full", "epochs": 1, "seed": 0},
              "probes": {"every": 1}}
    with Store(tmp_path) as store:
        store.add_run(execute(config))


@pytest.mark.parametrize("blocker", ["figures", "report.html"])
def test_an_unwritable_report_folder_is_refused_before_drawing(tmp_path, blocker):
    """`figures` a file or `report.html` a folder: the report drew every figure (about two
    minutes for ten runs) and then failed writing; now it is refused before the first
    section, naming the file, and nothing is left behind."""
    from depthlab.report import write_report

    _store_with_a_run(tmp_path)
    if blocker == "figures":
        (tmp_path / "figures").write_text("not a folder")
    else:
        (tmp_path / "report.html").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    lines: list[str] = []
    with pytest.raises(OSError) as err:  # figures: FileExistsError; report.html: AtomicWriteError
        write_report(tmp_path, echo=lines.append)
    assert lines == []  # nothing drawn
    assert blocker in str(err.value) and "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_writable_report_folder_keeps_no_scratch_file(tmp_path):
    from depthlab.report import write_report

    _store_with_a_run(tmp_path)
    write_report(tmp_path)
    write_report(tmp_path)  # the second checks the figures folder the first made
    names = sorted(p.name for p in tmp_path.rglob("*"))
    assert not [n for n in names if n.endswith(".tmp") or n == "figure.png"]
    assert "report.html" in names


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop", "adagrad"])
def test_a_divergence_from_eps_zero_names_eps_not_the_learning_rate(optimizer):
    """Adam/RMSprop/Adagrad with eps = 0 (accepted, as torch.optim accepts it) on data with an
    input that is always 0: that weight's update is 0 / 0 = NaN at the first step, and the
    report said 'Lower the learning rate or add batch normalization', which cannot help."""
    import numpy as np

    import depthlab as dl

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 5)).astype(np.float32)
    x[:, 0] = 0.0
    y = rng.integers(0, 3, 64)
    net = dl.mlp([5, 8, 3], activation="relu", init="he_normal", seed=0)
    hist = dl.fit(net, x, y, loss="cross_entropy", optimizer=optimizer, lr=1e-3, batch_size=16,
                  epochs=1, seed=0, optimizer_kwargs={"eps": 0.0})
    assert hist.status == "diverged"
    message = hist.divergence.message
    assert "eps = 0 divides 0 by 0" in message and "Lower the learning rate" not in message
    # the same net at the default eps trains, and a divergence of plain SGD keeps its advice
    net = dl.mlp([5, 8, 3], activation="relu", init="he_normal", seed=0)
    assert dl.fit(net, x, y, loss="cross_entropy", optimizer=optimizer, lr=1e-3, batch_size=16,
                  epochs=1, seed=0).status == "finished"
    net = dl.mlp([5, 8, 3], activation="relu", init="he_normal", seed=0)
    big = dl.fit(net, x * 1e30, y, loss="cross_entropy", optimizer="sgd", lr=1e10,
                 batch_size=16, epochs=1, seed=0)
    assert big.status == "diverged" and "eps" not in big.divergence.message
