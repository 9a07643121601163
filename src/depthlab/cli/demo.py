"""``depthlab demo``: the ``make demo`` job, four recipes on digits with a report."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from .common import Command, UserError, add_out, check_jobs, format_table, progress_enabled, say

DEMO_RECIPES: tuple[tuple[str, str, bool], ...] = (
    ("sigmoid", "normal", False),
    ("tanh", "glorot_uniform", False),
    ("relu", "he_normal", False),
    ("relu", "he_normal", True),
)


def demo_points(depth: int = 10, width: int = 64, epochs: int = 10) -> list:
    """The demo's sweep points: the four recipes of :data:`DEMO_RECIPES` at ``depth`` hidden
    layers on digits (SGD, lr 0.05, batch 32, probes every 10 steps)."""
    from ..experiments import SweepPoint, run_id, validate

    points = []
    for act, init, bn in DEMO_RECIPES:
        raw = {
            "name": "demo",
            "data": {"name": "digits", "seed": 0},
            "model": {"sizes": ["auto", "auto"], "depth": depth, "width": width,
                      "activation": act, "init": init, "batchnorm": bn},
            "train": {"loss": "cross_entropy", "optimizer": "sgd", "lr": 0.05,
                      "batch_size": 32, "epochs": epochs, "seed": 0},
            "probes": {"every": 10, "jacobian": True},
        }
        cfg = validate(raw)
        name = f"{act}+{init}" + ("+batchnorm" if bn else "")
        points.append(SweepPoint(run_id(cfg), name, {"recipe": name}, cfg))
    return points


def _init_gradient_ratio(store: Any, run_id: str) -> float | None:
    """std of dL/ds in the first hidden layer over that in the last, at the first probe step."""
    df = store.probes(run_id)
    g = df[(df["quantity"] == "grad_pre_std") & (df["layer"] >= 1)]
    if g.empty:
        return None
    g = g[g["step"] == g["step"].min()].set_index("layer")["value"]
    last = float(g.loc[g.index.max()])
    return float(g.loc[g.index.min()]) / last if last > 0 else None


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_out(p)
    p.add_argument("--jobs", "-j", type=int, default=min(2, os.cpu_count() or 1), metavar="N",
                   help="parallel processes (default: 2 or the number of cores)")
    p.add_argument("--epochs", type=int, default=10, help="epochs per recipe (default 10)")
    p.add_argument("--no-report", action="store_true", help="skip writing report.html")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    from ..experiments import Store, run_points
    from ..experiments.store import runs_as_dicts

    jobs = check_jobs(args.jobs)
    if args.epochs < 1:
        raise UserError(f"--epochs {args.epochs} is not accepted; accepted: an integer >= 1")
    points = demo_points(epochs=args.epochs)
    echo = say(args)
    echo("depthlab demo: digits, 10 hidden layers of 64 units, four recipes")
    run_points(points, args.out, sweep="demo", jobs=jobs, echo=echo,
               progress=progress_enabled(args))
    with Store(args.out) as store:
        runs = {r["id"]: r for r in runs_as_dicts(store)}
        ratios = {p.id: _init_gradient_ratio(store, p.id) for p in points if p.id in runs}
    rows = []
    for p in points:
        r = runs.get(p.id, {})
        rows.append([p.name, r.get("status", "?"), r.get("train_loss"), r.get("val_acc"),
                     r.get("test_acc"), ratios.get(p.id)])
    print(format_table(rows, ["recipe", "status", "train_loss", "val_acc", "test_acc",
                              "grad std layer 1 / layer 10 at init"]))
    print("(below 1: gradients shrink on their way back to the first layer; above 1: they grow)")
    if not args.no_report:
        from ..report import write_report

        print(f"report: {write_report(args.out)}")
    print(f"results: {Path(args.out) / 'depthlab.db'}")
    return 0


COMMAND = Command("demo", "a small sweep on digits with a report (the `make demo` job)",
                  add_arguments, run)
