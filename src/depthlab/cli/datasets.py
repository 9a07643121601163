"""``depthlab datasets``: list the built-in data sets."""

from __future__ import annotations

import argparse
import json

from .common import Command, format_table


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON list")


def run(args: argparse.Namespace) -> int:
    from ..data import list_datasets
    from ..experiments.store import jsonable

    sets = list_datasets()
    if args.json:
        print(json.dumps(jsonable(sets), indent=1))
        return 0
    rows = [[d["name"], d["n_samples"], d["n_features"], d["n_classes"],
             "yes" if d["available"] else "no", d["source"]] for d in sets]
    print(format_table(rows, ["name", "samples", "features", "classes", "available",
                              "source"]))
    for d in sets:
        if not d["available"]:
            print(f"  {d['name']}: not available here; to get it: {d.get('how_to_get', '?')}")
    return 0


COMMAND = Command("datasets", "list the built-in data sets", add_arguments, run)
