"""More hardening of the NumPy API and the command line, found by trying inputs the other tests
do not: a huge ``depth``, batches larger than the data, non-finite inputs to ``predict`` and the
probes, paths that are files where folders are expected, bad environment settings, and
argument types of ``dl.doctor``/``dl.fit``. CLI errors are one line on stderr and exit 2."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import assert_one_line_error, cli, one_blas_thread, run_cli

import depthlab as dl
from depthlab.experiments import ConfigError, validate
from depthlab.experiments.runner import check_memory, prepare
from depthlab.memory import sizes_text

SMALL = """\
[data]
name = "clusters"
n = 120
[model]
sizes = ["auto", 6, "auto"]
[train]
epochs = 1
batch_size = 40
[probes]
every = 0
"""


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    one_blas_thread(monkeypatch)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# -- sizes that cannot exist ------------------------------------------------------------------


def test_huge_depth_is_refused_before_its_sizes_are_built(tmp_path):
    """depth = 10**9 used to build a 10**9-entry sizes list (killed for memory after minutes)."""
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        dl.mlp([4, 8, 3], depth=10**9)
    msg = str(err.value)
    assert "depth = 1000000000 with width = 8" in msg and "nothing was allocated" in msg
    raw = {"data": {"name": "clusters"}, "model": {"sizes": ["auto", 8, "auto"],
                                                    "depth": 10**9}}
    with pytest.raises(ConfigError, match=r"model\.depth = 1000000000 with model\.width = 8"):
        validate(raw)
    assert time.perf_counter() - t0 < 5
    cfg = write(tmp_path, "deep.toml", SMALL.replace('sizes = ["auto", 6, "auto"]',
                                                     'sizes = ["auto", 6, "auto"]\n'
                                                     "depth = 1000000000"))
    res = cli("run", cfg, "--out", tmp_path / "o", timeout=60)
    assert_one_line_error(res.returncode, res.stderr, "deep.toml", "model.depth = 1000000000",
                          "needs about")
    assert len(res.stderr) < 400 and not (tmp_path / "o").exists()
    # a sane depth still builds
    assert dl.mlp([4, 8, 3], depth=50).config["sizes"] == [4] + [8] * 50 + [3]


def test_long_sizes_stay_short_in_messages(monkeypatch):
    """A refused 10**6-layer network used to print every size (a 30 MB 'line' at 10**7)."""
    assert sizes_text([64, 8, 10]) == "[64, 8, 10]"
    assert sizes_text(["auto", 8, "auto"]) == '["auto", 8, "auto"]'
    assert sizes_text([64] + [8] * 10**6 + [10]) == "[64, 8, 8, 8, ..., 10] (1,000,002 sizes)"
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "1M")
    with pytest.raises(ValueError) as err:
        dl.mlp([4] + [64] * 5000 + [3])
    assert len(str(err.value)) < 300 and "(5,002 sizes)" in str(err.value)
    cfg = validate({"data": {"name": "clusters", "n": 100},
                    "model": {"sizes": ["auto"] + [16] * 3000 + ["auto"]}})
    with pytest.raises(ValueError) as err:
        check_memory(cfg)
    assert len(str(err.value)) < 300 and "(3,002 sizes)" in str(err.value)


def test_batch_larger_than_the_data_is_not_refused(monkeypatch):
    """A batch (or probe batch) of 10**9 rows on 120 rows holds 120 rows: it used to be
    refused as needing about 1 TiB."""
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "4G")
    cfg = validate({"data": {"name": "clusters", "n": 120},
                    "model": {"sizes": ["auto", 8, "auto"]},
                    "train": {"batch_size": 10**9, "epochs": 1},
                    "probes": {"batch": 10**12, "every": 0}})
    check_memory(cfg)  # before loading: the data set's header says 120 rows
    prep = prepare(cfg)
    hist = dl.fit(prep.net, prep.data.x_train, prep.data.y_train, batch_size=10**9, epochs=1)
    assert len(hist.step_loss) == 1  # one full batch
    # the batch still counts up to the data's rows: a 10**5-wide layer fits with batches of
    # 32 rows, not with one batch of all 10**6 rows
    big = {"data": {"name": "clusters", "n": 10**6}, "model": {"sizes": ["auto", 10**5, "auto"]},
           "train": {"batch_size": 32}}
    check_memory(validate(big))
    big["train"]["batch_size"] = 10**9
    with pytest.raises(ValueError, match="on 1000000 rows of data needs about .* TiB"):
        check_memory(validate(big))


# -- predict and the probes refuse non-finite inputs ---------------------------------------------


@pytest.fixture
def saved_net(tmp_path) -> Path:
    return dl.save(dl.mlp([3, 5, 2], seed=0), tmp_path / "net.npz")


@pytest.mark.parametrize("case,fragments", [
    ("nan.npy", ["'nan.npy'", "NaN or infinity", "row 1, column 2"]),
    ("inf.npy", ["'inf.npy'", "NaN or infinity", "row 0, column 0"]),
    ("big.npy", ["'big.npy'", "1e+300", "row 1, column 0", "does not fit in float32"]),
    ("complex.npy", ["'complex.npy'", "real numbers", "complex128"]),
    ("ragged.csv", ["'ragged.csv'", "line 2 has 2 values", "3 columns"]),
    ("empty.npy", ["'empty.npy'", "no rows"]),
    ("folder", ["'folder'", "is a folder", ".npy"]),
])
def test_predict_refuses_inputs_it_cannot_predict(tmp_path, monkeypatch, capsys, saved_net,
                                                  case, fragments):
    """NaN, infinity, values beyond float32, complex numbers and a ragged CSV used to give rows
    of NaN outputs with class 0 and exit status 0."""
    monkeypatch.chdir(tmp_path)
    x = np.ones((2, 3))
    if case == "nan.npy":
        x[1, 2] = np.nan
    elif case == "inf.npy":
        x[0, 0] = np.inf
    elif case == "big.npy":
        x[1, 0] = 1e300
    elif case == "complex.npy":
        x = x.astype(complex)
    elif case == "empty.npy":
        x = x[:0]
    if case.endswith(".npy"):
        np.save(case, x)
    elif case == "ragged.csv":
        Path(case).write_text("1,2,3\n4,5\n")
    else:
        Path(case).mkdir()
    code, out, err = run_cli(capsys, "predict", saved_net, case)
    assert_one_line_error(code, err, *fragments)
    assert out == ""
    np.save("ok.npy", np.ones((2, 3)))
    code, out, err = run_cli(capsys, "predict", saved_net, "ok.npy", "--json")
    assert code == 0, err
    assert np.isfinite(json.loads(out)["outputs"]).all()


def test_probes_refuse_non_finite_inputs():
    """dl.probe and a ProbeRecorder's batch used to measure NaN tables without a word."""
    net = dl.mlp([3, 5, 2], seed=0)
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    y = np.array([0, 1, 0, 1])
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"x contains NaN or infinity \(first at row 2, column 1"):
        dl.probe(net, bad, y)
    with pytest.raises(ValueError, match=r"x value 1e\+300 \(row 0, column 0\) does not fit"):
        dl.probe(net, np.full((2, 3), 1e300), y[:2])
    rec = dl.ProbeRecorder(bad, y, every=1)
    with pytest.raises(ValueError, match=r"probe_x contains NaN or infinity"):
        dl.fit(net, x, y, callbacks=[rec], epochs=1)
    table = dl.probe(net, x.astype(np.float64), y)  # finite float64 data: measured
    assert table[table.quantity == "grad_pre_std"].value.notna().all()


# -- paths and settings: one line, exit 2, nothing lost ------------------------------------------


def test_file_where_a_folder_is_expected_is_a_user_error(tmp_path, capsys):
    """OSErrors from paths the user gave used to be 'internal error' with exit status 1."""
    cfg = write(tmp_path, "c.toml", SMALL)
    code, _, err = run_cli(capsys, "run", cfg, "--out", tmp_path / "res", "--quiet")
    assert code == 0, err
    blocker = write(tmp_path, "plain-file", "x")
    code, _, err = run_cli(capsys, "export", tmp_path / "res", "--to", blocker / "sub")
    assert_one_line_error(code, err, str(blocker / "sub"), "is a file, not a folder")
    (tmp_path / "res" / "figures").write_text("not a folder")
    code, _, err = run_cli(capsys, "report", tmp_path / "res", "--quiet")
    assert_one_line_error(code, err, "figures", "a file with that name exists")
    assert (tmp_path / "res" / "figures").read_text() == "not a folder"


def test_reproduce_checks_its_output_folder_before_running(tmp_path, capsys):
    """A file as --out used to fail after the whole experiment (exit 1, internal error)."""
    blocker = write(tmp_path, "claims", "mine")
    t0 = time.perf_counter()
    code, out, err = run_cli(capsys, "reproduce", "he2015", "--quick", "--out", blocker, "-q")
    assert_one_line_error(code, err, f"--out {str(blocker)!r}", "cannot be used as a folder")
    assert time.perf_counter() - t0 < 5 and out == ""
    assert blocker.read_text() == "mine"


def test_bad_memory_limit_setting_is_a_user_error(tmp_path, capsys, monkeypatch):
    cfg = write(tmp_path, "c.toml", SMALL)
    for value in ("lots", "-1G", "nan"):
        monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", value)
        code, _, err = run_cli(capsys, "run", cfg, "--out", tmp_path / "o")
        assert_one_line_error(code, err, f"DEPTHLAB_MEMORY_LIMIT={value!r}", "accepted")
    assert not (tmp_path / "o").exists()


def test_doctor_refuses_a_bad_store_before_diagnosing(tmp_path, capsys, monkeypatch):
    """The store used to be opened after the whole diagnosis (its work lost)."""
    import sqlite3

    import depthlab.diagnosis as diagnosis

    calls = []
    monkeypatch.setattr(diagnosis, "doctor", lambda *a, **k: calls.append(1))
    out = tmp_path / "foreign"
    out.mkdir()
    with sqlite3.connect(out / "depthlab.db") as con:
        con.execute("create table runs (a)")
    cfg = write(tmp_path, "c.toml", SMALL)
    code, _, err = run_cli(capsys, "doctor", cfg, "--out", out, "--steps", "5")
    assert_one_line_error(code, err, "is not a depthlab results store")
    assert calls == []


# -- argument types of the Python API -------------------------------------------------------------


def test_doctor_arguments_follow_the_one_rule_of_each_setting():
    """lr="0.1" and verify="yes" used to be accepted, NumPy integer steps refused."""
    x = np.random.default_rng(0).standard_normal((60, 3)).astype(np.float32)
    y = np.arange(60) % 2
    net = dl.mlp([3, 4, 2], seed=0)
    with pytest.raises(TypeError, match=r'lr = "0.1" has the wrong type'):
        dl.doctor(net, (x, y), steps=5, lr="0.1")
    with pytest.raises(ValueError, match=r"lr = 0 is out of range"):
        dl.doctor(net, (x, y), steps=5, lr=0)
    with pytest.raises(TypeError, match=r"verify='yes' is not accepted; accepted: True or False"):
        dl.doctor(net, (x, y), steps=5, verify="yes")
    with pytest.raises(ValueError, match=r"steps must be a positive integer, got 2.5"):
        dl.doctor(net, (x, y), steps=2.5)
    diag = dl.doctor(net, (x, y), steps=np.int64(5), batch_size=np.int32(20), lr=np.float32(0.1))
    assert diag.settings["steps"] == 5 and diag.settings["batch_size"] == 20


def test_fit_options_name_the_bad_keyword_and_accept_optimizer_hyperparameters():
    x = np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32)
    y = np.arange(40) % 2

    def net():
        return dl.mlp([3, 4, 2], seed=0)

    with pytest.raises(TypeError, match=r"unknown option 'epoch' \(did you mean 'epochs'\?\); "
                                        r"accepted: .*epochs.*momentum"):
        dl.fit(net(), x, y, epoch=2)
    # a [train] section may set momentum directly; so may fit (same run as optimizer_kwargs)
    direct = dl.fit(net(), x, y, momentum=0.9, nesterov=True, epochs=2).step_loss
    nested = dl.fit(net(), x, y, optimizer_kwargs={"momentum": 0.9, "nesterov": True},
                    epochs=2).step_loss
    assert direct == nested
    with pytest.raises(TypeError, match=r"unknown argument 'momentum' for optimizer 'adam'"):
        dl.fit(net(), x, y, optimizer="adam", momentum=0.9)
    with pytest.raises(ValueError, match=r"momentum is given twice"):
        dl.fit(net(), x, y, momentum=0.9, optimizer_kwargs={"momentum": 0.5})


def test_fit_callbacks_and_predict_batch_are_checked():
    """callbacks=[3] used to fail with AttributeError mid-fit; predict(x, 0) with
    'range() arg 3 must not be zero'."""
    x = np.ones((8, 3), np.float32)
    y = np.arange(8) % 2
    net = dl.mlp([3, 4, 2], seed=0)
    rec = dl.ProbeRecorder(x, y, every=1)
    with pytest.raises(TypeError, match=r"callbacks=ProbeRecorder.* a list of Callback"):
        dl.fit(net, x, y, callbacks=rec)
    with pytest.raises(TypeError, match=r"callbacks\[1\]=3 is not accepted: it has no method "
                                        r"on_train_begin\(\)"):
        dl.fit(net, x, y, callbacks=[rec, 3])
    with pytest.raises(ValueError, match=r"batch_size must be a positive integer, got 0"):
        net.predict(x, 0)
    assert net.predict(x, np.int64(3)).shape == (8, 2)


def test_save_to_a_folder_is_refused(tmp_path):
    """dl.save(net, FOLDER) used to write FOLDER.npz beside the folder."""
    with pytest.raises(ValueError, match=r"is a folder; expected a file name"):
        dl.save(dl.mlp([3, 4, 2]), tmp_path)
    assert not tmp_path.with_name(tmp_path.name + ".npz").exists()


def test_config_with_a_byte_order_mark_is_read(tmp_path, capsys):
    """A UTF-8 BOM (Windows editors) used to be 'TOML syntax error ... line 1, column 1'."""
    cfg = tmp_path / "bom.toml"
    cfg.write_bytes(b"\xef\xbb\xbf" + SMALL.encode())
    code, _, err = run_cli(capsys, "run", cfg, "--out", tmp_path / "o", "--quiet")
    assert code == 0, err
    (tmp_path / "latin1.toml").write_bytes(b"name = \"caf\xe9\"\n")
    code, _, err = run_cli(capsys, "run", tmp_path / "latin1.toml", "--out", tmp_path / "o")
    assert_one_line_error(code, err, "latin1.toml", "not a UTF-8 text file")


def test_quiet_sweep_says_why_it_exits_1(tmp_path, capsys):
    """--quiet used to swallow the failed points' errors: exit status 1 and no word."""
    cfg = write(tmp_path, "s.toml", SMALL + '[sweep]\n"data.n" = [1, 60]\n')
    code, out, err = run_cli(capsys, "sweep", cfg, "--out", tmp_path / "o", "--quiet")
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "failed" in lines[0] and "a single class" in lines[0], err


def test_boolean_options_refuse_truthy_strings():
    from depthlab.data import load_dataset

    x, y = np.ones((8, 3), np.float32), np.arange(8) % 2
    with pytest.raises(TypeError, match=r"standardize='yes' is not accepted; accepted: True"):
        load_dataset("clusters", n=50, standardize="yes")
    with pytest.raises(TypeError, match=r"standardize='no' is not accepted"):
        dl.fit(dl.mlp([3, 4, 2]), x, y, standardize="no")
    assert load_dataset("clusters", n=50, standardize=np.bool_(True)).info["seed"] == 0


def test_init_names_with_backslash_or_quote_give_valid_configs(tmp_path, monkeypatch, capsys):
    """`depthlab init 'my\\exp'` used to fail with 'bad escape \\e' (internal error)."""
    monkeypatch.chdir(tmp_path)
    for name in ("my\\exp", 'q"uote'):
        code, _, err = run_cli(capsys, "init", name)
        assert code == 0, err
        cfg = validate(__import__("tomllib").loads(Path(f"{name}.toml").read_text()))
        assert cfg["name"] == name


def test_write_under_a_file_names_the_file(tmp_path, capsys, saved_net):
    blocker = write(tmp_path, "blocker", "keep")
    np.save(tmp_path / "x.npy", np.ones((2, 3)))
    code, _, err = run_cli(capsys, "predict", saved_net, tmp_path / "x.npy", "--to",
                           blocker / "out.csv")
    assert_one_line_error(code, err, f"{str(blocker)!r} is a file, not a folder")
    assert blocker.read_text() == "keep"


def test_meanfield_refuses_strings_for_numbers():
    """meanfield(sigma_w2="1.5") used to raise NumPy's 'ufunc isfinite not supported'."""
    with pytest.raises(TypeError, match=r"sigma_w2 must be a real number, got '1.5'"):
        dl.theory.meanfield("tanh", sigma_w2="1.5")
    with pytest.raises(TypeError, match=r"sigma_b2 must be a real number, got True"):
        dl.theory.critical_sigma_w2("tanh", sigma_b2=True)
    assert dl.theory.meanfield("tanh", sigma_w2=np.float32(1.5)).q_star > 0


def test_predict_refuses_an_npy_too_large_before_loading_it(tmp_path, capsys, saved_net):
    """A .npy whose header claims 10**12 rows used to reach np.load: MemoryError, exit 1."""
    from numpy.lib import format as npy

    path = tmp_path / "huge.npy"
    with open(path, "wb") as fh:
        npy.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False,
                                        "shape": (10**12, 3)})
        fh.write(b"\0" * 48)
    code, out, err = run_cli(capsys, "predict", saved_net, path)
    assert_one_line_error(code, err, "huge.npy", "(1000000000000, 3)", "needs about",
                          "nothing was allocated")
    (tmp_path / "trunc.npy").write_bytes(path.read_bytes()[:20])
    code, out, err = run_cli(capsys, "predict", saved_net, tmp_path / "trunc.npy")
    assert_one_line_error(code, err, "trunc.npy", "could not be read")


def test_sequential_refuses_what_is_not_a_layer():
    with pytest.raises(TypeError, match=r"layers\[1\] = 3 is not accepted; accepted: depthlab "
                                        r"layers"):
        dl.layers.Sequential([dl.layers.Dense(3, 2), 3])


def test_fit_penalties_kwargs_and_validation_pairs_are_checked():
    """l2="0.1" and l1=True used to be accepted (float()), optimizer_kwargs="momentum" failed
    with 'dictionary update sequence element', and y_val without x_val was ignored."""
    x, y = np.ones((8, 3), np.float32), np.arange(8) % 2

    def fit(**kw):
        return dl.fit(dl.mlp([3, 4, 2], seed=0), x, y, epochs=1, **kw)

    with pytest.raises(TypeError, match=r'l2 = "0.1" has the wrong type; accepted: a finite'):
        fit(l2="0.1")
    with pytest.raises(TypeError, match=r"l1 = true has the wrong type"):
        fit(l1=True)
    with pytest.raises(ValueError, match=r"l1 = nan is out of range"):
        fit(l1=float("nan"))
    with pytest.raises(TypeError, match=r"optimizer_kwargs='momentum' is not accepted; "
                                        r"accepted: a dict"):
        fit(optimizer_kwargs="momentum")
    with pytest.raises(TypeError, match=r"loss_kwargs=0.1 is not accepted"):
        fit(loss_kwargs=0.1)
    with pytest.raises(ValueError, match=r"give both x_val and y_val, or neither; got only y_val"):
        dl.fit(dl.mlp([3, 4, 2]), x, y, None, y)
    assert fit(l2=np.float32(0.01)).step_loss


def test_numpy_integer_seed_saves_and_loads(tmp_path):
    """mlp(seed=np.int64(5)) used to leave an int64 in net.config: dl.save refused it."""
    net = dl.mlp([3, 4, 2], seed=np.int64(5))
    back = dl.load(dl.save(net, tmp_path / "n.npz"))
    assert back.config["seed"] == 5 and type(back.config["seed"]) is int
    x = np.ones((2, 3), np.float32)
    assert np.array_equal(back.predict(x), dl.mlp([3, 4, 2], seed=5).predict(x))


def test_percentiles_refuse_strings_and_booleans():
    """percentiles="50" used to be read as the 5th and 0th percentiles."""
    net, x, y = dl.mlp([3, 4, 2], seed=0), np.eye(3, dtype=np.float32), np.array([0, 1, 0])
    for bad in ("50", ["50"], [True]):
        with pytest.raises(TypeError, match=r"percentiles must be a sequence of numbers"):
            dl.probe(net, x, y, percentiles=bad)
    table = dl.probe(net, x, y, percentiles=np.array([15.0, 85.0]))
    assert {"pre_p15", "pre_p85"} <= set(table.quantity)


@pytest.mark.parametrize("args", [["run", "c.toml", "--out", ""],
                                  ["reproduce", "he2015", "--quick", "--out", " "],
                                  ["export", "res", "--to", ""]])
def test_empty_output_paths_are_refused(tmp_path, monkeypatch, capsys, args):
    """--out "" used to write the store (or a whole reproduction) into the current folder."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "c.toml", SMALL)
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, "an empty path is not accepted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


def test_mc_dropout_refuses_passes_that_cannot_fit(monkeypatch):
    """T=10**9 passes used to keep every output until memory ran out; NumPy T refused."""
    net = dl.mlp([3, 4, 2], dropout=0.5, seed=0)
    x = np.ones((5, 3), np.float32)
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "64M")
    with pytest.raises(ValueError, match=r"mc_dropout_predict\(T=1000000000\) outputs .* needs "
                                         r"about .* nothing was allocated"):
        dl.mc_dropout_predict(net, x, 10**9)
    mean, std = dl.mc_dropout_predict(net, x, np.int64(4), seed=0)
    assert mean.shape == std.shape == (5, 2)


def test_fit_and_probe_refuse_batches_whose_activations_cannot_fit(monkeypatch):
    """fit(batch_size="full") and probe() on many rows used to allocate until MemoryError."""
    x = np.random.default_rng(0).standard_normal((2000, 64)).astype(np.float32)
    y = np.arange(2000) % 3
    net = dl.mlp([64, 256, 256, 3], seed=0)
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "2M")
    with pytest.raises(ValueError, match=r"full-batch training \(2,000 rows through the network\)"
                                         r" needs about 13.3 MiB .* nothing was allocated"):
        dl.fit(net, x, y, batch_size="full")
    with pytest.raises(ValueError, match=r"probe \(2,000 rows .* nothing was allocated"):
        dl.probe(net, x, y)
    assert dl.fit(net, x, y, batch_size=64, max_steps=2, epochs=None).step_loss


def test_bad_threads_setting_is_refused_before_anything_is_written(tmp_path, capsys,
                                                                  monkeypatch):
    """DEPTHLAB_THREADS=abc used to be ignored (a typo unnoticed); refused it must be before
    the run is stored, not as a 'failed' run."""
    cfg = write(tmp_path, "c.toml", SMALL)
    monkeypatch.setenv("DEPTHLAB_THREADS", "abc")
    code, _, err = run_cli(capsys, "run", cfg, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "DEPTHLAB_THREADS='abc'", "an integer >= 1")
    assert not (tmp_path / "o").exists()
    monkeypatch.setenv("DEPTHLAB_THREADS", "1")
    x, y = np.ones((8, 3), np.float32), np.arange(8) % 2
    assert dl.fit(dl.mlp([3, 4, 2]), x, y, threads=np.int64(1), epochs=1).step_loss


def test_empty_sweep_table_is_named_as_empty(tmp_path, capsys):
    cfg = write(tmp_path, "s.toml", SMALL + "[sweep]\n")
    code, _, err = run_cli(capsys, "sweep", cfg, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "s.toml: the [sweep] table is empty")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("column,value,fragment", [
    ("config", "{bad", "not valid JSON"),
    ("config", '"x"', "has a config that is not a JSON object"),
    ("metrics", "[1]", "has a metrics that is not a JSON object"),
])
def test_a_row_edited_outside_depthlab_is_a_one_line_store_error(tmp_path, capsys, column,
                                                                 value, fragment):
    """A runs row with broken JSON used to give JSONDecodeError/IndexError, exit status 1."""
    import sqlite3

    cfg = write(tmp_path, "c.toml", SMALL)
    assert run_cli(capsys, "run", cfg, "--out", tmp_path / "o", "-q")[0] == 0
    with sqlite3.connect(tmp_path / "o" / "depthlab.db") as con:
        con.execute(f"UPDATE runs SET {column} = ?", (value,))
    for args in (["runs", tmp_path / "o"], ["export", tmp_path / "o"],
                 ["report", tmp_path / "o", "-q"]):
        code, _, err = run_cli(capsys, *args)
        assert_one_line_error(code, err, "depthlab.db' cannot be read", fragment)
    assert not (tmp_path / "o" / "report.html").exists()


def test_predict_with_non_finite_weights_or_overflow_says_why(tmp_path, capsys):
    """A saved network with NaN weights used to print NaN outputs with class 0, exit 0."""
    net = dl.mlp([3, 4, 2], seed=0)
    net.parameters()[0].value[...] = np.nan
    model = dl.save(net, tmp_path / "nan.npz")
    np.save(tmp_path / "x.npy", np.ones((2, 3)))
    code, out, err = run_cli(capsys, "predict", model, tmp_path / "x.npy")
    assert_one_line_error(code, err, "outputs for DATA", "not finite (first at row 0)",
                          "dense1.W hold NaN or infinity")
    assert out == ""
    np.save(tmp_path / "big.npy", np.full((2, 3), 3e38))
    code, out, err = run_cli(capsys, "predict", dl.save(dl.mlp([3, 4, 2], seed=0),
                                                        tmp_path / "ok.npz"),
                             tmp_path / "big.npy")
    assert_one_line_error(code, err, "the values overflow float32")


def test_plot_names_missing_columns():
    """A DataFrame without the probe columns used to raise KeyError('quantity')."""
    import pandas as pd

    from depthlab import plot

    bad = pd.DataFrame({"a": [1.0]})
    with pytest.raises(ValueError, match=r"expected a probe table with columns layer, quantity, "
                                         r"value; the DataFrame has no layer, quantity, value"):
        plot.gradient_per_layer(bad)
    with pytest.raises(ValueError, match=r"per-step table with columns step, loss"):
        plot.training_curves(bad)
    with pytest.raises(ValueError, match=r"histogram table .* has no step, layer, kind"):
        plot.activation_histograms(bad)


def test_jobs_that_cannot_fit_are_refused_before_a_worker_starts(tmp_path, capsys,
                                                                 monkeypatch):
    """--jobs 100000 on a large grid used to start worker processes until memory ran out."""
    cfg = write(tmp_path, "s.toml", SMALL + '[sweep]\n"train.seed" = [0, 1]\n')
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "1G")
    code, _, err = run_cli(capsys, "sweep", cfg, "--out", tmp_path / "o", "--jobs", "20")
    assert_one_line_error(code, err, "--jobs 20 (20 worker processes", "needs about",
                          "only 1 GiB is available")
    assert not (tmp_path / "o").exists()


def test_local_cluster_workers_that_cannot_fit_are_refused(tmp_path, capsys, monkeypatch):
    cfg = write(tmp_path, "s.toml", SMALL + '[sweep]\n"train.seed" = [0, 1]\n')
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "1G")
    code, _, err = run_cli(capsys, "sweep", cfg, "--out", tmp_path / "o", "--cluster",
                           "local:64")
    assert_one_line_error(code, err, "--cluster local:64 (64 worker processes", "needs about")
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_endless_config_file_is_refused_not_read_forever(capsys):
    """`depthlab run /dev/zero` used to read until memory ran out."""
    t0 = time.perf_counter()
    code, _, err = run_cli(capsys, "run", "/dev/zero")
    assert_one_line_error(code, err, "'/dev/zero' is larger than 64 MiB")
    assert time.perf_counter() - t0 < 20


def test_fit_checks_every_label_before_the_first_step():
    """A bad label late in the data (or in the validation set) used to stop training only when
    its batch (or the first evaluation) came, after the work before it."""
    x = np.random.default_rng(0).standard_normal((400, 3)).astype(np.float32)
    y = np.arange(400) % 2
    y_bad = y.copy()
    y_bad[-1] = 7
    calls = []

    class Count(dl.training.Callback):
        def after_update(self, trainer, step, loss):
            calls.append(step)

    with pytest.raises(ValueError, match=r"training y: cross_entropy: label 7 out of range; "
                                         r"expected labels in 0..1"):
        dl.fit(dl.mlp([3, 4, 2]), x, y_bad, batch_size=10, callbacks=[Count()])
    with pytest.raises(ValueError, match=r"validation y: cross_entropy: label 7 out of range"):
        dl.fit(dl.mlp([3, 4, 2]), x, y, x[:50], y_bad[-50:], batch_size=10, callbacks=[Count()])
    with pytest.raises(ValueError, match=r"training y: mse: pred shape \(400, 2\) and target "
                                         r"shape \(400,\) differ"):
        dl.fit(dl.mlp([3, 4, 2]), x, y, loss="mse", callbacks=[Count()])
    assert calls == []


def test_low_level_constructors_check_their_arguments():
    """Parameter(list) failed with AttributeError; Network(n_inputs=0 or not the first layer's
    width) was accepted; lsuv(max_iter=0) returned NaN variances."""
    p = dl.Parameter("w", [1.0, 2.0], "weight")
    assert p.value.dtype == np.float64 and p.grad.shape == (2,)
    with pytest.raises(TypeError, match=r"Parameter 'w': value of dtype int64 is not accepted"):
        dl.Parameter("w", np.arange(3), "weight")
    with pytest.raises(ValueError, match=r"n_inputs must be a positive integer, got 0"):
        dl.Network([dl.layers.Dense(3, 2)], n_inputs=0)
    with pytest.raises(ValueError, match=r"n_inputs=5 does not match the first Dense layer's 3"):
        dl.Network([dl.layers.Dense(3, 2)], n_inputs=5)
    with pytest.raises(ValueError, match=r"max_iter must be a positive integer, got 0"):
        dl.lsuv(dl.mlp([3, 4, 2]), np.random.default_rng(0).standard_normal((10, 3)), max_iter=0)


def test_report_on_a_read_only_disk_names_the_file_it_cannot_write(tmp_path, capsys):
    """report opened the store for writing: on a read-only disk it said 'cannot open results
    store ... unable to open database file' although the store was fine."""
    import os
    import subprocess

    if not (hasattr(os, "geteuid") and os.geteuid() == 0):
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        cfg = write(tmp_path, "c.toml", SMALL)
        assert run_cli(capsys, "run", cfg, "--out", mnt / "st", "-q")[0] == 0
        (mnt / "st" / "report.html").write_text("old report")
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        code, _, err = run_cli(capsys, "report", mnt / "st", "-q")
        assert_one_line_error(code, err, str(mnt / "st"), "Read-only file system")
        assert "cannot open results store" not in err
        assert (mnt / "st" / "report.html").read_text() == "old report"
        assert run_cli(capsys, "runs", mnt / "st")[0] == 0
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
