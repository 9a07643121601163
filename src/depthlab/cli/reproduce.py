"""``depthlab reproduce NAME [--quick] [--out DIR]``: run a classic experiment, check its claims."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import Command, UserError, folder_arg, progress_mode, say


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="experiment name, or 'all' (see --list)")
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    p.add_argument("--quick", action="store_true",
                   help="reduced version that still tests every claim (minutes for all)")
    p.add_argument("--out", default=None, type=folder_arg, metavar="DIR",
                   help="output folder (default: reproduce-out/NAME; with 'all', DIR/NAME for "
                   "each experiment); claims.json + report.html")
    p.add_argument("--data", default=None,
                   help="alternative data set where the experiment supports one "
                        "(e.g. ioffe2015 --data fashion-mnist; default: the experiment's own)")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when a claim does not hold")
    p.add_argument("--json", action="store_true",
                   help="print the claims as JSON on stdout (messages go to stderr); with "
                   "--list, the experiments as a JSON list")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress and no claims table (errors and --json still print)")


def run(args: argparse.Namespace) -> int:
    from ..reproduce import list_experiments

    _refuse_conflicts(args)
    exps = list_experiments()
    if (args.list or args.name is None) and args.json:  # the list as JSON, not the table
        import json

        print(json.dumps([{"name": e.name, "title": e.title, "paper": e.paper,
                           "summary": e.summary, "data": None if e.data is None else
                           list(e.data)} for e in exps], indent=1))
        return 0
    if args.list or args.name is None:
        width = max(len(e.name) for e in exps)
        for e in exps:
            print(f"{e.name.ljust(width)}  {e.title} — {e.paper}")
        if args.name is None and not args.list:
            print("\nrun one with: depthlab reproduce NAME [--quick] [--out DIR]")
        return 0
    names = [e.name for e in exps]
    given = args.name.strip().lower().replace("_", "-")  # XU2016, depth_ladder: as other names
    chosen = names if given == "all" else [given]
    if chosen[0] not in names:
        raise UserError(f"unknown experiment {args.name!r}{_hint(given, names)}; expected one "
                        f"of: {', '.join(names)} (or 'all')")
    if args.data is not None:
        _check_data(args.data, [e for e in exps if e.name in chosen])
    echo = say(args)
    titles = {e.name: e.title for e in exps}
    by_name = {e.name: e for e in exps}
    stages = None
    if not args.quiet:
        from ..progress import Stages

        # on stderr: "experiment 2/8: NAME — TITLE (overall ~ left)", each experiment's own
        # "stage k/N: ..." lines beneath
        stages = Stages(len(chosen), noun="experiment",
                        work=[experiment_seconds(n, args.quick) for n in chosen])
    made: list[Path] = []  # the folders this command created: removed again when left empty
    try:
        outs = {name: _out_folder(args.out, name, len(chosen) > 1, made) for name in chosen}
        return _run_all(args, chosen, outs, stages, titles, by_name, echo)
    except BaseException:  # a Ctrl-C or a refusal before an experiment wrote its files left
        _remove_empty(made)  # an empty reproduce-out/NAME (every NAME, with 'all') behind
        raise


def _remove_empty(made: list) -> None:
    """Remove the folders of ``made`` (created by this command, parents first) that are still
    empty, deepest first; a folder holding anything, or one that cannot be removed, stays."""
    for folder in reversed(made):
        try:
            folder.rmdir()  # only an empty folder
        except OSError:
            pass


def _run_all(args: argparse.Namespace, chosen: list, outs: dict, stages, titles: dict,
             by_name: dict, echo) -> int:
    """Run the ``chosen`` experiments into their folders ``outs``; the exit status."""
    from ..reproduce import run_experiment
    from ..reproduce.base import ExperimentDataError, takes_data

    results = []
    failed = 0
    for name in chosen:
        if stages is not None:
            stages.start(f"{name} — {titles[name]}" + (" (quick)" if args.quick else ""))
        out = outs[name]
        try:
            data = args.data if takes_data(by_name[name]) else None  # 'all': its own data
            result = run_experiment(name, quick=args.quick, out=out, data=data,
                                    progress=progress_mode(args), echo=echo)
        except ExperimentDataError as exc:
            raise UserError(str(exc)) from exc
        failed += sum(not c.holds for c in result.claims)
        if stages is not None:
            stages.finish()
        results.append({"experiment": name, "quick": bool(args.quick),
                        "seconds": result.seconds,
                        "all_hold": all(c.holds for c in result.claims),
                        "claims": [c.as_dict() for c in result.claims],
                        "checks": [c.as_dict() for c in result.checks],
                        "notes": list(result.notes), "claims_file": str(out / "claims.json"),
                        "report": str(out / "report.html")})
        echo(f"claims: {out / 'claims.json'}   report: {out / 'report.html'}\n")
    if failed:
        echo(f"{failed} claim(s) did not hold (see the notes in the report)")
    if args.json:
        import json

        from ..experiments.store import jsonable

        print(json.dumps(jsonable(results), indent=1))
    return 1 if failed and args.strict else 0


EXPERIMENT_SECONDS: dict[str, tuple[float, float]] = {
    "depth-ladder": (12, 168), "glorot2010": (18, 541), "he2015": (21, 216),
    "ioffe2015": (5, 68), "klambauer2017": (4, 147), "saxe2013": (5, 21),
    "schoenholz2017": (16, 581), "xu2016": (4, 26), "yang2019": (21, 52),
}
"""CPU seconds of each experiment (quick, full) as README's results table measured them: the
relative work of ``reproduce all``'s experiments, so its time left is the seconds per unit
measured on the experiments done times the work left (the mean per experiment was up to 2x
under and 6x over: before yang2019 quick, 11 s for 21 s; before xu2016 full, 498 s for 78 s).
A new experiment needs its entry (tests/test_newuser_round15.py checks the names; one without
counts as the median)."""


def experiment_seconds(name: str, quick: bool) -> float:
    """Experiment ``name``'s measured seconds (:data:`EXPERIMENT_SECONDS`); one registered
    without them (a user's own) counts as the median experiment."""
    import statistics

    col = 0 if quick else 1
    known = EXPERIMENT_SECONDS.get(name)
    return float(known[col] if known else statistics.median(
        v[col] for v in EXPERIMENT_SECONDS.values()))


def _refuse_conflicts(args: argparse.Namespace) -> None:
    """``--list`` beside an experiment NAME, and the options of a run (``--quick``, ``--out``,
    ``--data``, ``--strict``) with ``--list`` or without a NAME: one line, exit 2 (the list
    was printed with status 0 and the NAME or option silently dropped: `reproduce --quick`
    ran nothing)."""
    if args.list and args.name is not None:
        raise UserError(f"--list does not go with an experiment name ({args.name!r}); give "
                        "either --list (to list them) or NAME (to run one)")
    given = [o for o, v in (("--quick", args.quick), ("--out", args.out is not None),
                            ("--data", args.data is not None), ("--strict", args.strict)) if v]
    if given and (args.list or args.name is None):
        raise UserError(f"{given[0]} applies to running an experiment; expected an experiment "
                        "NAME (or 'all'; see `depthlab reproduce --list`)"
                        + ("" if not args.list else ", without --list"))


def _check_data(data: str, experiments: list) -> None:
    """``--data`` must name a built-in data set or an existing file or folder, and one that
    each chosen experiment accepts: refused now, in one line, not after the experiments
    before it have run. An experiment that takes no data set (``data=()``) refuses it when
    named alone; with ``all`` it runs on its own data (see :func:`run`)."""
    from ..data import DATASETS, find_builtin

    if not data.strip():  # Path("") is the current folder, and '' read as "no --data"
        raise UserError(f"--data {data!r} is empty; expected a built-in data set "
                        f"({', '.join(DATASETS)}) or a file")
    from ..reproduce.base import no_data_message, takes_data

    builtin = find_builtin(data)
    if len(experiments) == 1 and not takes_data(experiments[0]):
        raise UserError(no_data_message(experiments[0].name, data))
    unknown = (f"--data {data!r} is neither a built-in data set nor an existing file; expected "
               f"one of: {', '.join(DATASETS)}, or a path to a .npz, .csv or IDX file"
               if builtin is None and not Path(data).exists() else "")
    if unknown and len(experiments) > 1:  # before one experiment's list of the data sets it
        # takes: 'all --data nope' was "ioffe2015: data='nope' is not accepted" (one named
        # experiment keeps its own line, which lists what it takes)
        raise UserError(unknown)
    for e in experiments:  # worded as the experiment itself words it
        if not takes_data(e):  # with 'all': it runs on its own data, given no --data
            continue
        if e.data is not None and (builtin is None or builtin.name not in e.data):
            raise UserError(f"{e.name}: data={data!r} is not accepted; expected one of: "
                            f"{', '.join(e.data)}")
    if unknown:
        raise UserError(unknown)


def _out_folder(out: str | None, name: str, several: bool, made: list | None = None) -> Path:
    """Experiment ``name``'s output folder, created now: a bad ``--out`` (a file, no
    permission) fails before any experiment runs, not after its training. The folders it
    creates (the missing ones of the path, outermost first) are appended to ``made``."""
    folder = Path("reproduce-out") / name if out is None else (
        Path(out) / name if several else Path(out))
    missing = [p for p in (folder, *folder.parents) if not p.exists() and not p.is_symlink()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        # a file in the way: "File exists" / "Not a directory" named no file
        blocker = next((p for p in (folder, *folder.parents)
                        if p.exists() and not p.is_dir()), None)
        why = (f"{str(blocker)!r} is a file, not a folder" if blocker is not None
               else e.strerror or e)
        raise UserError(f"--out {str(folder)!r} cannot be used as a folder: {why}") from None
    if made is not None:
        made.extend(reversed(missing))
    return folder


COMMAND = Command("reproduce", "run a classic experiment and check its claims",
                  add_arguments, run)


def _hint(given: str, names: list[str]) -> str:
    """`` (did you mean 'he2015'?)``: the one experiment whose name starts with ``given`` (a
    name without its year: ``he``, ``glorot``), else the closest (``validators.closest_name``)."""
    from ..validators import closest_name

    starts = [n for n in names if given and n.startswith(given)]
    close = starts[0] if len(starts) == 1 else closest_name(given, names)
    return f" (did you mean {close!r}?)" if close else ""
