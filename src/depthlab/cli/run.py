"""``depthlab run CONFIG``: train one config and store the run."""

from __future__ import annotations

import argparse
import sys

from ..progress import count as count_of
from ..progress import waiting
from .common import (
    Command,
    UserError,
    add_out,
    home_arg,
    metrics_line,
    open_store,
    progress_mode,
    say,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=home_arg,
                   help="TOML config file ([data], [model], [train], [probes]), "
                   "or the same sections as a .json object ('-': read from standard input)")
    add_out(p)
    p.add_argument("--name", type=_name, help="a name for the run (default: the config's name)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a stored run (or sweep point) with the same config; without "
                   "it such a run is refused before training")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    p.add_argument("--json", action="store_true",
                   help="print the run's record as JSON on stdout (messages go to stderr; "
                   "also for a run stored as interrupted)")
    p.epilog = ("exit status: 0 finished; 1 failed (stored as failed); 2 bad input (nothing "
                f"trained) or a store that cannot be written; {DIVERGED_STATUS} diverged "
                "(stored as diverged, no network saved); "
                "130 Ctrl-C, 143 SIGTERM (a run with whole epochs is stored as interrupted, "
                "without its network; before its first epoch ends, nothing is stored)")


def _name(text: str) -> str:
    """``--name``: not blank, as the config's ``name`` (``--name ""`` was ignored)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not accepted; accepted: a non-empty "
                                         "name (or omit --name for the config's name)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # bytes that are not UTF-8: the run trained, then its
        lone = ascii(text[e.start])[1:-1]  # name could not be stored (exit 1)
        raise argparse.ArgumentTypeError(f"{ascii(text)} is not accepted; accepted: a name in "
                                         f"UTF-8 text (it holds the undecodable {lone})") from None
    return text


def _stored_twin(store, cfg: dict, sizes: list[int], rid: str) -> tuple[str, str | None]:
    """(id, description) of the stored run that is this config's run with ``model.sizes``'
    ends written the other way (``"auto"`` or the data's numbers, as a stored config holds
    them: :func:`depthlab.experiments.config.same_run_ids`); ``(rid, None)`` when none is
    stored. The run keeps that id: refused without ``--overwrite``, replaced with it (it was
    trained and stored a second time under another id)."""
    from ..experiments.config import same_run_ids

    for twin in same_run_ids(cfg, list(sizes)):
        described = store.describe(twin)
        if described is not None:
            return twin, described
    return rid, None


def run(args: argparse.Namespace) -> int:
    from ..experiments import load_config, prepare, run_id, train
    from ..experiments.runner import check_history, check_memory

    cfg = load_config(args.config)
    ignored_sweep = cfg.pop("sweep", None) is not None
    check_memory(cfg)  # before the run id reads a data file whole for its fingerprint
    # a large data file's fingerprint, load and standardization: 30 s without a line
    with waiting("preparing the data", progress_mode(args)):
        rid = run_id(cfg)
        prep = prepare(cfg)
    check_history(prep.config, prep.data.sizes["train"])  # epochs = 10**12: refused, not OOM
    _warn_unreached_steps(prep.config, prep.data.sizes["train"])
    # before training: a bad, read-only or full --out and a stored run with this config
    # (whose record would be replaced) fail early
    store = open_store(args.out, create=True)
    store.check_writable()
    existing = store.describe(rid)
    if existing is None:  # stored under its ids with model.sizes' ends written the other way
        rid, existing = _stored_twin(store, cfg, prep.config["model"]["sizes"], rid)
    from ..inference import model_path, models_folder

    models = models_folder(args.out)  # where the trained network goes, checked before training
    if models.exists() and not models.is_dir():
        store.close()
        raise UserError(f"{str(models)!r} is a file; the trained network is saved in a folder "
                        "of that name (move the file, or use another --out)")
    network_file = model_path(args.out, rid)
    if network_file.is_dir():  # was: exit 1, "internal error", after training
        store.close()
        raise UserError(f"{str(network_file)!r} is a folder; the trained network is saved as "
                        "a file of that name (move the folder, or use another --out)")
    # a run interrupted before (its finished epochs kept) is replaced by this one: the same
    # command again trains the config to its end, as it did when nothing was kept
    resumes = existing is not None and _interrupted_only(store, rid)
    if existing is not None and not args.overwrite and not resumes:
        store.close()
        raise UserError(f"{existing} has this config and is stored in {str(store.path)!r}; "
                        "pass --overwrite to replace it, or change the config or --out")
    if ignored_sweep:  # once the checks passed: a refused run is one line, its error
        print("depthlab: note: the [sweep] table is ignored by `depthlab run` "
              "(use `depthlab sweep`)", file=sys.stderr)
    from ..experiments.runner import RunInterrupted

    try:
        rec = train(prep, run_id=rid, name=args.name or cfg.get("name"), kind="run",
                    progress=progress_mode(args), keep_interrupted=True)
    except RunInterrupted as stop:
        if _store_interrupted(store, stop.record, replace=args.overwrite or resumes) \
                and args.json:  # a script reading the record got empty input
            _print_json(stop.record, store, None)
        raise
    except BaseException:
        store.close()
        raise
    network, unsaved = _store_with_network(store, rec, prep, args,
                                           replace=args.overwrite or resumes)
    echo = say(args)
    echo(f"run {rec.id}: {rec.status} "
         f"{metrics_line(rec.metrics, rec.config['train'].get('monitor'))}")
    if unsaved is not None:  # a full disk here said only "cannot write '.../models/ID.npz'":
        # not that the run was stored, nor how to get its network
        raise UserError(f"run {rec.id} ({rec.status}) is stored in {str(store.path)!r}, "
                        f"but its network was not saved: {unsaved}; make room and run the "
                        "config again with --overwrite to save it") from unsaved
    if network is not None:
        echo(f"network: {network}")
    if args.json:
        _print_json(rec, store, network)
    if rec.divergence:
        print(f"depthlab: {rec.divergence.get('message', 'training diverged')}", file=sys.stderr)
    if rec.status == "failed":
        first = (rec.error or "unknown error").splitlines()[0]
        print(f"depthlab: run {rec.id} failed: {first}", file=sys.stderr)
    echo(f"results: {store.path}")
    return run_status(rec.status)


def _print_json(rec, store, network) -> None:
    """``--json``: the run's record (id, name, kind, status, config, metrics, divergence,
    error, seconds, store, network) as one JSON object on stdout."""
    import json

    from ..experiments.store import jsonable

    print(json.dumps(jsonable({
        "id": rec.id, "name": rec.name, "kind": rec.kind, "status": rec.status,
        "config": rec.config, "metrics": rec.metrics, "divergence": rec.divergence,
        "error": rec.error, "seconds": rec.seconds, "store": str(store.path),
        "network": None if network is None else str(network)}), indent=1))


INTERRUPT_LOCK_WAIT_S = 1.0
"""After an interrupt, ``depthlab run`` waits at most this long for another process's lock on
the store to keep the interrupted run (then it stops without)."""


def _stored_status(store, rid: str) -> str | None:
    """The status of the run stored as ``rid``; None when there is none (or it is
    unreadable)."""
    try:
        return store.run(rid)["status"]
    except Exception:  # noqa: BLE001 - none, or unreadable: not known
        return None


def _interrupted_only(store, rid: str) -> bool:
    """Whether the run stored as ``rid`` is an interrupted one (replaced without
    ``--overwrite``)."""
    return _stored_status(store, rid) == "interrupted"


def _store_interrupted(store, rec, *, replace: bool) -> bool:
    """Keep the record of a run interrupted after whole epochs (status ``interrupted``: its
    epochs, steps and probes so far; no network saved) and say so in one line; the interrupt
    then ends the command (130, 143). A store another process holds locked is waited for
    :data:`INTERRUPT_LOCK_WAIT_S` at most; a finished or diverged run of its id is never
    replaced by it (``--overwrite`` included), a failed one only with ``--overwrite``, an
    interrupted one always; a failed write or a second interrupt stores nothing
    (one transaction) and says so. Closes the store; returns whether the record is stored.
    An interrupted run stored nothing, its finished epochs lost with the rest."""
    import contextlib
    import dataclasses
    import time

    from ..experiments.store import RunExistsError, StoreError, _stopped_by_interrupt

    done, total = rec.metrics.get("epochs"), rec.config["train"].get("epochs")
    what = (f"run {rec.id} interrupted after {count_of(done, 'whole epoch', thousands=True)}"
            + (f" of {total:,}" if isinstance(total, int) else "")
            + f" ({count_of(rec.metrics.get('steps'), 'step', thousands=True)})")
    if rec.created is None:
        rec = dataclasses.replace(rec, created=time.time())
    # seconds for a long run probed often (906,000 probe rows: 3.5 s): said first, and a
    # second Ctrl-C stops the write (store.interruptible: SQLite's statements too)
    print(f"depthlab: {what}; storing it (Ctrl-C again to stop without)", file=sys.stderr,
          flush=True)
    reason = None
    try:
        with contextlib.suppress(Exception), store.lock_wait(INTERRUPT_LOCK_WAIT_S), \
                store.interruptible():
            try:
                kept = store.describe(rec.id)
                if kept is not None and _stored_status(store, rec.id) in ("finished",
                                                                          "diverged"):
                    # --overwrite of a finished run: the interrupted one does not replace it
                    # (nor is that run's network left as predict's answer for it)
                    reason = f"{kept} is kept"
                else:
                    store.add_run(rec, replace=kept is not None and (
                        replace or _interrupted_only(store, rec.id)))
            except RunExistsError:
                reason = "another process stored a run of this config meanwhile"
            except (StoreError, OSError) as e:
                reason = ("stopped by the second interrupt" if _stopped_by_interrupt(e)
                          else str(e).splitlines()[0] if str(e) else type(e).__name__)
        stored = reason is None and _stored(store, rec)
    finally:
        store.close()
    if stored:
        print(f"depthlab: run {rec.id} stored as interrupted in {str(store.path)!r} (no "
              "network saved; the same command trains it again from the start)",
              file=sys.stderr)
    else:
        print(f"depthlab: run {rec.id} not stored"
              + (f" ({reason})" if reason else ""), file=sys.stderr)
    return stored


def _store_with_network(store, rec, prep, args: argparse.Namespace, *,
                        replace: bool = False):
    """Store ``rec`` and save a finished run's network (for `depthlab predict RUN DATA`) as
    one: the network is written to its temporary first (seconds for a large one), the run
    stored, then the file renamed into place. A Ctrl-C while the network was written left the
    run stored without it (exit 130; the same command was then refused as stored, and predict
    had no network); now it leaves nothing stored, and a store write that fails or is
    interrupted leaves no network. Whether the run is in the store decides, whenever the
    interrupt comes. A network that cannot be written (a full disk) does not cost the run: it
    is stored, and the error comes back. Returns ``(network path or None, AtomicWriteError or
    None)``; closes the store."""
    import contextlib
    import dataclasses
    import time

    from ..atomic import AtomicWriteError
    from ..experiments.store import RunExistsError

    staged, unsaved, network, internal = None, None, None, None
    if rec.created is None:  # its row is told from the one it replaces (--overwrite)
        rec = dataclasses.replace(rec, created=time.time())
    try:
        if rec.status == "finished":
            from ..inference import stage_run_network

            try:
                staged = stage_run_network(prep, args.out, rec.id)
            except AtomicWriteError as exc:
                unsaved = exc
            except Exception as exc:  # noqa: BLE001 - an unforeseen error: raised once the
                internal = exc  # run is stored, as it was when the network came after it
        try:
            store.add_run(rec, replace=replace)
        except RunExistsError:  # stored by another process while this one trained: it said
            # only "run ID ... is already stored in ...", not that this run was not stored
            raise UserError(
                f"{store.describe(rec.id) or f'run {rec.id}'} was stored in "
                f"{str(store.path)!r} by another process while this run trained (it was not "
                f"stored when this run started); this run's results are not stored: pass "
                f"--overwrite to replace that run with this one") from None
    finally:
        try:
            if staged is not None:
                if _stored(store, rec):
                    network = staged.commit()
                else:
                    staged.discard()
            elif replace and _stored(store, rec):  # a run replaced by one that did not
                # finish: the old network was predict's answer for the new record
                from ..inference import model_path

                with contextlib.suppress(FileNotFoundError):
                    model_path(args.out, rec.id).unlink()
        finally:
            store.close()
    if internal is not None:
        raise internal
    return network, unsaved


def _stored(store, rec) -> bool:
    """Whether ``rec`` itself (not an earlier run of its id) is in ``store``."""
    try:
        return store.run(rec.id)["created"] == rec.created
    except Exception:  # noqa: BLE001 - not known to be stored: its network is not kept
        return False


def _warn_unreached_steps(cfg: dict, n_train: int) -> None:
    """One warning naming the ``probes.jacobian`` and ``probes.histogram_steps`` steps after
    the run's last step (``jacobian = [5000]`` in a run of 40 steps): they are never recorded,
    and the run said nothing about it."""
    import warnings

    from ..experiments.runner import planned_steps

    steps, per_epoch = planned_steps(cfg, n_train)
    probes = cfg.get("probes") or {}
    late = [f"probes.{key} step{'s' * (len(over) > 1)} {', '.join(map(str, over))}"
            for key in ("jacobian", "histogram_steps")
            if isinstance(probes.get(key), list | tuple)
            and (over := sorted({int(v) for v in probes[key]
                                 if isinstance(v, int) and not isinstance(v, bool)
                                 and v > steps}))]
    if late:
        warnings.warn(f"{' and '.join(late)} come{'s' * (len(late) == 1 and ',' not in late[0])}"
                      f" after the run's last step, {steps:,} ({per_epoch} step"
                      f"{'s' * (per_epoch != 1)} per epoch on "
                      f"{count_of(n_train, 'training row')}), and will not be recorded",
                      stacklevel=2)


DIVERGED_STATUS = 3
"""Exit status of ``depthlab run`` whose training diverged (its loss became NaN or infinite):
the run is stored as ``diverged`` but no network is saved, so a script must not go on as after
a finished run (it exited 0, as a finished run did). 1: the run failed (an exception, stored as
``failed``); 2: bad input, nothing trained."""


def run_status(status: str) -> int:
    """The exit status of ``depthlab run`` for a stored run's status: 0 finished, 1 failed,
    :data:`DIVERGED_STATUS` diverged."""
    return {"failed": 1, "diverged": DIVERGED_STATUS}.get(status, 0)


COMMAND = Command("run", "train one config and store the results", add_arguments, run)
