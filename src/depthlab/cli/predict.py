"""``depthlab predict RUN_OR_FILE DATA``: outputs of a saved network on new inputs.

``RUN_OR_FILE`` is a ``.npz`` written by ``dl.save`` or the id (or a unique prefix) of a run
whose network ``depthlab run`` saved in ``DIR/models/<id>.npz``. ``DATA`` is a ``.npy`` file
(rows of features; images ``(N, H, W)`` are flattened), a ``.csv`` or ``.csv.gz`` file
(numeric features, True/False read as 1/0; a header row is skipped; the run's own training
CSV loses its label column, which then scores the predictions), a ``.npz`` with an ``x`` (or
``X``) array or a single array (a ``y`` beside ``x``, class numbers or one-hot rows, scores
the predictions), or the name of a built-in data set (its test split, split as
the run split it; the accuracy goes to stderr). Inputs are standardized as in training when
the run standardized them. Output (stdout, or ``--to FILE``; ``--to -`` is stdout): CSV with
the predicted class (classification) and the network's raw outputs, each number written
exactly (``repr``), or ``--json``. A regression run (real targets) predicts values: no class
column, and a CSV holding the run's target columns (or a .npz's ``y`` beside its ``x``)
scores them by the mean squared error (stderr) instead of an accuracy. An existing ``--to
FILE`` is replaced only with ``--force`` (written atomically: a failed write keeps its
previous content). A run trained on a CSV without a header row has its label column(s)
dropped (and scored) from a headerless CSV of the training file's width. An IDX images file
(``t10k-images-idx3-ubyte[.gz]``) is scored by its labels file when one lies beside it
(``images`` -> ``labels``, ``idx3`` -> ``idx1``, as training finds it; unscored without); an IDX
folder is predicted on its test images (``t10k-*``/``test-*``), else its training images, the
file read named on stderr; an IDX labels file is refused naming its images file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..atomic import expand_home
from ..progress import count as count_of
from .common import DEFAULT_OUT, Command, UserError, check_file_folder, one_line, path_arg


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="RUN_OR_FILE", type=path_arg,
                   help="a .npz saved by dl.save, or a run id (prefix) in --dir")
    p.add_argument("data", metavar="DATA",
                   help="inputs: .npy, .npz (key x or X, or its only array), .csv[.gz], an IDX "
                   "images file[.gz] (scored by its labels file beside it), an IDX folder (its "
                   "t10k-* test images, else its train-* images), or a "
                   "built-in data set's name (its test split; the accuracy goes to stderr)")
    p.add_argument("--dir", default=DEFAULT_OUT, metavar="DIR",
                   help=f"results folder holding the runs (default ./{DEFAULT_OUT})")
    p.add_argument("--to", metavar="FILE", type=path_arg,
                   help="write the CSV (or the --json output) here instead of stdout "
                   "('-': stdout; default: stdout)")
    p.add_argument("--json", action="store_true",
                   help="print JSON: {\"outputs\": [[...]], \"classes\": [...]}")
    p.add_argument("--force", action="store_true",
                   help="replace an existing --to FILE (without it such a file is refused, "
                   "before any prediction; refused without --to FILE)")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "force", False) and (not args.to or args.to == "-"):
        raise UserError("--force replaces an existing --to FILE, but the predictions go to "
                        "stdout (no --to FILE); accepted: --force with --to FILE, or no --force")
    try:
        model, x, labels, labelled, out, classes, targets = _predict(args)
    except (ValueError, TypeError, OSError) as exc:  # an OSError as every command words it
        raise UserError(one_line(exc)) from None  # (was "[Errno 36] File name too long: ...")
    if args.json:
        payload = {"model": str(model), "outputs": out.tolist(),
                   "classes": None if classes is None else classes.tolist()}
        text = json.dumps(payload) + "\n"
    else:
        head = (["class"] if classes is not None else []) + [f"output_{j}"
                                                             for j in range(out.shape[1])]
        lines = [",".join(head)]
        for i in range(out.shape[0]):
            cells = ([str(int(classes[i]))] if classes is not None else []) + [
                repr(float(v)) for v in out[i]]
            lines.append(",".join(cells))
        text = "\n".join(lines) + "\n"
    if args.to and args.to != "-":  # the CSV or, with --json, the JSON
        from ..atomic import atomic_write_text

        atomic_write_text(Path(args.to), text)
        print(f"predictions for {count_of(out.shape[0], 'row')}: {args.to}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if targets is not None and targets.shape == out.shape:
        import numpy as np

        scored = np.isfinite(targets).all(axis=1)
        err = ((out[scored].astype(np.float64) - targets[scored]) ** 2).mean()
        rows = (count_of(len(targets), "row") if scored.all()
                else f"{int(scored.sum())} of {count_of(len(targets), 'row')} with targets")
        print(f"{args.data}: {rows}, mean squared error {err:.6g}", file=sys.stderr)
    if labels is not None and classes is not None and len(labels) == len(classes):
        # after the output is written: a failed --to leaves one line, the error
        import numpy as np

        scored = np.ones(len(labels), bool) if labelled is None else labelled
        _warn_classless(args.data, labels, scored, out.shape[1])
        acc = float((classes[scored] == labels[scored]).mean())
        split = " test split" if not Path(args.data).exists() else ""
        rows = (count_of(len(labels), "row") if labelled is None
                else f"{int(scored.sum())} of {count_of(len(labels), 'row')} labelled")
        print(f"{args.data}{split}: {rows}, accuracy {acc:.4f}", file=sys.stderr)
    return 0


def _warn_classless(data: str, labels, scored, outputs: int) -> None:
    """Warn of labelled rows whose label is no class of the network (``outputs`` classes,
    two for one binary output): they are never predicted and count as wrong (labels 3, 7, 9
    given to a network of 3 classes read "accuracy 0.0000" without a word on why)."""
    import warnings

    import numpy as np

    k = 2 if outputs == 1 else outputs
    beyond = scored & (labels >= k)
    if beyond.any():
        found = np.unique(labels[beyond])
        shown = ", ".join(map(str, found[:5].tolist())) + (", ..." if found.size > 5 else "")
        warnings.warn(f"DATA {data!r}: {int(beyond.sum())} of {int(scored.sum())} labelled rows "
                      f"hold labels ({shown}) that are no class of the network ({k} classes, "
                      f"0..{k - 1}); they count as wrong predictions", UserWarning, stacklevel=2)


def _check_target(text: str, inputs: dict[str, Path], force: bool = False) -> None:
    """Refuse ``--to`` naming a file this command reads (a typo would replace the saved
    network or the inputs with the predictions), a results store, a file in a missing folder
    (:func:`check_file_folder`), or, without ``--force``,
    any existing file (as ``depthlab init``: nothing already written is replaced unasked)."""
    from ..experiments.store import DB_NAME

    target = Path(text)
    if target.is_dir():
        raise ValueError(f"--to {text!r} is a folder; expected a file for the predictions "
                         "(e.g. predictions.csv)")
    if text.endswith(("/", os.sep)):  # Path drops the slash: "out/" wrote a FILE named out
        raise ValueError(f"--to {text!r} names a folder (it ends in {text[-1]}); expected a file "
                         f"for the predictions (e.g. {text}predictions.csv)")
    if target.name == DB_NAME:
        raise ValueError(f"--to {text!r} is a results store name; expected a new file "
                         "for the predictions (e.g. predictions.csv)")
    check_file_folder(target, f"--to {text!r}")  # as every output file: no folder created
    if not target.exists():
        return
    for what, path in inputs.items():
        if path.is_file() and target.resolve() == path.resolve():
            raise ValueError(f"--to {text!r} is {what} this command reads; writing the "
                             "predictions there would replace it: give another file")
    if not force:
        raise ValueError(f"--to {text!r} already exists; pass --force to replace it (or give "
                         "another file)")


def _why_no_network(target: str, folder: str) -> str | None:
    """Why the stored run ``target`` (an id or a unique prefix) has no saved network: it is a
    sweep point or a doctor diagnosis, or it did not finish, or ``folder`` (``--dir``) does not
    exist; None when no such run is stored."""
    from ..experiments import Store
    from ..experiments.store import resolve_db_path

    if Path(target).suffix.lower() != ".npz" and not expand_home(folder).exists():
        return (f"{target!r} is neither a .npz file nor a run: --dir {str(folder)!r} does not "
                "exist; expected the results folder of `depthlab run --out` as --dir (default "
                f"{DEFAULT_OUT}), or a saved network's .npz file")
    try:
        db = resolve_db_path(folder)
        if not db.is_file():
            return None
        with Store(folder, create=False, readonly=True) as store:
            ids = [i for i in store.runs()["id"] if str(i).startswith(target)]
            if len(ids) != 1:
                return None
            described = store.describe(ids[0])
    except Exception:  # noqa: BLE001 - only a better message is at stake
        return None
    return (f"{described} in {str(db)!r} has no saved network: only a run of `depthlab run` "
            "that finishes saves one (sweep points and diagnoses keep none)")


def _predict(args: argparse.Namespace):
    from ..data import find_builtin
    from ..inference import (
        builtin_test_split,
        label_column,
        predict_saved,
        read_input_file,
        resolve_model,
        saved_inputs,
    )
    from ..persist import load_meta

    try:
        model = resolve_model(args.model, args.dir)
    except ValueError as exc:
        raise ValueError(_why_no_network(args.model, args.dir) or str(exc)) from None
    meta = load_meta(model)  # a file that is no saved network is named as such, not as DATA
    if args.to and args.to != "-":
        inputs = {"the network": model, "DATA": Path(args.data)}
        if Path(args.data).is_dir():  # an IDX folder: the images file read in it
            from ..inference import idx_folder_images

            images = idx_folder_images(Path(args.data))
            if images is not None:
                inputs["DATA's images file"] = images
        from ..data.files import companion_files  # an IDX images file's labels file

        for extra in companion_files(inputs.get("DATA's images file", Path(args.data))):
            inputs["DATA's labels file"] = extra
        _check_target(args.to, inputs, getattr(args, "force", False))
    labels, labelled, where, targets = None, None, None, None
    values = meta.get("targets") == "values"  # a regression run: its targets are numbers
    if not Path(args.data).exists() and find_builtin(args.data) is not None:
        try:
            x, labels = builtin_test_split(args.data, meta)
        except (ValueError, OSError) as exc:
            raise ValueError(f"DATA {args.data!r}: {exc}") from None
    else:  # the run's training CSV: its label column is dropped and scores the predictions
        _check_npy_start(Path(args.data))  # before numpy's "EOF: reading magic string"
        names = meta.get("feature_names")
        unnamed = ((meta["label_index"], int(meta["csv_columns"]))
                   if meta.get("label_index") is not None and meta.get("csv_columns") else None)
        found = read_input_file(args.data, label_column(meta),
                                names if isinstance(names, list) else None, values=values,
                                unnamed=unnamed, n_inputs=saved_inputs(model))
        targets = found.targets
        x, labels, where = found.x, found.labels, found.where  # (a CSV's cells by line)
        labelled = found.labelled  # rows with an empty label cell are not scored
        if found.source is not None:  # an IDX folder: which of its images files is read
            what = ("test" if found.source.name.startswith(("t10k", "test")) else
                    "training (it holds no t10k-/test- images)")
            print(f"DATA {args.data!r}: an IDX folder; predicting its {what} images "
                  f"{str(found.source)!r}", file=sys.stderr)
        if labels is None and not values and str(args.data).lower().endswith(".npz"):
            # a classification run given its own .npz (x and y) printed no accuracy at all
            labels, labelled = _npz_classes(Path(args.data), len(x))
    out, classes = predict_saved(model, x, f"DATA {args.data!r}", where)
    return model, x, labels, labelled, out, classes, targets


NPY_MAGIC = b"\x93NUMPY"
"""The first six bytes of every ``.npy`` file (``numpy.lib.format.MAGIC_PREFIX``)."""


def _check_npy_start(path: Path) -> None:
    """Refuse a DATA file named ``*.npy`` that is not the start of a ``.npy`` array, in one line
    naming what it is: empty (0 bytes), not a ``.npy`` at all (its first bytes are not
    :data:`NPY_MAGIC` followed by the format version 1.0, 2.0 or 3.0), or cut short inside its
    header. numpy's own words were "EOF: reading magic string, expected 8 bytes got 0" or
    "EOF: reading array header length, expected 4 bytes got 2", which name neither the file
    nor what was expected. A complete header with too few data bytes is numpy's "file seems
    not fully written" (kept). Other suffixes and missing files are left to the reader."""
    if path.suffix.lower() != ".npy" or not path.is_file():
        return
    expected = "expected a .npy array written by numpy.save"
    bad = f"DATA {str(path)!r} could not be read:"
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{bad} it is an empty file (0 bytes); {expected}")
    with open(path, "rb") as fh:
        start = fh.read(8)
        if not NPY_MAGIC.startswith(start[:6]) or (len(start) >= 6 and start[:6] != NPY_MAGIC):
            raise ValueError(f"{bad} it is not a .npy file: it begins with "
                             f"{start[:6]!r}, where a .npy begins with {NPY_MAGIC!r}; {expected}"
                             " (a table of numbers in text: save it as .csv)")
        if len(start) == 8 and (start[6], start[7]) not in ((1, 0), (2, 0), (3, 0)):
            raise ValueError(f"{bad} its .npy format version "
                             f"{start[6]}.{start[7]} is not one numpy writes (1.0, 2.0 or 3.0); "
                             f"{expected}")
        fh.seek(0)
        from ..data.files import npy_header

        try:
            npy_header(fh)
        except (ValueError, EOFError) as exc:  # "EOF: reading array header, expected ..."
            if not isinstance(exc, EOFError) and not str(exc).startswith("EOF"):
                return  # a damaged header, not a short one: the reader's words
            raise ValueError(f"{bad} it is cut short: its {size} bytes end inside the "
                             f".npy header (a copy or download not finished?); {expected}"
                             ) from None


def _npz_classes(path: Path, n: int) -> tuple[object, object]:
    """(labels, labelled) of a ``.npz`` DATA's ``y`` beside its ``x`` (or ``X``) for a
    classification run: class numbers (one-hot rows read as their class), ``labelled`` the rows
    holding one (None: all of them); (None, None) when ``y`` holds no classes, not one per row
    of ``x``, or is missing."""
    import numpy as np

    from ..data.files import npz_headers
    from ..inference import input_key
    from ..memory import check_array

    with np.load(path, allow_pickle=False) as z:
        key = input_key(z.files)
        if key not in ("x", "X") or "y" not in z.files:
            return None, None
        shape, dtype = npz_headers(z)["y"]
        why = ("holds text" if dtype.kind in "USO" else "does not hold numbers"
               if dtype.kind not in "biuf" else f"has {len(shape)} dimensions"
               if len(shape) not in (1, 2)
               else f"has {count_of(shape[0], 'row')} beside {n} in {key!r}"
               if shape[0] != n else None)
        if why is not None:  # (was silent: no accuracy and no word why, where a CSV's
            # label column of text says so)
            import warnings

            warnings.warn(f"DATA {str(path)!r}: its 'y' {why} (dtype {dtype}, shape "
                          f"{tuple(shape)}), not a class number per row: the predictions are "
                          "not scored", UserWarning, stacklevel=2)
            return None, None
        check_array(shape, dtype, f"DATA {str(path)!r} array 'y'")
        y = z["y"]
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2:  # one-hot rows: a single 1 among 0s (training's rule)
        from ..data.dataset import one_hot_rows

        onehot = one_hot_rows(y)
        if not onehot.any():
            return None, None
        return y.argmax(axis=1).astype(np.int64), None if onehot.all() else onehot
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(y) & (y >= 0) & (y == np.round(y))
    if not ok.any():
        return None, None
    labels = np.where(ok, y, -1).astype(np.int64)
    return labels, None if ok.all() else ok


COMMAND = Command("predict", "outputs of a saved network (dl.save or a run) on new inputs",
                  add_arguments, run)
