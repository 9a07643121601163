"""Round 27 of adversarial playground testing (a teacher preparing a lesson).

* a setting that changes nothing the session trains (batch norm's momentum or inference mode on
  a network without batch norm, the momentum of an optimizer that has none, a data option of
  another data set) restarted the network from step 0: a teacher who had trained 8,000 steps
  and then looked through the *more settings* lost them, for an identical network.
"""

from __future__ import annotations

import json

import pytest
from helpers.ws import receive_matching
from websockets.sync.client import connect

SMALL = {"model.depth": "2", "model.width": "4"}


def _stepped(ws, query: dict) -> None:
    ws.send(json.dumps({"cmd": "setup", "query": query}))
    receive_matching(ws, lambda m: m["type"] == "ready")
    for n in (1, 2, 3):
        ws.send(json.dumps({"cmd": "step"}))
        receive_matching(ws, lambda m, n=n: m["type"] == "update" and m["step"] == n)


@pytest.mark.parametrize("base, change", [
    ({}, {"model.bn_momentum": "0.5"}),
    ({}, {"model.bn_inference": "population"}),
    ({"train.optimizer": "adam"}, {"train.momentum": "0.5"}),
    ({"data.name": "clusters"}, {"data.options.noise": "0.7"}),
    ({}, {"train.epochs": "7"}),  # (kept before too)
])
def test_a_setting_without_effect_on_the_network_keeps_its_training(server, base, change):
    with connect(server.url.replace("http://", "ws://") + "ws") as ws:
        _stepped(ws, {**SMALL, **base})
        ws.send(json.dumps({"cmd": "setup", "query": {**SMALL, **base, **change}}))
        m = receive_matching(ws, lambda m: m["type"] in ("accepted", "error"))
        # was: accepted without "kept", a new network built and trained from step 0
        assert m["type"] == "accepted" and m.get("kept") is True, m
        key, value = next(iter(change.items()))
        assert m["query"][key] == value  # the export and the link carry the new value
        ws.send(json.dumps({"cmd": "step"}))
        assert receive_matching(ws, lambda m: m["type"] == "update" and m["step"] > 0)["step"] == 4


@pytest.mark.parametrize("change", [{"model.bn_momentum": "0.5"},
                                    {"model.bn_inference": "population"},
                                    {"model.width": "5"}])
def test_a_setting_that_changes_the_network_still_restarts_it(server, change):
    base = {**SMALL, "model.batchnorm": "true"}
    with connect(server.url.replace("http://", "ws://") + "ws") as ws:
        _stepped(ws, base)
        ws.send(json.dumps({"cmd": "setup", "query": {**base, **change}}))
        m = receive_matching(ws, lambda m: m["type"] in ("accepted", "error"))
        assert m["type"] == "accepted" and not m.get("kept"), m
        receive_matching(ws, lambda m: m["type"] == "ready")
        ws.send(json.dumps({"cmd": "step"}))
        assert receive_matching(ws, lambda m: m["type"] == "update" and m["step"] > 0)["step"] == 1
