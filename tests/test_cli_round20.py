"""Round 20, the command line and the experiment machinery."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from depthlab.cli import main


def _csv_run(tmp_path):
    """A run of `depthlab run` on a CSV (3 features, label column last): (its network, the CSV,
    the labels, the results folder)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    data = tmp_path / "d.csv"
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "label": y}).to_csv(data,
                                                                              index=False)
    (tmp_path / "p.toml").write_text('[data]\npath = "d.csv"\n[model]\nsizes = ["auto", 8, '
                                     '"auto"]\n[train]\nepochs = 2\n[probes]\nevery = 0\n')
    out = tmp_path / "r"
    assert main(["run", str(tmp_path / "p.toml"), "--out", str(out), "--quiet"]) == 0
    (net,) = (out / "models").glob("*.npz")
    return net, data, y, out


@pytest.mark.parametrize("cell, said", [("", "has an empty cell in the label column 'label'"),
                                        ("n/a", "holds 'n/a' in the label column 'label'"),
                                        ("0.5", "holds '0.5' in the label column 'label'")])
def test_predict_on_a_csv_with_a_row_without_a_label_scores_the_others(tmp_path, capsys,
                                                                       cell, said):
    # the run's own CSV with one label cell empty (or n/a, or 0.5) silently printed no
    # accuracy at all: the labels were dropped whole. Now the rows that have a class number are
    # scored, and a warning names the line without one
    net, data, y, _ = _csv_run(tmp_path)
    assert main(["predict", str(net), str(data), "--to", str(tmp_path / "all.csv")]) == 0
    classes = pd.read_csv(tmp_path / "all.csv")["class"].to_numpy()
    lines = data.read_text().splitlines()
    lines[5] = ",".join(lines[5].split(",")[:-1] + [cell])  # data row 4, file line 6
    holed = tmp_path / "holed.csv"
    holed.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    with pytest.warns(UserWarning) as said_lines:
        assert main(["predict", str(net), str(holed), "--to", str(tmp_path / "p.csv")]) == 0
    err = capsys.readouterr().err
    warned = " ".join(str(w.message) for w in said_lines)
    keep = np.arange(len(y)) != 4
    want = float((classes[keep] == y[keep]).mean())
    assert f"line 6 {said}, not a class number" in warned
    assert "(1 of 60 rows without one): the accuracy is over the 59 rows" in warned
    assert f"59 of 60 rows labelled, accuracy {want:.4f}" in err
    assert (pd.read_csv(tmp_path / "p.csv")["class"].to_numpy() == classes).all()


def test_predict_on_a_csv_whose_label_column_holds_no_class_numbers_says_so(tmp_path, capsys):
    net, data, _, _ = _csv_run(tmp_path)
    frame = pd.read_csv(data)
    frame["label"] = "cat"
    text = tmp_path / "text.csv"
    frame.to_csv(text, index=False)
    capsys.readouterr()
    with pytest.warns(UserWarning, match=r"line 2 holds 'cat' in the label column 'label', not "
                      r"a class number 0, 1, \.\.\. \(nor does any other row\): no accuracy is "
                      "computed"):
        assert main(["predict", str(net), str(text), "--to", str(tmp_path / "p.csv")]) == 0
    assert "accuracy" not in capsys.readouterr().err


def test_read_labeled_inputs_keeps_its_labels_whole_or_none(tmp_path):
    # the Python function's labels stay all rows' or None (no -1 rows leak out of it)
    from depthlab.inference import read_input_file, read_labeled_inputs

    path = tmp_path / "d.csv"
    path.write_text("a,label\n1.0,0\n2.0,\n3.0,1\n")
    with pytest.warns(UserWarning, match="line 3 has an empty cell"):
        x, labels = read_labeled_inputs(str(path), "label")
    assert labels is None and x.shape == (3, 1)
    with pytest.warns(UserWarning):
        found = read_input_file(str(path), "label")
    assert found.labels.tolist() == [0, -1, 1]
    assert found.labelled.tolist() == [True, False, True]
    path.write_text("a,label\n1.0,0\n2.0,2\n")
    x, labels = read_labeled_inputs(str(path), "label")
    assert labels.tolist() == [0, 2]


def test_a_data_path_given_as_a_path_object_is_its_string(tmp_path):
    # from Python, {"data": {"path": Path("d.npz")}} was refused ("has the wrong type;
    # accepted: a non-empty string") though load_dataset takes a Path: now the same config,
    # run id and sweep points as the string
    from pathlib import Path

    from depthlab.experiments import expand, run_id, validate
    from depthlab.experiments.config import ConfigError

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(40, 3)), y=np.arange(40) % 2)

    def config(path):
        return {"data": {"path": path}, "model": {"sizes": ["auto", 4, "auto"]}}

    want = validate(config("d.npz"), base_dir=tmp_path)
    for path in (Path("d.npz"), tmp_path / "d.npz"):
        got = validate(config(path), base_dir=tmp_path)
        assert got == want and run_id(got) == run_id(want)
        assert isinstance(got["data"]["path"], str)
    raw = {**config("d.npz"), "sweep": {"data.path": [Path("d.npz")]}}
    assert [p.id for p in expand(raw, base_dir=tmp_path)] == [run_id(want)]
    with pytest.raises(ConfigError, match=r"data.path = b'd.npz' has the wrong type; accepted: "
                       r"a non-empty string or path \(os.PathLike\)$"):
        validate(config(b"d.npz"), base_dir=tmp_path)


@pytest.mark.parametrize("section, given", [
    ("train", {"momentum": 0.0, "nesterov": False, "dampening": 0}),
    ("train", {"optimizer_kwargs": {"weight_decay": 0.0}}),
    ("train", {"optimizer": "adam", "betas": [0.9, 0.999], "eps": 1e-8}),
    ("train", {"loss_kwargs": {"label_smoothing": 0.0}}),
    ("model", {"activation": "leaky_relu", "activation_kwargs": {"negative_slope": 0.01}}),
])
def test_a_hyperparameter_given_at_its_default_keeps_the_run_id(section, given):
    # `momentum = 0.0` (sgd's default) trains exactly as leaving it out, but was another run
    # id: `depthlab run` trained the stored run again, a sweep recomputed its points
    from depthlab.experiments import run_id, validate

    base = {"data": {"name": "clusters"}, "model": {"sizes": ["auto", 8, "auto"]},
            "train": {"epochs": 1}}
    plain = {**base, section: {**base[section], **{k: v for k, v in given.items()
                                                   if k in ("optimizer", "activation")}}}
    full = {**base, section: {**base[section], **given}}
    assert run_id(validate(full)) == run_id(validate(plain))
    assert run_id(validate(plain)) == run_id(validate(validate(plain)))
    # a value off the default is another run, as before
    other = {**base, "train": {"epochs": 1, "momentum": 0.5}}
    assert run_id(validate(other)) != run_id(validate(base))


def test_run_ids_without_a_default_given_are_unchanged():
    # the ids of configs that give no hyperparameter at its default are the ones stores hold
    from depthlab.experiments import run_id, validate

    base = {"data": {"name": "clusters"}, "model": {"sizes": ["auto", 8, "auto"]},
            "train": {"epochs": 1}}
    assert run_id(validate(base)) == "b11979f58786"
    base["train"]["momentum"] = 0.9
    assert run_id(validate(base)) == "1f5682a8ac37"
    base["model"].update(activation="leaky_relu", activation_kwargs={"negative_slope": 0.2})
    assert run_id(validate(base)) == "0602620a3034"


def _fetchall_table(store, name):
    """What Store.table returned before it read a chunk at a time."""
    cur = store._conn.execute(f"SELECT * FROM {name}")
    return pd.DataFrame(cur.fetchall(), columns=[d[0] for d in cur.description])


def test_store_table_reads_a_chunk_at_a_time(tmp_path, monkeypatch):
    # Store.table fetched every row as a tuple, then built the frame: 347 B of peak memory
    # per row of a probe table; now ROW_CHUNK rows at a time (76 B/row), the same frame
    import tracemalloc

    from depthlab.experiments import store as st
    from tests.test_cli_round19 import _long_store

    n = 50_000
    _long_store(tmp_path, n)
    monkeypatch.setattr(st, "ROW_CHUNK", 4096)
    with st.Store(tmp_path, readonly=True) as s:
        tracemalloc.start()
        try:
            got = s.table("probes")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        pd.testing.assert_frame_equal(got, _fetchall_table(s, "probes"), check_exact=True)
    assert len(got) == n + 10
    assert peak / len(got) < 160, peak / len(got)


def test_store_table_of_odd_columns_is_the_whole_tables_frame(tmp_path, monkeypatch):
    # a chunk's own inference must not decide a column's dtype: integers with a NULL late,
    # text in a column of numbers (an edited store), NULLs only, text with NULLs, no rows
    import sqlite3

    from depthlab.experiments import store as st
    from tests.test_cli_round19 import _long_store

    monkeypatch.setattr(st, "ROW_CHUNK", 3)
    _long_store(tmp_path, 20)
    con = sqlite3.connect(str(tmp_path / "depthlab.db"))
    con.execute("UPDATE steps SET step = NULL WHERE rowid = (SELECT max(rowid) FROM steps)")
    con.execute("UPDATE probes SET value = 'oops' WHERE rowid = (SELECT max(rowid) FROM probes)")
    con.execute("UPDATE probes SET layer = 7.5 WHERE rowid = 2")
    con.execute("UPDATE probes SET quantity = NULL WHERE rowid = 1")
    con.execute("INSERT INTO jacobian (run_id, step, example, idx, value) VALUES "
                "('long', NULL, 0, 0, NULL), ('long', NULL, 1, 1, NULL), "
                "('long', NULL, 2, 2, NULL), ('long', NULL, 3, 3, 2)")
    con.commit()
    con.close()
    with st.Store(tmp_path, readonly=True) as s:
        for name in st.EXPORTED:
            want, got = _fetchall_table(s, name), s.table(name)
            pd.testing.assert_frame_equal(got, want, check_exact=True, obj=name)
            for c in want.columns:  # None stays None, NaN stays NaN
                assert [type(v) for v in got[c]] == [type(v) for v in want[c]], (name, c)


def test_runs_table_lines_up_after_a_wide_or_accented_name():
    # the columns were padded by characters: a run named "名前 run" (two wide characters) or
    # "é" written as e + a combining accent pushed its row's later columns off the header's
    import unicodedata

    from depthlab.cli.common import format_table

    names = ["名前 run", "plain", "cafe\u0301", "ｆｕｌｌ"]
    text = format_table([[n, 0.5] for n in names], ["name", "val_acc"])

    def column(line: str, ch: str) -> int:  # terminal column where `ch` (ASCII) is
        at = line.index(ch)
        return sum(2 if unicodedata.east_asian_width(c) in "WF" else
                   0 if unicodedata.combining(c) else 1 for c in line[:at])

    lines = text.splitlines()
    want = column(lines[0], "v")
    assert [column(line, "0") for line in lines[2:]] == [want] * len(names), text


def test_an_array_of_python_objects_is_named_with_what_to_save_instead(tmp_path, capsys):
    # NumPy's "Object arrays cannot be loaded when allow_pickle=False" named neither the array
    # nor what is accepted
    x = np.zeros((20, 3))
    np.savez(tmp_path / "objy.npz", x=x, y=(np.arange(20) % 2).astype(object))
    (tmp_path / "t.toml").write_text('[data]\npath = "objy.npz"\n[model]\nsizes = ["auto", 4, '
                                     '"auto"]\n')
    assert main(["run", str(tmp_path / "t.toml"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "array 'y' holds Python objects (dtype object), which only pickle reads" in err
    assert "accepted: numeric arrays" in err and len(err.splitlines()) == 1
    net, _, _, _ = _csv_run(tmp_path)
    np.save(tmp_path / "xobj.npy", x[:, :3].astype(object), allow_pickle=True)
    np.savez(tmp_path / "xobj.npz", x=x.astype(object))
    for name, said in (("xobj.npy", "it holds"), ("xobj.npz", "its array 'x' holds")):
        capsys.readouterr()
        assert main(["predict", str(net), str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert f"could not be read: {said} Python objects (dtype object)" in err, err


@pytest.mark.parametrize("stored", ["csv", "npy-int16", "npy-float32"])
def test_predict_standardizes_as_the_run_did_whatever_the_inputs_dtype(tmp_path, capsys,
                                                                      stored):
    # a run on a CSV standardizes in float64, then casts; predict did so only when the float32
    # cast changed a value: a CSV of pixel values (integers) was standardized in float32, its
    # outputs 3.6e-7 off those the run computes for the same rows
    import json

    import depthlab as dl
    from depthlab.persist import load_meta

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(120, 6))
    frame = pd.DataFrame(x, columns=[f"p{i}" for i in range(6)])
    frame["label"] = (x[:, 0] > x[:, 1]).astype(int)
    frame.to_csv(tmp_path / "pix.csv", index=False)
    (tmp_path / "t.toml").write_text('[data]\npath = "pix.csv"\n[model]\nsizes = ["auto", 16, '
                                     '"auto"]\n[train]\nepochs = 2\n[probes]\nevery = 0\n')
    assert main(["run", str(tmp_path / "t.toml"), "--out", str(tmp_path / "r"), "--quiet"]) == 0
    (net,) = (tmp_path / "r" / "models").glob("*.npz")
    meta = load_meta(net)
    assert meta["input_mean"].dtype == np.float64
    own = dl.load(net).predict(((x - meta["input_mean"]) / meta["input_std"]).astype(np.float32))
    data = tmp_path / "pix.csv"
    if stored != "csv":
        data = tmp_path / "pix.npy"
        np.save(data, x.astype(np.int16 if stored == "npy-int16" else np.float32))
    capsys.readouterr()
    assert main(["predict", str(net), str(data), "--json"]) == 0
    out = np.array(json.loads(capsys.readouterr().out)["outputs"], dtype=np.float32)
    assert np.array_equal(out, own), np.abs(out - own).max()


@pytest.mark.parametrize("options, said", [
    ("{separation = -1}", "data.options.separation = -1 is not accepted: separation=-1 must "
                          "be a finite number >= 0"),
    ("{d = 0}", "data.options.d = 0 is not accepted: d must be a positive integer, got 0"),
    ("{d = 2.5}", "data.options.d = 2.5 is not accepted"),
])
def test_a_bad_generated_data_option_is_one_line_before_a_sweep_runs(tmp_path, capsys,
                                                                     options, said):
    # clusters' options were checked only when the data were generated: a sweep stored every
    # point failed (exit status 1, one line per point) and left a store behind
    (tmp_path / "s.toml").write_text(f'[data]\nname = "clusters"\noptions = {options}\n'
                                     '[model]\nsizes = ["auto", 8, "auto"]\n'
                                     '[sweep]\n"train.seed" = [0, 1, 2]\n')
    assert main(["sweep", str(tmp_path / "s.toml"), "--out", str(tmp_path / "r"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert said in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def test_spirals_options_are_checked_with_the_config():
    from depthlab.experiments import validate
    from depthlab.experiments.config import ConfigError

    base = {"data": {"name": "spirals"}, "model": {"sizes": ["auto", 4, "auto"]}}
    with pytest.raises(ConfigError, match=r"data.options.n_classes = 1 is not accepted"):
        validate({**base, "data": {"name": "spirals", "options": {"n_classes": 1}}})
    with pytest.raises(ConfigError, match=r"data.options.noise = \"a\" is not accepted"):
        validate({**base, "data": {"name": "spirals", "options": {"noise": "a"}}})
    ok = validate({**base, "data": {"name": "spirals", "options": {"n_classes": 3,
                                                                   "turns": 2}}})
    assert ok["data"]["options"] == {"n_classes": 3, "turns": 2}


@pytest.mark.parametrize("quiet", [True, False])
def test_a_refused_sweep_point_is_named_once_in_its_failure_line(tmp_path, capsys, quiet):
    # "sweep point ID (lr=0.05,optimizer=sgd,...) failed: sweep point (train.lr = 0.05,
    # train.optimizer = sgd, ...): train.betas is not ...": the point's values said twice
    (tmp_path / "s.toml").write_text(
        '[data]\nname = "clusters"\nn = 200\n[model]\nsizes = ["auto", 4, "auto"]\n'
        '[probes]\nevery = 0\n[sweep]\n"train.optimizer" = ["sgd", "adam"]\n'
        '"train.betas" = [[0.9, 0.99]]\n')
    args = ["sweep", str(tmp_path / "s.toml"), "--out", str(tmp_path / "r")]
    assert main(args + (["--quiet"] if quiet else [])) == 1
    captured = capsys.readouterr()
    said = captured.err if quiet else captured.out
    line = next(s for s in said.splitlines() if "train.betas is not" in s)
    assert "sweep point (" not in line
    assert "optimizer=sgd,betas=[0.9,0.99]" in line and "failed" in line


def test_predict_finds_a_label_column_given_by_index_by_its_name(tmp_path, capsys):
    # a run with data.label = 0 (its CSV's labels first) dropped the FIRST column of any CSV
    # given to predict: the same data with the labels last lost its first feature, the labels
    # were read as a feature, and the predictions were silently wrong
    import json

    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3))
    y = (x[:, 0] > 0).astype(int)
    first = pd.DataFrame({"label": y, "a": x[:, 0], "b": x[:, 1], "c": x[:, 2]})
    first.to_csv(tmp_path / "first.csv", index=False)
    first[["a", "b", "c", "label"]].to_csv(tmp_path / "last.csv", index=False)
    (tmp_path / "t.toml").write_text('[data]\npath = "first.csv"\nlabel = 0\n[model]\nsizes = '
                                     '["auto", 8, "auto"]\n[train]\nepochs = 2\n[probes]\n'
                                     'every = 0\n')
    assert main(["run", str(tmp_path / "t.toml"), "--out", str(tmp_path / "r"), "--quiet"]) == 0
    (net,) = (tmp_path / "r" / "models").glob("*.npz")
    outputs, said = [], []
    for name in ("first.csv", "last.csv"):
        capsys.readouterr()
        assert main(["predict", str(net), str(tmp_path / name), "--json"]) == 0
        captured = capsys.readouterr()
        outputs.append(json.loads(captured.out)["outputs"])
        said.append(captured.err.split(": ", 1)[1].strip())
    assert outputs[0] == outputs[1]
    assert said[0] == said[1] and said[0].startswith("80 rows, accuracy")


def test_predict_takes_the_training_features_by_name_in_another_order(tmp_path, capsys):
    # a CSV holding the run's features in another order was read by position: each value fed
    # to another input, the predictions silently wrong
    import json

    net, data, _, _ = _csv_run(tmp_path)
    frame = pd.read_csv(data)
    frame[["c", "label", "a", "b"]].to_csv(tmp_path / "shuffled.csv", index=False)
    capsys.readouterr()
    assert main(["predict", str(net), str(data), "--json"]) == 0
    want = json.loads(capsys.readouterr().out)["outputs"]
    with pytest.warns(UserWarning, match=r"its columns \['c', 'a', 'b'\] are the network's "
                      r"features in another order; taken in the training order \['a', 'b', "
                      r"'c'\]"):
        assert main(["predict", str(net), str(tmp_path / "shuffled.csv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["outputs"] == want
    lines = (tmp_path / "shuffled.csv").read_text().splitlines()
    lines[3] = ",".join(lines[3].split(",")[:2] + ["", lines[3].split(",")[3]])  # column a
    (tmp_path / "hole.csv").write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning):
        assert main(["predict", str(net), str(tmp_path / "hole.csv")]) == 2
    assert "line 4 has an empty cell in column 'a'" in capsys.readouterr().err


def test_predict_warns_when_a_csvs_columns_are_not_the_networks_features(tmp_path, capsys):
    net, data, _, _ = _csv_run(tmp_path)
    frame = pd.read_csv(data)
    frame.rename(columns={"c": "z"}).to_csv(tmp_path / "other.csv", index=False)
    with pytest.warns(UserWarning, match=r"its columns \['z'\] are not the network's features "
                      r"\['a', 'b', 'c'\]; taken by position"):
        assert main(["predict", str(net), str(tmp_path / "other.csv")]) == 0
    frame.drop(columns="label").to_csv(tmp_path / "bare.csv", index=False, header=False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a headerless file names no columns: no warning
        assert main(["predict", str(net), str(tmp_path / "bare.csv")]) == 0


def test_time_left_of_a_parallel_sweep_is_not_taken_from_its_first_results_gap():
    # two workers' first points end 0.01 s apart: the rate from the first result to the
    # second said "~0 s left" with 6 of 8 points (2 s each) to go
    from depthlab.experiments.progress import SweepProgress

    now = [0.0]
    work = [(f"p{i}", 1.0) for i in range(8)]
    prog = SweepProgress(8, None, clock=lambda: now[0], work=work, workers=2)
    prog.started()
    for i, t in enumerate((3.0, 3.01)):  # the first wave (imports, first data load)
        now[0] = t
        prog.point(f"p{i}", f"p{i}", "finished", {}, None)
    assert prog.left() is None  # no rate yet: the wave ended together
    for i, t in enumerate((5.0, 5.01), start=2):  # the second wave: 2 s per point
        now[0] = t
        prog.point(f"p{i}", f"p{i}", "finished", {}, None)
    left = prog.left()
    assert left is not None and 3.0 <= left <= 12.0, left  # 4 points, 2 at a time: ~4 s
    one = SweepProgress(8, None, clock=lambda: now[0], work=work)  # one worker: as before
    one.started()
    for i, t in enumerate((3.0, 5.0)):
        now[0] = t
        one.point(f"p{i}", f"p{i}", "finished", {}, None)
    assert one.left() == pytest.approx(12.0)
