"""Round 29 hunt of the command line, the config, the data files and the store (clistore29)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.cli import TINY
from helpers.cli import tiny_run as _tiny_run

from depthlab.cli import main
from depthlab.data.files import load_file


@pytest.mark.parametrize("extra, named", [
    ({"x_train": 2, "y_train": 1}, "x_train"),  # trained on x_train, predict read x
    ({"X": 3}, "'X'"),  # x taken, X silently dropped
    ({"x_val": 2, "y_val": 1}, "x_val"),  # the validation split silently ignored
    ({"x_test": 2, "y_test": 1}, "x_test"),
])
def test_an_npz_holding_two_layouts_is_refused_naming_them(tmp_path, extra, named):
    """A .npz with x/y and also x_train/y_train trained on x_train while `depthlab predict` on
    the same file read x (30 training rows, 60 predicted rows); with x_val/y_val beside x/y
    the validation split was silently drawn at random instead. One layout per file."""
    rng = np.random.default_rng(0)
    arrays = {"x": rng.normal(size=(12, 3)), "y": np.arange(12) % 2}
    for key, what in extra.items():
        arrays[key] = arrays["x"] * 10 if what in (2, 3) else arrays["y"]
    path = tmp_path / "two.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=named) as info:
        load_file(path)
    assert "\n" not in str(info.value)


def test_predict_refuses_an_npz_holding_both_x_and_upper_x(tmp_path, capsys):
    """`predict RUN f.npz` with arrays x and X predicted x silently (training on such a file
    is refused: which one holds the inputs?)."""
    rid, out = _tiny_run(tmp_path, capsys)
    data = tmp_path / "xX.npz"
    np.savez(data, x=np.zeros((4, 2)), X=np.ones((4, 2)))
    assert main(["predict", rid, str(data), "--dir", out]) == 2
    err = capsys.readouterr().err
    assert "'x' and 'X'" in err and err.count("\n") == 1


@pytest.mark.parametrize("to", [[], ["--to", "-"]])
def test_predict_force_without_a_file_to_replace_is_refused(tmp_path, capsys, to):
    """`predict RUN DATA --force` (no --to: stdout) printed the predictions and ignored
    --force, which only replaces an existing --to FILE: a forgotten `--to` went unnoticed."""
    rid, out = _tiny_run(tmp_path, capsys)
    assert main(["predict", rid, "spirals", "--dir", out, "--force", *to]) == 2
    got = capsys.readouterr()
    assert got.out == "" and "--force" in got.err and "--to" in got.err
    assert got.err.count("\n") == 1


@pytest.mark.parametrize("argv, named", [
    (["runs", "{out}", "--kind", "run", "--kind", "doctor"], "--kind"),
    (["export", "{out}", "--format", "csv", "--format", "parquet"], "--format"),
    (["run", "{config}", "--out", "{out}", "--out", "{out}2"], "--out"),
    (["runs", "{out}", "--threads", "1", "--threads", "2"], "--threads"),
])
def test_an_option_given_twice_with_two_values_is_refused(tmp_path, capsys, argv, named):
    """`runs --kind run --kind doctor` listed only doctor runs ("no doctor runs"), `export
    --format csv --format parquet` wrote Parquet: the last value won silently. Two different
    values of one option are refused in one line naming both (nothing written)."""
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "out"
    argv = [a.format(out=out, config=config) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert named in err and "twice" in err and err.count("\n") == 1
    assert not out.exists() and not (tmp_path / "out2").exists()


def test_an_option_repeated_with_the_same_value_is_accepted(tmp_path, capsys):
    assert main(["datasets", "--json", "--threads", "1", "--threads", "1"]) == 0
    assert json.loads(capsys.readouterr().out)


def test_bn_momentum_null_in_a_json_config_means_what_mlp_none_means(tmp_path):
    """`dl.mlp(..., bn_momentum=None)` is torch's momentum=None (a cumulative average), while
    the same spelling in a JSON config (`"bn_momentum": null`) or `ModelSpec(bn_momentum=None)`
    silently trained with the default EMA momentum 0.01: another network for the same recipe."""
    import depthlab as dl
    from depthlab.experiments import load_config
    from depthlab.spec import ModelSpec

    built = dl.mlp([4, 8, 2], batchnorm=True, bn_momentum=None).config["bn_momentum"]
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"data": {"name": "spirals"}, "model": {
        "sizes": ["auto", 8, "auto"], "batchnorm": True, "bn_momentum": None}}))
    assert load_config(str(config))["model"]["bn_momentum"] == built == "cumulative"
    assert ModelSpec(sizes=(4, 8, 2), bn_momentum=None).bn_momentum == built


def test_probing_a_batch_norm_network_on_two_rows_is_refused_as_the_config_refuses_it():
    """A config refuses probes.batch = 2 with batch norm (over 2 rows batch norm maps each unit
    to -1 and +1: no gradient reaches the layers below), but dl.probe and a ProbeRecorder's
    probe_x took 2 rows and reported those vanished gradients as the network's."""
    import depthlab as dl
    from depthlab.probes.recorder import ProbeRecorder

    net = dl.mlp([3, 6, 6, 2], "tanh", batchnorm=True, seed=0)
    x, y = np.random.default_rng(0).normal(size=(8, 3)), np.arange(8) % 2
    with pytest.raises(ValueError, match="at least 3 rows"):
        dl.probe(net, x[:2], y[:2])
    dl.probe(net, x[:3], y[:3])
    with pytest.raises(ValueError, match="at least 3 rows"):
        dl.fit(net, x, y, max_steps=2, callbacks=[ProbeRecorder(probe_x=x[:2], probe_y=y[:2])])


def test_rerunning_a_runs_stored_config_is_the_same_run(tmp_path, capsys):
    """The stored config (`runs --json`, `run --json`) holds `sizes = [2, 8, 2]` where the file
    said `["auto", 8, "auto"]`: the same network (only the data's sizes are accepted at the
    ends), yet `depthlab run` of it trained and stored a second copy under another id. It is
    refused as already stored, and `--overwrite` replaces that run (one run in the store)."""
    rid, out = _tiny_run(tmp_path, capsys)
    assert main(["runs", out, "--json"]) == 0
    config = next(r["config"] for r in json.loads(capsys.readouterr().out) if r["id"] == rid)
    assert config["model"]["sizes"] == [2, 8, 2]
    again = tmp_path / "again.json"
    again.write_text(json.dumps(config))
    assert main(["run", str(again), "--out", out, "--quiet"]) == 2
    assert rid in capsys.readouterr().err
    assert main(["run", str(again), "--out", out, "--quiet", "--overwrite", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == rid
    assert main(["runs", out, "--json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [rid]
    mixed = tmp_path / "mixed.json"  # one end written, the other "auto": the same run too
    mixed.write_text(json.dumps({**config, "model": {**config["model"],
                                                     "sizes": ["auto", 8, 2]}}))
    assert main(["run", str(mixed), "--out", out, "--quiet"]) == 2
    assert rid in capsys.readouterr().err


def test_a_toml_key_given_twice_is_named(tmp_path, capsys):
    """A TOML config with `epochs` twice in [train] said only "TOML syntax error: Cannot
    overwrite a value (at line 10, column 13)": which key, and why, was left to the reader."""
    config = tmp_path / "twice.toml"
    config.write_text(TINY.replace("epochs = 1", "epochs = 1\n  epochs = 5"))
    assert main(["run", str(config), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "'epochs'" in err and "twice" in err and "line 10" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_predict_reads_a_1d_array_as_training_does_for_a_one_input_network(tmp_path, capsys):
    """A run trained on a .npz whose x is 1-D (40 rows of one feature, as training reads it)
    could not predict that same file nor a .npy of its x: predict read a 1-D array as one row
    ("has 40 features per row; the network expects 1"). For a one-input network a 1-D array
    is one value per row; for others it stays one row of features."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    data = tmp_path / "one.npz"
    np.savez(data, x=x, y=(x > 0).astype(int))
    config = tmp_path / "one.toml"
    config.write_text(TINY.replace('name = "spirals"\nn = 200\nseed = 3',
                                   f"path = {json.dumps(str(data))}"))
    out = str(tmp_path / "out")
    assert main(["run", str(config), "--out", out, "--quiet", "--json"]) == 0
    rid = json.loads(capsys.readouterr().out)["id"]
    np.save(tmp_path / "x.npy", x)
    for given in (data, tmp_path / "x.npy"):
        assert main(["predict", rid, str(given), "--dir", out]) == 0
        assert capsys.readouterr().out.count("\n") == 41  # header + 40 rows
    (tmp_path / "two").mkdir()
    two, two_out = _tiny_run(tmp_path / "two", capsys)  # spirals: 2 inputs, one row of 2
    np.save(tmp_path / "row.npy", np.array([0.5, -0.5]))
    assert main(["predict", two, str(tmp_path / "row.npy"), "--dir", two_out]) == 0
    assert capsys.readouterr().out.count("\n") == 2


def test_a_store_that_is_a_broken_symbolic_link_is_named_as_such(tmp_path, capsys):
    """`--out DIR` whose depthlab.db is a symbolic link to a file in a missing folder said
    only SQLite's "unable to open database file"."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "depthlab.db").symlink_to(tmp_path / "gone" / "x.db")
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "symbolic link" in err and "gone" in err and err.count("\n") == 1


def test_threads_before_and_after_the_command_with_two_values_is_refused(tmp_path, capsys):
    """`depthlab --threads 1 runs DIR --threads 2` ran with 2 threads, silently (the two are
    parsed by different parsers); one value, or the same twice, is fine."""
    assert main(["--threads", "1", "datasets", "--threads", "2"]) == 2
    err = capsys.readouterr().err
    assert "--threads" in err and "twice" in err and err.count("\n") == 1
    assert main(["--threads", "1", "datasets", "--threads", "1", "--json"]) == 0
    assert main(["--threads", "1", "datasets", "--json"]) == 0
    capsys.readouterr()


def test_fashion_mnist_env_folder_without_the_files_is_an_error_naming_it(tmp_path,
                                                                          monkeypatch):
    """DEPTHLAB_FASHION_MNIST set to a folder without the IDX files (a typo, an empty copy)
    fell back to /usr/share/datasets/fashion-mnist silently: another data set than the one
    asked for. The folder the variable names is the only one searched."""
    from depthlab.data import load_dataset

    monkeypatch.setenv("DEPTHLAB_FASHION_MNIST", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="DEPTHLAB_FASHION_MNIST") as info:
        load_dataset("fashion-mnist", n=100)
    assert "missing" in str(info.value) and "/usr/share" not in str(info.value).split(";")[0]
