"""watchspeed51: the A/B mode of benchmarks/torch_probe_overhead.py (``--ab OLD_SRC``): two
src trees of depthlab in alternating fresh processes, each process's overheads over its own
baseline, pooled per tree; a bad ``--ab`` is one line naming the value (exit status 2)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "torch_probe_overhead.py"


def _module():
    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("tpo_ab_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ab_alternates_trees_passes_options_and_pools_rounds(tmp_path, monkeypatch, capsys):
    mod = _module()
    old = tmp_path / "oldsrc"
    (old / "depthlab").mkdir(parents=True)
    calls = []
    # per tree a fixed overhead: old +8% every 10, new +4% (CPU), wall the same plus 1
    pct = {str(old.resolve()): 8.0, str(ROOT / "src"): 4.0}

    def fake_run(cmd, env, check, stdout):
        calls.append((cmd, env["PYTHONPATH"]))
        out = cmd[cmd.index("--json") + 1]
        base = pct[env["PYTHONPATH"]]
        over = {"every 10": {"cpu": [base, base + 2.0], "wall": [base + 1.0, base + 3.0]}}
        with open(out, "w") as fh:
            json.dump({"results": [{"case": "mlp", "where": "cpu, 1 thread",
                                    "overhead_pct": over}]}, fh)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(mod.subprocess, "run", fake_run)
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--only", "cpu1", "--ab", str(old),
                                      "--cases", "mlp", "--ab-runs=2", "--json", "x.json"])
    mod.main()
    trees = [t for _, t in calls]
    assert trees == [str(old.resolve()), str(ROOT / "src"), str(ROOT / "src"),
                     str(old.resolve())]  # alternating order per pair
    for cmd, _ in calls:  # the other options passed on; --ab, --ab-runs, --json not
        args = cmd[2:]
        assert args[:4] == ["--only", "cpu1", "--cases", "mlp"]
        assert "--ab" not in args and not any(a.startswith("--ab") for a in args)
        assert args.count("--json") == 1 and "x.json" not in args
    text = capsys.readouterr().out
    line = next(ln for ln in text.splitlines() if ln.startswith("mlp") and "every 10" in ln)
    # medians over all rounds of both runs: old 9.0 (8, 10, 8, 10), new 5.0; new - old -4.0
    assert "old CPU   +9.0% (+8.0..+10.0)" in line
    assert "new CPU   +5.0% (+4.0..+6.0)" in line
    assert "new-old CPU -4.0 pt, wall -4.0 pt" in line


@pytest.mark.parametrize("args, words", [
    (["--ab", "/nonexistent/src"], "--ab must be a src folder holding the depthlab package, "
                                   "got '/nonexistent/src'"),
    (["--ab", str(ROOT / "src"), "--ab-runs", "0"], "--ab-runs must be a positive number of "
                                                    "runs, got 0"),
])
def test_bad_ab_arguments_are_one_line_exit_2(args, words):
    pytest.importorskip("torch")
    r = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert words in r.stderr
    assert "Traceback" not in r.stderr
