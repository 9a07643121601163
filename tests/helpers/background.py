"""Work the test session does ahead in a second process: Numba's probe kernels compiled into
their disk cache, then the quick reproductions that ``tests/test_reproduce.py`` pins.

The suite runs in one process and leaves the second core of a 2-core machine mostly idle,
while a fresh checkout compiles the kernels (about 55 s of one core, spread over the first
tests that record probes) and the nine quick runs take about 100 s. ``conftest.py`` calls
:func:`start` when the session starts (before collection): the background process loads or
compiles every kernel (:func:`depthlab.probes.accel.warm_up`, then the engine's,
:func:`depthlab.accel.warm_up`; the tests' own processes then load the cached machine code
instead of compiling it, as any later process does), then waits
for the plan that :func:`plan` writes once the tests are collected: the quick runs the
collected tests use, in the order they first need them. It computes each as the tests do
(``REGISTRY[name].run(quick=True)`` under one BLAS thread) and pickles it into the session's
folder (``DEPTHLAB_TESTS_BACKGROUND=0``: no background process, everything computed in the
tests' process). :func:`quick` returns a run: the pickled one when it is there, else it waits
for the one in progress (computing meanwhile another that nobody started), else computes it in
this process. Each run is computed once: whoever starts it first creates ``NAME.claim``
exclusively. Same code, same seeds, same thread count, so the values are those of an
in-process run (``Result.__eq__`` compares claims, checks, tables, notes and captions: equal
but for the ``seconds`` column of ioffe2015's summary; the figures travel as pickled
matplotlib Figures). The same for saxe2013 with its inits exchanged
(:func:`saxe_inits_exchanged`), which test_reproduce_more.py and test_report_round18.py read.

Under pytest-xdist (``make test`` runs ``pytest -n``) both cores run tests, so the controller
starts two processes that only compile the kernels, one dtype each (:func:`start`), and hands
the folder to the workers in ``DEPTHLAB_TESTS_BACKGROUND_DIR``; each worker waits for the
kernels after its collection (:func:`wait_warm`) and computes the quick runs it needs that no
other worker has claimed, pickling them for the others (a claim names its process: a run whose
claimant ended without it is computed by whoever needs it).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# The tests of tests/test_reproduce.py that call quick(), with the runs they use (None: the
# run named by the test's ``name`` parameter). A test missing here still works: its runs are
# computed in this process when it asks for them.
ALL = ("depth-ladder", "glorot2010", "he2015", "ioffe2015", "klambauer2017", "saxe2013",
       "schoenholz2017", "xu2016", "yang2019")
USERS: dict[str, tuple[str, ...] | None] = {
    "test_quick_claims_match_the_expected_outcomes": None,
    "test_readme_results_match_the_quick_runs": ALL,
    "test_claims_json_checks_json_and_report": ("xu2016",),
    "test_tables_of_the_new_and_corrected_experiments": (
        "schoenholz2017", "yang2019", "xu2016", "depth-ladder"),
    "test_glorot_table1_chooses_each_rate_on_validation": ("glorot2010",),
}
# the files whose tests USERS names: test_reproduce_quick_b.py holds some of the quick claims
MODULES = ("test_reproduce.py", "test_reproduce_quick_b.py")
# saxe2013 with its inits exchanged (saxe_inits_exchanged) and the tests that read it
EXCHANGED = "saxe2013-inits-exchanged"
EXCHANGED_USERS = {("test_reproduce_more.py",
                    "test_saxe_product_claims_fail_with_the_inits_swapped")}
EXCHANGED_FIXTURE = "saxe_exchanged"  # test_report_round18.py

FOLDER_ENV = "DEPTHLAB_TESTS_BACKGROUND_DIR"  # the folder, to pytest-xdist's workers
PIDS_ENV = "DEPTHLAB_TESTS_BACKGROUND_PIDS"  # the background processes, to the workers

_results: dict[str, Any] = {}
_folder: Path | None = None
_proc: subprocess.Popen | None = None
_others: list[subprocess.Popen] = []  # the second warm-up process (pytest-xdist)
_pids: list[int] = []
_plan: list[str] = []


def planned(items) -> list[str]:
    """The runs the collected ``items`` use, in the order they first need them."""
    names: list[str] = []
    for item in items:
        module = Path(str(item.fspath)).name
        func = getattr(item, "originalname", None) or item.name
        if (module, func) in EXCHANGED_USERS or EXCHANGED_FIXTURE in getattr(
                item, "fixturenames", ()):
            used: tuple[str, ...] = (EXCHANGED,)
        elif module in MODULES and func in USERS:
            used = USERS[func] or (item.callspec.params["name"],)
        else:
            continue
        names += [n for n in used if n not in names]
    return names


def start(workers: bool = False) -> None:
    """Start the background process (once per session): it warms the kernels up, then waits
    for :func:`plan`. ``workers``: the session's tests run in pytest-xdist worker processes
    (this is their controller). The folder is then handed to them in :data:`FOLDER_ENV`
    (they :func:`attach` to it), and the kernels are compiled by two processes at once, one
    dtype each, at normal priority: the workers wait for them after their collection
    (:func:`wait_warm`) instead of each compiling every kernel itself (about 80 s of CPU
    each on a fresh checkout)."""
    global _folder, _proc, _pids
    if _proc is not None or os.environ.get("DEPTHLAB_TESTS_BACKGROUND") == "0":
        return
    _folder = Path(tempfile.mkdtemp(prefix="depthlab-background-"))
    modes = ("float32", "float64") if workers else ("all",)
    procs = []
    for mode in modes:
        with open(_folder / f"worker-{mode}.log", "w") as log:
            procs.append(subprocess.Popen(
                [sys.executable, __file__, str(_folder), str(os.getpid()), mode],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log))
    _proc, _extra = procs[0], procs[1:]
    _pids = [p.pid for p in procs]
    _others.extend(_extra)
    if workers:
        os.environ[FOLDER_ENV] = str(_folder)
        os.environ[PIDS_ENV] = ",".join(map(str, _pids))


def attach() -> None:
    """In a pytest-xdist worker: use the folder and processes its controller started
    (:func:`start` with ``workers=True``); nothing where there are none."""
    global _folder, _pids
    folder = os.environ.get(FOLDER_ENV)
    if folder and Path(folder).is_dir():
        _folder = Path(folder)
        _pids = [int(v) for v in os.environ.get(PIDS_ENV, "").split(",") if v]


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True


def wait_warm(timeout: float = 600.0) -> None:
    """Wait until every warm-up process of :func:`start` has loaded or compiled its kernels
    (each writes ``warm-MODE.done``), has ended, or ``timeout`` seconds passed."""
    if _folder is None:
        return
    modes = ("float32", "float64")
    deadline = time.monotonic() + timeout
    for pid, mode in zip(_pids, modes):
        while not (_folder / f"warm-{mode}.done").exists() and _alive(pid):
            if time.monotonic() > deadline:
                return
            time.sleep(0.1)


def plan(items) -> None:
    """Hand the background process the runs the collected ``items`` use (none: it ends)."""
    global _plan
    _plan = planned(items)
    if _folder is not None:  # (every pytest-xdist worker writes the same plan)
        tmp = _folder / f"plan.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(_plan))
        os.replace(tmp, _folder / "plan.json")


def stop() -> None:
    """End the background process (if still running) and remove its folder."""
    global _folder, _proc
    if _proc is None:  # a pytest-xdist worker (attach): the controller owns the folder
        _folder = None
        return
    for p in [_proc, *_others]:
        if p.poll() is None:
            p.kill()
        p.wait()
    _others.clear()
    for name in (FOLDER_ENV, PIDS_ENV):
        os.environ.pop(name, None)
    if _folder is not None:
        shutil.rmtree(_folder, ignore_errors=True)
    _folder = _proc = None


def _claim(folder: Path, name: str) -> bool:
    """Whether this process may compute ``name`` (the first to ask gets it; its process id is
    written in ``NAME.claim``)."""
    try:
        fd = os.open(folder / f"{name}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    try:
        os.write(fd, str(os.getpid()).encode())
    finally:
        os.close(fd)
    return True


def _claimant_gone(folder: Path, name: str) -> bool:
    """Whether the process that claimed ``name`` has ended (without its ``NAME.pkl``)."""
    try:
        pid = (folder / f"{name}.claim").read_text()
    except OSError:
        return False
    return pid.isdigit() and not _alive(int(pid))  # empty: being written


def compute(name: str):
    """The quick run of ``name`` as the tests make it: one BLAS thread, its CPU seconds."""
    from threadpoolctl import threadpool_limits

    from depthlab.reproduce import experiments  # noqa: F401  (registers every experiment)
    from depthlab.reproduce.base import REGISTRY

    if name == EXCHANGED:
        return _saxe_exchanged()
    with threadpool_limits(1):
        t0 = time.process_time()
        res = REGISTRY[name].run(quick=True, data=None, progress=False)
        res.seconds = time.process_time() - t0
        res.quick = True
    return res


def _saxe_exchanged():
    import pytest
    from threadpoolctl import threadpool_limits

    from depthlab.reproduce import saxe2013

    with pytest.MonkeyPatch.context() as mp, threadpool_limits(1):
        mp.setattr(saxe2013, "INITS", {"orthogonal": "lecun_normal",
                                       "scaled Gaussian N(0, 1/n)": "orthogonal"})
        mp.setattr(saxe2013, "LR_C", (1.0,))
        return saxe2013.run(quick=True)


def saxe_inits_exchanged():
    """saxe2013 (quick, one BLAS thread) with its two inits exchanged (the 'orthogonal' nets
    drawn Gaussian, the 'scaled Gaussian' ones orthogonal) and one learning rate, computed
    once for the tests of test_reproduce_more.py and test_report_round18.py that read it."""
    return quick(EXCHANGED)


def quick(name: str):
    """The quick run of ``name``, computed once per test session."""
    if name in _results:
        return _results[name]
    if _folder is not None and name in _plan:
        while not (_folder / f"{name}.pkl").exists():
            if _claim(_folder, name):  # not started by the background process: compute here
                _results[name] = _share(name, compute(name))
                break
            if _claimant_gone(_folder, name):  # its process ended without it
                break
            # help meanwhile: the last planned run nobody has started
            spare = next((n for n in reversed(_plan) if n not in _results
                          and _claim(_folder, n)), None)
            if spare is not None:
                _results[spare] = _share(spare, compute(spare))
            else:
                time.sleep(0.05)
        else:
            with open(_folder / f"{name}.pkl", "rb") as f:
                _results[name] = pickle.load(f)
    if name not in _results:
        _results[name] = compute(name)
    return _results[name]


def _share(name: str, res):
    """``res`` pickled into the folder as ``NAME.pkl`` (another pytest-xdist worker that needs
    it waits for that file) and returned."""
    assert _folder is not None
    tmp = _folder / f"{name}.pkl.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        pickle.dump(res, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, _folder / f"{name}.pkl")
    return res


def _work(folder: Path, parent: int, mode: str = "all") -> None:
    """The background process: the kernels, then each planned run nobody claimed, pickled as
    ``NAME.pkl``. At the lowest CPU priority: it takes the core the tests leave idle, never
    time from the tests' own processes (timed subprocesses, schedulers, browsers).

    ``mode`` ``float32`` / ``float64`` (pytest-xdist, :func:`start`): the probe kernels of that
    dtype only (``float32`` the engine's as well), at normal priority while the workers wait,
    then ``warm-MODE.done``, and no planned runs: the workers keep both cores busy, so a
    process at the lowest priority would hardly run (a worker waited 12 minutes for a run it
    had claimed); each worker computes the runs it needs that nobody has claimed."""
    if mode == "all":
        _lowest_priority()
    try:
        from depthlab import accel as engine_accel
        from depthlab.probes import accel

        if mode == "all":
            accel.warm_up()
        else:
            accel.warm_up((mode,))
        if mode != "float64":
            engine_accel.warm_up()  # the engine's kernels (depthlab.kernels), loaded after 3 s
    except Exception as err:  # noqa: BLE001  (the tests' processes compile it then)
        print(f"kernels not warmed up: {err!r}", file=sys.stderr)
    if mode != "all":
        (folder / f"warm-{mode}.done").touch()
        return
    while not (folder / "plan.json").exists():
        if os.getppid() != parent:  # the test session is gone
            return
        time.sleep(0.1)
    for name in json.loads((folder / "plan.json").read_text()):
        if os.getppid() != parent:
            return
        if not _claim(folder, name):
            continue
        res = compute(name)
        tmp = folder / f"{name}.pkl.tmp"
        with open(tmp, "wb") as f:
            pickle.dump(res, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, folder / f"{name}.pkl")


def _lowest_priority() -> None:
    try:
        os.nice(19)
    except OSError:
        pass


if __name__ == "__main__":
    _work(Path(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:4])
