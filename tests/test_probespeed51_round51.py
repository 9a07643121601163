"""probespeed51 (round 51): ``benchmarks/probe_overhead.py --old SRC`` (old against new in one
run) refuses a tree without depthlab in one line naming it, and its record digest (the check
that both sides record the same values) depends on the values, not on object addresses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"

pytest.importorskip("threadpoolctl")


def _bench():
    sys.path.insert(0, str(BENCH))
    try:
        import probe_overhead
    finally:
        sys.path.remove(str(BENCH))
    return probe_overhead


def test_old_without_depthlab_is_one_clear_line_exit_2(tmp_path):
    res = subprocess.run([sys.executable, str(BENCH / "probe_overhead.py"), "--old",
                          str(tmp_path), "--no-startup"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2
    last = res.stderr.strip().splitlines()[-1]
    assert str(tmp_path) in last and "no depthlab package" in last


def test_old_source_accepts_a_tree_with_depthlab():
    po = _bench()
    assert po.old_source(str(ROOT / "src")) == str(ROOT / "src")
    with pytest.raises(ValueError, match="no depthlab package"):
        po.old_source(str(ROOT / "benchmarks"))


def test_record_digest_is_the_values_not_the_objects():
    po = _bench()
    gen = np.random.default_rng(0)
    spec = dict(sizes=[8, 6, 6, 3], activation="tanh", init="glorot_uniform", batch=10)
    x = gen.standard_normal((40, 8)).astype(np.float32)
    y = gen.integers(0, 3, 40)
    a = po.record_digest(spec, x, y, 3)
    b = po.record_digest(spec, x, y, 3)  # same values: same digest (names hashed as text)
    assert a == b
    c = po.record_digest(spec, x * 2, y, 3)  # other values: another digest
    assert c != a


def test_breakdown_replay_leaves_the_records_unchanged():
    """probe_breakdown's cold/warm replay of a record's statistics (same arrays, same snapshot
    buffers) neither adds records nor changes a value, and times both sides."""
    sys.path.insert(0, str(BENCH))
    try:
        import probe_breakdown as pb
    finally:
        sys.path.remove(str(BENCH))
    from depthlab.models import mlp
    from depthlab.probes import ProbeRecorder, accel
    from depthlab.training import fit

    gen = np.random.default_rng(1)
    x = gen.standard_normal((40, 8)).astype(np.float32)
    y = gen.integers(0, 3, 40)

    def record(wrap: bool):
        rec = ProbeRecorder(every=1)
        net = mlp([8, 6, 6, 3], activation="sigmoid", init="glorot_uniform", seed=0)
        timers = pb.Timers()
        saved = ProbeRecorder._statistics
        kernels = accel.kernels()
        if wrap:
            ProbeRecorder._statistics = timers.statistics(
                saved, kernels, kernels.layer if kernels is not None else None)
        try:
            fit(net, x, y, loss="cross_entropy", optimizer="sgd", lr=0.1, batch_size=10,
                epochs=None, max_steps=5, eval_train=False, callbacks=[rec])
        finally:
            ProbeRecorder._statistics = saved
        return rec, timers

    plain, _ = record(False)
    replayed, timers = record(True)
    assert plain.frame().equals(replayed.frame())
    assert plain.histograms().equals(replayed.histograms())
    assert len(timers.calls["statistics, in the run"]) == 5
    assert len(timers.calls["statistics, replayed warm"]) == 5


def test_old_against_itself_records_identical_and_writes_json(tmp_path):
    """``--old`` end to end with this checkout on both sides (one round, the smallest run):
    both sides record the same values, the JSON holds each side's times of every mode."""
    import json

    out = tmp_path / "ab.json"
    res = subprocess.run([sys.executable, str(BENCH / "probe_overhead.py"), "--old",
                          str(ROOT / "src"), "--no-startup", "--goals-only", "--only",
                          "sigmoid", "--rounds", "1", "--steps", "10", "--json", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "records identical (every=1, 12 steps, frame and histograms): yes" in res.stdout
    got = json.loads(out.read_text())
    (label, result), = got["results"].items()
    assert "sigmoid" in label and result["records_identical"] is True
    for side in ("old", "new"):
        assert set(result["times"][side]) == {"no probes", "every=10, training batch",
                                              "every=1, training batch"}
        assert all(len(t) == 1 and t[0] > 0 for t in result["times"][side].values())
