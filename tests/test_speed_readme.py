"""The README's speed block is the one benchmarks/speed_readme.py renders from the committed
benchmark results (benchmarks/engine_speed.json, benchmarks/probe_overhead.json)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _renderer():
    spec = importlib.util.spec_from_file_location("speed_readme",
                                                  ROOT / "benchmarks" / "speed_readme.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_speed_block_matches_the_committed_results():
    engine = ROOT / "benchmarks" / "engine_speed.json"
    probes = ROOT / "benchmarks" / "probe_overhead.json"
    if not engine.exists():
        pytest.skip("no committed benchmark results")
    mod = _renderer()
    block = mod.render(engine, probes if probes.exists() else None)
    assert block in (ROOT / "README.md").read_text()
