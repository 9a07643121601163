"""Execute one validated config: load the data, build the net, train with probes, evaluate on
the test split, and return a :class:`~depthlab.experiments.store.RunRecord`."""

from __future__ import annotations

import threading
import time
import traceback
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data.fingerprint import digest
from ..data.standardize import target_moments
from ..progress import count as count_of
from ..training.trainer import EPOCH_RECORD_BYTES, STEP_RECORD_BYTES
from .config import ConfigError, canonical_json, validate
from .config import run_id as make_run_id
from .store import METRIC_KEYS, RunRecord, jsonable


class ExperimentError(ValueError):
    """A user-facing problem found before training starts (data, sizes); one line."""


@dataclass
class Prepared:
    """What :func:`prepare` builds from a config: resolved config, data, targets and net."""

    config: dict[str, Any]
    data: Any
    net: Any
    y_train: np.ndarray
    y_val: np.ndarray | None
    y_test: np.ndarray | None
    target_scale: tuple[np.ndarray, np.ndarray] | None = None
    """``data.standardize_targets``: the training targets' float64 mean and std per column;
    ``y_*`` hold ``(y - mean) / std``, and :func:`train` folds the scale into the output layer
    once trained (the saved network predicts in the targets' units)."""


REGRESSION = ("mse", "huber")
"""``train.loss`` names whose targets may be real numbers (regression)."""


def target_mode(config: dict[str, Any]) -> str:
    """How :func:`load_data` reads a data file's labels: ``"values"`` (real regression
    targets) when ``data.targets = "values"`` or, with ``"auto"`` and a regression loss, the
    labels name several columns; ``"auto"`` when a regression loss may read them either way
    (classes when they are integers); else ``"classes"``."""
    d = config["data"]
    mode = d.get("targets", "auto")
    regression = config["train"]["loss"] in REGRESSION
    if mode != "auto":
        return mode
    if d.get("path") is None or not regression:
        return "classes"
    return "values" if isinstance(d.get("label"), list) else "auto"


def data_key(config: dict[str, Any]) -> str | None:
    """What identifies the data set :func:`load_data` returns for the validated ``config``:
    every ``[data]`` field, the model's dtype and, for a ``data.path``, the content
    fingerprint of the file or folder (:func:`depthlab.data.fingerprint.digest`). None when
    that path cannot be read (such a data set is never reused)."""
    d = config["data"]
    body: dict[str, Any] = {"data": d, "dtype": config["model"]["dtype"],
                            "targets": target_mode(config)}
    path = d.get("path")
    if path is not None:
        content = digest(path)
        if content is None:
            return None
        body["content"] = content
    return canonical_json(body)


# the data_key of each Dataset that load_data returned, by id (dropped when it is collected)
_LOADED: dict[int, str] = {}
_LOADED_LOCK = threading.Lock()


def _forget(ident: int) -> None:
    with _LOADED_LOCK:
        _LOADED.pop(ident, None)


def loaded_key(ds: Any) -> str | None:
    """The :func:`data_key` of the config that :func:`load_data` loaded ``ds`` for (None: not
    a data set that load_data returned, or one whose file changed while it was read)."""
    with _LOADED_LOCK:
        return _LOADED.get(id(ds))


def load_data(config: dict[str, Any]):
    """``depthlab.data.load_dataset`` called with the ``[data]`` section (dtype from the model);
    any failure becomes an :class:`ExperimentError`."""
    from ..data import load_dataset
    from ..data.registry import VALUES_HINT

    d = config["data"]
    kwargs = dict(d.get("options") or {})
    if d.get("path") is not None and d.get("label") is not None:
        kwargs["label"] = d["label"]
    before = data_key(config)
    mode, loss = target_mode(config), config["train"]["loss"]
    if mode == "values" and loss not in REGRESSION:
        raise ExperimentError(f"data.targets = \"values\" (real regression targets) needs "
                              f"train.loss = \"mse\" or \"huber\"; got {loss!r}, whose targets "
                              "are classes")
    if mode == "values" and d.get("path") is None:
        raise ExperimentError(f"data.targets = \"values\" applies to data.path files; data set "
                              f"{d.get('name')!r} has classes")

    def load(targets: str):
        return load_dataset(
            d["name"] if d.get("name") is not None else d["path"], seed=d["seed"],
            val_fraction=d["val_fraction"], test_fraction=d["test_fraction"], n=d["n"],
            standardize=d["standardize"], dtype=config["model"]["dtype"],
            targets=targets, **kwargs)

    try:
        try:
            ds = (_hinted_classes(load) if mode == "auto" else
                  load("values" if mode == "values" else "classes"))
        except ValueError as e:  # labels that are no classes: real targets of a regression
            if mode != "auto" or not any(k in str(e) for k in NOT_CLASSES):
                raise
            ds = load("values")
    except (ValueError, TypeError, OSError, ImportError, KeyError) as e:
        what = d.get("name") or d.get("path")
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        msg = msg.replace(VALUES_HINT, "")  # the config's remedies follow, not the keyword
        if isinstance(d.get("label"), list) and loss not in REGRESSION and (
                "labels must be 1-D" in msg):  # columns that are no one-hot rows
            shown = ", ".join(map(repr, d["label"]))
            why = (msg.rsplit(" (n, classes): ", 1)[-1].replace(
                " is not", f" of {str(what)!r} is not", 1)
                if "not one-hot" in msg else msg)  # (the loader's words: one rule)
            raise ExperimentError(
                f"data.label = [{shown}] is a list of target columns, which train.loss = "
                f"{loss!r} reads as classes only when every row is one-hot (the class: the "
                f"position of its 1), but {why}; use train.loss = \"mse\" or \"huber\" for "
                "real targets, or one label column of classes") from e
        if "non-integer values" in msg and loss not in REGRESSION:
            msg += (f"; train.loss = {loss!r} takes classes: for real-valued targets "
                    "(regression) use train.loss = \"mse\" or \"huber\"")
        elif mode == "classes" and loss in REGRESSION and any(k in msg for k in NOT_CLASSES):
            # (cross_entropy: not this remedy, which it refuses in turn)
            msg += ("; data.targets = \"classes\" reads the labels as classes: \"values\" (or "
                    "\"auto\") reads them as real regression targets")
        if str(what) in msg:  # the loader named the file already: not twice
            raise ExperimentError(msg) from e
        head, sep, rest = msg.partition(": ")  # ... nor by its bare name ("d.csv: n=500 ...")
        if sep and head.strip("'\"") and Path(head.strip("'\"")).name == Path(str(what)).name:
            msg = rest
        raise ExperimentError(f"data {what!r}: {msg}") from e
    # a file edited while it was read has no key: its arrays match neither fingerprint
    if before is not None and data_key(config) == before:
        with _LOADED_LOCK:
            _LOADED[id(ds)] = before
        weakref.finalize(ds, _forget, id(ds))
    return ds


def _hinted_classes(load: Any) -> Any:
    """``load("classes")`` for a regression loss (``data.targets = "auto"``): its warning of
    classes without examples (integer labels such as prices 230980..366398, read as 366399
    one-hot outputs) names the key that reads them as regression targets."""
    import warnings

    caught: list[Any] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            return load("classes")
    finally:  # (a load that fails keeps its warnings too)
        for w in caught:
            text = str(w.message)
            if "have no examples" in text:
                text += ("; integer regression targets: data.targets = \"values\" reads them "
                         "as numbers")
            warnings.warn(text, w.category, stacklevel=3)


NOT_CLASSES = ("labels must be integers, got non-integer", "labels must be non-negative",
               "labels must be 1-D", "(a single class)", "is too large; accepted: integers")
"""Parts of the loader's messages about labels that are no classes: with a regression loss
and ``data.targets = "auto"`` such a file is read again as real targets."""


def _targets(loss: str, y: np.ndarray, n_classes: int, dtype: Any) -> np.ndarray:
    """Labels in the form ``loss`` expects: integer classes (cross-entropy), one-hot rows
    (mse, huber) or 0/1 floats (binary cross-entropy); real targets (n, k) of a regression
    data set as they are, in ``dtype``."""
    if y.ndim == 2:
        return y.astype(dtype)
    if loss == "cross_entropy":
        return y
    if loss == "binary_cross_entropy":
        return y.astype(dtype)
    onehot = np.zeros((y.shape[0], n_classes), dtype=dtype)
    onehot[np.arange(y.shape[0]), y.astype(np.int64)] = 1
    return onehot


def resolve_sizes(config: dict[str, Any], n_features: int, n_classes: int,
                  values: bool = False) -> list[int]:
    """``model.sizes`` with ``"auto"`` replaced and both ends checked against the data
    (``values``: regression targets, ``n_classes`` of them per row)."""
    sizes = list(config["model"]["sizes"])
    loss = config["train"]["loss"]
    n_out = 1 if loss == "binary_cross_entropy" else n_classes
    name = config["data"].get("name") or config["data"].get("path")
    if sizes[0] == "auto":
        sizes[0] = n_features
    elif sizes[0] != n_features:
        raise ExperimentError(
            f"model.sizes[0] = {sizes[0]} but data set {name!r} has {n_features} input "
            f"features; set it to {n_features} or \"auto\"")
    if sizes[-1] == "auto":
        sizes[-1] = n_out
    elif sizes[-1] != n_out:
        what = ("1 output (binary_cross_entropy)" if loss == "binary_cross_entropy"
                else f"{n_classes} target column{'s' * (n_classes != 1)} (regression)"
                if values else f"{n_classes} classes")
        real = (" (or data.targets = \"values\" to read the labels as real regression "
                "targets, one output per target column)"
                if loss in REGRESSION and not values and config["data"].get("path") else "")
        raise ExperimentError(
            f"model.sizes[-1] = {sizes[-1]} but data set {name!r} has {what}; set it to "
            f"{n_out} or \"auto\"{real}")
    if loss == "binary_cross_entropy" and n_classes != 2:
        raise ExperimentError(
            f"train.loss = \"binary_cross_entropy\" needs 2 classes; data set {name!r} has "
            f"{n_classes}; use \"cross_entropy\"")
    return sizes


def build_net(config: dict[str, Any], sizes: list[int]):
    """The network of the ``[model]`` section (a :class:`~depthlab.spec.ModelSpec`) with
    ``sizes`` resolved; init seed = ``train.seed``."""
    from ..models import build
    from ..spec import ModelSpec

    try:
        return build(ModelSpec(**{**config["model"], "sizes": tuple(sizes)}),
                     seed=config["train"]["seed"])
    except (ValueError, TypeError) as e:
        raise ExperimentError(f"model: {e}") from e


def check_memory(config: dict[str, Any], sizes: list[int] | None = None,
                 n_rows: int | None = None) -> None:
    """Refuse a run whose network, batch activations and data cannot fit in memory
    (:func:`depthlab.memory.run_bytes`). Before the data are loaded, ``"auto"`` ends and the
    row count come from a built-in data set's header (1 and 0 for files)."""
    from ..memory import MemoryRefusal, check_fits

    if sizes is None:  # a data file too large is refused before anything reads its content
        check_data_file(config)
    need = memory_need(config, sizes, n_rows)
    if need is None:
        return
    try:
        check_fits(*need)
    except MemoryRefusal as e:
        raise ExperimentError(str(e)) from None


HISTORY_STEP_BYTES = STEP_RECORD_BYTES + 16
"""Memory of one training step's history, at least: the trainer's own
(:data:`~depthlab.training.trainer.STEP_RECORD_BYTES`, its loss in ``History.step_loss``) and
its row of the steps table the record is built from at the end (int64 step and float64
loss, 16)."""
HISTORY_EPOCH_BYTES = EPOCH_RECORD_BYTES
"""Memory of one epoch's row of the history, at least: the trainer's estimate of its dict of
6-8 metrics (:data:`~depthlab.training.trainer.EPOCH_RECORD_BYTES`)."""


def planned_steps(config: dict[str, Any], n_train: int) -> tuple[int, int]:
    """``(steps, steps per epoch)`` a validated ``config`` trains on ``n_train`` rows, as the
    trainer counts them: ``ceil(n_train / batch)`` per epoch (one fewer where batch norm merges
    a last batch of one row into the one before), times ``epochs``, at most ``max_steps``."""
    t = config["train"]
    n = max(int(n_train), 1)
    bs = n if t.get("batch_size") in (None, "full") else min(int(t["batch_size"]), n)
    merge = bool(config["model"].get("batchnorm")) and bs < n and n % bs == 1
    per_epoch = -(-n // bs) - merge
    epochs, max_steps = t.get("epochs"), t.get("max_steps")
    steps = max_steps if epochs is None else per_epoch * int(epochs)
    if max_steps is not None:
        steps = min(steps, int(max_steps))
    return int(steps), per_epoch


PROBE_ROW_BYTES = 64
"""Memory of one row of the probe history, at least (its step, layer, quantity and value in
the final table, 32 bytes, plus the recorder's own copy while training: 89-97 measured)."""
PROBE_ROWS_PER_LAYER = 2
PROBE_ROWS_PER_HIDDEN = 10
"""Rows one probe step records, at least: ``2`` per Dense layer and ``10`` more per hidden
layer (measured: 2 for ``sizes = [in, out]``, 48 for two hidden layers, 186 for eight)."""


def probe_history_bytes(config: dict[str, Any], steps: int) -> int:
    """A lower bound of the probe history's memory for ``steps`` training steps: ``(steps //
    every + 1) x (2 L + 10 H) x`` :data:`PROBE_ROW_BYTES` for ``L = len(sizes) - 1`` Dense
    layers and ``H = L - 1`` hidden ones; 0 with ``probes.every = 0`` (no probes)."""
    every = (config.get("probes") or {}).get("every")
    sizes = (config.get("model") or {}).get("sizes")
    if not isinstance(every, int) or isinstance(every, bool) or every < 1 or not sizes:
        return 0
    layers = max(len(sizes) - 1, 1)
    rows = PROBE_ROWS_PER_LAYER * layers + PROBE_ROWS_PER_HIDDEN * (layers - 1)
    return (int(steps) // every + 1) * rows * PROBE_ROW_BYTES


def history_bytes(config: dict[str, Any], steps: int, epochs: int) -> int:
    """A lower bound of a run's history memory: ``steps x`` :data:`HISTORY_STEP_BYTES` ``+
    epochs x`` :data:`HISTORY_EPOCH_BYTES` ``+`` :func:`probe_history_bytes`."""
    return (int(steps) * HISTORY_STEP_BYTES + int(epochs) * HISTORY_EPOCH_BYTES
            + probe_history_bytes(config, steps))


def check_history(config: dict[str, Any], n_train: int) -> None:
    """Refuse a run whose training history cannot fit in memory: ``steps x``
    :data:`HISTORY_STEP_BYTES` ``+ epochs x`` :data:`HISTORY_EPOCH_BYTES` ``+`` the probes'
    (:func:`history_bytes`, a lower bound) against the memory available. ``train.epochs =
    10**12`` trained until the history grew past the machine's memory, everything then lost
    (and ``probes.every = 1`` over 10⁸ steps, its probes uncounted, likewise). Not with
    ``train.patience``: early stopping ends the run when it stops improving. Called after
    :func:`prepare` by ``depthlab run`` and :func:`execute` (sweep points), not by
    :func:`prepare` itself: the doctor keeps its own step budget."""
    from ..memory import MemoryRefusal, check_fits

    t = config["train"]
    if t.get("patience") is not None:
        return
    steps, per_epoch = planned_steps(config, n_train)
    epochs = -(-steps // max(per_epoch, 1))
    need = history_bytes(config, steps, epochs)
    probes = probe_history_bytes(config, steps)
    plan = (f"train.epochs = {t['epochs']} ({per_epoch} step{'s' * (per_epoch != 1)} each on "
            f"{n_train} training rows)" if t.get("epochs") is not None and steps != t.get(
                "max_steps") else f"train.max_steps = {t.get('max_steps')}")
    try:
        check_fits(need, f"{plan}: the training history of {steps:,} steps" + (
            f" with its probes every {config['probes']['every']} step(s)" if probes else ""))
    except MemoryRefusal as e:
        raise ExperimentError(f"{e}; accepted: fewer epochs, train.max_steps, or "
                              "train.patience to stop early" + (
                                  ", or a larger probes.every" if probes else "")) from None


def check_data_file(config: dict[str, Any]) -> None:
    """Refuse a validated ``config`` whose ``data.path`` cannot fit in memory, sized from its
    headers alone (:func:`depthlab.data.files.file_bytes`): to be called before its content
    fingerprint (:func:`depthlab.experiments.config.run_id`, :func:`data_key`) is computed,
    which reads the whole file (about 100 s for 50 GB) only for the load to be refused."""
    from ..data.files import file_bytes
    from ..memory import MemoryRefusal, check_fits

    path = (config.get("data") or {}).get("path")
    if not isinstance(path, str) or not path:
        return
    need = file_bytes(path)
    if need is None:  # not a kind sized from its header: the loader checks it
        return
    try:
        check_fits(*need)
    except MemoryRefusal as e:
        raise ExperimentError(str(e)) from None


def memory_need(config: dict[str, Any], sizes: list[int] | None = None,
                n_rows: int | None = None) -> tuple[int, str] | None:
    """The bytes a run of the validated ``config`` needs (:func:`check_memory`'s count) and
    what they are for, e.g. ``"model.sizes = [64, 2000, 10] with train.batch_size = 32 on
    1797 rows of data"``; None when an option is bad (the loader names it)."""
    from ..data import find_builtin
    from ..memory import dense_chain, parameter_count, run_bytes, sizes_text

    m, t, d = config["model"], config["train"], config["data"]
    written = sizes is None and not (d.get("name") and find_builtin(d.get("name")))
    if sizes is None:
        spec = find_builtin(d.get("name")) if d.get("name") else None
        opts = d.get("options") or {}
        n_in = opts.get("d", spec.n_features) if spec else 1
        n_out = 1 if t["loss"] == "binary_cross_entropy" else (
            opts.get("n_classes", spec.n_classes) if spec else 1)
        n_rows = (d.get("n") or spec.n_samples) if spec else 0
        if spec and not spec.generated:  # n subsamples a fixed set: a larger n is the
            n_rows = min(n_rows, spec.n_samples)  # loader's one-line error, not a memory one
        sizes = list(m["sizes"])
        sizes[0] = n_in if sizes[0] == "auto" else sizes[0]
        sizes[-1] = n_out if sizes[-1] == "auto" else sizes[-1]
        if not all(isinstance(v, int) and v > 0 for v in [*sizes, n_rows + 1]):
            return None  # a bad option: the loader names it
    bs = t["batch_size"]
    probe_rows = int(config.get("probes", {}).get("batch") or 0)
    if n_rows:  # a batch (training or probe) never holds more rows than the data
        rows = n_rows if bs == "full" else min(int(bs), n_rows)
        rows = max(rows, min(probe_rows, n_rows))
    else:  # rows unknown until a file is loaded: the check after loading counts the batch
        rows = 1
    chain = dense_chain(sizes, bool(m.get("residual")))
    need = run_bytes(chain, n_rows=n_rows or 0,
                     dtype=m["dtype"], optimizer=t["optimizer"],
                     momentum=bool((t.get("optimizer_kwargs") or {}).get("momentum")),
                     batch_rows=rows, onehot=t["loss"] in ("mse", "huber"))
    if t.get("patience") is not None:  # early stopping keeps a copy of the best epoch's
        need += parameter_count(chain) * np.dtype(m["dtype"]).itemsize  # parameters
    # a file's rows are unknown before it is loaded: not "on 0 rows of data"
    data = (f"on {count_of(n_rows, 'row')} of data" if n_rows else
            f"for the network alone (data file {d.get('path')!r} not loaded yet)")
    # before a file is read, its "auto" ends are placeholders: the sizes as written
    shown = sizes_text(m["sizes"] if written else sizes)
    kept = " (and early stopping's copy of the best weights)" if t.get("patience") else ""
    return need, f"model.sizes = {shown} with train.batch_size = {bs} " + data + kept


def prepare(config: dict[str, Any], *, data: Any = None) -> Prepared:
    """Load the data, resolve ``"auto"`` sizes, check them against the data and build the
    net. Raises :class:`ExperimentError` for anything the user must fix (a run that cannot
    fit in memory is refused from the config and the data set's header before loading).
    ``config`` may be a raw config dict (it is validated first: a ConfigError names a bad
    value).

    ``data``: a Dataset that :func:`load_data` returned earlier (e.g. for the previous
    config of a playground tab). It is used instead of loading when it is the one this
    config would load: the same :func:`data_key` (every ``[data]`` field, the model dtype and
    a data file's content fingerprint); anything else (another seed, ``n``, standardization
    or path, an edited file, a Dataset built by hand) is loaded afresh. Its arrays are taken
    as they are: they must not have been written to."""
    config = validate(config)
    check_memory(config)
    key = loaded_key(data) if data is not None else None
    ds = data if key is not None and key == data_key(config) else load_data(config)
    values = ds.info.get("targets") == "values"
    sizes = resolve_sizes(config, ds.n_features, ds.n_classes, values)
    scaled = config["data"].get("standardize_targets")
    if scaled:
        check_standardize_targets(config, values)
    if config["model"].get("batchnorm") and ds.sizes["train"] < 2:
        name = config["data"].get("name") or config["data"].get("path")
        raise ExperimentError(
            f"model.batchnorm = true needs at least 2 training rows; data set {name!r} leaves "
            f"{ds.sizes['train']} for training (data.n, data.val_fraction, data.test_fraction)")
    check_memory(config, sizes, ds.sizes["train"] + ds.sizes["val"] + ds.sizes["test"])
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items()}
    cfg["model"] = dict(config["model"], sizes=sizes)
    cfg.pop("sweep", None)
    net = build_net(cfg, sizes)
    loss, dt = cfg["train"]["loss"], net.dtype
    scale = target_moments(ds.y_train) if scaled else None

    def targets(y: np.ndarray) -> np.ndarray:
        if scale is not None:
            y = (y - scale[0]) / scale[1]
        return _targets(loss, y, ds.n_classes, dt)

    y_tr = targets(ds.y_train)
    y_va = targets(ds.y_val) if len(ds.y_val) else None
    y_te = targets(ds.y_test) if len(ds.y_test) else None
    _check_monitor(cfg, y_tr, y_va, net)
    _warn_empty_splits(config, ds)
    return Prepared(cfg, ds, net, y_tr, y_va, y_te, scale)


def _warn_empty_splits(config: dict[str, Any], ds: Any) -> None:
    """Warn when ``data.val_fraction`` (``test_fraction``) is above 0 but its share of the
    rows, ``round(fraction * N)``, is none: a 4-row file trained with no validation or test
    rows and said nothing (its val/test metrics showed as "-", exit 0)."""
    data = config["data"]
    words = {"val": "validation", "test": "test"}
    empty = [part for part in ("val", "test")
             if ds.sizes[part] == 0 and (data.get(f"{part}_fraction") or 0) > 0]
    if not empty:
        return
    rows = sum(ds.sizes.values())
    given = " and ".join(f"data.{p}_fraction = {data[f'{p}_fraction']:g}" for p in empty)
    source = data.get("path") or data.get("name")
    warnings.warn(f"data {str(source)!r} has {rows} rows: {given} "
                  f"{'round' if len(empty) > 1 else 'rounds'} to no "
                  f"{' or '.join(words[p] for p in empty)} rows, so "
                  f"{', '.join(p + '_loss/' + p + '_acc' for p in empty)} are not measured; "
                  "accepted: more rows (data.n), a larger fraction, or 0 to go without them",
                  UserWarning, stacklevel=3)


def _check_monitor(config: dict[str, Any], y_train: np.ndarray, y_val: np.ndarray | None,
                   net: Any) -> None:
    """``train.patience``'s monitor must be a metric the run computes: a validation metric
    needs validation rows, an accuracy targets that have one (real regression targets have
    none; one-hot rows under mse/huber do)."""
    train = config["train"]
    monitor = train.get("monitor") or "val_loss"
    if train.get("patience") is None:
        return
    if monitor.startswith("val_") and y_val is None:
        raise ExperimentError(f"train.monitor = \"{monitor}\" needs validation rows, but the "
                              "data leave none for validation; accepted: more data or "
                              "data.val_fraction, or train.monitor = \"train_loss\"")
    if not monitor.endswith("_acc"):
        return
    from ..losses import get_loss
    from ..training.early_stopping import reports_accuracy

    y = y_val if monitor.startswith("val_") else y_train
    loss = get_loss(train["loss"], **(train.get("loss_kwargs") or {}))
    if not reports_accuracy(loss, net, y):
        raise ExperimentError(f"train.monitor = \"{monitor}\" is an accuracy, which these "
                              f"targets do not have under train.loss = \"{train['loss']}\" "
                              "(real regression targets); accepted: train.monitor = "
                              "\"val_loss\" or \"train_loss\"")


def check_standardize_targets(config: dict[str, Any], values: bool) -> None:
    """``data.standardize_targets = true`` needs real regression targets and an output layer
    the targets' scale can be folded into (a Dense layer with a bias, no output
    activation)."""
    loss = config["train"]["loss"]
    if loss not in REGRESSION:
        raise ExperimentError(f"data.standardize_targets = true needs a regression loss "
                              f"(train.loss = \"mse\" or \"huber\"); got {loss!r}, whose "
                              "targets are classes")
    if not values:
        raise ExperimentError("data.standardize_targets = true needs real regression targets; "
                              "these labels were read as classes (one-hot rows): set "
                              "data.targets = \"values\" to read them as numbers")
    out = config["model"].get("output_activation")
    if out not in (None, "none", "identity", "linear"):
        raise ExperimentError(f"data.standardize_targets = true maps the outputs back to the "
                              f"targets' units through the last layer; model.output_activation "
                              f"= {out!r} is in the way (use \"none\")")


def unscale_outputs(net: Any, scale: tuple[np.ndarray, np.ndarray]) -> None:
    """Fold ``pred * std + mean`` into ``net``'s output layer (a Dense layer: ``W * std``,
    ``b * std + mean``, computed in float64): the network then predicts in the targets'
    units."""
    from ..layers.dense import Dense

    layers = list(net.layers)
    while len(layers) > 1 and getattr(getattr(layers[-1], "fn", None), "name", None) == \
            "identity":  # output_activation = "identity": the Dense layer before it
        layers.pop()
    last = layers[-1]
    if not isinstance(last, Dense) or last.b is None:
        raise ExperimentError("data.standardize_targets = true needs an output layer with a "
                              f"bias; the network ends with {last!r}")
    mean, std = scale
    w, b = last.W.value, last.b.value
    last.W.value[...] = (w.astype(np.float64) * std).astype(w.dtype)
    last.b.value[...] = (b.astype(np.float64) * std + mean).astype(b.dtype)


def _probe_recorder(prep: Prepared):
    p = prep.config["probes"]
    if not p["every"]:
        return None
    from ..probes import ProbeRecorder
    from ..probes.stats import BN_PROBE_ROWS, probe_held_out

    # the probe batch: held-out (validation) examples when there are enough, else training
    # rows; batch norm normalizes over the batch, and over 2 rows it maps each unit to -1
    # and +1 whatever the inputs (no gradient below it): at least 3 rows, as the doctor's
    least = BN_PROBE_ROWS if prep.config["model"].get("batchnorm") else 1
    if probe_held_out(None if prep.y_val is None else len(prep.y_val), len(prep.y_train),
                      least):
        x, y = prep.data.x_val, prep.y_val
    else:
        x, y = prep.data.x_train, prep.y_train
    n = min(p["batch"], x.shape[0])
    kwargs: dict[str, Any] = {"every": p["every"], "jacobian_steps": tuple(p["jacobian"])}
    if p["histogram_steps"] is not None:
        kwargs["histogram_steps"] = tuple(p["histogram_steps"])
    return ProbeRecorder(x[:n], y[:n], prep.config["train"]["loss"], **kwargs)


def _frame(obj: Any, columns: tuple[str, ...]) -> pd.DataFrame:
    if obj is None:
        return pd.DataFrame({c: [] for c in columns})
    return obj if isinstance(obj, pd.DataFrame) else pd.DataFrame(obj)


def make_trainer(prep: Prepared, *, callbacks: list | None = None, progress: bool = False,
                 **overrides: Any):
    """The :class:`~depthlab.training.Trainer` of the ``[train]`` section: its keyword
    arguments are the :class:`~depthlab.spec.TrainSpec` fields, passed through by name
    (``overrides`` replace some, e.g. ``epochs=None, max_steps=...``)."""
    from ..training import Trainer

    return Trainer(prep.net, **{**prep.config["train"], **overrides}, callbacks=callbacks or [],
                   progress=progress)


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C (or SIGTERM, raised as an interrupt) after at least one whole
    epoch, from :func:`train` with ``keep_interrupted``: ``record`` is its record, status
    ``interrupted`` (its finished epochs, steps and probes; no test metrics). Raised from the
    interrupt, so that it ends the program as that interrupt would."""

    def __init__(self, record: RunRecord) -> None:
        super().__init__(f"run {record.id} interrupted")
        self.record = record


def train(prep: Prepared, *, run_id: str, name: str | None = None, kind: str = "run",
          sweep: str | None = None, progress: bool = False, catch: bool = True,
          keep_interrupted: bool = False) -> RunRecord:
    """Train ``prep.net`` as the config says and return its record. A non-finite loss gives
    status ``diverged``; with ``catch`` any exception gives status ``failed`` with the error
    text (and the partial history) instead of propagating. An interrupt (Ctrl-C) propagates;
    with ``keep_interrupted``, one after at least one whole epoch is raised as
    :class:`RunInterrupted` carrying the record of what trained (:func:`interrupted_record`)."""
    cfg, ds = prep.config, prep.data
    if cfg["probes"]["every"]:
        # the probes' compiled kernels loaded (or compiled) before the clock starts: the first
        # run of a process (a sweep worker's first point) stored 1-5.6 s of Numba's import and
        # cache load as its seconds, where the same config takes 0.05 s
        from ..probes import accel

        accel.warm_up(dtypes=(prep.net.dtype,))
    t0 = time.perf_counter()
    recorder = trainer = hist = error = None
    try:
        recorder = _probe_recorder(prep)
        trainer = make_trainer(prep, callbacks=[recorder] if recorder is not None else [],
                               progress=progress)
        hist = trainer.fit(ds.x_train, prep.y_train,
                           ds.x_val if prep.y_val is not None else None, prep.y_val)
    except KeyboardInterrupt as e:
        if not keep_interrupted or trainer is None or not trainer.history.epochs:
            raise
        raise RunInterrupted(interrupted_record(
            prep, trainer, recorder, time.perf_counter() - t0, run_id=run_id, name=name,
            kind=kind, sweep=sweep)) from e
    except Exception as e:  # noqa: BLE001 - recorded as a failed run
        if not catch:
            raise
        error = "".join(traceback.format_exception_only(type(e), e)).strip()
        error += "\n" + "".join(traceback.format_tb(e.__traceback__)[-3:])
    seconds = time.perf_counter() - t0
    try:
        return _record(prep, trainer, recorder, hist, error, seconds, run_id=run_id, name=name,
                       kind=kind, sweep=sweep, catch=catch)
    except KeyboardInterrupt as e:  # in the test split's pass after training (a large one:
        # seconds), every epoch done: kept as interrupted too (it stored nothing)
        if not keep_interrupted or hist is None or hist.diverged or not hist.epochs:
            raise
        raise RunInterrupted(interrupted_record(
            prep, trainer, recorder, seconds, run_id=run_id, name=name, kind=kind,
            sweep=sweep)) from e


def _record(prep: Prepared, trainer: Any, recorder: Any, hist: Any, error: str | None,
            seconds: float, *, run_id: str, name: str | None, kind: str, sweep: str | None,
            catch: bool) -> RunRecord:
    """:func:`train`'s record once ``trainer.fit`` returned ``hist`` (None: it raised
    ``error``): final metrics (the test split's pass), target units, probe tables."""
    cfg = prep.config
    status = hist.status if hist is not None else "failed"
    metrics = _final_metrics(prep, trainer, hist, seconds)
    if prep.target_scale is not None and hist is not None and not hist.diverged:
        try:
            metrics.update(_in_target_units(prep, trainer))
        except Exception as e:  # noqa: BLE001 - recorded as a failed run
            if not catch:
                raise
            error, status = f"{type(e).__name__}: {e}", "failed"
    if hist is not None and not hist.diverged and trainer is not None:
        _warn_not_finite(prep, trainer, metrics, run_id)
    h = hist if hist is not None else (trainer.history if trainer is not None else None)
    tables, probe_error = _probe_tables(recorder, catch)
    if probe_error is not None:
        error = (error or "") + probe_error
        if status != "diverged":
            status = "failed"
    return RunRecord(
        id=run_id, name=name or cfg.get("name"), kind=kind, sweep=sweep, status=status,
        config=cfg, metrics=jsonable(metrics),
        divergence=hist.divergence.as_dict() if hist is not None and hist.diverged else None,
        error=error, seconds=seconds,
        steps=h.steps_frame() if h is not None else _frame(None, ("step", "loss")),
        epochs=h.epochs_frame() if h is not None else pd.DataFrame(),
        evals=pd.DataFrame(trainer.evals) if trainer is not None else pd.DataFrame(), **tables)


def interrupted_record(prep: Prepared, trainer: Any, recorder: Any, seconds: float, *,
                       run_id: str, name: str | None = None, kind: str = "run",
                       sweep: str | None = None) -> RunRecord:
    """The record of a run interrupted after ``len(trainer.history.epochs)`` whole epochs:
    status ``interrupted``; its metrics are the last finished epoch's training/validation
    ones (None for a run with ``data.standardize_targets``, whose final losses are stored in
    the targets' units, and for the test split: nothing more is computed, the stop stays
    prompt), ``steps`` every update taken (the unfinished epoch's too), ``epochs`` the
    finished ones; its steps, epochs, evaluations and probes so far. No divergence, no
    error."""
    hist = trainer.history
    metrics: dict[str, Any] = dict.fromkeys(("train_loss", "train_acc", "val_loss", "val_acc",
                                             "test_loss", "test_acc"))
    if prep.target_scale is None:
        final = hist.final()
        metrics.update({k: final[k] for k in ("train_loss", "train_acc", "val_loss",
                                              "val_acc") if k in final})
    metrics.update(steps=len(hist.step_loss), seconds=seconds, epochs=len(hist.epochs),
                   n_parameters=prep.net.num_parameters())
    tables, _error = _probe_tables(recorder, True)  # probes that cannot be collected: none
    return RunRecord(
        id=run_id, name=name or prep.config.get("name"), kind=kind, sweep=sweep,
        status="interrupted", config=prep.config, metrics=jsonable(metrics), seconds=seconds,
        steps=hist.steps_frame(), epochs=hist.epochs_frame(),
        evals=pd.DataFrame(trainer.evals), **tables)


def _final_metrics(prep: Prepared, trainer: Any, hist: Any, seconds: float) -> dict[str, Any]:
    """Last epoch's training/validation metrics (the best epoch's when early stopping put its
    weights back), the test split's (unless diverged), steps, seconds, epochs and the
    parameter count (with early stopping also ``best_epoch`` and ``stopped_epoch``); None
    where a value does not exist."""
    metrics: dict[str, Any] = dict.fromkeys(("train_loss", "train_acc", "val_loss", "val_acc",
                                             "test_loss", "test_acc"))
    es = getattr(trainer, "early_stopping", None)
    if hist is not None:
        # early stopping that put back its best epoch: that epoch's metrics describe the
        # network the run keeps (and evaluates on the test split below)
        final = es.best_metrics if es is not None and es.restored else hist.final()
        metrics.update({k: final[k] for k in ("train_loss", "train_acc", "val_loss", "val_acc")
                        if k in final})
        if hist.divergence is None and prep.y_test is not None and trainer is not None:
            trainer.prepare_inference()
            te = trainer.evaluate(prep.data.x_test, prep.y_test)
            metrics.update(test_loss=te["loss"], test_acc=te["acc"])
    metrics["steps"] = len(hist.step_loss) if hist is not None else (
        len(trainer.history.step_loss) if trainer is not None else 0)
    metrics["seconds"] = seconds
    metrics["epochs"] = len(hist.epochs) if hist is not None else 0
    metrics["n_parameters"] = prep.net.num_parameters()
    if es is not None:
        metrics.update(best_epoch=es.best_epoch, stopped_epoch=es.stopped_epoch)
    return metrics


def _warn_not_finite(prep: Prepared, trainer: Any, metrics: dict[str, Any],
                     run_id: str) -> None:
    """One warning, in depthlab's words, for a run that finished with a final loss that is not
    a number on a split (the network's outputs overflow its dtype on some rows: a test row
    far outside the training data, weights grown huge): that loss is stored as missing and
    the line would omit it without a word. It names the run, the rows ``k of n`` whose
    outputs are not finite (inference mode, the network as trained) and the first layer
    whose outputs were not (:meth:`Network.first_nonfinite`)."""
    import warnings

    from ..layers.sequential import Sequential

    net, ds, dtype = prep.net, prep.data, np.dtype(prep.net.dtype).name
    for split in ("train", "val", "test"):
        loss = metrics.get(f"{split}_loss")
        if not isinstance(loss, float) or np.isfinite(loss):
            continue
        what = f"its final {split}_loss is {loss} (not stored)"
        try:
            with np.errstate(all="ignore"):
                x = trainer.transform(getattr(ds, f"x_{split}"))
                bad = ~np.isfinite(net.predict(x)).all(axis=1)
                if bad.any():
                    out = Sequential.forward(net, x[bad][:4096], False)
                    layer = net.first_nonfinite(out)
                    net.clear_cache()
                    what += (f": the trained network's outputs are not finite on "
                             f"{int(bad.sum())} of {len(bad)} {split} rows (they overflow "
                             f"{dtype}" + (f"; first in layer '{layer}'" if layer else "")
                             + ")")
        except Exception:  # noqa: BLE001 - the warning without its detail
            pass
        warnings.warn(f"run {run_id}: {what}", RuntimeWarning, stacklevel=2)


def _in_target_units(prep: Prepared, trainer: Any) -> dict[str, Any]:
    """``data.standardize_targets``: the target scale folded into the trained network (it
    predicts in the targets' units from now on: the saved network, ``depthlab predict``), and
    the final train/validation/test losses of that network on the targets as given
    (inference mode; the step and epoch curves stay in standardized units)."""
    unscale_outputs(prep.net, prep.target_scale)
    ds, loss, dt = prep.data, prep.config["train"]["loss"], prep.net.dtype
    out: dict[str, Any] = {}
    for split, y_key in (("train", prep.y_train), ("val", prep.y_val), ("test", prep.y_test)):
        if y_key is None:
            continue
        y = _targets(loss, getattr(ds, f"y_{split}"), ds.n_classes, dt)
        out[f"{split}_loss"] = trainer.evaluate(getattr(ds, f"x_{split}"), y)["loss"]
    return out


def _probe_tables(recorder: Any, catch: bool) -> tuple[dict[str, pd.DataFrame], str | None]:
    """The recorder's probe, histogram and Jacobian tables (empty tables without a recorder)
    and the error text when they could not be collected."""
    probes = hists = jac = None
    error = None
    if recorder is not None:
        try:
            probes = recorder.frame()
            hists = recorder.histograms()
            jac = recorder.jacobian()
            if jac is not None and "idx" not in jac.columns and "index" in jac.columns:
                jac = jac.rename(columns={"index": "idx"})
        except Exception as e:  # noqa: BLE001 - keep the run, note the probe failure
            if not catch:
                raise
            error = f"probe results could not be collected: {e}"
    return {"probes": _frame(probes, ("step", "layer", "quantity", "value")),
            "histograms": _frame(hists, ("step", "layer", "kind", "bin_left", "bin_right",
                                         "count")),
            "jacobian": _frame(jac, ("step", "example", "idx", "value"))}, error


def failed_record(config: dict[str, Any], run_id: str, error: str, *, name: str | None = None,
                  kind: str = "run", sweep: str | None = None) -> RunRecord:
    """A record for a run that could not even start (status ``failed``)."""
    cfg = {k: v for k, v in config.items() if k != "sweep"}
    return RunRecord(id=run_id, name=name or cfg.get("name"), kind=kind, sweep=sweep,
                     status="failed", config=cfg, metrics={**dict.fromkeys(METRIC_KEYS),
                                                           "steps": 0}, error=error)


def execute(config: dict[str, Any], *, run_id: str | None = None, name: str | None = None,
            kind: str = "run", sweep: str | None = None, progress: bool = False,
            catch: bool = True) -> RunRecord:
    """Run one validated config end to end and return its :class:`RunRecord`.

    Setup problems (data, sizes) raise :class:`ExperimentError` unless ``catch``, in which
    case they, like training errors, give a ``failed`` record. ``run_id`` defaults to
    :func:`depthlab.experiments.config.run_id` of ``config`` (before ``"auto"`` sizes are
    resolved; the stored config has them resolved).
    """
    try:
        config = validate(config)  # a raw config dict too (idempotent on a validated one)
    except ConfigError as e:
        if not catch or not isinstance(config, dict):  # no dict: no record to make of it
            raise
        return failed_record(config, run_id or make_run_id(config), str(e), name=name,
                             kind=kind, sweep=sweep)
    if run_id is None:  # a data file too large is refused before its fingerprint is read
        try:
            check_data_file(config)
        except ExperimentError as e:
            if not catch:
                raise
            return failed_record(config, make_run_id(config), str(e), name=name, kind=kind,
                                 sweep=sweep)
    rid = run_id or make_run_id(config)
    try:
        prep = prepare(config)
        check_history(prep.config, prep.data.sizes["train"])
    except (ExperimentError, ConfigError) as e:
        if not catch:
            raise
        return failed_record(config, rid, str(e), name=name, kind=kind, sweep=sweep)
    return train(prep, run_id=rid, name=name, kind=kind, sweep=sweep, progress=progress,
                 catch=catch)
