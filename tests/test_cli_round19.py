"""Round 19, the experiment machinery: export of long tables a chunk at a time."""

from __future__ import annotations

import pandas as pd
import pytest


def _whole_table_files(store, out, fmt: str) -> dict[str, bytes | pd.DataFrame]:
    """What export wrote before it streamed: each table (runs aside) read whole, then written."""
    from depthlab.experiments.store import EXPORTED

    files = {}
    for name in EXPORTED:
        if name == "runs":
            continue
        path = out / f"{name}.{fmt}"
        df = store.table(name)
        if fmt == "csv":
            df.to_csv(path, index=False)
            files[name] = path.read_bytes()
        else:
            df.to_parquet(path, index=False)
            files[name] = pd.read_parquet(path)
    return files


def _long_store(path, n: int):
    import numpy as np

    from depthlab.experiments import store as st

    i = np.arange(n)
    value = np.sin(i * 0.37)
    value[::97] = np.nan  # NULL
    value[::89] = np.inf
    probes = pd.DataFrame({"step": i // 40, "layer": (i // 4) % 10,
                           "quantity": np.array(["grad_std", "act_mean", "act_std", "dead"],
                                                dtype=object)[i % 4], "value": value})
    steps = pd.DataFrame({"step": np.arange(300), "loss": np.linspace(2.0, 0.1, 300)})
    with st.Store(path) as s:
        s.add_run(st.RunRecord(id="long", probes=probes, steps=steps))
        s.add_run(st.RunRecord(id="short", probes=probes.iloc[:10], steps=steps.iloc[:3]))


def test_export_writes_a_long_table_a_chunk_at_a_time_with_the_same_files(tmp_path,
                                                                          monkeypatch):
    # export read each table whole (every row a tuple, then a frame): a 1M-row probe table
    # took 548 MB of RSS to export; the rows now come ROW_CHUNK at a time, each column of the
    # dtype the whole table gives it, so the files are the ones the whole frame wrote
    import tracemalloc

    from depthlab.experiments import store as st

    n = 30_000  # 30 chunks (a table read whole: ~450 bytes a row here; chunks: ~25)
    _long_store(tmp_path, n)
    monkeypatch.setattr(st, "ROW_CHUNK", 1024)
    with st.Store(tmp_path, readonly=True) as s:
        want = _whole_table_files(s, tmp_path, "csv")
        tracemalloc.start()
        try:
            s.export(tmp_path / "export", "csv")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    for name, content in want.items():
        assert (tmp_path / "export" / f"{name}.csv").read_bytes() == content, name
    # the whole table: ~300 bytes a row (tuples, then the frame); a chunk: a fixed amount
    assert peak < 60 * n, f"{peak / n:.0f} bytes a row"


def test_export_of_odd_columns_a_chunk_at_a_time_is_the_whole_tables(tmp_path, monkeypatch):
    # columns whose dtype only the whole table decides: integers with a NULL late (float64),
    # text in a column of numbers (an edited store: object), NULLs only, text with NULLs
    import sqlite3

    from depthlab.experiments import store as st

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
        want = _whole_table_files(s, tmp_path, "csv")
        s.export(tmp_path / "export", "csv")
    for name, content in want.items():
        assert (tmp_path / "export" / f"{name}.csv").read_bytes() == content, name
    assert b",oops\n" in want["probes"] and b",7.5," in want["probes"]
    assert want["steps"].splitlines()[-1].startswith(b"short,,")


def test_export_to_parquet_a_chunk_at_a_time_reads_back_as_the_whole_tables(tmp_path,
                                                                           monkeypatch):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from depthlab.experiments import store as st

    monkeypatch.setattr(st, "ROW_CHUNK", 7)
    _long_store(tmp_path, 50)
    with st.Store(tmp_path, readonly=True) as s:
        want = _whole_table_files(s, tmp_path, "parquet")
        s.export(tmp_path / "export", "parquet")
    for name, frame in want.items():
        path = tmp_path / "export" / f"{name}.parquet"
        pd.testing.assert_frame_equal(pd.read_parquet(path), frame, check_exact=True)
        assert pq.read_schema(path).remove_metadata().equals(
            pq.read_schema(tmp_path / f"{name}.parquet").remove_metadata()), name
    assert pq.ParquetFile(tmp_path / "export" / "probes.parquet").num_row_groups > 1


@pytest.mark.parametrize("cluster", ["local:0", "local:x", "http://h:1"])
def test_a_malformed_cluster_is_named_before_the_grids_confirmation(tmp_path, capsys,
                                                                    monkeypatch, cluster):
    # a grid above 100,000 points with --cluster local:0 was told to pass --limit N or --yes;
    # with --limit, it was then told that local:0 is not accepted (one error at a time)
    from helpers.cli import assert_one_line_error, run_cli

    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    values = ", ".join(str(v) for v in range(400))
    (tmp_path / "big.toml").write_text(
        '[data]\nname = "spirals"\n[model]\nsizes = ["auto", 4, "auto"]\n[sweep]\n'
        f'"train.seed" = [{values}]\n"data.seed" = [{values}]\n')
    code, _, err = run_cli(capsys, "sweep", tmp_path / "big.toml", "--out", tmp_path / "out",
                           "--cluster", cluster)
    assert_one_line_error(code, err, f"--cluster {cluster!r} is not accepted")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["truncated", "altered", "zip header only"])
def test_a_damaged_cache_file_is_rebuilt_not_an_internal_error(tmp_path, monkeypatch, damage):
    # a cache file cut short (a full disk, a copy interrupted) or altered made every run of
    # mnist5k an internal error "BadZipFile: File is not a zip file"; it reads as missing now,
    # so the data are read from their source again and the cache is written anew
    import numpy as np

    from depthlab.data import cache

    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    x = np.arange(200_000, dtype=np.int64).reshape(1000, 200)
    path = cache.save_npz("t.npz", x=x, y=np.arange(1000))
    good = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(good[:len(good) // 2])
    elif damage == "altered":
        path.write_bytes(good[:800_000] + b"x" * 100 + good[800_100:])
    else:
        path.write_bytes(b"PK\x03\x04" + bytes(100))
    assert cache.load_npz("t.npz") is None
    cache.save_npz("t.npz", x=x, y=np.arange(1000))
    assert np.array_equal(cache.load_npz("t.npz")["x"], x)


@pytest.mark.parametrize("link", ["dangling", "loop"])
def test_an_out_folder_that_is_a_broken_symbolic_link_is_named_as_such(tmp_path, capsys, link):
    # `--out results` where results is a link to an unmounted disk (or a loop of links) said
    # "cannot create results folder 'results': File exists", though `ls results` shows nothing
    import os

    from helpers.cli import assert_one_line_error, run_cli

    (tmp_path / "run.toml").write_text(
        '[data]\nname = "spirals"\n[model]\nsizes = ["auto", 4, "auto"]\n[train]\nepochs = 1\n')
    out = tmp_path / "results"
    if link == "dangling":
        os.symlink(tmp_path / "gone" / "results", out)
        target = str(tmp_path / "gone" / "results")
    else:
        os.symlink(tmp_path / "other", out)
        os.symlink(out, tmp_path / "other")
        target = str(tmp_path / "other")
    said = (f"{str(out)!r} is a symbolic link to {target!r}",
            "its target is missing, or the links form a loop")
    for where in (out, out / "sub"):
        code, _, err = run_cli(capsys, "run", tmp_path / "run.toml", "--out", where, "--quiet")
        assert_one_line_error(code, err, *said)
        assert "File exists" not in err
    # the same link as export's --to, or the folder of a file written (predict --to, reports)
    from depthlab.atomic import AtomicWriteError, atomic_write_text
    from depthlab.experiments import Store

    Store(tmp_path / "store").close()
    code, _, err = run_cli(capsys, "export", tmp_path / "store", "--to", out)
    assert_one_line_error(code, err, f"cannot create folder {str(out)!r}: ", *said)
    with pytest.raises(AtomicWriteError) as e:
        atomic_write_text(out / "x.csv", "1\n")
    assert all(part in str(e.value) for part in said), e.value


def test_sizes_and_steps_as_numpy_arrays_or_ranges_are_the_lists_mlp_takes():
    # mlp(np.array([64, 8, 10])) built the network, but ModelSpec, a config dict and the
    # recorder's steps refused the same array ("has the wrong type"), and a range too
    import numpy as np

    import depthlab as dl
    from depthlab.experiments import validate
    from depthlab.experiments.config import run_id
    from depthlab.fieldcheck import ConfigError
    from depthlab.spec import ModelSpec, ProbeSpec

    assert ModelSpec(sizes=np.array([4, 8, 2])).sizes == (4, 8, 2)
    assert ModelSpec(sizes=np.array([4, 8, 2], dtype=np.int32)).sizes == (4, 8, 2)
    assert ModelSpec(sizes=range(2, 5)).sizes == (2, 3, 4)
    assert dl.mlp(np.array([4, 8, 2]), "tanh", seed=0).config["sizes"] == [4, 8, 2]
    as_array = validate({"data": {"name": "digits"}, "model": {"sizes": np.array([64, 8, 10])}})
    as_list = validate({"data": {"name": "digits"}, "model": {"sizes": [64, 8, 10]}})
    assert as_array == as_list and run_id(as_array) == run_id(as_list)
    assert ProbeSpec(histogram_steps=np.arange(0, 30, 10)).histogram_steps == (0, 10, 20)
    # what stays refused: floats, booleans, 2-D arrays, text arrays, one size
    for bad in (np.array([4.0, 8.0, 2.0]), np.array([True, False]), np.array([[4, 8]]),
                np.array(["4", "8"]), np.array([4])):
        with pytest.raises(ConfigError):
            ModelSpec(sizes=bad)


def test_numpy_numbers_inside_a_networks_meta_are_saved_as_numbers(tmp_path):
    # dl.save(net, path, meta={"history": {"val_acc": [np.float32(0.8)]}}) was refused ("Object
    # of type float32 is not JSON serializable") although meta={"val_acc": np.float32(0.8)}
    # was saved; NumPy numbers at any depth are now numbers (NaN still refused, in one line)
    import numpy as np

    import depthlab as dl
    from depthlab.persist import load_meta

    net = dl.mlp([4, 8, 3], "tanh", seed=0)
    meta = {"history": {"val_acc": [np.float32(0.5), np.float64(0.75)], "steps": np.int64(3),
                        "flags": (np.bool_(True), 2)}, "top": np.float32(0.25)}
    path = dl.save(net, tmp_path / "net.npz", meta=meta)
    assert load_meta(path) == {"history": {"val_acc": [0.5, 0.75], "steps": 3,
                                           "flags": [True, 2]}, "top": 0.25}
    with pytest.raises(TypeError, match=r"meta\['n'\] .* not JSON compliant"):
        dl.save(net, tmp_path / "bad.npz", meta={"n": {"x": np.float64("nan")}})


@pytest.mark.parametrize("encoding,name", [("utf-16", "UTF-16"), ("utf-16-be", "UTF-16"),
                                           ("utf-16-le", "UTF-16"), ("utf-32", "UTF-32")])
def test_a_utf16_csv_is_named_as_such_not_as_a_binary_file(tmp_path, encoding, name):
    # Windows' Out-File and "Unicode text" exports write UTF-16: it was refused as "line 1
    # holds a NUL byte (0x00), so it is no CSV text (a binary file, or one preallocated and
    # never written)"; it is named as UTF-16 (or UTF-32) text, to re-save as UTF-8
    from depthlab.data import load_dataset

    text = "a,b,label\n" + "".join(f"{i},{i * 0.5},{i % 2}\n" for i in range(40))
    path = tmp_path / "rows.csv"
    path.write_bytes(text.encode(encoding))
    with pytest.raises(ValueError, match=f"the file is {name} text; accepted: comma-separated "
                                         r"UTF-8 text \(re-save the file as UTF-8\)"):
        load_dataset(str(path))
    path.write_bytes(bytes(5000))  # zeros: still a binary file
    with pytest.raises(ValueError, match="line 1 holds a NUL byte"):
        load_dataset(str(path))


def test_a_time_left_of_days_or_years_reads_in_days_or_years():
    # train.epochs = 99999999999999999999 (a typo of extra digits) is accepted, and its
    # progress read "~215239521905832.9 h left"; a NaN span read "nan s"
    from depthlab.progress import StatusLines, duration

    assert [duration(s) for s in (42, 3000, 7000, 172_800, 1e6, 1e9, 7.7e20)] == [
        "42 s", "50 min", "1.9 h", "2.0 days", "11.6 days", "32 years", "2.4e+13 years"]
    assert duration(float("nan")) == duration(float("inf")) == "?"
    lines: list[str] = []
    clock = iter([0.0, 120.0, 240.0])
    bar = StatusLines(4 * 10**21, write=lines.append, clock=lambda: next(clock), every_s=1.0)
    bar.update(10**6)
    assert lines and lines[-1].endswith("years left"), lines


def test_inits_command_to_paste_for_a_name_starting_with_a_dash_is_read_as_a_file(
        tmp_path, capsys, monkeypatch):
    # `depthlab init -- -dash` printed "train it with: depthlab run -dash.toml --out results",
    # which pasted reads -dash.toml as an option (exit 2, "unrecognized arguments")
    import shlex

    from helpers.cli import run_cli

    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "init", "--", "-dash")
    assert code == 0, err
    command = out.strip().split("train it with: ", 1)[1]
    assert shlex.split(command)[:3] == ["depthlab", "run", "./-dash.toml"], command
    assert "depthlab run ./-dash.toml --out results" in (tmp_path / "-dash.toml").read_text()
    code, out, err = run_cli(capsys, "init", "my run")  # quoted as before
    assert "depthlab run 'my run.toml' --out results" in out


def test_a_registered_name_written_with_spaces_is_the_name():
    # "leaky-relu", "LeakyReLU" and "leaky_relu" were one name, but "leaky relu" (as papers and
    # torch's docs write it) was refused with "did you mean 'leaky_relu'?"
    import depthlab as dl
    from depthlab.activations import REGISTRY as ACTIVATIONS
    from depthlab.experiments import validate
    from depthlab.experiments.config import run_id
    from depthlab.initializers import REGISTRY as INITIALIZERS

    assert ACTIVATIONS.key("leaky relu") == ACTIVATIONS.key(" Leaky  ReLU ") == "leaky_relu"
    assert INITIALIZERS.key("He Normal") == "he_normal"
    assert dl.mlp([3, 4, 2], "leaky relu", "glorot uniform", seed=0).config["activation"] == \
        "leaky_relu"
    spaced = validate({"data": {"name": "digits"}, "model": {
        "sizes": ["auto", 8, "auto"], "activation": "leaky relu", "init": "He Normal"}})
    plain = validate({"data": {"name": "digits"}, "model": {
        "sizes": ["auto", 8, "auto"], "activation": "leaky_relu", "init": "he_normal"}})
    assert spaced == plain and run_id(spaced) == run_id(plain)
    with pytest.raises(ValueError, match="did you mean 'leaky_relu'"):
        ACTIVATIONS.key("le aky")


def test_runs_sweep_takes_the_start_of_a_sweeps_id(tmp_path, capsys):
    # `depthlab runs DIR --sweep sw-7c78` said "is not a sweep of DIR; its sweeps:
    # sw-7c785455d5", although predict takes the start of a run id
    import json

    from helpers.cli import assert_one_line_error, run_cli

    from depthlab.experiments import Store
    from depthlab.experiments.store import RunRecord

    with Store(tmp_path) as s:
        for sweep, rid in (("sw-aa11", "r1"), ("sw-aa22", "r2"), ("sw-bb33", "r3")):
            s.add_run(RunRecord(id=rid, kind="sweep-point", sweep=sweep))
    code, out, err = run_cli(capsys, "runs", tmp_path, "--sweep", "sw-b", "--json")
    assert code == 0, err
    assert [r["id"] for r in json.loads(out)] == ["r3"]
    code, out, err = run_cli(capsys, "runs", tmp_path, "--sweep", "SW-AA1", "--json")
    assert code == 0 and [r["id"] for r in json.loads(out)] == ["r1"], err
    code, _, err = run_cli(capsys, "runs", tmp_path, "--sweep", "sw-aa")
    assert_one_line_error(code, err, "'sw-aa' is the start of 2 sweeps", "sw-aa11", "sw-aa22")
    code, _, err = run_cli(capsys, "runs", tmp_path, "--sweep", "sw-c")
    assert_one_line_error(code, err, "is not a sweep of")


def test_sweep_values_given_as_a_tuple_range_or_array_are_the_list():
    # from Python, a [sweep] value as a tuple was refused with a message showing it as a list:
    # 'sweep.train.seed = [0, 1, 2] has the wrong type; accepted: a non-empty list of values'
    import numpy as np

    from depthlab.experiments import validate
    from depthlab.fieldcheck import ConfigError

    base = {"data": {"name": "digits"}, "model": {"sizes": ["auto", 8, "auto"]}}
    want = validate({**base, "sweep": {"train.seed": [0, 1, 2]}})
    for values in ((0, 1, 2), range(3), np.arange(3)):
        assert validate({**base, "sweep": {"train.seed": values}}) == want, values
    for values in ((), 3, np.array([])):
        with pytest.raises(ConfigError):
            validate({**base, "sweep": {"train.seed": values}})
