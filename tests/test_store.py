"""The SQLite results store: round trips, replacement, atomicity, export."""

from __future__ import annotations

import json
import math
import sqlite3

import numpy as np
import pandas as pd
import pytest

from depthlab.experiments.store import RunRecord, Store, StoreError, load_runs


def make_record(rid: str = "abc123def456", status: str = "finished", **kw) -> RunRecord:
    steps = pd.DataFrame({"step": [1, 2, 3], "loss": [2.3, 2.0, float("nan")]})
    epochs = pd.DataFrame([{"epoch": 1, "step": 3, "train_loss": 1.9, "val_acc": 0.5,
                            "seconds": 0.1}])
    evals = pd.DataFrame([{"step": 2, "epoch": 1, "val_loss": 2.1, "val_acc": 0.4}])
    probes = pd.DataFrame({"step": [0, 0, 10], "layer": [1, 2, 1],
                           "quantity": ["act_std", "act_std", "grad_pre_std"],
                           "value": np.array([0.5, 0.25, 1e-3], dtype=np.float32)})
    hists = pd.DataFrame({"step": [0, 0], "layer": [1, 1], "kind": ["act", "act"],
                          "bin_left": [-1.0, 0.0], "bin_right": [0.0, 1.0], "count": [7, 9]})
    jac = pd.DataFrame({"step": [0, 0], "example": [0, 0], "idx": [0, 1],
                        "value": [2.0, 0.5]})
    defaults = dict(id=rid, name="r", kind="run", sweep=None, status=status,
                    config={"model": {"sizes": [4, 3, 2]}},
                    metrics={"train_loss": 1.9, "val_acc": 0.5, "test_acc": float("nan"),
                             "steps": 3, "seconds": 0.1},
                    seconds=0.1, steps=steps, epochs=epochs, evals=evals, probes=probes,
                    histograms=hists, jacobian=jac)
    defaults.update(kw)
    return RunRecord(**defaults)


def test_round_trip(tmp_path):
    store = Store(tmp_path)
    assert store.path == tmp_path / "depthlab.db"
    rec = make_record()
    store.add_run(rec)
    assert store.has_run(rec.id) and not store.has_run("nope")
    assert store.has_run(rec.id, ("finished",)) and not store.has_run(rec.id, ("failed",))
    runs = store.runs()
    assert list(runs["id"]) == [rec.id]
    row = runs.iloc[0]
    assert row["status"] == "finished" and row["config"] == rec.config
    assert row["train_loss"] == pytest.approx(1.9) and math.isnan(row["test_acc"])
    assert row["metrics"]["test_acc"] is None  # NaN stored as JSON null
    one = store.run(rec.id)
    assert one["metrics"]["val_acc"] == 0.5 and one["kind"] == "run"
    st = store.steps(rec.id)
    assert list(st["step"]) == [1, 2, 3] and math.isnan(st["loss"].iloc[2])
    ep = store.epochs(rec.id)
    assert ep.loc[0, "train_loss"] == pytest.approx(1.9) and ep.loc[0, "epoch"] == 1
    assert store.evals(rec.id).loc[0, "val_acc"] == pytest.approx(0.4)
    pr = store.probes(rec.id)
    assert list(pr.columns) == ["step", "layer", "quantity", "value"] and len(pr) == 3
    assert store.histograms(rec.id)["count"].sum() == 16
    assert store.jacobian(rec.id)["value"].tolist() == [2.0, 0.5]
    assert store.findings(rec.id) is None
    with pytest.raises(KeyError):
        store.run("missing")
    store.close()
    assert list(load_runs(tmp_path)["id"]) == [rec.id]


def test_replace_same_id_leaves_no_stale_rows(tmp_path):
    store = Store(tmp_path)
    store.add_run(make_record())
    short = make_record(steps=pd.DataFrame({"step": [1], "loss": [0.1]}),
                        probes=pd.DataFrame({"step": [0], "layer": [1], "quantity": ["x"],
                                             "value": [1.0]}),
                        status="diverged", divergence={"step": 1, "loss": None})
    store.add_run(short)
    assert len(store.runs()) == 1
    assert len(store.steps(short.id)) == 1 and len(store.probes(short.id)) == 1
    assert store.run(short.id)["status"] == "diverged"
    assert store.run(short.id)["divergence"]["step"] == 1


def test_findings_and_kinds(tmp_path):
    store = Store(tmp_path / "sub" / "x.db")
    assert store.path.name == "x.db"
    store.add_run(make_record("d1", kind="doctor", findings={"findings": [{"code": "x"}]}))
    store.add_run(make_record("s1", kind="sweep-point", sweep="sw"))
    assert store.findings("d1") == {"findings": [{"code": "x"}]}
    assert list(store.runs(kind="sweep-point")["id"]) == ["s1"]
    assert list(store.runs(sweep="sw")["id"]) == ["s1"]


def test_bad_record_fields():
    with pytest.raises(ValueError, match="status"):
        make_record(status="crashed")
    with pytest.raises(ValueError, match="kind"):
        make_record(kind="weird")


def test_failed_write_is_rolled_back(tmp_path):
    store = Store(tmp_path)
    store.add_run(make_record("keep"))
    bad = make_record("keep", probes=pd.DataFrame({"step": [0], "value": [1.0]}))
    with pytest.raises(ValueError, match="lacks columns"):
        store.add_run(bad)
    # a failure in the middle of the transaction keeps the old run whole
    broken = make_record("keep", metrics={"train_loss": 0.0})
    broken.jacobian = pd.DataFrame({"step": [0], "example": [0], "idx": [0],
                                    "value": [object()]})
    with pytest.raises(sqlite3.Error):
        store.add_run(broken)
    assert store.run("keep")["metrics"]["train_loss"] == pytest.approx(1.9)
    assert len(store.steps("keep")) == 3 and len(store.jacobian("keep")) == 2
    assert store.integrity_check() == "ok"


def test_wal_mode_and_missing_store(tmp_path):
    Store(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "depthlab.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    with pytest.raises(StoreError, match="no results store"):
        Store(tmp_path / "empty", create=False)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export(tmp_path, fmt):
    if fmt == "parquet":
        import pyarrow  # noqa: F401  (a dev dependency: required)
    store = Store(tmp_path)
    store.add_run(make_record())
    paths = store.export(tmp_path / "exp", fmt)
    names = sorted(p.name for p in paths)
    assert names == sorted(f"{t}.{fmt}" for t in ("runs", "steps", "epochs", "evals", "probes",
                                                   "histograms", "jacobian", "findings",
                                                   "sweep_points"))
    read = pd.read_csv if fmt == "csv" else pd.read_parquet
    runs = read(tmp_path / "exp" / f"runs.{fmt}")
    assert runs.loc[0, "val_acc"] == pytest.approx(0.5)
    assert json.loads(runs.loc[0, "config"]) == {"model": {"sizes": [4, 3, 2]}}
    assert len(read(tmp_path / "exp" / f"probes.{fmt}")) == 3
    assert not [p for p in (tmp_path / "exp").iterdir() if ".tmp" in p.name]
    with pytest.raises(ValueError, match="unknown export format"):
        store.export(tmp_path / "exp", "xlsx")
