"""benchmarks/engine_speed.py's float64 / float32 cost (issue 14): measured in CPU time on one
core over at least 9 rounds, with the step's products of each kind and the rest of the step
beside it (the ratio came from the medians of 3 wall-time rounds: on the shared host the
per-round ratios of the 20x256 step ran from 0.67 to 3.31). No timing is asserted: the clocks
are replaced by counters."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from helpers.scripts import load_script

from depthlab import accel


@pytest.fixture
def es():
    return load_script("benchmarks/engine_speed.py")


def test_interleaved_reads_the_clock_it_is_given(es):
    ticks = itertools.count()
    calls = []
    out = es.interleaved({"a": calls.append, "b": calls.append}, 4, 3,
                         clock=lambda: next(ticks) * 8.0)
    # one warm-up block each, then 3 rounds; every block is two readings 8 s apart: 2 s/step
    assert calls == [1, 1] + [4] * 6
    assert out == {"a": [2.0] * 3, "b": [2.0] * 3}


def test_products_by_kind_runs_the_steps_products(es):
    sizes, batch = [5, 4, 3, 2], 6
    runs = es.products_by_kind(sizes, batch, "float64")
    assert set(runs) == {"x.W", "xT.g", "g.WT"}
    seen = []
    real = np.matmul

    def spy(a, b, *args, **kw):
        seen.append((a.shape, b.shape, a.dtype.name))
        return real(a, b, *args, **kw)

    es.np.matmul = spy  # the module's own np name: the x^T g products go through it
    try:
        runs["xT.g"](2)
    finally:
        es.np.matmul = real
    wanted = [((k, m), (m, n)) for kind, k, m, n in es.step_products(sizes, batch)
              if kind == "xT.g"]
    assert [s[:2] for s in seen] == wanted * 2
    assert {s[2] for s in seen} == {"float64"}
    runs["x.W"](1)
    runs["g.WT"](1)


@pytest.mark.parametrize("one_core", [True, False])
def test_float64_cost_times_one_core_in_cpu_time(es, monkeypatch, one_core):
    monkeypatch.setitem(accel._state, "kernels", None)  # NumPy path: no Numba load here
    reads = {"cpu": 0, "wall": 0}
    used, unused = ("cpu", "wall") if one_core else ("wall", "cpu")

    def clock(which):
        def read():  # the clock to be used ticks by 1 s a reading, the other stands still
            reads[which] += 1
            return float(reads[which]) if which == used else 0.0
        return read

    monkeypatch.setattr(es.time, "process_time", clock("cpu"))
    monkeypatch.setattr(es.time, "perf_counter", clock("wall"))
    f = es.float64_cost([6, 5, 4, 3], "relu", "he_normal", 7, 1, 9, one_core)
    # 8 functions (2 steps, 6 kinds of product) x 9 rounds, 2 readings a block, each block one
    # tick long (a block timed by the other clock would take 0 s: a ratio of 0/0)
    assert reads[used] >= 2 * 8 * 9
    assert f["clock"] == used and f["rounds"] == 9 and len(f["round_ratios"]) == 9
    assert f["ratio"] == 1.0 and set(f["kinds"]) == {"x.W", "xT.g", "g.WT"}
    assert f["ms"]["float64"]["products"] == pytest.approx(3e3)  # 3 kinds of 1 s per step
