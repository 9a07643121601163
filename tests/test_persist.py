"""dl.save / dl.load (weights + recipe in .npz, no pickle) and `depthlab predict` / `init`."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from helpers.cli import assert_one_line_error, cli, one_blas_thread, run_cli

import depthlab as dl


def _data(n=40, d=5, seed=0):
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, d)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0).astype(np.int64)


@pytest.mark.parametrize("opts", [
    {"activation": "tanh"},
    {"activation": "relu", "batchnorm": True, "bn_inference": "population"},
    {"activation": "selu", "dtype": "float64", "dropout": 0.1},
    {"activation": "relu", "residual": True, "batchnorm": True},
])
def test_round_trip_is_bit_identical(tmp_path, opts):
    x, y = _data()
    net = dl.mlp([5, 8, 8, 3], seed=3, **opts)
    dl.fit(net, x, y, lr=0.05, batch_size=8, epochs=2, seed=0)
    if net.batchnorms():
        net.calibrate(x)
    path = dl.save(net, tmp_path / "net")
    assert path.name == "net.npz"
    back = dl.load(path)
    assert back.config == net.config
    for p, q in zip(net.parameters(), back.parameters()):
        assert p.name == q.name and p.value.dtype == q.value.dtype
        np.testing.assert_array_equal(p.value, q.value)
    assert np.array_equal(net.predict(x), back.predict(x))
    for a, b in zip(net.batchnorms(), back.batchnorms()):
        np.testing.assert_array_equal(a.running_var, b.running_var)
        assert a.num_batches == b.num_batches
    with zipfile.ZipFile(path) as z:  # plain .npy members only, nothing pickled
        assert all(n.endswith(".npy") for n in z.namelist())
    np.load(path, allow_pickle=False)["recipe"]


def test_save_refuses_what_it_cannot_rebuild(tmp_path):
    from depthlab.layers import Dense
    from depthlab.network import Network

    with pytest.raises(TypeError, match="dl.mlp"):  # no activation between: not dl.mlp's
        dl.save(Network([Dense(3, 2), Dense(2, 2)], n_inputs=3), tmp_path / "x.npz")
    one = Network([Dense(3, 2, init="he_normal")], n_inputs=3)  # what dl.mlp([3, 2]) builds
    x = np.ones((2, 3), dtype=np.float32)
    np.testing.assert_array_equal(dl.load(dl.save(one, tmp_path / "one.npz")).predict(x),
                                  one.predict(x))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a network saved by depthlab.save"):
        dl.load(bad)
    with pytest.raises(FileNotFoundError, match="no saved network"):
        dl.load(tmp_path / "missing.npz")


RUN_CONFIG = """\
name = "tiny"
[data]
name = "digits"
[model]
sizes = ["auto", 16, 16, "auto"]
activation = "relu"
init = "he_normal"
[train]
loss = "cross_entropy"
optimizer = "sgd"
lr = 0.05
batch_size = 64
epochs = 1
seed = 0
"""


def test_run_then_predict_is_bit_identical(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(RUN_CONFIG)
    out = tmp_path / "res"
    r = cli("run", cfg, "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    models = list((out / "models").glob("*.npz"))
    assert len(models) == 1
    x = np.random.default_rng(1).integers(0, 16, size=(7, 64)).astype(np.float64)
    np.save(tmp_path / "x.npy", x)
    # expected: the saved network on inputs standardized with the training statistics
    net, meta = dl.load(models[0]), dl.persist.load_meta(models[0])
    xs = ((x.astype(np.float32) - meta["input_mean"].astype(np.float32))
          / meta["input_std"].astype(np.float32)).astype(np.float32)
    expected = net.predict(xs)
    r = cli("predict", models[0].stem[:8], tmp_path / "x.npy", "--dir", out)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].split(",")[:2] == ["class", "output_0"] and len(lines) == 8
    got = np.array([[float(v) for v in ln.split(",")[1:]] for ln in lines[1:]],
                   dtype=np.float32)
    assert np.array_equal(got, expected)  # exact: repr() round-trips every float
    assert [int(ln.split(",")[0]) for ln in lines[1:]] == list(np.argmax(expected, axis=1))
    r = cli("predict", models[0], tmp_path / "x.npy", "--json")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.array(json.loads(r.stdout)["outputs"], dtype=np.float32),
                          expected)
    # the two refusals in this process (same exit status, one line, no traceback)
    one_blas_thread(monkeypatch)
    np.save(tmp_path / "wrong.npy", x[:, :10])
    code, _, err = run_cli(capsys, "predict", models[0], tmp_path / "wrong.npy")
    assert_one_line_error(code, err, "expects 64")
    code, _, err = run_cli(capsys, "predict", "nosuchrun", tmp_path / "x.npy", "--dir", out)
    assert_one_line_error(code, err, "nosuchrun")


def test_init_writes_a_config_that_validates(tmp_path, capsys, monkeypatch):
    from depthlab.experiments import load_config

    r = cli("init", "exp1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    cfg = load_config(tmp_path / "exp1.toml")
    assert cfg["name"] == "exp1" and len(cfg["model"]["sizes"]) == 12
    assert "#" in (tmp_path / "exp1.toml").read_text()  # commented
    monkeypatch.chdir(tmp_path)  # the refusal in this process (exit 2, one line)
    code, _, err = run_cli(capsys, "init", "exp1")
    assert_one_line_error(code, err, "already exists")


def test_bridge_without_torch_says_how_to_install():
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"
            "try:\n    import depthlab.bridge.torch_bridge\n"
            "except ModuleNotFoundError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert "pip install depthlab[torch]" in r.stdout, r.stdout + r.stderr


def test_shipped_examples_match_the_repository_and_init_copies_them(tmp_path, capsys,
                                                                    monkeypatch):
    from pathlib import Path

    from depthlab.cli.init import shipped_examples
    from depthlab.demo import packaged_example
    from depthlab.experiments import load_config

    repo = Path(__file__).resolve().parents[1] / "examples"
    shipped = shipped_examples()
    assert {"starter.toml", "demo.toml", "digits_run.toml", "digits_sweep.toml",
            "tour.ipynb"} <= set(shipped)
    for name in shipped:  # one copy in the package, the same text in examples/
        if (repo / name).exists():
            assert (repo / name).read_bytes() == packaged_example(name).read_bytes(), name
    r = cli("init", "grid", "--example", "digits_sweep", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert load_config(tmp_path / "grid.toml")["sweep"]
    monkeypatch.chdir(tmp_path)  # the refusal in this process (exit 2, one line)
    code, _, err = run_cli(capsys, "init", "x", "--example", "nope")
    assert_one_line_error(code, err, "digits_sweep")
