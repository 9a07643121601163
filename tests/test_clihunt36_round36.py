"""Round 36, CLI hunt: a TOML date named as written (not as Python's repr), a CSV's label
column given twice (``data.label`` and ``data.options.label``) or badly in ``options``, and
``depthlab init DIR/`` (a name that is a folder)."""

from __future__ import annotations

import datetime

import pytest
from helpers.cli import assert_one_line_error, run_cli

from depthlab.experiments.config import validate
from depthlab.fieldcheck import ConfigError, fmt

CSV = "a,b,label\n" + "".join(f"{i % 7},{(3 * i) % 5},{i % 2}\n" for i in range(12))
TOML = """\
[data]
path = "f.csv"
{data}
[model]
sizes = ["auto", 4, "auto"]
[train]
lr = 0.05
epochs = 1
[probes]
every = 0
"""


def test_a_toml_date_is_named_as_the_file_writes_it():
    # `lr = 1979-05-27` said "train.lr = datetime.date(1979, 5, 27) has the wrong type"
    assert fmt(datetime.date(1979, 5, 27)) == "1979-05-27"
    assert fmt(datetime.datetime(1979, 5, 27, 7, 32)) == "1979-05-27T07:32:00"
    assert fmt(datetime.time(7, 32)) == "07:32:00"
    with pytest.raises(ConfigError) as e:
        validate({"data": {"name": "digits"}, "model": {"sizes": ["auto", 4, "auto"]},
                  "train": {"lr": datetime.date(1979, 5, 27)}})
    assert "train.lr = 1979-05-27 has the wrong type" in str(e.value)


def _refused(tmp_path, capsys, data: str, *fragments: str) -> str:
    (tmp_path / "f.csv").write_text(CSV)
    (tmp_path / "c.toml").write_text(TOML.format(data=data))
    code, _, err = run_cli(capsys, "run", tmp_path / "c.toml", "--out", tmp_path / "out", "-q")
    line = assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "out" / "depthlab.db").exists()  # refused before a store was made
    return line


def test_a_label_column_given_twice_differently_is_refused(tmp_path, capsys):
    # data.label = "b" beside options = {label = "a"}: column b was trained on, "a" dropped
    _refused(tmp_path, capsys, 'label = "b"\noptions = {label = "a"}',
             'data.label = "b"', 'data.options.label = "a"', "different")


@pytest.mark.parametrize(("value", "problem"), [("-1", "is out of range"),
                                                ("1.5", "has the wrong type"),
                                                ('""', "has the wrong type"),
                                                ("true", "has the wrong type")])
def test_a_bad_options_label_is_refused_as_data_label_is(tmp_path, capsys, value, problem):
    # was refused only when the data were loaded, as "label=1.5 is not accepted" without the
    # key (or "no label column ''"), and the run not named
    _refused(tmp_path, capsys, f"options = {{label = {value}}}",
             f"data.options.label = {value} {problem}", "c.toml")


def test_the_same_label_in_both_spellings_still_runs(tmp_path, capsys):
    (tmp_path / "f.csv").write_text(CSV)
    (tmp_path / "c.toml").write_text(TOML.format(data='label = 2\noptions = {label = 2}'))
    code, _, err = run_cli(capsys, "run", tmp_path / "c.toml", "--out", tmp_path / "out", "-q")
    assert code == 0, err


def test_init_of_a_name_ending_in_a_slash_is_refused(tmp_path, capsys):
    # `depthlab init results/` wrote results.toml beside the folder, not in it
    (tmp_path / "results").mkdir()
    for name in (f"{tmp_path}/results/", f"{tmp_path}/new/"):
        code, _, err = run_cli(capsys, "init", name)
        assert_one_line_error(code, err, repr(name), "folder")
    assert not (tmp_path / "results.toml").exists() and not (tmp_path / "new.toml").exists()
    code, _, err = run_cli(capsys, "init", f"{tmp_path}/results/mine")
    assert code == 0 and (tmp_path / "results" / "mine.toml").is_file(), err


@pytest.mark.parametrize(("path", "fragments"), [
    ("https://example.com/d.csv", ('data.path = "https://example.com/d.csv" is a URL',
                                   "download")),
    ("s3://bucket/d.npz", ('data.path = "s3://bucket/d.npz" is a URL',)),
    ("a\\u0000b.csv", ('data.path = "a\\u0000b.csv" holds a NUL character',))])
def test_a_data_path_no_file_can_have_is_named_as_such(tmp_path, capsys, path, fragments):
    # a URL was "no such file or folder (/cwd/https:/example.com/d.csv)"; a NUL printed a raw
    # NUL byte on stderr in that message's resolved path
    (tmp_path / "c.toml").write_text(TOML.format(data="").replace('"f.csv"', f'"{path}"'))
    code, _, err = run_cli(capsys, "run", tmp_path / "c.toml", "--out", tmp_path / "out", "-q")
    assert "\x00" not in err
    assert_one_line_error(code, err, *fragments)


def test_a_saved_network_given_as_data_is_named_as_one(tmp_path, capsys):
    # was "unrecognised .npz keys ['meta:input_mean', 'param:0:dense1.W', ...]": every key of
    # the network (hundreds for a deep one) on one line
    import depthlab as dl

    net = dl.mlp([3] + [4] * 40 + [2], activation="tanh", seed=0)
    saved = dl.save(net, tmp_path / "net.npz")
    (tmp_path / "c.toml").write_text(TOML.format(data="").replace('"f.csv"', f'"{saved}"'))
    code, _, err = run_cli(capsys, "run", tmp_path / "c.toml", "--out", tmp_path / "out", "-q")
    line = assert_one_line_error(code, err, "a network saved by depthlab.save",
                                 "depthlab predict")
    assert len(line) < 500, line


def test_a_comment_line_above_the_header_is_named_as_one(tmp_path, capsys):
    # "# my data" as line 1: "line 2 has 3 cells but the header names 1 columns; expected one
    # value per column", no word of the comment
    (tmp_path / "f.csv").write_text("# my data, from the lab\n" + CSV)
    (tmp_path / "c.toml").write_text(TOML.format(data=""))
    code, _, err = run_cli(capsys, "run", tmp_path / "c.toml", "--out", tmp_path / "out", "-q")
    assert_one_line_error(code, err, "'# my data, from the lab'", "comment")


def test_predict_reads_an_idx_images_file_as_training_reads_it(tmp_path, capsys):
    # a network trained on IDX files could not be given the t10k images file: "DATA '...':
    # expected a .npy, .npz or .csv (or .csv.gz) file"
    import numpy as np

    from depthlab.data.idx import write_idx

    rng = np.random.default_rng(0)
    folder = tmp_path / "idx"
    folder.mkdir()
    images = rng.integers(0, 256, (24, 3, 3)).astype(np.uint8)
    write_idx(folder / "train-images-idx3-ubyte", images)
    write_idx(folder / "train-labels-idx1-ubyte", (np.arange(24) % 2).astype(np.uint8))
    (tmp_path / "c.toml").write_text(TOML.format(data="").replace('"f.csv"', '"idx"'))
    out = tmp_path / "out"
    code, printed, err = run_cli(capsys, "run", tmp_path / "c.toml", "--out", out, "-q",
                                 "--json")
    assert code == 0, err
    run_id = __import__("json").loads(printed)["id"]
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images[:5])
    np.save(tmp_path / "same.npy", images[:5])
    code, from_idx, err = run_cli(capsys, "predict", run_id, tmp_path / "t10k-images-idx3-ubyte.gz",
                                  "--dir", out)
    assert code == 0, err
    code, from_npy, err = run_cli(capsys, "predict", run_id, tmp_path / "same.npy", "--dir", out)
    assert code == 0 and from_idx == from_npy and len(from_idx.splitlines()) == 6, err


def test_predict_names_the_built_in_data_set_a_typo_meant(tmp_path, capsys):
    # `predict ID digit` said "no such file (nor a built-in data set ...)", no hint
    import depthlab as dl

    saved = dl.save(dl.mlp([64, 4, 10], seed=0), tmp_path / "net.npz")
    code, _, err = run_cli(capsys, "predict", saved, "digit")
    assert_one_line_error(code, err, "'digit'", "did you mean 'digits'?")


def test_a_ctrl_c_just_after_a_point_is_stored_counts_it(tmp_path, monkeypatch):
    # an interrupt between the store's commit of a point and the sweep's count of it said
    # "24 point(s) stored in this sweep" beside 25 stored (seen with --jobs 2 at 25 s)
    from depthlab.experiments.store import Store
    from depthlab.experiments.sweep import SweepInterrupted, run_sweep

    stored = Store.add_run

    def add_then_ctrl_c(self, record, **kw):
        stored(self, record, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(Store, "add_run", add_then_ctrl_c)
    raw = {"data": {"name": "spirals", "n": 60}, "model": {"sizes": ["auto", 4, "auto"]},
           "train": {"epochs": 1}, "probes": {"every": 0}, "sweep": {"train.seed": [0, 1]}}
    with pytest.raises(KeyboardInterrupt) as info:
        run_sweep(raw, tmp_path / "out", echo=None)
    assert isinstance(info.value, SweepInterrupted), type(info.value)
    monkeypatch.setattr(Store, "add_run", stored)
    with Store(tmp_path / "out" / "depthlab.db") as store:
        assert len(store.runs()) == 1
    assert info.value.result.ran == 1
