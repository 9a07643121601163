"""``make test``'s file order under pytest-xdist (tests/helpers/schedule.py): the costliest file
is handed out first, not the file with the most tests (pytest-xdist's default reorder left a
few slow files, with few tests each, for the end, where one worker ran them alone)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from helpers import schedule


class _Node:
    """A pytest-xdist worker as the scheduler sees it: the test indexes it was sent (each
    batch's files also written, in order, to the shared ``handed``)."""

    def __init__(self, name: str, handed: list[str]) -> None:
        self.name = name
        self.gateway = SimpleNamespace(id=name)
        self.sent: list[int] = []
        self.handed = handed
        self.shutting_down = False

    def send_runtest_some(self, indexes: list[int]) -> None:
        self.sent.extend(indexes)
        for index in indexes:
            f = schedule.file_of(COLLECTION[index])
            if f not in self.handed:
                self.handed.append(f)

    def shutdown(self) -> None:
        self.shutting_down = True


def _config(workers: int = 2) -> SimpleNamespace:
    values = {"tx": [f"{workers}*popen"], "dist": "loadfile"}
    return SimpleNamespace(getvalue=values.__getitem__, cache=None,
                           option=SimpleNamespace(loadscopereorder=True))


# many cheap tests, few slow ones, one file nobody has timed (10 tests: 10 * PER_TEST)
COLLECTION = ([f"tests/test_many.py::test_{i}" for i in range(40)]
              + ["tests/test_slow.py::test_a", "tests/test_slow.py::test_b"]
              + [f"tests/test_new.py::test_{i}" for i in range(10)]
              + ["tests/test_tiny.py::test_a"])
COSTS = {"tests/test_many.py": 4.0, "tests/test_slow.py": 90.0, "tests/test_tiny.py": 0.1}


def _run(costs: dict[str, float]) -> tuple[list[str], dict[str, set[str]], list[int]]:
    """Two workers running the collection above (each finishing its tests at once): the files
    in the order they were handed out, the workers each file ran on, every index sent."""
    sched = schedule.CostFirstScheduling(_config(), tables=(costs,))
    handed: list[str] = []
    nodes = [_Node("gw0", handed), _Node("gw1", handed)]
    for node in nodes:
        sched.add_node(node)
        sched.add_node_collection(node, COLLECTION)
    sched.schedule()
    owners: dict[str, set[str]] = {}
    done: list[int] = []
    while any(node.sent for node in nodes):
        for node in nodes:
            batch, node.sent = node.sent, []
            for index in batch:
                owners.setdefault(schedule.file_of(COLLECTION[index]), set()).add(node.name)
                done.append(index)
                sched.mark_test_complete(node, index)
    return handed, owners, done


def test_the_costliest_file_is_handed_out_first():
    # pytest-xdist's loadfile handed out test_many.py (40 tests) first, test_slow.py second
    # to last; costs first: the 90 s file, then 4 s, then the untimed one (10 * 0.3 s)
    assert _run(COSTS)[0] == ["tests/test_slow.py", "tests/test_many.py", "tests/test_new.py",
                              "tests/test_tiny.py"]
    assert _run({})[0] == ["tests/test_many.py", "tests/test_new.py", "tests/test_slow.py",
                           "tests/test_tiny.py"]  # no costs at all: by number of tests


def test_every_test_is_sent_once_whole_files_to_one_worker():
    _, owners, done = _run(COSTS)
    assert sorted(done) == list(range(len(COLLECTION)))
    assert all(len(names) == 1 for names in owners.values()), owners
    assert len(owners) == 4


def test_file_cost_prefers_the_last_run_then_the_committed_table():
    last, committed = {"a.py": 5.0}, {"a.py": 50.0, "b.py": 7.0}
    assert schedule.file_cost("a.py", 3, last, committed) == 5.0
    assert schedule.file_cost("b.py", 3, last, committed) == 7.0
    assert schedule.file_cost("c.py", 3, last, committed) == pytest.approx(3 * schedule.PER_TEST)
    assert schedule.order({"x.py": {}, "y.py": {}}, {}) == ["x.py", "y.py"]  # ties: as given


def test_totals_sum_each_files_phases():
    t = schedule.totals([("tests/a.py::t[1]", 1.5), ("tests/a.py::t[1]", 0.25),
                         ("tests/b.py::C::t", 2.0), ("tests\\a.py::u", 0.25)])
    assert t == {"tests/a.py": 2.0, "tests/b.py": 2.0}


def test_load_costs_reads_only_numbers(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"a.py": 2, "b.py": "x", "c.py": True, "d.py": -1, "e.py": 0.5}))
    assert schedule.load_costs(p) == {"a.py": 2.0, "e.py": 0.5}
    p.write_text("[1, 2]")
    assert schedule.load_costs(p) == {}
    assert schedule.load_costs(tmp_path / "missing.json") == {}


def test_the_committed_costs_name_existing_test_files():
    costs = schedule.load_costs()
    root = schedule.COSTS_FILE.parents[2]
    assert costs, "filecosts.json is missing or empty"
    assert all((root / f).is_file() for f in costs), [f for f in costs
                                                       if not (root / f).is_file()]


class _Cache:
    def __init__(self) -> None:
        self.data: dict = {}

    def get(self, key, default):
        return self.data.get(key, default)

    def set(self, key, value) -> None:
        self.data[key] = json.loads(json.dumps(value))


def test_record_merges_into_the_cache_and_the_scheduler_reads_it():
    cache = _Cache()
    config = _config()
    config.cache = cache
    schedule.record(config, {"tests/test_tiny.py": 500.0})
    schedule.record(config, {"tests/test_many.py": 1.0})
    assert cache.data[schedule.CACHE_KEY] == {"tests/test_tiny.py": 500.0,
                                              "tests/test_many.py": 1.0}
    sched = schedule.CostFirstScheduling(config)
    assert sched.tables[0] == cache.data[schedule.CACHE_KEY]
    assert sched.tables[1] == schedule.load_costs()


def test_write_committed_copies_the_last_runs_costs_of_existing_files(tmp_path):
    (tmp_path / "tests").mkdir()
    for name in ("a.py", "b.py", "c.py"):
        (tmp_path / "tests" / name).write_text("")
    cached = tmp_path / ".pytest_cache" / "v" / schedule.CACHE_KEY
    cached.parent.mkdir(parents=True)
    cached.write_text(json.dumps({"tests/a.py": 12.345, "tests/gone.py": 3.0}))
    table = tmp_path / "costs.json"
    table.write_text(json.dumps({"tests/a.py": 1.0, "tests/b.py": 2.0, "tests/old.py": 9.0}))
    assert schedule.write_committed(tmp_path, table) == 2
    assert schedule.load_costs(table) == {"tests/a.py": 12.3, "tests/b.py": 2.0}
    with pytest.raises(SystemExit, match="make test"):
        schedule.write_committed(tmp_path / "tests", table)
