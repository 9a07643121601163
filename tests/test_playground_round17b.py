"""Round 17b of playground testing: a control change reloaded the data set.

Every setup change (lr 0.05 -> 0.01) started a session whose ``runner.prepare(config)`` loaded
the data set from scratch: 5-9 s on fashion-mnist, 4-7 s on mnist1d, a wait on each change.
``prepare(config, data=...)`` now takes a data set that ``load_data`` returned for the same
``[data]`` section, dtype and file content, and the server keeps the last one for the next
session.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from websockets.sync.client import connect

from depthlab.experiments import runner
from depthlab.experiments.runner import load_data, prepare
from depthlab.playground.server import Background
from depthlab.playground.setup import parse_setup, to_config

SMALL = {"model.depth": "2", "model.width": "4"}


@pytest.fixture()
def loads(monkeypatch):
    calls: list[dict] = []
    real = runner.load_data

    def counting(config):
        calls.append(config["data"])
        return real(config)

    monkeypatch.setattr(runner, "load_data", counting)
    return calls


def _receive_until(ws, predicate, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "no such message in time"
        m = json.loads(ws.recv(timeout=left))
        assert m["type"] != "error", m
        if predicate(m):
            return m


def _same_arrays(a, b) -> None:
    for split in ("train", "val", "test"):
        for v in ("x", "y"):
            x, y = getattr(a, f"{v}_{split}"), getattr(b, f"{v}_{split}")
            assert x.dtype == y.dtype and np.array_equal(x, y), (v, split)


def test_a_second_session_with_only_lr_changed_does_not_load_the_data_again(loads):
    with Background() as server, connect(server.url.replace("http://", "ws://") + "ws") as ws:
        ws.send(json.dumps({"cmd": "setup", "query": SMALL}))
        _receive_until(ws, lambda m: m["type"] == "ready")
        assert len(loads) == 1
        first = next(iter(server.app.state.registry.sessions.values())).prep.data
        # was: each of these loaded the data set again (fashion-mnist: 5-9 s each)
        for change in ({"train.lr": "0.01"}, {"model.depth": "3"}):
            ws.send(json.dumps({"cmd": "setup", "query": {**SMALL, **change}}))
            _receive_until(ws, lambda m: m["type"] == "ready")
            assert len(loads) == 1, loads
        session = next(iter(server.app.state.registry.sessions.values()))
        assert session.prep.config["model"]["depth"] == 3
        assert session.prep.data is first
        # the same arrays as a fresh load of that config
        _same_arrays(session.prep.data, load_data(session.prep.config))
        # a change of any [data] field loads afresh
        count = len(loads)
        # (and the model's dtype: the arrays are cast to it)
        for change in ({"data.options.noise": "0.3"}, {"model.dtype": "float64"},
                       {"data.name": "clusters"}):
            ws.send(json.dumps({"cmd": "setup", "query": {**SMALL, **change}}))
            _receive_until(ws, lambda m: m["type"] == "ready")
            count += 1
            assert len(loads) == count, (change, loads)
            prep = next(iter(server.app.state.registry.sessions.values())).prep
            _same_arrays(prep.data, load_data(prep.config))


def _csv(path, rows) -> None:
    path.write_text("a,b,label\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))


def test_prepare_reuses_a_data_set_only_for_the_same_data_dtype_and_file(tmp_path, loads):
    f = tmp_path / "d.csv"
    rng = np.random.default_rng(0)
    _csv(f, [(float(x), float(y), int(x > 0)) for x, y in rng.normal(size=(40, 2))])
    raw = {"data": {"path": str(f), "label": "label"}, "model": {"depth": 1, "width": 4}}
    first = prepare(raw)
    assert len(loads) == 1
    again = prepare({**raw, "train": {"lr": 0.01}}, data=first.data)
    assert len(loads) == 1 and again.data is first.data
    _same_arrays(again.data, load_data(first.config))
    count = len(loads)
    for other in ({"data": {**raw["data"], "seed": 1}},
                  {"data": {**raw["data"], "standardize": False}},
                  {"data": {**raw["data"], "test_fraction": 0.3}},
                  {"model": {**raw["model"], "dtype": "float64"}}):
        prep = prepare({**raw, **other}, data=first.data)
        count += 1
        assert len(loads) == count and prep.data is not first.data, other
        _same_arrays(prep.data, load_data(prep.config))  # the real one: not counted
    # the file edited (same path, same [data] section): its new content is loaded
    _csv(f, [(float(x), float(y), int(x > 0)) for x, y in rng.normal(size=(40, 2))])
    prep = prepare(raw, data=first.data)
    assert prep.data is not first.data
    _same_arrays(prep.data, load_data(prep.config))
    assert not np.array_equal(prep.data.x_train, first.data.x_train)
    # a Dataset not returned by load_data (built by hand, or a changed copy) is never taken
    from dataclasses import replace
    copy = replace(first.data, x_train=first.data.x_train * 0)
    prep = prepare(raw, data=copy)
    assert prep.data is not copy


def test_a_session_keeps_the_data_set_it_loaded_in_the_cache(loads):
    from depthlab.playground.session import DataCache, Session

    cache = DataCache()
    config = to_config(parse_setup(SMALL))
    s = Session(config, lambda m: None, data_cache=cache).start()
    deadline = time.monotonic() + 60
    while s.state == "loading" and time.monotonic() < deadline:
        time.sleep(0.05)
    s.stop(timeout=10)
    assert cache.get() is s.prep.data and len(loads) == 1


def test_the_kept_data_set_is_let_go_before_another_one_is_loaded(monkeypatch):
    from depthlab.playground.session import DataCache, Session

    cache, held = DataCache(), []
    real = runner.load_data

    def watching(config):  # what the cache holds while the next data set is read
        held.append(cache.get())
        return real(config)

    monkeypatch.setattr(runner, "load_data", watching)

    def run(query: dict) -> Session:
        s = Session(to_config(parse_setup(query)), lambda m: None, data_cache=cache).start()
        deadline = time.monotonic() + 60
        while s.state == "loading" and time.monotonic() < deadline:
            time.sleep(0.05)
        s.stop(timeout=10)
        assert s.prep is not None
        return s

    first = run(SMALL)
    assert run({**SMALL, "train.lr": "0.01"}).prep.data is first.prep.data
    # was: the spirals kept while the clusters were loaded (fashion-mnist then mnist1d: both)
    second = run({**SMALL, "data.name": "clusters"})
    assert held == [None, None], held
    assert cache.get() is second.prep.data
