"""The ``depthlab`` command line.

Subcommands come from the :data:`COMMANDS` list of :class:`Command` entries
``(name, help, add_arguments, run)``; another module adds one with :func:`register_command`
(see ``EXTENSION_MODULES`` below) without editing this file's parser code.

Every user error exits with status 2 and one line on stderr starting with
``depthlab: error:``; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_OUT = "depthlab-out"


class UserError(Exception):
    """A problem the user must fix; printed as one line, exit status 2."""


@dataclass
class Command:
    """One subcommand: ``add_arguments(parser)`` declares its options, ``run(args) -> int``
    does the work and returns the exit status."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


COMMANDS: list[Command] = []


def register_command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser],
                                                                   None],
                     run: Callable[[argparse.Namespace], int | None], *,
                     replace: bool = False) -> Command:
    """Add subcommand ``name`` to ``depthlab`` (``replace=True`` swaps an existing one)."""
    for i, cmd in enumerate(COMMANDS):
        if cmd.name == name:
            if not replace:
                raise ValueError(f"command {name!r} is already registered")
            COMMANDS[i] = Command(name, help, add_arguments, run)
            return COMMANDS[i]
    cmd = Command(name, help, add_arguments, run)
    COMMANDS.append(cmd)
    return cmd


# ---------------------------------------------------------------------------------------------
# EXTENSION POINT: modules imported (if installed) before the parser is built; each calls
# ``depthlab.cli.register_command(...)`` at import time. `depthlab reproduce` goes here.
EXTENSION_MODULES: list[str] = ["depthlab.reproduce.cli"]
# ---------------------------------------------------------------------------------------------


def _load_extensions() -> None:
    for mod in EXTENSION_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name is not None and mod.startswith(e.name):
                continue  # not installed: nothing to register
            _extension_warning(mod, e)
        except Exception as e:  # noqa: BLE001 - a broken extension must not disable the CLI
            _extension_warning(mod, e)


def _extension_warning(mod: str, e: BaseException) -> None:
    if "--debug" in sys.argv:
        traceback.print_exception(e)
    sys.stderr.write(f"depthlab: warning: extension {mod!r} not loaded: "
                     f"{type(e).__name__}: {e}\n")


def _user_errors() -> tuple[type[BaseException], ...]:
    from .experiments import ConfigError, ExperimentError, StoreError

    return (UserError, ConfigError, ExperimentError, StoreError)


# -- helpers ----------------------------------------------------------------------------------


def _progress_enabled(args: argparse.Namespace) -> bool:
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def _say(args: argparse.Namespace) -> Callable[[str], None]:
    if getattr(args, "quiet", False):
        return lambda _line: None
    return lambda line: print(line, flush=True)


def _num(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) >= 1e4 or v != int(v) else f"{v:g}"
    return str(v)


def format_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """Plain left-aligned text table (numbers to 4 significant digits, missing as '-')."""
    cells = [[_num(c) if not isinstance(c, str) else c for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    out = [line.rstrip(), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(out)


def _open_store(path: str, create: bool):
    from .experiments import Store

    p = Path(path)
    if not create and p.exists() and p.is_file() and p.suffix not in (".db", ".sqlite",
                                                                       ".sqlite3"):
        raise UserError(f"{path!r} is a file, not a results folder")
    return Store(path, create=create)


def _metrics_line(metrics: dict[str, Any]) -> str:
    keys = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "steps")
    return " ".join(f"{k}={_num(metrics.get(k))}" for k in keys if metrics.get(k) is not None)


# -- run --------------------------------------------------------------------------------------


def _add_out(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"results folder (store DIR/depthlab.db; default ./{DEFAULT_OUT})")


def _args_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="TOML config file ([data], [model], [train], [probes])")
    _add_out(p)
    p.add_argument("--name", help="a name for the run (default: the config's name)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")


def cmd_run(args: argparse.Namespace) -> int:
    from .experiments import load_config, prepare, run_id, train

    cfg = load_config(args.config)
    if "sweep" in cfg:
        print("depthlab: note: the [sweep] table is ignored by `depthlab run` "
              "(use `depthlab sweep`)", file=sys.stderr)
        cfg.pop("sweep")
    rid = run_id(cfg)
    prep = prepare(cfg)
    store = _open_store(args.out, create=True)  # before training: a bad --out fails early
    rec = train(prep, run_id=rid, name=args.name or cfg.get("name"), kind="run",
                progress=_progress_enabled(args))
    store.add_run(rec)
    store.close()
    say = _say(args)
    say(f"run {rec.id}: {rec.status} {_metrics_line(rec.metrics)}")
    if rec.divergence:
        print(f"depthlab: {rec.divergence.get('message', 'training diverged')}", file=sys.stderr)
    if rec.status == "failed":
        first = (rec.error or "unknown error").splitlines()[0]
        print(f"depthlab: run {rec.id} failed: {first}", file=sys.stderr)
    say(f"results: {store.path}")
    return 1 if rec.status == "failed" else 0


# -- sweep ------------------------------------------------------------------------------------


def _args_sweep(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="TOML config with a [sweep] table of \"section.key\" = [...]")
    _add_out(p)
    p.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                   help="parallel processes (default 1)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")


def _check_jobs(jobs: int) -> int:
    if jobs < 1:
        raise UserError(f"--jobs {jobs} is not accepted; accepted: an integer >= 1")
    return jobs


def cmd_sweep(args: argparse.Namespace) -> int:
    from .experiments import read_toml, run_sweep, validate

    jobs = _check_jobs(args.jobs)
    raw = read_toml(args.config)
    base_dir = Path(args.config).resolve().parent
    try:
        cfg = validate(raw, base_dir=base_dir)
        if not cfg.get("sweep"):
            raise UserError(f"{args.config}: no [sweep] table; add e.g. "
                            "\"model.activation\" = [\"tanh\", \"relu\"] (or use `depthlab run`)")
        res = run_sweep(raw, args.out, jobs=jobs, base_dir=base_dir, echo=_say(args),
                        progress=_progress_enabled(args))
    except UserError:
        raise
    except Exception as e:
        from .experiments import ConfigError

        if isinstance(e, ConfigError):
            raise ConfigError(f"{args.config}: {e}", e.key) from None
        raise
    _say(args)(f"sweep {res.sweep}: {res.count('finished')} finished, "
               f"{res.count('diverged')} diverged, {res.count('failed')} failed, "
               f"{len(res.skipped)} skipped ({res.seconds:.1f}s); results: "
               f"{Path(args.out) / 'depthlab.db'}")
    return 1 if res.count("failed") else 0


# -- runs / export ----------------------------------------------------------------------------


def _args_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", nargs="?", default=DEFAULT_OUT,
                   help=f"results folder (default ./{DEFAULT_OUT})")


def _args_runs(p: argparse.ArgumentParser) -> None:
    _args_dir(p)
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per run")
    p.add_argument("--kind", choices=("run", "sweep-point", "doctor", "reproduce"),
                   help="only runs of this kind")


def _jsonable(v: Any) -> Any:
    from .experiments.store import _clean

    return _clean(v)


def runs_as_dicts(store) -> list[dict[str, Any]]:
    """One JSON-ready dict per run: the runs row plus the final metrics both under
    ``metrics`` and flattened at top level."""
    from .experiments.store import METRIC_KEYS

    df = store.runs()
    out = []
    for row in df.itertuples(index=False):
        d = {"id": row.id, "name": row.name, "kind": row.kind, "sweep": row.sweep,
             "status": row.status, "created": row.created, "seconds": row.seconds,
             "config": row.config, "metrics": row.metrics, "divergence": row.divergence,
             "error": row.error}
        for k, v in (row.metrics or {}).items():
            d.setdefault(k, v)
        for k in METRIC_KEYS:
            d.setdefault(k, None)
        out.append(_jsonable(d))
    return out


def cmd_runs(args: argparse.Namespace) -> int:
    store = _open_store(args.dir, create=False)
    runs = runs_as_dicts(store)
    store.close()
    if args.kind:
        runs = [r for r in runs if r["kind"] == args.kind]
    if args.json:
        print(json.dumps(runs, indent=1))
        return 0
    if not runs:
        print(f"no runs in {args.dir}")
        return 0
    rows = [[r["id"], r["kind"], r["status"], r["name"] or "", r.get("train_loss"),
             r.get("val_acc"), r.get("test_acc"), r.get("steps"), r.get("seconds")]
            for r in runs]
    print(format_table(rows, ["id", "kind", "status", "name", "train_loss", "val_acc",
                              "test_acc", "steps", "seconds"]))
    return 0


def _args_export(p: argparse.ArgumentParser) -> None:
    _args_dir(p)
    p.add_argument("--format", choices=("csv", "parquet"), default="csv",
                   help="file format (default csv)")
    p.add_argument("--to", metavar="PATH", help="output folder (default DIR/export)")


def cmd_export(args: argparse.Namespace) -> int:
    store = _open_store(args.dir, create=False)
    target = Path(args.to) if args.to else Path(args.dir) / "export"
    if target.exists() and not target.is_dir():
        raise UserError(f"--to {str(target)!r} is a file; expected a folder")
    paths = store.export(target, args.format)
    store.close()
    for p in paths:
        print(p)
    return 0


# -- report -----------------------------------------------------------------------------------


def _args_report(p: argparse.ArgumentParser) -> None:
    _args_dir(p)


def cmd_report(args: argparse.Namespace) -> int:
    _open_store(args.dir, create=False).close()
    from .report import write_report

    path = write_report(args.dir)
    print(path)
    return 0


# -- doctor -----------------------------------------------------------------------------------


def _args_doctor(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="TOML config whose [model] and [data] are diagnosed")
    p.add_argument("--verify", action="store_true",
                   help="verify each prescription with a short training run")
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="training steps the doctor may use (default: the doctor's)")
    _add_out(p)
    p.add_argument("--json", action="store_true", help="print the diagnosis as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")


def cmd_doctor(args: argparse.Namespace) -> int:
    import time

    from .experiments import RunRecord, load_config, prepare, run_id

    cfg = load_config(args.config)
    cfg.pop("sweep", None)
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps {args.steps} is not accepted; accepted: an integer >= 1")
    prep = prepare(cfg)
    from .diagnosis import doctor

    kwargs: dict[str, Any] = {"verify": args.verify}
    if args.steps is not None:
        kwargs["steps"] = args.steps
    kwargs.update(_doctor_train_kwargs(doctor, prep.config["train"]))
    t0 = time.perf_counter()
    try:
        diag = doctor(prep.net, prep.data, **kwargs)
    except (ValueError, TypeError) as e:
        raise UserError(f"doctor: {e}") from e
    seconds = time.perf_counter() - t0
    payload = diag.to_dict()
    rid = run_id(cfg, kind="doctor", extra={"verify": args.verify, "steps": args.steps})
    baseline = payload.get("baseline") if isinstance(payload.get("baseline"), dict) else {}
    metrics = {k: baseline[k] for k in ("train_loss", "train_acc", "val_loss", "val_acc",
                                        "steps") if k in baseline}
    metrics["seconds"] = seconds
    rec = RunRecord(id=rid, name=cfg.get("name") or f"doctor {Path(args.config).name}",
                    kind="doctor", status="finished", config=prep.config, metrics=metrics,
                    seconds=seconds, findings=payload, probes=diag.probes)
    store = _open_store(args.out, create=True)
    store.add_run(rec)
    store.close()
    if not args.quiet:
        print(json.dumps(_jsonable(payload), indent=1) if args.json else str(diag))
        print(f"diagnosis {rid} stored in {store.path}")
    return 0


def _doctor_train_kwargs(doctor: Callable, train: dict[str, Any]) -> dict[str, Any]:
    """The config's training settings that ``doctor`` accepts as keyword arguments."""
    import inspect

    try:
        params = inspect.signature(doctor).parameters
    except (TypeError, ValueError):
        return {}
    wanted = {"loss": train["loss"], "optimizer": train["optimizer"], "lr": train["lr"],
              "batch_size": train["batch_size"], "seed": train["seed"],
              "optimizer_kwargs": train["optimizer_kwargs"]}
    if not isinstance(train["batch_size"], int):  # "full": the doctor's default batches
        wanted.pop("batch_size")
    return {k: v for k, v in wanted.items() if k in params}


# -- datasets ---------------------------------------------------------------------------------


def _args_datasets(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON list")


def cmd_datasets(args: argparse.Namespace) -> int:
    from .data import list_datasets

    sets = list_datasets()
    if args.json:
        print(json.dumps(_jsonable(sets), indent=1))
        return 0
    rows = [[d["name"], d["n_samples"], d["n_features"], d["n_classes"],
             "yes" if d["available"] else "no", d["source"]] for d in sets]
    print(format_table(rows, ["name", "samples", "features", "classes", "available",
                              "source"]))
    missing = [d for d in sets if not d["available"]]
    for d in missing:
        print(f"  {d['name']}: not available here; to get it: {d.get('how_to_get', '?')}")
    return 0


# -- demo -------------------------------------------------------------------------------------

DEMO_RECIPES: tuple[tuple[str, str, bool], ...] = (
    ("sigmoid", "normal", False),
    ("tanh", "glorot_uniform", False),
    ("relu", "he_normal", False),
    ("relu", "he_normal", True),
)


def demo_points(depth: int = 10, width: int = 64, epochs: int = 10) -> list:
    """The demo's sweep points: the four recipes of :data:`DEMO_RECIPES` at ``depth`` hidden
    layers on digits (SGD, lr 0.05, batch 32, probes every 10 steps)."""
    from .experiments import SweepPoint, run_id, validate

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


def _args_demo(p: argparse.ArgumentParser) -> None:
    _add_out(p)
    p.add_argument("--jobs", "-j", type=int, default=min(2, os.cpu_count() or 1), metavar="N",
                   help="parallel processes (default: 2 or the number of cores)")
    p.add_argument("--epochs", type=int, default=10, help="epochs per recipe (default 10)")
    p.add_argument("--no-report", action="store_true", help="skip writing report.html")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")


def cmd_demo(args: argparse.Namespace) -> int:
    from .experiments import Store, run_points

    jobs = _check_jobs(args.jobs)
    if args.epochs < 1:
        raise UserError(f"--epochs {args.epochs} is not accepted; accepted: an integer >= 1")
    points = demo_points(epochs=args.epochs)
    say = _say(args)
    say("depthlab demo: digits, 10 hidden layers of 64 units, four recipes")
    run_points(points, args.out, sweep="demo", jobs=jobs, echo=say,
               progress=_progress_enabled(args))
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
        from .report import write_report

        print(f"report: {write_report(args.out)}")
    print(f"results: {Path(args.out) / 'depthlab.db'}")
    return 0


# -- the built-in commands --------------------------------------------------------------------

register_command("run", "train one config and store the results", _args_run, cmd_run)
register_command("sweep", "run a [sweep] grid in parallel (resumable)", _args_sweep, cmd_sweep)
register_command("runs", "list the runs of a results folder", _args_runs, cmd_runs)
register_command("export", "write the result tables as CSV or Parquet", _args_export,
                 cmd_export)
register_command("report", "write DIR/report.html", _args_report, cmd_report)
register_command("doctor", "diagnose a config's network on its data", _args_doctor,
                 cmd_doctor)
register_command("datasets", "list the built-in data sets", _args_datasets, cmd_datasets)
register_command("demo", "a small sweep on digits with a report (the `make demo` job)",
                 _args_demo, cmd_demo)


# -- parser and main --------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``depthlab: error: ...`` and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"depthlab: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The ``depthlab`` parser with one subparser per entry of :data:`COMMANDS`."""
    _load_extensions()
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks")
    common.add_argument("--threads", type=int, default=None, metavar="N",
                        help="BLAS threads of this process (default: the library's; 1 is "
                        "often fastest for small networks on a busy machine)")
    parser = _Parser(prog="depthlab", description="Train deep networks and watch gradients "
                     "vanish or explode: runs, sweeps, probes, reports.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"depthlab {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help, parents=[common])
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("depthlab")
    except Exception:  # noqa: BLE001
        return "unknown"


@contextlib.contextmanager
def _thread_limit(n: int | None) -> Iterator[None]:
    """Limit BLAS/OpenMP threads to ``n`` (threadpoolctl) for the command's duration."""
    if n is None:
        yield
        return
    if n < 1:
        raise UserError(f"--threads {n} is not accepted; accepted: an integer >= 1")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)  # inherited by sweep worker processes
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=n):
        yield


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    if isinstance(e, KeyError) and e.args:
        text = str(e.args[0])
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``depthlab`` command; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    if getattr(args, "_run", None) is None:
        parser.print_help(sys.stderr)
        sys.stderr.write("depthlab: error: give a command (see `depthlab --help`)\n")
        return 2
    debug = bool(getattr(args, "debug", False))
    user_errors = _user_errors()
    try:
        with _thread_limit(getattr(args, "threads", None)):
            return int(args._run(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("depthlab: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:
        if debug:
            traceback.print_exc()
        if isinstance(e, user_errors):
            sys.stderr.write(f"depthlab: error: {_one_line(e)}\n")
            return 2
        if not debug:
            sys.stderr.write(f"depthlab: error: {type(e).__name__}: {_one_line(e)} "
                             "(internal error; run with --debug for the traceback)\n")
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
