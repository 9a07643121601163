"""``depthlab doctor --torch FILE.py:FUNCTION --data NAME_OR_PATH``: the torch doctor on a model
factory in a user's file (options added to the ``doctor`` command by :func:`add_arguments`).

Inputs: images are kept as ``(N, C, H, W)`` when the data set has an image shape and the
model's first weight layer is a ``Conv2d`` (a ``(H, W)`` shape gets one channel; ``(H, W, C)``
whose C is the convolution's input channels, or for a lazy convolution at most 4 and less
than H, is moved to channels-first); a ``Conv1d`` or ``Conv3d`` model gets a data file's
signals ``(N, C, L)`` or volumes ``(N, C, D, H, W)`` as they are (``(N, L, C)`` and
``(N, D, H, W, C)`` channels-first, one channel for ``(N, L)``/``(N, D, H, W)``), other data
``(N, 1, D)`` for a ``Conv1d``; a model whose first layer is an ``RNN``/``LSTM``/``GRU`` gets
sequences
``(N, D / input_size, input_size)`` (examples on the first axis, as ``batch_first=True``; a
model built with ``batch_first=False`` transposes them itself; a file's ``(N, F, T)`` whose F
is the ``input_size`` is transposed to ``(N, T, F)``); a model whose first layer is an
``Embedding``/``EmbeddingBag`` gets whole-number rows as int64 token ids; anything else gets
the flattened ``(N, D)`` rows (MLPs).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import UserError, open_store, progress_mode, say

if TYPE_CHECKING:
    import numpy as np


def _text(name: str) -> str:
    """A file name as storable text: bytes that are not UTF-8 (``\\udcff`` in Python) as
    U+FFFD (the diagnosis ran, then failed to be stored under its name: exit 1)."""
    return os.fsencode(name).decode("utf-8", "replace")


def _a(noun: str) -> str:
    """``a list``, ``an int``, ``an OrderedDict``: a type's name with its article."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The torch options of ``depthlab doctor``."""
    g = p.add_argument_group("PyTorch models (depthlab[torch])")
    g.add_argument("--torch", metavar="FILE.py:FUNCTION", default=None,
                   help="diagnose the torch.nn.Module that FUNCTION() in FILE.py returns, "
                        "or a module instance of that name (instead of a CONFIG; default: none, "
                        "diagnose CONFIG)")
    g.add_argument("--data", metavar="NAME_OR_PATH", default=None,
                   help="data set for --torch: a built-in name (`depthlab datasets`) or a file "
                        "(no default: required with --torch)")
    g.add_argument("--label", default=None, metavar="COLUMN",
                   help="label column of a .csv --data file: its name, or a 0-based column "
                        "index when no column has that name (default: \"label\")")
    g.add_argument("--n", type=int, default=None, metavar="N",
                   help="use N examples of the data set (default: all)")
    g.add_argument("--optimizer", default=None, metavar="NAME",
                   help="optimizer for --torch (sgd, adam, adamw, nadam, radam, adamax, "
                        "rmsprop, adagrad, adadelta; default sgd)")
    g.add_argument("--lr", type=float, default=None,
                   help="learning rate for --torch (default 0.1 for sgd, 1e-3 for the others)")
    g.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help="mini-batch size for --torch (default 64)")
    g.add_argument("--seed", type=int, default=None, help="seed for --torch (default 0)")
    g.add_argument("--max-cures", type=int, default=None, metavar="K",
                   help="cures verified per finding with --verify (default 3)")
    g.add_argument("--loss", default=None, metavar="NAME",
                   help="loss for --torch: cross_entropy (default), nll, mse, l1, smooth_l1, "
                        "huber, bce_with_logits, bce; mse, l1, smooth_l1 and huber also take "
                        "a file's real-valued targets (regression)")
    g.add_argument("--device", default=None, metavar="DEVICE",
                   help="torch device to diagnose on with --torch: cpu, cuda, cuda:N, mps "
                        "(default: where FUNCTION puts the model)")


TORCH_ONLY = ("data", "label", "n", "optimizer", "lr", "batch_size", "seed", "max_cures", "loss",
              "device")
DEFAULTS = {"optimizer": "sgd", "batch_size": 64, "seed": 0, "max_cures": 3,
            "loss": "cross_entropy"}
"""Defaults of the torch options; ``--lr`` is the doctor's per optimizer (0.1 for SGD, 1e-3)."""


def label_column(text: str | None, data: str | None) -> str | int | None:
    """``--label TEXT`` as ``load_dataset``'s ``label=``: the column of that name, else (digits
    only, no column of that name in the header) the 0-based column index; refused in one
    line when empty or when ``data`` is not a ``.csv`` file (a built-in data set, a ``.npz``
    or IDX files hold their labels themselves)."""
    if text is None:
        return None
    if not text.strip():
        raise UserError(f"--label {text!r} is empty; expected a column name or a 0-based "
                        "column index of the .csv --data file")
    from ..data import find_builtin

    if data is not None and (find_builtin(data) is not None
                             or not data.lower().endswith((".csv", ".csv.gz"))):
        what = ("a built-in data set" if find_builtin(data) is not None
                else "not a .csv file (a .npz holds its labels in y, IDX files in their "
                     "labels file)")
        raise UserError(f"--label {text!r} applies only to a .csv --data file; {data!r} is "
                        f"{what}")
    text = text.strip()  # the reader strips the header's names ("a, b, label")
    if not text.isdigit() or not data:
        return text
    import csv
    import gzip

    opener = gzip.open if data.lower().endswith(".gz") else open
    try:  # the header: a column named "3" is that column, not the fourth
        with opener(data, "rt", encoding="utf-8-sig", newline="") as fh:
            header = [c.strip() for c in next(csv.reader(fh), [])]
    except (OSError, EOFError, UnicodeDecodeError, csv.Error):
        return text  # the reader names the problem
    return text if text in header else int(text)


DEVICE_KINDS = ("cpu", "cuda", "mps")
"""The device types ``--device`` takes (``cuda`` and ``cuda:N`` where a CUDA GPU is there)."""


def parse_device(text: str, torch: Any) -> Any:
    """``--device TEXT`` as a ``torch.device`` this machine has, or a UserError in one line: an
    unknown name (``tpu``), a type not in :data:`DEVICE_KINDS` (``meta``: no values to
    train), ``cuda`` without a CUDA GPU (torch's 'Torch not compiled with CUDA enabled' came
    only after the data were read), ``cuda:N`` past the GPUs there, ``mps`` where it is not
    available."""
    accepted = "accepted: cpu, cuda, cuda:N (a GPU's index), mps"
    try:
        device = torch.device(text.strip())
    except (RuntimeError, ValueError, TypeError):
        raise UserError(f"--device {text!r} is not accepted; {accepted}") from None
    if device.type not in DEVICE_KINDS:
        raise UserError(f"--device {text!r} is not accepted (a {device.type!r} device cannot "
                        f"train here); {accepted}")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"--device {text!r}: no CUDA GPU is available on this machine "
                            "(torch.cuda.is_available() is False); use --device cpu or leave "
                            "it out")
        if device.index is not None and device.index >= count:
            raise UserError(f"--device {text!r}: this machine has {count} CUDA GPU"
                            f"{'' if count == 1 else 's'} (cuda:0"
                            f"{'' if count == 1 else f' to cuda:{count - 1}'})")
    if device.type == "mps":
        mps = getattr(getattr(torch, "backends", None), "mps", None)
        if mps is None or not mps.is_available():
            raise UserError(f"--device {text!r}: MPS (Apple's GPU) is not available on this "
                            "machine; use --device cpu or leave it out")
    return device


def on_device(make_model: Any, device: Any) -> Any:
    """``make_model`` (a factory or a module instance) whose model is on ``device``: the
    factory's each call moved there (``make_model().to(device)``), an instance moved in place
    (the doctor diagnoses a deep copy of it)."""
    if device is None:
        return make_model
    import torch

    if isinstance(make_model, torch.nn.Module):
        return make_model.to(device)

    def moved() -> Any:
        model = make_model()
        return model.to(device) if isinstance(model, torch.nn.Module) else model

    return moved


def refuse_without_torch(args: argparse.Namespace) -> None:
    """A UserError when options of ``--torch`` are given without it (a CONFIG sets those)."""
    given = [k for k in TORCH_ONLY if getattr(args, k, None) is not None]
    if given:
        opts = ", ".join("--" + k.replace("_", "-") for k in given)
        verb = "applies" if len(given) == 1 else "apply"
        raise UserError(f"{opts} {verb} only with --torch FILE.py:FUNCTION; a CONFIG sets its "
                        "data and training in the file")


@contextlib.contextmanager
def beside(path: Path) -> Iterator[None]:
    """As ``python FILE.py`` would: the file's folder first on ``sys.path`` inside the block,
    so the user's code can import the modules beside it (its own layers, helpers), also from
    inside the factory or ``forward``; removed afterwards."""
    folder = str(Path(path).resolve().parent)
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        if folder in sys.path:
            sys.path.remove(folder)


def load_factory(spec: str) -> Callable[[], Any]:
    """``FILE.py:FUNCTION`` -> the function, or the ``torch.nn.Module`` instance of that name
    (the file is imported as a fresh module)."""
    path_s, sep, name = spec.rpartition(":")
    if not sep or not path_s or not name:
        raise UserError(f"--torch {spec!r} is not accepted; expected FILE.py:FUNCTION")
    path = Path(path_s)
    if path.is_dir():
        raise UserError(f"--torch: {path_s!r} is a folder; expected FILE.py:FUNCTION")
    if not path.is_file():
        raise UserError(f"--torch: no such file {path_s!r}")
    if not name.isidentifier():
        raise UserError(f"--torch: {name!r} is not a Python name")
    mod_name = f"_depthlab_user_{abs(hash(str(path.resolve())))}"
    try:
        mspec = importlib.util.spec_from_file_location(mod_name, path)
        if mspec is None or mspec.loader is None:
            raise UserError(f"--torch: cannot import {path_s!r} (not a Python file?)")
        module = importlib.util.module_from_spec(mspec)
        sys.modules[mod_name] = module
        with beside(path):
            mspec.loader.exec_module(module)
    except UserError:
        raise
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the user's file failed to import
        sys.modules.pop(mod_name, None)
        from ..torch.doctor import error_text

        raise UserError(f"--torch: importing {path_s!r} failed: {error_text(e)}") \
            from None
    fn = getattr(module, name, None)
    if fn is None:
        raise UserError(f"--torch: {path_s!r} has no {name!r}{_candidates(module, name)}")
    if not callable(fn):
        raise UserError(f"--torch: {name!r} in {path_s!r} is {_a(type(fn).__name__)}, not a "
                        "function returning a torch.nn.Module")
    return fn


def _candidates(module: Any, name: str) -> str:
    """What the file offers instead of ``name``: `` (did you mean 'make_model'?)`` for a close
    public name, else ``; its functions: a, b`` (its own public callables, classes included,
    at most 10; not those it imported), else ``""``."""
    from ..validators import did_you_mean

    own = sorted(k for k, v in vars(module).items() if not k.startswith("_") and callable(v)
                 and getattr(v, "__module__", None) == module.__name__)
    hint = did_you_mean(name, own)
    if hint or not own:
        return hint
    return f"; its functions: {', '.join(own[:10])}" + (", ..." if len(own) > 10 else "")


def shape_inputs(x: np.ndarray, image_shape: Any, model: Any,
                 rows: np.ndarray | None = None) -> np.ndarray:
    """Rows ``x`` (N, D) shaped for ``model`` (see the module doc;
    :func:`depthlab.torch.doctor.shape_inputs`; ``rows``: the training rows, whose shape the
    validation rows ``x`` take)."""
    from ..torch.doctor import shape_inputs as shaped

    return shaped(x, image_shape, model, rows)


REGRESSION = ("mse", "l1", "smooth_l1", "huber")
"""``--loss`` names that take real-valued targets (a file whose labels are not integers)."""


def regression_dataset(path: str, *, seed: int, n: int | None, label: str | int | None = None
                       ) -> Any:
    """A data file (``.csv``, ``.npz``, IDX) with real-valued targets as a regression data
    set: ``x_train``/``y_train``/``x_val``/``y_val`` (float32) split exactly as ``depthlab
    run`` splits it, :func:`depthlab.data.load_dataset` with ``targets="values"`` (the file's
    own validation and test parts used, else ``round(0.1 N)`` validation and ``round(0.2 N)``
    test rows drawn from ``seed``; ``n`` rows subsampled, at most the file's; IDX pixels
    scaled as for classes); its own split dropped a ``.npz``'s official ``x_test`` and 20% of
    the training rows instead, and left IDX pixels at 0..255. ``info`` holds
    ``image_shape``; ``label``: a CSV's label column. A target column of one value per row
    is given as ``(N,)``."""
    from types import SimpleNamespace

    import numpy as np

    from ..data import load_dataset
    from ..data.files import looks_like_path

    if not looks_like_path(path):
        raise ValueError(f"unknown data set {path!r}")
    kwargs = {} if label is None else {"label": label}
    ds = load_dataset(path, seed=seed, n=n, targets="values", **kwargs)

    def targets(y: np.ndarray) -> np.ndarray:
        return (y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y).astype(np.float32)

    return SimpleNamespace(x_train=ds.x_train.astype(np.float32), y_train=targets(ds.y_train),
                           x_val=ds.x_val.astype(np.float32), y_val=targets(ds.y_val),
                           info=dict(ds.info))


def _output_shape(model: Any, x: np.ndarray, torch: Any) -> tuple[int, ...] | None:
    """The model's output shape per example on two rows (None when it does not run or does
    not return a tensor: the doctor's own checks then say why); an eval-mode forward that
    leaves the model as found (modes, buffers; a model with lazy modules runs as a copy)."""
    import copy

    from ..torch.layers import untouched
    from ..torch.train import model_device_dtype

    device, dtype = model_device_dtype(model)
    t = torch.as_tensor(x)
    t = t.to(device=device, dtype=dtype if t.is_floating_point() else torch.int64)
    try:
        if any(isinstance(m, torch.nn.modules.lazy.LazyModuleMixin) for m in model.modules()):
            model = copy.deepcopy(model)
        with torch.no_grad(), untouched(model):
            model.eval()
            out = model(t)
    except Exception:  # noqa: BLE001 - the doctor's check names the failure
        return None
    return tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None


def float_targets(y: np.ndarray, out: tuple[int, ...] | None, y_train: np.ndarray
                  ) -> np.ndarray:
    """Targets ``y`` for a loss of floats (``--loss mse``, ``bce_with_logits``, ...) and model
    outputs of shape ``out`` per example: integer class labels become one-hot rows when the
    model has one output per class (``out == (K,)`` with ``K > 1`` and every training label
    below ``K``), else the targets as float32 numbers shaped like one output (``(N,)`` ->
    ``(N, 1)`` for a model of one output column)."""
    import numpy as np

    y = np.asarray(y)
    if y.dtype.kind in "iub" and y.ndim == 1 and out is not None and len(out) == 1 \
            and out[0] > 1 and len(y_train) and int(np.max(y_train)) < out[0]:
        hot = np.zeros((len(y), out[0]), dtype=np.float32)
        hot[np.arange(len(y)), np.clip(y, 0, out[0] - 1)] = 1.0
        return hot
    t = y.astype(np.float32)
    if out is not None and t.ndim == 1 and int(np.prod(out)) == 1:
        t = t.reshape(len(t), *out)
    return t


def run(args: argparse.Namespace) -> int:
    """Run the torch doctor for ``depthlab doctor --torch ...``."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UserError("--torch needs PyTorch: pip install 'depthlab[torch]'") from None
    from ..data import load_dataset
    from ..experiments.store import jsonable, resolve_db_path
    from ..torch.doctor import doctor

    if args.config is not None:
        raise UserError("give either a CONFIG or --torch FILE.py:FUNCTION, not both")
    if args.max_cures is not None and not args.verify:  # else silently no cure verified
        raise UserError(f"--max-cures {args.max_cures} applies only with --verify (the number "
                        "of cures verified per finding); add --verify or leave it out")
    for k, v in DEFAULTS.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    if not args.data:
        raise UserError("--torch needs --data NAME_OR_PATH (a built-in data set or a file)")
    for label, v, low in (("--steps", args.steps, 1), ("--batch-size", args.batch_size, 1),
                          ("--max-cures", args.max_cures, 1), ("--seed", args.seed, 0),
                          ("--n", args.n, 1)):
        if v is not None and v < low:
            raise UserError(f"{label} {v} is not accepted; accepted: an integer >= {low}")
    if args.seed >= 2**64:
        raise UserError(f"--seed {args.seed} is not accepted; accepted: an integer from 0 to "
                        "2**64 - 1")
    if args.lr is not None and not 0 < args.lr < float("inf"):  # nan, inf: one rule
        raise UserError(f"--lr {args.lr} is not accepted; accepted: a finite number > 0")
    from ..torch.doctor import LOSSES
    from ..torch.probe import loss_key

    key = loss_key(args.loss)  # also "ce", "mse_loss", "CrossEntropyLoss" (LOSS_ALIASES)
    if key is None:
        raise UserError(f"--loss {args.loss!r} is not accepted; accepted: {', '.join(LOSSES)}")
    args.loss = key
    from ..torch.train import OPTIMIZERS

    if args.optimizer.lower() not in OPTIMIZERS:  # as --loss says it (was the API's words)
        from ..validators import did_you_mean

        raise UserError(f"--optimizer {args.optimizer!r} is not accepted"
                        f"{did_you_mean(args.optimizer, OPTIMIZERS)}; accepted: "
                        f"{', '.join(OPTIMIZERS)}")
    args.label = label_column(args.label, args.data)
    args.device = None if args.device is None else parse_device(args.device, torch)
    threads = getattr(args, "threads", None)
    if threads is not None and threads >= 1:
        torch.set_num_threads(threads)  # torch's intra-op pool (threadpoolctl sets BLAS's)
    # --json: whatever the user's code prints goes to stderr, so stdout holds the JSON alone
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext(), \
            beside(Path(args.torch.rpartition(":")[0] or ".")):
        diag = _diagnose(args, torch, load_dataset, doctor)
    out = say(args)  # --json: messages on stderr, stdout holds the JSON alone
    if args.json:  # even with --quiet, as on run, sweep and reproduce
        print(json.dumps(jsonable(diag.to_dict()), indent=1), flush=True)
    elif not args.json:
        out(str(diag))
    out(f"diagnosis {diag.settings.get('run_id')} stored in {resolve_db_path(args.out)}")
    return 0


def _warn_unscaled_pixels(ds: Any, data: str) -> None:
    """A UserWarning (``depthlab: warning: ...``) for a data file of images (one with an image
    shape) whose training inputs are whole numbers from 0 to 255 with a maximum above 1: raw
    pixels, which the model gets unscaled. dlt.doctor warns for uint8 tensors; a uint8 .npz
    reached it as float32 values 0 to 255 without a word, and a He-initialized ReLU CNN on
    them read 'lr_too_high' and 'dead_relu' (75% of the first layer's units), where x / 255
    has no finding."""
    import warnings

    import numpy as np

    x = getattr(ds, "x_train", None)
    if not ds.info.get("image_shape") or not isinstance(x, np.ndarray) or x.size == 0 \
            or x.dtype.kind not in "fiu":
        return
    top = float(x.max())
    # whole numbers judged on the first 2**20 entries: np.round of the whole set was two
    # temporaries of its size (a 60000-image set: 400 MB) for a warning
    head = np.asarray(x.flat[:1 << 20])
    if 1 < top <= 255 and float(x.min()) >= 0 and bool(np.all(head == np.round(head))):
        warnings.warn(f"--data {data!r} holds images of whole numbers up to {top:g} (pixels "
                      "0 to 255?), which the model gets unscaled: save x / 255 (or normalized "
                      "inputs) unless the model scales them itself", UserWarning, stacklevel=2)


_CONV_INPUTS = {"Conv1d": "(N, C, L)", "Conv2d": "(N, C, H, W)", "Conv3d": "(N, C, D, H, W)"}
"""The example layout each convolution takes, for :func:`_flat_rows_hint`."""


def _flat_rows_hint(text: str, data: str, image_shape: Any, x: np.ndarray, model: Any,
                    torch: Any) -> str:
    """What to do when a convolution refused the data's flat rows: a data file with no image
    shape (a CSV, a .npz whose x is (N, D)) gives each example as D values, which a Conv2d
    cannot take, and torch's own line ('Expected 3D (unbatched) or 4D (batched) input to
    conv2d') named neither the data nor a remedy. ``""`` for any other failure."""
    if image_shape or x.ndim != 2 or "fails on inputs of shape" not in text \
            or "conv" not in text.lower():
        return ""
    conv = next((m for m in model.modules() if type(m).__name__ in _CONV_INPUTS
                 and isinstance(m, torch.nn.modules.conv._ConvNd)), None)
    if conv is None:
        return ""
    kind = type(conv).__name__
    return (f" (--data {data!r} has no image shape: each example is {x.shape[1]} values in a "
            f"row, and the model's {kind}(in_channels={conv.in_channels}) takes "
            f"{_CONV_INPUTS[kind]} inputs: give a .npz whose x has that shape, or make the model "
            "reshape its input)")


def _without_file_prefix(message: str, data: str) -> str:
    """``message`` without the data file's name the loader starts it with (``'d.csv': ``,
    ``'/abs/d.csv': ``, ``d.csv: ``): the line already begins ``--data 'd.csv': ``, which
    named the file twice."""
    head, sep, rest = message.partition(": ")
    name = head.strip("'\"")
    return rest if sep and name and Path(name).name == Path(data).name else message


def check_out(path: str) -> None:
    """Refuse an unusable ``--out`` before the user's file runs, creating nothing: an existing
    store must open and be writable; for a new one, the nearest existing folder above it must
    be a folder this process may write into (a file there is named). The store itself is
    created only after the factory and the data were read, so a refused one leaves none."""
    from ..experiments.store import resolve_db_path

    db = resolve_db_path(path)
    if db.exists():
        store = open_store(path, create=False)
        try:
            store.check_writable()
        finally:
            store.close()
        return
    above = db.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise UserError(f"cannot create results folder {str(db.parent)!r}: {str(above)!r} is "
                        "a file, not a folder")
    if not os.access(above, os.W_OK | os.X_OK):
        raise UserError(f"cannot create results folder {str(db.parent)!r}: {str(above)!r} is "
                        "not writable")


def _diagnose(args: argparse.Namespace, torch: Any, load_dataset: Callable, doctor: Callable
              ) -> Any:
    """The user's factory and data set, shaped for the model, through the torch doctor."""
    from ..data.files import LABEL_HINT
    from ..data.registry import VALUES_HINT
    from ..torch.doctor import error_text, not_a_module

    check_out(args.out)  # before the user's file runs (its factory may take minutes)
    make_model = load_factory(args.torch)
    label = {} if args.label is None else {"label": args.label}
    try:
        try:
            ds = load_dataset(args.data, seed=args.seed, n=args.n, **label)
        except ValueError as e:
            if args.loss not in REGRESSION or "labels must be" not in str(e):
                if "non-integer values" in str(e):
                    raise ValueError(f"{str(e).replace(VALUES_HINT, '')}; for real-valued "
                                     f"targets (regression) give --loss "
                                     f"{', '.join(REGRESSION)}") from None
                raise
            ds = regression_dataset(args.data, seed=args.seed, n=args.n, **label)
    except (ValueError, TypeError, OSError) as e:  # the config's hint becomes the option's
        raise UserError(f"--data {args.data!r}: "
                        + _without_file_prefix(str(e), args.data).replace(VALUES_HINT, "")
                        .replace(LABEL_HINT, "name it with --label COLUMN.")
                        .replace(f"label={args.label!r}", f"--label {args.label!r}")
                        .replace(f"n={args.n} ", f"--n {args.n} ")) from None
    _warn_unscaled_pixels(ds, args.data)
    try:
        torch.manual_seed(args.seed)  # an instance in the file is diagnosed as a deep copy
        probe_model = make_model if isinstance(make_model, torch.nn.Module) else make_model()
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the user's factory failed
        raise UserError(f"--torch: {args.torch} raised {error_text(e)}") from None
    if not isinstance(probe_model, torch.nn.Module):
        what = not_a_module(probe_model, article=True)
        raise UserError(f"--torch: {args.torch} returned {what}, not a torch.nn.Module")
    shape = ds.info.get("image_shape")
    x, x_val = (shape_inputs(ds.x_train, shape, probe_model),
                shape_inputs(ds.x_val, shape, probe_model, ds.x_train))
    y, y_val = ds.y_train, ds.y_val
    if args.loss not in ("cross_entropy", "nll"):
        out = _output_shape(probe_model, x[:2], torch)
        y, y_val = (float_targets(t, out, ds.y_train) for t in (y, y_val))
    data = (x, y, x_val, y_val)
    make_model = on_device(make_model, args.device)  # after the shapes, read on the host
    opt = args.optimizer if args.lr is None else (args.optimizer, {"lr": args.lr})
    kwargs: dict[str, Any] = {"optimizer": opt, "loss_fn": args.loss,
                              "batch_size": args.batch_size, "seed": args.seed,
                              "verify": args.verify, "max_cures": args.max_cures,
                              "out": args.out, "name": f"doctor {_text(Path(args.torch).name)}"}
    if args.steps is not None:
        kwargs["steps"] = args.steps
    from ..torch.train import runs_progress

    # after the factory and the data were read (a refused one leaves no store behind), before
    # any training: an unusable --out fails now, not after the diagnosis
    store = open_store(args.out, create=True)
    try:
        store.check_writable()
    finally:
        store.close()
    try:  # a bar per training run (the baseline, then each cure), lines into a log
        with runs_progress(progress_mode(args), "doctor"):
            return doctor(make_model, data, **kwargs)
    except (ValueError, TypeError) as e:
        text = str(e)
        if ": give a loss_fn that takes it, e.g. " in text:  # --loss names a loss of a tensor
            text += (f" (dlt.doctor's loss_fn=); --loss takes the output tensor: make "
                     f"{args.torch.rpartition(':')[2]} return a module whose forward returns "
                     "that tensor (a wrapper)")
        text += _flat_rows_hint(text, args.data, shape, x, probe_model, torch)
        raise UserError(f"doctor: {text}") from None
