"""``depthlab init NAME``: write a commented starter config ``NAME.toml``; ``--example EX``
copies one of the examples shipped with the package instead (``--list`` names them), so they
are reachable after ``pip install depthlab``."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import unicodedata
from importlib import resources
from pathlib import Path

from .common import Command, UserError, check_file_folder, home_arg

STARTER = "starter.toml"
OTHER_FORMATS = frozenset((".json", ".yaml", ".yml", ".ini", ".cfg", ".conf", ".txt", ".py",
                           ".toml", ".ipynb", ".csv", ".npz", ".db"))
"""Suffixes of another kind of file: a NAME ending in one that is not the written file's
suffix is refused (``init foo.json`` wrote a TOML file named ``foo.json.toml``); any other
dot stays part of the name (``init run.v2`` writes ``run.v2.toml``)."""


def shipped_examples() -> list[str]:
    """Names of the examples in ``depthlab/examples`` (configs and the tour notebook)."""
    folder = resources.files("depthlab").joinpath("examples")
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".toml", ".ipynb")))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", type=home_arg,
                   help="file to create: NAME.toml (its name field is NAME); with --example, "
                   "NAME plus the example's suffix (default: the example's own file name); "
                   "'-': print it on stdout")
    p.add_argument("--example", metavar="EX",
                   help="copy a shipped example (see --list) instead of the starter config "
                   "(default: the starter config)")
    p.add_argument("--list", action="store_true", help="list the shipped examples and exit")
    p.add_argument("--force", action="store_true", help="replace an existing file")


def _pasteable(target: Path) -> str:
    """``target`` as a shell word that a command reads as a file: quoted when it has spaces or
    quotes, and ``./-x.toml`` for a name starting with ``-`` (pasted as is, ``depthlab run
    -x.toml`` read it as an option: "unrecognized arguments")."""
    text = str(target)
    if text.startswith("-"):
        text = f"./{text}"
    return shlex.quote(text)


def _next_step(source: str, target: Path) -> str:
    """The command to use the file next, ready to paste (a name with spaces is quoted)."""
    quoted = _pasteable(target)
    if source.endswith(".ipynb"):
        return f"open it with: jupyter lab {quoted}"
    if source == "demo.toml":
        return f"run it with: depthlab demo --config {quoted}"
    if "sweep" in source:
        return f"run it with: depthlab sweep {quoted} --out results"
    return f"train it with: depthlab run {quoted} --out results"


def run(args: argparse.Namespace) -> int:
    from ..atomic import atomic_write_text
    from ..demo import packaged_example

    if args.list:
        # a NAME, --example or --force beside --list was dropped silently (nothing written)
        given = [o for o, v in ((repr(args.name), args.name is not None),
                                ("--example", args.example is not None),
                                ("--force", args.force)) if v]
        if given:
            raise UserError(f"--list does not go with {given[0]}: it lists the shipped "
                            "examples and writes nothing; give either --list or NAME / "
                            "--example EX")
        for name in shipped_examples():
            print(name)
        return 0
    source = STARTER
    if args.example is not None:  # --example '' is refused, not read as the starter
        want = args.example.strip().lower().replace("-", "_")  # Digits-Run: as other names
        matches = [e for e in shipped_examples() if want in (e.lower(), Path(e).stem.lower())]
        if not matches:
            raise UserError(f"--example {args.example!r} is not shipped; expected one of: "
                            f"{', '.join(Path(e).stem for e in shipped_examples())}")
        source = matches[0]
    name = args.name
    if name is None and args.example is not None:  # `init --example digits_run`:
        # digits_run.toml; `--example starter` (listed by --list) too: it was "give NAME"
        name = Path(source).stem
    if not (name or "").strip():  # "" or "  " (not a file named "  .toml")
        raise UserError("give NAME: `depthlab init NAME` writes NAME.toml (or see --list)")
    if name == "-":  # stdout, as `depthlab run -` reads stdin: `depthlab init - | ... run -`
        text = packaged_example(source).read_text(encoding="utf-8")  # (it wrote "-.toml")
        sys.stdout.write(text.replace("THIS_FILE", "FILE.toml") if source == STARTER else text)
        return 0
    suffix = Path(source).suffix
    target = Path(name)
    # '.', '/', '..', 'results/': a folder, no file name (was exit 1; 'results/' wrote
    # results.toml beside the folder, not in it)
    if target.name in ("", ".", "..") or name.endswith(("/", os.sep)):
        raise UserError(f"NAME {name!r} names a folder, not a file; expected a file name "
                        "such as my_run (written as my_run.toml)")
    other = target.suffix.lower()
    if other != suffix and other in OTHER_FORMATS:  # `init foo.json` wrote foo.json.toml
        kind = ("a commented TOML config" if suffix == ".toml" else "a Jupyter notebook")
        bare = str(target.with_suffix(""))
        accepted = f"{bare!r} or {bare + suffix!r}"
        note = (" (a .json config is read by `depthlab run`, but the starter's comments "
                "need TOML)" if other == ".json" and suffix == ".toml" else "")
        raise UserError(f"NAME {name!r} ends in {target.suffix}, but this writes {kind} "
                        f"({suffix}); expected a name without a suffix or ending in "
                        f"{suffix}, such as {accepted}{note}")
    if other != suffix:  # "x.TOML" stays x.TOML; "run.v2" is run.v2.toml
        target = target.with_name(target.name + suffix)
    if target.is_dir():  # --force cannot replace a folder: "pass --force" then failed too
        raise UserError(f"{str(target)!r} is a folder; expected a file name for the "
                        f"{'notebook' if suffix == '.ipynb' else 'config'} (choose another NAME)")
    if target.exists() and not args.force:
        raise UserError(f"{str(target)!r} already exists; pass --force to replace it")
    check_file_folder(target, f"NAME {name!r}")
    text = packaged_example(source).read_text(encoding="utf-8")
    if source == STARTER:
        # a TOML basic string (JSON escapes are valid TOML): a name with \\ or " stays valid;
        # a function as the replacement, so backslashes are not read as regex escapes
        # DEL (U+007F) too, which JSON leaves as is and TOML refuses in a string
        name = json.dumps(target.stem).replace("\x7f", "\\u007f")
        text = re.sub(r'^name = "starter"', lambda _m: f"name = {name}", text, count=1,
                      flags=re.M)
        # the commands in its comments, ready to paste; a replacement that is kept in a
        # comment line: a file name with a newline could otherwise break out of it
        # (a line break) or make the file unreadable: TOML refuses control characters in a
        # comment (DEL, ESC: `init $'a\x7f'` wrote a config that `depthlab run` refused)
        text = text.replace("THIS_FILE", "".join(
            "?" if c != "\t" and unicodedata.category(c) == "Cc" else c
            for c in " ".join(_pasteable(target).splitlines())))
    atomic_write_text(target, text)
    print(f"wrote {target}; {_next_step(source, target)}")
    return 0


COMMAND = Command("init", "write a commented starter config NAME.toml (or a shipped example)",
                  add_arguments, run)
