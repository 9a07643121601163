"""``depthlab init NAME``: write a commented starter config ``NAME.toml`` (shipped with the
package, so it works after ``pip install depthlab``)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from .common import Command, UserError

STARTER = "starter.toml"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="config to create: NAME.toml (its name field is NAME)")
    p.add_argument("--force", action="store_true", help="replace an existing file")


def run(args: argparse.Namespace) -> int:
    from ..atomic import atomic_write_text
    from ..demo import packaged_example

    target = Path(args.name)
    if target.suffix != ".toml":
        target = target.with_name(target.name + ".toml")
    if target.exists() and not args.force:
        raise UserError(f"{str(target)!r} already exists; pass --force to replace it")
    if not target.parent.is_dir():
        raise UserError(f"folder {str(target.parent)!r} does not exist")
    text = packaged_example(STARTER).read_text(encoding="utf-8")
    name = target.stem.replace('"', "")
    text = re.sub(r'^name = "starter"', f'name = "{name}"', text, count=1, flags=re.M)
    text = text.replace("THIS_FILE", str(target))
    atomic_write_text(target, text)
    print(f"wrote {target}; train it with: depthlab run {target} --out results")
    return 0


COMMAND = Command("init", "write a commented starter config NAME.toml", add_arguments, run)
