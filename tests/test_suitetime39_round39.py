"""tests/conftest.py under pytest-xdist: each worker runs torch on one intra-op thread (two
workers with torch's default pool, a thread per core, oversubscribed a 2-core machine: two torch
test files took 184 s of CPU instead of 46 s), unless the environment sets a thread count."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

TESTS = Path(__file__).resolve().parent

WORKER_TESTS = '''
import torch


def test_torch_imported_by_the_test_module():
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)  # a command that sets its own count (depthlab doctor --threads)


def test_the_next_test_gets_one_thread_again():
    assert torch.get_num_threads() == 1
'''


def test_an_xdist_worker_runs_torch_on_one_thread(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("xdist")
    (tmp_path / "test_threads.py").write_text(WORKER_TESTS)
    env = {k: v for k, v in os.environ.items()
           if k not in ("DEPTHLAB_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                        "MKL_NUM_THREADS", "PYTEST_ADDOPTS")
           and not k.startswith("PYTEST_XDIST")}
    env.update(DEPTHLAB_TESTS_BACKGROUND="0", PYTHONPATH=str(TESTS))
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-n", "1",
                        "-p", "no:cacheprovider", "-q", "--rootdir", str(tmp_path),
                        "-c", os.devnull, str(tmp_path / "test_threads.py")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "2 passed" in r.stdout


def test_only_a_worker_without_a_users_thread_setting_is_limited():
    conftest = sys.modules["conftest"]  # tests/conftest.py
    worker, controller = SimpleNamespace(workerinput={}), SimpleNamespace()
    assert conftest.one_torch_thread_wanted(worker, {})
    assert conftest.one_torch_thread_wanted(worker, {"OMP_NUM_THREADS": ""})
    assert not conftest.one_torch_thread_wanted(controller, {})  # plain `pytest`: unchanged
    for var in ("DEPTHLAB_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS"):
        assert not conftest.one_torch_thread_wanted(worker, {var: "2"})
