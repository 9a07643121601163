"""Copy a depthlab network into an equivalent ``torch.nn.Module`` (``to_torch``) and an
``nn.Sequential`` of the layers depthlab has (or a module whose forward calls its submodules
in a chain) back into a depthlab ``Network`` (``from_torch``):
weights, biases and batch-norm statistics copied, so outputs and gradients agree to rounding.
A torch module depthlab cannot express is refused with a TypeError naming it. Only this module
imports torch;
``import depthlab`` never does. Without PyTorch installed, importing it says
``pip install depthlab[torch]``.
"""

from __future__ import annotations

try:
    import torch
    from torch import nn
except ModuleNotFoundError as exc:  # pragma: no cover - exercised in a subprocess test
    if exc.name != "torch":
        raise
    raise ModuleNotFoundError("depthlab.bridge needs PyTorch, which is not installed: "
                              "pip install depthlab[torch]", name="torch") from None

from ..layers import (
    Activation,
    AlphaDropout,
    BatchNorm,
    Dense,
    Dropout,
    Layer,
    Residual,
    Sequential,
)
from ..layers.standardize import Standardize
from ..network import Network


class Swish(nn.Module):
    """``f(x) = x sigmoid(beta x)`` (``nn.SiLU`` is beta = 1)."""

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = float(beta)

    def forward(self, x):
        return x * torch.sigmoid(self.beta * x)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


class PenalizedTanh(nn.Module):
    """``f(x) = tanh(x)`` for x > 0, ``a tanh(x)`` otherwise (Xu et al. 2016)."""

    def __init__(self, a: float = 0.25) -> None:
        super().__init__()
        self.a = float(a)

    def forward(self, x):
        return torch.where(x > 0, torch.tanh(x), self.a * torch.tanh(x))

    def extra_repr(self) -> str:
        return f"a={self.a}"


class _StepFunction(torch.autograd.Function):
    """``1[x > 0]`` with the gradient 0 (not None: the layers below get zero gradients, as in
    depthlab, so weight decay and momentum still act on them and the probes see them)."""

    @staticmethod
    def forward(ctx, x):
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        return torch.zeros_like(grad)


class Step(nn.Module):
    """``f(x) = 1`` for x > 0, else 0 (its gradient is 0 everywhere)."""

    def forward(self, x):
        return _StepFunction.apply(x)


class TorchStandardize(nn.Module):
    """``y = (x - mean) / std`` with ``mean`` and ``std`` as buffers (they follow ``.to()``,
    ``.double()`` and the ``state_dict``)."""

    def __init__(self, mean, std) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x):
        return (x - self.mean) / self.std


class _BatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` whose forward is written out (``F.batch_norm`` as torch's
    ``_BatchNorm.forward`` calls it), so that the bridge's norms compile under
    ``torch.jit.script`` (no ``super()`` call, no ``try``: TorchScript has neither; a
    ``to_torch`` model with ``dl.mlp(batchnorm=True)``'s default norm failed to script)."""

    def _first_batch(self) -> bool:
        return False

    def _train_or_running(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        momentum = self.momentum
        factor = 0.0 if momentum is None else momentum
        if self.training and self.track_running_stats:
            n = self.num_batches_tracked
            if n is not None:
                first = bool(n == 0)
                n.add_(1)
                if first and self._first_batch():
                    factor = 1.0  # running statistics = this batch's
                elif momentum is None:
                    factor = 1.0 / float(n)
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        return nn.functional.batch_norm(x, self.running_mean if track else None,
                                        self.running_var if track else None, self.weight,
                                        self.bias, bn_training, factor, self.eps)


class FirstBatchBatchNorm1d(_BatchNorm1d):
    """``nn.BatchNorm1d`` whose running statistics start at the first training batch's
    (depthlab's ``ema_start="first_batch"``: ``mu_1 = mu_B1``, ``var_1`` = its unbiased
    variance), then follow torch's ``mu <- (1 - momentum) mu + momentum mu_B``. Plain
    ``BatchNorm1d`` starts the average at mean 0, variance 1."""

    def _first_batch(self) -> bool:
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._train_or_running(x)


class PopulationBatchNorm1d(_BatchNorm1d):
    """``nn.BatchNorm1d`` whose eval mode normalizes with whole-training-set statistics, the
    buffers ``population_mean`` and ``population_var`` (depthlab's ``inference="population"``
    after ``net.calibrate(x_train)``): ``y = gamma (x - mu_pop) / sqrt(var_pop + eps) + beta``.
    Training mode is ``BatchNorm1d``'s, which still updates the running statistics (depthlab
    keeps its moving average beside the population statistics too). Before calibration the
    buffers are NaN and eval mode is refused, as depthlab refuses it (it does not fall back
    on the running statistics). ``inference="ema"``: a depthlab layer calibrated but set to
    its moving averages (``net.set_bn_inference("ema")``): eval mode is ``BatchNorm1d``'s, the
    population statistics are kept for ``from_torch``."""

    def __init__(self, *args, inference: str = "population", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if inference not in ("ema", "population"):
            raise ValueError(f"inference must be 'ema' or 'population', got {inference!r}")
        self.inference = inference
        self.kind_name = type(self).__name__  # for the message (TorchScript has no type())
        self.register_buffer("population_mean", torch.full_like(self.running_mean, torch.nan))
        self.register_buffer("population_var", torch.full_like(self.running_var, torch.nan))

    def __setstate__(self, state) -> None:  # a model pickled before kind_name existed
        super().__setstate__(state)
        self.__dict__.setdefault("kind_name", type(self).__name__)

    def calibrated(self) -> bool:
        """Whether the population statistics were set (they are not all NaN)."""
        return not bool(torch.isnan(self.population_mean).all())

    def extra_repr(self) -> str:
        return super().extra_repr() + (", inference='ema'" if self.inference == "ema" else "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._population_forward(x)

    def _population_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.inference == "ema":
            return self._train_or_running(x)
        if not self.calibrated():
            raise RuntimeError(self.kind_name + ": inference='population' needs "
                               "whole-training-set statistics; call net.calibrate(x_train) on "
                               "the depthlab network before to_torch, or set population_mean "
                               "and population_var")
        return nn.functional.batch_norm(x, self.population_mean, self.population_var,
                                        self.weight, self.bias, False, 0.0, self.eps)


class FirstBatchPopulationBatchNorm1d(FirstBatchBatchNorm1d, PopulationBatchNorm1d):
    """Both: the moving average starts at the first batch's statistics, eval mode uses the
    population statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._population_forward(x)


class _Residual(nn.Module):
    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch

    def forward(self, x):
        return x + self.branch(x)


def torch_activation(layer: Activation) -> nn.Module:
    name, p = layer.fn.name, getattr(layer.fn, "params", {})
    simple = {
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "identity": nn.Identity,
        "relu": nn.ReLU,
        "selu": nn.SELU,
        "softsign": nn.Softsign,
        "mish": nn.Mish,
        "logsigmoid": nn.LogSigmoid,
        "relu6": nn.ReLU6,
        "hardsigmoid": nn.Hardsigmoid,
        "hardswish": nn.Hardswish,
    }
    if name in simple:
        return simple[name]()
    if name == "leaky_relu":
        return nn.LeakyReLU(p.get("negative_slope", 0.01))
    if name == "elu":
        return nn.ELU(p.get("alpha", 1.0))
    if name == "softplus":
        return nn.Softplus(p.get("beta", 1.0), p.get("threshold", 20.0))
    if name == "hardtanh":
        return nn.Hardtanh(p.get("min_val", -1.0), p.get("max_val", 1.0))
    if name == "gelu":
        return nn.GELU(approximate=p.get("approximate", "none"))
    if name == "softmax":
        return nn.Softmax(dim=-1)
    if name == "swish":
        beta = p.get("beta", 1.0)
        return nn.SiLU() if beta == 1.0 else Swish(beta)
    if name == "penalized_tanh":
        return PenalizedTanh(p.get("a", 0.25))
    if name == "step":
        return Step()
    raise ValueError(f"no torch equivalent for activation {name!r}")


def _convert(layer: Layer, dtype) -> nn.Module:
    if isinstance(layer, Dense):
        lin = nn.Linear(layer.fan_in, layer.fan_out, bias=layer.b is not None, dtype=dtype)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(layer.W.value.T.copy()))
            if layer.b is not None:
                lin.bias.copy_(torch.from_numpy(layer.b.value.copy()))
        return lin
    if isinstance(layer, BatchNorm):
        # after the first batch it computes what BatchNorm1d does; kept so that from_torch
        # gives back ema_start="first_batch" (the same signature, recipe and saved file)
        first = layer.ema_start == "first_batch"
        # an uncalibrated "population" layer too: a plain BatchNorm1d evaluated with the
        # running statistics depthlab refuses to use, and from_torch gave back inference="ema"
        # a calibrated "ema" layer too: its population statistics kept (inference="ema")
        # (track_running_stats=False: no statistics but the batch's, no population buffers)
        population = layer.track_running_stats and (layer.inference == "population"
                                                    or layer.population_mean is not None)
        kind = {(False, False): nn.BatchNorm1d, (True, False): FirstBatchBatchNorm1d,
                (False, True): PopulationBatchNorm1d,
                (True, True): FirstBatchPopulationBatchNorm1d}[first, population]
        bn = kind(layer.n, eps=layer.eps, momentum=layer.momentum, dtype=dtype,
                  affine=layer.affine, track_running_stats=layer.track_running_stats,
                  **({"inference": layer.inference} if population else {}))
        with torch.no_grad():
            if layer.affine:
                bn.weight.copy_(torch.from_numpy(layer.gamma.value.copy()))
                bn.bias.copy_(torch.from_numpy(layer.beta.value.copy()))
            if layer.track_running_stats:
                bn.num_batches_tracked.fill_(layer.num_batches)
                bn.running_mean.copy_(torch.from_numpy(layer.running_mean.copy()))
                bn.running_var.copy_(torch.from_numpy(layer.running_var.copy()))
            if population and layer.population_mean is not None:
                bn.population_mean.copy_(torch.from_numpy(layer.population_mean.copy()))
                bn.population_var.copy_(torch.from_numpy(layer.population_var.copy()))
        return bn
    if isinstance(layer, Activation):
        return torch_activation(layer)
    if isinstance(layer, AlphaDropout):
        return nn.AlphaDropout(layer.p)
    if isinstance(layer, Dropout):
        return nn.Dropout(layer.p)
    if isinstance(layer, Residual):
        return _Residual(_convert(layer.branch, dtype))
    if isinstance(layer, Standardize):
        return TorchStandardize(torch.from_numpy(layer.mean.copy()).to(dtype),
                                torch.from_numpy(layer.std.copy()).to(dtype))
    if isinstance(layer, Sequential):
        return nn.Sequential(*[_convert(sub, dtype) for sub in layer.layers])
    raise TypeError(f"cannot convert {type(layer).__name__} to torch")


def to_torch(net: Network) -> nn.Sequential:
    """An ``nn.Sequential`` with the same weights and statistics as ``net`` (same dtype)."""
    if not isinstance(net, Network):
        raise TypeError(f"to_torch expects a depthlab Network (dl.mlp, dl.load or "
                        f"dl.Network([...layers])), got {type(net).__name__}")
    dtype = torch.float64 if net.dtype.itemsize == 8 else torch.float32
    return _convert(net, dtype)


# -- torch -> depthlab ---------------------------------------------------------------------------
_SIMPLE_FROM_TORCH = {nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.Identity: "identity",
                      nn.ReLU: "relu", nn.SELU: "selu", nn.Softsign: "softsign",
                      nn.Mish: "mish", nn.SiLU: "swish", nn.LogSigmoid: "logsigmoid",
                      nn.ReLU6: "relu6", nn.Hardsigmoid: "hardsigmoid",
                      nn.Hardswish: "hardswish", Step: "step"}
ACCEPTED_FROM_TORCH = ("nn.Sequential, Linear, BatchNorm1d (a momentum or None; affine and "
                       "track_running_stats True or False), Dropout, AlphaDropout, Sigmoid, Tanh, "
                       "Identity, ReLU, "
                       "LeakyReLU, ELU, SELU, SiLU, Softsign, Mish, GELU (erf or tanh), "
                       "Softplus, Hardtanh, LogSigmoid, ReLU6, Hardsigmoid, Hardswish, "
                       "Softmax(dim=-1, 1 or None), Flatten(start_dim=1, end_dim=-1) (no layer: "
                       "depthlab takes rows), to_torch's Swish, PenalizedTanh, Step, "
                       "TorchStandardize, batch norms and residual blocks, and a module of "
                       "your own whose forward only calls its submodules one after another "
                       "(read with torch.fx; F.relu, torch.tanh, x.sigmoid(), F.softmax(dim=1), "
                       "torch.flatten(x, 1) and the other functional forms of these activations "
                       "between them)")


_PLAIN_KINDS = (nn.Sequential, nn.Linear, nn.BatchNorm1d, nn.Flatten, nn.Dropout, nn.AlphaDropout,
                nn.LeakyReLU, nn.ELU, nn.GELU, nn.Softmax, nn.Softplus, nn.Hardtanh,
                *(k for k in _SIMPLE_FROM_TORCH if k.__module__.startswith("torch.")))


def _kind(m: nn.Module) -> type:
    """The class ``m`` is read as: a subclass of a torch class of :data:`ACCEPTED_FROM_TORCH`
    that keeps its base's ``forward`` (``class MLP(nn.Sequential)`` with its own ``__init__``)
    computes what the base does and is read as the base; anything else as its own class
    (a subclass with its own ``forward`` is refused by name)."""
    kind = type(m)
    if kind in _PLAIN_KINDS or kind.__module__ == __name__:
        return kind
    base = next((b for b in kind.__mro__[1:] if b in _PLAIN_KINDS), None)
    return base if base is not None and kind.forward is base.forward else kind


def _activation_from_torch(m: nn.Module) -> Activation | None:
    kind = _kind(m)
    if kind in _SIMPLE_FROM_TORCH:
        return Activation(_SIMPLE_FROM_TORCH[kind])
    if kind is nn.LeakyReLU:
        return Activation("leaky_relu", negative_slope=float(m.negative_slope))
    if kind is nn.ELU:
        return Activation("elu", alpha=float(m.alpha))
    if kind is nn.Softplus:
        return Activation("softplus", beta=float(m.beta), threshold=float(m.threshold))
    if kind is nn.Hardtanh:
        return Activation("hardtanh", min_val=float(m.min_val), max_val=float(m.max_val))
    if kind is nn.GELU and m.approximate in ("none", "tanh"):
        return Activation("gelu", approximate=m.approximate)
    if kind is nn.Softmax and m.dim in (-1, 1, None):  # None: torch's dim 1 of rows (N, D)
        return Activation("softmax")
    if kind is Swish:
        return Activation("swish", beta=m.beta)
    if kind is PenalizedTanh:
        return Activation("penalized_tanh", a=m.a)
    return None


def _desc(m: nn.Module) -> str:
    """``m`` on one line: its class and ``extra_repr`` (``Dropout(p=1.0, inplace=False)``)."""
    extra = " ".join(m.extra_repr().split())
    return f"{type(m).__name__}({extra})" if extra else type(m).__name__


def _where(path: str) -> str:
    return f"module {path!r}" if path else "the model itself"


def _from_torch(m: nn.Module, path: str, np_dtype, counter: list[int],
                width: list[int | None]) -> list[Layer]:
    """The depthlab layers computing what module ``m`` (at ``path``) computes. ``width[0]``:
    the feature count reaching ``m`` (None before the first sized module); a module expecting
    another count is a TypeError naming it (torch would fail at the first forward). A value
    depthlab refuses (a BatchNorm momentum of 0, ``Dropout(p=1)``) is a TypeError naming the
    module too."""
    try:
        return _from_torch_checked(m, path, np_dtype, counter, width)
    except ValueError as exc:
        raise TypeError(f"from_torch cannot express {_where(path)} ({_desc(m)}): {exc}") from None


def _expect_width(m: nn.Module, path: str, width: list[int | None], n_in: int) -> None:
    if width[0] is not None and width[0] != n_in:
        raise TypeError(f"from_torch cannot express {_where(path)} ({_desc(m)}): it expects "
                        f"{n_in} features, the modules before it give {width[0]}")


def _from_torch_checked(m: nn.Module, path: str, np_dtype, counter: list[int],
                        width: list[int | None]) -> list[Layer]:
    import numpy as np

    def arr(t) -> np.ndarray:
        return t.detach().cpu().numpy().astype(np_dtype, copy=True)

    counter[0] += 1
    name = f"{type(m).__name__.lower()}{counter[0]}"
    kind = _kind(m)
    if kind is nn.Sequential:
        # every slot, as Sequential.forward runs them (named_children() skips a module seen
        # before: a ReLU instance used twice would be dropped the second time)
        return [la for sub_name, sub in m._modules.items() if sub is not None
                for la in _from_torch(sub, f"{path}.{sub_name}" if path else sub_name,
                                      np_dtype, counter, width)]
    if kind is nn.Linear:
        _expect_width(m, path, width, m.in_features)
        width[0] = m.out_features
        dense = Dense(m.in_features, m.out_features, bias=m.bias is not None,
                      init="zeros", dtype=np_dtype, name=name)
        dense.W.value[...] = arr(m.weight).T
        if m.bias is not None:
            dense.b.value[...] = arr(m.bias)
        dense.init = "from_torch"  # its repr said init='zeros' for torch's weights
        return [dense]
    if kind in (nn.BatchNorm1d, FirstBatchBatchNorm1d, PopulationBatchNorm1d,
                FirstBatchPopulationBatchNorm1d):
        _expect_width(m, path, width, m.num_features)
        width[0] = m.num_features
        bn = BatchNorm(m.num_features, eps=float(m.eps),
                       momentum=None if m.momentum is None else float(m.momentum),
                       ema_start="first_batch" if issubclass(kind, FirstBatchBatchNorm1d)
                       else "zero",
                       inference=getattr(m, "inference", "population")
                       if issubclass(kind, PopulationBatchNorm1d) else "ema",
                       dtype=np_dtype, name=name, affine=bool(m.affine),
                       track_running_stats=bool(m.track_running_stats))
        if m.affine:
            bn.gamma.value[...] = arr(m.weight)
            bn.beta.value[...] = arr(m.bias)
        if m.track_running_stats:
            bn.running_mean[...] = arr(m.running_mean)
            bn.running_var[...] = arr(m.running_var)
            bn.num_batches = int(m.num_batches_tracked)
        if isinstance(m, PopulationBatchNorm1d) and m.calibrated():
            bn.population_mean = arr(m.population_mean)
            bn.population_var = arr(m.population_var)
        return [bn]
    if kind is nn.Flatten:
        # depthlab networks take rows (N, D) and flatten images (N, H, W) per example, which
        # is what Flatten(start_dim=1, end_dim=-1) does; on rows it is the identity
        if (m.start_dim, m.end_dim) != (1, -1):
            raise TypeError(f"from_torch cannot express {_where(path)} ({_desc(m)}): "
                            "depthlab networks take rows of features (N, D); accepted: "
                            "Flatten(start_dim=1, end_dim=-1), which flattens each example")
        return []
    if kind is nn.Dropout:
        return [Dropout(float(m.p), name=name)]
    if kind is nn.AlphaDropout:
        return [AlphaDropout(float(m.p), name=name)]
    if kind is _Residual:
        n_in = width[0]
        branch = _from_torch(m.branch, f"{path}.branch", np_dtype, counter, width)
        if n_in is not None and width[0] != n_in:  # x + F(x): F keeps the width
            raise TypeError(f"from_torch cannot express {_where(path)}: its branch maps "
                            f"{n_in} features to {width[0]}; x + F(x) needs the same count")
        return [Residual(Sequential(_hidden_slots(branch)), name=name)]
    if kind is TorchStandardize:
        _expect_width(m, path, width, int(m.mean.shape[0]))
        width[0] = int(m.mean.shape[0])
        return [Standardize(arr(m.mean), arr(m.std), name=name)]
    act = _activation_from_torch(m)
    if act is not None:
        act.name = name
        if kind is nn.Identity:
            act._torch_identity = True  # kept or dropped by _idle_identities_dropped
        return [act]
    chain, why = _chain_of_submodules(m)
    if chain is not None:
        counter[0] -= 1  # a container: its modules are the layers
        out: list[Layer] = []
        for step in chain:
            if isinstance(step, str):
                out += _from_torch(m.get_submodule(step), f"{path}.{step}" if path else step,
                                   np_dtype, counter, width)
            elif step[0] == "act":  # a functional activation: F.relu(x), x.tanh()
                counter[0] += 1
                out.append(Activation(step[1], **dict(step[2]),
                                      name=f"{step[1]}{counter[0]}"))
        return out
    raise TypeError(f"from_torch cannot express {_where(path)} ({type(m).__name__}"
                    f"{'' if not m.extra_repr() else '(' + m.extra_repr() + ')'}"
                    f"{_not_the_torch_class(m)}{why}); accepted: {ACCEPTED_FROM_TORCH}")


def _chain_of_submodules(m: nn.Module) -> tuple[list[str] | None, str]:
    """The paths of the submodules that ``m.forward`` calls one after the other, each on the
    previous one's output (``def forward(self, x): return self.l2(self.act(self.l1(x)))``, a
    wrapper ``return self.net(x)``), read from a ``torch.fx`` trace that treats every
    submodule as a leaf; ``(None, why)`` when ``m`` is a torch or depthlab class, has no
    submodules, or its forward does anything else (``why``: what, for the message; ''
    when nothing was traced). A submodule with parameters called twice is not a chain
    (torch sums the gradients of its shared weights; depthlab layers own theirs)."""
    import torch.fx

    kind = type(m)
    if (kind.__module__.startswith("torch.") or kind.__module__ == __name__
            or isinstance(m, torch.fx.GraphModule) or next(m.children(), None) is None):
        return None, ""

    class _Leaves(torch.fx.Tracer):
        def is_leaf_module(self, sub: nn.Module, qualname: str) -> bool:
            return True

    modes = {sub: sub.training for sub in m.modules()}
    graphs = []
    try:  # in both modes: a forward may branch on self.training (dropout only when training)
        for mode in (True, False):
            m.train(mode)
            graphs.append(_Leaves().trace(m))
    except Exception as exc:  # data-dependent control flow, *args, asserts on shapes, ...
        return None, (f": its forward could not be traced as a chain of its submodules "
                      f"({type(exc).__name__}: {' '.join(str(exc).split())[:120]})")
    finally:
        for sub, mode in modes.items():
            sub.training = mode
    chains = [_chain_of_graph(m, graph) for graph in graphs]
    if chains[0][0] is not None and chains[1][0] != chains[0][0]:
        def shown(chain):
            return ", ".join(st if isinstance(st, str) else f"F.{st[-1]}" if st[0] == "act"
                             else "flatten" for st in chain or ["not a chain"])
        return None, (": its forward calls other submodules in training mode "
                      f"({shown(chains[0][0])}) than in eval mode ({shown(chains[1][0])})")
    return chains[0]


def _functional_activations() -> dict:
    """torch functions (and ``Tensor`` methods, by name) computing a depthlab activation:
    function -> (activation name, {torch keyword: depthlab keyword})."""
    F = nn.functional
    plain = {F.relu: "relu", torch.relu: "relu", torch.tanh: "tanh", F.tanh: "tanh",
             torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", F.silu: "swish", F.selu: "selu",
             torch.selu: "selu", F.mish: "mish", F.softsign: "softsign",
             F.logsigmoid: "logsigmoid", F.relu6: "relu6", F.hardsigmoid: "hardsigmoid",
             F.hardswish: "hardswish"}
    out = {f: (name, {}) for f, name in plain.items()}
    out.update({F.gelu: ("gelu", {"approximate": "approximate"}),
                F.elu: ("elu", {"alpha": "alpha"}),
                F.leaky_relu: ("leaky_relu", {"negative_slope": "negative_slope"}),
                F.softplus: ("softplus", {"beta": "beta", "threshold": "threshold"}),
                F.hardtanh: ("hardtanh", {"min_val": "min_val", "max_val": "max_val"}),
                "relu": ("relu", {}), "tanh": ("tanh", {}), "sigmoid": ("sigmoid", {})})
    return out


def _functional_step(node, prev) -> tuple | None:
    """The chain step of a traced function call on the previous output alone: ``("act",
    name, kwargs)`` for a functional activation (its keyword arguments read; ``inplace``
    changes nothing computed), ``("flatten",)`` for ``torch.flatten(x, 1)`` /
    ``x.flatten(1)`` (depthlab takes rows: no layer); None for anything else."""
    if not node.args or node.args[0] is not prev:
        return None
    rest, kwargs = node.args[1:], dict(node.kwargs)
    if node.target in (torch.flatten, "flatten") and node.op in ("call_function",
                                                                 "call_method"):
        dims = (*rest, *[kwargs.pop(k) for k in ("start_dim", "end_dim") if k in kwargs])
        return ("flatten",) if not kwargs and dims in ((1,), (1, -1)) else None
    if node.op == "call_function" and node.target is nn.functional.softmax:
        ok = (not rest and kwargs.get("dim") in (1, -1)
              and kwargs.get("dtype") is None and set(kwargs) <= {"dim", "dtype", "_stacklevel"})
        return ("act", "softmax", ()) if ok else None
    key = node.target if node.op == "call_function" else (
        node.target if node.op == "call_method" and isinstance(node.target, str) else None)
    try:
        found = _functional_activations().get(key) if key is not None else None
    except TypeError:  # an unhashable target
        found = None
    if found is None or rest:
        return None
    name, names = found
    kwargs.pop("inplace", None)
    if set(kwargs) - set(names):
        return None
    return ("act", name, tuple(sorted((names[k], v) for k, v in kwargs.items())))


def _chain_of_graph(m: nn.Module, graph) -> tuple[list | None, str]:
    """:func:`_chain_of_submodules` of one traced ``graph`` of ``m``: module paths and
    functional steps (:func:`_functional_step`)."""
    nodes = list(graph.nodes)
    inputs = [n for n in nodes if n.op == "placeholder"]
    # forward(self, x, mask=None) with mask unused: one batch still
    if not inputs or any(n.users or not n.args for n in inputs[1:]):
        return None, f": its forward takes {len(inputs)} inputs, not one batch"
    nodes = [n for n in nodes if n.op != "placeholder" or n is inputs[0]]
    chain: list = []
    prev = inputs[0]
    for node in nodes[1:]:
        if node.op == "output":
            if node.args != (prev,) or not any(isinstance(st, str) for st in chain):
                return None, ": its forward does not return its last submodule's output"
            return chain, ""
        step = _functional_step(node, prev) if node.op != "call_module" else None
        if step is not None:
            chain.append(step)
            prev = node
            continue
        if node.op != "call_module" or node.args != (prev,) or node.kwargs:
            return None, f": its forward is not a chain of its submodules ({_step(node)})"
        target = str(node.target)
        sub = m.get_submodule(target)
        if target in chain and next(sub.parameters(), None) is not None:
            return None, (f": its forward calls {target!r} twice (shared weights; each "
                          "depthlab layer owns its own)")
        chain.append(target)
        prev = node
    return None, ": its forward returns nothing"


def _step(node) -> str:
    """What a traced step that breaks a chain does, for the message."""
    if node.op == "call_module":
        return f"it calls {node.target!r} on more than the previous module's output"
    if node.op == "get_attr":
        return f"it reads {node.target!r} directly"
    name = getattr(node.target, "__name__", str(node.target))
    return f"it calls {name}" if node.op == "call_function" else f"it calls .{name}()"


def _not_the_torch_class(m: nn.Module) -> str:
    """What a refused module is when its class name reads like an accepted one: a
    ``torch.fx`` GraphModule keeps the traced class's name (``symbolic_trace(nn.Sequential)``
    was refused as 'Sequential; accepted: nn.Sequential, ...'), a subclass with its own
    ``forward`` (or another library's ``Linear``) is not torch's."""
    import torch.fx

    kind = type(m)
    if kind in _PLAIN_KINDS:  # torch's own class, refused for its settings (Softmax(dim=0) was
        # called 'torch.nn.modules.activation.Softmax, not torch.nn's')
        if kind is nn.Softmax:
            return (f": a softmax over dim {m.dim}; depthlab's softmax normalizes each row's "
                    "features: Softmax(dim=1) or Softmax(dim=-1)")
        return ": torch.nn's class with settings depthlab cannot express"
    if isinstance(m, torch.fx.GraphModule):
        return ": a torch.fx GraphModule running traced code; pass the model it was traced from"
    base = next((b for b in kind.__mro__[1:] if b in _PLAIN_KINDS), None)
    if base is not None:
        return (f": {kind.__module__}.{kind.__qualname__}, a subclass of nn.{base.__name__} "
                "with its own forward, which depthlab cannot read")
    if kind.__name__ in {k.__name__ for k in _PLAIN_KINDS}:
        return f": {kind.__module__}.{kind.__qualname__}, not torch.nn's"
    return ""


def _idle_identities_dropped(layers: list[Layer]) -> list[Layer]:
    """``layers`` without the ``nn.Identity`` modules that stand beside an activation.

    An ``nn.Identity`` computes ``f(x) = x``; read as depthlab's identity activation it is a
    probe point of its own, so ``Linear, Tanh, Identity, Linear`` gave ``dl.probe`` an extra
    hidden layer (every later layer number shifted: layer 2's ``act_mean`` was the tanh's, its
    ``weight_std`` the first Linear's, while ``dlt.probe``'s layer 2 is the second Linear) and
    ``Linear, Identity, Tanh`` gave layer 1 the identity's ``act_*`` instead of the tanh's.
    One kept where it fills an activation's slot alone (``to_torch`` of an identity-activation
    network: ``Linear, Identity, Linear``); dropped after an activation, or before one with
    only dropout or other identities between (dropout is off in the probe's forward)."""
    def passive(la: Layer) -> bool:
        return isinstance(la, Dropout) or getattr(la, "_torch_identity", False)

    out: list[Layer] = []
    for i, la in enumerate(layers):
        if not getattr(la, "_torch_identity", False):
            out.append(la)
            continue
        del la._torch_identity
        before = next((b for b in reversed(out) if not isinstance(b, Dropout)), None)
        after = next((a for a in layers[i + 1:] if not passive(a)), None)
        if not isinstance(before, Activation) and not isinstance(after, Activation):
            out.append(la)
    return out


def _hidden_slots(layers: list[Layer]) -> list[Layer]:
    """``layers`` with one activation slot per hidden weight layer, as ``dl.probe`` counts
    hidden layers (one per activation) and ``dlt.probe`` counts weight layers: the
    ``nn.Identity`` modules beside an activation dropped (:func:`_idle_identities_dropped`),
    and an identity activation ``f(s) = s`` put after a Dense (and its batch norms, before its
    dropout) that feeds the next Dense directly. ``Linear, Linear, Tanh, Linear`` gave
    ``dl.probe`` one hidden layer, the second Linear's, numbered 1 (its ``pre_mean`` 0.141
    against ``dlt.probe``'s layer 1, the first Linear, -0.225), ``Linear, BatchNorm1d,
    Linear`` none; the outputs are unchanged."""
    layers = _idle_identities_dropped(layers)
    out: list[Layer] = []
    for i, la in enumerate(layers):
        out.append(la)
        if not isinstance(la, (Dense, BatchNorm)):
            continue
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(nxt, BatchNorm):
            continue  # the slot comes after the norm
        k = i + 1
        while k < len(layers) and isinstance(layers[k], Dropout):
            k += 1
        last_dense = next((b for b in reversed(out) if not isinstance(b, BatchNorm)), None)
        if (k < len(layers) and isinstance(layers[k], Dense)
                and isinstance(last_dense, Dense)):
            out.append(Activation("identity", name=f"identity_{la.name}"))
    return out


def _first_sized(layers: list[Layer]) -> Dense | Standardize | None:
    """The first layer, in forward order, that fixes the input size."""
    for la in layers:
        if isinstance(la, (Dense, Standardize)):
            return la
        if isinstance(la, Residual):
            found = _first_sized(la.branch.layers)
            if found is not None:
                return found
    return None


_HOOK_KINDS = (("_forward_pre_hooks", "forward pre-hook"), ("_forward_hooks", "forward hook"),
               ("_backward_pre_hooks", "backward pre-hook"), ("_backward_hooks", "backward hook"))


def _hook_name(hook) -> str:
    """A hook by its class (``SpectralNorm``, ``L1Unstructured``) or its function's name."""
    fn = getattr(hook, "__func__", hook)
    return getattr(fn, "__qualname__", None) or type(hook).__name__


def _hook_remedy(hook) -> str:
    from torch.nn.utils import prune
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    if isinstance(hook, SpectralNorm):
        return "torch.nn.utils.remove_spectral_norm(module) keeps its current weight"
    if isinstance(hook, WeightNorm):
        return "torch.nn.utils.remove_weight_norm(module) keeps its current weight"
    if isinstance(hook, prune.BasePruningMethod):
        return ("torch.nn.utils.prune.remove(module, 'weight') keeps the pruned weight (depthlab "
                "would train the pruned entries again)")
    return "remove it (the handle register_*_hook returned: handle.remove())"


def _refuse_hooks_and_parametrizations(module: nn.Module) -> None:
    """A TypeError naming the first module whose computation is not its class's: a weight
    computed from other parameters (``torch.nn.utils.parametrizations.weight_norm`` or
    ``spectral_norm``: depthlab trains the weight itself, so gradients and training differ,
    and reading a spectral norm's weight in training mode runs a power iteration on the
    user's model), or a forward/backward hook (the old ``torch.nn.utils.spectral_norm`` and
    ``weight_norm``, pruning, a user's hook scaling an output: depthlab runs none, so its
    outputs differed, 0.3 to 1.1 on a Linear(4, 3) with an output or input hook)."""
    from torch.nn.modules import module as torch_module
    from torch.nn.utils import parametrize

    for attr, what in _HOOK_KINDS:  # register_module_forward_hook & co.: every module runs them
        hooks = getattr(torch_module, f"_global{attr}", None)
        if hooks:
            hook = next(iter(hooks.values()))
            raise TypeError(f"from_torch cannot express the model while a global {what} "
                            f"({_hook_name(hook)}) is registered: every module runs it, and "
                            "depthlab layers run no hooks; remove it (the handle "
                            "register_module_*_hook returned: handle.remove())")
    for path, sub in module.named_modules():
        if parametrize.is_parametrized(sub):
            tensor, plist = next(iter(sub.parametrizations.items()))
            kinds = ", ".join(type(p).__name__ for p in plist)
            raise TypeError(f"from_torch cannot express {_where(path)} ({_desc(sub)}): its "
                            f"{tensor!r} is parametrized ({kinds}): computed from other "
                            f"parameters, which depthlab cannot train (it trains the "
                            f"{tensor} itself); remove it first: "
                            f"torch.nn.utils.parametrize.remove_parametrizations(module, "
                            f"{tensor!r}) keeps its current value")
        for attr, what in _HOOK_KINDS:
            hooks = getattr(sub, attr, None)
            if hooks:
                hook = next(iter(hooks.values()))
                raise TypeError(f"from_torch cannot express {_where(path)} ({_desc(sub)}): it "
                                f"has a {what} ({_hook_name(hook)}) that can change what it "
                                f"computes, and depthlab layers run no hooks; "
                                f"{_hook_remedy(hook)}")


def _held_module(module: nn.Module) -> nn.Module:
    """The module a wrapper computes with: ``torch.compile(model)`` (an ``OptimizedModule``,
    ``._orig_mod``) and ``nn.DataParallel`` / ``DistributedDataParallel`` (``.module``) run the
    model they hold, with its parameters; anything else is itself. Told by the class name
    and attribute for ``OptimizedModule`` (``torch._dynamo`` is not imported for it)."""
    while True:
        if type(module).__name__ == "OptimizedModule" and isinstance(
                getattr(module, "_orig_mod", None), nn.Module):
            module = module._orig_mod
        elif isinstance(module, nn.DataParallel | nn.parallel.DistributedDataParallel):
            module = module.module
        else:
            return module


def from_torch(module: nn.Module) -> Network:
    """The depthlab ``Network`` computing what ``module`` computes, weights, biases and
    batch-norm statistics copied (torch -> depthlab; ``to_torch`` goes back): forward outputs
    and gradients agree to rounding (float64: to ~1e-15). ``module`` is an ``nn.Sequential``
    (nested allowed) of the modules in :data:`ACCEPTED_FROM_TORCH` with float32 or float64
    parameters, or a module of the user's own class whose forward is still a chain: a
    ``torch.fx`` trace with every submodule a leaf shows it calling submodules one after
    another, each on the previous one's output (``return self.net(x)``, a loop over an
    ``nn.ModuleList``; ``F.relu(self.fc(x))`` and the other functional activations, and
    ``torch.flatten(x, 1)``, are steps too); anything else is a TypeError naming the module
    and its path (and, for such a class, the step that is not a chain: ``it calls add`` for
    ``x + self.f(x)``).
    The network has no recipe (``config`` is empty); :func:`depthlab.save` writes it when
    its layers are what :func:`depthlab.mlp` builds (:func:`depthlab.recipe.infer_recipe`). A
    ``torch.compile(model)`` or ``nn.DataParallel(model)`` is read as the ``model`` it holds
    (their own hooks refused as the model's are)."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"from_torch expects a torch.nn.Module, got {type(module).__name__}")
    held = _held_module(module)
    if held is not module:
        _refuse_hooks_and_parametrizations(module)  # the wrapper's own hooks too
        module = held
    tensors = list(module.parameters()) + list(module.buffers())
    # complex ones too: cast to a float dtype they would lose their imaginary parts
    dtypes = {t.dtype for t in tensors if t.is_floating_point() or t.is_complex()}
    if not dtypes <= {torch.float32} and not dtypes <= {torch.float64}:
        raise TypeError(f"from_torch expects float32 or float64 parameters (one dtype), got "
                        f"{', '.join(sorted(str(d) for d in dtypes))}")
    lazy = next(((name, sub) for name, sub in module.named_modules()
                 if isinstance(sub, nn.modules.lazy.LazyModuleMixin)
                 and sub.has_uninitialized_params()), None)
    if lazy is not None:  # was 'Dense fan_in must be a positive integer, got 0'
        raise TypeError(f"from_torch cannot express {_where(lazy[0])} ({_desc(lazy[1])}): a "
                        "lazy module whose weights do not exist until its first forward; run "
                        "the model once on an example batch first")
    meta = next((name for name, t in [*module.named_parameters(), *module.named_buffers()]
                 if t.is_meta), None)
    if meta is not None:
        raise TypeError(f"from_torch cannot read {meta!r}: it is on the 'meta' device (a shape "
                        "without values); materialize the model first (e.g. "
                        "model.to_empty(device='cpu') and load_state_dict)")
    _refuse_hooks_and_parametrizations(module)
    np_dtype = "float64" if dtypes == {torch.float64} else "float32"
    # some parameters frozen (requires_grad=False), others not: depthlab trains every
    # parameter, so one optimizer step would move weights torch keeps (all frozen is a model
    # put away for inference: accepted)
    named = [(n, t) for n, t in module.named_parameters() if t.is_floating_point()]
    if any(t.requires_grad for _, t in named):
        frozen = [n for n, t in named if not t.requires_grad]
        if frozen:
            raise TypeError(f"from_torch cannot express frozen parameters: {frozen[0]!r}"
                            f"{f' and {len(frozen) - 1} more' if len(frozen) > 1 else ''} "
                            "has requires_grad=False while others train; depthlab trains "
                            "every parameter, so training would move them (expected all "
                            "parameters trainable: model.requires_grad_(True), or all frozen)")
    first_path: dict[int, str] = {}  # a module with weights used twice: torch sums its gradients
    for path, sub in module.named_modules(remove_duplicate=False):
        if next(sub.parameters(recurse=False), None) is None:
            continue
        if id(sub) in first_path:
            raise TypeError(f"from_torch cannot express {_where(path)} ({_desc(sub)}): it is "
                            f"the same module as {_where(first_path[id(sub)])} (shared weights; "
                            "each depthlab layer owns its own)")
        first_path[id(sub)] = path
    layers = _hidden_slots(_from_torch(module, "", np_dtype, [0], [None]))
    first = _first_sized(layers)
    if first is None:
        raise TypeError("from_torch needs at least one Linear layer (the network's input size "
                        "comes from the first one)")
    n_inputs = first.fan_in if isinstance(first, Dense) else int(first.mean.shape[0])
    if isinstance(layers[-1], Activation):
        # an activation after the last weight layer is the output's (a final Softmax): as
        # mlp(output_activation=...) marks it and the saved recipe reads it
        # (recipe._candidate), so dl.probe takes no hidden layer there (the round trip of
        # mlp(..., output_activation="softmax") had a third layer: the output Dense with the
        # softmax's act_* rows)
        layers[-1].is_output = True
    return Network(layers, n_inputs=n_inputs, dtype=np_dtype)
