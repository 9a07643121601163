"""The NumPy-side public API as a new user calls it, then stray: user data files (labels,
NaN, huge values, one-hot rows), predict inputs, save/load, theory arguments, the doctor's
settings and the command line's odd-but-legal and illegal arguments. Each test names the
wrong behaviour it pins down."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import depthlab as dl
from depthlab.data import load_dataset
from depthlab.inference import read_inputs
from tests.helpers.cli import assert_one_line_error, one_blas_thread, run_cli


def _xy(n: int = 40, d: int = 5, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), np.arange(n) % k


# -- data files -------------------------------------------------------------------------------

def test_labels_beyond_int64_are_named_as_written(tmp_path):
    """A uint64 label of 2**63 + 5 was reported as -9223372036854775803, a CSV label of 1e20
    as -9223372036854775808 (with a RuntimeWarning from the cast)."""
    x, y = _xy()
    big = y.astype(np.uint64)
    big[3] = 2**63 + 5
    np.savez(tmp_path / "u.npz", x=x, y=big)
    with pytest.raises(ValueError, match=r"label 9223372036854775813 is too large; accepted: "
                                         r"integers 0 <= label < 2\*\*63"):
        load_dataset(tmp_path / "u.npz")
    rows = "".join(f"{i},{i % 2}\n" for i in range(6)) + "7,1e20\n"
    (tmp_path / "b.csv").write_text("f,label\n" + rows)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match=r"label 1e\+20 is too large"):
            load_dataset(tmp_path / "b.csv")
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
    # uint64 labels that fit are labels like any other
    np.savez(tmp_path / "ok.npz", x=x, y=y.astype(np.uint64))
    assert load_dataset(tmp_path / "ok.npz").n_classes == 3


def test_one_hot_label_rows_are_read_as_classes(tmp_path):
    """An .npz whose y holds one-hot rows was refused ('labels must be 1-D'); other 2-D
    labels are refused saying what is accepted."""
    x, y = _xy()
    np.savez(tmp_path / "int.npz", x=x, y=y)
    np.savez(tmp_path / "hot.npz", x=x, y=np.eye(3, dtype=np.float32)[y])
    a, b = load_dataset(tmp_path / "int.npz"), load_dataset(tmp_path / "hot.npz")
    assert b.n_classes == 3 and np.array_equal(a.y_train, b.y_train)
    assert np.array_equal(a.x_train, b.x_train)
    two = np.eye(3)[y]
    two[0, 1] = 1.0  # two classes in one row: not one-hot
    np.savez(tmp_path / "two.npz", x=x, y=two)
    with pytest.raises(ValueError, match=r"labels must be 1-D, got shape \(40, 3\); accepted: "
                                         r"integer labels \(n,\) or one-hot rows"):
        load_dataset(tmp_path / "two.npz")


def test_non_finite_features_are_named_by_row_and_column(tmp_path):
    """NaN in a file's features said only 'features contain 1 NaN/inf value(s)'; a CSV's
    empty cell (a trailing comma) now names its column and line."""
    x, y = _xy()
    x[3, 2] = np.inf
    np.savez(tmp_path / "f.npz", x=x, y=y)
    with pytest.raises(ValueError, match=r"f.npz: features contain 1 NaN/inf value\(s\), the "
                                         r"first inf at row 3, column 2"):
        load_dataset(tmp_path / "f.npz")
    # an empty cell of a named column (an empty last column after a trailing comma on every
    # line is dropped: tests/test_infra_round9.py)
    (tmp_path / "t.csv").write_text("a,b,label\n1,,0\n2,,1\n3,,0\n4,,1\n")
    with pytest.raises(ValueError, match=r"feature column 'b' has an empty cell on line 2 "
                                         r"\(4 such value\(s\)\).*empty cell reads as NaN"):
        load_dataset(tmp_path / "t.csv")


# -- predict inputs ---------------------------------------------------------------------------

def test_predict_reads_a_headerless_csv_with_a_byte_order_mark_whole(tmp_path):
    """A headerless CSV saved with a UTF-8 byte-order mark lost its first row: the mark made
    the first cell non-numeric, so the row was taken for a header."""
    x = np.arange(12.0).reshape(3, 4) / 7
    text = "\n".join(",".join(repr(float(v)) for v in row) for row in x) + "\n"
    (tmp_path / "bom.csv").write_text(text, encoding="utf-8-sig")
    got = read_inputs(str(tmp_path / "bom.csv"))
    assert got.shape == (3, 4) and np.array_equal(got, x)
    (tmp_path / "hdr.csv").write_text("a,b,c,d\n" + text, encoding="utf-8-sig")
    assert np.array_equal(read_inputs(str(tmp_path / "hdr.csv")), x)


def test_predict_reads_the_npz_keys_training_accepts(tmp_path):
    """load_dataset reads X/y, predict refused the same file ('has no x array'); a .npz of
    one unnamed array (arr_0) is its inputs."""
    x = np.arange(8.0).reshape(2, 4)
    np.savez(tmp_path / "upper.npz", X=x, y=np.array([0, 1]))
    np.savez(tmp_path / "lone.npz", x)
    np.savez(tmp_path / "two.npz", a=x, b=x)
    assert np.array_equal(read_inputs(str(tmp_path / "upper.npz")), x)
    assert np.array_equal(read_inputs(str(tmp_path / "lone.npz")), x)
    with pytest.raises(ValueError, match=r"has no 'x' \(or 'X'\) array; arrays: a, b"):
        read_inputs(str(tmp_path / "two.npz"))
    with pytest.raises(ValueError, match=r"DATA '' is empty"):
        read_inputs("")


# -- save / load ------------------------------------------------------------------------------

def test_save_names_meta_that_is_not_json_and_keeps_an_upper_case_suffix(tmp_path):
    """meta={'lr': nan} blamed 'the network's recipe' and told the user to build with dl.mlp;
    dl.save(net, 'NET.NPZ') wrote NET.NPZ.npz."""
    net = dl.mlp([4, 3, 2], seed=0)
    with pytest.raises(TypeError, match=r"meta\['lr'\] = nan cannot be saved"):
        dl.save(net, tmp_path / "a.npz", meta={"lr": float("nan")})
    with pytest.raises(TypeError, match=r"meta\['when'\] = .*cannot be saved"):
        dl.save(net, tmp_path / "a.npz", meta={"when": object()})
    assert not (tmp_path / "a.npz").exists()
    path = dl.save(net, tmp_path / "NET.NPZ", meta={"lr": 0.1})
    assert path == tmp_path / "NET.NPZ" and path.is_file()
    x = np.ones((2, 4), np.float32)
    assert np.array_equal(dl.load(path).predict(x), net.predict(x))


# -- theory -----------------------------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda: dl.theory.propagate([5, 5, 5], "tanh", input_var="1"),
    lambda: dl.theory.propagate([5, 5, 5], "tanh", bias_var=None),
    lambda: dl.theory.gradient_ratio([5, 5, 5], "tanh", input_mean="0"),
    lambda: dl.theory.predict_gradients(dl.mlp([5, 4, 4, 3], seed=0), input_var="1"),
    lambda: dl.theory.preserving_weight_variance("tanh", 10, 10, q="1"),
    lambda: dl.theory.q_map("tanh", "1", 1.0),
    lambda: dl.theory.c_map("tanh", "0.5", 1.0),
    lambda: dl.theory.selu_map("0", 1.0),
])
def test_theory_numbers_given_as_strings_are_named(call):
    """These raised NumPy's "ufunc 'isfinite' not supported for the input types"."""
    with pytest.raises(TypeError, match=r"(input_var|bias_var|input_mean|q|c|mu) must be a "
                                        r"real number, got"):
        call()


def test_theory_bool_variance_refused_and_numbers_still_accepted():
    """propagate(bias_var=True) was read as a variance of 1."""
    with pytest.raises(TypeError, match=r"bias_var must be a real number, got True"):
        dl.theory.propagate([5, 5, 5], "tanh", bias_var=True)
    a = dl.theory.propagate([5, 5, 5], "tanh", input_var=np.float32(2.0))
    b = dl.theory.propagate([5, 5, 5], "tanh", input_var=2)
    assert a.equals(b)


# -- doctor -----------------------------------------------------------------------------------

def test_doctor_takes_fit_batch_size_rule_and_names_validation_rows():
    """dl.fit accepts batch_size="full", dl.doctor refused it (and `depthlab doctor` silently
    trained a full-batch config with batches of 32); a (x, y, x_val, y_val) tuple whose
    validation parts differ in length was reported as 'probe_y has 4 rows but probe_x has 5'."""
    x, y = _xy(60, 4, 2)
    x = x.astype(np.float32)
    net = dl.mlp([4, 6, 2], seed=0)
    diag = dl.doctor(net, (x, y), steps=4, batch_size="full")
    assert diag.settings["batch_size"] == "full" and "batch full" in str(diag)
    with pytest.raises(ValueError, match=r'batch_size = 0 is out of range; accepted: an '
                                         r'integer >= 1 or "full"'):
        dl.doctor(net, (x, y), steps=4, batch_size=0)
    with pytest.raises(ValueError, match=r"validation x has 5 rows but validation y has 4"):
        dl.doctor(net, (x, y, x[:5], y[:4]), steps=4)
    with pytest.raises(ValueError, match=r"x has 60 rows but y has 59"):
        dl.doctor(net, (x, y[:59], x[:5], y[:5]), steps=4)


def test_cli_doctor_trains_a_full_batch_config_full_batch(tmp_path, capsys, monkeypatch):
    one_blas_thread(monkeypatch)
    (tmp_path / "full.toml").write_text(
        '[data]\nname = "digits"\nn = 200\n[model]\nsizes = ["auto", 8, "auto"]\n'
        '[train]\nbatch_size = "full"\n')
    code, out, err = run_cli(capsys, "doctor", tmp_path / "full.toml", "--steps", "3",
                             "--out", tmp_path / "res")
    assert code == 0, err
    assert "batch full" in out


# -- command line -----------------------------------------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (["run", ""], "config path '' is empty; expected a .toml file"),
    (["sweep", ""], "config path '' is empty"),
    (["doctor", ""], "config path '' is empty"),
    (["runs", ""], "argument dir: an empty path is not accepted"),
    (["report", ""], "argument dir: an empty path is not accepted"),
    (["export", ""], "argument dir: an empty path is not accepted"),
    (["init", "  "], "give NAME"),
    (["predict", "net.npz", ""], "DATA '' is empty"),
    (["playground", "--host", "", "--no-browser"], "argument --host: '' is not a host"),
    (["playground", "--host", " ", "--no-browser"], "argument --host: ' ' is not a host"),
])
def test_cli_empty_arguments_are_refused_naming_the_empty_value(tmp_path, capsys, monkeypatch,
                                                                args, fragment):
    """An empty config path was reported as "config path '.' is a folder", an empty results
    folder was read as the current one, `init "  "` wrote a file named '  .toml', an empty
    DATA was "a folder", and `playground --host ""` listened on every interface (0.0.0.0)."""
    monkeypatch.chdir(tmp_path)
    if args[0] == "playground":  # were it accepted, fail instead of serving forever
        def serve(*_a, **_k):
            raise AssertionError(f"the playground was started with {args}")
        monkeypatch.setattr("depthlab.playground.server.serve", serve)
    dl.save(dl.mlp([3, 2], seed=0), tmp_path / "net.npz")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_csv_that_cannot_fit_is_refused_before_pandas_reads_it(tmp_path, monkeypatch):
    """A CSV was read whole by pandas whatever its size (.npz, .npy and IDX files were sized
    from their headers first); now its size and first row give the estimate."""
    import gzip

    import pandas as pd

    rows = "\n".join(",".join(["0.123456"] * 9 + [str(i % 2)]) for i in range(3000))
    text = ",".join(f"f{i}" for i in range(9)) + ",label\n" + rows + "\n"
    (tmp_path / "big.csv").write_text(text)
    (tmp_path / "big.csv.gz").write_bytes(gzip.compress(text.encode()))
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "100K")

    def no_read(*_a, **_k):
        raise AssertionError("pandas read the file before the memory check")

    monkeypatch.setattr(pd, "read_csv", no_read)
    for name in ("big.csv", "big.csv.gz"):
        with pytest.raises(ValueError,
                           match=r"CSV of about 3,000 rows x 10 columns\) needs about 469 KiB of "
                                 r"memory but only 100 KiB is available; nothing was allocated"):
            load_dataset(tmp_path / name)
    with pytest.raises(ValueError, match=r"DATA .*big.csv' \(CSV of about 3,000 rows"):
        read_inputs(str(tmp_path / "big.csv"))
    monkeypatch.undo()
    assert load_dataset(tmp_path / "big.csv.gz").n_features == 9


def test_predict_to_the_file_it_reads_is_refused_and_both_files_kept(tmp_path, capsys,
                                                                      monkeypatch):
    """`predict net.npz x.npy --to net.npz` replaced the saved network with the CSV of
    predictions (and --to x.npy the inputs); --to DIR/depthlab.db would replace a store."""
    monkeypatch.chdir(tmp_path)
    dl.save(dl.mlp([3, 2], seed=0), tmp_path / "net.npz")
    np.save(tmp_path / "x.npy", np.ones((2, 3)))
    kept = {n: (tmp_path / n).read_bytes() for n in ("net.npz", "x.npy")}
    for target, fragment in (("net.npz", "is the network this command reads"),
                             ("./x.npy", "is DATA this command reads"),
                             ("res/depthlab.db", "is a results store name")):
        code, out, err = run_cli(capsys, "predict", "net.npz", "x.npy", "--to", target)
        assert_one_line_error(code, err, f"--to {target!r}", fragment)
    assert {n: (tmp_path / n).read_bytes() for n in kept} == kept
    assert not (tmp_path / "res").exists()
    code, out, err = run_cli(capsys, "predict", "net.npz", "x.npy", "--to", "p.csv")
    assert code == 0 and (tmp_path / "p.csv").read_text().startswith("class,output_0")


def test_predict_on_the_training_csv_says_which_column_is_too_many(tmp_path, capsys):
    """The training CSV (features and its label column) gave only '4 features per row; the
    network expects 3'."""
    dl.save(dl.mlp([3, 2], seed=0), tmp_path / "net.npz")
    (tmp_path / "train.csv").write_text("a,b,c,label\n1,2,3,0\n4,5,6,1\n")
    code, out, err = run_cli(capsys, "predict", tmp_path / "net.npz", tmp_path / "train.csv")
    assert_one_line_error(code, err, "has 4 features per row; the network expects 3 (one "
                                     "column too many: if it holds the labels, drop it)")


def test_save_names_the_recipe_setting_that_is_an_object(tmp_path):
    """mlp(seed=np.random.default_rng(0)) saved as 'the network's recipe is not plain JSON
    (Object of type Generator ...); build it with dl.mlp': it was built with dl.mlp."""
    from depthlab.initializers import get_initializer

    for kw, fragment in (({"seed": np.random.default_rng(0)}, r"seed = Generator\(PCG64\)"),
                         ({"init": get_initializer("he_normal")}, r"init = he_normal\(")):
        with pytest.raises(TypeError, match=r"recipe has " + fragment + r".*not plain JSON; "
                                            r".*integer seed"):
            dl.save(dl.mlp([3, 4, 2], **kw), tmp_path / "g.npz")
    assert not (tmp_path / "g.npz").exists()


def test_pandas_nullable_numbers_are_numbers_everywhere():
    """A DataFrame of pandas' nullable Float64 (read_csv(dtype_backend="numpy_nullable"))
    was refused by fit, probe, predict, ProbeRecorder and the doctor as 'dtype object'; with
    pd.NA it is now named as not finite, by row and column."""
    import pandas as pd

    x, y = _xy(30, 4, 2)
    x = x.astype(np.float32)
    frame, labels = pd.DataFrame(x).astype("Float64"), pd.Series(y, dtype="Int64")
    a, b = dl.mlp([4, 5, 2], seed=0), dl.mlp([4, 5, 2], seed=0)
    assert (dl.fit(a, frame, labels, epochs=1).step_loss
            == dl.fit(b, x, y, epochs=1).step_loss)
    assert np.array_equal(a.predict(frame), b.predict(x))
    assert dl.probe(a, frame, labels).equals(dl.probe(b, x, y))
    assert dl.ProbeRecorder(frame, labels).probe_x.dtype.kind == "f"
    dl.doctor(a, (frame, labels), steps=2)
    holes = frame.copy()
    holes.iloc[2, 1] = pd.NA
    with pytest.raises(ValueError, match=r"training x contains NaN or infinity \(first at row "
                                         r"2, column 1\)"):
        dl.fit(a, holes, labels, epochs=1)
    with pytest.raises(ValueError, match=r"x contains NaN or infinity \(first at row 2, "):
        dl.probe(a, holes, labels)
    with pytest.raises(TypeError, match=r"dtype object is not accepted"):
        dl.fit(a, pd.DataFrame({"a": ["u"] * 30, "b": 1.0, "c": 1.0, "d": 1.0}), y)


def test_run_then_predict_on_its_own_training_csv(tmp_path, capsys, monkeypatch):
    """`depthlab predict RUN train.csv` on the CSV the run trained on was refused ('4 features
    per row; the network expects 3'): the run's label column is dropped and scores the
    predictions. A CSV's own error was prefixed with its path twice by `depthlab run`."""
    one_blas_thread(monkeypatch)
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    rows = "".join(f"{int(a > 0)},{a!r},{b!r},{c!r}\n" for a, b, c in x.tolist())
    (tmp_path / "t.csv").write_text("target,a,b,c\n" + rows)
    (tmp_path / "bad.csv").write_text("target,a\nyes,1\nno,2\n")
    cfg = ('[data]\npath = "{}"\nlabel = "target"\n[model]\nsizes = ["auto", 4, "auto"]\n'
           '[train]\nepochs = 1\n[probes]\njacobian = false\n')
    (tmp_path / "bad.toml").write_text(cfg.format("bad.csv"))
    code, out, err = run_cli(capsys, "run", "bad.toml", "--out", "res", "--quiet")
    line = assert_one_line_error(code, err, "labels must be integers, column 'target'")
    assert line.count("bad.csv") == 1, line
    (tmp_path / "t.toml").write_text(cfg.format("t.csv"))
    code, out, err = run_cli(capsys, "run", "t.toml", "--out", "res", "--quiet", "--json")
    assert code == 0, err
    import json

    run_id = json.loads(out)["id"]
    code, out, err = run_cli(capsys, "predict", run_id, "t.csv", "--dir", "res")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "class,output_0,output_1" and len(lines) == 61
    classes = np.array([int(r.split(",")[0]) for r in lines[1:]])
    acc = float((classes == (x[:, 0] > 0)).mean())
    assert err.strip() == f"t.csv: 60 rows, accuracy {acc:.4f}"
    np.savetxt(tmp_path / "x.csv", x, delimiter=",")  # features only: the same outputs
    code, out2, err = run_cli(capsys, "predict", run_id, "x.csv", "--dir", "res")
    assert code == 0 and out2 == out and err == ""


def test_thread_counts_beyond_any_machine_are_refused_in_one_line(capsys, monkeypatch):
    """`depthlab --threads 99999999999999999999999 runs` ended in 'ArgumentError: argument 1:
    OverflowError: int too long to convert (internal error)' from ctypes."""
    from depthlab.threads import MAX_THREADS, check_threads

    one_blas_thread(monkeypatch)
    for n in ("99999999999999999999999", str(MAX_THREADS + 1)):
        code, out, err = run_cli(capsys, "--threads", n, "runs", "nowhere")
        assert_one_line_error(code, err, f"--threads {n} is not accepted; accepted: an "
                                         f"integer >= 1 and <= {MAX_THREADS}")
    monkeypatch.setenv("DEPTHLAB_THREADS", "10" * 12)
    code, out, err = run_cli(capsys, "runs", "nowhere")
    assert_one_line_error(code, err, f"DEPTHLAB_THREADS='{'10' * 12}' is not accepted")
    with pytest.raises(ValueError, match=r"threads=5000 is not accepted"):
        dl.fit(dl.mlp([2, 2], seed=0), np.ones((4, 2)), np.arange(4) % 2, threads=5000)
    assert check_threads(np.int64(MAX_THREADS)) == MAX_THREADS


def test_sweep_limit_beyond_any_grid_runs_the_whole_grid():
    """--limit 10**23 ended in 'Stop argument for islice() must be None or an integer: 0 <= x
    <= sys.maxsize (internal error)'."""
    from depthlab.experiments.grid import iter_points

    raw = {"data": {"name": "digits"}, "model": {"sizes": ["auto", 4, "auto"]},
           "sweep": {"train.seed": [0, 1, 2]}}
    assert len(list(iter_points(raw, limit=10**23))) == 3
    assert len(list(iter_points(raw, limit=2))) == 2


def test_theory_at_depths_and_widths_beyond_any_network():
    """gradient_growth over 10**30 layers raised OverflowError (34, 'Numerical result out of
    range'); selu_trajectory(depth=10**30) iterated until memory ran out; propagate refused
    the integer width 10**30 as not an integer ('float(n) != int(n)')."""
    assert dl.theory.gradient_growth("tanh", 1.5, 0.0, 10**30) == float("inf")
    assert dl.theory.gradient_growth("tanh", 0.5, 0.0, 10**30) == 0.0
    with pytest.raises(ValueError, match=r"selu_trajectory\(depth=1(0{30})\) .* needs about .* "
                                         r"nothing was allocated"):
        dl.theory.selu_trajectory(0.0, 1.0, 10**30)
    assert len(dl.theory.selu_trajectory(0.0, 1.0, 3)) == 4
    wide = dl.theory.propagate([10**30, 10**30, 10**30], "relu", init="he_normal")
    assert wide.pre_var.tolist() == pytest.approx([2.0, 2.0])
    with pytest.raises(ValueError, match=r"sizes must list >= 2 positive integer widths"):
        dl.theory.propagate([5, 2.5, 3], "tanh")


def test_calibrate_on_one_row_is_refused():
    """net.calibrate(x[:1]) set every population variance to 0, so population-mode
    predictions were scaled by 1/sqrt(eps) (outputs of 100s instead of ~1)."""
    x = np.random.default_rng(0).normal(size=(9, 3))
    net = dl.mlp([3, 4, 2], batchnorm=True, seed=0)
    with pytest.raises(ValueError, match=r"calibrate needs at least 2 rows .* got 1"):
        net.calibrate(x[:1])
    assert net.batchnorms()[0].population_var is None
    net.calibrate(x)
    net.set_bn_inference("population")
    assert np.abs(net.predict(x)).max() < 10
    dl.mlp([3, 4, 2], seed=0).calibrate(x[:1])  # no batch norm: nothing to estimate


def test_save_under_a_file_names_the_file_in_one_line(tmp_path):
    """dl.save(net, 'FILE/sub/net.npz') raised a bare NotADirectoryError from its own mkdir
    (FILE/net.npz already said "'FILE' is a file, not a folder")."""
    from depthlab.atomic import AtomicWriteError

    (tmp_path / "f").write_text("keep")
    net = dl.mlp([3, 2], seed=0)
    for target in ("f/net.npz", "f/sub/net.npz", "f/sub/deeper/net.npz"):
        with pytest.raises(AtomicWriteError, match=r"cannot write '.*" + target + r"': '.*/f' "
                                                   r"is a file, not a folder"):
            dl.save(net, tmp_path / target)
    assert (tmp_path / "f").read_text() == "keep"
    assert dl.save(net, tmp_path / "new" / "sub" / "net.npz").is_file()


def test_init_keeps_an_upper_case_toml_suffix(tmp_path, capsys, monkeypatch):
    """`depthlab init Exp.TOML` wrote 'Exp.TOML.toml'."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "init", "Exp.TOML")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Exp.TOML"]
    assert 'name = "Exp"' in (tmp_path / "Exp.TOML").read_text()


def test_doctor_refuses_verify_on_a_hand_built_network_before_training(monkeypatch):
    """verify=True on a Network without an mlp() recipe trained the whole budget first and
    only then said it cannot verify."""
    import importlib

    from depthlab.layers import Activation, Dense
    from depthlab.network import Network

    def no_training(*_a, **_k):
        raise AssertionError("trained before refusing")

    monkeypatch.setattr(importlib.import_module("depthlab.diagnosis.doctor"), "_train",
                        no_training)
    net = Network([Dense(3, 4), Activation("tanh"), Dense(4, 2)], n_inputs=3)
    x, y = _xy(20, 3, 2)
    with pytest.raises(ValueError, match=r"verify=True needs a network built by mlp\(\)"):
        dl.doctor(net, (x, y), steps=5, verify=True)


def test_npz_whose_arrays_fit_one_by_one_but_not_together_is_refused(tmp_path, monkeypatch):
    """Each array of a .npz was checked against the memory available on its own: x_train and
    x_test of 300 KiB each passed a 400 KiB limit and were both loaded."""
    x = np.zeros((4800, 8))  # 300 KiB
    y = np.arange(4800) % 2
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "400K")
    with pytest.raises(ValueError, match=r"d.npz' \(its 4 arrays together\) needs about 675 KiB "
                                         r"of memory but only 400 KiB is available"):
        load_dataset(tmp_path / "d.npz")
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "1G")
    assert load_dataset(tmp_path / "d.npz").sizes["test"] == 4800


def test_reproduce_names_are_read_like_every_other_name(tmp_path, capsys):
    """`depthlab reproduce XU2016` (or depth_ladder) was an unknown experiment while
    activations, losses and optimizers take any case and _ for -. A file as --out stops it
    before it runs."""
    (tmp_path / "f").write_text("")
    for name in ("XU2016", "Depth_Ladder", " he2015 "):
        code, out, err = run_cli(capsys, "reproduce", name, "--quick", "--out", tmp_path / "f")
        assert_one_line_error(code, err, "cannot be used as a folder")
    code, out, err = run_cli(capsys, "reproduce", "xu2017", "--quick")
    assert_one_line_error(code, err, "unknown experiment 'xu2017'")


def test_init_example_names_take_any_case(tmp_path, capsys, monkeypatch):
    """`depthlab init x --example Digits_Run` said the example is not shipped."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "init", "x", "--example", "Digits-Run")
    assert code == 0, err
    assert (tmp_path / "x.toml").is_file()
    code, out, err = run_cli(capsys, "init", "y", "--example", "digits-runs")
    assert_one_line_error(code, err, "--example 'digits-runs' is not shipped")


def test_predict_flattens_images_as_training_does(tmp_path):
    """A .npy of images (N, 8, 8) was refused ('expected a 2-D array') by predict while
    training on the same images (an .npz of (N, 8, 8)) flattens each to 64 features."""
    images = np.random.default_rng(0).random((5, 8, 8))
    np.save(tmp_path / "img.npy", images)
    np.savez(tmp_path / "img.npz", x=images[:, None])  # (N, 1, 8, 8)
    for name in ("img.npy", "img.npz"):
        got = read_inputs(str(tmp_path / name))
        assert got.shape == (5, 64) and np.array_equal(got, images.reshape(5, 64))


def test_theory_prediction_of_a_network_without_recipe_says_what_it_needs():
    """A Network built from layers has no dl.mlp recipe: predict_gradients says so (it raised
    the config loader's '[model] needs sizes', about a config the user never wrote)."""
    from depthlab.layers import Activation, Dense
    from depthlab.network import Network
    from depthlab.theory import predict_gradients

    rng = np.random.default_rng(0)
    net = Network([Dense(4, 8, rng=rng), Activation("tanh"), Dense(8, 2, rng=rng)], n_inputs=4)
    with pytest.raises(ValueError, match="no recipe.*ModelSpec"):
        predict_gradients(net)
    recipe = dl.mlp([4, 8, 8, 2], activation="tanh", seed=0)
    assert predict_gradients(recipe).covered


def test_doctor_summary_leaves_out_an_accuracy_it_did_not_measure():
    """An mse doctor run has no accuracy: its summary and verifications say nothing of one
    (they printed 'val acc nan' and 'val acc nan -> nan')."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 4)).astype(np.float32)
    y = np.eye(2, dtype=np.float32)[rng.integers(0, 2, 120)]
    init = dl.initializers.get_initializer("normal", std=10.0)  # 800x Glorot's: a mismatch
    d = dl.doctor({"sizes": [4, 8, 8, 2], "activation": "sigmoid", "init": init},
                  (x, y), loss="mse", steps=20, batch_size=16, seed=0, verify=True)
    text = str(d)
    assert "nan" not in text.lower(), text
    assert "train loss" in text and d.findings and d.verifications


def test_names_written_as_torch_and_keras_spell_classes_are_found():
    """'CrossEntropyLoss', 'MSELoss', 'GlorotUniform', 'LeakyReLU' name what 'cross_entropy',
    'mse', 'glorot_uniform', 'leaky_relu' do (CamelCase was refused: no separators); a name
    still unknown is refused with the list."""
    from depthlab.activations import REGISTRY as ACTIVATIONS
    from depthlab.initializers import REGISTRY as INITIALIZERS
    from depthlab.losses import REGISTRY as LOSSES

    assert LOSSES.key("CrossEntropyLoss") == LOSSES.key("CrossEntropy") == "cross_entropy"
    assert LOSSES.key("MSELoss") == "mse" and LOSSES.key("BCELoss") == "bce_loss"
    assert INITIALIZERS.key("GlorotUniform") == "glorot_uniform"
    assert INITIALIZERS.key("KaimingNormal") == "he_normal"
    assert ACTIVATIONS.key("LeakyReLU") == "leaky_relu"
    with pytest.raises(ValueError, match="unknown loss 'CrossEntropyLos'.*cross_entropy"):
        LOSSES.key("CrossEntropyLos")
    net = dl.mlp([3, 4, 2], activation="ReLU", init="HeNormal", seed=0)
    x = np.ones((2, 3), dtype=np.float32)
    h = dl.fit(net, x, np.array([0, 1]), loss="CrossEntropyLoss", optimizer="SGD", lr=0.1,
               epochs=1, batch_size=2)
    assert np.isfinite(h.step_loss[0])
