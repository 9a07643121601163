"""Adversarial tests of the experiments side (configs, sweeps, store paths, saved networks,
``depthlab predict``) on inputs the other tests do not try: integers beyond float range,
damaged or foreign network files, a grid holding a combination the config checks refuse,
``--out`` naming a ``.db`` file, glob characters in a run prefix. Each test failed before the
fix it names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import assert_one_line_error, one_blas_thread, run_cli

import depthlab as dl
from depthlab.experiments import ConfigError
from depthlab.experiments.sweep import run_sweep
from depthlab.spec import ModelSpec, TrainSpec
from depthlab.validators import as_number, real

TINY = """\
[data]
name = "spirals"
n = 60
[model]
sizes = ["auto", 4, "auto"]
[train]
max_steps = 3
batch_size = 8
[probes]
every = 1
batch = 5
"""


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    one_blas_thread(monkeypatch)


# -- numbers beyond float range ----------------------------------------------------------------


def test_integers_beyond_float_range_are_out_of_range_not_overflow_errors():
    """``lr = 10**400`` raised OverflowError ("int too large to convert to float") from the
    spec, ``mlp``, ``fit`` and ``validators.real`` instead of a one-line out-of-range error."""
    with pytest.raises(ConfigError) as err:
        TrainSpec(lr=10**400)
    assert str(err.value) == ("lr = 1e+400 is out of range; accepted: a learning rate, a finite "
                              "number > 0")
    with pytest.raises(ConfigError, match=r"dropout = 1e\+400 is out of range"):
        ModelSpec(sizes=(2, 3, 2), dropout=10**400)
    with pytest.raises(ConfigError, match=r"momentum = -1e\+5000 is out of range"):
        TrainSpec(optimizer_kwargs={"momentum": -(10**5000)})  # str() would need 5001 digits
    with pytest.raises(ValueError, match="dropout"):
        dl.mlp([2, 3, 2], dropout=10**400)
    with pytest.raises(ValueError, match="x must be finite"):
        real("x", 10**400)
    assert as_number(10**400) == float("inf") and as_number(-(10**400)) == float("-inf")
    assert TrainSpec(lr=3).lr == 3.0 and isinstance(TrainSpec(lr=3).lr, float)


# -- saved networks ---------------------------------------------------------------------------


def _write_recipe(path: Path, recipe) -> Path:
    np.savez(path, recipe=np.frombuffer(json.dumps(recipe).encode(), dtype=np.uint8))
    return path


def test_damaged_or_foreign_network_files_are_one_line_errors(tmp_path, capsys):
    """An empty, truncated or foreign ``.npz`` given to ``dl.load``/``depthlab predict`` was an
    internal error (EOFError, BadZipFile, AttributeError, KeyError: exit 1), and a file that is
    no saved network was reported as a problem of DATA."""
    good = dl.save(dl.mlp([2, 3, 2], seed=0), tmp_path / "good.npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "trunc.npz").write_bytes(good.read_bytes()[:300])
    _write_recipe(tmp_path / "list.npz", [1, 2])
    _write_recipe(tmp_path / "noconfig.npz", {"format": "depthlab-network/1"})
    _write_recipe(tmp_path / "badconfig.npz", {"format": "depthlab-network/1",
                                               "config": {"sizes": [2, 3, 2], "zz": 1}})
    np.savez(tmp_path / "foreign.npz", x=np.zeros(3))
    np.save(tmp_path / "x.npy", np.ones((2, 2)))
    for name in ("empty", "trunc", "list", "noconfig", "badconfig", "foreign"):
        path = tmp_path / f"{name}.npz"
        with pytest.raises(ValueError, match=f"{name}.npz"):
            dl.load(path)
        code, _out, err = run_cli(capsys, "predict", path, tmp_path / "x.npy")
        line = assert_one_line_error(code, err, f"{name}.npz")
        assert "DATA" not in line, line
    x = np.ones((1, 2), np.float32)
    assert np.array_equal(dl.load(good).predict(x), dl.mlp([2, 3, 2], seed=0).predict(x))


def test_predict_refuses_an_empty_run_name_and_reads_glob_characters_literally(
        tmp_path, capsys, monkeypatch):
    """``depthlab predict "" DATA`` (an unset shell variable) and ``predict '*' DATA`` silently
    used the only saved network of the results folder (the name was a glob pattern)."""
    monkeypatch.chdir(tmp_path)
    dl.save(dl.mlp([2, 3, 2], seed=1), tmp_path / "out" / "models" / "abc123def456.npz",
            meta={"loss": "cross_entropy"})
    np.save(tmp_path / "x.npy", np.ones((2, 2)))
    code, _out, err = run_cli(capsys, "predict", "", "x.npy", "--dir", "out")
    assert_one_line_error(code, err, "empty")
    for pattern in ("*", "abc*", "[a]bc", "??????"):
        code, _out, err = run_cli(capsys, "predict", pattern, "x.npy", "--dir", "out")
        assert_one_line_error(code, err, repr(pattern), "neither a .npz file nor a run")
    code, out, err = run_cli(capsys, "predict", "abc", "x.npy", "--dir", "out")
    assert code == 0, err
    assert out.splitlines()[0] == "class,output_0,output_1"


def test_predict_names_a_header_only_csv_as_having_no_rows(tmp_path, capsys):
    """A CSV with a header and no rows was "expected a 2-D array of real numbers, got shape
    (0, 2) object" instead of saying it has no rows."""
    model = dl.save(dl.mlp([2, 3, 2]), tmp_path / "n.npz")
    (tmp_path / "h.csv").write_text("a,b\n")
    code, _out, err = run_cli(capsys, "predict", model, tmp_path / "h.csv")
    assert_one_line_error(code, err, "h.csv", "has no rows")


def test_run_with_out_naming_a_db_file_keeps_its_network_beside_the_store(
        tmp_path, capsys, monkeypatch):
    """``depthlab run --out results.db`` stored the run, then failed (exit 2) writing the
    network under the store file (``results.db/models``: not a directory)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.toml").write_text(TINY)
    code, out, err = run_cli(capsys, "run", "tiny.toml", "--out", "results.db", "--json")
    assert code == 0, err
    rec = json.loads(out)
    assert rec["status"] == "finished" and Path(rec["network"]).parent == Path("models")
    code, out, err = run_cli(capsys, "predict", rec["id"][:6], "spirals", "--dir", "results.db")
    assert code == 0, err
    assert "accuracy" in err and out.startswith("class,output_0,output_1\n")
    code, out, _err = run_cli(capsys, "runs", "results.db", "--json")
    assert [r["id"] for r in json.loads(out)] == [rec["id"]]


def test_run_refuses_a_file_where_its_models_folder_goes_before_training(
        tmp_path, capsys, monkeypatch):
    """``OUT/models`` being a file failed after training (the run stored, exit 2 on saving the
    network); now refused before anything is trained or stored."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.toml").write_text(TINY)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "models").write_text("mine")
    code, _out, err = run_cli(capsys, "run", "tiny.toml", "--out", "out")
    assert_one_line_error(code, err, "out/models", "is a file")
    assert "step" not in err  # nothing was trained
    code, out, _err = run_cli(capsys, "runs", "out", "--json")
    assert json.loads(out) == [] and (tmp_path / "out" / "models").read_text() == "mine"


# -- sweeps -----------------------------------------------------------------------------------


def _combo_grid(n: int = 60) -> dict:
    return {"data": {"name": "spirals", "n": n},
            "model": {"sizes": ["auto", 4, "auto"]},
            "train": {"max_steps": 2, "batch_size": 4},
            "probes": {"every": 1, "batch": 4},
            "sweep": {"model.batchnorm": [False, True], "train.batch_size": [4, 1]}}


def _records(out: Path) -> dict[str, tuple]:
    from depthlab.experiments import Store

    with Store(out, create=False) as s:
        runs = s.runs()
        # repr: NaN probe values (e.g. an undefined ratio) compare equal to themselves
        return {r.name: (r.status, r.error, repr(s.steps(r.id)["loss"].tolist()),
                         repr(s.probes(r.id).to_numpy().tolist())) for r in runs.itertuples()}


def test_a_refused_combination_is_a_failed_point_and_the_others_run(tmp_path):
    """``batchnorm = true`` with ``batch_size = 1`` (each valid alone) stopped the whole sweep
    at that point with a ConfigError: in this process after the points before it, with
    ``jobs = 2`` before any point ran. Now every executor stores it as a failed point naming the
    conflict, runs the others with identical results, and a rerun skips the finished ones."""
    raw = _combo_grid()
    one = run_sweep(raw, tmp_path / "one", echo=None)
    assert (one.total, one.counts) == (4, {"finished": 3, "failed": 1})
    (fid, fname, ferr), = one.failures
    assert fname == "batchnorm=true,batch_size=1"
    assert ferr.startswith("sweep point (model.batchnorm = true, train.batch_size = 1): ")
    assert "needs at least 2 rows per batch" in ferr
    two = run_sweep(raw, tmp_path / "two", jobs=2, echo=None)
    assert two.counts == one.counts and two.failures == one.failures
    a, b = _records(tmp_path / "one"), _records(tmp_path / "two")
    assert a == b  # same points, statuses, messages, losses and probes, bit for bit
    assert a[fname][0] == "failed" and a[fname][2] == "[]"
    again = run_sweep(raw, tmp_path / "one", echo=None)
    assert (again.skipped, again.counts) == (3, {"failed": 1})


def test_cli_sweep_with_a_refused_combination_exits_1_naming_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    body = TINY.replace("batch_size = 8", "batch_size = 4") + (
        '[sweep]\n"model.batchnorm" = [false, true]\n"train.batch_size" = [4, 1]\n')
    (tmp_path / "g.toml").write_text(body)
    code, out, err = run_cli(capsys, "sweep", "g.toml", "--out", "o", "--json")
    assert code == 1, err
    summary = json.loads(out)
    assert summary["counts"] == {"finished": 3, "failed": 1}
    assert summary["failures"][0]["name"] == "batchnorm=true,batch_size=1"
    assert "train.batch_size = 1" in summary["failures"][0]["error"]
    code, out, _err = run_cli(capsys, "report", "o", "--quiet")  # a report reads such a store
    assert code == 0 and out.strip().endswith("report.html")


def test_sweep_api_checks_limit_and_cluster(tmp_path):
    """``limit=-1``/``1.5`` gave islice's message, ``limit=True`` ran one point, ``cluster=5``
    a TypeError about regular expressions."""
    raw = _combo_grid()
    for bad, kind in ((-1, ValueError), (0, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(kind, match=rf"limit = {bad!r} .*accepted: an integer >= 1"):
            run_sweep(raw, tmp_path / "o", limit=bad, echo=None)
    with pytest.raises(TypeError, match='cluster = 5 has the wrong type; accepted: "local:N"'):
        run_sweep(raw, tmp_path / "o", cluster=5, echo=None)
    assert not (tmp_path / "o").exists()
    res = run_sweep(raw, tmp_path / "o", limit=np.int64(2), echo=None)
    assert res.total == 2 and res.count("finished") == 2


def test_swept_sizes_replace_the_base_depth_and_width():
    """The starter config (``depth = 10``, ``width = 64``) and every ``RunSpec.to_toml()`` file
    carry depth and width; a swept ``model.sizes`` was rebuilt from them, so every point got the
    base's network (``[auto, 3, auto]`` ran as ``[auto, 7, 7, 7, auto]``) and the points were
    merged into one."""
    import tomllib

    from depthlab.experiments.grid import expand
    from depthlab.spec import RunSpec

    sizes = [["auto", 3, "auto"], ["auto", 5, 5, "auto"]]
    base = {"data": {"name": "spirals"}, "model": {"sizes": ["auto", "auto"], "depth": 3,
                                                   "width": 7}}
    written = tomllib.loads(RunSpec.from_dict(base).to_toml())  # depth, width and sizes
    for raw in (base, written):
        points = expand({**raw, "sweep": {"model.sizes": sizes}})
        assert [p.config["model"]["sizes"] for p in points] == sizes
        assert [(p.config["model"]["depth"], p.config["model"]["width"]) for p in points] == [
            (1, 3), (2, 5)]
    # a point that sets depth too keeps it (sizes rebuilt with that depth, as documented)
    both = expand({**base, "sweep": {"model.sizes": sizes, "model.depth": [1]}})
    assert [p.config["model"]["sizes"] for p in both] == [["auto", 3, "auto"],
                                                          ["auto", 5, "auto"]]


def test_n_beyond_a_fixed_data_set_is_named_as_such_not_as_a_memory_refusal():
    """``data.n = 10**12`` on digits (1797 samples) was refused as "needs about 1.4 PiB of
    memory ... on 1000000000000 rows" although only 1797 rows exist."""
    from depthlab.experiments import validate
    from depthlab.experiments.runner import ExperimentError, prepare

    cfg = validate({"data": {"name": "digits", "n": 10**12},
                    "model": {"sizes": ["auto", 4, "auto"]}})
    with pytest.raises(ExperimentError, match=r"n=1000000000000 is larger than the 1797 "
                                              r"samples available"):
        prepare(cfg)


def test_a_bias_initializer_that_needs_a_matrix_is_refused_with_the_config():
    """``bias_init = "orthogonal"`` passed validation and failed when the network was built
    (a failed point in every sweep, a run refused only after loading the data)."""
    from depthlab.experiments import validate

    raw = {"data": {"name": "spirals"}, "model": {"sizes": [2, 3, 2],
                                                  "bias_init": "orthogonal"}}
    with pytest.raises(ConfigError, match=r'^model\.bias_init = "orthogonal": orthogonal init '
                                          r"needs a shape with 2 or more dimensions"):
        validate(raw)
    with pytest.raises(ConfigError, match=r'^bias_init = "orthogonal"'):
        ModelSpec(sizes=(2, 3, 2), bias_init="orthogonal")
    for name in ("zeros", "constant", "normal", "he_uniform", "glorot_normal"):
        assert validate({**raw, "model": {"sizes": [2, 3, 2], "bias_init": name}})


def test_batch_norm_runs_on_tiny_splits_or_are_refused_before_training():
    """With batch norm, a validation split of one row made every probe fail ("needs a probe
    batch of at least 2 rows": a failed run), ``probes.batch = 1`` passed validation and
    failed the same way, and one training row failed in ``fit`` with "batch_size=1" although
    the config said 1000."""
    from depthlab.experiments import validate
    from depthlab.experiments.runner import ExperimentError, execute, prepare

    raw = {"data": {"name": "spirals", "n": 10, "val_fraction": 0.1, "test_fraction": 0.2},
           "model": {"sizes": ["auto", 3, "auto"], "batchnorm": True},
           "train": {"max_steps": 2, "batch_size": 4}, "probes": {"every": 1}}
    rec = execute(validate(raw))
    assert rec.status == "finished", rec.error
    assert set(rec.probes["step"]) == {0, 1, 2}
    with pytest.raises(ConfigError, match=r"^model\.batchnorm = true needs at least 3 rows in "
                                          r"the probe batch .* but probes\.batch = 1"):
        validate({**raw, "probes": {"every": 1, "batch": 1}})
    assert validate({**raw, "probes": {"every": 0, "batch": 1}})  # no probes: no probe batch
    one_row = {**raw, "data": {"name": "spirals", "n": 4, "val_fraction": 0.5,
                               "test_fraction": 0.2}, "train": {"batch_size": 1000}}
    with pytest.raises(ExperimentError, match=r"^model\.batchnorm = true needs at least 2 "
                                              r"training rows; data set 'spirals' leaves 1"):
        prepare(validate(one_row))


def test_labels_that_leave_classes_empty_are_explained(tmp_path):
    """Labels 1..2 (or 0 and 5) in a user file silently became 3 (6) classes, some without a
    single example, and binary cross-entropy then said the data set "has 3" classes. A
    warning now says so and how to fix it; labels 0..K-1 stay silent."""
    import warnings

    from depthlab.data import load_dataset

    x = np.random.default_rng(0).normal(size=(12, 2))
    np.savez(tmp_path / "gap.npz", x=x, y=np.arange(12) % 2 + 1)
    np.savez(tmp_path / "ok.npz", x=x, y=np.arange(12) % 2)
    with pytest.warns(UserWarning, match=r"gap\.npz: labels are read as classes 0\.\.2 \(3 "
                                         r"outputs\), but classes 0 have no examples \(1 of 3\)"
                                         r"; relabel to 0\.\.K-1"):
        assert load_dataset(str(tmp_path / "gap.npz")).n_classes == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_dataset(str(tmp_path / "ok.npz")).n_classes == 2


def test_a_missing_label_column_of_a_wide_csv_is_a_short_message(tmp_path):
    """A 800-column CSV without a ``label`` column listed all 800 names in the error line."""
    from depthlab.data import load_dataset

    path = tmp_path / "wide.csv"
    path.write_text(",".join(f"pixel{i}" for i in range(800)) + "\n" + ",".join(["0"] * 800)
                    + "\n")
    for label in ("label", 5000):
        with pytest.raises(ValueError) as err:
            load_dataset(str(path), label=label)
        msg = str(err.value)
        # short whatever the temporary folder's path length (307 characters failed with a
        # 71-character path in CI)
        assert "'pixel0', 'pixel1'" in msg and "... 800 in all" in msg, msg
        assert len(msg) - len(str(path)) < 260, msg


def test_execute_and_prepare_validate_a_raw_config():
    """``execute(raw)`` on a config dict as read from TOML (not validated) raised KeyError
    'loss'; now it is validated first (same run id as the validated config), and a bad value
    is a failed record naming it (``catch=False``: the ConfigError)."""
    from depthlab.experiments import execute, prepare, run_id, validate

    raw = {"data": {"name": "spirals", "n": 30}, "model": {"sizes": [2, 3, 2]},
           "train": {"max_steps": 1}, "probes": {"every": 0}}
    rec = execute(raw)
    assert rec.status == "finished" and rec.id == run_id(validate(raw))
    assert prepare(raw).config["train"]["loss"] == "cross_entropy"
    bad = {**raw, "train": {"lr": -1}}
    rec = execute(bad)
    assert rec.status == "failed" and rec.error.startswith("train.lr = -1 is out of range")
    with pytest.raises(ConfigError, match=r"^train\.lr = -1 is out of range"):
        execute(bad, catch=False)


def test_store_runs_refuses_an_unknown_kind(tmp_path):
    """``Store.runs(kind="sweep_point")`` (a typo) silently selected nothing."""
    from depthlab.experiments import RunRecord, Store

    with Store(tmp_path) as store:
        store.add_run(RunRecord(id="a1", kind="sweep-point"))
        with pytest.raises(ValueError, match=r"kind = 'sweep_point' is not a run kind; "
                                             r"accepted: run, sweep-point, doctor, reproduce"):
            store.runs(kind="sweep_point")
        assert list(store.runs(kind="sweep-point")["id"]) == ["a1"]


def test_check_field_names_an_unknown_field():
    """``check_field(ModelSpec, "nope", 1)`` raised a bare StopIteration."""
    from depthlab.spec import check_field

    with pytest.raises(ValueError, match=r"'nope' is not a field of ModelSpec; accepted: sizes, "
                                         r"depth, width"):
        check_field(ModelSpec, "nope", 1)
    assert check_field(TrainSpec, "lr", 1) == 1.0


def test_an_optimizer_switch_given_as_a_number_is_named_as_written():
    """``amsgrad = 1`` was turned into 1.0 before the check, so the message named a value the
    user never wrote ("amsgrad must be True or False, got 1.0")."""
    from depthlab.experiments import validate

    raw = {"data": {"name": "spirals"}, "model": {"sizes": [2, 3, 2]},
           "train": {"optimizer": "adam", "amsgrad": 1}}
    with pytest.raises(ConfigError, match=r"^train\.amsgrad = 1 has the wrong type; accepted: "
                                          r"true or false$"):
        validate(raw)
    with pytest.raises(TypeError, match=r"^optimizer_kwargs\.nesterov = 0 has the wrong type"):
        TrainSpec(optimizer="sgd", optimizer_kwargs={"momentum": 0.9, "nesterov": 0})
    ok = validate({**raw, "train": {"optimizer": "adam", "amsgrad": True, "eps": 1}})
    assert ok["train"]["optimizer_kwargs"] == {"amsgrad": True, "eps": 1.0}


def test_file_options_for_another_kind_of_file_are_refused_not_ignored(tmp_path):
    """``label`` on a .npz file (or an IDX folder) and ``scale`` on a .npz/.csv file were
    silently ignored; the run trained on something other than what the config said."""
    from depthlab.data import load_dataset

    x = np.random.default_rng(0).normal(size=(12, 2))
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(12) % 2)
    (tmp_path / "d.csv").write_text("a,b,cls\n" + "".join(f"{i},{i % 3},{i % 2}\n"
                                                          for i in range(12)))
    with pytest.raises(ValueError, match=r"label='y' applies only to \.csv files"):
        load_dataset(str(tmp_path / "d.npz"), label="y")
    for name in ("d.npz", "d.csv"):
        with pytest.raises(ValueError, match=r"scale=2 applies only to IDX files"):
            load_dataset(str(tmp_path / name), scale=2)
    assert load_dataset(str(tmp_path / "d.csv"), label="cls").n_features == 2
    assert load_dataset(str(tmp_path / "d.npz")).n_features == 2


def test_predict_gives_classes_for_a_run_trained_with_mse(tmp_path, capsys, monkeypatch):
    """A run trained with ``loss = "mse"`` (one-hot rows of the classes, as the runner builds
    them) predicted no class and no accuracy: ``predict`` treated it as a regression."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.toml").write_text(TINY.replace("batch_size = 8", 'batch_size = 8\nloss = "mse"'))
    code, out, err = run_cli(capsys, "run", "m.toml", "--out", "o", "--json")
    assert code == 0, err
    rid = json.loads(out)["id"]
    code, out, err = run_cli(capsys, "predict", rid, "spirals", "--dir", "o", "--json")
    assert code == 0, err
    pred = json.loads(out)
    assert len(pred["classes"]) == len(pred["outputs"]) > 0
    assert pred["classes"] == [int(np.argmax(row)) for row in pred["outputs"]]
    assert "accuracy" in err
    plain = dl.save(dl.mlp([2, 3, 2]), tmp_path / "plain.npz", meta={"loss": "mse"})
    np.save(tmp_path / "x.npy", np.ones((2, 2)))
    code, out, _err = run_cli(capsys, "predict", plain, tmp_path / "x.npy", "--json")
    assert code == 0 and json.loads(out)["classes"] is None  # dl.save'd mse: a regression


def test_predict_json_goes_to_the_file_given_with_to(tmp_path, capsys):
    """``predict ... --json --to FILE`` printed the JSON on stdout and never wrote FILE."""
    model = dl.save(dl.mlp([2, 3, 2], seed=4), tmp_path / "n.npz")
    np.save(tmp_path / "x.npy", np.ones((3, 2)))
    target = tmp_path / "p.json"
    code, out, err = run_cli(capsys, "predict", model, tmp_path / "x.npy", "--json", "--to",
                             target)
    assert code == 0 and out == "", err
    written = json.loads(target.read_text())
    assert len(written["outputs"]) == 3 and written["classes"] is not None
    code, out, _err = run_cli(capsys, "predict", model, tmp_path / "x.npy", "--json")
    assert json.loads(out) == written


def test_expand_refuses_a_grid_whose_list_cannot_fit(monkeypatch):
    """``expand`` of a 10**8-point grid built points until memory ran out (hours of
    validation first); it is refused before the first point, ``iter_points`` still streams."""
    import itertools

    from depthlab.experiments.grid import expand, iter_points
    from depthlab.memory import MemoryRefusal

    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "1G")
    raw = {"data": {"name": "spirals"}, "model": {"sizes": ["auto", 4, "auto"]},
           "sweep": {"train.seed": list(range(10_000)), "data.seed": list(range(10_000))}}
    with pytest.raises(MemoryRefusal, match=r"expand\(\) of a grid of 100,000,000 points "
                                            r"\(iter_points yields them one at a time\)"):
        expand(raw)
    assert len(list(itertools.islice(iter_points(raw, check=False), 3))) == 3
    assert len(expand({**raw, "sweep": {"train.seed": [0, 1, 1]}})) == 2
