"""``depthlab sweep CONFIG``: run a ``[sweep]`` grid in parallel, resumable."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import Command, UserError, add_out, check_jobs, progress_enabled, say


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="TOML config with a [sweep] table of \"section.key\" = [...]")
    add_out(p)
    p.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                   help="parallel processes (default 1)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    from ..experiments import ConfigError, read_toml, run_sweep, validate

    jobs = check_jobs(args.jobs)
    raw = read_toml(args.config)
    base_dir = Path(args.config).resolve().parent
    try:
        cfg = validate(raw, base_dir=base_dir)
        if not cfg.get("sweep"):
            raise UserError(f"{args.config}: no [sweep] table; add e.g. "
                            "\"model.activation\" = [\"tanh\", \"relu\"] (or use `depthlab run`)")
        res = run_sweep(raw, args.out, jobs=jobs, base_dir=base_dir, echo=say(args),
                        progress=progress_enabled(args))
    except ConfigError as e:
        raise ConfigError(f"{args.config}: {e}", e.key) from None
    say(args)(f"sweep {res.sweep}: {res.count('finished')} finished, "
              f"{res.count('diverged')} diverged, {res.count('failed')} failed, "
              f"{len(res.skipped)} skipped ({res.seconds:.1f}s); results: "
              f"{Path(args.out) / 'depthlab.db'}")
    return 1 if res.count("failed") else 0


COMMAND = Command("sweep", "run a [sweep] grid in parallel (resumable)", add_arguments, run)
