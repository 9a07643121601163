"""The README's sweep-throughput block is the one benchmarks/sweep_readme.py renders from the
committed results of benchmarks/sweep_scaling.py (benchmarks/sweep_scaling*.json)."""

import json
from pathlib import Path

import pytest
from helpers.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]


def _renderer():
    return load_script("benchmarks/sweep_readme.py")


def test_readme_sweep_block_matches_the_committed_results():
    after = ROOT / "benchmarks" / "sweep_scaling.json"
    before = ROOT / "benchmarks" / "sweep_scaling_before.json"
    if not after.exists():
        pytest.skip("no committed benchmark results")
    block = _renderer().render(after, before if before.exists() else None)
    assert block in (ROOT / "README.md").read_text()


def test_render_states_the_goal_verdict(tmp_path):
    run = {"points_per_s": 10.0, "steady_points_per_s": 11.0, "commit_ms": 1.5}
    data = {"points": 400, "workers": 2, "noop_ms": 2.0, "projection_s": 123.0,
            "runs": {"local": [run, run], "dask": [{**run, "points_per_s": 8.0}] * 2},
            "ratios": [0.8, 0.85], "steady_ratios": [0.9, 1.0]}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    block = _renderer().render(path)
    assert "Dask/local 0.82 [0.80..0.85]x (misses the 0.9x goal" in block
    assert "steady rate 0.95 [0.90..1.00]x, meets it" in block
    assert "about 123 s" in block and block.startswith("<!-- sweep:begin")
