"""``depthlab demo``: the ``make demo`` job, the recipes of ``examples/demo.toml`` on one deep
network, the first/last-layer gradient ratio of each explained, and a report."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .common import Command, UserError, add_out, check_jobs, path_arg, progress_enabled, say


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_out(p)
    p.add_argument("--config", metavar="TOML", default=None, type=path_arg,
                   help="demo config with [[recipes]] (default: the packaged examples/demo.toml)")
    p.add_argument("--jobs", "-j", type=int, default=min(2, os.cpu_count() or 1), metavar="N",
                   help="parallel processes (default: 2, or 1 on a one-core machine)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per recipe (default: the config's, 10 in the packaged one)")
    p.add_argument("--no-report", action="store_true", help="skip writing report.html")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    from ..demo import demo_recipes, network_phrase, ratio_header, summary_lines
    from ..experiments import Store, run_points
    from ..plot import gradient_ratio

    jobs = check_jobs(args.jobs)
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs {args.epochs} is not accepted; accepted: an integer >= 1")
    if args.config is not None and not Path(args.config).is_file():
        why = ("is a folder; expected a demo config file (a .toml with [[recipes]], e.g. "
               "`depthlab init my_demo --example demo`)" if Path(args.config).is_dir()
               else "no such file")
        raise UserError(f"--config {args.config!r}: {why}")
    recipes = demo_recipes(args.config, epochs=args.epochs)
    from ..experiments import ExperimentError
    from ..experiments.runner import check_memory

    for r in recipes:  # as `depthlab run`: refused before anything runs (it was stored as
        try:  # failed beside the recipes trained, the demo exiting 0 with "[failed]")
            check_memory(r.point.config)
        except ExperimentError as e:
            raise UserError(f"recipe {r.name!r}: {e}") from None
    _check_histories(recipes)
    echo = say(args)
    data = recipes[0].point.config["data"]  # a built-in name, or a file (was "None")
    echo(f"depthlab demo: {data.get('name') or Path(str(data.get('path'))).name}, "
         f"{network_phrase(recipes)}, {len(recipes)} recipes")
    run_points([r.point for r in recipes], args.out, sweep="demo", jobs=jobs, echo=echo,
               progress=progress_enabled(args))
    import pandas as pd

    rows, failures = [], []
    with Store(args.out) as store:
        runs = store.runs()
        for r in recipes:
            row = runs[runs["id"] == r.point.id]
            status = str(row["status"].iloc[0]) if len(row) else "missing"
            val = float(row["val_acc"].iloc[0]) if len(row) else float("nan")
            # a recipe not stored (the sweep stopped before it) has no probes: Store.probes
            # of an id it does not hold is a KeyError
            probes = (store.probes(r.point.id) if len(row) else
                      pd.DataFrame([], columns=["step", "layer", "quantity", "value"]))
            rows.append({"name": r.name, "meaning": r.meaning, "status": status,
                         "val_acc": val, "ratio": gradient_ratio(probes)})
            if status == "failed":  # "[failed]" alone, and exit 0, did not say why
                error = row["error"].iloc[0] if "error" in row else None
                first = (str(error).strip() if error else "") or "unknown error"
                failures.append(f"depthlab: recipe {r.name!r} failed: "
                                f"{first.splitlines()[0]}")
    print(f"\n{ratio_header(recipes)}")
    for line in summary_lines(rows):
        print(line)
    for line in failures:
        print(line, file=sys.stderr, flush=True)
    if not args.no_report:
        from ..report import write_report

        def progress(line: str) -> None:
            print(line, file=sys.stderr, flush=True)

        print(f"report: {write_report(args.out, echo=None if args.quiet else progress)}")
    from ..experiments.store import resolve_db_path

    print(f"results: {resolve_db_path(args.out)}")  # an --out DIR.db is the store itself
    return 1 if failures else 0  # as `run` and `sweep` with a failed run


def _check_histories(recipes: list) -> None:
    """Refuse, before anything runs, recipes whose training history cannot fit in memory
    (``steps x 48 + epochs x 500`` bytes at least, as ``depthlab run`` refuses it):
    ``--epochs 1000000000`` was four recipes stored as failed with that line, exit 1, a
    report of failures written. Each data set is loaded once for its training rows; one that
    cannot be loaded is left to the run, which stores the failure as before."""
    import json

    from ..experiments import ExperimentError
    from ..experiments.runner import check_history, load_data

    rows: dict[str, int | None] = {}
    for r in recipes:
        config = r.point.config
        key = json.dumps(config["data"], sort_keys=True, default=str)
        if key not in rows:
            try:
                rows[key] = int(load_data(config).sizes["train"])
            except Exception:  # noqa: BLE001 - the run reports a data set it cannot load
                rows[key] = None
        if rows[key] is None:
            continue
        try:
            check_history(config, rows[key])
        except ExperimentError as e:
            raise UserError(f"recipe {r.name!r}: {e}") from None


COMMAND = Command("demo", "one deep network, four recipes, the gradient ratio of each and a "
                  "report (the `make demo` job)", add_arguments, run)
