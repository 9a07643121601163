"""Copy a depthlab network into an equivalent ``torch.nn.Module`` (tests and benchmarks).

One way only: depthlab -> torch (``to_torch``). Only this module imports torch;
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

    def __init__(self, beta: float) -> None:
        super().__init__()
        self.beta = float(beta)

    def forward(self, x):
        return x * torch.sigmoid(self.beta * x)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


class PenalizedTanh(nn.Module):
    """``f(x) = tanh(x)`` for x > 0, ``a tanh(x)`` otherwise (Xu et al. 2016)."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = float(a)

    def forward(self, x):
        return torch.where(x > 0, torch.tanh(x), self.a * torch.tanh(x))

    def extra_repr(self) -> str:
        return f"a={self.a}"


class Step(nn.Module):
    """``f(x) = 1`` for x > 0, else 0 (its gradient is 0 everywhere)."""

    def forward(self, x):
        return (x > 0).to(x.dtype)


class TorchStandardize(nn.Module):
    """``y = (x - mean) / std`` with ``mean`` and ``std`` as buffers (they follow ``.to()``,
    ``.double()`` and the ``state_dict``)."""

    def __init__(self, mean, std) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x):
        return (x - self.mean) / self.std


class FirstBatchBatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` whose running statistics start at the first training batch's
    (depthlab's ``ema_start="first_batch"``: ``mu_1 = mu_B1``, ``var_1`` = its unbiased
    variance), then follow torch's ``mu <- (1 - momentum) mu + momentum mu_B``. Plain
    ``BatchNorm1d`` starts the average at mean 0, variance 1."""

    def forward(self, x):
        if self.training and self.track_running_stats and int(self.num_batches_tracked) == 0:
            momentum, self.momentum = self.momentum, 1.0  # running = this batch's statistics
            try:
                return super().forward(x)
            finally:
                self.momentum = momentum
        return super().forward(x)


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
    }
    if name in simple:
        return simple[name]()
    if name == "leaky_relu":
        return nn.LeakyReLU(p.get("negative_slope", 0.01))
    if name == "elu":
        return nn.ELU(p.get("alpha", 1.0))
    if name == "gelu":
        return nn.GELU()
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
        first = layer.ema_start == "first_batch" and layer.num_batches == 0
        bn = (FirstBatchBatchNorm1d if first else nn.BatchNorm1d)(
            layer.n, eps=layer.eps, momentum=layer.momentum, dtype=dtype)
        with torch.no_grad():
            bn.num_batches_tracked.fill_(layer.num_batches)
            bn.weight.copy_(torch.from_numpy(layer.gamma.value.copy()))
            bn.bias.copy_(torch.from_numpy(layer.beta.value.copy()))
            mean, var = (layer.running_mean, layer.running_var)
            if layer.inference == "population" and layer.population_mean is not None:
                mean, var = layer.population_mean, layer.population_var
            bn.running_mean.copy_(torch.from_numpy(mean.copy()))
            bn.running_var.copy_(torch.from_numpy(var.copy()))
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


