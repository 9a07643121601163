"""A doctor whose playground tab closes stops within a training step (it went on training
every prescription for nobody), and ``run_doctor``'s ``stop`` event ends it directly."""

from __future__ import annotations

import json
import threading
import time

import pytest

from depthlab.playground import app as playground_app
from depthlab.playground.doctor_task import DoctorStopped, run_doctor
from depthlab.playground.server import Background

websockets = pytest.importorskip("websockets.sync.client")

QUERY = {"model.depth": "12", "model.width": "32", "model.activation": "sigmoid",
         "model.init": "normal"}


def _doctor_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "depthlab-playground-doctor"]


def test_closing_the_tab_stops_its_doctor(monkeypatch):
    seen: list[threading.Event] = []
    steps_done: list[int] = []

    def watched(prep, setup, steps=None, stop=None):
        seen.append(stop)
        from depthlab.playground import doctor_task

        class Count(doctor_task._StopWhenSet):
            def after_update(self, trainer, step, loss):
                steps_done.append(step)
                super().after_update(trainer, step, loss)

        monkeypatch.setattr(doctor_task, "_StopWhenSet", Count)
        return run_doctor(prep, setup, 10**6, stop)  # an hour of training without a stop

    monkeypatch.setattr(playground_app, "run_doctor", watched)
    with Background() as bg:
        with websockets.connect(bg.url.replace("http://", "ws://") + "ws") as ws:
            ws.send(json.dumps({"cmd": "setup", "query": QUERY}))
            while json.loads(ws.recv(timeout=30))["type"] != "ready":
                pass
            ws.send(json.dumps({"cmd": "doctor"}))
            deadline = time.monotonic() + 30
            while not steps_done and time.monotonic() < deadline:
                time.sleep(0.05)
            assert steps_done, "the doctor did not start training"
        t0 = time.monotonic()  # the tab is closed
        while _doctor_threads() and time.monotonic() - t0 < 20:
            time.sleep(0.05)
        waited = time.monotonic() - t0
        assert not _doctor_threads(), "the doctor kept training after its tab closed"
        assert waited < 10, waited
        assert seen and seen[0] is not None and seen[0].is_set()
        assert len(steps_done) < 10**6


def test_run_doctor_stops_when_its_event_is_set():
    from depthlab.experiments.runner import prepare
    from depthlab.playground.setup import parse_setup, to_config

    setup = parse_setup(QUERY)
    prep = prepare(to_config(setup))
    stop = threading.Event()
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(DoctorStopped):
        run_doctor(prep, setup, 5000, stop)
    assert time.monotonic() - t0 < 10
