"""``depthlab predict RUN_OR_FILE DATA``: outputs of a saved network on new inputs.

``RUN_OR_FILE`` is a ``.npz`` written by ``dl.save`` or the id (or a unique prefix) of a run
whose network ``depthlab run`` saved in ``DIR/models/<id>.npz``. ``DATA`` is a ``.npy`` file
(a 2-D array of features), a ``.csv`` file (numeric features; a header row is skipped), a
``.npz`` with an ``x`` array, or the name of a built-in data set (its test split, split as the
run split it; the accuracy goes to stderr). Inputs are standardized as in training when the
run standardized them. Output (stdout, or ``--to FILE``): CSV with the predicted class
(classification) and the network's raw outputs, each number written exactly (``repr``), or
``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .common import DEFAULT_OUT, Command, UserError

MODELS = "models"


def model_path(out: str | Path, run_id: str) -> Path:
    """Where ``depthlab run`` keeps a run's network: ``OUT/models/<run id>.npz``."""
    return Path(out) / MODELS / f"{run_id}.npz"


def save_run_network(prep: Any, out: str | Path, run_id: str) -> Path:
    """Save a trained run's network with its loss and input standardization."""
    from ..persist import save

    meta: dict[str, Any] = {"loss": prep.config["train"]["loss"], "run_id": run_id,
                            "data": prep.config["data"]}
    std = (getattr(prep.data, "info", None) or {}).get("standardization")
    if std:
        meta["input_mean"] = np.asarray(std["mean"])
        meta["input_std"] = np.asarray(std["std"])
    return save(prep.net, model_path(out, run_id), meta=meta)


def _resolve(target: str, folder: str) -> Path:
    p = Path(target)
    if p.suffix == ".npz" or p.is_file():
        if not p.is_file():
            raise UserError(f"{target!r}: no such file")
        return p
    models = Path(folder) / MODELS
    found = sorted(models.glob(f"{target}*.npz")) if models.is_dir() else []
    if len(found) == 1:
        return found[0]
    if not found:
        raise UserError(f"{target!r} is neither a .npz file nor a run with a saved network in "
                        f"{str(models)!r} (networks are saved by `depthlab run`)")
    raise UserError(f"run prefix {target!r} matches {len(found)} runs: "
                    f"{', '.join(f.stem for f in found[:5])}; give more characters")


def builtin_test_split(name: str, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The raw (unstandardized) test split of built-in data set ``name``: split as the run
    that saved the network split it when it trained on ``name``, else with the defaults."""
    from ..data import load_dataset

    d = meta.get("data") if isinstance(meta.get("data"), dict) else {}
    kw: dict[str, Any] = {}
    if d.get("name") == name:
        kw = {k: d[k] for k in ("seed", "val_fraction", "test_fraction", "n") if d.get(k)
              is not None}
        kw.update(d.get("options") or {})
    try:
        ds = load_dataset(name, **kw)
    except (ValueError, OSError) as exc:
        raise UserError(f"DATA {name!r}: {exc}") from None
    return np.asarray(ds.x_test), np.asarray(ds.y_test)


def read_inputs(path: str) -> np.ndarray:
    """A 2-D float array from ``.npy``, ``.csv`` or ``.npz`` (key ``x``)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"DATA {path!r}: no such file (nor a built-in data set: see "
                        "`depthlab datasets`)")
    try:
        if p.suffix == ".npy":
            x = np.load(p, allow_pickle=False)
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                if "x" not in z.files:
                    raise UserError(f"{path!r} has no 'x' array; arrays: {', '.join(z.files)}")
                x = z["x"]
        elif p.suffix in (".csv", ".txt"):
            import pandas as pd

            first = p.read_text(encoding="utf-8").split("\n", 1)[0].split(",")
            header = not all(_is_number(c) for c in first)
            x = pd.read_csv(p, header=0 if header else None).to_numpy()
        else:
            raise UserError(f"DATA {path!r}: expected a .npy, .npz or .csv file")
    except (ValueError, OSError) as exc:
        raise UserError(f"DATA {path!r} could not be read: {exc}") from None
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.number):
        raise UserError(f"DATA {path!r}: expected a 2-D numeric array, got shape {x.shape} "
                        f"{x.dtype}")
    return x


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def predict_file(model: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(raw outputs, predicted classes or None) of the saved network on ``x``."""
    from ..persist import load, load_meta

    try:
        net, meta = load(model), load_meta(model)
    except (ValueError, TypeError) as exc:
        raise UserError(str(exc)) from None
    n_in = net.dense_layers()[0].W.value.shape[0]
    if x.shape[1] != n_in:
        raise UserError(f"DATA has {x.shape[1]} features per row; the network expects {n_in}")
    dtype = net.parameters()[0].value.dtype
    x = x.astype(dtype, copy=False)
    if "input_mean" in meta:
        x = ((x - meta["input_mean"].astype(dtype)) / meta["input_std"].astype(dtype)).astype(
            dtype, copy=False)
    out = net.predict(x)
    loss = meta.get("loss")
    classes = None
    if loss == "cross_entropy" or (loss is None and out.shape[1] > 1):
        classes = np.argmax(out, axis=1)
    elif loss == "binary_cross_entropy":
        classes = (out[:, 0] > 0).astype(np.int64)
    return out, classes


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="RUN_OR_FILE",
                   help="a .npz saved by dl.save, or a run id (prefix) in --dir")
    p.add_argument("data", metavar="DATA", help="inputs: .npy, .npz (key x) or .csv")
    p.add_argument("--dir", default=DEFAULT_OUT, metavar="DIR",
                   help=f"results folder holding the runs (default ./{DEFAULT_OUT})")
    p.add_argument("--to", metavar="FILE", help="write the CSV here instead of stdout")
    p.add_argument("--json", action="store_true",
                   help="print JSON: {\"outputs\": [[...]], \"classes\": [...]}")


def run(args: argparse.Namespace) -> int:
    from ..data import find_builtin

    model = _resolve(args.model, args.dir)
    labels = None
    if not Path(args.data).exists() and find_builtin(args.data) is not None:
        from ..persist import load_meta

        try:
            meta = load_meta(model)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        x, labels = builtin_test_split(args.data, meta)
    else:
        x = read_inputs(args.data)
    out, classes = predict_file(model, x)
    if labels is not None and classes is not None and len(labels) == len(classes):
        acc = float(np.mean(classes == labels))
        print(f"{args.data} test split: {len(labels)} rows, accuracy {acc:.4f}",
              file=sys.stderr)
    if args.json:
        payload = {"model": str(model), "outputs": out.tolist(),
                   "classes": None if classes is None else classes.tolist()}
        print(json.dumps(payload))
        return 0
    head = (["class"] if classes is not None else []) + [f"output_{j}"
                                                         for j in range(out.shape[1])]
    lines = [",".join(head)]
    for i in range(out.shape[0]):
        cells = ([str(int(classes[i]))] if classes is not None else []) + [
            repr(float(v)) for v in out[i]]
        lines.append(",".join(cells))
    text = "\n".join(lines) + "\n"
    if args.to:
        from ..atomic import atomic_write_text

        atomic_write_text(Path(args.to), text)
        print(f"predictions for {out.shape[0]} rows: {args.to}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


COMMAND = Command("predict", "outputs of a saved network (dl.save or a run) on new inputs",
                  add_arguments, run)
