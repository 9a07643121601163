"""Round 49 (testspeed49): pytest's rewritten test modules cached ahead of collection
(helpers.assertcache), each file once among pytest-xdist's workers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _pytest.assertion import rewrite
from helpers import assertcache

ROOT = Path(__file__).resolve().parent.parent


def _pyc(fn: Path) -> Path:
    return rewrite.get_cache_dir(fn) / (fn.name[:-3] + rewrite.PYC_TAIL)


def test_the_shares_of_n_workers_hold_every_file_once():
    files = [Path(f"test_{i}.py") for i in range(11)]
    for n in (1, 2, 3, 4):
        shares = [assertcache.share(files, k, n) for k in range(n)]
        flat = [f for s in shares for f in s]
        assert sorted(flat) == sorted(files) and len(flat) == len(set(flat))
        assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_a_worker_outside_the_count_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"^worker 2 is not one of 0\.\.1$"):
        assertcache.share([], 2, 2)


def test_a_worker_slot_that_does_not_read_as_gw_k_of_n_warms_every_file():
    from types import SimpleNamespace as NS

    assert assertcache.worker_slot(NS()) == (0, 1)
    assert assertcache.worker_slot(NS(workerinput={"workerid": "gw1", "workercount": 3})) \
        == (1, 3)
    for info in ({}, {"workerid": "mine", "workercount": 2}, {"workerid": "gw0"},
                 {"workerid": "gw5", "workercount": 2}):
        assert assertcache.worker_slot(NS(workerinput=info)) == (0, 1)


def test_collected_files_are_the_test_modules_of_the_arguments(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "__pycache__").mkdir()
    for name in ("test_a.py", "b_test.py", "helper.py", "sub/test_c.py", ".hidden/test_d.py",
                 "__pycache__/test_e.py", "test_f.txt"):
        (tmp_path / name).write_text("x = 1\n")
    patterns = ["test_*.py", "*_test.py"]
    got = assertcache.collected_files(["."], tmp_path, patterns)
    assert got == sorted(tmp_path / n for n in ("test_a.py", "b_test.py", "sub/test_c.py"))
    # a file argument (with a node id) counts whatever its name; twice is once
    got = assertcache.collected_files(["helper.py::t", "helper.py", "missing.py"], tmp_path,
                                      patterns)
    assert got == [tmp_path / "helper.py"]


def test_a_warmed_file_holds_the_code_pytest_would_compile(tmp_path, request):
    fn = tmp_path / "test_warm49.py"
    fn.write_text("def test_x():\n    a = [1, 2]\n    assert a == [1, 3], 'no'\n")
    assert assertcache.warm_file(fn, request.config)
    cached = rewrite._read_pyc(fn, _pyc(fn))
    assert cached is not None
    fresh = rewrite._rewrite_test(fn, request.config)[1]
    assert cached == fresh and cached.co_filename == fresh.co_filename == str(fn)
    # the rewritten assert explains itself (pytest's rewrite, not a plain assert)
    ns: dict = {}
    exec(cached, ns)
    with pytest.raises(AssertionError, match=r"assert \[1, 2\] == \[1, 3\]"):
        ns["test_x"]()
    assert not assertcache.warm_file(fn, request.config)  # cached already
    fn.write_text("def test_x():\n    assert 1 == 2\n")  # a changed source is rewritten anew
    assert assertcache.warm_file(fn, request.config)


def test_a_file_that_does_not_parse_is_left_to_pytest_to_report(tmp_path, request):
    fn = tmp_path / "test_broken49.py"
    fn.write_text("def test_x(:\n    pass\n")
    assert not assertcache.warm_file(fn, request.config)
    assert not _pyc(fn).exists()


CONFTEST = """
import os
import pytest
from helpers import assertcache


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session):
    if session.config.pluginmanager.hasplugin("dsession"):
        return
    k, n = assertcache.worker_slot(session.config)
    warmed = assertcache.warm(session.config)
    with open(os.environ["WARM_LOG"], "a") as f:
        f.write(f"{k} {n} {warmed}\\n")
"""


def _run_pytest(folder: Path, log: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, WARM_LOG=str(log), PYTHONPATH=str(ROOT / "tests"),
               PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *args], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300)


def test_two_workers_rewrite_each_file_once_then_nothing(tmp_path):
    """Under ``-n 2`` the workers' shares cover the 6 files once (3 + 3); a second session
    finds them all cached (0 + 0) and its failing assert still explains itself."""
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    for i in range(6):
        (tmp_path / f"test_m{i}.py").write_text(textwrap.dedent(f"""
            def test_{i}():
                x = {i}
                assert x == {i if i else 7}
            """))
    log = tmp_path / "warm.log"
    first = _run_pytest(tmp_path, log, "-n", "2")
    assert "1 failed, 5 passed" in first.stdout, first.stdout + first.stderr
    assert "assert 0 == 7" in first.stdout  # rewritten (a plain assert says nothing)
    rows = sorted(log.read_text().split("\n")[:-1])
    assert rows == ["0 2 3", "1 2 3"]
    for i in range(6):
        assert _pyc(tmp_path / f"test_m{i}.py").exists()
    log.unlink()
    second = _run_pytest(tmp_path, log, "-n", "2")
    assert "1 failed, 5 passed" in second.stdout and "assert 0 == 7" in second.stdout
    assert sorted(log.read_text().split("\n")[:-1]) == ["0 2 0", "1 2 0"]
