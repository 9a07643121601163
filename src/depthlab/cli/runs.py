"""``depthlab runs [DIR]``: list the runs of a results folder."""

from __future__ import annotations

import argparse
import json
import re

from .common import Command, UserError, add_dir, choice_arg, clip, format_table, open_store

ERROR_WIDTH = 100
"""The table's error column: at most this many characters of a run's first error line."""
NAME_WIDTH = 80
"""The table's name column: at most this many terminal columns of a run's name (``--json``
gives the whole name)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dir(p)
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per run")
    # reproductions are not stored runs: they write claims.json and report.html to their folder
    p.add_argument("--kind", choices=("run", "sweep-point", "doctor"), type=choice_arg,
                   help="only runs of this kind (default: all kinds)")
    p.add_argument("--sweep", metavar="ID",
                   help="only the points of this sweep (sw-..., or the start of its id: "
                   "those it ran and those it found stored; default: all runs)")
    p.add_argument("--status", choices=("finished", "diverged", "failed", "interrupted"),
                   type=choice_arg,
                   help="only runs with this status (default: any status)")


def run(args: argparse.Namespace) -> int:
    from ..experiments.store import runs_as_dicts

    store = open_store(args.dir, create=False, readonly=True)
    try:
        if args.sweep is not None:
            known = store.sweep_ids()  # a sweep stopped before its first point was stored too
            # a unique prefix names its sweep, as a run id's prefix names its run (predict)
            given = args.sweep.strip()
            # the hex part alone, as the sweep's points show it, names it too ('3477' for sw-3477..)
            matches = [k for k in known if k.lower().startswith(given.lower())
                       or k.lower().removeprefix("sw-").startswith(given.lower())] \
                if given else []
            if args.sweep not in known and len(matches) == 1:
                args.sweep = matches[0]
            elif args.sweep not in known and len(matches) > 1:
                raise UserError(f"--sweep {args.sweep!r} is the start of {len(matches)} sweeps "
                                f"of {args.dir} ({', '.join(matches[:10])}"
                                f"{', ...' if len(matches) > 10 else ''}); give more of its id")
            if args.sweep not in known:  # was: no way to list one sweep's points
                shown = ", ".join(known[:10]) + (f" (and {len(known) - 10} more)"
                                                 if len(known) > 10 else "")
                raise UserError(f"--sweep {args.sweep!r} is not a sweep of {args.dir}; "
                                f"its sweeps: {shown or 'none'}")
        runs = runs_as_dicts(store, sweep=args.sweep)
        planned = store.sweep_sizes().get(args.sweep) if args.sweep is not None else None
    finally:
        store.close()
    if args.kind:
        runs = [r for r in runs if r["kind"] == args.kind]
    if args.status:
        runs = [r for r in runs if r["status"] == args.status]
    if args.json:
        print(json.dumps(runs, indent=1))
        return 0
    if not runs:
        what = " ".join(x for x in (args.status, args.kind) if x)
        of = f" of sweep {args.sweep}" if args.sweep else ""
        # a sweep stopped before its first point was stored: say so, and how to finish it
        stopped = (f" (it stored none of its {planned} point(s): it was stopped before its "
                   "first point finished; run the same sweep again to compute them)"
                   if planned and not what else "")
        print(f"no {what + ' ' if what else ''}runs{of} in {args.dir}{stopped}")
        return 0
    metrics = _metric_columns(runs)
    rows = [[r["id"], r["kind"], r["status"], clip(r["name"] or "", NAME_WIDTH),
             *(r.get(k) for k in metrics), r.get("steps"), r.get("seconds")] for r in runs]
    header = ["id", "kind", "status", "name", *metrics, "steps", "seconds"]
    if any(r["error"] for r in runs):  # a failed run said 'failed' and dashes, no reason
        header.append("error")
        for row, r in zip(rows, runs):
            row.append(_first_line(r["error"]))
    print(format_table(rows, header))
    return 0


def _metric_columns(runs: list[dict]) -> list[str]:
    """The table's metric columns: train_loss, val_acc, test_acc; with regression runs (losses
    and no accuracy: mse/huber on real targets, whose table showed dashes but for the train
    loss) val_loss and test_loss too, instead of the accuracies when no run has one."""
    accs, losses = ("val_acc", "test_acc"), ("val_loss", "test_loss")
    regression = any(all(r.get(k) is None for k in accs) and any(r.get(k) is not None
                                                                  for k in losses)
                     for r in runs)
    if not regression:
        return ["train_loss", *accs]
    if any(r.get(k) is not None for r in runs for k in accs):
        return ["train_loss", *losses, *accs]
    return ["train_loss", *losses]


def _first_line(error: str | None, width: int = ERROR_WIDTH) -> str:
    """A run's error in a table cell: its first line, without the point's values that the
    name column shows ("sweep point (...): "), cut to ``width`` characters."""
    lines = (error or "").strip().splitlines()
    text = re.sub(r"^sweep point \(.*?\): ", "", lines[0]) if lines else ""
    return text if len(text) <= width else text[:width - 3] + "..."


COMMAND = Command("runs", "list the runs of a results folder", add_arguments, run)
