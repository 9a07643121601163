"""``doctor`` for any ``torch.nn.Module``: train a fresh copy briefly with probes, diagnose it
with the NumPy doctor's rules, and verify cures by re-training.

The rules (:mod:`depthlab.diagnosis.rules`) read a probe table and a :class:`RunContext`;
:class:`TorchRunContext` gives them the torch model's view: the *hidden* layers are the weight
layers but the output layer (the last to run, even when a sigmoid follows it) followed (through
normalization, dropout or pooling) by a known activation module (all weight layers but the
last when fewer than two are), numbered as in the probe table; each
hidden layer's fans come from its weight (``torch.nn.init``'s convention, conv: channels x
kernel size) and its initializer is judged against the one recommended for *its own* following
activation. The network's ``activation`` is the most common one.

Verification (``verify=True``): for each finding, the rule's prescription translated to a
module transform (:func:`depthlab.torch.prescriptions.translate`) and then the torch
alternatives for that kind (:func:`~depthlab.torch.prescriptions.alternatives`) are applied to
a fresh model (``make_model()`` after ``torch.manual_seed(seed)``, or a deep copy of the given
instance), trained with the same seed, data order and budget, and compared with the baseline:
``helped`` when the finding's metric went down by more than 1% (or the finding is gone)
*and* the final training loss went down or the validation accuracy up. Up to ``max_cures``
applicable cures are verified per finding; the finding's prescription becomes the one that
improved training most, and the findings are ranked by their best cure
(:func:`depthlab.diagnosis.doctor.rank_findings`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hashlib
import inspect
import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from ..activations import get_activation
from ..diagnosis.doctor import _improved, huber_center, rank_findings
from ..diagnosis.findings import Diagnosis, Finding, Verification
from ..diagnosis.prescriptions import recommended_init
from ..diagnosis.rules import (
    RULES,
    Rule,
    RunContext,
    _count,
    evaluate,
    init_ratio,
    probe_loss_ends,
    stuck_at_chance,
)
from ..validators import did_you_mean, keyword_hints
from . import prescriptions as rx
from .layers import activation_spec, check_materialized, check_model, untouched
from .predict import theory_rows
from .probe import LOSSES, loss_by_name  # noqa: F401  (depthlab.torch.doctor.LOSSES)
from .train import (
    OPTIMIZERS,
    TensorData,
    TorchTrainSpec,
    TrainResult,
    binary_threshold,
    calibrate_population,
    check_fits,
    class_index_loss,
    loss_hint,
    loss_parts,
    make_optimizer,
    model_device_dtype,
    one_hot_labels,
    population_layers,
    scalar_loss,
    train,
)

PROBE_EXAMPLES = 300
"""Size of the fixed probe batch (the first 300 validation examples, as the NumPy doctor)."""

VAL_FRACTION = 0.2
"""Share of a bare ``(x, y)`` pair held out for validation (seeded), as the NumPy doctor."""

TRACE_EXAMPLES = 8
"""Rows of the data used to trace layers and to check transformed models."""

NO_ACTIVATION = "no activation module"
"""``config["activation"]`` of a model whose layers feed no known activation module (e.g.
``torch.sigmoid`` called inside ``forward``): rules that need the activation stay silent."""

LSUV_EXAMPLES = 256
"""Rows of the training data LSUV rescales on."""

FLOAT_TARGET_LOSSES = (nn.BCEWithLogitsLoss, nn.BCELoss, nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss,
                       nn.HuberLoss)
"""Losses whose targets must be floating point (integer labels are kept as int64)."""



# -- the rules' view of a torch model ----------------------------------------------------------

@dataclass
class _Fans:
    fan_in: int
    fan_out: int


@dataclass
class _Act:
    fn: Any


@dataclass
class _Point:
    """Duck-typed :class:`depthlab.network.ProbePoint`: what the rules read of a hidden layer."""

    index: int
    dense: _Fans | None
    activation: _Act | None
    module: str = ""
    activation_name: str | None = None


class _ModelView:
    """Duck-typed network for :class:`RunContext`: ``probe_points()`` and ``batchnorms()``."""

    def __init__(self, points: list[_Point]) -> None:
        self._points = points

    def probe_points(self) -> list[_Point]:
        return list(self._points)

    def batchnorms(self) -> list:
        return []


@dataclass
class TorchRunContext(RunContext):
    """:class:`RunContext` for a torch model: ``points`` from the traced layers; the initializer
    of each hidden layer is judged against its own following activation."""

    points_override: list[_Point] = field(default_factory=list)
    through_time: dict[str, Any] | None = None  # :func:`through_time` of the trained model

    def __post_init__(self) -> None:
        self.net = _ModelView(self.points_override)
        frame = self.frame
        if "module" in frame.columns:
            self.frame = frame.drop(columns=["module"])
        super().__post_init__()
        self.frame = frame
        name = self.config.get("activation")
        if name and name != NO_ACTIVATION:
            self.fn = _depthlab_fn(name, self.config.get("activation_kwargs") or {}) or next(
                (p.activation.fn for p in self.points
                 if p.activation_name == name and p.activation is not None), None)

    def at(self, step: int, quantity: str) -> pd.Series:
        """Per-hidden-layer values of ``quantity`` at ``step``: the output layer's row is left
        out, also when an activation module follows it (a ``BCELoss`` model's sigmoid is the
        model's output, its saturation confident predictions, not a hidden layer's)."""
        s = super().at(step, quantity)
        return s[s.index.isin(self.hidden)]

    def init_variance_ratios(self, activation: str | None = None) -> dict[int, float]:
        """Initial Var(W) (``weight_std`` at step 0 squared) / the variance recommended for the
        layer's following activation (or for ``activation`` when given), per hidden layer."""
        w = self.at(0, "weight_std")
        out: dict[int, float] = {}
        if activation is None and recommended_init(self.activation) is None:
            return out  # the rules word their finding for the network's activation (hardtanh)
        for p in self.points:
            rec = recommended_init(activation or p.activation_name or "")
            if rec is None or p.dense is None or p.index not in w.index:
                continue
            out[p.index] = init_ratio(rec, float(w[p.index]) ** 2, p.dense.fan_in,
                                      p.dense.fan_out)  # either He mode (fan_in / fan_out)
        return out


class _TorchActivationFn:
    """What the rules read of an activation function (``name``, ``forward(s)``,
    ``derivative(s, a)``, ``max_derivative``; NumPy arrays in and out, float64) for an
    activation module outside depthlab's NumPy registry (Hardtanh, ReLU6, CELU, Softplus, ...),
    computed by the module's own :class:`depthlab.torch.layers.ActivationSpec`."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self.name = spec.name
        self.max_derivative = spec.max_derivative

    def _call(self, fn: Callable, s: Any) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(s, dtype=np.float64))
        return fn(t).numpy()

    def forward(self, s: Any) -> np.ndarray:
        return self._call(self.spec.function, s)

    def derivative(self, s: Any, a: Any = None) -> np.ndarray:
        return self._call(self.spec.derivative, s)


def _activation_fn(module: nn.Module | None) -> Any:
    """The rules' activation function of a module: depthlab's own when its registry has the
    activation, else :class:`_TorchActivationFn`; None for no known activation."""
    name = rx.activation_name(module) if module is not None else None
    if name is None:
        return None
    # PReLU: the leaky ReLU of its (mean) learned slope
    fn = _depthlab_fn(rx.INIT_KIN[name] if name == "prelu" else name,
                      rx.activation_kwargs(module))
    if fn is None:
        spec = activation_spec(module)
        fn = _TorchActivationFn(spec) if spec is not None else None
    return fn


def _depthlab_fn(name: str, kwargs: dict[str, float]) -> Any:
    try:
        return get_activation(name, **kwargs)
    except (ValueError, TypeError):
        return None


def _layer_index(table: pd.DataFrame, layers: list[rx.TracedLayer]) -> dict[str, int]:
    """Module name -> layer number of the probe table (``module`` column; forward order of the
    traced layers when the table has none)."""
    if "module" in table.columns:
        rows = (table["layer"] >= 1) & (table["quantity"] == "weight_std")  # one per layer
        sub = table.loc[rows, ["layer", "module"]].drop_duplicates()
        return {str(m): int(i) for i, m in zip(sub["layer"], sub["module"])}
    return {t.name: i for i, t in enumerate(layers, 1)}


def _points(table: pd.DataFrame, layers: list[rx.TracedLayer]) -> list[_Point]:
    index = _layer_index(table, layers)
    numbered = sorted(((index[t.name], t) for t in layers if t.name in index),
                      key=lambda it: it[0])
    # the output layer (the last to run) is not hidden even when an activation follows it
    # (a sigmoid for BCELoss), as the NumPy probe points exclude the output activation
    hidden = [(i, t) for i, t in numbered[:-1] if t.activation_name is not None]
    if len(hidden) < 2:
        hidden = numbered[:-1]
    out = []
    for i, t in hidden:
        ws = rx.weight_tensors(t.module)
        # no fans, so no init judgement, for embeddings, frozen (e.g. pretrained) layers and
        # weights whose scale the parametrization sets (spectral norm, orthogonal)
        judged = ws and ws[0].requires_grad and not isinstance(t.module, nn.Embedding) \
            and not scale_free(t.module)
        fan = _Fans(*rx.fans(ws[0])) if judged else None
        out.append(_Point(i, fan, _Act(_activation_fn(t.activation)), t.name,
                          t.activation_name))
    return out


SCALE_FREE = ("_SpectralNorm", "_Orthogonal", "SpectralNorm")
"""Parametrizations (``torch.nn.utils.parametrizations.spectral_norm``/``orthogonal``) and the
deprecated ``torch.nn.utils.spectral_norm``'s forward pre-hook whose weight does not depend on
the scale of the trainable original (``W / sigma(W)``; an orthogonal matrix)."""


def scale_free(module: nn.Module) -> bool:
    """Whether the weight ``module`` uses is computed by a :data:`SCALE_FREE` parametrization
    or hook: the initial variance of its trainable original (which the probe's ``weight_std``
    reads) says nothing about it, so its initialization is not judged (a spectral-normed
    tanh net drawn from N(0, 0.02) got init_mismatch, 'the initial weight variance of layer 2
    is 0.00566x the glorot_uniform variance', while the weights it used had std 0.136)."""
    for plist in getattr(module, "parametrizations", {}).values():
        if any(type(p).__name__ in SCALE_FREE for p in plist):
            return True
    return any(type(h).__name__ in SCALE_FREE for h in module._forward_pre_hooks.values())


@torch.no_grad()
def bn_drift(model: nn.Module, x: torch.Tensor) -> list[dict[str, float]]:
    """Per batch norm with running statistics (forward order of ``model.modules()``): running
    (inference) statistics against the statistics of the probe batch ``x`` at its input (a
    forward with batch norms in training mode, all else in eval mode; buffers and modes
    restored); for depthlab's population batch norms (``bn_inference="population"`` through
    ``depthlab.bridge``) the population statistics their eval mode uses, as the NumPy doctor
    reads them. As the NumPy doctor: ``mean_shift`` = mean over channels of
    ``|mu_run - mu_batch| / sqrt(var_batch + eps)``, ``log_var_ratio`` = mean over channels of
    ``|log((var_run + eps) / (var_batch + eps))|``."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
           and m.track_running_stats and m.running_mean is not None]
    if not bns or len(x) < 2:
        return []
    seen: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(m: nn.Module, inp: tuple, kwargs: dict, _out: Any) -> None:
        if m not in seen:
            t = (inp or tuple(kwargs.values()))[0].detach().double()  # bn(input=h) too
            dims = [d for d in range(t.dim()) if d != 1]
            seen[m] = (t.mean(dim=dims), t.var(dim=dims, unbiased=False))

    saved = {bn: [b.clone() for b in bn.buffers()] for bn in bns}
    modes = {m: m.training for m in model.modules()}
    handles = [bn.register_forward_hook(hook, with_kwargs=True) for bn in bns]
    try:
        for m in model.modules():
            m.train(m in saved)
        model(x.clone())  # a forward that changes its input in place: not our data
    finally:
        for h in handles:
            h.remove()
        for bn, bufs in saved.items():
            for b, v in zip(bn.buffers(), bufs):
                b.copy_(v)
        for m, was in modes.items():
            m.training = was
    population = {bn for bn in population_layers(model)
                  if not bool(torch.isnan(bn.population_mean).any())}
    out = []
    for bn in bns:
        if bn not in seen:
            continue
        mu_b, var_b = seen[bn]
        mu_r, var_r = bn.running_mean.double(), bn.running_var.double()
        if bn in population:  # its eval mode normalizes with these, not the running ones
            mu_r, var_r = bn.population_mean.double(), bn.population_var.double()
        sd = torch.sqrt(var_b + bn.eps)
        stats = torch.stack([((mu_r - mu_b).abs() / sd).mean(),
                             torch.log((var_r + bn.eps) / (var_b + bn.eps)).abs().mean()])
        ms, lv = (float(v) for v in stats.cpu())
        out.append({"mean_shift": ms, "log_var_ratio": lv})
    return out


def describe(model: nn.Module, layers: list[rx.TracedLayer]) -> dict[str, Any]:
    """The diagnosis ``config`` of a torch model: class name, most common activation (and its
    parameters), whether normalization follows its layers (``batchnorm``, as the rules read it
    for a NumPy network, true for any normalization) and which (``normalization``: the module
    classes, e.g. ``"LayerNorm"``), the weight layers' module names; ``bn_inference``
    ``"population"`` when every batch norm is one of depthlab's population batch norms
    (``to_torch`` of ``bn_inference="population"``: eval mode on whole-training-set
    statistics, which the NumPy rules then read so)."""
    act = rx.dominant_activation(layers)
    act_module = next((t.activation for t in layers if t.activation_name == act), None)
    norms = sorted({type(m).__name__ for m in model.modules() if isinstance(m, rx.NORM_MODULES)})
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
           and m.track_running_stats]
    population = bool(bns) and len(population_layers(model)) == len(bns)
    return {
        "model": type(model).__name__,
        "framework": "torch",
        "activation": act or NO_ACTIVATION,
        "activation_kwargs": rx.activation_kwargs(act_module),
        "init": "as built",
        "batchnorm": any(t.normalized for t in layers if t.activation_name),
        "normalization": ", ".join(norms),
        "n_weight_layers": len(layers),
        "modules": [t.name for t in layers],
        "parameters": int(sum(p.numel() for p in model.parameters())),
        **({"bn_inference": "population"} if population else {}),
    }


# -- inputs ------------------------------------------------------------------------------------

def _has_lazy(model: nn.Module) -> bool:
    """Whether a lazy module (``nn.LazyLinear``, ``nn.LazyConv2d``, ...) is not initialized."""
    return any(isinstance(m, nn.modules.lazy.LazyModuleMixin) and m.has_uninitialized_params()
               for m in model.modules())


def _materialized(model: nn.Module, x: torch.Tensor, seed: int) -> nn.Module:
    """``model`` with its lazy modules initialized by one eval-mode forward on ``x``, their
    weights drawn after ``torch.manual_seed(seed)`` (the same in every run); the caller's
    random streams and the modules' modes are left as found."""
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    modes = {m: m.training for m in model.modules()}
    try:
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            torch.manual_seed(seed)
            model.eval()
            model(x.clone())
    except Exception as e:  # noqa: BLE001 - the user's model failed on the data
        raise ValueError(f"the model's lazy modules cannot be initialized on inputs of shape "
                         f"{tuple(x.shape[1:])} per example: {type(e).__name__}: {e}") from None
    finally:
        for m, was in modes.items():
            m.training = was
    return model


def _factory(make_model_or_model: Any
             ) -> tuple[Callable[[int], nn.Module], list[torch.Tensor]]:
    """``(fresh, rows)``: ``fresh(seed)`` -> a new model: a deep copy of an instance, or
    ``make_model()`` called after ``torch.manual_seed(seed)`` and checked to return a module.
    Lazy modules are initialized on ``rows[0]`` once the caller has put example inputs there
    (before that such a model comes back uninitialized, to read its device and dtype); the
    object ``make_model()`` returned stays lazy."""
    rows: list[torch.Tensor] = []
    if isinstance(make_model_or_model, nn.Module):
        template = make_model_or_model
        if isinstance(template, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            raise TypeError("DataParallel/DistributedDataParallel models are not supported: "
                            "pass the wrapped module (model.module)")

        def copied(seed: int) -> nn.Module:
            try:
                model = copy.deepcopy(template)
            except Exception as e:  # noqa: BLE001 - e.g. a lock or an open file held by it
                raise TypeError(f"the model cannot be deep-copied ({type(e).__name__}: {e}); "
                                "the doctor trains copies and leaves the given model as it "
                                "is: pass a function that builds the model instead") from None
            return _materialized(model, rows[0], seed) if rows and _has_lazy(model) else model

        return copied, rows
    if isinstance(make_model_or_model, type) and issubclass(make_model_or_model, nn.Module):
        pass  # a module class is a factory: calling it builds one
    elif not callable(make_model_or_model):
        from ..network import Network

        if isinstance(make_model_or_model, Network):
            raise TypeError("expected a torch.nn.Module or a function returning one, got a "
                            "depthlab Network: diagnose it with dl.doctor(net, data), or give "
                            "its torch copy, depthlab.bridge.to_torch(net)")
        raise TypeError(f"expected a torch.nn.Module or a function returning one, got "
                        f"{type(make_model_or_model).__name__}")
    make = make_model_or_model
    first: list[Any] = []  # the first model built and its state as built (host memory)

    def fresh(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        # NumPy's and Python's global generators seeded too (a factory drawing its weights
        # from np.random: the same model in every call), and left as the caller had them
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            np.random.seed(seed % 2**32)
            random.seed(seed)
            model = make()
        except Exception as e:  # noqa: BLE001 - the user's factory failed
            kind = TypeError if isinstance(e, TypeError) else ValueError
            raise kind(f"make_model() raised {type(e).__name__}: {e}; expected a function "
                       "that returns a fresh torch.nn.Module") from e
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
        if not isinstance(model, nn.Module):
            raise TypeError(f"make_model() must return a torch.nn.Module, got "
                            f"{type(model).__name__}")
        made = model
        if _has_lazy(model):
            if not rows:
                return model  # doctor() builds it again once it has the data
            model = _materialized(copy.deepcopy(model), rows[0], seed)
        if not first:
            check_materialized(model)  # a 'meta' model: by name, before copying its values
            first.extend((made, {k: v.detach().to("cpu", copy=True)
                                 for k, v in model.state_dict().items()}))
            if model is not made:
                return model
            try:  # the object returned is trained as a copy: a global instance that the
                return copy.deepcopy(model)  # factory returns (the caller's) stays as built
            except Exception:  # noqa: BLE001 - not copyable: trained itself, restored below
                return model
        if made is first[0]:  # one shared instance (``return model`` of a global): every
            if model is made:  # run starts from it as built
                try:
                    model = copy.deepcopy(model)
                except Exception as e:  # noqa: BLE001 - e.g. a lock held by it
                    raise TypeError(f"make_model() returns the same model object on every "
                                    f"call and it cannot be deep-copied ({type(e).__name__}: "
                                    f"{e}); the doctor trains several copies: build a new "
                                    "model in each call") from None
            model.load_state_dict(first[1])
        else:  # a factory drawing from an unseeded generator: every run (baseline and
            _load_if_same(model, first[1])  # cures) starts from the same weights
        return model

    return fresh, rows


def _calibrating(fresh: Callable[[int], nn.Module], x: torch.Tensor
                 ) -> Callable[[int], nn.Module]:
    """``fresh`` whose models have their population batch-norm statistics
    (:func:`~depthlab.torch.train.calibrate_population`) set from ``x`` as built."""

    def calibrated(seed: int) -> nn.Module:
        model = fresh(seed)
        calibrate_population(model, x)
        return model

    return calibrated


def _scratch_copy(model: nn.Module, fresh: Callable[[int], nn.Module], seed: int
                  ) -> nn.Module:
    """A copy of ``model`` to change (a checking step): a deep copy, or for a factory's model
    that cannot be deep-copied (a lock, an open file) another build, ``fresh(seed)``, which
    starts from the same weights."""
    try:
        return copy.deepcopy(model)
    except Exception:  # noqa: BLE001 - e.g. 'cannot pickle _thread.lock object'
        return fresh(seed)


def _load_if_same(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` into ``model`` when its state has the same keys and shapes."""
    own = model.state_dict()
    if own.keys() != state.keys() or any(own[k].shape != v.shape for k, v in state.items()):
        return
    try:
        model.load_state_dict(state)
    except (RuntimeError, ValueError, TypeError):
        return


def _as_tensor(v: Any, label: str) -> torch.Tensor:
    if isinstance(v, torch.Tensor):  # an inference-mode tensor cannot be saved for backward
        return v.clone() if v.is_inference() else v.detach()
    if v is None:
        raise TypeError(f"{label} is None; expected an array or a tensor" + (
            " (give x_val and y_val together, or neither)" if label.endswith("_val") else ""))
    try:
        a = np.asarray(v)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{label} must be an array or a tensor, got {type(v).__name__}: "
                        f"{e}") from None
    if a.dtype.kind == "O" and a.ndim == 0:  # not an array at all
        raise TypeError(f"{label} must be an array or a tensor, got {type(v).__name__}")
    if a.dtype.kind == "O":  # numbers held as Python objects (a pandas object column)
        try:
            b = np.array(a.tolist())
        except (TypeError, ValueError):
            b = a
        a = b if b.dtype.kind in "biuf" and b.shape == a.shape else a
    kinds = {"U": "strings", "S": "bytes", "O": "Python objects", "M": "datetimes",
             "m": "timedeltas", "V": "records"}
    if a.dtype.kind in kinds:  # was 'y must be an array or a tensor, got ndarray: can't
        # convert np.ndarray of type numpy.str_. The only supported types are: ...'
        hint = " (class names: give their indices, np.unique(y, return_inverse=True)[1])" \
            if label.startswith("y") and (a.dtype.kind in "US" or (
                a.size and isinstance(a.flat[0], (str, bytes)))) else ""
        raise TypeError(f"{label} must hold numbers, got {type(v).__name__} of dtype "
                        f"{a.dtype} ({kinds[a.dtype.kind]}){hint}")
    if not a.flags.writeable:  # a pandas column, np.load(mmap_mode="r"): torch warns
        a = a.copy()  # that it cannot share a read-only array's memory
    try:
        return torch.as_tensor(a)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{label} must be an array or a tensor of numbers, got "
                        f"{type(v).__name__} of dtype {a.dtype}: {e}") from None


_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)


def tensor_data(data: Any, device: torch.device, dtype: torch.dtype, seed: int,
                float_targets: bool = False) -> TensorData:
    """``data`` -> tensors on ``device``: a Dataset-like object (``x_train``, ``y_train``,
    ``x_val``, ``y_val``), ``(x, y)`` (``VAL_FRACTION`` held out by a seeded permutation when
    there are at least 10 rows) or ``(x, y, x_val, y_val)`` (validation parts None: as ``(x, y)``;
    examples of the same shape as the training ones). Inputs are cast to the model's
    floating ``dtype`` (integer inputs such as token ids become int64, uint8/bool ``dtype``);
    integer labels become int64, float targets ``dtype``; boolean targets ``dtype`` too when
    ``float_targets`` (a loss of float targets: BCE, MSE, ...). A ``torch.utils.data`` Dataset of
    ``(x, y)`` pairs or a DataLoader (the examples its sampler draws, through its own
    ``collate_fn`` when that is not torch's default; the doctor keeps its own batch order) is
    taken as ``(x, y)`` (:func:`pairs_from_torch`), and a pair ``(train, val)`` of them as
    ``(x, y, x_val, y_val)``; so is a list of mini-batches ``[(x_b, y_b), ...]`` (e.g.
    ``list(loader)``), concatenated (:func:`_joined_batches`)."""
    torch_data = (torch.utils.data.Dataset, torch.utils.data.DataLoader)
    if _is_batch_list(data):
        data = _joined_batches(data)
    if isinstance(data, torch_data):
        data = pairs_from_torch(data, device, seed=seed)
    elif isinstance(data, (tuple, list)) and len(data) == 2 and \
            any(isinstance(p, torch_data) for p in data):
        # (train_loader, val_loader): was taken for (x, y), 'x must be an array or a tensor,
        # got Subset: setting an array element with a sequence ...'
        bad = next((p for p in data if not isinstance(p, torch_data)), None)
        if bad is not None:
            raise TypeError(f"data is a pair of a torch Dataset/DataLoader and a "
                            f"{type(bad).__name__}; expected (train, val) as two torch "
                            "Datasets/DataLoaders of (x, y) pairs, or (x, y) arrays/tensors")
        data = (*pairs_from_torch(data[0], device, seed=seed),
                *pairs_from_torch(data[1], device, "validation", seed))
    if hasattr(data, "x_train") and hasattr(data, "y_train"):
        parts = [data.x_train, data.y_train, getattr(data, "x_val", None),
                 getattr(data, "y_val", None)]
        if parts[2] is None or parts[3] is None or len(parts[2]) == 0:
            parts = parts[:2]
    elif isinstance(data, (tuple, list)) and len(data) in (2, 4):
        parts = list(data)
        if len(parts) == 4 and parts[2] is None and parts[3] is None:
            parts = parts[:2]  # no validation set given: held out as for (x, y)
    else:
        raise TypeError("data must be a Dataset (x_train, y_train, x_val, y_val), a tuple "
                        "(x, y) or (x, y, x_val, y_val), or a torch Dataset/DataLoader of (x, y) "
                        f"pairs, got {type(data).__name__}")
    ts = [_as_tensor(v, label) for v, label in zip(parts, ("x", "y", "x_val", "y_val"))]
    for xs, ys, label in ((ts[0], ts[1], ""), *(((ts[2], ts[3], "_val"),) if len(ts) == 4
                                                 else ())):
        if xs.dim() < 1 or ys.dim() < 1 or xs.shape[0] != ys.shape[0]:
            raise ValueError(f"x{label} has {tuple(xs.shape)} rows but y{label} has "
                             f"{tuple(ys.shape)}; expected the same number of rows")
    if ts[0].shape[0] == 0:
        raise ValueError("the training data are empty")
    for k, label in ((2, "x"), (3, "y")):
        if len(ts) == 4 and ts[k].shape[1:] != ts[k - 2].shape[1:]:
            raise ValueError(f"{label}_val has examples of shape {tuple(ts[k].shape[1:])} but "
                             f"{label} has {tuple(ts[k - 2].shape[1:])}; expected the same")
    check_fits(sum(t.numel() * max(t.element_size(), 4) for t in ts), device)

    def conv(t: torch.Tensor, is_x: bool, label: str) -> torch.Tensor:
        if t.is_complex() or not (t.is_floating_point() or t.dtype in _INTEGER_DTYPES):
            raise TypeError(f"{'inputs' if is_x else 'targets'} must be real numbers, got "
                            f"dtype {t.dtype}")
        if t.is_floating_point():
            return _check_finite(t, t.to(device=device, dtype=dtype), label)
        if is_x and t.dtype in (torch.uint8, torch.bool):
            return t.to(device=device, dtype=dtype)  # pixels / masks: numbers, not indices
        if not is_x and float_targets and t.dtype == torch.bool:
            return t.to(device=device, dtype=dtype)  # BCE's 0/1 targets (torch takes floats)
        return t.to(device=device, dtype=torch.int64)  # labels, token ids

    _warn_unscaled_pixels(ts[0])
    x, y = conv(ts[0], True, "x"), conv(ts[1], False, "y")
    if len(ts) == 4:
        return TensorData(x, y, conv(ts[2], True, "x_val"), conv(ts[3], False, "y_val"))
    n = x.shape[0]
    if n < 10:
        return TensorData(x, y)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(n)).to(device)
    k = max(1, int(round(VAL_FRACTION * n)))
    return TensorData(x[order[k:]], y[order[k:]], x[order[:k]], y[order[:k]])


def _warn_unscaled_pixels(x: torch.Tensor) -> None:
    """A UserWarning for uint8 inputs above 1 (pixels 0 to 255), which the model gets as
    those numbers: raw digits images as uint8 gave a CNN 94% dead ReLU units and chance
    accuracy, which the doctor blamed on the learning rate, where x / 255 trained to 0.67
    held-out accuracy with no such finding."""
    if x.dtype != torch.uint8 or x.numel() == 0:
        return
    top = int(x.max())
    if top > 1:
        warnings.warn(f"x holds uint8 values up to {top} (pixels?), which the model gets as the "
                      "numbers 0 to 255, not scaled to [0, 1] as torchvision's ToTensor does: "
                      "give x / 255 (or normalized inputs) unless the model scales them itself",
                      UserWarning, stacklevel=5)  # the caller of dlt.doctor


def _is_batch_list(data: Any) -> bool:
    """Whether ``data`` is a list (or tuple) of mini-batches ``(x_b, y_b)``, as
    ``list(loader)`` gives them: every item a pair of tensors/arrays with as many rows each,
    ``x_b`` of at least 2 dimensions (rows of features; a pair ``(x, y)`` of whole arrays
    has no such items)."""
    if not isinstance(data, (list, tuple)) or not data:
        return False
    for item in data:
        if not isinstance(item, (list, tuple)) or len(item) != 2 or \
                not all(isinstance(t, (torch.Tensor, np.ndarray)) for t in item):
            return False
        bx, by = item
        if bx.ndim < 2 or by.ndim < 1 or bx.shape[0] != by.shape[0]:
            return False
    return True


def _joined_batches(batches: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of a list of mini-batches (:func:`_is_batch_list`), concatenated in order;
    a ValueError naming the first batch whose examples differ in shape from the first's. A
    list of 2 or 4 batches was taken for ``(x, y)`` or ``(x, y, x_val, y_val)`` ('x must be
    an array or a tensor, got tuple: setting an array element with a sequence'), any other
    number refused."""
    xs = [_as_tensor(b[0], "x") for b in batches]
    ys = [_as_tensor(b[1], "y") for b in batches]
    for k, (bx, by) in enumerate(zip(xs, ys)):
        for t, first, label in ((bx, xs[0], "x"), (by, ys[0], "y")):
            if t.shape[1:] != first.shape[1:]:
                raise ValueError(f"data: batch {k} of the list of (x, y) batches has {label} "
                                 f"of shape {tuple(t.shape[1:])} per example, batch 0 "
                                 f"{tuple(first.shape[1:])}; expected the same in every "
                                 "batch")
    check_fits(2 * sum(t.numel() * max(t.element_size(), 4) for t in (*xs, *ys)),
               xs[0].device)
    return torch.cat([t.to(xs[0].device) for t in xs]), torch.cat([t.to(ys[0].device)
                                                                   for t in ys])


_FIRST_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding, nn.RNNBase)
"""Weight layers whose kind decides how :func:`shape_inputs` shapes a model's inputs."""


def _shaped_for(first: nn.Module | None, x: np.ndarray, image_shape: Any) -> np.ndarray:
    """Rows ``x`` shaped for a model whose inputs go first into ``first``."""
    n, d = x.shape[0], int(np.prod(x.shape[1:]))
    if isinstance(first, nn.Conv2d) and image_shape and len(image_shape) in (2, 3) \
            and int(np.prod(image_shape)) == d:
        shape = tuple(int(s) for s in image_shape)
        if len(shape) == 2:
            return x.reshape(n, 1, *shape)
        cin = first.in_channels
        lazy = isinstance(first, nn.modules.lazy.LazyModuleMixin) and \
            first.has_uninitialized_params()  # in_channels 0 until its first forward
        last = shape[-1] <= 4 and shape[-1] < shape[0] if lazy else \
            shape[-1] == cin and shape[0] != cin
        if last:  # (H, W, C) files: channels first for torch (a lazy conv: C of 1 to 4)
            return np.ascontiguousarray(x.reshape(n, *shape).transpose(0, 3, 1, 2))
        return x.reshape(n, *shape)
    if isinstance(first, nn.Conv1d):
        return x.reshape(n, 1, d)
    if isinstance(first, nn.RNNBase) and d % first.input_size == 0:
        return x.reshape(n, d // first.input_size, first.input_size)
    return x.reshape(n, d)


def _runs_on(model: nn.Module, x: np.ndarray) -> bool:
    """Whether one eval-mode forward of ``model`` on the rows ``x`` (cast to its device and
    floating dtype) runs; nothing of the model changes (a lazy model is tried as a copy)."""
    device, dtype = model_device_dtype(model)
    t = torch.as_tensor(np.ascontiguousarray(x))
    t = t.to(device=device, dtype=dtype if t.is_floating_point() or t.dtype in (
        torch.uint8, torch.bool) else torch.int64)
    try:
        m = copy.deepcopy(model) if _has_lazy(model) else model
        with torch.no_grad(), rx.untouched(m), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m.eval()
            m(t)
    except Exception:  # noqa: BLE001 - the user's model refused this shape
        return False
    return True


def shape_inputs(x: np.ndarray, image_shape: Any, model: nn.Module,
                 rows: np.ndarray | None = None) -> np.ndarray:
    """Rows ``x`` (N, D) shaped for ``model``, as ``depthlab doctor --torch`` gives them: images
    ``(N, C, H, W)`` when ``image_shape`` (``(H, W)``: one channel; ``(H, W, C)`` whose C is
    the convolution's input channels, or a lazy one's C of at most 4 and less than H: moved to
    channels-first) has D entries and the model's
    first weight layer is a ``Conv2d``; ``(N, 1, D)`` for a ``Conv1d``; sequences
    ``(N, D / input_size, input_size)`` for an ``RNN``/``LSTM``/``GRU``; else ``(N, D)``.
    The first weight layer is the first of ``model.modules()``; when the model holds layers
    of other kinds too (a custom ``forward`` may run a conv declared after its linear head),
    each kind's shape is tried with one forward on two of ``rows`` (default ``x``; the
    training rows when shaping the validation rows, so both get the same shape) and the first
    that runs is taken (none: the first layer's)."""
    kinds = [m for m in model.modules() if isinstance(m, _FIRST_LAYERS)]
    firsts: list[nn.Module | None] = [kinds[0] if kinds else None]
    for cls in (nn.Conv2d, nn.Conv1d, nn.Conv3d, nn.RNNBase, nn.Linear):
        m = next((k for k in kinds if isinstance(k, cls)), None)
        if m is not None and not any(type(f) is type(m) for f in firsts):
            firsts.append(m)
    shaped = _shaped_for(firsts[0], x, image_shape)
    trial = x if rows is None else rows
    if len(firsts) == 1 or len(trial) == 0:
        return shaped
    seen: list[tuple[int, ...]] = []
    for first in firsts:
        t = _shaped_for(first, trial[:2], image_shape)
        if t.shape[1:] in seen:
            continue
        seen.append(t.shape[1:])
        if _runs_on(model, t):
            return _shaped_for(first, x, image_shape)
    return shaped


def _shaped_dataset(data: Any, model: nn.Module) -> Any:
    """A depthlab data set (``x_train`` rows ``(N, D)`` and an ``info`` dict) as
    ``(x, y, x_val, y_val)`` with its inputs shaped for ``model`` (:func:`shape_inputs`: a
    ``Conv2d`` model gets ``info["image_shape"]`` images); anything else as given."""
    info = getattr(data, "info", None)
    x = getattr(data, "x_train", None)
    if not isinstance(info, dict) or not isinstance(x, np.ndarray) or x.ndim != 2 \
            or not hasattr(data, "y_train"):
        return data
    shape = info.get("image_shape")
    xv = getattr(data, "x_val", None)
    shaped_val = shape_inputs(xv, shape, model, rows=x) if isinstance(xv, np.ndarray) and \
        xv.ndim == 2 and len(xv) else None
    return (shape_inputs(x, shape, model), data.y_train, shaped_val,
            getattr(data, "y_val", None) if shaped_val is not None else None)


def _default_collate(fn: Any) -> bool:
    """Whether ``fn`` is torch's own collation (``default_collate``, or ``default_convert``
    of a loader without batching): stacking the items adds nothing to them."""
    from torch.utils.data import _utils

    return fn in (_utils.collate.default_collate, _utils.collate.default_convert)


def _loader_indices(loader: torch.utils.data.DataLoader, seed: int = 0) -> list[int] | None:
    """The dataset indices a DataLoader visits in one pass, sorted (duplicates kept); None
    when it visits every index once (a ``SequentialSampler``, or a ``RandomSampler`` without
    replacement over the whole dataset). A ``SubsetRandomSampler`` (a train/validation split
    by indices), a ``WeightedRandomSampler`` or a custom ``batch_sampler`` decides which
    examples the loader trains on; their order is the doctor's own. A random draw (with
    replacement, a weighted one) takes torch's global generator seeded with ``seed`` (the same
    draw in every call), or the sampler's own ``generator``, whose state is restored after."""
    from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

    sampler, batches = loader.sampler, loader.batch_sampler
    custom_batches = batches is not None and type(batches) is not BatchSampler
    dropped = _dropped_tail(loader)
    if dropped is not None:
        return dropped
    if not custom_batches:
        if type(sampler) is SequentialSampler:
            return None
        if type(sampler) is RandomSampler and not sampler.replacement and \
                sampler.num_samples == len(loader.dataset):
            return None
    gens = [g for g in (getattr(sampler, "generator", None),
                        getattr(batches, "generator", None),
                        getattr(getattr(batches, "sampler", None), "generator", None))
             if isinstance(g, torch.Generator)]
    states = [(g, g.get_state()) for g in gens]
    try:
        with torch.random.fork_rng(devices=[]):  # the CPU generator, which samplers draw
            torch.default_generator.manual_seed(seed)  # from, left as found
            drawn = (i for b in batches for i in b) if custom_batches else iter(sampler)
            return sorted(int(i) for i in drawn)
    finally:
        for g, state in states:
            g.set_state(state)


def _dropped_tail(loader: torch.utils.data.DataLoader) -> list[int] | None:
    """The indices a ``drop_last=True`` loader with a fixed order yields (its sampler's order
    cut to whole batches, sorted): a ``SequentialSampler``, or any sampler without its own
    generator drawing the same order under two seeds of torch's global generator (a list or
    range of indices). None otherwise: without ``drop_last``, or a random order, which drops a
    different tail in every pass, so that every example is trained on."""
    from torch.utils.data import BatchSampler, SequentialSampler

    batches = loader.batch_sampler
    if type(batches) is not BatchSampler or not batches.drop_last:
        return None
    sampler = batches.sampler
    if type(sampler) is SequentialSampler:
        order = list(range(len(sampler)))
    elif isinstance(getattr(sampler, "generator", None), torch.Generator):
        return None
    else:
        draws = []
        with torch.random.fork_rng(devices=[]):
            for seed in (0, 1):
                torch.default_generator.manual_seed(seed)
                draws.append([int(i) for i in sampler])
        if draws[0] != draws[1]:
            return None
        order = draws[0]
    keep = len(order) // batches.batch_size * batches.batch_size  # (a sampler without len)
    if keep == 0:
        raise ValueError(f"data: the DataLoader yields no batch (drop_last=True with "
                         f"batch_size {batches.batch_size} and {len(order)} examples)")
    return sorted(order[:keep])


def pairs_from_torch(data: Any, device: torch.device, part: str = "training", seed: int = 0
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of a ``torch.utils.data`` DataLoader or Dataset: a ``TensorDataset``'s two
    tensors, else every item ``dataset[i]`` (an ``(x, y)`` pair, or a dict with keys ``x`` and
    ``y``) stacked in index order, after
    checking that ``len`` times the first pair's size fits in memory. A DataLoader gives the
    examples its sampler draws in one pass (all of them for the default samplers; a
    ``SubsetRandomSampler``'s indices; a custom ``batch_sampler``'s), in index order (with
    ``drop_last=True`` and a fixed order, a ``SequentialSampler``'s, the examples of its whole
    batches only: the tail it never yields is not trained on; a shuffled loader drops a
    different tail in every pass, so all of its examples are used), and
    when its ``collate_fn`` is not torch's default (it normalizes, casts, pads, builds
    ``(x, y)`` from dicts) the batches that ``collate_fn`` makes of them, ``batch_size`` items
    each in index order, concatenated: it must return ``(x, y)`` with the same shape per
    example in every batch (a collate_fn padding each batch to its own longest sequence is
    refused by name: pad to one fixed length). Its ``batch_size`` and ``shuffle`` are not
    the doctor's (``batch_size=``, one fixed seeded order), and ``num_workers`` is not used."""
    loader = data if isinstance(data, torch.utils.data.DataLoader) else None
    ds = data.dataset if loader is not None else data
    what = type(ds).__name__
    if isinstance(ds, torch.utils.data.IterableDataset) or not hasattr(ds, "__len__"):
        raise TypeError(f"data: {what} has no length (an iterable dataset); give (x, y) tensors "
                        "or a map-style Dataset of (x, y) pairs")
    idx = _loader_indices(loader, seed) if loader is not None else None
    if idx is not None:
        ds = torch.utils.data.Subset(ds, idx)
    if loader is not None and not _default_collate(loader.collate_fn):
        return _collated(loader, ds, what, device, part)
    if isinstance(ds, torch.utils.data.Subset) and \
            isinstance(ds.dataset, torch.utils.data.TensorDataset) and len(ds):
        inner = ds.dataset.tensors
        if len(inner) == 2:
            rows = torch.as_tensor(ds.indices, dtype=torch.long, device=inner[0].device)
            return inner[0][rows], inner[1][rows.to(inner[1].device)]
    if isinstance(ds, torch.utils.data.TensorDataset):
        if len(ds.tensors) != 2:
            raise TypeError(f"a TensorDataset of (x, y) was expected, got {len(ds.tensors)} "
                            "tensors")
        return ds.tensors[0], ds.tensors[1]
    n = len(ds)
    if n == 0:
        raise ValueError(f"the {part} data are empty")
    first = _xy_of(ds[0])
    if not isinstance(first, (tuple, list)) or len(first) != 2:
        hint = (f" (keys {sorted(map(str, first))[:6]}): give a DataLoader whose collate_fn "
                "returns (x, y) batches" if isinstance(first, dict) else "")
        raise TypeError(f"data: {what}[0] is a {type(first).__name__}{hint}; expected an "
                        "(x, y) pair (or a dict with keys 'x' and 'y')")
    pair = [_as_tensor(v, label) for v, label in zip(first, ("x", "y"))]
    check_fits(2 * n * sum(t.numel() * max(t.element_size(), 4) for t in pair), device)  # items
    # and their stacked copy
    xs, ys = [pair[0]], [pair[1]]
    for i in range(1, n):
        x, y = _xy_of(ds[i])
        xs.append(_as_tensor(x, "x"))
        ys.append(_as_tensor(y, "y"))
    try:
        return torch.stack(xs), torch.stack(ys)
    except RuntimeError as e:
        raise ValueError(f"data: the items of {what} differ in shape: {e}") from None


def _xy_of(item: Any) -> Any:
    """A dict item or batch with keys ``'x'`` and ``'y'`` (its other keys unused) as the pair
    ``(x, y)``; anything else as it is."""
    if isinstance(item, dict) and "x" in item and "y" in item:
        return item["x"], item["y"]
    return item


def _collated(loader: torch.utils.data.DataLoader, ds: Any, what: str, device: torch.device,
              part: str) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`pairs_from_torch` for a loader with its own ``collate_fn``: the batches it makes
    of ``ds`` (the sampled items) in index order, concatenated."""
    n = len(ds)
    if n == 0:
        raise ValueError(f"the {part} data are empty")
    name = getattr(loader.collate_fn, "__name__", type(loader.collate_fn).__name__)
    batched = loader.batch_size is not None or loader.batch_sampler is not None
    size = loader.batch_size or (loader.batch_sampler.batch_size  # type: ignore[union-attr]
                                 if hasattr(loader.batch_sampler, "batch_size") else 64) \
        if batched else 1
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    for start in range(0, n, size):
        items = [ds[i] for i in range(start, min(n, start + size))]
        out = _xy_of(loader.collate_fn(items if batched else items[0]))
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            keys = f" with keys {sorted(map(str, out))[:6]}" if isinstance(out, dict) else ""
            raise TypeError(f"data: the DataLoader's collate_fn {name} returns a "
                            f"{type(out).__name__}{keys}; expected an (x, y) pair of tensors")
        bx, by = (_as_tensor(v, label) for v, label in zip(out, ("x", "y")))
        if not batched:
            bx, by = bx.unsqueeze(0), by.unsqueeze(0)
        if xs and (bx.shape[1:] != xs[0].shape[1:] or by.shape[1:] != ys[0].shape[1:]):
            raise ValueError(f"data: the DataLoader's collate_fn {name} makes batches of "
                             f"different shapes per example (x {tuple(xs[0].shape[1:])} in "
                             f"the first, {tuple(bx.shape[1:])} at item {start}); the doctor "
                             "takes the data as one tensor: pad to one fixed length")
        if not xs:
            per = sum(t.numel() * max(t.element_size(), 4) for t in (bx, by)) / max(1, len(bx))
            check_fits(int(2 * n * per), device)  # the batches and their concatenated copy
        xs.append(bx)
        ys.append(by)
    return torch.cat(xs), torch.cat(ys)


def _check_finite(original: torch.Tensor, cast: torch.Tensor, label: str) -> torch.Tensor:
    """``cast``, or a ValueError naming the first entry of ``label`` that is NaN, infinite or
    too large for the model's dtype (training on it would only report a divergence)."""
    bad = ~torch.isfinite(cast)
    if not bool(bad.any()):
        return cast
    where = tuple(int(i) for i in bad.nonzero()[0].cpu())
    at = f"row {where[0]}" + (f", index {where[1:]}" if len(where) > 2 else
                              f", column {where[1]}" if len(where) == 2 else "")
    value = float(original[where])
    if math.isfinite(value):
        raise ValueError(f"{label} value {value:g} ({at}) does not fit in the model's dtype "
                         f"{cast.dtype}; accepted: finite numbers of that dtype")
    raise ValueError(f"{label} contains NaN or infinity (first at {at}); accepted: finite "
                     "numbers")


def _short(v: Any, limit: int = 80) -> str:
    """``repr(v)`` on one line, at most ``limit`` characters (an optimizer's repr spans many
    lines)."""
    text = " ".join(repr(v).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _optimizer_name(opt: Any) -> str | None:
    """The :data:`OPTIMIZERS` name of ``opt``: a name as given, or that of a ``torch.optim``
    class of the table (``torch.optim.Adam`` -> ``"adam"``); a TypeError for another class
    (its name and the accepted ones) or an optimizer instance (the doctor builds a new
    optimizer for each fresh model); None for anything else."""
    if isinstance(opt, str):
        return opt
    if isinstance(opt, type) and issubclass(opt, torch.optim.Optimizer):
        name = next((k for k, cls in OPTIMIZERS.items() if cls is opt), None)
        if name is None:
            raise TypeError(f"optimizer class {opt.__module__}.{opt.__qualname__} is not "
                            f"supported; expected one of "
                            f"{', '.join('torch.optim.' + c.__name__ for c in OPTIMIZERS.values())}"
                            f" (or their names {sorted(OPTIMIZERS)})")
        return name
    if isinstance(opt, torch.optim.Optimizer):
        name = next((k for k, cls in OPTIMIZERS.items() if type(opt) is cls), None)
        hint = f"('{name}', {{'lr': {opt.defaults.get('lr')!r}}})" if name else \
            "('sgd', {'lr': 0.1})"
        raise TypeError(f"optimizer is a {type(opt).__name__} instance bound to one model's "
                        f"parameters; the doctor trains fresh models, each with a new "
                        f"optimizer: give its name or class and arguments, e.g. {hint}")
    return None


def _from_factory(make_opt: Callable) -> tuple[str, dict[str, Any]]:
    """``(name, kwargs)`` of an optimizer factory ``make_opt(params) -> optimizer`` (``lambda
    ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)`` -> ``("sgd", {"lr": 0.05, "momentum":
    0.9})``): it is called once on a scratch parameter and its optimizer's class and
    parameter group read (arguments equal to the class's own defaults left out), so every fresh
    model gets a new optimizer of the same kind, and the lr/optimizer cures apply to it."""
    scratch = nn.Parameter(torch.zeros(2, 2))
    what = _short(make_opt, 60)
    try:
        opt = make_opt([scratch])
    except Exception as e:  # noqa: BLE001 - not a factory of parameters
        said = " ".join(str(e).split())[:200]
        raise TypeError(f"optimizer {what} was called as optimizer(params) and raised "
                        f"{type(e).__name__}: {said}; expected a name, (name, kwargs), a "
                        "torch.optim class, or a function params -> torch.optim optimizer") \
            from None
    if not isinstance(opt, torch.optim.Optimizer):
        raise TypeError(f"optimizer {what} returned a {type(opt).__name__} when called as "
                        "optimizer(params); expected a torch.optim optimizer")
    name = _optimizer_name(type(opt))  # a class outside OPTIMIZERS: refused by name
    signature = inspect.signature(type(opt)).parameters
    # its parameter group: what it trains with (SGD([{"params": ps, "lr": 0.01}], lr=0.1)
    # trains at 0.01, its defaults say 0.1)
    settings = [_group_kwargs(g, signature) for g in opt.param_groups] or \
        [_group_kwargs(opt.defaults, signature)]
    differ = sorted({k for g in settings for k in set(g) | set(settings[0])
                     if repr(g.get(k)) != repr(settings[0].get(k))})
    if differ:  # (its defaults were taken: weight decay only on the weights was none at all)
        said = "; ".join(f"{k}: " + ", ".join(repr(g.get(k, signature[k].default))
                                             for g in settings) for k in differ[:3])
        raise ValueError(f"optimizer {what} makes {len(settings)} parameter groups with "
                         f"different settings ({said}); the doctor trains every fresh model "
                         f"with one setting for all its parameters: give it as (name, kwargs), "
                         f"e.g. ({name!r}, {settings[0]})")
    return name or "", settings[0]


def _group_kwargs(group: dict[str, Any], signature: Any) -> dict[str, Any]:
    """The arguments of an optimizer's parameter group that the class takes, those equal to
    the class's own defaults left out (``lr`` always kept, as a float)."""
    kwargs: dict[str, Any] = {}
    for k, v in group.items():
        if k == "params" or k not in signature:
            continue
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()  # lr=torch.tensor(0.01)
        if k == "lr":
            kwargs[k] = float(v)
            continue
        default = signature[k].default
        try:
            same = default is not inspect.Parameter.empty and bool(default == v)
        except Exception:  # noqa: BLE001 - a value without a plain truth value
            same = False
        if not same:
            kwargs[k] = v
    return kwargs


def _spec(optimizer: Any, steps: int, batch_size: int, seed: int,
          probe_every: int | None) -> TorchTrainSpec:
    if isinstance(optimizer, functools.partial) and not optimizer.args:
        optimizer = (optimizer.func, dict(optimizer.keywords))  # partial(torch.optim.SGD, lr=.1)
    elif callable(optimizer) and not isinstance(optimizer, (str, type, torch.optim.Optimizer)):
        optimizer = _from_factory(optimizer)  # lambda params: torch.optim.SGD(params, lr=.05)
    pair = isinstance(optimizer, (tuple, list)) and len(optimizer) == 2 \
        and isinstance(optimizer[1], dict)
    name = _optimizer_name(optimizer[0] if pair else optimizer)
    if name is None:
        raise TypeError(f"optimizer must be a name or (name, kwargs) such as ('sgd', "
                        f"{{'lr': 0.1}}), or a torch.optim class (alone or in place of the "
                        f"name), got {type(optimizer).__name__} {_short(optimizer)}")
    kwargs = dict(optimizer[1]) if pair else {}
    if name.lower() not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}{did_you_mean(name, OPTIMIZERS)}; expected "
                         f"one of {sorted(OPTIMIZERS)}")
    default_lr = 0.1 if name.lower() == "sgd" else 1e-3
    lr = kwargs.pop("lr", default_lr)
    for label, v in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, Integral) or v < 1:
            raise ValueError(f"{label} must be a positive integer, got {v!r}")
    steps, batch_size = int(steps), int(batch_size)
    every = probe_every if probe_every is not None else max(1, steps // 10)
    return TorchTrainSpec(optimizer=name, lr=lr, optimizer_kwargs=kwargs, steps=steps,
                     batch_size=batch_size, seed=seed, probe_every=every)


# -- one diagnosed run -------------------------------------------------------------------------

@dataclass
class _Run:
    ctx: TorchRunContext
    result: TrainResult
    findings: list[Finding]
    metrics_by_kind: dict[str, float]


def _probe_fn(percentiles: bool, layers: list[rx.TracedLayer] | None = None) -> Callable:
    """:func:`depthlab.torch.probe`; with ``percentiles=False`` no ``pre_pK``/``act_pK`` (the
    rules read none; only the stored baseline keeps them for the report's figures). The
    traced ``layers`` whose activation the forward applies itself (``F.relu(self.fc(x))``)
    get their activation rows from :func:`functional_act_rows`."""
    from ..probes.stats import PERCENTILES
    from .probe import probe

    qs = PERCENTILES if percentiles else ()
    functional = [t for t in layers or [] if t.functional and t.ran]
    normed = [t for t in layers or [] if t.norm is not None and t.activation is not None
              and t.ran]

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable
            ) -> pd.DataFrame:
        with _norm_gradients(normed) as grads:
            table = probe(model, x, y, loss_fn, percentiles=qs)
        table = functional_act_rows(table, model, x, functional, qs) if functional else table
        return _with_norm_rows(table, grads) if grads else table

    return run


NORM_GRAD = "grad_norm_std"
"""The doctor's own probe rows (not stored): the std of dL/d(output of the normalization
between a layer and its activation), :func:`_norm_gradients`; the gradient rules read it in
place of ``grad_pre_std`` for those layers (:func:`_rules_frame`)."""


@contextlib.contextmanager
def _norm_gradients(layers: list[rx.TracedLayer]) -> Iterator[dict[str, list]]:
    """Within the block, the gradients reaching the output of each ``layers``' normalization
    module (:attr:`~depthlab.torch.prescriptions.TracedLayer.norm`, e.g. the ``BatchNorm2d`` of
    ``conv -> bn -> relu``): ``{layer name: [n, sum g, sum g^2]}`` (float64, every call
    pooled). That is the gradient the rules judge for such a layer, as depthlab's probe points
    of a batch-normalized network read it after the norm (the activation's input): the
    gradient at the layer's own output is the norm's divided by the std of the norm's input
    (Ioffe & Szegedy 2015), so it follows the input's scale alone (a batch-normalized MLP on
    inputs x 0.05 trains as on x, and its first layer's output gradient is 20x larger)."""
    grads: dict[str, list] = {}
    by_norm: dict[nn.Module, list[str]] = {}
    for t in layers:
        by_norm.setdefault(t.norm, []).append(t.name)

    def on_forward(m: nn.Module, _args: Any, out: Any) -> None:
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            return  # under no_grad (accuracy, a frozen part)

        def take(g: torch.Tensor) -> None:
            g = g.detach().to(torch.float64)
            for name in by_norm[m]:
                acc = grads.setdefault(name, [0, 0.0, 0.0])
                acc[0] += g.numel()
                acc[1] += float(g.sum())
                acc[2] += float((g * g).sum())

        out.register_hook(take)  # before an in-place activation: the gradient of this value

    handles = [m.register_forward_hook(on_forward) for m in by_norm]
    try:
        yield grads
    finally:
        for h in handles:
            h.remove()


def _with_norm_rows(table: pd.DataFrame, grads: dict[str, list]) -> pd.DataFrame:
    """``table`` with a :data:`NORM_GRAD` row per layer of ``grads`` (numbered as the table
    numbers the layer's module)."""
    index = _layer_index(table, [])  # (weight_std rows: a block's rows name the block)
    rows = []
    for name, (n, s1, s2) in grads.items():
        if name in index and n:
            mean = s1 / n
            rows.append({"step": int(table["step"].iloc[0]) if len(table) else 0,
                         "layer": index[name], "module": name, "quantity": NORM_GRAD,
                         "value": math.sqrt(max(s2 / n - mean * mean, 0.0))})
    return pd.concat([table, pd.DataFrame(rows)], ignore_index=True) if rows else table


def _rules_frame(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(frame the rules read, table kept)``: the probe table without its :data:`NORM_GRAD`
    rows (kept), and for the rules each such layer's ``grad_pre_std`` replaced by its
    :data:`NORM_GRAD` value at the same step (see :func:`_norm_gradients`)."""
    extra = table["quantity"] == NORM_GRAD
    if not extra.any():
        return table, table
    kept = table[~extra].reset_index(drop=True)
    by = table[extra].set_index(["step", "layer"])["value"]
    by = by[~by.index.duplicated(keep="last")]
    rules = kept.copy()
    g = rules["quantity"] == "grad_pre_std"
    at = pd.MultiIndex.from_frame(rules.loc[g, ["step", "layer"]])
    has = at.isin(by.index)
    values = rules.loc[g, "value"].to_numpy(copy=True)
    values[has] = by.reindex(at[has]).to_numpy()
    rules.loc[g, "value"] = values
    return rules, kept


_ACT_ROWS = ("saturated_frac", "dead_frac", "inactive_frac")
_ROW_RANK = {"saturated_frac": 2, "dead_frac": 3, "inactive_frac": 4}


def functional_act_rows(table: pd.DataFrame, model: nn.Module, x: torch.Tensor,
                        layers: list[rx.TracedLayer], percentiles: tuple = ()
                        ) -> pd.DataFrame:
    """The probe ``table`` of ``model`` on ``x`` with the activation rows of ``layers`` whose
    activation the forward applies itself (a traced stand-in, ``functional=True``): the probe
    sees activation modules only, so ``F.relu(self.fc(x))`` had no ``act_*``,
    ``dead_frac``, ``inactive_frac`` (or, for a sigmoid, ``saturated_frac``) rows and the
    dead-unit and saturation rules saw nothing (a ReLU MLP trained at lr 3: 'no findings'
    with the loss at chance). One more forward on ``x`` (no gradients, in the model's mode,
    buffers and random streams as found: the probe's dropout masks) gives the tensors ``s``
    the function reads (:func:`depthlab.torch.prescriptions.functional_inputs`); ``a = f(s)``
    by the stand-in, and with the probe's definitions (:mod:`depthlab.torch.probe`):
    ``act_mean``/``act_std`` (population), ``act_pK``, ``saturated_frac`` (bounded ``f``),
    ``dead_frac`` (units on the layer's feature axis with ``f'(s) = 0`` on every entry),
    ``inactive_frac`` (ReLU family: ``s <= 0``), replacing the ``act_*`` rows of a norm in
    between (a module activation's rows are its output's, not the norm's). A layer that has
    such rows already, or whose function does not run on ``x``, is left as measured."""
    from ..probes.stats import SATURATION_RATIO, percentile_names
    from .accumulators import partition_percentiles
    from .layers import feature_axis

    index = _layer_index(table, layers)
    todo = [t for t in layers if t.name in index and t.activation is not None
            and activation_spec(t.activation) is not None
            and not table["quantity"].isin(_ACT_ROWS)[table["layer"] == index[t.name]].any()]
    if not todo:
        return table
    found = rx.functional_inputs(model, x, [t.module for t in todo])
    step = int(table["step"].iloc[0]) if len(table) and "step" in table.columns else 0
    rows: list[tuple] = []
    replaced: list[int] = []
    for t in todo:
        ss = found.get(t.module)
        if not ss:
            continue
        spec = activation_spec(t.activation)
        axis = feature_axis(t.module)
        vals, n, sat, off, alive, dead_ok = [], 0, 0, 0, None, True
        with torch.no_grad():
            for s in ss:
                f = s.to(torch.float64 if s.dtype == torch.float64 else torch.float32)
                vals.append(t.activation(f).reshape(-1))
                n += f.numel()
                d = spec.derivative(f).abs()
                if spec.bounded:
                    sat += int((d < SATURATION_RATIO * spec.max_derivative).sum())
                if spec.relu_family:
                    off += int((f <= 0).sum())
                if d.dim() < 2:
                    dead_ok = False
                    continue
                ax = axis % d.dim()
                unit = ~(d.amax(dim=[k for k in range(d.dim()) if k != ax]) <= 0)
                if alive is None:
                    alive = unit
                elif alive.shape == unit.shape:
                    alive = alive | unit
                else:
                    dead_ok = False
            a = torch.cat(vals)
        if n == 0:
            continue
        i = index[t.name]
        wide = a.double()
        out = [("act_mean", float(wide.mean())), ("act_std", float(wide.std(unbiased=False)))]
        if percentiles:  # the probe's rule, on the values in their dtype
            pct = partition_percentiles(a.cpu().numpy().copy(), percentiles).tolist()
            out += list(zip(percentile_names("act", percentiles), pct))
        if spec.bounded:
            out.append(("saturated_frac", sat / n))
        if dead_ok and alive is not None:
            out.append(("dead_frac", float((~alive).sum()) / alive.numel()))
        if spec.relu_family:
            out.append(("inactive_frac", off / n))
        rows += [(step, i, t.name, q, v) for q, v in out]
        replaced.append(i)
    if not rows:
        return table
    keep = ~((table["layer"].isin(replaced)) & table["quantity"].str.startswith("act_"))
    new = pd.DataFrame(rows, columns=["step", "layer", "module", "quantity", "value"])
    merged = pd.concat([table[keep], new.astype(table.dtypes.to_dict())], ignore_index=True)
    # the probe's order within a layer: pre_*, act_*, saturated, dead, inactive, the rest
    rank = merged["quantity"].map(lambda q: 0 if q.startswith("pre_") else 1 if
                                  q.startswith("act_") else _ROW_RANK.get(q, 5))
    order = np.lexsort((rank.to_numpy(), merged["layer"].to_numpy(), merged["step"].to_numpy()))
    return merged.iloc[order].reset_index(drop=True)


def _run(model: nn.Module, data: TensorData, loss_fn: Callable, spec: TorchTrainSpec,
         settings: dict[str, Any], percentiles: bool = False, chance: float = math.nan
         ) -> _Run:
    """Train ``model`` with probes and apply the rules (``chance``: the best constant
    prediction's loss, :func:`constant_loss`, which the rules judge a loss against, as the
    NumPy doctor's do: a learning rate too low to move leaves the loss above it)."""
    px, py = (t[:PROBE_EXAMPLES] for t in data.probe_source)
    layers = rx.trace(model, px[:TRACE_EXAMPLES])
    if not layers:
        raise ValueError(f"{type(model).__name__} has no weight layers (modules owning a "
                         "parameter of at least 2 dimensions) to diagnose")
    weights = [(i, t.name, rx.weight_tensors(t.module)[0]) for i, t in enumerate(layers, 1)]
    before = through_time(model, px, py, loss_fn)
    result = train(model, data, loss_fn, spec, probe=_probe_fn(percentiles, layers),
                   probe_batch=(px, py), weight_layers=weights)
    index = _layer_index(result.probes, layers)
    ratios = result.probes["quantity"] == "update_ratio"
    if ratios.any():  # update ratios were numbered in trace order: renumber as the probe does
        by_name = result.probes.loc[ratios, "module"].map(index)
        result.probes.loc[ratios, "layer"] = by_name.fillna(-1).astype(int)
        result.probes = result.probes[result.probes["layer"] >= 0].reset_index(drop=True)
    rules_frame, result.probes = _rules_frame(result.probes)
    config = describe(model, layers)
    drift = [] if result.history.diverged else bn_drift(model, px)
    tt = None if before is None or result.history.diverged else through_time(model, px, py,
                                                                               loss_fn)
    if tt is not None:
        tt["ratio_step0"] = before["ratio"]
        tt["index"] = index.get(tt["layer"])
    targets = target_scale(loss_fn, data.y if not isinstance(model, StandardizedTargets) else
                           (data.y - model.mean) / model.std)  # as the network learns them
    stats = {} if targets is None else {  # one column per target entry: (N,), (N, C) and
        "mean": np.ravel(targets["mean"]), "std": np.ravel(targets["std"])}  # (N, C, L) alike
    ctx = TorchRunContext(net=None, config=config, settings=settings, frame=rules_frame,
                          history=result.history, metrics=result.metrics, bn_drift=drift,
                          probe_examples=int(px.shape[0]),  # dead units, BN drift: not on 2
                          points_override=_points(result.probes, layers), chance_loss=chance,
                          through_time=tt, target_stats=stats)
    findings, by_kind = evaluate(ctx)  # in the rules' priority order
    with np.errstate(all="ignore"):
        for kind, rule in TORCH_RULES.items():
            by_kind[kind], finding = rule(ctx)
            if finding is not None:
                findings.append(finding)
    return _Run(ctx, result, findings, by_kind)


THROUGH_TIME_DECADES = 3.0
"""``vanishing_through_time``: the smallest time step's input-gradient norm at least 10^3 times
below the largest one's (see :func:`rule_vanishing_through_time`)."""


def through_time(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable
                 ) -> dict[str, Any] | None:
    """The gradient of the loss on ``(x, y)`` with respect to the input of the model's first
    recurrent layer (``nn.RNN``/``nn.GRU``/``nn.LSTM``), as the norm over examples and features
    at each time step: ``{"layer", "steps", "ratio" (smallest / largest step norm), "weakest",
    "strongest" (their steps), "strongest_norm", "first", "last" (norms at the first and last
    step)}``; None
    when the model has no recurrent layer, it does not run on a floating ``(N, T, F)`` tensor,
    has fewer than 2 steps, or no gradient reaches it. The model's weights, gradients, buffers,
    modes and random streams are left as they were (one forward and backward pass in training
    mode, as the doctor trains)."""
    rnn = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.RNNBase)), None)
    if rnn is None:
        return None
    name, layer = rnn
    seen: dict[str, torch.Tensor] = {}

    def leaf(m: nn.Module, args: tuple) -> tuple | None:
        t = args[0] if args else None
        if seen or not isinstance(t, torch.Tensor) or t.dim() != 3 or not t.is_floating_point():
            return None
        seen["x"] = t.detach().requires_grad_(True)
        return (seen["x"], *args[1:])

    hook = layer.register_forward_pre_hook(leaf)
    try:  # in training mode, as the doctor trains (a cuDNN RNN has no backward in eval mode)
        with untouched(model), torch.enable_grad():
            model.train()
            loss = loss_fn(model(x), y)
            if "x" not in seen or not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                return None
            g, = torch.autograd.grad(loss, seen["x"], allow_unused=True)
    except (RuntimeError, ValueError, TypeError):
        return None
    finally:
        hook.remove()
    if g is None:
        return None
    dim = 1 if layer.batch_first else 0
    norms = g.detach().double().transpose(0, dim).reshape(g.shape[dim], -1).norm(dim=1).cpu()
    steps = int(norms.numel())
    top = float(norms.max())
    if steps < 2 or not (math.isfinite(top) and top > 0):
        return None
    low = float(norms.min())
    return {"layer": name, "module": type(layer).__name__, "steps": steps, "ratio": low / top,
            "weakest": int(norms.argmin()), "strongest": int(norms.argmax()), "strongest_norm": top,
            "first": float(norms[0]), "last": float(norms[-1])}


def rule_vanishing_through_time(ctx: RunContext) -> tuple[float, Finding | None]:
    """A recurrent model that did not learn while the gradient vanished through time: after
    training, the loss gradient reaching the first recurrent layer's input at its weakest time
    step is ``10^-THROUGH_TIME_DECADES`` or less of that at its strongest (metric: those
    decades, ``-log10 ratio``), and the probe batch's loss did not end below a constant
    prediction's (``RunContext.chance_loss``), as ``rule_lr_too_low`` judges it. Such a model
    learns from its last few steps only; a label set by early steps stays at chance (a GRU on
    200 steps: 0 at steps 0..100)."""
    tt = getattr(ctx, "through_time", None)
    if not tt:
        return math.nan, None
    ratio = float(tt["ratio"])
    metric = -math.log10(ratio) if ratio > 0 else math.inf
    if metric < THROUGH_TIME_DECADES:
        return metric, None
    chance = ctx.chance_loss
    start, end = probe_loss_ends(ctx)
    if not stuck_at_chance(ctx, end):
        return metric, None
    layer = tt.get("index")
    ev = {"metric": metric, "threshold": THROUGH_TIME_DECADES, "ratio": ratio,
          "time_steps": tt["steps"], "weakest_step": tt["weakest"],
          "strongest_step": tt["strongest"], "grad_first_step": tt["first"],
          "grad_last_step": tt["last"], "ratio_step0": tt.get("ratio_step0", math.nan),
          "loss_step0": start, "loss_end": end, "chance_loss": chance}
    msg = (f"The gradient vanishes through time in the recurrent layer {tt['layer']!r} "
           f"({tt['module']}): after {_count(ctx.end, 'step')} the loss gradient reaching its "
           f"input at step {tt['weakest']} is "
           + (f"{ratio:.3g} of that at step {tt['strongest']}" if ratio > 0 else
              f"exactly 0 (underflowed), that at step {tt['strongest']} "
              f"{tt['strongest_norm']:.3g}")
           + f" (of {tt['steps']} time steps), so training learns from a few steps near step "
           f"{tt['strongest']} only, and the probe batch's loss went from {start:.4g} to "
           f"{end:.4g}, not below a constant prediction's {chance:.4g}.")
    text = ("Chrono-initialize the gate biases (Tallec & Ollivier 2018) so that the state is "
            "kept over up to T steps, or read every step (pool the outputs over time) instead "
            "of the last one.")
    return metric, Finding("vanishing_through_time", [] if layer is None else [int(layer)], ev,
                           msg, {}, text, "high" if metric >= 2 * THROUGH_TIME_DECADES
                           else "medium")


def _regression_kind(loss_fn: Callable) -> str | None:
    """``"mse"`` or ``"l1"`` for a mean squared / absolute error (modules, functions, also in
    a ``functools.partial``), else None: the losses whose gradient scales with the targets'
    unit in a known way (degree 2 and 1), so that training on standardized targets can be
    reproduced exactly (:class:`StandardizedTargets`)."""
    fn, _ = loss_parts(loss_fn)
    if isinstance(fn, nn.MSELoss) or fn is F.mse_loss:
        return "mse"
    if isinstance(fn, nn.L1Loss) or fn is F.l1_loss:
        return "l1"
    return None


def target_scale(loss_fn: Callable, y: torch.Tensor) -> dict[str, Any] | None:
    """For a mean squared or absolute error on floating targets: the training targets'
    per-column ``mean`` and population ``std`` (float64 lists, shaped as one target), which
    the shared rule ``unscaled_targets`` judges (``RunContext.target_stats``); None for any
    other loss (the doctor could not verify its cure exactly), and for 0/1 targets (labels,
    one-hot rows), as the NumPy doctor leaves them."""
    kind = _regression_kind(loss_fn)
    if kind is None or not y.is_floating_point() or y.dim() < 1 or len(y) < 2:
        return None
    yd = y.detach().double()
    if bool(((yd == 0) | (yd == 1)).all()):  # 0/1 labels, one-hot rows: classes, not a scale
        return None  # to fix (as the NumPy doctor's target statistics)
    return {"loss": kind, "mean": yd.mean(0).cpu().tolist(),
            "std": yd.std(0, unbiased=False).cpu().tolist()}


class StandardizedTargets(nn.Module):
    """``model`` trained as on standardized targets ``(y - mean) / std`` while its outputs,
    and so every loss, stay in the targets' units: the forward returns ``mean + std * z``
    (``z = model(x)``); the backward hands ``z`` the gradient that the same loss of ``z`` on
    the standardized targets has (``dL/dout / std`` for a mean squared error, ``dL/dout`` for a
    mean absolute error), so every update equals that of training on standardized targets
    (the torch doctor's cure for ``unscaled_targets``)."""

    def __init__(self, model: nn.Module, mean: Any, std: Any, loss: str) -> None:
        super().__init__()
        self.model = model
        p = next(model.parameters())
        std_t = torch.as_tensor(std, dtype=torch.float64)
        std_t = torch.where(std_t > 0, std_t, torch.ones_like(std_t))  # a constant column
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float64).to(p))
        self.register_buffer("std", std_t.to(p))
        self.register_buffer("back", (1.0 / std_t if loss == "mse" else
                                      torch.ones_like(std_t)).to(p))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return _Destandardize.apply(self.model(*args, **kwargs), self.mean, self.std,
                                    self.back)


class _Destandardize(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                back: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(back)
        return mean + std * z

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        back, = ctx.saved_tensors
        return g * back, None, None, None


def _apply_cure(changes: dict[str, Any], model: nn.Module, spec: TorchTrainSpec,
                xs: torch.Tensor, d: TensorData, loss_fn: Callable
                ) -> tuple[nn.Module, TorchTrainSpec]:
    """:func:`depthlab.torch.prescriptions.apply`, then ``target_scale="standardize"``: the
    model wrapped in :class:`StandardizedTargets` with the training targets' statistics."""
    model, spec = rx.apply(changes, model, spec, xs)
    if changes.get("target_scale") is not None:
        t = target_scale(loss_fn, d.y)
        if changes["target_scale"] != "standardize" or t is None:
            raise rx.NotApplicable("standardizing the targets needs a mean squared or absolute "
                                   "error on floating targets")
        model = StandardizedTargets(model, t["mean"], t["std"], t["loss"])
    return model, spec


TORCH_RULES: dict[str, Rule] = {r.kind: r for r in (
    Rule("vanishing_through_time", "decades lost through time (-log10 weakest/strongest "
         "step's input gradient)", THROUGH_TIME_DECADES, rule_vanishing_through_time),
)}
"""The torch doctor's own rules (after :data:`depthlab.diagnosis.rules.RULES`): findings only
a torch model can show (recurrence through time)."""


def _settings(spec: TorchTrainSpec, loss_fn: Callable, device: torch.device) -> dict[str, Any]:
    return {**spec.as_dict(), "loss": type(loss_fn).__name__ if isinstance(loss_fn, nn.Module)
            else getattr(loss_fn, "__name__", "loss_fn"), "device": str(device)}


def constant_loss(loss_fn: Callable, y: torch.Tensor, out: Any) -> float:
    """The loss of the best constant prediction of the training targets ``y`` (what a model
    that learned nothing of its inputs reaches), as
    :func:`depthlab.diagnosis.doctor.constant_loss` computes it, for a torch loss of mean
    reduction without per-class weights: ``CrossEntropyLoss``/``NLLLoss`` (and their
    functions, also in a ``functools.partial``) the entropy of the (label-smoothed) class
    frequencies over the ``out.shape[1]`` classes, the loss's ``ignore_index`` left out, or of
    the mean probability row (with class weights, :func:`_weighted_label_entropy`);
    ``BCEWithLogitsLoss``/``BCELoss`` the mean binary entropy of each target column's mean;
    ``MSELoss`` the mean of each column's variance; ``L1Loss``, ``HuberLoss`` and
    ``SmoothL1Loss`` each column's mean loss at its best constant (the median for L1,
    :func:`_robust_constant_loss`), averaged over the columns. NaN for any other loss,
    ``pos_weight`` or the BCE's ``weight``, class weights with label smoothing, or a reduction
    other than ``"mean"``."""
    from .. import losses as dl_losses
    from ..diagnosis.doctor import constant_loss as shared
    from .probe import loss_ignore_index

    fn, kw = loss_parts(loss_fn)

    def opt(name: str, default: Any = None) -> Any:
        return kw.get(name, getattr(fn, name, default))

    weight = opt("weight")
    if opt("reduction", "mean") != "mean" or opt("pos_weight") is not None or \
            (weight is not None and class_index_loss(fn) is None):
        return math.nan
    if not isinstance(y, torch.Tensor):
        return math.nan
    t = y.detach()
    if class_index_loss(fn) is not None:
        eps = float(opt("label_smoothing", 0.0) or 0.0)
        if not isinstance(out, torch.Tensor) or out.dim() < 2:
            return math.nan
        if weight is not None:  # integer labels, no smoothing: the entropy of q_c ~ w_c n_c
            return _weighted_label_entropy(loss_fn, t, weight, int(out.shape[1])) \
                if eps == 0 else math.nan
        if t.is_floating_point():  # class probabilities (N, C)
            labels = t.cpu().double().numpy() if t.dim() == 2 else None
        else:
            ignore = loss_ignore_index(loss_fn)
            flat = t.reshape(-1)
            flat = flat[flat != (-100 if ignore is None else int(ignore))]
            if len(flat) == 0 or bool((flat < 0).any()) or bool((flat >= out.shape[1]).any()):
                return math.nan
            labels = flat.cpu().numpy()
        if labels is None:
            return math.nan
        return shared(dl_losses.get_loss("cross_entropy", label_smoothing=eps), labels,
                      int(out.shape[1]))
    if isinstance(fn, (nn.BCEWithLogitsLoss, nn.BCELoss)) or binary_threshold(fn) is not None:
        return shared("bce", t.cpu().double().numpy()) if t.is_floating_point() else math.nan
    if isinstance(fn, nn.MSELoss) or fn is F.mse_loss:
        return shared("mse", t.cpu().double().numpy()) if t.is_floating_point() else math.nan
    robust = _robust_loss(fn, opt)
    if robust is not None:
        return _robust_constant_loss(t, robust) if t.is_floating_point() else math.nan
    return math.nan


def _robust_loss(fn: Any, opt: Callable[[str, Any], Any]) -> float | None:
    """The transition point of an ``L1Loss`` (0), ``HuberLoss`` (``delta``, default 1) or
    ``SmoothL1Loss`` (``beta``, default 1; 0 is the L1 loss) as :func:`_huber_loss` takes it
    (a negative width for the smooth L1 loss, whose quadratic part is divided by ``beta``), or
    None for any other loss."""
    if isinstance(fn, nn.L1Loss) or fn is F.l1_loss:
        return 0.0
    if isinstance(fn, nn.HuberLoss) or fn is F.huber_loss:
        delta = opt("delta", 1.0)
        return float(delta) if isinstance(delta, (int, float)) and delta > 0 else None
    if isinstance(fn, nn.SmoothL1Loss) or fn is F.smooth_l1_loss:
        beta = opt("beta", 1.0)
        return -float(beta) if isinstance(beta, (int, float)) and beta >= 0 else None
    return None


def _huber_loss(r: np.ndarray, width: float) -> np.ndarray:
    """Entry-wise loss of the residuals ``r`` (see :func:`_robust_loss`): ``|r|`` for width 0,
    torch's ``huber_loss(delta=width)`` for width > 0, ``smooth_l1_loss(beta=-width)`` for
    width < 0."""
    a = np.abs(r)
    if width == 0:
        return a
    d = abs(width)
    huber = np.where(a < d, 0.5 * r * r, d * (a - 0.5 * d))
    return huber if width > 0 else huber / d


def _robust_constant_loss(y: torch.Tensor, width: float) -> float:
    """:func:`constant_loss` of an L1, Huber or smooth L1 loss (mean reduction): per target
    column, the loss is least at the column's median (L1), or where the mean clipped residual
    ``clip(c - y, -d, d)`` is 0 (Huber, smooth L1: increasing in ``c``, found by bisection
    between the column's extremes in float64); the mean over the columns of each one's mean
    loss there."""
    cols = y.detach().reshape(len(y), -1).cpu().double().numpy()
    if cols.size == 0 or not np.isfinite(cols).all():
        return math.nan
    if width == 0:
        c = np.median(cols, axis=0)
    else:
        c = huber_center(cols, abs(width))
    return float(_huber_loss(cols - c, width).mean(axis=0).mean())


def constant_accuracy(loss_fn: Callable, y: torch.Tensor, y_val: torch.Tensor | None) -> float:
    """The validation accuracy of the best constant prediction (the most a network that learned
    nothing of its inputs scores on ``y_val``), as
    :func:`depthlab.diagnosis.doctor.constant_accuracy` computes it and as
    :func:`depthlab.torch.train.evaluate` scores: for integer labels the share of the most
    frequent validation label (negative labels and the loss's ``ignore_index`` left out, per
    entry for dense labels); for a binary cross-entropy with 0/1 targets, per position the share
    of validation entries of its more frequent value, averaged. NaN without validation targets
    or for targets of another kind (no accuracy then; ``y``, the training targets, is checked
    for its kind)."""
    from .probe import loss_ignore_index

    if not isinstance(y, torch.Tensor) or not isinstance(y_val, torch.Tensor) \
            or y.dim() == 0 or y_val.dim() == 0 or len(y) == 0 or len(y_val) == 0:
        return math.nan
    if binary_threshold(loss_fn) is not None:
        hard = all(bool(((t == 0) | (t == 1)).all()) for t in (y, y_val))
        if not (y.is_floating_point() and hard and y.shape[1:] == y_val.shape[1:]):
            return math.nan
        up = (y_val == 1).double().mean(dim=0)  # each position's share of ones
        return float(torch.maximum(up, 1.0 - up).mean())
    hot, hot_val = one_hot_labels(loss_fn, y), one_hot_labels(loss_fn, y_val)
    if hot is not None and hot_val is not None:  # one-hot targets: as their class indices,
        y, y_val = hot, hot_val  # which evaluate's accuracy reads
    if y.is_floating_point() or y_val.is_floating_point() or y.is_complex() or y_val.is_complex():
        return math.nan
    ignore = loss_ignore_index(loss_fn)

    def kept(t: torch.Tensor) -> torch.Tensor:
        flat = t.reshape(-1)
        keep = flat >= 0
        if ignore is not None:
            keep &= flat != int(ignore)
        return flat[keep]

    labels, held = kept(y), kept(y_val)
    if len(labels) == 0 or len(held) == 0:
        return math.nan
    return float(torch.bincount(held.long()).max()) / len(held)


def _weighted_label_entropy(loss_fn: Callable, y: torch.Tensor, weight: Any, classes: int
                            ) -> float:
    """:func:`constant_loss` of a class-weighted ``CrossEntropyLoss``/``NLLLoss`` (mean
    reduction: ``sum_i w_(y_i) (-log p_(y_i)) / sum_i w_(y_i)``) on integer labels ``y``: a
    constant prediction ``p`` costs ``-sum_c q_c log p_c`` with ``q_c = w_c n_c / sum_k w_k
    n_k``, least at ``p = q``: the entropy of ``q`` (NaN for labels it cannot read)."""
    from .probe import loss_ignore_index

    if y.is_floating_point() or not isinstance(weight, torch.Tensor) or \
            weight.shape != (classes,):
        return math.nan
    ignore = loss_ignore_index(loss_fn)
    flat = y.reshape(-1)
    flat = flat[flat != (-100 if ignore is None else int(ignore))]
    if len(flat) == 0 or bool((flat < 0).any()) or bool((flat >= classes).any()):
        return math.nan
    counts = np.bincount(flat.cpu().numpy(), minlength=classes).astype(np.float64)
    mass = weight.detach().cpu().double().numpy() * counts
    if not np.isfinite(mass).all() or (mass < 0).any() or mass.sum() <= 0:
        return math.nan
    q = mass[mass > 0] / mass.sum()
    return float(-(q * np.log(q)).sum())


def _better(after: dict[str, Any], before: dict[str, Any], n_val: int | None = None,
            chance: float = math.nan, chance_acc: float = math.nan) -> bool:
    """Training improved beyond one run's noise, by the NumPy doctor's rule
    (:func:`depthlab.diagnosis.doctor._better`: the final train loss more than 1% lower or the
    validation accuracy more than one point higher, and more than one of the ``n_val``
    validation examples, neither clearly worse; where they disagree, a clear rise of the
    accuracy by more points than the loss rose in percent is an improvement and a fall of the
    accuracy never is; non-finite counts as worst; a train loss that does not end 1% below
    ``chance``, the best constant prediction's loss (:func:`constant_loss`), is no
    improvement, nor is an accuracy that does not end above ``chance_acc``, that prediction's
    (:func:`constant_accuracy`))."""
    from ..diagnosis.doctor import _better as better

    return better(after, before, n_val, chance, chance_acc)


# -- the doctor --------------------------------------------------------------------------------

@keyword_hints
def doctor(
    make_model_or_model: nn.Module | Callable[[], nn.Module],
    data: Any,
    *,
    loss_fn: Callable | str | None = None,
    optimizer: str | tuple[str, dict[str, Any]] = ("sgd", {"lr": 0.1}),
    steps: int = 200,
    batch_size: int = 64,
    seed: int = 0,
    verify: bool = True,
    max_cures: int = 3,
    probe_every: int | None = None,
    out: str | Path | None = None,
    name: str | None = None,
    progress: bool | str | None = None,
) -> Diagnosis:
    """Diagnose a torch model and (``verify=True``) verify cures; see the module doc.

    ``make_model_or_model``: a function returning a fresh ``nn.Module`` (called after
    ``torch.manual_seed(seed)``) or a module instance (deep-copied, never modified).
    ``data``: ``(x, y)``, ``(x, y, x_val, y_val)``, a Dataset, or a ``torch.utils.data``
    Dataset/DataLoader of ``(x, y)`` pairs, or a pair ``(train, val)`` of them; arrays or
    tensors, moved to the model's device.
    ``loss_fn(model(x), y)`` must return a scalar tensor (default
    ``nn.CrossEntropyLoss()``), or a name of :data:`LOSSES` (``"mse"``, ...).
    ``optimizer``: ``(name, kwargs)`` with a name of
    :data:`depthlab.torch.train.OPTIMIZERS` (``lr`` in kwargs; other kwargs such as
    ``momentum`` go to the optimizer), or its ``torch.optim`` class in place of the name
    (``torch.optim.Adam``, ``(torch.optim.Adam, {"lr": 0.01})``,
    ``functools.partial(torch.optim.Adam, lr=0.01)``), or a factory ``lambda params:
    torch.optim.SGD(params, lr=0.05, momentum=0.9)`` (read as its class and arguments, called
    once on a scratch parameter); not an optimizer instance, which is
    bound to one model's parameters. ``probe_every``: probe-table period (default
    ``steps // 10``). ``max_cures``: cures verified per finding. ``out``: a results folder;
    the diagnosis, its probe table and step losses are stored there (kind ``doctor``).
    ``progress``: the steps of each training run (the baseline, then each cure verified) on
    stderr, labelled ``doctor run k``: True/``"bar"`` a bar, ``"lines"`` a status line every
    few seconds and one at each run's end, None/False nothing (as :func:`depthlab.fit`).

    Returns the NumPy doctor's :class:`~depthlab.diagnosis.Diagnosis` (``config`` describes the
    torch model, ``settings`` the training run, ``probes`` the baseline's probe table).
    """
    if isinstance(max_cures, bool) or not isinstance(max_cures, Integral) or max_cures < 1:
        raise ValueError(f"max_cures must be a positive integer, got {max_cures!r}")
    from ..progress import mode
    from .train import runs_progress

    mode(progress)  # a bad setting: one ValueError before any work
    if isinstance(seed, bool) or not isinstance(seed, Integral) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer from 0 to 2**64 - 1 (torch.manual_seed's "
                         f"range), got {seed!r}")
    max_cures, seed = int(max_cures), int(seed)  # NumPy integers too
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a string or None, got {type(name).__name__}")
    if out is not None:
        _check_out(out)
    if not isinstance(verify, (bool, np.bool_)):
        raise TypeError(f"verify must be True or False, got {verify!r}")
    verify = bool(verify)
    loss_fn = nn.CrossEntropyLoss() if loss_fn is None else loss_fn
    if isinstance(loss_fn, str):
        loss_fn = loss_by_name(loss_fn)
    if isinstance(loss_fn, type):
        raise TypeError(f"loss_fn must be a loss, not the class {loss_fn.__name__}: pass an "
                        f"instance such as {loss_fn.__name__}()")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(output, target), got "
                        f"{type(loss_fn).__name__}")
    spec = _spec(optimizer, steps, batch_size, seed, probe_every)
    fresh, rows = _factory(make_model_or_model)
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    # the caller's random streams left as found; training needs autograd even when the call
    # sits inside torch.no_grad() or torch.inference_mode()
    with torch.random.fork_rng(devices=cuda), _host_generators(seed), \
            torch.inference_mode(False), torch.enable_grad(), runs_progress(progress, "doctor"):
        t0 = time.perf_counter()
        model = check_model(fresh(seed))  # TorchScript, compiled, DataParallel: by name
        check_materialized(model)  # a 'meta' model: no values to train
        device, dtype = model_device_dtype(model)
        # a Dataset's random transforms (torch.randn in __getitem__, torchvision's random
        # crops) draw the same in every call, also for a model instance (not seeded by fresh)
        torch.manual_seed(seed)
        d = tensor_data(_shaped_dataset(data, model), device, dtype, seed,
                        float_targets=_float_target_loss(loss_fn))
        if _has_lazy(model):  # nn.LazyLinear, ...: initialized on the data's first rows
            rows.append(d.x[:TRACE_EXAMPLES])
            model = fresh(seed)
        loss_fn = _loss_on(loss_fn, device, dtype)  # class weights as the data: model's dtype
        if population_layers(model):  # depthlab's bn_inference="population" (to_torch): eval
            fresh = _calibrating(fresh, d.x)  # mode needs the training set's statistics, at
            calibrate_population(model, d.x)  # the start too (train() sets them at the end)
        _check_runs(model, d, loss_fn)
        _check_token_ids(model, d)
        _check_step(_scratch_copy(model, fresh, seed), spec, d, loss_fn)
        settings = _settings(spec, loss_fn, device)
        theory, theory_note = (theory_rows(model, d.probe_source[0][:PROBE_EXAMPLES].clone())
                               if out is not None else (None, ""))
        chance = constant_loss(loss_fn, d.y, _sample_output(model, d))
        base = _run(model, d, loss_fn, spec, settings, percentiles=True, chance=chance)
        diagnosis = Diagnosis(findings=base.findings, baseline=dict(base.result.metrics),
                              probes=base.result.probes, config=base.ctx.config, settings=settings,
                              bn_drift=base.ctx.bn_drift)
        xs = d.x[:LSUV_EXAMPLES]
        n_val = None if d.y_val is None else len(d.y_val)  # one example's flip is noise
        chance_acc = constant_accuracy(loss_fn, d.y, d.y_val) if verify else math.nan
        runs: dict[str, _Run] = {}
        for f in diagnosis.findings:
            skipped: list[str] = []
            cures = _cures(f, base, spec, fresh, seed, xs, d, loss_fn, skipped)
            own = rx.translate(f.prescription, spec) if f.prescription else None
            key = json.dumps(own, sort_keys=True, default=str) + " " if own else None
            own_skipped = next((r for r in skipped if key and r.startswith(key)), None)
            why = f"; {skipped[0]}" if skipped else ""
            if cures:
                f.prescription, f.prescription_text = cures[0]
                if own_skipped:  # the rule's own cure did not apply: say why, not silently
                    f.prescription_text += f" (the rule's own cure {own_skipped})"
            else:
                f.prescription, f.prescription_text = {}, (
                    f.prescription_text + f" (no module transform applies to this model{why})")
            if not verify:
                continue
            tried: list[tuple[Verification, str]] = []
            for changes, text in cures[:max_cures]:
                key = json.dumps(changes, sort_keys=True, default=str)
                if key not in runs:
                    runs[key] = _verify_run(changes, fresh, seed, spec, d, loss_fn, settings, xs,
                                            chance)
                run = runs[key]
                tried.append((_verification(f, changes, base, run, n_val, chance, chance_acc),
                              text))
            tried.sort(key=lambda vt: (not vt[0].helped, tuple(-g for g in vt[0].gain)))
            diagnosis.verifications.extend(v for v, _ in tried)
            if tried and tried[0][0].helped:
                f.prescription, f.prescription_text = dict(tried[0][0].prescription), tried[0][1]
            elif tried:  # the prescription line alone read as a recommendation that works
                which = "the cure verified did not help" if len(tried) == 1 else \
                    f"none of the {len(tried)} cures verified helped"
                f.prescription_text += f" ({which} within {spec.steps} steps)"  # why: in
                # each verified line (a higher val acc with a clearly worse train loss too)
        if verify and diagnosis.verifications:
            best = {}  # each finding ranked by its best cure, as the NumPy doctor ranks
            for v in diagnosis.verifications:
                best.setdefault(v.kind, v)
            diagnosis.findings = rank_findings(diagnosis.findings, list(best.values()))
            order = {f.kind: i for i, f in enumerate(diagnosis.findings)}
            diagnosis.verifications.sort(key=lambda v: order.get(v.kind, len(order)))
    if out is not None:
        _store(diagnosis, base, out, name, time.perf_counter() - t0, verify, theory,
               theory_note)
    return diagnosis


@contextlib.contextmanager
def _host_generators(seed: int) -> Iterator[None]:
    """NumPy's and Python's global generators seeded with ``seed`` inside the block (a
    Dataset's random transforms, noise a model draws from ``np.random``: the same draws in
    every call) and left as the caller had them after it."""
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        np.random.seed(seed % 2**32)
        random.seed(seed)
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def _check_out(out: Any) -> None:
    """An unusable results folder (a file, an empty path, a read-only or foreign store) fails
    before any training, not after it: the store is opened and a scratch row written."""
    from ..experiments.store import Store, StoreError

    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a folder path or None, got {type(out).__name__}")
    try:
        with Store(out) as store:
            store.check_writable()
    except StoreError as e:
        raise ValueError(f"out={str(out)!r} cannot hold the diagnosis: {e}") from None


def _check_runs(model: nn.Module, d: TensorData, loss_fn: Callable) -> None:
    """One forward and loss on two rows: a clear error before any training, also when the
    loss broadcasts outputs and targets of different shapes against each other (torch only
    warns, e.g. ``MSELoss`` on outputs ``(N, 1)`` and targets ``(N,)`` compares every output
    with every target)."""
    if isinstance(loss_fn, FLOAT_TARGET_LOSSES) and not d.y.is_floating_point():
        raise TypeError(f"{type(loss_fn).__name__} needs floating-point targets, got "
                        f"{str(d.y.dtype).removeprefix('torch.')} labels: give y as floats "
                        "(e.g. y.astype(np.float32))")
    _check_probability_targets(d, loss_fn)
    kind = class_index_loss(loss_fn)
    if kind and d.y.is_floating_point() and (d.y.dim() == 1 or "nll" in kind.lower()):
        raise TypeError(f"{kind} needs integer class labels, got "  # CE takes probabilities (N, C)
                        f"floating-point targets of shape {tuple(d.y.shape[1:])} per example: "
                        "give y as integers (e.g. y.astype(np.int64))")
    out: Any = None
    try:
        with torch.no_grad(), rx.untouched(model), warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            model.eval()
            out = model(d.x[:2].clone())
            _check_labels(out, d, loss_fn)  # before the loss: torch's 'Target 9 is out of
            scalar_loss(loss_fn, out, d.y[:2])  # bounds' names neither side
    except _LabelError as e:
        raise ValueError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - the user's model or loss failed on the data
        if kind and not d.y.is_floating_point() and d.y.dim() == 2 and d.y.shape[1] == 1 \
                and isinstance(out, torch.Tensor) and out.dim() == 2:  # torch: '0D or 1D
            raise ValueError(f"{kind} takes one class index per example (y of shape (N,)), "
                             "got integer labels of shape (1,) per example (a column (N, "
                             "1)): give y.reshape(-1)") from None  # target tensor expected'
        if isinstance(e, ValueError) and str(e).startswith("loss_fn must return a scalar"):
            raise  # scalar_loss's own message; torch's ValueErrors (BCE's 'Target size
            # (torch.Size([2])) must be ...', of the 2 rows checked) get the shapes below
        hint = "" if d.x.is_floating_point() else (
            "; integer inputs are passed as int64 (token ids for an nn.Embedding): give "
            "floating-point inputs to other models")
        if out is None and d.x.dim() == 1 and d.x.is_floating_point():
            hint += ("; x holds one number per example (shape (N,)): a model of one input "
                     "feature takes a column, x.reshape(-1, 1)")
        conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if conv is not None and out is None and d.x.dim() == 4 and \
                d.x.shape[-1] == conv.in_channels != d.x.shape[1]:
            hint += ("; the images look channels-last (N, H, W, C): torch's Conv2d takes "
                     "(N, C, H, W), e.g. x.transpose(0, 3, 1, 2)")
        if binary_threshold(loss_fn) == 0.5 and "input should be between 0 and 1" in str(e):
            hint += ("; BCELoss takes the model's outputs as probabilities (a sigmoid at its "
                     "end): for logits use nn.BCEWithLogitsLoss ('bce_with_logits')")
        if kind and isinstance(out, torch.Tensor) and not d.y.is_floating_point() and \
                out.dim() >= 3 and out.dim() == d.y.dim() + 1 and \
                tuple(out.shape[:-1]) == tuple(d.y[:2].shape) and out.shape[1] != out.shape[-1]:
            fn = "nll_loss" if "nll" in kind.lower() else "cross_entropy"  # (N, T, C), (N, T)
            hint += (f"; the model's outputs hold the {out.shape[-1]} classes last (shape "
                     f"{tuple(out.shape[1:])} per example, labels {tuple(d.y.shape[1:])}), but "
                     f"{kind} takes them in dim 1, (N, C, ...): give loss_fn=lambda out, y: "
                     f"nn.functional.{fn}(out.movedim(-1, 1), y)")
        if out is None and isinstance(e, TypeError):
            hint += _keyword_forward_hint(model)
        hint += _time_first_hint(model, d.x, out)
        if out is not None and not isinstance(out, torch.Tensor):  # (logits, aux), a dict
            hint += (f"; the model returns a {type(out).__name__}, not a tensor: give a "
                     f"loss_fn that takes it, e.g. {_loss_of_part(out, d, loss_fn)}")
        raise ValueError(f"the model or loss_fn fails on inputs of shape "
                         f"{tuple(d.x.shape[1:])} per example (targets: shape "
                         f"{tuple(d.y.shape[1:])}, {str(d.y.dtype).removeprefix('torch.')}): "
                         f"{type(e).__name__}: {e}{hint}") from None
    broadcast = [w for w in seen if "broadcasting" in str(w.message) and "size" in str(w.message)]
    for w in seen:  # the user's other warnings, shown as they would have been
        if w not in broadcast:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if broadcast:
        shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else "?"
        raise ValueError(f"loss_fn broadcasts the model's outputs (shape {shape} per example) "
                         f"against the targets (shape {tuple(d.y.shape[1:])} per example); "
                         "expected the same shape: reshape the targets or the outputs")
    if d.x_val is not None and d.y_val is not None and len(d.x_val) == 1:
        try:  # the final validation metrics see it as a batch of one row (out.squeeze(): a
            with torch.no_grad(), rx.untouched(model), warnings.catch_warnings():  # scalar)
                warnings.simplefilter("ignore")
                model.eval()
                scalar_loss(loss_fn, model(d.x_val.clone()), d.y_val)
        except Exception as e:  # noqa: BLE001 - the user's model or loss failed on one row
            raise ValueError(f"the model or loss_fn fails on the validation set's single row "
                             f"(a batch of 1; it runs on 2 rows): {type(e).__name__}: {e}; "
                             "give at least 2 validation rows, or none") from None


def _loss_of_part(out: Any, d: TensorData, loss_fn: Callable) -> str:
    """``lambda out, y: LOSS(PART, y)`` for a model returning a tuple, dict or dataclass:
    PART reads the tensor the accuracy would (``out['logits']``, ``out.logits``, ``out[0]``;
    a dict was told ``out[0]``, a KeyError), LOSS is the given loss (its ``nn`` class, or
    ``nn.functional.cross_entropy``)."""
    from .train import accuracy_output

    part = "out[0]"
    try:
        t = accuracy_output(out, d.y[:2], binary_threshold(loss_fn))
        if isinstance(t, torch.Tensor) and not d.y.is_floating_point() and len(d.y) and \
                t.dim() >= 2 and t.shape[1] <= int(d.y.max()):  # too few columns for the
            t = None  # labels (features of a (features, logits) pair)
    except Exception:  # noqa: BLE001 - only a hint
        t = None
    if t is None:
        cands = list(out.values()) if isinstance(out, dict) else list(out) \
            if isinstance(out, (tuple, list)) else []
        t = next((v for v in cands if isinstance(v, torch.Tensor) and v.is_floating_point()
                  and v.dim() >= 2 and (d.y.is_floating_point() or not len(d.y)
                                        or v.shape[1] > int(d.y.max()))), None)
    fields = ({f.name: getattr(out, f.name, None) for f in dataclasses.fields(out)}
              if dataclasses.is_dataclass(out) and not isinstance(out, type) else None)
    items = fields if fields is not None else out if isinstance(out, dict) else None
    if items is not None:
        tensors = [k for k, v in items.items() if isinstance(v, torch.Tensor)]
        key = next((k for k, v in items.items() if v is t), tensors[0] if tensors else None)
        if key is not None:
            part = f"out.{key}" if fields is not None and str(key).isidentifier() else \
                f"out[{key!r}]"
    elif isinstance(out, (tuple, list)):
        i = next((i for i, v in enumerate(out) if v is t), next(
            (i for i, v in enumerate(out) if isinstance(v, torch.Tensor)), 0))
        part = f"out[{i}]"
    cls = type(loss_fn)
    loss = f"nn.{cls.__name__}()" if isinstance(loss_fn, nn.Module) and \
        getattr(nn, cls.__name__, None) is cls else "nn.functional.cross_entropy"
    return f"lambda out, y: {loss}({part}, y)"


def _time_first_hint(model: nn.Module, x: torch.Tensor, out: Any) -> str:
    """The hint for a recurrent layer built time-first (``nn.LSTM(8, 16)``: ``batch_first``
    False, torch's default) that reads the doctor's examples ``(N, T, features)`` with the
    time steps as its batch: its outputs have ``T`` rows for ``N`` targets (torch said only
    'Expected input batch_size (8) to match target batch_size (2)')."""
    rnn = next((m for m in model.modules() if isinstance(m, nn.RNNBase) and not m.batch_first),
               None)
    if rnn is None or x.dim() != 3 or not isinstance(out, torch.Tensor) or out.dim() == 0 \
            or out.shape[0] == 2:
        return ""
    name = next((n for n, m in model.named_modules() if m is rnn), "") or "model"
    return (f"; the model's {type(rnn).__name__} '{name}' has batch_first=False (time first, "
            f"(T, N, features)), but the doctor gives the examples along dim 0, (N, T, "
            f"features): its outputs have {out.shape[0]} rows (the time steps) for 2 examples; "
            f"build it with batch_first=True")


def _loss_on(loss_fn: Callable, device: torch.device, dtype: torch.dtype) -> Callable:
    """``loss_fn`` with its floating-point tensors (a ``CrossEntropyLoss``'s class weights, a
    ``BCEWithLogitsLoss``'s ``pos_weight``, the tensor keywords of a ``functools.partial``) on
    the model's device and in its floating dtype, as the doctor gives it the data: a copy
    where any differs (the caller's loss is left as it is), else ``loss_fn`` itself. A
    float64 model with ``CrossEntropyLoss(weight=torch.tensor([1., 3.]))`` was refused with
    torch's 'expected scalar type Double but found Float'."""
    def differs(t: Any) -> bool:
        return isinstance(t, torch.Tensor) and t.is_floating_point() and \
            (t.device != device or t.dtype != dtype)

    if isinstance(loss_fn, functools.partial):
        inner = _loss_on(loss_fn.func, device, dtype)
        kw = {k: v.to(device=device, dtype=dtype) if differs(v) else v
              for k, v in loss_fn.keywords.items()}
        if inner is loss_fn.func and all(kw[k] is v for k, v in loss_fn.keywords.items()):
            return loss_fn
        return functools.partial(inner, *loss_fn.args, **kw)
    if isinstance(loss_fn, nn.Module) and any(
            differs(t) for t in (*loss_fn.parameters(), *loss_fn.buffers())):
        try:
            return copy.deepcopy(loss_fn).to(device=device, dtype=dtype)
        except Exception:  # noqa: BLE001 - not copyable: torch's own error when it runs
            return loss_fn
    return loss_fn


def _sample_output(model: nn.Module, d: TensorData) -> Any:
    """The model's eval-mode output on two training rows (None when it fails), the model left
    as found: what :func:`constant_loss` reads the number of classes from."""
    try:
        with torch.no_grad(), rx.untouched(model), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.eval()
            return model(d.x[:2].clone())
    except Exception:  # noqa: BLE001 - it ran in _check_runs
        return None


def _keyword_forward_hint(model: nn.Module) -> str:
    """For a ``forward`` that takes no positional input (``def forward(self, *, x)``): how to
    give it to the doctor, which calls ``model(x)``; else ''."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return ""
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                  inspect.Parameter.VAR_POSITIONAL)
    if any(p.kind in positional for p in params):
        return ""
    names = [p.name for p in params if p.kind == inspect.Parameter.KEYWORD_ONLY]
    first = names[0] if names else "x"
    return (f"; the doctor calls model(x) with the inputs as its one positional argument, but "
            f"{type(model).__name__}.forward takes keywords only ({', '.join(names) or '**kwargs'})"
            f": give a wrapper module whose forward(self, x) returns self.inner({first}=x)")


def _check_token_ids(model: nn.Module, d: TensorData) -> None:
    """For integer inputs that go straight into an ``nn.Embedding``/``nn.EmbeddingBag`` (the
    model's input tensor itself is the module's input, seen by a hook on a two-row forward):
    every training and validation entry in ``[0, num_embeddings)``, else a ValueError naming
    the first bad one. The two-row check sees only two rows, and torch's 'IndexError: index
    out of range in self' would otherwise come from whichever mini-batch (or the probe or
    the final validation pass) first holds one, after training started."""
    embs = [m for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))]
    if d.x.is_floating_point() or not embs:
        return
    x2 = d.x[:2].clone()
    direct: list[nn.Module] = []

    def hook(m: nn.Module, inp: tuple, _out: Any) -> None:
        if inp and inp[0] is x2 and m not in direct:
            direct.append(m)

    handles = [m.register_forward_hook(hook) for m in embs]
    try:
        with torch.no_grad(), rx.untouched(model), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.eval()
            model(x2)
    except Exception:  # noqa: BLE001 - it ran in _check_runs; nothing more to check here
        return
    finally:
        for h in handles:
            h.remove()
    if not direct:
        return
    names = {m: n for n, m in model.named_modules()}
    ids = torch.cat([t.reshape(-1) for t in (d.x, d.x_val) if t is not None])
    for m in direct:
        n = int(m.num_embeddings)
        bad = ids[(ids < 0) | (ids >= n)]
        if len(bad):
            raise ValueError(f"the inputs hold token id {int(bad[0])} ({len(bad)} of "
                             f"{len(ids)} outside 0 to {n - 1}) but the model's "
                             f"{type(m).__name__} {names.get(m, '?')!r} has {n} embeddings; "
                             f"expected token ids 0 to {n - 1}")


def _check_probability_targets(d: TensorData, loss_fn: Callable) -> None:
    """For a binary cross-entropy (``BCELoss``, ``BCEWithLogitsLoss``, their functions in
    ``torch.nn.functional``) with floating-point targets: every training and validation
    target in ``[0, 1]``, else a ValueError naming the first bad one (``BCELoss``: torch's
    'all elements of target should be between 0 and 1' from whichever mini-batch first holds
    one, after training started; ``BCEWithLogitsLoss`` takes it silently, its loss
    ``-t log p - (1 - t) log(1 - p)`` then unbounded below)."""
    kind = type(loss_fn).__name__ if isinstance(loss_fn, (nn.BCELoss, nn.BCEWithLogitsLoss)) \
        else next((f"F.{f.__name__}" for f in (F.binary_cross_entropy,
                                               F.binary_cross_entropy_with_logits)
                   if loss_fn is f), None)
    if kind is None or not d.y.is_floating_point():
        return
    ys = torch.cat([t.reshape(-1) for t in (d.y, d.y_val) if t is not None])
    bad = ys[(ys < 0) | (ys > 1)]
    if len(bad):
        raise ValueError(f"the targets hold {float(bad[0]):g} ({len(bad)} of {len(ys)} outside "
                         f"0 to 1) but {kind} takes probabilities from 0 to 1 (class labels "
                         "0 to K - 1 go with nn.CrossEntropyLoss and K outputs)")


class _LabelError(ValueError):
    """Labels outside the model's classes (:func:`_check_labels`)."""


def _float_target_loss(loss_fn: Callable) -> bool:
    """Whether ``loss_fn`` takes floating-point targets (:data:`FLOAT_TARGET_LOSSES`, the
    binary cross-entropy functions; also inside ``functools.partial``): boolean targets are
    given to it as 0.0/1.0 in the model's dtype."""
    loss_fn, _ = loss_parts(loss_fn)
    return isinstance(loss_fn, FLOAT_TARGET_LOSSES) or binary_threshold(loss_fn) is not None


def _check_labels(out: Any, d: TensorData, loss_fn: Callable) -> None:
    """For a class-index loss (``CrossEntropyLoss``, ``NLLLoss``, their functions in
    ``torch.nn.functional``) on outputs ``(N, C, ...)``
    with integer targets ``(N, ...)``: every training and validation label in ``[0, C)`` (or
    the loss's ``ignore_index``), else a ValueError naming the first bad one. The two-row
    check sees only two labels, and torch's IndexError would otherwise come from whichever
    mini-batch (or the final validation pass) first holds one."""
    y2 = d.y[:2]
    if class_index_loss(loss_fn) is not None and isinstance(out, torch.Tensor) and \
            not y2.is_floating_point() and y2.dim() == 2 and out.shape == y2.shape and \
            bool(((d.y == 0) | (d.y == 1)).all()) and bool((d.y.sum(dim=1) == 1).all()):
        raise _LabelError(f"the labels are one-hot rows of {y2.shape[1]} integers, but "
                          f"{class_index_loss(loss_fn)} takes class indices: give "
                          "y.argmax(axis=1) (or the rows as floats: class probabilities)")
    if class_index_loss(loss_fn) is None or \
            not isinstance(out, torch.Tensor) or y2.is_floating_point() or \
            out.dim() != y2.dim() + 1 or out.dim() < 2 or out.shape[0] != y2.shape[0] or \
            out.shape[2:] != y2.shape[1:]:
        return
    classes = int(out.shape[1])
    from .probe import loss_ignore_index  # (a partial's keyword too: 255 for a void class)

    found = loss_ignore_index(loss_fn)
    ignore = -100 if found is None else int(found)  # the functions' default
    labels = torch.cat([y.reshape(-1) for y in (d.y, d.y_val) if y is not None])
    bad = labels[((labels < 0) | (labels >= classes)) & (labels != ignore)]
    if len(bad):
        raise _LabelError(f"the labels hold {int(bad[0])} ({len(bad)} of {len(labels)} outside "
                          f"0 to {classes - 1}) but the model has {classes} outputs; expected "
                          f"class indices 0 to {classes - 1}")
    if bool((d.y == ignore).all()):  # the loss is 0 / 0 = NaN at every step,
        raise _LabelError(f"every training label is the loss's ignore_index "  # a 'divergence'
                          f"{ignore}: nothing to train on; expected class indices "
                          f"0 to {classes - 1}")


def _check_step(model: nn.Module, spec: TorchTrainSpec, d: TensorData, loss_fn: Callable
                ) -> None:
    """One training step of ``spec`` (its optimizer, gradient clipping) on the first
    mini-batch's number of rows, on ``model`` (a copy: it is changed): a clear ValueError before
    any training when it fails, e.g. Adam on the sparse gradients of
    ``nn.Embedding(sparse=True)``, or batch norm on batches of one row."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return  # train() says so
    opt = make_optimizer(spec, params)
    rows = min(spec.batch_size, len(d.x))

    def failed(e: Exception) -> ValueError:  # (BCELoss on logits: the hint _check_runs gives)
        return ValueError(f"a training step with optimizer {spec.optimizer!r} fails on "
                          f"mini-batches of {rows} rows (batch_size {spec.batch_size}, "
                          f"{len(d.x)} training rows): {type(e).__name__}: {e}"
                          f"{loss_hint(loss_fn, e)}")

    try:
        model.train()
        loss = scalar_loss(loss_fn, model(d.x[:rows].clone()), d.y[:rows])
    except Exception as e:  # noqa: BLE001 - e.g. batch norm on one-row batches
        raise failed(e) from None
    if not loss.requires_grad:
        raise ValueError("loss_fn(model(x), y) does not depend on the model's parameters (no "
                         "grad_fn): expected a loss computed from the model's output with "
                         "torch operations (not .item(), NumPy or a detached tensor)")
    try:
        loss.backward()
        if spec.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, spec.clip_grad_norm)
        opt.step()
    except Exception as e:  # noqa: BLE001 - the optimizer (or clipping) cannot train it
        raise failed(e) from None


def _cures(f: Finding, base: _Run, spec: TorchTrainSpec, fresh: Callable[[int], nn.Module],
           seed: int, xs: torch.Tensor, d: TensorData, loss_fn: Callable,
           skipped: list[str] | None = None) -> list[tuple[dict[str, Any], str]]:
    """Applicable cures for finding ``f``: the rule's prescription translated, then the torch
    alternatives, duplicates, transforms that change nothing in this model and training
    changes whose step fails on it (:func:`_check_step`, e.g. Adam for sparse gradients) left
    out, each of those with its reason in ``skipped`` (``'{changes} does not apply: why'``)."""
    config = base.ctx.config
    candidates: list[tuple[dict[str, Any], str]] = []
    first = rx.translate(f.prescription, spec) if f.prescription else None
    act = config.get("activation")
    # the loss of update 1 is computed on the initial weights: non-finite there, no training
    # setting can cure it, so the re-initializations are tried first
    at_init = f.kind == "divergence" and f.evidence.get("step") == 1
    more = rx.alternatives(f.kind, None if act == NO_ACTIVATION else act, spec,
                           bool(config.get("batchnorm")), at_init=at_init)
    if first:
        # the shared rule's text speaks of NumPy's settings (unscaled_targets:
        # "standardize_targets=True in dl.doctor, [data] standardize_targets = true"): a torch
        # alternative with the same changes says it for a torch model
        same = {json.dumps(c, sort_keys=True, default=str): t for c, t in more}
        candidates.append((first, same.get(json.dumps(first, sort_keys=True, default=str),
                                           f.prescription_text)))
    candidates = more[:2] + candidates + more[2:] if at_init else candidates + more
    out: list[tuple[dict[str, Any], str]] = []
    seen: set[str] = set()
    for changes, text in candidates:
        key = json.dumps(changes, sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        if changes.get("bn_population") and config.get("bn_inference") == "population":
            if skipped is not None:  # recomputing running statistics its eval mode ignores
                skipped.append(f"{key} does not apply: the batch norms already use "
                               "population statistics in eval mode")
            continue
        new = spec.with_changes(**{k: v for k, v in changes.items() if k in rx.TRAINING_KEYS})
        model_changed = bool(set(changes) & rx.MODEL_KEYS)
        if model_changed or (new.optimizer, new.optimizer_kwargs, new.clip_grad_norm,
                             new.batch_size) != (spec.optimizer, spec.optimizer_kwargs,
                                                 spec.clip_grad_norm, spec.batch_size):
            try:  # the changed model must also take a training step (e.g. inserted batch
                model, new = _apply_cure(changes, fresh(seed), spec, xs, d,  # norms: not
                                         loss_fn)  # on 1-row
                _check_step(model, new, d, loss_fn)  # mini-batches)
            except (ValueError, RuntimeError, NotImplementedError) as e:  # NotApplicable, or
                if skipped is not None:  # a change this model cannot take (e.g. an operation
                    said = " ".join(str(e).split()) or type(e).__name__  # its dtype lacks)
                    skipped.append(f"{json.dumps(changes, sort_keys=True, default=str)} does "
                                   f"not apply: {said[:300]}")
                continue
        out.append((changes, text))
    return out


def _verify_run(changes: dict[str, Any], fresh: Callable[[int], nn.Module], seed: int,
                spec: TorchTrainSpec, d: TensorData, loss_fn: Callable, settings: dict[str, Any],
                xs: torch.Tensor, chance: float = math.nan) -> _Run:
    model = fresh(seed)
    torch.manual_seed(seed)  # re-initializations draw from the same stream every time
    model, new_spec = _apply_cure(changes, model, spec, xs, d, loss_fn)
    return _run(model, d, loss_fn, new_spec, {**settings, **new_spec.as_dict()}, chance=chance)


def _verification(f: Finding, changes: dict[str, Any], base: _Run, run: _Run,
                  n_val: int | None = None, chance: float = math.nan,
                  chance_acc: float = math.nan) -> Verification:
    before_metric = base.metrics_by_kind.get(f.kind, math.nan)
    after_metric = run.metrics_by_kind.get(f.kind, math.nan)
    after_kinds = [g.kind for g in run.findings]
    resolved = f.kind not in after_kinds
    improved = _improved(before_metric, after_metric, resolved)
    rule = RULES.get(f.kind) or TORCH_RULES.get(f.kind)
    return Verification(
        kind=f.kind, prescription=dict(changes), before=dict(base.result.metrics),
        after=dict(run.result.metrics), metric=str(getattr(rule, "metric", "metric")),
        metric_before=before_metric, metric_after=after_metric, resolved=resolved,
        helped=bool(improved and _better(run.result.metrics, base.result.metrics, n_val,
                                          chance, chance_acc)),
        new_findings=[k for k in after_kinds if k not in {g.kind for g in base.findings}],
        chance_loss=chance, chance_acc=chance_acc,  # the summary's reasons for a 'did not help'
    )


def _store(diagnosis: Diagnosis, base: _Run, out: str | Path, name: str | None,
           seconds: float, verify: bool, theory: list[dict[str, Any]] | None = None,
           theory_note: str = "") -> str:
    """Write the diagnosis to the results store in ``out`` (one transaction); returns the id.
    ``theory``: :func:`theory_rows` of the untrained model, kept in ``config.model.theory``
    (the report draws it beside the measured gradients and activations); without it,
    ``theory_note`` (why not) is kept in ``config.model.theory_note``, the report's caption."""
    from ..experiments.store import RunRecord, Store

    payload = diagnosis.to_dict()
    # the config names the model's class and layers, not its weights or the data: the step-0
    # probe table tells two models (or data sets) apart, so one diagnosis never replaces
    # another's; the same call again replaces its own
    first = diagnosis.probes[diagnosis.probes["step"] == 0]
    start = hashlib.sha256(pd.util.hash_pandas_object(first, index=False).values.tobytes())
    body = json.dumps({"config": payload["config"], "settings": payload["settings"],
                       "verify": verify, "start": start.hexdigest()}, sort_keys=True,
                      default=str)
    rid = "torch-" + hashlib.sha256(body.encode()).hexdigest()[:12]
    b = diagnosis.baseline
    metrics = {k: b[k] for k in ("train_loss", "train_acc", "val_loss", "val_acc", "steps")
               if k in b}
    metrics["seconds"] = seconds
    hist = base.result.history
    c, st, table = diagnosis.config, diagnosis.settings, diagnosis.probes
    named = table[(table["layer"] >= 1) & (table["quantity"] == "weight_std")]
    layers = dict(zip(named["layer"].astype(int).astype(str), named["module"].astype(str)))
    config = {  # the layout of a run config (and of a Watch run), so reports read it
        "source": "depthlab.torch.doctor",
        "model": {"class": c.get("model"), "layers": layers, "activation": c.get("activation"),
                  "batchnorm": c.get("batchnorm"), "parameters": c.get("parameters"),
                  **({"theory": theory} if theory else
                     {"theory_note": theory_note} if theory_note else {})},
        "train": {"optimizer": st["optimizer"], "lr": st["lr"],
                  "optimizer_kwargs": st["optimizer_kwargs"], "batch_size": st["batch_size"],
                  "max_steps": st["steps"], "seed": st["seed"], "loss": st["loss"],
                  "device": st["device"]},
        "probes": {"every": st["probe_every"]},
    }
    rec = RunRecord(id=rid, name=name or f"doctor {c.get('model')} (torch)",
                    kind="doctor", status="finished", config=config,
                    metrics=metrics, seconds=seconds, findings=payload,
                    probes=diagnosis.probes, steps=hist.steps_frame())
    with Store(out) as store:
        store.add_run(rec)
    diagnosis.settings["run_id"] = rid
    return rid
