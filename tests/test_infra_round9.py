"""Round 9 of adversarial testing of the command line, the results store and saved networks
(helper "infra").

* a CSV whose lines end with a comma: pandas took the first column as the row index (every
  column shifted by one: ``labels must be integers, got ... nan``), and ``depthlab predict``
  read a headerless such file's first row as its header;
* ``depthlab predict --to FILE`` replaced an existing FILE without asking;
* a store locked by another process: 120 s of silence (Ctrl-C not acted on meanwhile), then
  only "database is locked";
* a 0-byte ``depthlab.db``: "cannot be read: no such table: runs";
* ``depthlab report`` on a run whose config section is not a table: AttributeError, exit 1;
* a network saved by a newer depthlab: "has format 'depthlab-network/2'; expected ...";
* ``dl.save`` of a network without a recipe did not say which layer is in the way.
"""

from __future__ import annotations

import json
import sqlite3
import warnings

import numpy as np
import pytest

import depthlab as dl
from depthlab.data import load_dataset
from depthlab.experiments import Store
from depthlab.experiments.store import RunRecord, StoreError, StoreWriteError
from depthlab.inference import read_labeled_inputs
from depthlab.report import theory_for
from tests.helpers.cli import assert_one_line_error, one_blas_thread, run_cli


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    one_blas_thread(monkeypatch)


# --- CSV lines ending with a comma -----------------------------------------------------------


def test_csv_rows_with_a_trailing_comma_keep_their_columns(tmp_path):
    """Header ``a,b,c,label`` and rows ``1,2,3,0,``: pandas made column 'a' the index, so
    'label' read NaN and the data set was refused ("labels must be integers")."""
    (tmp_path / "rows.csv").write_text("a,b,c,label\n1,2,3,0,\n4,5,6,1,\n7,8,9,0,\n1,1,1,1,\n")
    (tmp_path / "both.csv").write_text("a,b,c,label,\n1,2,3,0,\n4,5,6,1,\n7,8,9,0,\n1,1,1,1,\n")
    for name in ("rows.csv", "both.csv"):
        ds = load_dataset(tmp_path / name)
        assert ds.n_features == 3, name
        x, y = read_labeled_inputs(str(tmp_path / name), "label")
        assert x.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [1, 1, 1]], name
        assert y.tolist() == [0, 1, 0, 1], name


def test_predict_reads_a_headerless_csv_with_trailing_commas_as_data(tmp_path, capsys):
    """``1,2,3,`` (no header): the empty last cell made the first row look like a header (3 of
    4 rows predicted) and the empty column a fourth feature."""
    dl.save(dl.mlp([3, 2], seed=0), tmp_path / "net.npz")
    (tmp_path / "x.csv").write_text("1,2,3,\n4,5,6,\n7,8,9,\n")
    x, _ = read_labeled_inputs(str(tmp_path / "x.csv"))
    assert x.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    code, out, err = run_cli(capsys, "predict", tmp_path / "net.npz", tmp_path / "x.csv")
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1 + 3


# --- predict --to an existing file -----------------------------------------------------------


def test_predict_to_an_existing_file_needs_force(tmp_path, capsys):
    dl.save(dl.mlp([3, 2], seed=0), tmp_path / "net.npz")
    np.save(tmp_path / "x.npy", np.ones((2, 3)))
    target = tmp_path / "results.csv"
    target.write_text("a week of work\n")
    code, out, err = run_cli(capsys, "predict", tmp_path / "net.npz", tmp_path / "x.npy",
                             "--to", target)
    assert_one_line_error(code, err, f"--to {str(target)!r} already exists", "--force")
    assert target.read_text() == "a week of work\n" and out == ""
    code, out, err = run_cli(capsys, "predict", tmp_path / "net.npz", tmp_path / "x.npy",
                             "--to", target, "--force")
    assert code == 0, err
    assert target.read_text().startswith("class,output_0")


# --- the store: locked, empty ----------------------------------------------------------------


def test_a_locked_store_warns_then_fails_naming_the_lock(tmp_path):
    """Another process holding the write lock: the wait was silent (default 120 s) and ended
    with "cannot open results store ...: database is locked"."""
    Store(tmp_path).close()
    other = sqlite3.connect(tmp_path / "depthlab.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with pytest.raises(StoreError, match="stayed locked by another process for 1 s"):
                Store(tmp_path, timeout=1.0)
        assert any("is locked by another process; waiting" in str(w.message) for w in seen)
    finally:
        other.execute("ROLLBACK")
        other.close()
    with Store(tmp_path, timeout=1.0) as store:  # released: opens at once
        store.check_writable()


def test_a_store_locked_while_open_waits_in_add_run_too(tmp_path):
    store = Store(tmp_path, timeout=0.6)
    other = sqlite3.connect(tmp_path / "depthlab.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreWriteError, match="run r1 could not be written: results "
                           "store .* stayed locked by another process") as caught:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                store.add_run(RunRecord(id="r1", config={"model": {}}))
        assert caught.value.record.id == "r1"  # the run that was not stored, kept
    finally:
        other.execute("ROLLBACK")
        other.close()
    store.add_run(RunRecord(id="r1", config={"model": {}}))
    assert store.has_run("r1")
    store.close()


@pytest.mark.parametrize("command", ["runs", "report", "export"])
def test_an_empty_store_file_is_named_as_empty(tmp_path, capsys, command):
    (tmp_path / "depthlab.db").write_bytes(b"")
    code, _, err = run_cli(capsys, command, tmp_path)
    assert_one_line_error(code, err, "depthlab.db' is empty (0 bytes, no runs table)")
    assert [p.name for p in tmp_path.iterdir()] == ["depthlab.db"]  # no export/ left behind
    assert (tmp_path / "depthlab.db").read_bytes() == b""


# --- report: a config section that is not a table --------------------------------------------


@pytest.mark.parametrize("section", [{"model": 5}, {"data": "x"}, {"train": [1]},
                                     {"model": {"sizes": [2, 3, 2], "dropout": "half"}},
                                     {"model": {"sizes": [2, 3, 2], "layers": {"a": "fc"}}}])
def test_report_on_a_config_section_that_is_not_a_table(tmp_path, capsys, section):
    config = {"data": {"name": "spirals"}, "model": {"sizes": [2, 3, 2]}, "train": {}}
    config.update(section)
    with Store(tmp_path) as store:
        store.add_run(RunRecord(id="r1", name="edited", config=config,
                                metrics={"train_loss": 0.5}))
    code, out, err = run_cli(capsys, "report", tmp_path, "-q")
    assert code == 0, err
    assert (tmp_path / "report.html").is_file() and out.strip().endswith("report.html")
    frame, note = theory_for(config)  # the report API: a reason, not a raw error
    assert (frame is None) == note.startswith("no theory curve"), note


# --- saved networks ----------------------------------------------------------------------------


def test_a_network_saved_by_a_newer_depthlab_says_upgrade(tmp_path):
    path = dl.save(dl.mlp([3, 2], seed=0), tmp_path / "net.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    recipe = json.loads(bytes(arrays["recipe"]).decode())
    recipe["format"] = "depthlab-network/2"
    arrays["recipe"] = np.frombuffer(json.dumps(recipe).encode(), dtype=np.uint8)
    np.savez(tmp_path / "new.npz", **arrays)
    for read in (dl.load, dl.persist.load_meta):
        with pytest.raises(ValueError, match=r"has format 'depthlab-network/2'; expected "
                           r"depthlab-network/1: it was saved by a newer depthlab; upgrade"):
            read(tmp_path / "new.npz")
    recipe["format"] = "someone-else/7"
    arrays["recipe"] = np.frombuffer(json.dumps(recipe).encode(), dtype=np.uint8)
    np.savez(tmp_path / "other.npz", **arrays)
    with pytest.raises(ValueError, match="has format 'someone-else/7'; expected "
                       "depthlab-network/1"):
        dl.load(tmp_path / "other.npz")
    assert np.array_equal(dl.load(path).predict(np.ones((1, 3))),
                          dl.mlp([3, 2], seed=0).predict(np.ones((1, 3))))


def test_save_names_the_layer_that_has_no_recipe(tmp_path):
    from depthlab.layers import Activation, Dense, Standardize
    from depthlab.network import Network

    net = Network([Standardize(np.zeros(3), np.ones(3)), Dense(3, 4), Activation("relu"),
                   Dense(4, 2)], n_inputs=3)
    with pytest.raises(TypeError, match=r"layer 0 \(Standardize\) is not a layer dl.mlp "
                       "builds"):
        dl.save(net, tmp_path / "a.npz")
    mixed = Network([Dense(3, 4), Activation("relu"), Dense(4, 4), Activation("tanh"),
                     Dense(4, 2)], n_inputs=3)
    with pytest.raises(TypeError, match=r"layer 3 \(Activation: .*'tanh'.*\) differs from "
                       r"what dl.mlp builds there \(.*'relu'"):
        dl.save(mixed, tmp_path / "b.npz")
    assert not list(tmp_path.iterdir())


def test_save_meta_keys_and_numpy_scalars(tmp_path):
    """``meta={1: "a"}`` (or a nested dict with mixed keys) was blamed on "the network's
    recipe"; ``meta={"x": np.float32(1.5)}`` was refused although it is one number."""
    net = dl.mlp([3, 2], seed=0)
    for meta, fragment in (({1: "a"}, "meta key 1 is not accepted; expected a non-empty "
                            "string"),
                           ({"x": {1: "a", "b": 2}}, "meta['x'] = {1: 'a', 'b': 2} cannot be "
                            "saved"),
                           ([1], "meta = [1] is a list; expected a dict")):
        with pytest.raises(TypeError, match=fragment.replace("[", r"\[").replace("(", r"\(")):
            dl.save(net, tmp_path / "n.npz", meta=meta)
    assert not list(tmp_path.iterdir())
    path = dl.save(net, tmp_path / "n.npz", meta={"x": np.float32(1.5), "k": np.int64(3)})
    assert dl.persist.load_meta(path) == {"x": 1.5, "k": 3}


@pytest.mark.parametrize("bad, error, fragment", [("", ValueError, "path '' is empty"),
                                                   (5, TypeError, "path 5 has the wrong type")])
def test_save_and_load_name_an_empty_or_wrong_path(tmp_path, bad, error, fragment):
    """``dl.save(net, "")`` said "save() path '.' is a folder"; ``dl.load(5)`` raised
    Path's "expected str, bytes or os.PathLike object"."""
    with pytest.raises(error, match=f"save\\(\\) {fragment}"):
        dl.save(dl.mlp([3, 2], seed=0), bad)
    for read in (dl.load, dl.persist.load_meta):
        with pytest.raises(error, match=f"load\\(\\) {fragment}"):
            read(bad)


def test_predict_npz_without_arrays_says_none(tmp_path, capsys):
    dl.save(dl.mlp([3, 2], seed=0), tmp_path / "net.npz")
    np.savez(tmp_path / "e.npz")
    code, _, err = run_cli(capsys, "predict", tmp_path / "net.npz", tmp_path / "e.npz")
    assert_one_line_error(code, err, "has no 'x' (or 'X') array; arrays: none")


@pytest.mark.parametrize("timeout, error", [("x", TypeError), (None, TypeError),
                                            (True, TypeError), (float("nan"), ValueError),
                                            (-1, ValueError), (float("inf"), ValueError)])
def test_store_timeout_is_checked(tmp_path, timeout, error):
    """``Store(dir, timeout="x")`` raised float()'s "could not convert string to float",
    ``timeout=nan`` int()'s "cannot convert float NaN to integer"."""
    with pytest.raises(error, match=r"timeout=.* is not accepted; accepted: seconds to wait"):
        Store(tmp_path, timeout=timeout)
    assert not (tmp_path / "depthlab.db").exists()


@pytest.mark.parametrize("name", ["a" * 250 + ".csv", "é" * 125 + ".c"])
def test_atomic_write_of_a_long_file_name(tmp_path, name):
    """A valid 254-byte file name could not be written: its temporary's name (the target's
    plus about 40 bytes) was "File name too long"."""
    from depthlab.atomic import atomic_write_text

    atomic_write_text(tmp_path / name, "kept")
    assert (tmp_path / name).read_text() == "kept"
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary left


def test_a_store_file_name_too_long_for_its_wal_is_refused_before_creating_it(tmp_path):
    """``--out DIR/<250 letters>.db``: SQLite created the 0-byte file, then failed on its
    ``-wal`` file ("unable to open database file"), leaving the empty file behind."""
    path = tmp_path / ("d" * 250 + ".db")
    with pytest.raises(StoreError, match="its file name is 253 bytes; accepted: at most 247"):
        Store(path)
    assert not list(tmp_path.iterdir())
    Store(tmp_path / ("d" * 244 + ".db")).close()  # 247 bytes: a store


def test_csv_rows_with_a_value_past_the_header_are_refused_not_shifted(tmp_path):
    """``a,b,c,label`` then ``1,2,3,0,9``: pandas made 'a' the index and read b, c, label, 9
    as a, b, c, label (labels 9: "a single class"), with no word of the extra cell."""
    (tmp_path / "extra.csv").write_text("a,b,c,label\n1,2,3,0,9\n4,5,6,1,9\n")
    for read in (lambda p: load_dataset(p), lambda p: read_labeled_inputs(str(p), "label")):
        with pytest.raises(ValueError, match="line 2 has 5 cells but the header names 4 "
                           "columns"):
            read(tmp_path / "extra.csv")
    # a byte-order mark, CRLF line ends and a blank last line beside the trailing commas
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbfa,b,c,label\r\n1,2,3,0,\r\n4,5,6,1,\r\n\r\n")
    assert load_dataset(tmp_path / "bom.csv").n_features == 3
    assert read_labeled_inputs(str(tmp_path / "bom.csv"), "label")[0].tolist() == [
        [1, 2, 3], [4, 5, 6]]


def test_run_refuses_a_folder_where_its_network_goes_before_training(tmp_path, capsys):
    """``OUT/models/<id>.npz`` a folder: the run trained, was stored, then ended with exit 1,
    "internal error: ValueError: save() path ... is a folder"."""
    from depthlab.experiments import load_config, run_id

    cfg = tmp_path / "c.toml"
    cfg.write_text('name = "tiny"\n[data]\nname = "clusters"\n[model]\n'
                   'sizes = ["auto", 8, "auto"]\n[train]\nepochs = 1\n')
    rid = run_id(load_config(cfg))
    (tmp_path / "out" / "models" / f"{rid}.npz").mkdir(parents=True)
    code, _, err = run_cli(capsys, "run", cfg, "--out", tmp_path / "out", "-q")
    assert_one_line_error(code, err, f"{rid}.npz' is a folder; the trained network is saved "
                                     "as a file")
    with Store(tmp_path / "out", create=False, readonly=True) as store:
        assert store.runs().empty  # refused before training


def test_a_store_of_a_newer_layout_is_refused_and_an_old_one_still_opens(tmp_path, capsys):
    """The store carried no version: a later depthlab's store (other tables' meaning) would
    be read as far as its columns matched."""
    old = tmp_path / "old"
    with Store(old) as store:
        store.add_run(RunRecord(id="r1", config={"model": {}}))
    with sqlite3.connect(old / "depthlab.db") as c:  # as written before the version was set
        c.execute("PRAGMA user_version = 0")
    with Store(old, create=False, readonly=True) as store:
        assert store.has_run("r1")
    Store(old).close()  # opened for writing: marked with its version
    with sqlite3.connect(old / "depthlab.db") as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == 1
        c.execute("PRAGMA user_version = 2")  # a later depthlab's
    for readonly in (False, True):
        with pytest.raises(StoreError, match=r"was written by a newer depthlab \(store "
                           r"version 2; this version reads up to 1\): upgrade depthlab"):
            Store(old, readonly=readonly)
    code, _, err = run_cli(capsys, "runs", old)
    assert_one_line_error(code, err, "was written by a newer depthlab (store version 2")


def test_init_force_onto_a_folder_says_folder(tmp_path, capsys, monkeypatch):
    """``init dd --force`` with a folder dd.toml: "Is a directory (the previous version is
    kept)", and a temporary file was created and removed beside it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dd.toml").mkdir()
    code, _, err = run_cli(capsys, "init", "dd", "--force")
    # (clihunt46: said before writing, with or without --force: was "cannot write 'dd.toml':
    # it is a folder" with --force and "pass --force to replace it" without)
    line = assert_one_line_error(code, err, "'dd.toml' is a folder; expected a file name")
    assert "previous version" not in line
    assert [p.name for p in tmp_path.iterdir()] == ["dd.toml"]
