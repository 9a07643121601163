"""``depthlab doctor CONFIG``: diagnose a config's network on its data and store the diagnosis."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from . import torch_doctor
from .common import Command, UserError, add_out, home_arg, open_store, progress_mode


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default=None, type=home_arg,
                   help="TOML (or .json) config whose [model] and [data] are diagnosed "
                        "('-': read from standard input; or use --torch)")
    p.add_argument("--verify", action="store_true",
                   help="verify each prescription with a short training run")
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="training steps the doctor may use (default 200)")
    add_out(p)
    p.add_argument("--json", action="store_true", help="print the diagnosis as JSON")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress and no diagnosis text (errors and --json still print)")
    torch_doctor.add_arguments(p)


class RunProgress:
    """Progress of the doctor's training runs (the baseline, then one per prescription it
    verifies) as a :class:`~depthlab.training.trainer.Callback`: a bar per run on a terminal,
    a status line every few seconds into a log (:func:`depthlab.progress.make_progress`)."""

    def __init__(self, mode: bool | str) -> None:
        self.mode, self.runs, self.bar = mode, 0, None

    def on_train_begin(self, trainer: Any) -> None:
        from ..progress import make_progress

        self.close()
        self.runs += 1
        what = "baseline" if self.runs == 1 else f"check {self.runs - 1}"
        self.bar = make_progress(int(trainer.max_steps), self.mode, unit=f"doctor {what} step")

    def after_update(self, trainer: Any, step: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def on_train_end(self, trainer: Any, history: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def before_update(self, trainer: Any, step: int) -> None: ...

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None: ...


def _prepared_data(prep: Any) -> SimpleNamespace:
    """The data set with the targets in the form the config's loss takes, as ``depthlab run``
    trains on them (one-hot rows for mse/huber, 0/1 floats for binary cross-entropy): the
    data set's own integer labels made an mse doctor of a classification set fail. With
    ``data.standardize_targets`` the regression targets as given (the doctor standardizes
    them itself, its losses in the targets' units)."""
    ds = prep.data
    if prep.target_scale is not None:
        dt = prep.net.dtype
        return SimpleNamespace(x_train=ds.x_train, y_train=ds.y_train.astype(dt),
                               x_val=ds.x_val, y_val=ds.y_val.astype(dt))
    return SimpleNamespace(x_train=ds.x_train, y_train=prep.y_train, x_val=ds.x_val,
                           y_val=prep.y_val if prep.y_val is not None else ds.y_val)


def run(args: argparse.Namespace) -> int:
    import time

    from ..diagnosis import doctor
    from ..diagnosis.doctor import doctor_train_kwargs
    from ..experiments import RunRecord, load_config, prepare, run_id
    from ..experiments.config import config_name
    from ..experiments.store import jsonable

    if args.torch is not None:
        return torch_doctor.run(args)
    if args.config is None:
        raise UserError("doctor needs a CONFIG file or --torch FILE.py:FUNCTION --data NAME")
    torch_doctor.refuse_without_torch(args)
    cfg = load_config(args.config)
    ignored_sweep = cfg.pop("sweep", None) is not None
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps {args.steps} is not accepted; accepted: an integer >= 1")
    prep = prepare(cfg)
    kwargs: dict[str, Any] = {"verify": args.verify}
    if args.steps is not None:
        kwargs["steps"] = args.steps
    kwargs.update(doctor_train_kwargs(prep.config["train"]))
    if prep.target_scale is not None:  # [data] standardize_targets: the doctor's own option
        kwargs["standardize_targets"] = True
    # before the diagnosis: a bad, foreign, read-only or full --out fails now, not after it
    store = open_store(args.out, create=True)
    try:
        store.check_writable()
        if ignored_sweep and not args.quiet:  # as `depthlab run` says it (it was silent)
            print("depthlab: note: the [sweep] table is ignored by `depthlab doctor`, which "
                  "diagnoses the base config", file=sys.stderr)
        t0 = time.perf_counter()
        progress = RunProgress(progress_mode(args))
        try:
            diag = doctor(prep.net, _prepared_data(prep), callbacks=[progress], **kwargs)
        except (ValueError, TypeError) as e:
            raise UserError(f"doctor: {e}") from e
        finally:
            progress.close()  # an interrupted run's bar ends before the message
        seconds = time.perf_counter() - t0
        payload = diag.to_dict()
        rid = run_id(cfg, kind="doctor", extra={"verify": args.verify, "steps": args.steps})
        baseline = payload.get("baseline") if isinstance(payload.get("baseline"), dict) else {}
        metrics = {k: baseline[k] for k in ("train_loss", "train_acc", "val_loss", "val_acc",
                                            "steps") if k in baseline}
        metrics["seconds"] = seconds
        # a file name of bytes that are not UTF-8 (\udcff in Python) could not be stored
        # after the diagnosis (exit 1): such bytes are shown as U+FFFD
        file_name = os.fsencode(Path(config_name(args.config)).name).decode("utf-8",
                                                                            "replace")
        rec = RunRecord(id=rid, name=cfg.get("name") or f"doctor {file_name}",
                        kind="doctor", status="finished", config=prep.config, metrics=metrics,
                        seconds=seconds, findings=payload, probes=diag.probes)
        store.add_run(rec)
    finally:
        store.close()
    if args.json:  # --json prints even with --quiet, as on run, sweep and reproduce
        print(json.dumps(jsonable(payload), indent=1))
    elif not args.quiet:
        print(str(diag))
    if not args.quiet:
        print(f"diagnosis {rid} stored in {store.path}", file=sys.stderr if args.json else None)
    return 0


COMMAND = Command("doctor", "diagnose a config's network on its data", add_arguments, run)
