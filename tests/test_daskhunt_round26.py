"""Round 26 (daskhunt26): sweeps of early-stopping configs on the local pool and on Dask."""

from __future__ import annotations

import tomllib

import pytest
from helpers.cli import assert_one_line_error, run_cli

from depthlab.experiments import Store
from depthlab.experiments.config import validate
from depthlab.experiments.runner import build_net, memory_need

WIDE = """\
[data]
name = "digits"
n = 200
[model]
sizes = ["auto", 2000, 2000, "auto"]
dtype = "{dtype}"
[train]
epochs = 1
optimizer = "sgd"
{patience}
"""


def _config(dtype: str, patience: bool) -> dict:
    text = WIDE.format(dtype=dtype, patience="patience = 1\nmonitor = \"train_loss\"" * patience)


    return validate(tomllib.loads(text))


def _copy_bytes(dtype: str) -> int:
    # early stopping's snapshot: one copy of every parameter array of the built network
    net = build_net(_config(dtype, False), [64, 2000, 2000, 10])
    return sum(p.value.nbytes for p in net.parameters())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_runs_memory_need_counts_early_stoppings_copy_of_the_best_weights(
        tmp_path, capsys, monkeypatch, dtype):
    # [train] patience keeps the best epoch's parameters (EarlyStopping's snapshot): a copy of
    # the network's values the memory check did not count (measured with tracemalloc: a
    # [64, 1500, 1500, 10] float64 run peaked 18.0 MiB higher with patience, its 18.0 MiB of
    # parameters), so a run (and a --jobs sweep's side-by-side check) was let through short
    without, with_ = (memory_need(_config(dtype, p))[0] for p in (False, True))
    copy = _copy_bytes(dtype)
    assert with_ - without == copy
    limit = without + copy // 2
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", str(limit))
    cfg = tmp_path / "wide.toml"
    cfg.write_text(WIDE.format(dtype=dtype, patience="patience = 1\nmonitor = \"train_loss\""))
    code, _, err = run_cli(capsys, "run", cfg, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "early stopping's copy of the best weights",
                          "model.sizes = [64, 2000, 2000, 10]", "nothing was allocated")


@pytest.mark.parametrize("where", [["--jobs", "2"], ["--cluster", "local:2"]])
def test_a_sweeps_side_by_side_memory_check_counts_early_stoppings_copy(
        tmp_path, capsys, monkeypatch, where):
    # two points at once, each with its best-weights copy, plus 100 MiB per worker
    without = memory_need(_config("float32", False))[0]
    copy = _copy_bytes("float32")
    limit = 2 * without + 2 * 100 * 2**20 + copy  # fits without the copies, not with both
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", str(limit))
    cfg = tmp_path / "wide.toml"
    cfg.write_text(WIDE.format(dtype="float32", patience="patience = 1\nmonitor = "
                               "\"train_loss\"") + '[sweep]\n"train.seed" = [0, 1]\n')
    code, _, err = run_cli(capsys, "sweep", cfg, "--out", tmp_path / "o", *where)
    assert_one_line_error(code, err, "2 points at once", "early stopping's copy of the best "
                          "weights", "at most 1 of these points fit at once")
    if (tmp_path / "o").exists():
        with Store(tmp_path / "o", readonly=True) as s:
            assert s.runs().empty
