"""The README's speed block is the one benchmarks/speed_readme.py renders from the committed
benchmark results (benchmarks/engine_speed.json, benchmarks/probe_overhead.json)."""

from pathlib import Path

import pytest
from helpers.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]


def _renderer():
    return load_script("benchmarks/speed_readme.py")


def test_readme_speed_block_matches_the_committed_results():
    engine = ROOT / "benchmarks" / "engine_speed.json"
    probes = ROOT / "benchmarks" / "probe_overhead.json"
    if not engine.exists():
        pytest.skip("no committed benchmark results")
    mod = _renderer()
    block = mod.render(engine, probes if probes.exists() else None)
    assert block in (ROOT / "README.md").read_text()


def _probe_data(bare, probed, hook_shares):
    mode = "every=10, training batch"
    return {"rounds": len(bare), "load_before": [1.0], "load_after": [1.0],
            "goals": {mode: 5.0},
            "results": {"net": {"times": {"no probes": bare, mode: probed},
                                "hooks": {"no probes": [0.0] * len(bare), mode: hook_shares}}}}


def test_probe_goal_needs_the_paired_and_in_hook_figures_both():
    """Where the recorder's own time is measured, a goal is met only when the paired ratio and
    the in-hook share both meet it, whatever the ratio of medians says."""
    mod = _renderer()
    # the bare runs spread by 40%, each round's pair is 4% apart
    met = mod.probe_block(_probe_data([1.0, 1.3, 0.9], [1.04, 1.352, 0.936], [0.04] * 3))
    line = next(v for v in met if v.startswith("- probes"))
    assert "whole run 4.0%" in line and "paired 4.0%" in line and line.endswith(": met")
    slow = mod.probe_block(_probe_data([1.0, 1.3, 0.9], [1.04, 1.352, 0.936], [0.2] * 3))
    line = next(v for v in slow if v.startswith("- probes"))
    assert "in the recorder's hooks 25.0%" in line and line.endswith("not met")
    cell = next(v for v in slow if v.startswith("| net |"))
    assert "4.0% (4.0%, 25.0%)" in cell


def test_probe_goal_without_hook_times_is_the_whole_run_ratio():
    mod = _renderer()
    data = _probe_data([1.0, 1.0, 1.0], [1.1, 1.1, 1.1], [])
    del data["results"]["net"]["hooks"]
    line = next(v for v in mod.probe_block(data) if v.startswith("- probes"))
    assert line.endswith("10.0% (goal <= 5%): not met")
