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
