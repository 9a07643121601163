"""``depthlab report [DIR]``: write DIR/report.html, saying on stderr what it is doing."""

from __future__ import annotations

import argparse
import sys

from .common import Command, add_dir, open_store


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dir(p)
    p.add_argument("--quiet", "-q", action="store_true",
                   help="print only the report's path (no progress lines on stderr)")


def run(args: argparse.Namespace) -> int:
    open_store(args.dir, create=False, readonly=True).close()
    from ..report import write_report

    def echo(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    print(write_report(args.dir, echo=None if args.quiet else echo))
    return 0


COMMAND = Command("report", "write DIR/report.html", add_arguments, run)
