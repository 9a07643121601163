"""Round 18b, the experiment machinery: the demo's words for a ratio of 0, the store's large
probe tables, huge data files refused before they are read."""

from __future__ import annotations

import pandas as pd
import pytest


def test_a_gradient_ratio_of_exactly_0_is_vanishing_not_unmeasured():
    # a first layer whose units are all dead gets no gradient: the ratio is measured, and 0;
    # the demo said "not measured" (the report had its own workaround)
    from depthlab.demo import describe_ratio, summary_lines
    from depthlab.plot import gradient_ratio

    table = pd.DataFrame({"step": [0, 0, 0], "layer": [1, 2, 3],
                          "quantity": ["grad_pre_std"] * 3, "value": [0.0, 0.3, 0.5]})
    ratio = gradient_ratio(table)
    assert ratio == 0.0
    assert describe_ratio(ratio) == "vanishing: the first layer gets no gradient at all (0)"
    assert describe_ratio(-0.0).startswith("vanishing")
    line = summary_lines([{"name": "dead", "meaning": "", "ratio": ratio, "status": "finished",
                           "val_acc": 0.1}])[0]
    assert "no gradient at all" in line and "not measured" not in line, line
    for unmeasured in (None, float("nan"), float("inf"), -1.0):
        assert describe_ratio(unmeasured) == "not measured"


def _long_probe_table(n: int):
    import numpy as np

    rng = np.random.default_rng(0)
    value = rng.standard_normal(n)
    value[::7] = np.nan  # stored as NULL
    value[::11] = np.inf
    return pd.DataFrame({
        "step": pd.array(np.arange(n) // 30, dtype="int64"),
        "layer": pd.array(np.arange(n) % 30 // 6, dtype="int64"),
        "quantity": pd.Series(np.array(["grad_pre_std", "act_std", "dead"], dtype=object)[
            np.arange(n) % 3], dtype=object),
        "value": value})


def _stored(path, table: str) -> list[tuple]:
    import sqlite3

    con = sqlite3.connect(str(path / "depthlab.db"))
    try:
        cols = [r[1] for r in con.execute(f"PRAGMA table_info({table})")]
        typed = ", ".join(f"{c}, typeof({c})" for c in cols)
        return con.execute(f"SELECT {typed} FROM {table} ORDER BY rowid").fetchall()
    finally:
        con.close()


def test_a_long_probe_table_is_stored_by_column_not_value_by_value(tmp_path, monkeypatch):
    # a torch Watch run of 100k records (3M probe rows) took ~28 s to store, most of it one
    # Python call per value (_py) and every row held as a tuple at once; the columns of numbers
    # and of strings are now converted by column, the rows made a chunk at a time
    import numpy as np

    from depthlab.experiments import store as st

    calls = []
    real = st._py
    monkeypatch.setattr(st, "_py", lambda v: calls.append(1) or real(v))
    monkeypatch.setattr(st, "ROW_CHUNK", 4096)  # (65536 by default: the same three chunks)
    n = st.ROW_CHUNK * 2 + 123  # three chunks
    probes = _long_probe_table(n)
    steps = pd.DataFrame({"step": np.arange(50), "loss": np.r_[np.linspace(2, 1, 49), np.nan]})
    hists = pd.DataFrame({"step": [0, 0], "layer": [1, 1], "kind": ["act", "act"],
                          "bin_left": np.array([-1.0, 0.0], dtype=np.float32),
                          "bin_right": [0.0, 1.0], "count": np.array([3, 4], dtype=np.uint32)})
    with st.Store(tmp_path) as s:
        s.add_run(st.RunRecord(id="long", probes=probes, steps=steps, histograms=hists))
    assert calls == []  # was 4 * n + 100 + 12
    # stored exactly as value-by-value conversion stored it (types included)
    want = [("long", "text", *sum(((v, t) for v, t in zip(row, types)), ()))
            for row, types in [((int(a), int(b), c, None if d != d else float(d)),
                                ("integer", "integer", "text", "null" if d != d else "real"))
                               for a, b, c, d in probes.itertuples(index=False)]]
    got = _stored(tmp_path, "probes")
    assert len(got) == n
    assert [(r[0], r[1], *r[2:]) for r in got] == want
    assert [r[2:] for r in _stored(tmp_path, "steps")][-1] == (49, "integer", None, "null")
    assert _stored(tmp_path, "histograms")[0][2:] == (
        0, "integer", 1, "integer", "act", "text", -1.0, "real", 0.0, "real", 3, "integer",
        # the non-finite counts (n_neginf, n_posinf, n_nan) a frame without them leaves NULL
        None, "null", None, "null", None, "null")
    with st.Store(tmp_path, readonly=True) as s:
        back = s.probes("long")
    assert len(back) == n and back["step"].dtype == np.int64
    assert back["value"].isna().sum() == np.isnan(probes["value"]).sum()


def test_odd_columns_are_still_stored_value_by_value_and_a_bad_one_stores_nothing(tmp_path):
    # object columns of NumPy scalars, nullable and string dtypes take the value-by-value
    # path (same contents as before); an unstorable value in a late chunk rolls the run back
    import numpy as np

    from depthlab.experiments import store as st

    probes = pd.DataFrame({
        "step": pd.array([0, 1, None], dtype="Int64"),
        "layer": pd.Series([np.int64(1), np.int32(2), 3], dtype=object),
        "quantity": pd.Series(["a", None, "c"], dtype="str"),
        "value": pd.Series([np.float32(0.5), float("nan"), None], dtype=object)})
    probes["step"] = probes["step"].astype(object).where(probes["step"].notna(), None)
    with st.Store(tmp_path) as s:
        s.add_run(st.RunRecord(id="odd", probes=probes))
        assert [r[2:] for r in _stored(tmp_path, "probes")] == [
            (0, "integer", 1, "integer", "a", "text", 0.5, "real"),
            (1, "integer", 2, "integer", None, "null", None, "null"),
            (None, "null", 3, "integer", "c", "text", None, "null")]
        bad = _long_probe_table(st.ROW_CHUNK + 10)
        values = bad["value"].tolist()
        values[st.ROW_CHUNK + 5] = {"not": "a number"}  # in the second chunk
        bad["value"] = pd.Series(values, dtype=object)
        try:
            s.add_run(st.RunRecord(id="bad", probes=bad))
        except Exception as e:  # SQLite refuses to bind a dict
            assert "bad" in str(e) or "binding" in str(e) or "supported" in str(e), e
        else:
            raise AssertionError("a dict value was stored")
        assert not s.has_run("bad") and s.has_run("odd")
        assert len(_stored(tmp_path, "probes")) == 3  # the first chunk rolled back too


def _huge_data(tmp_path, kind: str):
    """A data file whose header declares far more than memory holds, its body a hole (a
    sparse CSV of 20 GB; a .npz / IDX file whose arrays' data are absent)."""
    import io
    import zipfile

    import numpy as np

    if kind == "csv":
        p = tmp_path / "huge.csv"
        with open(p, "w") as fh:
            fh.write("a,b,label\n" + "0.125,0.25,1\n" * 90_000)  # past the NUL check's MiB
            fh.truncate(20 * 10**9)
        return p
    if kind == "npz":
        p = tmp_path / "huge.npz"
        with zipfile.ZipFile(p, "w") as z:
            for key, shape in (("x", (10**6, 10**4)), ("y", (10**6,))):
                head = io.BytesIO()
                np.lib.format.write_array_header_1_0(
                    head, {"descr": "<f8", "fortran_order": False, "shape": shape})
                z.writestr(f"{key}.npy", head.getvalue())
        return p
    folder = tmp_path / "idx"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte").write_bytes(
        b"\0\0\x08\x03" + np.array([10**6, 300, 300], dtype=">u4").tobytes())
    (folder / "train-labels-idx1-ubyte").write_bytes(
        b"\0\0\x08\x01" + np.array([10**6], dtype=">u4").tobytes())
    return folder


@pytest.mark.parametrize("kind", ["csv", "npz", "idx"])
@pytest.mark.parametrize("command", ["run", "sweep", "doctor"])
def test_a_data_file_too_large_is_refused_from_its_header_before_its_fingerprint(
        tmp_path, monkeypatch, capsys, command, kind):
    # a 50 GB data file was read whole for the run id's fingerprint (~100 s) before the memory
    # check refused it; its header now sizes it first, and nothing reads its content
    from helpers.cli import assert_one_line_error, run_cli

    import depthlab.data.fingerprint as fp

    def never(path):
        raise AssertionError(f"the fingerprint read {path} before the memory refusal")

    monkeypatch.setattr(fp, "_file_digest", never)
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "2G")
    data = _huge_data(tmp_path, kind)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\npath = "{data}"\n[model]\nsizes = ["auto", 4, "auto"]\n'
                   "[train]\nepochs = 1\n"
                   + ('[sweep]\n"train.seed" = [0, 1]\n' if command == "sweep" else ""))
    code, _, err = run_cli(capsys, command, cfg, "--out", tmp_path / "out")
    assert_one_line_error(code, err, str(data), "needs about", "is available")
    assert not (tmp_path / "out" / "depthlab.db").exists() or command == "sweep"


def test_execute_and_prepare_refuse_a_data_file_too_large_before_reading_it(tmp_path,
                                                                            monkeypatch):
    import depthlab.data.fingerprint as fp
    from depthlab.experiments import ExperimentError, execute, prepare
    from depthlab.experiments.runner import check_data_file

    def never(path):
        raise AssertionError(f"the fingerprint read {path} before the memory refusal")

    monkeypatch.setattr(fp, "_file_digest", never)
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "2G")
    cfg = {"data": {"path": str(_huge_data(tmp_path, "csv"))},
           "model": {"sizes": ["auto", 4, "auto"]}, "train": {"epochs": 1}}
    for call in (prepare, lambda c: execute(c, catch=False)):
        with pytest.raises(ExperimentError, match=r"CSV of about 1,538,461,53\d rows x 3 col"):
            call(cfg)
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "200G")  # it fits: no refusal
    from depthlab.experiments import validate

    check_data_file(validate(cfg))


def test_a_long_probe_table_is_read_back_a_chunk_at_a_time(tmp_path, monkeypatch):
    # reading a long run back held every row as a tuple, then built the frame from them (peak
    # ~265-320 bytes a row of Python memory); the rows now come ROW_CHUNK at a time, each
    # chunk's columns made arrays at once (~80 bytes a row here), with the same frame
    import gc
    import sqlite3
    import tracemalloc

    from depthlab.experiments import store as st

    monkeypatch.setattr(st, "ROW_CHUNK", 8192)
    n = 60_000  # eight chunks
    probes = _long_probe_table(n)
    with st.Store(tmp_path) as s:
        s.add_run(st.RunRecord(id="long", probes=probes))
    con = sqlite3.connect(str(tmp_path / "depthlab.db"))
    rows = con.execute("SELECT step, layer, quantity, value FROM probes WHERE run_id = 'long' "
                       "ORDER BY step, layer, quantity").fetchall()
    con.close()
    want = pd.DataFrame(rows, columns=["step", "layer", "quantity", "value"])  # as it was read
    del rows
    with st.Store(tmp_path, readonly=True) as s:
        tracemalloc.start()
        try:
            back = s.probes("long")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert gc.isenabled()  # paused while reading only
    assert back.equals(want) and list(back.dtypes) == list(want.dtypes)
    assert peak < 160 * n, f"{peak / n:.0f} bytes a row"


def test_the_store_keeps_a_sweeps_number_of_points_for_a_report_of_it_running(tmp_path,
                                                                              capsys):
    # the store kept no grid size: a report of a sweep still running could not say "17 of 24"
    import sqlite3

    import numpy as np
    from helpers.cli import run_cli

    from depthlab.experiments import Store

    cfg = tmp_path / "sw.toml"
    cfg.write_text('[data]\nname = "digits"\nn = 200\n[model]\nsizes = ["auto", 4, "auto"]\n'
                   '[train]\nepochs = 1\n[sweep]\n"train.seed" = [0, 1, 2]\n')
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "sweep", cfg, "--out", out, "--limit", "2", "--quiet")
    assert code == 0, err
    with Store(out) as s:
        (sid, n), = s.sweep_sizes().items()
        assert n == 2 and len(s.sweep_points()[sid]) == 2  # "2 of 2"
        s.set_sweep_size("sw-huge", 10**23)  # a grid beyond SQLite's integers: the largest
        assert s.sweep_sizes()["sw-huge"] == 2**63 - 1
        for bad in (-1, True, "3", 2.0):
            with pytest.raises(ValueError, match=f"points = {bad!r}"):
                s.set_sweep_size("sw-x", bad)
        s.set_sweep_size("sw-np", np.int64(5))  # run_sweep's limit may be a NumPy integer
        assert s.sweep_sizes()["sw-np"] == 5
    con = sqlite3.connect(str(out / "depthlab.db"))
    created = con.execute("SELECT created FROM sweeps WHERE id = ?", (sid,)).fetchone()
    code, _, err = run_cli(capsys, "sweep", cfg, "--out", out, "--quiet")
    assert code == 0, err
    with Store(out, readonly=True) as s:
        assert s.sweep_sizes()[sid] == 3  # the last run of the sweep says
    # created: the wall clock of its first run (a column the bitwise store comparisons skip)
    assert con.execute("SELECT created FROM sweeps WHERE id = ?", (sid,)).fetchone() == created
    con.execute("DROP TABLE sweeps")  # a store of an earlier depthlab
    con.commit()
    con.close()
    with Store(out, readonly=True) as s:
        assert s.sweep_sizes() == {}
