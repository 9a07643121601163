"""``depthlab export [DIR]``: write the result tables as CSV or Parquet."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import Command, UserError, add_dir, choice_arg, folder_arg, open_store


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dir(p)
    p.add_argument("--format", choices=("csv", "parquet"), type=choice_arg, default="csv",
                   help="file format (default csv)")
    p.add_argument("--to", metavar="PATH", type=folder_arg,
                   help="output folder (default DIR/export; beside the file for a DIR.db)")


def run(args: argparse.Namespace) -> int:
    store = open_store(args.dir, create=False, readonly=True)
    # default: DIR/export, or beside the store file for a DIR naming one (results.db)
    target = Path(args.to) if args.to else store.path.parent / "export"
    if target.exists() and not target.is_dir():
        raise UserError(f"--to {str(target)!r} is a file; expected a folder")
    paths = store.export(target, args.format)
    store.close()
    for p in paths:
        print(p)
    return 0


COMMAND = Command("export", "write the result tables as CSV or Parquet", add_arguments, run)
