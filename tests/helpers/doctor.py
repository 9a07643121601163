"""The playground's doctor task run on a stand-in diagnosis (no training)."""

from __future__ import annotations

from typing import Any


def playground_doctor(monkeypatch: Any, verifications: list) -> dict:
    """``doctor_task.run_doctor`` of a 2x8 playground setup, with ``doctor`` replaced by a
    diagnosis holding ``verifications`` only: what the page is sent."""
    from depthlab.experiments.runner import prepare
    from depthlab.playground import doctor_task
    from depthlab.playground.setup import parse_setup, to_config

    setup = parse_setup({"model.depth": "2", "model.width": "8"})
    prep = prepare(to_config(setup))

    class Fake:
        def __init__(self) -> None:
            self.verifications = verifications

        def to_dict(self) -> dict:
            return {"findings": [], "baseline": {},
                    "verifications": [v.to_dict() for v in verifications]}

        def __str__(self) -> str:
            return "fake"

    monkeypatch.setattr(doctor_task, "doctor", lambda *a, **k: Fake())
    return doctor_task.run_doctor(prep, setup, steps=5)
