"""``depthlab report [DIR]``: write DIR/report.html."""

from __future__ import annotations

import argparse

from .common import Command, add_dir, open_store


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dir(p)


def run(args: argparse.Namespace) -> int:
    open_store(args.dir, create=False).close()
    from ..report import write_report

    print(write_report(args.dir))
    return 0


COMMAND = Command("report", "write DIR/report.html", add_arguments, run)
