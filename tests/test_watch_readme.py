"""The README's Watch-overhead block is generated from the committed benchmark results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]


def _renderer():
    return load_script("benchmarks/watch_readme.py")


def test_readme_watch_block_matches_the_committed_results():
    results = ROOT / "benchmarks" / "torch_probe_overhead.json"
    if not results.exists():
        pytest.skip("no committed benchmark results")
    gpu = ROOT / "benchmarks" / "torch_probe_overhead_cuda.json"  # a lent GPU machine's run
    files = [results, gpu] if gpu.exists() else [results]
    assert _renderer().render(*files) in (ROOT / "README.md").read_text()


def test_results_of_two_machines_render_in_one_table(tmp_path):
    """The 2-core host's CPU run and a GPU machine's ``--only cuda`` run: one sentence each
    saying how it was measured, their rows in one table, the verdicts of both."""
    over = {"every 10": {"cpu": [4.0], "wall": [30.0]},
            "every step": {"cpu": [40.0], "wall": [200.0]}}
    paths = []
    for name, where, machine, only, cores in (
            ("cpu.json", "cpu, 1 thread", None, None, 2),
            ("gpu.json", "cuda (NVIDIA H200)", "a lent GPU machine", "cuda", 16)):
        data = {"torch": "2.13.0", "rounds": 1, "cores": cores, "only": only,
                "machine": machine, "cpu_statistics": "torch operations",
                "load_before": [0.5] * 3, "load_after": [0.5] * 3,
                "results": [{"case": "mlp", "where": where, "steps": 100,
                             "baseline_ms": {"cpu": 1.5, "wall": 1.7}, "overhead_pct": over}]}
        paths.append(tmp_path / name)
        paths[-1].write_text(json.dumps(data))
    block = _renderer().render(*paths)
    assert "Measured by `python benchmarks/torch_probe_overhead.py --rounds 1` (torch" in block
    assert ("Measured on a lent GPU machine by `python benchmarks/torch_probe_overhead.py "
            "--rounds 1 --only cuda` (torch 2.13.0, statistics by torch operations on the GPU, "
            "16 cores,") in block
    assert "| cpu, 1 thread | 1.5 | +4.0% (+4.0..+4.0) |" in block
    assert "| cuda (NVIDIA H200) | 1.7 | +30.0% (+30.0..+30.0) |" in block  # wall on CUDA
    assert "mlp, cpu, 1 thread, every 10: +4.0% (goal <= 5%): met" in block
    assert "mlp, cuda (NVIDIA H200), every step: +200.0% (goal <= 50%): not met" in block


def test_render_states_each_goal_verdict(tmp_path):
    over = {"every 10": {"cpu": [4.0, 6.0, 4.5], "wall": [9.0, 9.0, 9.0]},
            "every step": {"cpu": [60.0, 55.0, 70.0], "wall": [1.0, 1.0, 1.0]}}
    data = {"torch": "2.13.0", "rounds": 3, "cores": 2, "cpu_statistics": "torch operations",
            "load_before": [1.0, 1.0, 1.0], "load_after": [2.0, 2.0, 2.0],
            "results": [{"case": "mlp", "where": "cpu, 1 thread", "steps": 100,
                         "baseline_ms": {"cpu": 1.25, "wall": 1.3}, "overhead_pct": over},
                        {"case": "resnet18", "where": "cuda (H200)", "steps": 20,
                         "baseline_ms": {"cpu": 9.0, "wall": 3.0}, "overhead_pct": over}]}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    block = _renderer().render(path)
    assert block.startswith("<!-- watch:begin") and block.endswith("<!-- watch:end -->")
    assert "| +4.5% (+4.0..+6.0) | +60.0% (+55.0..+70.0) |" in block  # CPU time on the CPU
    assert "mlp, cpu, 1 thread, every 10: +4.5% (goal <= 5%): met" in block
    assert "mlp, cpu, 1 thread, every step: +60.0% (goal <= 50%): not met" in block
    assert "resnet18, cuda (H200), every 10: +9.0% (goal <= 5%): not met" in block  # wall


def test_render_states_the_control_as_the_resolution(tmp_path):
    """The control setting (a second model without a Watch) is a column and a line saying what
    two identical loops measure against each other; results without it render as before."""
    over = {"every 10": {"cpu": [6.0, 7.0, 8.0], "wall": [0.0] * 3},
            "every step": {"cpu": [40.0, 45.0, 50.0], "wall": [0.0] * 3},
            "control: no Watch": {"cpu": [-2.5, 0.5, 1.0], "wall": [0.0] * 3}}
    data = {"torch": "2.13.0", "rounds": 3, "cores": 2, "cpu_statistics": "torch operations",
            "load_before": [1.0] * 3, "load_after": [1.0] * 3,
            "results": [{"case": "mlp", "where": "cpu, 1 thread", "steps": 100,
                         "baseline_ms": {"cpu": 1.25, "wall": 1.3}, "overhead_pct": over}]}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    block = _renderer().render(path)
    assert "| control: no Watch |" in block
    assert ("mlp, cpu, 1 thread, resolution: a second model without `Watch` measured +0.5% "
            "(-2.5..+1.0) against the baseline") in block
    del over["control: no Watch"]
    path.write_text(json.dumps(data))
    assert "resolution" not in _renderer().render(path)
