"""``predict(model, x)``: the mean-field (variance-propagation) prediction of each layer's
statistics at initialization, from the model's actual weights, beside the measurement.

For a chain of Linear/Conv layers ``s_l = W_l a_{l-1} + b_l``, each optionally followed by an
elementwise activation module ``a_l = f_l(s_l)`` (:data:`depthlab.torch.layers.ACTIVATIONS`;
``a_l = s_l`` without one; an activation the forward applies itself, ``F.relu(fc1(x))``, as
that module), with shape-only operations between them (``nn.Flatten``, ``torch.flatten``,
``x.view``, ``x.reshape``, ``x.flatten``: the values, reshaped or copied), and
treating pre-activations as Gaussians (wide layers; Glorot & Bengio 2010, He et al.
2015, Poole et al. 2016 -- the rules of :mod:`depthlab.theory.variance`):

forward   ``q_l = Var(s_l) = n_l Var(W_l) E[a_{l-1}^2] + Var(b_l)`` around the mean
          ``n_l mean(W_l) E[a_{l-1}] + mean(b_l)`` (common to every unit: a constant bias, or
          weights with a nonzero mean), ``E[a_0^2]`` = mean of ``x^2``;
          ``n_l`` = fan-in (``in_features``; ``in_channels / groups * prod(kernel)``), ``v_l``
          = mean of ``W_l^2`` (the actual weights), ``E[a_l^2] = E[f_l(s)^2]`` for ``s`` of
          that mean and variance by Gaussian quadrature
          (:func:`depthlab.theory.gaussian.normal_rule`); a weight mean that is more than
          sampling noise and not small against the spread is refused (:func:`_weight_mean`)
backward  ``Var(g_l) = m_{l+1} v_{l+1} E[f_l'(s)^2] Var(g_{l+1})``, ``g_l = dL/ds_l``, with
          ``m_{l+1}`` the number of outputs each input entry feeds (``out_features``;
          ``out_channels / groups * prod(kernel) / prod(stride)``); with zero padding both are
          averaged over positions (a border position reads fewer taps: :func:`_fans`).
border    zero padding also lowers a conv output's variance at the border, which the next
          conv's border outputs read with fewer taps: along a chain of zero-padded convs
          without BatchNorm or pooling between them, the relative map ``u(p)`` of ``E[a^2]``
          per position is carried (``q(p) = n v (A u)(p) E[a^2] + Var(b)``, ``A`` the conv's
          tap count map, :func:`_tap_matrices`; ``E f(s)^2`` and ``E f'(s)^2`` at ``q(p)``,
          on 1% levels, for an activation that is not homogeneous) and the fan-in multiplied
          by ``mean(A u) / mean(A 1)``; backward likewise the map of ``Var(g)`` with ``A^T``
          times ``E f'^2`` per position (averaged fans alone compound: 6 He/ReLU convs of 64
          channels on 8x8 inputs had pre_std of the 6th 0.88x and grad_pre_std of the 1st
          0.90x the measurement, now within 5% as with circular padding; GELU, 4 convs of 128
          on 12x12 with groups 4: 0.89x / 0.86x, now 0.97x / 0.92x).
unit      a unit's value is ``s = shift + b_j + W_j E_batch[a] + N(0, qb)``: its own bias (the
          layer's actual biases as quantile groups; PyTorch's default uniform bias is not
          Gaussian, and where it dominates a cubic-like Tanhshrink's ``E f(s)^2`` is 4x that of
          a Gaussian of the same variance: act_std was predicted 1.95x) and the weights acting
          on the inputs' batch means (images in [0, 1]) are constant over the batch, so the
          unit's batch variance ``qb`` (which a later BatchNorm divides by) is the variance
          about that offset, averaged over units (:func:`_unit_nodes`; with the offset counted
          in it a BN gradient after inputs of mean 1 was 0.72x the measurement, now 0.91-0.98x)
groups    the examples are propagated as :data:`GROUPS` quantile groups of their mean square
          ``|x_i|^2 / d`` (:func:`_input_groups`), since ``E_i f(sqrt(q_i) z)^2 !=
          E f(sqrt(E q_i) z)^2`` for a saturating activation (inputs with log-normal lengths,
          sigma 0.5: tanh act_std 1.10x -> 1.00x, gelu 0.95x -> 1.00x; Tanhshrink 0.01-0.91x ->
          0.79-0.99x), each through the same chain (a BatchNorm divides every group by the
          whole batch's variance, from a first run over the whole batch), and the rows
          combined (:func:`_combine`); ReLU/linear layers without offsets are unchanged.
          Not modelled: the finite-width spread that each layer adds to an example's
          length (relative ``~sqrt(Var f^2 / n) / E f^2`` per layer), which compounds where
          the length map is strongly convex (Tanhshrink near 0 with He init: act_std of
          layer 5 predicted 0.1x at width 128; GELU with He init, whose ``q_{l+1} / q_l``
          rises from 0.58 at ``q = 0.1`` to 0.99 at 16: grad_pre_std of layer 1 of 10 at width
          128 predicted 0.71x the mean over 30 seeds). Where the map is linear (ReLU, He
          init) the prediction is the mean over random draws, and one network's variances
          walk away from it by ``~exp(+-sqrt(L Var f^2 / (n (E f^2)^2)))`` once deep layers
          make the examples alike (ReLU: ``Var f^2 / (E f^2)^2 = 5``; depth 20, width 256:
          layer 20's pre_std measured 0.57-1.11x the prediction over 6 seeds, a typical net
          below it, while 40 seeds' mean variances at width 64, depth 10 agree within 10% on
          every hidden layer).
finite n  ``pre_std`` and ``act_std`` are measured about the layer's own average over its
          ``n`` units (``out_features``, ``out_channels``), which misses ``1/n`` of the spread
          of the units' random means ``W_j E_batch[a]`` (:func:`_finite_units`); the
          prediction is that expected measurement (a one-unit output after ReLU was 1.21x).

BatchNorm (``Linear/Conv -> BatchNorm1d/2d/3d -> [activation]``, training mode: batch
statistics; the module's own per-channel ``gamma_c``, ``beta_c``; Yang et al. 2019 and
:mod:`depthlab.theory.batchnorm`): BN divides a unit by its batch variance ``qb``, which
excludes the unit's constant mean, so ``qb = n v Var_batch(a_{l-1})`` (+ for zero-padded convs
the spread of the mean over positions, :func:`_fans`); its output is ``N(beta_c, gamma_c^2
qb / (qb + eps))`` per channel (large width and batch), the activation's moments are channel
averages, and ``Var(dL/dh) = mean_c gamma_c^2 E[f'(s_c)^2] mean_c 1 / (qb_c + eps) Var(dL/da)``
(``qb_c = n v_c Var_batch(a)`` from channel ``c``'s own mean squared weight ``v_c``; the two
directions BN's backward removes per channel are negligible for large batches). A plain BN
chain thus grows the squared gradient by ``bn_gradient_factor(f, gamma, beta).growth_sq`` per
equal-width layer (ReLU: ``pi / (pi - 1)``); where that function reports ``covered = False``
(identity, gelu, swish: the batch does not stay Gaussian) the prediction is not reliable.
Measured (10 BN layers of 128, batch 128, CE loss, 3 seeds): ReLU within 2%; LeakyReLU(0.3),
SELU and tanh with ``gamma = 0.5, beta = 0.3`` 0.89-0.92x at the first layer, the shortfall
built up in the 3-4 layers below the output and constant further down (not explained here:
these activations whiten the batch slowly, ``whitening_depth`` 10, 34 and ~14 layers, but the
shortfall sits near the output, not the input; batch 512 gives 0.93-0.95x, width 512 no
better; the NumPy nets of ``dl.mlp(..., batchnorm=True)`` show the same, 0.92x).

Residual blocks ``y = post(x + F(x))`` or ``post(P(x) + F(x))`` (``F`` a chain as above, BN
included; ``P`` the identity or a projection shortcut, e.g. torchvision's 1x1 conv + BN
``downsample``; ``post`` an optional activation). The two paths have independent weights, so
at initialization a unit's two summands are independent: the distribution of the unit's value
(nodes and weights: :func:`_gauss_dist`, kept to :data:`depthlab.torch.pooling.NODES`
quantile groups by :func:`depthlab.torch.pooling.compress`) is carried along the skip and
convolved with the branch's Gaussian output
(a ReLU output's skewed, non-negative shape is kept; batch variances add). Backward,
``Var(dL/dx) = Var(dL/dx through P) + Var(dL/dx through F)``, and through an identity skip
the gradient keeps the dependence on the unit's own value (a unit active in one block is
likely active in the next, so its ``post'`` masks are correlated): ``V_b(x) =
E_F[post'(x + F)^2 V_{b+1}(post(x + F))] + Var(dL/dx through F)``, interpolated on the
nodes, and the layer that feeds the first skip takes ``E[f'(s)^2 V(f(s))]``. The branch and
a projection receive the average ``Var(g) = E_x E_F[post'^2 V_{b+1}]`` (their weights mix
units). Measured on torchvision ``BasicBlock`` stacks and ReLU residual MLPs: gradient std
within 7% of the prediction (13% at a 27-fan-in stem), where a Gaussian sum with independent
masks was up to 1.4x off.

The gradient scale is anchored at the last layer: with ``y`` and ``loss_fn`` the model is
measured with :func:`depthlab.torch.probe` on ``(x, y)`` and ``predicted grad_pre_std[L]`` =
measured ``grad_pre_std[L]``, the layers below from ``E[g_L^2] = std^2 + mean^2`` (``W^T g``
carries the mean of ``g = dL/ds_L`` down as well: MSE towards targets of mean 5 had every
lower layer predicted 0.045x with the std alone); without them the ``value`` column is NaN
(nothing measured) and ``grad_pre_std`` is predicted relative to the last layer (= 1 there).

Result: the tidy table ``step, layer, module, quantity, value, predicted`` for the quantities
``pre_std``, ``act_std`` (layers with an activation) and ``grad_pre_std``.
Pooling and dropout between segments (:mod:`depthlab.torch.pooling`), as modules or as the
functions a forward calls itself (``F.max_pool1d/2d/3d`` with or without ``return_indices``,
``torch.max_pool2d``, ``F.avg_pool*``, ``F.adaptive_avg_pool*``, ``F.adaptive_max_pool*``:
found by a ``TorchFunctionMode`` during the forward, each modelled as the module of the same
arguments, :func:`depthlab.torch.pooling.function_module`, so ``F.max_pool2d(F.relu(conv1(x)),
2)`` gets exactly the prediction of ``nn.ReLU()`` then ``nn.MaxPool2d(2)``; the activation is
the layer's when it comes before the pool; ``F.dropout(h, p, training)`` is ``nn.Dropout(p)``;
``h.mean((2, 3))`` / ``h.amax((2, 3))`` over the trailing 1-3 dimensions, global pooling as in
torchvision's ShuffleNetV2, is ``AdaptiveAvgPool2d(1)`` / ``AdaptiveMaxPool2d(1)``; amax shares
a tie's gradient, max pooling gives it to one entry: the same where values are distinct).
A non-decreasing activation *after* a max pool of a layer's (or BatchNorm's) output,
``F.relu(F.max_pool2d(conv1(x), 2))`` or ``nn.MaxPool2d`` then ``nn.ReLU``, is the pool of
the activation (``f(max_i s_i) = max_i f(s_i)``, and the gradient reaches the same entry with
the same ``f'``): predicted as such, without ``act_std`` rows (no tensor holds ``f(s)``).
Average pooling
(``AvgPool*``, ``AdaptiveAvgPool*``; global average pooling before a CNN's head: each of the
``P`` inputs receives ``1/P`` of the gradient, ``Var(dL/dx) = Var(g) / P^2`` per input, exact),
max pooling (``MaxPool*``, ``AdaptiveMaxPool*``: the maximum of a window's entries forward,
the whole gradient to the largest entry backward, so the layer before sees it where its
activation's derivative is that of a large value) and dropout in training mode
(``E[a^2] / (1 - p)``). A window's entries are taken as independent draws: exact where they
are (measured within 6%, tests/test_torch_pooling.py); neighbouring positions of a CNN are
correlated, so near a pool the prediction is less exact (a ReLU CNN with two 2x2 max pools:
the layer after them pre_std 1.26x the measurement, the convs' grad_pre_std 1.16x; with 2x2
average pools 0.77x and 0.94x; ResNet-18 at 64x64 pre_std 0.93-1.11x, grad_pre_std 0.78-1.0x,
at 32x32, where layer4 runs on 1x1 positions, grad_pre_std 0.66-1.0x). The cause: an average
of ``k`` entries with mean pairwise correlation ``rho`` has variance ``Var(a) (1 + (k - 1)
rho) / k``, not ``Var(a) / k`` (0.77x in std for 2x2 is ``rho ~ 0.23``; backward the same
factor), and the maximum of correlated entries is smaller than that of independent ones
(1.26x). Neighbouring outputs of a 3x3 conv share 6 of their 9 taps, so ``rho`` is set by
the kernels and by the input's own spatial correlation; a principled estimate would carry
the covariance between positions ``delta`` apart through the chain (random-weight CNN mean
field, Xiao et al. 2018: each conv averages it over the kernel's offsets, each activation
maps it by its dual kernel), which predict() does not do.

Anything else between layers (other pooling: ``LPPool*``, ``F.lp_pool2d``, fractional max
pooling; an activation after average pooling or a non-monotone one after max pooling,
``F.gelu(F.max_pool2d(conv(x), 2))``; ``F.alpha_dropout``; an
arithmetic operation such as ``h * 2``; a normalization other than BatchNorm or BatchNorm in
eval mode, alpha dropout in training mode, nested blocks, a block with more than two paths, a
layer called twice, a ``Linear``/``Conv`` subclass with its own ``forward`` such as a
weight-standardized conv) breaks the chain: a ValueError names the layer and, where it can, the
module in between (e.g. ``'2' (LPPool2d)``), the function (``the function F.lp_pool2d``) or the
torch operation under any views (``'Mul' (autograd node MulBackward0)``).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..theory.batchnorm import bn_moments
from ..theory.gaussian import ScalarActivation, normal_rule, shifted_normal_rule
from ..validators import keyword_hints
from . import pooling
from .accumulators import _first_tensor
from .functional_acts import ACT_NODES, _below_views, _settings, chain_acts, inplace_act_of
from .functional_acts import _tensors as output_tensors
from .hooks import Recording
from .layers import (
    ACTIVATIONS,
    ActivationSpec,
    LayerInfo,
    activation_spec,
    check_initialized,
    check_materialized,
    check_model,
    is_norm,
    none_ran,
    replaced_forward,
    untouched,
)
from .probe import (
    check_batch,
    check_loss,
    check_targets,
    forward,
    probe,
    resolve_loss,
    trackable,
)

__all__ = ["chain", "predict", "theory_rows"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def chain(model: nn.Module, x: Any, y: Any = None,
          loss_fn: Callable[[Any, Any], torch.Tensor] | None = None) -> list[dict]:
    """The model as a chain of segments found in one forward of ``model(x)`` (model, buffers,
    mode, ``.grad`` and RNG left as found): ``{"kind": "layer", "index", "name", "module",
    "activation": ActivationSpec | None}`` or ``{"kind": "block", "name", "layers": [layer
    segments], "post": ActivationSpec | None}`` for a residual block ``y = post(x + F(x))``
    whose branch ``F`` is itself a chain and whose shortcut is the identity. Raises
    ValueError when the model is not such a chain: the first layer must read the input ``x``
    itself (or a view of it), each layer the previous segment's output not changed in place
    since, and a block's add must take the branch's and the shortcut's outputs as they are
    (``x + 0.1 * F(x)`` or a functional ``relu`` after the add is refused); the loss
    (``loss_fn(model(x), y)``; without them the model's first output tensor) must depend on
    the layers only through the last segment (a skip or an auxiliary output after the last
    layer would add gradient paths that the chain does not have); a forward hook of the
    user's that replaces or changes the output of a layer, activation or normalization
    module is refused by name (the theory computes that output from the weights)."""
    check_model(model)
    if isinstance(x, torch.Tensor) and x.is_floating_point() and not x.requires_grad:
        # an equal input with an autograd node: a residual block that reads x itself (the
        # model's first module) is then found in the graph (it was refused as 'not the
        # previous layer's output')
        with torch.inference_mode(False), torch.enable_grad():
            x = (x.clone() if x.is_inference() else x.detach()).requires_grad_().clone()
    rec = Recording(model, ())
    inputs: dict[int, list[int]] = {}
    outputs: dict[int, tuple[int, int]] = {}  # layer -> (output storage, call sequence number)
    acts: list[tuple[int, int, ActivationSpec, int]] = []  # (input, output, spec, seq) per call
    norms: list[tuple[int, int, nn.Module, int]] = []  # (input, output, module, seq) per call
    shapes: dict[int, tuple[int, ...]] = {}  # layer -> input shape
    others: dict[int, str] = {}  # output storage -> "'name' (Class)" of other leaf modules
    foreign: set[str] = set()  # labels of torch activation modules the theory has no f for
    # pooling and training-mode dropout: (input storage, output storage, Between, seq)
    betweens: list[tuple[int, int, pooling.Between, int]] = []
    names = {id(m): n for n, m in model.named_modules()}
    named = dict(model.named_modules())
    seq = iter(range(1 << 62))
    containers: dict[int, list[tuple[int, int]]] = {}
    box_fns: dict[int, tuple[Any, Any]] = {}  # block -> (input's grad_fn, output's grad_fn)
    fns: dict[int, Any] = {}  # call sequence number -> grad_fn of that call's output
    labels: dict[int, str] = {}  # call sequence number -> "'name' (Class)"
    producers: dict[int, tuple[int, str]] = {}  # output storage -> (input storage, "'n' (C)")
    copies: dict[int, int] = {}  # output -> input storage of a shape-only module that copied
    versions: dict[int, int] = {}  # storage -> version counter after its last seen writer
    changed: dict[int, str] = {}  # layer -> the producer whose output changed in place since
    in_ops: dict[int, Any] = {}  # layer -> autograd node that made its input (not a module)
    seg_outs: list[tuple[str, torch.Tensor]] = []  # "'name' (Class)", output of each
    # activation and norm call (a gradient hook the user's forward put on one is refused)
    custom: dict[int, str] = {}  # layer or activation -> a custom autograd.Function between
    # it and the module before (its backward may scale the gradient: GradReverse)
    sizes: dict[int, int] = {}  # storage -> entries of the tensor first written there (x, a
    # module's output): a layer reading a view with fewer (a slice, one time step) reads a part
    in_sizes: dict[int, int] = {}  # layer or container -> entries of its (last) input
    handles = []
    own: dict[int, tuple[torch.Tensor, int]] = {}  # module -> (its forward's output, version)
    out_tensors: dict[int, tuple[torch.Tensor, int]] = {}  # layer -> (output s, version)
    ops: dict[int, str] = {}  # storage a module read -> autograd node of the torch operation
    # that made it (not a module): 'MulBackward0' for act(l1(x) * 3)
    # activations the forward applies itself (F.relu(self.fc1(x))): the (grad_fn, slot) of
    # each layer or norm call's output -> (storage, seq, module), and the grad_fn and storage
    # of each layer input (functional_acts.chain_acts reads the graph between them)
    made: dict[tuple, tuple[int, int, nn.Module]] = {}
    reads: list[tuple[Any, int]] = []

    def label(module) -> str:
        return f"{names.get(id(module), '')!r} ({type(module).__name__})"

    def own_post(module, args, out):
        """Registered to run before every other forward hook (``prepend``): the output the
        module's own forward returned, and its version counter."""
        t = _first_tensor(out)
        if t is not None:
            own[id(module)] = (t, t._version)

    def unhooked(module, out) -> None:
        """A ValueError when a forward hook of the user's replaced ``module``'s output or
        changed it in place: the theory computes the output from the weights and the input (a
        hook returning ``3 * out`` on a layer: every row was measured 3.0x the prediction)."""
        got, t = own.pop(id(module), None), _first_tensor(out)
        if got is not None and t is not None and (got[0] is not t or got[1] != t._version):
            raise ValueError(f"predict() computes each module's output from its weights and "
                             f"input; a forward hook on {label(module)} replaced or changed "
                             "that output, which the theory does not see; expected forward "
                             "hooks that only read (return None), or the model without that "
                             "hook")

    def wrote(module, t_in, t, at: int) -> None:
        """Bookkeeping for a module call that produced ``t`` from ``t_in``."""
        fns[at] = t.grad_fn
        labels[at] = label(module)
        versions[_storage(t)] = t._version
        sizes.setdefault(_storage(t), t.numel())
        if t_in is not None and t_in.grad_fn is not None:
            ops.setdefault(_storage(t_in), t_in.grad_fn.name())
        if t_in is not None and _storage(t_in) != _storage(t):  # not in place
            producers.setdefault(_storage(t), (_storage(t_in), label(module)))
            if _shape_only(module):  # e.g. Flatten of a non-contiguous tensor
                copies.setdefault(_storage(t), _storage(t_in))

    def pre(module, args):
        t = _first_tensor(args)
        inputs.setdefault(id(module), []).append(-1 if t is None else _storage(t))
        if t is not None and t.grad_fn is not None:
            reads.append((t.grad_fn, _storage(t)))
            if _storage(t) in versions and versions[_storage(t)] + 1 == t._version and \
                    inplace_act_of(t, made):  # F.relu(h, inplace=True) on the layer output
                versions[_storage(t)] = t._version
        if t is not None:
            shapes[id(module)] = tuple(t.shape)
            in_sizes[id(module)] = t.numel()
            if t.grad_fn is not None:
                in_ops.setdefault(id(module), t.grad_fn)
                fn = _custom_function(t.grad_fn, set(fns.values()))
                if fn is not None:
                    custom.setdefault(id(module), fn)
            if versions.get(_storage(t), t._version) != t._version:
                changed.setdefault(id(module), producers.get(_storage(t), (0, "x"))[1])

    def post(module, args, out):
        unhooked(module, out)
        at = next(seq)
        outputs[id(module)] = (_storage(_first_tensor(out)), at)
        t_out = _first_tensor(out)
        if t_out is not None:
            out_tensors[id(module)] = (t_out, t_out._version)
            if t_out.grad_fn is not None:
                made[(t_out.grad_fn, t_out.output_nr)] = (_storage(t_out), at, module)
        wrote(module, _first_tensor(args), _first_tensor(out), at)

    def act_pre(module, args):
        t = _first_tensor(args)
        if t is not None:
            module._dl_in = _storage(t)
            fn = _custom_function(t.grad_fn, set(fns.values()))
            if fn is not None:
                custom.setdefault(id(module), fn)

    def act_post(module, args, out):
        unhooked(module, out)
        t = _first_tensor(out)
        if t is not None:
            acts.append((module._dl_in, _storage(t), activation_spec(module), next(seq)))
            seg_outs.append((label(module), t))
            wrote(module, _first_tensor(args), t, acts[-1][3])
            del module._dl_in

    def norm_pre(module, args):
        t = _first_tensor(args)
        if t is not None:
            module._dl_in = _storage(t)

    def norm_post(module, args, out):
        unhooked(module, out)
        t = _first_tensor(out)
        if t is not None and hasattr(module, "_dl_in"):
            norms.append((module._dl_in, _storage(t), module, next(seq)))
            if t.grad_fn is not None:
                made[(t.grad_fn, t.output_nr)] = (_storage(t), norms[-1][3], module)
            seg_outs.append((label(module), t))
            wrote(module, _first_tensor(args), t, norms[-1][3])
            del module._dl_in

    def box_pre(module, args):
        t = _first_tensor(args)
        containers.setdefault(id(module), []).append((-1 if t is None else _storage(t), -1))
        if t is not None:
            in_sizes[id(module)] = t.numel()
        box_fns[id(module)] = (None if t is None else t.grad_fn, None)

    def box_post(module, args, out):
        t = _first_tensor(out)
        calls = containers[id(module)]
        calls[-1] = (calls[-1][0], -1 if t is None else _storage(t))
        box_fns[id(module)] = (box_fns[id(module)][0], None if t is None else t.grad_fn)
        if t is not None:
            versions[_storage(t)] = t._version
            sizes.setdefault(_storage(t), t.numel())

    def other_post(module, args, out):
        t = _first_tensor(out)
        t_in = _first_tensor(args)
        b = None if t is None or t_in is None else pooling.between(module, t_in, t,
                                                                     label(module))
        if t is not None:
            # the first producer: a view (flatten) shares the storage of what it reshapes
            others.setdefault(_storage(t), label(module))
            if (type(module).__module__ == nn.Threshold.__module__  # torch.nn activations
                    and next(module.parameters(), None) is None):  # not MultiheadAttention
                foreign.add(label(module))
            at = next(seq)
            if b is not None:
                betweens.append((_storage(t_in), _storage(t), b, at))
                if t.grad_fn is not None:
                    pool_nodes[(t.grad_fn, t.output_nr)] = betweens[-1]
            wrote(module, t_in, t, at)

    # pooling and reshapes the forward applies as functions (F.max_pool2d, torch.flatten,
    # x.view): found by _Functions, a TorchFunctionMode, with the call's own arguments and tensors
    fbetweens: list[tuple[int, int, pooling.Between, int]] = []
    fn_pools: dict[int, str] = {}  # output storage -> a pooling function predict() cannot model
    # (grad_fn, slot) of each pooling call's output -> its betweens entry; the layer segments
    # whose activation comes after a max pool (moved before it: max and f commute)
    pool_nodes: dict[tuple[Any, int], tuple[int, int, pooling.Between, int]] = {}
    moved: set[int] = set()
    # output storage -> (input storage, "the function F.max_pool2d"): producers after the
    # forward, where no module made that output (a module's own inner call is named by it)
    fproducers: dict[int, tuple[int, str]] = {}

    def on_function(name: str, args: tuple, kwargs: dict, out: Any) -> None:
        """Bookkeeping for a torch function call ``name(*args, **kwargs) -> out``: a pooling
        function as its module (:func:`depthlab.torch.pooling.function_module`: the same
        :class:`~depthlab.torch.pooling.Between`), a reshape that copied as a copy of the
        values (as a Flatten module that copied)."""
        t_in = kwargs.get("input", args[0] if args else None)
        t = _first_tensor(out)
        if not isinstance(t_in, torch.Tensor) or t is None or not t_in.is_floating_point() \
                or not t.requires_grad:  # (the hooks' own statistics: no graph, and freed
            return  # storages whose addresses a later tensor may reuse)
        base = name.lstrip("_").removesuffix("_with_indices")
        if base in _RESHAPES:
            if t.numel() == t_in.numel() and _storage(t) != _storage(t_in):
                copies.setdefault(_storage(t), _storage(t_in))
                fproducers.setdefault(_storage(t), (_storage(t_in), f"the function {base}"))
                sizes.setdefault(_storage(t), t.numel())
            return
        rest = args[1:] if "input" not in kwargs else args
        if base in ("mean", "amax"):  # h.mean((2, 3)): global pooling over the trailing dims
            module = pooling.global_module(base, t_in.dim(), rest,
                                           {k: v for k, v in kwargs.items() if k != "input"})
            if module is None:
                return
            d = pooling.pool_dims(module)
            who = f"the function {base}"  # (the pooled shape: keepdim or not)
            b = pooling.between(module, t_in, t.reshape(*t_in.shape[:-d], *[1] * d), who)
        elif "pool" not in base and "dropout" not in base:
            return
        else:
            module = pooling.function_module(name, rest, {k: v for k, v in kwargs.items()
                                                          if k != "input"})
            who = f"the function F.{base}"
            b = None if module is None else pooling.between(module, t_in, t, who)
        if b is None and _shape_only(module) and t.numel() == t_in.numel():
            # F.dropout(h, training=False) or p = 0: the values themselves
            if _storage(t) != _storage(t_in):
                copies.setdefault(_storage(t), _storage(t_in))
            return
        if b is None:
            fn_pools.setdefault(_storage(t), who)
            return
        fbetweens.append((_storage(t_in), _storage(t), b, next(seq)))
        if t.grad_fn is not None:
            pool_nodes[(t.grad_fn, t.output_nr)] = fbetweens[-1]
        if t_in.grad_fn is not None:
            ops.setdefault(_storage(t_in), t_in.grad_fn.name())
        sizes.setdefault(_storage(t), t.numel())
        fproducers.setdefault(_storage(t), (_storage(t_in), who))
        if t_in.grad_fn is not None:  # a functional activation before it (chain_acts)
            reads.append((t_in.grad_fn, _storage(t_in)))

    def between(storage: int, start: int | None = None) -> str:
        """The modules that produced ``storage`` from ``start`` (walked back), named."""
        path: list[str] = []
        while storage in producers and storage != start and len(path) < 8:
            storage, who = producers[storage]
            path.append(who)
        who = path[0] if path else others.get(storage)
        bad = sorted({p for p in [*path, who] if p in foreign})
        # Threshold, RReLU, Softshrink, ...: not 'another operation' but an activation
        note = (f"; {', '.join(bad)} {'is an activation' if len(bad) == 1 else 'are activations'}"
                " predict() has no theory for (modelled: "
                f"{', '.join(sorted({c.__name__ for c in ACTIVATIONS}))})" if bad else "")
        op = ""
        if path and storage != start and storage in fn_pools:  # F.alpha_dropout, F.lp_pool2d
            op = (f", and {path[-1]} reads the output of {fn_pools[storage]}, which predict() "
                  f"has no theory for (modelled: {_MODELLED_POOLS})")
        elif path and storage != start and storage not in producers and storage in ops \
                and not (isinstance(x, torch.Tensor) and storage == _storage(x)):
            node = ops[storage]  # the first module on the path reads a torch operation's result
            op = (f", and {path[-1]} reads the result of the torch operation "
                  f"{re.sub(r'Backward[0-9]*$', '', node)!r} (autograd node {node}), not the "
                  "previous layer's output")
        if len(path) > 1:
            return "; it is made by " + " -> ".join(reversed(path)) + op + note
        return f"; it is the output of {who}{op}{note}" if who else ""

    def reg_pre(m, hook):
        """``hook(module, args)`` as a pre-hook that also sees keyword arguments, after the
        positional ones (``act(input=h)``: the activation's input; it was read from the
        positional arguments only, and predict failed with an AttributeError)."""
        def kw(module, args, kwargs):
            hook(module, args + tuple(kwargs.values()) if kwargs else args)
        handles.append(m.register_forward_pre_hook(kw, with_kwargs=True))

    def reg_post(m, hook):
        """``hook(module, args, out)`` as a forward hook seeing keyword arguments (reg_pre)."""
        def kw(module, args, kwargs, out):
            hook(module, args + tuple(kwargs.values()) if kwargs else args, out)
        handles.append(m.register_forward_hook(kw, with_kwargs=True))

    layers = list(rec.layers)
    layer_ids = {id(info.owner) for info in layers}
    for info in layers:
        kind = unsupported_layer([info])
        if kind:
            raise ValueError(kind)
        _check_stock_forward(info)
    _check_backward_hooks(model, names)
    returns = _HookReturns(model, names)
    try:
        # gradients on: residual blocks are found in the autograd graph
        with rec.isolated(), returns, _GlobalForwardHooks(model, names):
            rec.arm()
            for info in layers:
                reg_pre(info.owner, pre)
                handles.append(info.owner.register_forward_hook(own_post, prepend=True))
                reg_post(info.owner, post)
            for m in model.modules():
                spec = activation_spec(m)
                if spec is not None and not spec.scalar:
                    raise ValueError(f"predict() needs one activation function per layer; "
                                     f"{label(m)} has a learned slope "
                                     f"per channel ({m.weight.numel()} of them)")
                if spec is not None and spec.name in ("softshrink", "hardshrink"):
                    # a flat zone around 0: sparse outputs, whose sums in the next layer are
                    # not Gaussian (Softshrink(0.5) at torch's default init: 0.78x measured)
                    modelled = ", ".join(sorted(
                        c.__name__ for c in ACTIVATIONS if "shrink" not in c.__name__.lower()
                        or c.__name__ == "Tanhshrink"))
                    raise ValueError(f"predict() does not model {label(m)}: its flat zone "
                                     "makes sparse outputs whose sums in the next layer are "
                                     "not Gaussian, so it is an activation predict() has no "
                                     f"theory for (dlt.probe measures it; modelled: {modelled})")
                if type(m) in ACTIVATIONS or is_norm(m):  # (a replaced forward: no spec)
                    _check_instance_forward(m, repr(names.get(id(m), "")),
                                            "norm" if is_norm(m) else "activation")
                if spec is not None or is_norm(m):
                    handles.append(m.register_forward_hook(own_post, prepend=True))
                if spec is not None:
                    reg_pre(m, act_pre)
                    reg_post(m, act_post)
                elif is_norm(m):
                    reg_pre(m, norm_pre)
                    reg_post(m, norm_post)
                elif next(iter(m.children()), None) is None and id(m) not in layer_ids:
                    reg_post(m, other_post)
                elif next(iter(m.children()), None) is not None:
                    reg_pre(m, box_pre)
                    reg_post(m, box_post)
            if isinstance(x, torch.Tensor):
                versions[_storage(x)] = x._version
                sizes[_storage(x)] = x.numel()
            with _Functions(on_function):
                output = forward(model, x)
    finally:
        for h in handles:
            h.remove()
    # a pooling module's own call of its function is the module's (named by it)
    pairs = {(b[0], b[1]) for b in betweens}
    betweens.extend(f for f in fbetweens if (f[0], f[1]) not in pairs)
    for k, v in fproducers.items():
        producers.setdefault(k, v)
    order = rec.ran_layers()
    if not order:
        raise ValueError(none_ran(model, rec.layers))
    outs: list[torch.Tensor] = []
    output_tensors(output, outs)
    by_storage = {outputs[id(i.owner)][0]: i for i in order if id(i.owner) in outputs}
    module_acts = {(a[0], a[1]) for a in acts}  # an activation module's own call, named by it
    for (s_store, s_at, producer), a_store, act, node in chain_acts(
            reads + [(o.grad_fn, _storage(o)) for o in outs if o.grad_fn is not None], made):
        spec = activation_spec(act)
        if spec is None or not spec.scalar or spec.name in ("softshrink", "hardshrink") \
                or (s_store, a_store) in module_acts:
            continue
        at = s_at + 0.5  # between the call that made s and the next one
        acts.append((s_store, a_store, spec, at))
        fns[at] = node
        labels[at] = f"the function {re.sub(r'Backward[0-9]*$', '', node.name()).lower()}"
        layer = by_storage.get(s_store) if not is_norm(producer) else next(
            (by_storage.get(n[0]) for n in norms if n[2] is producer), None)
        if layer is not None and layer.activation is None:
            layer.activation = labels[at]
    _act_after_max_pool(betweens, acts, fns, labels, made, by_storage, norms, pool_nodes,
                        reads + [(o.grad_fn, _storage(o)) for o in outs
                                 if o.grad_fn is not None], moved)
    after = {a[0]: a for a in acts}  # activation by input storage
    norm_after = {a[0]: a for a in norms}

    def walk(cur: int, start: int | None, lo: int, hi: int
             ) -> tuple[list[pooling.Between], int]:
        """The pooling/dropout calls (in forward order) that made storage ``cur`` from
        ``start`` between call numbers ``lo`` and ``hi`` (an in-place dropout keeps its
        storage), and the storage reached (``start`` when they connect)."""
        found: list[pooling.Between] = []
        hops = 0
        while hops < 64:
            while cur != start and cur in copies and hops < 64:  # copies of the values
                cur, hops = copies[cur], hops + 1
            hits = [b for b in betweens if b[1] == cur and lo < b[3] < hi]
            if not hits:
                break
            b_in, _, b, hi = max(hits, key=lambda h: h[3])
            found.append(b)
            cur, hops = b_in, hops + 1
        return found[::-1], cur

    def link(info: LayerInfo, start: int | None, lo: int = -1) -> tuple[dict, int, int]:
        """The layer's segment, the storage of its (last) output and that call's seq
        (``lo``: the call that made ``start``)."""
        calls = inputs.get(id(info.owner), [])
        if len(calls) != 1:
            raise ValueError(f"predict() needs each layer called once; {info.name!r} ran "
                             f"{len(calls)} times")
        mids, reached = walk(calls[0], start, lo, outputs[id(info.owner)][1])
        if start is not None and mids and reached == start:
            # pooling or dropout in between: the first reads the whole of start
            _whole(mids[0].label, mids[0].read, sizes.get(start), start == x_store)
        elif start is not None and not mids:
            calls = [reached]  # through copies of the values (a Flatten that copied)
        if start is not None and calls[0] == start and not mids:
            _whole(repr(info.name), in_sizes.get(id(info.owner)), sizes.get(start),
                   start == x_store)
        elif start is not None and calls[0] != start and not (mids and reached == start):
            what = "the model's input x" if start == x_store else "the previous layer's output"
            made = between(calls[0], start)
            made_start = [a for a in acts if a[1] == start]  # start: an activation's output
            second = [a for a in acts if a[0] == start and a[1] == calls[0]]
            if made_start and made_start[-1][0] == calls[0]:  # h = l1(x); a(h); l2(h)
                made = (f"; it reads the previous layer's output itself, not the output of "
                        f"its activation {labels[made_start[-1][3]]}")
            elif made_start and second:  # l2(b(a(l1(x)))): two activation modules in a row
                made = (f"; it is the output of {labels[second[-1][3]]}, a second activation "
                        f"module after {labels[made_start[-1][3]]} (predict() takes one "
                        "activation module per layer)")
            elif second and any(_storage(t) == start and t._version != v
                                for t, v in out_tensors.values()):  # h = l1(x); h.mul_(3)
                made = (f"; it is the output of {labels[second[-1][3]]}, which read the previous "
                        "layer's output after it was changed in place (predict() computes the "
                        "activation of the output as the layer made it)")
            elif not made and calls[0] == x_store:  # (x's copy that chain() made: 'Clone')
                made = ("; it reads the model's input x itself (a second path from the input, "
                        "e.g. l1(x) + l2(x))")
            elif not made and calls[0] in fn_pools:  # F.lp_pool2d, F.fractional_max_pool2d
                made = (f"; it is the output of {fn_pools[calls[0]]}, which predict() has no "
                        f"theory for (modelled: {_MODELLED_POOLS})")
            elif not made and id(info.owner) in in_ops:  # a torch function, not a module
                made = _operation(in_ops[id(info.owner)])
            raise ValueError(f"predict() needs a chain of layers and elementwise activations; "
                             f"the input of {info.name!r} is not {what} (pooling or another "
                             f"operation in between){made}")
        act = [named[info.activation]] if info.activation in named else []
        odd = [(label(m), custom[id(m)]) for m in (info.owner, *act) if id(m) in custom]
        if odd:
            raise ValueError(f"predict() needs a chain of layers and elementwise activations; "
                             f"the input of {odd[0][0]} passes through the custom autograd "
                             f"Function {odd[0][1]!r}, whose backward the theory does not "
                             "know (it may scale or reverse the gradient)")
        if id(info.owner) in changed:
            raise ValueError(f"predict() needs a chain of layers and elementwise activations; "
                             f"the input of {info.name!r} was changed in place after "
                             f"{changed[id(info.owner)]} made it")
        end, at = outputs[id(info.owner)]
        norm = None
        if info.norm is not None:
            if end not in norm_after:
                raise ValueError(f"the output of {info.name!r} reaches {info.norm!r} through "
                                 "another operation")
            _, end, norm, at = norm_after[end]
            _check_norm(norm, info.norm)
        spec = None
        if info.activation is not None and end in after:
            _, end, spec, at = after[end]
        return {"kind": "layer", "index": info.index, "name": info.name, "module": info.owner,
                "in_shape": shapes.get(id(info.owner)), "norm": norm, "activation": spec,
                "between": mids, "pooled_act": end in moved}, end, at

    members = {key: {id(m) for m in b.module.modules()} for key, b in rec.blocks.items()}
    out: list[dict] = []
    x_store = _storage(x) if isinstance(x, torch.Tensor) else None
    prev_end: int | None = x_store  # the first layer reads x itself (or a view of it)
    prev_at = -1  # the call that made prev_end
    i = 0
    while i < len(order):
        info = order[i]
        keys = [k for k, ids in members.items() if id(info.owner) in ids]
        if not keys:
            seg, prev_end, at = link(info, prev_end, prev_at)
            prev_at = at
            out.append(seg)
            last = (fns.get(at), outputs[id(info.owner)][1], info.name)
            i += 1
            continue
        key = min(keys, key=lambda k: len(members[k]))  # the innermost block
        block = rec.blocks[key]
        if len(keys) > 1 or len(containers.get(key, [])) != 1:
            raise ValueError(f"predict() models residual blocks that are called once and not "
                             f"nested; {block.name!r} is not")
        b_in, b_out = containers[key][0]
        first_call = min(outputs[id(o.owner)][1] for o in order[i:]
                         if id(o.owner) in members[key])
        mids, reached = walk(b_in, prev_end, prev_at, first_call)
        if prev_end is not None and mids and reached == prev_end:
            _whole(mids[0].label, mids[0].read, sizes.get(prev_end), prev_end == x_store)
        elif (prev_end is not None and b_in != prev_end and out and out[-1]["kind"] == "layer"
              and outputs[id(out[-1]["module"])][0] == b_in):
            # the previous layer's follower (activation or BatchNorm) runs inside the block
            seg = out[-1]
            follower = (type(seg["norm"]).__name__ if seg["norm"] is not None
                        else seg["activation"].name if seg["activation"] is not None
                        else "a module")
            raise ValueError(f"predict() models residual blocks post(x + F(x)) whose branch F "
                             f"starts with a weight layer; residual block {block.name!r} "
                             f"starts with {follower} on {seg['name']!r}'s output (a "
                             "pre-activation block, norm/activation before the layer), which "
                             "is not modelled; expected a block whose branch begins with its "
                             "Linear/Conv layer")
        elif prev_end is not None and b_in != prev_end:
            raise ValueError(f"predict() needs a chain of layers, activations and residual "
                             f"blocks; the input of residual block {block.name!r} is not the "
                             f"previous layer's output (pooling or another operation in "
                             f"between){between(b_in)}")
        if prev_end is not None and not mids:
            _whole(f"residual block {block.name!r}", in_sizes.get(key), sizes.get(prev_end),
                   prev_end == x_store)
        paths: list[list[dict]] = [[]]  # the branch F, then a projection shortcut if any
        ends: list[Any] = [None]  # grad_fn of each path's output (the identity: the input's)
        end, done = b_in, 0
        lo = start_lo = max([prev_at, *(m[3] for m in betweens if any(m[2] is b for b in mids))])
        while i < len(order) and id(order[i].owner) in members[key]:
            if paths[-1] and inputs.get(id(order[i].owner)) == [b_in]:
                if len(paths) == 2:
                    raise ValueError(f"residual block {block.name!r} has more than two paths "
                                     f"from its input ({order[i].name!r} starts a third)")
                paths.append([])  # a second path from the block's input: the shortcut
                ends.append(None)
                end, lo = b_in, start_lo
            seg, end, at = link(order[i], end, lo)
            lo = at
            paths[-1].append(seg)
            ends[-1] = fns.get(at)
            done = max(done, at)
            i += 1
        if b_out == b_in:
            raise ValueError(f"residual block {block.name!r} does not output x + F(x)")
        # an activation applied to the sum: the last call whose output is the block's output
        # and that ran after both paths (torchvision adds in place, so storages coincide)
        hit = [a for a in acts if a[1] == b_out and a[3] > done]
        in_fn, out_fn = box_fns.get(key, (None, None))
        _check_add(block.name, out_fn, bool(hit), ends[0], ends[1] if len(ends) > 1 else in_fn,
                   {fn: labels[at] for at, fn in fns.items() if fn is not None})
        readers = [a for a in acts if a[0] == b_out and a[1] != b_out and a[3] > done]
        if not hit and len(readers) == 1 and not any(b_out in c for c in inputs.values()):
            # Sequential(..., Block(), nn.ReLU(), ...): the activation module after the block,
            # outside it, is its f in f(x + F(x)) (refused before: "the input of '4' is not the
            # previous layer's output; it is the output of '3' (ReLU)")
            hit, b_out = readers, readers[0][1]
        last = (out_fn, min(outputs[id(s["module"])][1] for s in paths[0] + paths[-1]),
                block.name)
        out.append({"kind": "block", "name": block.name, "layers": paths[0],
                    "shortcut": paths[1] if len(paths) > 1 else [],
                    "post": hit[-1][2] if hit else None, "between": mids})
        prev_end = b_out
        prev_at = max(done, hit[-1][3] if hit else -1)
    stop, start, name = last
    if loss_fn is None:
        end = _first_tensor(output)
    else:
        with torch.inference_mode(False), torch.enable_grad():
            check_targets(output, y, loss_fn)
            end = check_loss(loss_fn(output, trackable(y)))  # a float: one TypeError line
    hooked = next((who for who, t in [*seg_outs, *((label(m), out_tensors[id(m)][0])
                                                   for m in (i.owner for i in order)
                                                   if id(m) in out_tensors)]
                   if any(not getattr(h, "__qualname__", "").startswith("Recording.")
                          for h in (t._backward_hooks or {}).values())), None)
    if hooked is not None:
        raise ValueError(f"predict() computes each gradient from the weights; a gradient hook "
                         f"(tensor.register_hook) on the output of {hooked} may change it, "
                         "which the theory does not see; expected the model without it")
    returns.check(end, x)
    _reaches_every_layer(end, [(info.name, out_tensors.get(id(info.owner)))
                               for info in order], loss_fn is None)
    other = _other_path(end, stop, {fn: at for at, fn in fns.items()
                                    if fn is not None and at < start})
    if other is not None:
        raise ValueError(f"predict() anchors the gradient at the model's last layer or block "
                         f"{name!r}, but the {'output' if loss_fn is None else 'loss'} also "
                         f"depends on {labels[other]} by another path (a skip or an extra "
                         "output after the last layer): the gradients before it would be "
                         "predicted without that path")
    if loss_fn is not None:
        out[-1]["top_grad"] = _top_moments(end, out_tensors.get(id(_top_module(out[-1]))))
    return out


def _monotone(spec: ActivationSpec) -> bool:
    """Whether ``f`` is non-decreasing (ReLU, tanh, sigmoid, ELU, ...; not GELU, SiLU, Mish):
    then ``max_i f(s_i) = f(max_i s_i)``, and the gradient goes to the same entry with the
    same ``f'``."""
    s = torch.linspace(-40.0, 40.0, 8001, dtype=torch.float64)
    with torch.no_grad():
        f = spec.function(s)
    return bool(torch.isfinite(f).all()) and bool((f.diff() >= -1e-12 * (1 + f.abs().max())).all())


def _act_after_max_pool(betweens: list, acts: list, fns: dict, labels: dict, made: dict,
                        by_storage: dict, norms: list, pool_nodes: dict, reads: list,
                        moved: set) -> None:
    """A max pool between a layer (or BatchNorm) output ``s`` and its activation,
    ``F.relu(F.max_pool2d(conv(x), 2))`` (pytorch/examples' MNIST net of 2018), or
    ``nn.MaxPool2d`` then ``nn.ReLU``: for a non-decreasing ``f`` it is ``max_pool(f(s))``
    exactly, forward and backward, so the activation is made the layer's and the pool put
    after it (``acts`` and ``betweens`` rewritten in place, linked through a storage key of
    their own, recorded in ``moved``). An average pool, or an activation that is not monotone
    (GELU, SiLU), is left as it is: refused by name."""
    outputs = {v[0]: v for v in made.values()}  # layer or norm output storage -> record
    taken = {a[0] for a in acts}
    for i, (p_in, p_out, b, p_seq) in enumerate(list(betweens)):
        if b.kind != "max" or p_in not in outputs or p_in in taken:
            continue
        hit = None  # (index in acts or None, output storage, spec, node, label)
        for j, a in enumerate(acts):  # an activation module reading the pool's output
            if a[0] == p_out and a[3] > p_seq:
                hit = (j, a[1], a[2], fns.get(a[3]), labels.get(a[3]))
                break
        node_key = next((k for k, v in pool_nodes.items() if v[3] == p_seq), None)
        if hit is None and node_key is not None:
            for fn, storage in reads:  # a function reading it (or a view of it)
                node, _ = _below_views(fn)
                if node is None or node.name() not in ACT_NODES or not node.next_functions:
                    continue
                src, nr = node.next_functions[0]
                if _below_views(src, None, nr) != node_key:
                    continue
                key = _settings(node)
                spec = None if key is None else activation_spec(key[0](*key[1:]))
                if spec is not None:
                    hit = (None, storage, spec, node, "the function "
                           + re.sub(r"Backward[0-9]*$", "", node.name()).lower())
                break
        if hit is None:
            continue
        j, a_out, spec, node, who = hit
        if not spec.scalar or spec.name in ("softshrink", "hardshrink") or not _monotone(spec):
            continue
        rec = outputs[p_in]
        at = rec[1] + 0.5  # as a functional activation of the layer's output
        key = -(1 << 40) - i  # a storage of its own: f(s), which no tensor of the model holds
        if j is not None:
            del acts[j]
        acts.append((p_in, key, spec, at))
        fns[at] = node
        labels[at] = who or "the activation"
        betweens[betweens.index((p_in, p_out, b, p_seq))] = (key, a_out, b, p_seq)
        moved.add(key)
        taken.add(p_in)
        layer = by_storage.get(p_in) if not is_norm(rec[2]) else next(
            (by_storage.get(n[0]) for n in norms if n[2] is rec[2]), None)
        if layer is not None and layer.activation is None:
            layer.activation = labels[at]


_MODELLED_POOLS = ("max, average, adaptive max and adaptive average pooling and dropout, as "
                   "modules (nn.MaxPool2d, ...) or functions (F.max_pool2d, F.dropout, ...)")


def _operation(fn: Any) -> str:
    """The refusal's words for a layer input made by the autograd node ``fn`` (a torch
    operation, not a module), named below the views on it (a flatten of ``h * 2`` is named by
    ``Mul``, not by ``View``); an activation applied after pooling is named as such, one applied
    to another operation's result names that operation (``tanh(h - h.mean(0))``: ``Sub``)."""
    node, _ = _below_views(fn)
    node = fn if node is None else node
    name = node.name()
    op = re.sub(r"Backward[0-9]*$", "", name)
    below = _below_views(node.next_functions[0][0])[0] if node.next_functions else None
    if name in ACT_NODES and below is not None and "Pool" in below.name():
        pool = re.sub(r"Backward[0-9]*$", "", below.name())
        return (f"; it is the output of the function {op.lower()} applied after the pooling "
                f"{pool!r} (autograd node {below.name()}): an activation after pooling is "
                "modelled only after a max pool of a layer's (or BatchNorm's) own output and "
                "for a non-decreasing activation (then f(max(s)) = max(f(s))); expected the "
                "activation before the pool (F.avg_pool2d(F.gelu(conv(x)), 2))")
    if name in ACT_NODES and below is not None:  # tanh(h - h.mean(0)): name the Sub too
        under = re.sub(r"Backward[0-9]*$", "", below.name())
        return (f"; it is the output of the function {op.lower()} applied to the result of the "
                f"torch operation {under!r} (autograd node {below.name()}), not to a layer's "
                "(or normalization's) own output: an activation is modelled only on a layer's "
                "or normalization's output")
    return f"; it is computed by the torch operation {op!r} (autograd node {name}), not by a module"


_RESHAPES = frozenset({"flatten", "view", "reshape", "view_as", "reshape_as", "contiguous",
                       "unflatten", "squeeze", "unsqueeze"})
"""Functions (``torch.flatten``, tensor methods) whose output holds every value of their input in
another shape (a reshape of a non-contiguous tensor copies them)."""


class _Functions(TorchFunctionMode):
    """Calls ``on_call(name, args, kwargs, out)`` after each torch function the forward calls
    (``F.max_pool2d``, ``torch.flatten``, ``x.view``; not the calls inside a function:
    PyTorch runs the handler with the mode off). The autograd graph keeps neither the pooling
    arguments that matter to every torch version (adaptive pooling saves no output size) nor
    the storages :func:`chain` links by; the call itself has both, with or without gradients."""

    def __init__(self, on_call: Callable[[str, tuple, dict, Any], None]) -> None:
        super().__init__()
        self.on_call = on_call

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name and ("pool" in name or "dropout" in name or name in _RESHAPES
                     or name in ("mean", "amax")):
            try:
                self.on_call(name, args, kwargs, out)
            except (TypeError, ValueError, RuntimeError, IndexError):  # arguments no module
                pass  # takes: the call stays unrecorded, and a refusal names its operation
        return out


def _check_backward_hooks(model: nn.Module, names: dict[int, str]) -> None:
    """A ValueError naming the module that carries a backward hook of the deprecated kind
    (``module.register_backward_hook``, or ``nn.modules.module.register_module_backward_hook``
    for every module): torch registers it on the autograd node of the module's output, where
    what it returns replaces the gradient sent below, and nothing in the forward shows it (a
    hook returning ``grad_input * 10`` on an activation: grad_pre_std of the layers below
    predicted 0.1x the measurement). Full backward hooks are checked by what they return
    (:class:`_HookReturns`)."""
    from torch.nn.modules import module as torch_module

    if getattr(torch_module, "_global_backward_hooks", None) and \
            getattr(torch_module, "_global_is_full_backward_hook", None) is False:
        raise ValueError("predict() computes each gradient from the weights; a global module "
                         "backward hook (torch.nn.modules.module.register_module_backward_hook)"
                         " may change every module's gradient, which the theory does not see; "
                         "expected no such hook while predicting")
    for m in model.modules():
        if m._backward_hooks and getattr(m, "_is_full_backward_hook", None) is False:
            raise ValueError(f"predict() computes each gradient from the weights; a backward "
                             f"hook (register_backward_hook) on {names.get(id(m), '')!r} "
                             f"({type(m).__name__}) may change the gradient it sends below, "
                             "which the theory does not see; expected the model without it")


class _WrappedHooks:
    """Hooks wrapped for one forward (a context manager): each entry of ``tables``,
    ``(hook dict, *how)``, has its hooks replaced by ``self._wrap(hook, *how)`` on entry and
    put back on exit."""

    tables: list[tuple]
    saved: list[tuple[dict, Any, Any]]

    def _wrap(self, hook: Callable, *how: Any) -> Callable:
        raise NotImplementedError

    def __enter__(self) -> _WrappedHooks:
        self.saved = []
        for table, *how in self.tables:
            for key, hook in list(table.items()):
                self.saved.append((table, key, hook))
                table[key] = self._wrap(hook, *how)
        return self

    def __exit__(self, *exc: object) -> None:
        for table, key, hook in self.saved:
            if key in table:
                table[key] = hook
        self.saved = []


class _GlobalForwardHooks(_WrappedHooks):
    """The forward hooks that run before a module's own hooks, wrapped for one forward: the
    global forward hooks (``nn.modules.module.register_module_forward_hook``), the global
    forward pre-hooks and the forward pre-hooks of the model's modules. One that replaces or
    changes in place a module's output (hooks) or input (pre-hooks) is refused, naming the
    module and the hook: torch runs the global hooks before every module's own hooks, so the
    check of what a module's forward returned (``own_post``, prepended to the module's hooks)
    saw the changed output as the module's (a global hook doubling every Tanh's output: every
    row after the first layer predicted about 0.3-0.5x the measurement); an input changed by a
    pre-hook was refused as 'computed by the torch operation 'Mul'', naming no hook, or with a
    path of modules going round in circles."""

    def __init__(self, model: nn.Module, names: dict[int, str]) -> None:
        from torch.nn.modules import module as torch_module

        self.names = names
        self.tables: list[tuple[dict, str, bool]] = []  # (hook dict, what, pre-hooks)
        glob = getattr(torch_module, "_global_forward_hooks", {})
        if glob:
            self.tables.append((glob, "a global forward hook (register_module_forward_hook)",
                                False))
        glob_pre = getattr(torch_module, "_global_forward_pre_hooks", {})
        if glob_pre:
            self.tables.append((glob_pre, "a global forward pre-hook "
                                "(register_module_forward_pre_hook)", True))
        for m in model.modules():
            if m._forward_pre_hooks:
                self.tables.append((m._forward_pre_hooks, "a forward pre-hook", True))
        self.saved: list[tuple[dict, Any, Any]] = []

    def _wrap(self, hook: Callable, what: str, pre: bool) -> Callable:
        def wrapped(module, *rest):
            t = _first_tensor(rest[0] if pre else rest[-1])
            before = None if t is None else t._version
            got = hook(module, *rest)
            if id(module) in self.names and t is not None and (
                    (got is not None and _first_tensor(got) is not t)
                    or t._version != before):
                part = "input" if pre else "output"
                name = self.names[id(module)]
                who = repr(name) if name else "the model"
                raise ValueError(
                    f"predict() computes each module's output from its weights and input; "
                    f"{what} replaced or changed the {part} of {who} "
                    f"({type(module).__name__}), which the theory "
                    f"does not see; expected {'pre-' if pre else ''}hooks that only read "
                    "(return None), or the model without that hook")
            return got
        return wrapped


class _HookReturns(_WrappedHooks):
    """Full backward hooks and pre-hooks (``register_full_backward_hook``,
    ``register_full_backward_pre_hook``, on the model's modules or global) wrapped for one
    forward, so that what they return in a backward of it is known: ``None`` (or the
    gradients as given) leaves the gradient as autograd computed it, as the theory does (a
    logging hook); anything else replaces it. Without the hooks' returns every such model was
    refused ('custom autograd Function BackwardHookFunctionBackward')."""

    def __init__(self, model: nn.Module, names: dict[int, str]) -> None:
        from torch.nn.modules import module as torch_module

        self.tables: list[tuple[dict, str]] = []  # (hook dict, "'name' (Class)" or global)
        glob = "a global module backward hook"
        if getattr(torch_module, "_global_is_full_backward_hook", None) is True:
            self.tables.append((torch_module._global_backward_hooks, glob))
        self.tables.append((getattr(torch_module, "_global_backward_pre_hooks", {}),
                            "a global module backward pre-hook"))
        for m in model.modules():
            who = f"{names.get(id(m), '')!r} ({type(m).__name__})"
            if getattr(m, "_is_full_backward_hook", None) is True:
                self.tables.append((m._backward_hooks, f"a full backward hook on {who}"))
            self.tables.append((getattr(m, "_backward_pre_hooks", {}),
                                f"a full backward pre-hook on {who}"))
        self.tables = [(t, w) for t, w in self.tables if t]
        self.saved: list[tuple[dict, Any, Any]] = []
        self.changed: str | None = None

    def _wrap(self, hook: Callable, who: str) -> Callable:
        def wrapped(module, *grads):
            got = hook(module, *grads)
            if got is not None and self.changed is None and not _same(got, grads[0]):
                self.changed = who
            return got
        return wrapped

    def check(self, end: torch.Tensor, x: Any) -> None:
        """Run the wrapped hooks by a backward of ``end`` (the loss, else the output's sum) to
        ``x`` (no ``.grad`` written) and raise a ValueError naming the first that returned a
        changed gradient."""
        if not self.tables or not isinstance(x, torch.Tensor) or not x.requires_grad \
                or not isinstance(end, torch.Tensor) \
                or not end.requires_grad:
            return
        torch.autograd.grad(end.sum(), x, retain_graph=True, allow_unused=True)
        if self.changed is not None:
            raise ValueError(f"predict() computes each gradient from the weights; "
                             f"{self.changed} returned a changed gradient, which the theory "
                             "does not see; expected backward hooks that only read (return "
                             "None), or the model without that hook")


def _same(got: Any, given: tuple) -> bool:
    """Whether a backward hook's return ``got`` is the gradients ``given`` unchanged."""
    got = got if isinstance(got, (tuple, list)) else (got,)
    return len(got) == len(given) and all(
        (a is None and b is None) or (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                                      and a.shape == b.shape and torch.equal(a, b))
        for a, b in zip(got, given))


def _top_module(seg: dict) -> nn.Module:
    """The weight layer of a segment whose row comes last (a block: the shortcut's last layer,
    else the branch's)."""
    if seg["kind"] == "layer":
        return seg["module"]
    return (seg["shortcut"] or seg["layers"])[-1]["module"]


def _top_moments(loss: torch.Tensor, held: tuple[torch.Tensor, int] | None
                 ) -> tuple[float, float] | None:
    """``(mean, mean square)`` of ``g = dL/ds`` at the last layer's output ``s`` (None when it
    cannot be had: ``s`` changed in place since, or no gradient reaches it). The back-propagated
    ``W^T g`` carries ``g``'s mean as well as its spread, so the gradient scale is anchored at
    ``E[g^2] = std^2 + mean^2``: with the std alone (MSE towards targets of mean 5, outputs
    near 0) every lower layer's gradient was predicted 0.045x the measurement."""
    if held is None or held[0]._version != held[1] or not loss.requires_grad:
        return None
    try:
        (g,) = torch.autograd.grad(loss, held[0], allow_unused=True)
    except RuntimeError:
        return None
    if g is None:
        return None
    g = g.detach().to(torch.float64)
    return float(g.mean()), float(g.pow(2).mean())


def _check_stock_forward(info: LayerInfo) -> None:
    """A ValueError for a subclass of ``nn.Linear``/``nn.ConvNd`` with its own ``forward`` (or
    ``_conv_forward``): the theory computes ``s = W a + b`` from the module's ``weight`` and
    ``bias``, and a forward that transforms them (weight standardization ``(W - mean) / std``,
    an equalized-learning-rate scale, a low-rank update) computes something else (a
    weight-standardized ReLU CNN: pre_std predicted 0.003-0.11x the measurement). A
    parametrization (``torch.nn.utils.parametrize``) changes ``weight`` itself and is
    modelled."""
    m = info.owner
    base = next(c for c in (nn.Linear, *_CONV) if isinstance(m, c))
    names = ("forward", "_conv_forward") if base is not nn.Linear else ("forward",)
    own = next((n for n in names if getattr(type(m), n) is not getattr(base, n)), None)
    if own is not None:
        raise ValueError(f"predict() models nn.Linear/Conv layers as torch computes them; layer "
                         f"{info.name!r} is a {type(m).__name__}, a {base.__name__} subclass "
                         f"with its own {own}() (a transformed weight or output, which the "
                         f"theory does not see); expected {base.__name__}'s own {own}()")
    _check_instance_forward(m, repr(info.name), "layer")


def _check_instance_forward(m: nn.Module, label: str, what: str) -> None:
    """A ValueError when the module ``m`` (a layer, an activation or a normalization) has its
    ``forward`` replaced on the instance: the theory computes what the class computes (a
    Linear patched to return ``3 * F.linear(x, W, b)``: pre_std of the next layer predicted
    0.33x the measurement; a Tanh patched to ``tanh(3 x)``: act_std 0.6x)."""
    n = replaced_forward(m)
    if n is not None:
        raise ValueError(f"predict() models each module as its class computes it; {what} "
                         f"{label} ({type(m).__name__}) has its {n}() replaced on the instance "
                         f"(module.{n} = ...), which the theory does not see; expected "
                         f"{type(m).__name__}'s own {n}()")


def _whole(name: str, read: int | None, made: int | None, first: bool) -> None:
    """A ValueError unless a segment reads every entry (``read``) of the tensor before it
    (``made`` entries): a slice or a selection (``h[:, :k]``, a sequence's last step) shares
    its storage, and was taken for the whole output, while the gradient reaches only the
    entries read (the prediction of the layers before was 0.7x the measurement for half the
    units, 0.2x for one of 32 time steps)."""
    if first or read is None or made is None or read == made:  # part of x: no gradient rows
        return
    if read > made:  # h[:, None].expand(-1, 4, -1): a stride-0 view of more entries
        raise ValueError(f"predict() needs a chain in which each layer reads each entry of the "
                         f"previous output once; the input of {name} repeats the previous "
                         f"layer's output ({read} entries read from its {made}: a broadcast "
                         "view such as expand), so each entry's gradient is a sum over its "
                         "copies")
    raise ValueError(f"predict() needs a chain in which each layer reads all of the previous "
                     f"output; the input of {name} is a part of the previous layer's output "
                     f"({read} of its {made} entries: a slice or a selection), whose other "
                     "entries get no gradient")


def _custom_function(fn: Any, modules: set) -> str | None:
    """The class name of a custom ``torch.autograd.Function``'s node (its backward is the
    user's: a gradient reversal or scale) on the single-input path from ``fn`` back to the
    last module output (a node in ``modules``), views and copies included; else None."""
    for _ in range(16):
        if fn is None or fn in modules:
            return None
        if isinstance(fn, torch.autograd.function.BackwardCFunction) \
                and fn.name() != "BackwardHookFunctionBackward":  # a full backward hook's
            return type(fn).__name__  # view: checked by what the hooks return (_HookReturns)
        nxt = [n for n, _ in fn.next_functions if n is not None]
        if len(nxt) != 1:
            return None
        fn = nxt[0]
    return None


def _reaches_every_layer(end: Any, outs: list, no_loss: bool) -> None:
    """A ValueError naming the first layer whose output the loss (or the model's output)
    does not reach in the autograd graph: computed under ``torch.no_grad()`` or detached on
    the way (``h.detach()``), it gets no gradient, and the chain's backward pass predicted one
    all the same (grad_pre_std 2.3e-4 where nothing is measured)."""
    stack = [t.grad_fn for t in _tensors(end) if t.grad_fn is not None]
    seen: set = set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(nxt for nxt, _ in node.next_functions)
    for name, held in outs:
        if held is None:
            continue
        fn = held[0].grad_fn
        if fn is None or fn not in seen:
            raise ValueError(f"predict() needs the gradient to flow through every layer of the "
                             f"chain; the {'output' if no_loss else 'loss'} does not reach "
                             f"{name!r} (its output was computed under torch.no_grad() or "
                             "detached on the way), so it gets no gradient")


def _other_path(end: Any, stop: Any, earlier: dict) -> int | None:
    """The call number of a module output in ``earlier`` (autograd node -> call) that
    ``end`` (the loss, or the model's output: a tensor or a structure of tensors) reaches in
    the autograd graph without passing through the node ``stop`` (the last segment's output),
    or None."""
    if stop is None:
        return None
    stack = [t.grad_fn for t in _tensors(end) if t.grad_fn is not None]
    seen: set = set()
    while stack:
        node = stack.pop()
        if node is None or node is stop or node in seen:
            continue
        seen.add(node)
        if node in earlier:
            return earlier[node]
        stack.extend(nxt for nxt, _ in node.next_functions)
    return None


def _tensors(obj: Any) -> list[torch.Tensor]:
    """Every tensor in a model's output (a tensor, tuple, list, dict or dataclass)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _tensors(o)]
    return []


_SHAPE_ONLY = (nn.Flatten, nn.Unflatten, nn.Identity)
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
            nn.FeatureAlphaDropout)


def _shape_only(module: nn.Module) -> bool:
    """A module whose output holds its input's values (reshaped): Flatten, Unflatten,
    Identity, dropout in eval mode or with ``p = 0``."""
    return isinstance(module, _SHAPE_ONLY) or (
        isinstance(module, _DROPOUT) and (not module.training or module.p == 0))


def _check_add(name: str, out_fn: Any, post: bool, branch_fn: Any, skip_fn: Any,
               made: dict | None = None) -> None:
    """The block's output is ``post(a + b)`` (``post`` an activation module when ``post``) of
    exactly the branch's output ``a`` and the shortcut's ``b`` (autograd nodes; the check is
    skipped without gradients): a scale, another operation or a functional activation in
    between would make the prediction wrong, so it is refused; so is an add with ``alpha``
    (``x.add(F(x), alpha=0.5)``, ``torch.add(x, F(x), alpha=2)``), a scale inside the add."""
    if out_fn is None or branch_fn is None or skip_fn is None:
        return
    add = out_fn
    if post and not out_fn.name().startswith("AddBackward"):  # (an in-place activation module
        # after the block, outside it, ran after the block's output was recorded)
        nxt = [n for n, _ in out_fn.next_functions if n is not None]
        add = nxt[0] if len(nxt) == 1 else None
    operands = [] if add is None else [n for n, _ in add.next_functions if n is not None]
    if (add is None or not add.name().startswith("AddBackward") or len(operands) != 2
            or {id(n) for n in operands} != {id(branch_fn), id(skip_fn)}):
        other = [n for n in operands if n is not branch_fn] if branch_fn in operands else []
        who = (made or {}).get(other[0]) if len(other) == 1 else None
        if who is not None:  # x_pool + F(x): a module (not a weight layer) as the shortcut
            raise ValueError(f"predict() models residual blocks y = f(x + F(x)) or "
                             f"f(P(x) + F(x)) with a Linear/Conv projection P; in {name!r} the "
                             f"shortcut is the output of {who}, not the block's input itself "
                             "nor a Linear/Conv layer, which is not modelled; expected an "
                             "identity or a projection-layer shortcut")
        raise ValueError(f"predict() models residual blocks y = f(x + F(x)) or f(P(x) + F(x)) "
                         f"with an activation module f (or none); in {name!r} the output is "
                         f"not the plain sum of the branch and the shortcut (a scale, another "
                         f"operation or a functional activation in between)")
    alpha = getattr(add, "_saved_alpha", 1)
    if alpha != 1:  # x.add(F(x), alpha=0.5): one operand scaled, as 0.5 * F(x) would be (the
        # sum was modelled as x + F(x): grad_pre_std of the layer below 2.0x the measurement)
        raise ValueError(f"predict() models residual blocks y = f(x + F(x)) or f(P(x) + F(x)); "
                         f"in {name!r} the sum is an add with alpha={alpha:g} (x.add(F(x), "
                         f"alpha={alpha:g}) scales one path by {alpha:g}), which the theory does "
                         "not model; expected the plain sum x + F(x)")


_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _check_norm(norm: nn.Module, name: str) -> None:
    """BatchNorm in training mode (batch statistics) is modelled; anything else is refused."""
    if not isinstance(norm, _BN):
        raise ValueError(f"predict() models BatchNorm1d/2d/3d after a layer; {name!r} is a "
                         f"{type(norm).__name__}")
    if not norm.training and norm.track_running_stats:
        raise ValueError(f"predict() models BatchNorm in training mode (batch statistics); "
                         f"{name!r} is in eval mode: call model.train() first")


def _moments(spec: ActivationSpec | None, q: float, mean: float = 0.0
             ) -> tuple[float, float, float]:
    """``E[f(s)]``, ``E[f(s)^2]``, ``E[f'(s)^2]`` for ``s ~ N(mean, q)`` (identity without
    f: ``mean``, ``mean^2 + q``, 1)."""
    if spec is None:
        return mean, mean * mean + q, 1.0
    s, w = normal_rule(q)
    st = torch.from_numpy(np.ascontiguousarray(s + mean))
    a = spec.function(st).numpy()
    d = spec.derivative(st).numpy()
    return float(w @ a), float(w @ (a * a)), float(w @ (d * d))


def _scalar(spec: ActivationSpec) -> ScalarActivation:
    def f(s: np.ndarray) -> np.ndarray:
        return spec.function(torch.from_numpy(np.ascontiguousarray(s, np.float64))).numpy()

    def df(s: np.ndarray) -> np.ndarray:
        return spec.derivative(torch.from_numpy(np.ascontiguousarray(s, np.float64))).numpy()

    return ScalarActivation(spec.name, f, df)


def _bn_moments(norm: nn.Module, spec: ActivationSpec | None, qb: float,
                denom: float | None = None) -> tuple[float, float, float, float]:
    """Channel averages of ``E f(s)``, ``E f(s)^2``, ``Var f(s)`` and ``gamma^2 E f'(s)^2``
    for ``s ~ N(beta_c, gamma_c^2 qb / (denom + eps))`` (BN of a unit whose batch variance is
    ``denom``, default ``qb``, for examples whose variance about the batch mean is ``qb``; the
    module's own ``gamma_c``, ``beta_c``; 1 and 0 without affine parameters)."""
    denom = qb if denom is None else denom
    c = int(norm.num_features)
    if norm.affine:
        g = norm.weight.detach().to(torch.float64).cpu().numpy()
        b = norm.bias.detach().to(torch.float64).cpu().numpy()
    else:
        g, b = np.ones(c), np.zeros(c)
    r = qb / (denom + float(norm.eps)) if denom + norm.eps > 0 else 0.0
    pairs, counts = np.unique(np.stack([g, b], 1), axis=0, return_counts=True)
    fn = None if spec is None else _scalar(spec)
    acc = np.zeros(4)
    for (gc, bc), k in zip(pairs, counts):
        var = gc * gc * r
        if fn is None:
            m, sq, dsq = bc, bc * bc + var, 1.0
        elif var == 0.0:
            m = float(fn.f(np.array([bc]))[0])
            sq, dsq = m * m, float(fn.df(np.array([bc]))[0]) ** 2
        else:
            m, sq, dsq, _ = bn_moments(fn, var, bc)
        acc += k * np.array([m, sq, max(sq - m * m, 0.0), gc * gc * dsq])
    return tuple(float(v) for v in acc / c)


def _apply(spec: ActivationSpec | None, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``f(s)`` and ``f'(s)`` on nodes (identity without ``f``)."""
    if spec is None:
        return s, np.ones_like(s)
    st = torch.from_numpy(np.ascontiguousarray(s, np.float64))
    return spec.function(st).numpy(), spec.derivative(st).numpy()


def _gauss_dist(spec: ActivationSpec | None, var: float, mean: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of ``f(s)``, ``s ~ N(mean, var)``."""
    z, w = normal_rule(max(var, 0.0))
    return _apply(spec, z + mean)[0], w


def _dot(w: np.ndarray, a: np.ndarray) -> float:
    """``sum_i w_i a_i`` without BLAS (a multithreaded BLAS dot of 10^4 nodes took 35 ms on
    a busy 2-core machine, this 0.1 ms)."""
    return float(np.multiply(w, a).sum())


_UNIT_NODES = 32  # nodes of the distribution of a unit's mean over the batch (bias included)
_HERMITE = np.polynomial.hermite_e.hermegauss(16)


def _spread_nodes(vals: np.ndarray, w: np.ndarray, var: float | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """At most :data:`_UNIT_NODES` quantile groups of ``vals`` (weights ``w``), their
    deviations from the mean rescaled so that the variance is ``var`` (default: that of
    ``vals``; grouping alone loses the spread within each group)."""
    w = w / w.sum()
    m = _dot(w, vals)
    if vals.max() == vals.min():  # one value (e.g. zero biases): one node
        return np.array([m]), np.ones(1)
    var = _dot(w, (vals - m) ** 2) if var is None else var
    gv, gw = pooling.compress(vals, w, _UNIT_NODES)
    gvar = float(gw @ (gv - m) ** 2)
    if gvar > 0:
        gv = m + (gv - m) * math.sqrt(var / gvar)
    return gv, gw


def _unit_nodes(qw: float, qb: float, shift: float, bias: torch.Tensor | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nodes and weights of ``s = shift + b_j + W_j E_batch[a] + N(0, qb)`` over units and
    examples: the unit's mean over the batch is its own bias ``b_j`` (the layer's actual
    biases, as quantile groups: a uniform bias is not Gaussian, and a cubic-like activation
    such as Tanhshrink saw ``E f(s)^2`` 4x too large from a Gaussian of the same variance when
    the bias dominates) plus ``N(0, qw - qb)`` (the weights acting on the inputs' batch means,
    e.g. images in [0, 1]), and the example's deviation from it is ``N(0, qb)`` (``qb``: the
    unit's batch variance, ``qw``: the weights' whole part of the variance). Returns the
    nodes, their weights and where each unit mean's block of nodes starts."""
    if bias is None:
        mu, mw_ = np.zeros(1), np.ones(1)
    else:
        b = bias.reshape(-1).cpu().numpy()
        mu, mw_ = _spread_nodes(b, np.full(b.size, 1.0 / b.size))
    tw = max(qw - qb, 0.0)
    if tw > 1e-12 * max(qw, 1e-300):
        z, zw = _HERMITE
        mu, mw_ = _spread_nodes((mu[:, None] + math.sqrt(tw) * z[None, :]).ravel(),
                                (mw_[:, None] * zw[None, :]).ravel(),
                                float(mw_ @ (mu - mw_ @ mu) ** 2) + tw)
    if not qb > 0:
        return mu + shift, mw_, np.arange(mu.size)
    # rules with a breakpoint where s = 0 (a ReLU-family kink off a node was 5e-5 off)
    parts = [shifted_normal_rule(qb, float(m) + shift) for m in mu]
    s = np.concatenate([p[0] for p in parts])
    w = np.concatenate([p[1] * wk for p, wk in zip(parts, mw_)])
    return s, w, np.cumsum([0] + [p[0].size for p in parts[:-1]])


def _gauss_nodes(var: float, mean: float) -> tuple[np.ndarray, np.ndarray]:
    z, w = normal_rule(max(var, 0.0))
    return z + mean, w


def _weight_mean(name: str, numel: int, v: float, mw: float, fan: float) -> float:
    """The mean of a layer's weights as the theory uses it: 0 when it is within 4 standard
    errors of 0 (``mean^2 numel <= 16 Var(W)``: a zero-mean draw's sampling noise, which shifts
    no unit systematically), else ``mw``. A ValueError when ``fan mean^2 >= Var(W)`` (``fan``
    the larger of fan-in and fan-out): the common part of the units, ``mean(W) sum_j a_j`` per
    example (and its backward twin), then grows from layer to layer by up to that ratio and
    the independent-unit theory does not hold (weights N(0.02, 0.0625^2) in a 256-wide ReLU
    chain: pre_std 12x, grad_pre_std 5x off; e.g. ``nn.init.uniform_`` without bounds)."""
    var = max(v - mw * mw, 0.0)
    if mw * mw * numel <= 16.0 * var:
        return 0.0
    if fan * mw * mw >= var:
        raise ValueError(f"predict() models weights whose mean is small against their spread; "
                         f"layer {name!r} has weights of mean {mw:.3g} and std "
                         f"{math.sqrt(var):.3g} (fan {fan:g} * mean^2 / variance = "
                         f"{fan * mw * mw / var if var > 0 else math.inf:.3g} >= 1: its units "
                         "share a common part that grows with depth)")
    return mw


UNIT_SCALE_SPREAD = 0.05
"""The largest excess relative variance ``Var_j(v_j) / mean(v)^2`` of a layer's units' mean
squared weights ``v_j`` (rows; output channels of a conv) beyond i.i.d. sampling that
:func:`predict` accepts before an activation (:func:`_check_unit_scales`): an rms spread of
~22% of the units' weight scales. Measured, 5 tanh layers of 512 with rows scaled alternately
``1 -/+ a`` (3 seeds): a = 0.1 (excess 0.04) within 1.1% everywhere, a = 0.2 (0.15) act_std
0.967x and grad_pre_std 1.023x, a = 0.7 (0.88) act_std 0.75x and grad_pre_std 1.10x."""


def _homogeneous(spec: ActivationSpec) -> bool:
    """Whether ``f(c s) = c f(s)`` for ``c > 0`` (relu, leaky relu, a scalar PReLU): a unit's
    weight scale then factors out of ``E f(s)^2`` and ``E f'(s)^2``."""
    s = torch.tensor([-3.0, -1.0, -0.25, 0.25, 1.0, 3.0], dtype=torch.float64)
    return bool(torch.allclose(spec.function(2.0 * s), 2.0 * spec.function(s), rtol=1e-12,
                               atol=1e-12))


def _row_spread(sq: np.ndarray) -> float:
    """``Var_j(v_j) / mean(v)^2`` of the rows' means ``v_j`` of ``sq`` (ddof 1)."""
    ms = sq.mean(1)
    return float(ms.var(ddof=1)) / float(ms.mean()) ** 2


def _check_unit_scales(name: str, w64: torch.Tensor, spec: ActivationSpec,
                       offset: bool) -> None:
    """A ValueError when the units of a layer followed by an activation have weights of
    unequal scales beyond sampling noise, by more than :data:`UNIT_SCALE_SPREAD`: the theory
    gives every unit the same pre-activation variance ``n v E[a^2]``, which a unit-dependent
    scale (a custom init, rows rescaled by hand) breaks for any activation but a positively
    homogeneous one without offsets. The rows' relative variance of mean squares ``Var_j(v_j) /
    mean(v)^2`` is compared with its distribution when the same entries are shuffled over the
    matrix (i.i.d. weights: 99 shuffles from a fixed seed, the global generators untouched):
    refused when it exceeds their mean by :data:`UNIT_SCALE_SPREAD` and by 6 of their standard
    deviations (small layers, whose rows' scales spread by sampling alone: PyTorch's default
    init of Linear(12, 12) was refused 2 times in 300 at 99% confidence);
    the shuffles only run past a margin over ``(kurtosis - 1) / row length``, the i.i.d.
    expectation. Not checked below 32 rows or 32 entries per row."""
    rows = w64.detach().reshape(w64.shape[0], -1).cpu().numpy()
    m, k = rows.shape
    if m < 32 or k < 32 or (_homogeneous(spec) and not offset):  # too few to tell
        return
    sq = rows * rows
    v = float(sq.mean())
    if not v > 0:
        return
    spread = _row_spread(sq)
    if spread - max(float((sq * sq).mean()) / (v * v) - 1.0, 0.0) / k <= UNIT_SCALE_SPREAD:
        return
    gen = np.random.default_rng(0)
    flat = sq.ravel()
    null = np.array([_row_spread(gen.permutation(flat).reshape(m, k)) for _ in range(99)])
    if spread - null.mean() > max(UNIT_SCALE_SPREAD, 6.0 * float(null.std(ddof=1))):
        lo, hi = float(sq.mean(1).min()), float(sq.mean(1).max())
        raise ValueError(f"predict() models layers whose units share one weight scale; the "
                         f"{m} units of layer {name!r} have mean squared weights from "
                         f"{lo:.3g} to {hi:.3g} (relative variance {spread:.3g}, i.i.d. "
                         f"weights {null.mean():.3g}): with {spec.name} after it, units of "
                         "unequal scales saturate unequally, which one variance per layer "
                         "does not describe (a custom or hand-rescaled init)")


def _forward(seg: dict, prev: tuple, rows: list[dict]) -> tuple:
    """Append the layer's row and return ``(E[a^2], E[a], batch variance of a, distribution
    of a)`` of its output (the distribution, nodes and weights, is what a skip carries).
    ``q = n Var(W) E[a_prev^2] + Var(b)`` (``pre_std``; ``s ~ N(n mean(W) E[a_prev] +
    mean(b), q)``); the batch variance of a unit of ``s`` is
    ``qb = n v qb_prev`` (a unit's mean ``W E[a]`` and the bias are constant over the batch);
    after BatchNorm ``Var(dL/ds) = mean_c gamma_c^2 E[f'(s_c)^2] / (qb + eps)`` times
    ``Var(dL/da)`` (``dsq``)."""
    prev = _between_forward(seg, prev)
    prev_sq, prev_mean, prev_bvar = prev[:3]
    m = seg["module"]
    w64 = m.weight.detach().to(torch.float64)
    v, mw = float(w64.pow(2).mean()), float(w64.mean())
    b64 = None if m.bias is None else m.bias.detach().to(torch.float64)
    b2 = 0.0 if b64 is None else float(b64.pow(2).mean())
    mb = 0.0 if b64 is None else float(b64.mean())
    fan_in, fan_out, spread = _fans(m, seg.get("in_shape"))
    mw = _weight_mean(seg["name"], w64.numel(), v, mw, max(fan_in, fan_out))
    # zero padding: the input's E[a^2] is lower at the border, which fewer outputs read
    mats = _tap_matrices(m, seg.get("in_shape")) if not seg["_between"] else None
    prof_in = seg.pop("_prof_in", None)
    prof_out = d_prof = None
    if mats is not None:
        ones = np.ones([mm.shape[1] for mm in mats])
        a1 = _along(mats, ones)
        u = prof_in if prof_in is not None and prof_in.shape == ones.shape else ones
        au = _along(mats, u)
        fan_w = fan_in * (v - mw * mw) * prev_sq  # before the correction
        fan_in *= float(au.mean()) / float(a1.mean())
        act = seg["activation"]
        qmap = fan_w * au / float(a1.mean()) + max(b2 - mb * mb, 0.0)
        q_mean = float(qmap.mean())
        if seg.get("norm") is None and q_mean > 0:
            if act is None or _homogeneous(act):
                prof_out = qmap / q_mean
            else:  # E f^2 and E f'^2 per position, at ~1% levels of q(p)
                rel = np.round(qmap / q_mean, 2)
                lv, inv = np.unique(rel, return_inverse=True)
                mom = np.array([_moments(act, float(r) * q_mean,
                                         fan_in * mw * prev_mean + mb)[1:] for r in lv])
                a2, d2 = np.moveaxis(mom[inv.reshape(rel.shape)], -1, 0)
                if a2.mean() > 0 and d2.mean() > 0:
                    prof_out = a2 / a2.mean()
                    d_prof = d2 / d2.mean()
    seg["_prof_out"] = prof_out
    # s ~ N(n mean(W) E[a] + mean(b), n Var(W) E[a^2] + Var(b)) over units and examples: the
    # weights' and biases' common means shift every unit alike (they were taken for random
    # ones: a constant bias 2 made ReLU gradients 2x off)
    q = fan_in * (v - mw * mw) * prev_sq + b2 - mb * mb
    shift = fan_in * mw * prev_mean + mb
    qb = fan_in * v * prev_bvar + spread * v * prev_mean ** 2
    # the part of each unit's mean over the batch that its random weights make (W_j E[a]):
    # one draw per unit, whose spread the measurement takes about the layer's own average of
    # them, so it sees (1 - 1/n) of it for n units (:func:`_finite_units`)
    tw = max(max(fan_in * (v - mw * mw) * prev_sq, 0.0) - qb, 0.0)
    units = max(int(m.weight.shape[0]), 1)
    a_fin = 0.0  # BatchNorm: the channels' actual gamma and beta, an exact average
    norm = seg.get("norm")
    spec = seg["activation"]
    if norm is not None:
        # a group of examples (:func:`_input_groups`) is divided by the batch's variance,
        # found by the run over the whole batch (``_bn_pool``); its own ``qb`` scales it
        pool = seg.get("_bn_pool")
        denom = qb if pool is None else pool[0]
        mean, sq, bvar, gdsq = _bn_moments(norm, spec, qb, denom)
        # each channel is divided by its own batch std: qb_c from the channel's own mean
        # squared weight (E[1 / qb_c] > 1 / E[qb_c] when few inputs feed a channel, e.g. a
        # first conv with 2 input channels: the gradient is larger than 1 / mean qb says)
        v_c = m.weight.detach().to(torch.float64).pow(2).flatten(1).mean(1).cpu().numpy()
        qb_c = fan_in * v_c * prev_bvar + spread * v_c * prev_mean ** 2
        inv = float(np.mean(1.0 / (qb_c + float(norm.eps)))) if v_c.size == norm.num_features \
            else 1.0 / (qb + float(norm.eps))
        if pool is None:
            seg["_bn_pool"] = (qb, inv)
        else:
            inv = pool[1]
        dsq = gdsq * inv
        # the channels' mixture of f(N(beta_c, gamma_c^2 r))
        c = int(norm.num_features)
        g = (norm.weight.detach().to(torch.float64).cpu().numpy() if norm.affine
             else np.ones(c))
        b = (norm.bias.detach().to(torch.float64).cpu().numpy() if norm.affine
             else np.zeros(c))
        r = qb / (denom + float(norm.eps)) if denom + norm.eps > 0 else 0.0
        pairs, counts = np.unique(np.stack([g, b], 1), axis=0, return_counts=True)
        parts = [_gauss_nodes(gc * gc * r, bc) for gc, bc in pairs]
        s_nodes = np.concatenate([p[0] for p in parts])
        s_w = np.concatenate([p[1] * k / c for p, k in zip(parts, counts)])
        g2 = np.concatenate([np.full(p[0].size, gc * gc) for p, (gc, _) in zip(parts, pairs)])
        nodes = (s_nodes, s_w, g2, inv)
        dist = pooling.compress(_apply(spec, s_nodes)[0], s_w)
    else:
        if spec is not None:
            _check_unit_scales(seg["name"], w64, spec,
                               mw != 0.0 or (b64 is not None and bool(b64.any())))
        qw = max(fan_in * (v - mw * mw) * prev_sq, 0.0)
        s_nodes, s_w, starts = _unit_nodes(qw, min(qb, qw), fan_in * mw * prev_mean, b64)
        a, d = _apply(spec, s_nodes)
        if spec is None:
            mean, sq, dsq, bvar = shift, shift * shift + q, 1.0, qb
        else:
            mean, sq, dsq = _dot(s_w, a), _dot(s_w, a * a), _dot(s_w, d * d)
            # the batch variance of a unit: its variance around its own mean (bias and
            # W_j E[a] held), averaged over the units
            wu = np.add.reduceat(s_w, starts)
            mu = np.add.reduceat(a * s_w, starts) / np.where(wu > 0, wu, 1.0)
            bvar = sq - float(wu @ (mu * mu))
        if spec is None:
            a_fin = tw / units
        elif tw > 0:  # the units' spread of E_batch f(s), the weights' share of it
            varb = max(b2 - mb * mb, 0.0)
            a_fin = max(float(wu @ (mu * mu)) - mean * mean, 0.0) * tw / (tw + varb) / units
        nodes = (s_nodes, s_w, np.ones_like(s_nodes), 1.0)
        dist = pooling.compress(a, s_w)
    rows.append({"layer": seg["index"], "module": seg["name"], "q": q, "shift": shift,
                 "sq": sq, "mean": mean, "act_var": max(sq - mean * mean, 0.0), "dsq": dsq, "v": v,
                 "fan_out": fan_out,
                 # (an activation after a max pool: no tensor of the model holds f(s))
                 "act": (seg["activation"] is not None or norm is not None)
                 and not seg.get("pooled_act"),
                 "nodes": nodes, "spec": spec, "between": seg["_between"],
                 "q_fin": tw / units, "a_fin": a_fin, "mats": mats,
                 "plain": prof_out is not None, "d_prof": d_prof})
    return sq, mean, max(bvar, 0.0), dist


def _finite_units(rows: list[dict]) -> list[tuple[float, float]]:
    """Per row, what the measured ``pre_std^2`` and ``act_std^2`` miss of the predicted
    variances: the measurement is the spread (ddof = 0) of all entries about their own mean,
    and the units' means ``b_j + W_j E_batch[a]`` are ``n`` draws (``n`` = ``out_features`` or
    ``out_channels``), whose average of squared deviations about their own average is
    ``(1 - 1/n)`` of their variance ``tw`` (the biases are taken as they are: no loss). So
    ``E[measured Var(s)] = q - tw / n`` (likewise for ``f(s)``, scaled by the weights' share of
    the units' spread). A one-unit output after a ReLU layer: ``E[a]^2 / E[a^2] = 1/pi`` of
    ``q`` is its mean over the batch, and pre_std was predicted 1.21x the measurement (3 units
    1.08x, 10 units 1.02x; more where the examples are correlated, deep in a net)."""
    return [(r.get("q_fin", 0.0), r.get("a_fin", 0.0)) for r in rows]


def _between_forward(seg: dict, state: tuple) -> tuple:
    """The state after the pooling/dropout modules before the segment (kept with the
    distributions each reads and makes, ``seg["_between"]``, for the backward pass)."""
    items = []
    for b in seg.get("between", ()):
        nxt = pooling.forward(b, state)
        items.append((b, state[3], nxt[3]))
        state = nxt
    seg["_between"] = items
    return state


def _between_backward(items: list, g: float, t: pooling.Table | None
                      ) -> tuple[float, pooling.Table | None]:
    """``Var(dL/da)`` (mean and table of the unit's value) before the pooling/dropout modules
    of a segment from the one after them (:func:`depthlab.torch.pooling.backward`)."""
    for b, din, dout in reversed(items):
        g, t = pooling.backward(b, g, t, din, dout)
    return g, t


def _backward(rows: list[dict], grad: list[float], j: int, g_out: float,
              v_of_a: tuple[np.ndarray, np.ndarray] | None = None
              ) -> tuple[float, pooling.Table | None]:
    """``Var(dL/ds_j) = Var(dL/da_j) E[f_j'^2]`` (through BN as in :func:`_forward`); returns
    ``Var(dL/d input of layer j)`` = ``m_j v_j Var(dL/ds_j)``, taken back through the
    pooling/dropout modules before the layer (mean, and table of the unit's value where it
    depends on it: after max pooling). With ``v_of_a`` (the output
    feeds identity skips, whose gradient depends on the unit's own value ``a``):
    ``E[gamma^2 f'(s)^2 Var(dL/da | a = f(s))] / (qb + eps)`` (no BN: ``gamma = 1``, no
    division) instead of the product of the means."""
    if v_of_a is None:
        grad[j] = g_out * rows[j]["dsq"]
    else:
        s_nodes, w, g2, scale = rows[j]["nodes"]
        a, d = _apply(rows[j]["spec"], s_nodes)
        grad[j] = scale * _dot(w, g2 * d * d * np.interp(a, v_of_a[0], v_of_a[1]))
    return _between_backward(rows[j]["between"], rows[j]["fan_out"] * rows[j]["v"] * grad[j],
                             None)


def _path_forward(layers: list[dict], state: tuple, rows: list[dict]) -> tuple:
    for layer in layers:
        state = _forward(layer, state, rows)
    return state


def _path_backward(rows: list[dict], grad: list[float], first: int, last: int,
                   g: float) -> float:
    t = None
    for j in range(last - 1, first - 1, -1):
        g, t = _backward(rows, grad, j, g, t)
    return g


def _tap_counts(module: nn.Module, in_shape: Sequence[int] | None
                ) -> tuple[float, float, int, int]:
    """Zero padding: ``N_k`` = number of output positions at which kernel tap ``k`` reads
    inside the input. Returns ``(sum_k N_k, sum_k N_k^2, P_out, P_in)`` (products over the
    spatial dimensions); without zero padding (or without a known input shape) every tap is
    always inside (``N_k = P_out``)."""
    k = [int(d) for d in module.weight.shape[2:]]
    if in_shape is None or len(in_shape) < len(k):
        return float(math.prod(k)), float(math.prod(k)), 1, math.prod(module.stride)
    size = [int(d) for d in in_shape[-len(k):]]
    stride, dil = list(module.stride), list(module.dilation)
    pad = module.padding
    if pad == "valid":
        pads = [(0, 0)] * len(k)
    elif pad == "same":  # torch pads d (k - 1) in all, the odd one on the right
        pads = [(d * (kk - 1) // 2, d * (kk - 1) - d * (kk - 1) // 2) for d, kk in zip(dil, k)]
    else:
        pads = [(int(p), int(p)) for p in pad]
    s1 = s2 = 1.0
    p_out = p_in = 1
    zeros = module.padding_mode == "zeros"
    for L, K, S, (P, P_right), D in zip(size, k, stride, pads, dil):
        o = (L + P + P_right - D * (K - 1) - 1) // S + 1
        if o <= 0:
            raise ValueError(f"the input of {type(module).__name__} is too small for its kernel")
        pos = np.arange(o)[:, None] * S - P + np.arange(K)[None, :] * D  # input index read
        n_k = ((pos >= 0) & (pos < L)).sum(0) if zeros else np.full(K, o)
        s1, s2 = s1 * float(n_k.sum()), s2 * float((n_k * n_k).sum())
        p_out, p_in = p_out * o, p_in * L
    return s1, s2, p_out, p_in


def _tap_matrices(module: nn.Module, in_shape: Sequence[int] | None
                  ) -> list[np.ndarray] | None:
    """Per spatial dimension of a zero-padded conv, ``M[o, i]`` = the number of its kernel's taps
    by which output position ``o`` reads input position ``i`` (the conv's tap count map is
    their Kronecker product); ``None`` for a Linear, without zero padding (or with no padding at
    all) or an unknown input shape."""
    if not isinstance(module, _CONV) or in_shape is None or module.padding_mode != "zeros":
        return None
    k = [int(d) for d in module.weight.shape[2:]]
    if len(in_shape) < len(k):
        return None
    pad = module.padding
    if pad == "valid":
        return None
    if pad == "same":
        pads = [d * (kk - 1) // 2 for d, kk in zip(module.dilation, k)]
    else:
        pads = [int(q) for q in pad]
    if not any(pads):
        return None
    mats = []
    for L, K, S, P, D in zip([int(d) for d in in_shape[-len(k):]], k, module.stride, pads,
                             module.dilation):
        o = (L + 2 * P - D * (K - 1) - 1) // S + 1 if pad != "same" else L
        if o <= 0:
            return None
        pos = np.arange(o)[:, None] * S - P + np.arange(K)[None, :] * D
        mm = np.zeros((o, L))
        for col in range(K):
            ok = (pos[:, col] >= 0) & (pos[:, col] < L)
            np.add.at(mm, (np.arange(o)[ok], pos[ok, col]), 1.0)
        mats.append(mm)
    return mats


def _along(mats: list[np.ndarray], u: np.ndarray, transpose: bool = False) -> np.ndarray:
    """The tap count map of :func:`_tap_matrices` (or its transpose) applied to a per-position
    map ``u``, one spatial dimension at a time."""
    for d, mm in enumerate(mats):
        u = np.moveaxis(np.tensordot(mm.T if transpose else mm, u, axes=([1], [d])), 0, d)
    return u


def _fans(module: nn.Module, in_shape: Sequence[int] | None = None
          ) -> tuple[float, float, float]:
    """(fan-in of an output entry, number of outputs an input entry feeds, mean spread).

    Linear: ``in_features``, ``out_features``, 0. Conv (``c_in = in_channels / groups``,
    ``N_k`` as in :func:`_tap_counts`): fan-in ``c_in sum_k N_k / P_out`` (averaged over the
    output positions; a border position of a zero-padded conv reads fewer taps), fan-out
    ``out_channels / groups * sum_k N_k / P_in``; the spread ``c_in (sum_k N_k / P_out -
    sum_k N_k^2 / P_out^2)`` is ``E_W`` of the variance over output positions of a unit's
    mean ``E[a] sum_{valid taps} W``, in units of ``v E[a]^2``: zero padding makes the unit's
    mean depend on the position, which adds to the batch variance BatchNorm divides by."""
    w = module.weight
    if isinstance(module, nn.Linear):
        return float(w.shape[1]), float(w.shape[0]), 0.0
    groups = int(module.groups)
    s1, s2, p_out, p_in = _tap_counts(module, in_shape)
    c_in = int(w.shape[1])
    fan_in = c_in * s1 / p_out
    spread = c_in * (s1 / p_out - s2 / (p_out * p_out))
    return fan_in, float(w.shape[0]) / groups * s1 / p_in, max(spread, 0.0)


def unsupported_layer(layers) -> str:
    """The refusal of the first of ``layers`` (``LayerInfo``) that is no ``Linear``/``Conv``
    layer, or ``""``."""
    for info in layers:
        if not isinstance(info.owner, (nn.Linear, *_CONV)):
            return (f"predict() supports chains of Linear/Conv layers; layer {info.name!r} is a "
                    f"{info.kind}")
    return ""


@keyword_hints
def predict(model: nn.Module, x: Any, y: Any = None,
            loss_fn: Callable[[Any, Any], torch.Tensor] | str | None = None,
            percentiles: Sequence[float] = ()) -> pd.DataFrame:
    """Predicted ``pre_std``, ``act_std`` and ``grad_pre_std`` per layer (see the module
    docstring) beside the values measured by :func:`depthlab.torch.probe` on ``(x, y)``
    (``value``; NaN without ``y``/``loss_fn``; ``loss_fn`` may be a loss name such as
    ``"cross_entropy"``, see :data:`depthlab.torch.probe.LOSSES`). ``x`` must be a floating
    tensor. Called inside ``torch.no_grad()`` or ``torch.inference_mode()`` it still traces the
    autograd graph it needs (inference tensors are copied)."""
    with torch.inference_mode(False), torch.enable_grad():
        x, y = (t.clone() if isinstance(t, torch.Tensor) and t.is_inference() else t
                for t in (x, y))
        return _predict(model, x, y, resolve_loss(loss_fn), percentiles)


_WEIGHT_HOOKS = frozenset({"WeightNorm", "SpectralNorm"})
"""The forward pre-hooks of the deprecated ``torch.nn.utils.weight_norm`` and
``torch.nn.utils.spectral_norm``, which compute a module's ``weight`` attribute from its
parameters at each forward."""


def _refresh_hook_weights(model: nn.Module) -> None:
    """Compute the ``weight`` of each module under the deprecated ``weight_norm`` /
    ``spectral_norm`` as its next forward will (their pre-hook, run here; the caller's
    :func:`~depthlab.torch.layers.untouched` puts the attribute and the buffers back): the
    attribute holds the weight of the last forward, so after ``load_state_dict`` (or a change of
    ``weight_g``) the theory used the old weights (``pre_std`` predicted 0.276 where the
    measurement is 0.817, magnitudes loaded 3x the initial ones)."""
    for m in model.modules():
        for hook in list(m._forward_pre_hooks.values()):
            if type(hook).__name__ in _WEIGHT_HOOKS and hasattr(hook, "name"):
                hook(m, ())


def _predict(model: nn.Module, x: Any, y: Any, loss_fn: Callable[[Any, Any], torch.Tensor] | None,
             percentiles: Sequence[float]) -> pd.DataFrame:
    check_model(model)  # before model.parameters(): a non-module was an AttributeError
    check_materialized(model)
    check_initialized(model)
    if (y is None) != (loss_fn is None):
        raise ValueError("give both y and loss_fn (to measure and anchor the gradient scale) "
                         "or neither")
    if loss_fn is not None and not callable(loss_fn):  # (it failed inside the forward's
        # bookkeeping: "'int' object is not callable"; dlt.probe said what was expected)
        raise TypeError(f"loss_fn must be callable (output, y) -> scalar tensor, or a loss "
                        f"name, got {type(loss_fn).__name__}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a floating-point tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype} (predict() "
                        "propagates variances from real-valued inputs; token ids into an "
                        "Embedding are not supported)")
    check_batch(x)
    if x.dim() < 2:
        raise ValueError(f"x must be a batch of examples (N, features...), got shape "
                         f"{tuple(x.shape)}: its entries were taken for the examples "
                         "(x[None] is one example)")
    bad = int((~torch.isfinite(x.detach())).sum())
    if bad:
        raise ValueError(f"x has {bad} non-finite entries (NaN or inf) of {x.numel()}; expected "
                         "finite inputs (predict() propagates their mean and variance)")
    for name, prm in model.named_parameters():  # a diverged model: an inf weight gave act_std
        # and grad_pre_std 0.0 and the next layer's pre_std 0.50 beside NaN measurements
        if prm.is_floating_point():
            bad = int((~torch.isfinite(prm.detach())).sum())
            if bad:
                raise ValueError(f"parameter {name!r} holds {bad} non-finite value"
                                 f"{'s' if bad > 1 else ''} (NaN or inf) of {prm.numel()} (a "
                                 "diverged or corrupted model); expected finite weights "
                                 "(predict() propagates their mean and variance)")
    wdtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), x.dtype)
    if x.dtype != wdtype:
        raise TypeError(f"x has dtype {x.dtype} but the model's weights are {wdtype}; expected "
                        f"x of the model's dtype (x.to({wdtype}))")
    segments = chain(model, x, y, loss_fn)
    with torch.no_grad(), untouched(model):  # reading a parametrized weight (spectral_norm
        _refresh_hook_weights(model)         # in training mode) updates its buffers
        x64 = x.detach().to(torch.float64)
        bvar = float(x64.var(dim=0, unbiased=False).mean()) if x64.shape[0] > 1 else 0.0
        sq0, mean0 = float(x64.pow(2).mean()), float(x64.mean())
        state = (sq0, mean0, bvar, _gauss_dist(None, sq0 - mean0 ** 2, mean0))
        rows, grad = _run(segments, state)
        fin = _finite_units(rows)
        groups = _input_groups(x64)
        if len(groups) > 1:  # after the whole batch's run: BatchNorm's variances are known
            rows, grad = _combine([(w, *_run(segments, st)) for w, st in groups])
    measured = None
    scale = 1.0
    top_mean_sq = 0.0
    if y is not None:
        measured = probe(model, x, y, loss_fn, percentiles=percentiles)
        top = measured[(measured.layer == rows[-1]["layer"])
                       & (measured.quantity == "grad_pre_std")]["value"]
        if len(top) and grad[-1] > 0:
            # Var(dL/da) below the last layer is m v E[g^2], its mean included
            g_mean = (segments[-1].get("top_grad") or (0.0, 0.0))[0]
            top_mean_sq = g_mean * g_mean
            scale = (float(top.iloc[0]) ** 2 + top_mean_sq) / grad[-1]
    out = []
    for j, (r, g) in enumerate(zip(rows, grad)):
        g_sq = g * scale
        if j == len(rows) - 1:  # the anchor: its std is the measured one, the mean left out
            g_sq = max(g_sq - top_mean_sq, 0.0)
        q_fin, a_fin = fin[j]
        preds = [("pre_std", math.sqrt(max(r["q"] - q_fin, 0.0))),
                 ("grad_pre_std", math.sqrt(g_sq))]
        if r["act"]:
            preds.insert(1, ("act_std", math.sqrt(max(r["act_var"] - a_fin, 0.0))))
        for q, p in preds:
            out.append((0, r["layer"], r["module"], q, p))
    df = pd.DataFrame(out, columns=["step", "layer", "module", "quantity", "predicted"])
    if measured is not None:
        df = df.merge(measured[["layer", "quantity", "value"]], on=["layer", "quantity"],
                      how="left")
    else:
        df["value"] = math.nan
    df = df[["step", "layer", "module", "quantity", "value", "predicted"]]
    df = df.astype({"step": "int64", "layer": "int64", "value": "float64",
                    "predicted": "float64"})
    pools = sorted({b.label for seg in segments for b in _all_betweens(seg)
                    if b.kind != "dropout"})
    df.attrs["approximation"] = (
        f"pooling windows taken as independent draws ({', '.join(pools)}): neighbouring "
        "positions are correlated, so the layers near a pool are predicted less exactly"
        if pools else "")
    return df


def _run(segments: list[dict], state: tuple) -> tuple[list[dict], list[float]]:
    """The rows of the forward pass from the input ``state`` and ``Var(dL/ds)`` per row
    (relative: ``Var(dL/da) = 1`` at the last segment's output)."""
    rows: list[dict] = []
    prof = None  # E[a^2] per position (mean 1) out of a zero-padded conv chain
    for seg in segments:
        if seg["kind"] == "layer":
            seg["_prof_in"] = prof
            state = _forward(seg, state, rows)
            prof = seg.pop("_prof_out", None)
            continue
        prof = None
        state = _between_forward(seg, state)
        first = len(rows)
        entry = state[3]
        _, _, a_bvar, (av, aw) = _path_forward(seg["layers"], state, rows)
        mid = len(rows)
        _, _, b_bvar, (bv, bw) = _path_forward(seg["shortcut"], state, rows)
        # x + F(x) (or P(x) + F(x)): the paths are independent at init (independent
        # weights), so a unit's value is the sum of two independent values: the
        # distribution of the sum (a convolution on the nodes; the skip keeps e.g. a ReLU
        # output's skewed, non-negative shape), batch variances add
        ssum = (av[:, None] + bv[None, :]).ravel()
        wsum = (aw[:, None] * bw[None, :]).ravel()
        pv, pd_ = _apply(seg["post"], ssum)
        p_mean, p_sq = _dot(wsum, pv), _dot(wsum, pv * pv)
        post_dsq = _dot(wsum, pd_ * pd_)
        p_bvar = p_sq - p_mean ** 2 if seg["post"] is not None else a_bvar + b_bvar
        state = (p_sq, p_mean, max(p_bvar, 0.0), pooling.compress(pv, wsum))
        seg["_rows"] = (first, mid, len(rows), post_dsq)
        seg["_dist"] = (entry, (av, aw), (bv, bw))
    # backward: G = Var(dL/d output of the current segment), 1 at the last layer's output
    grad = [0.0] * len(rows)
    g_out = 1.0
    v_of_x = None  # Var(dL/dx | x) on the nodes of the stream's distribution (identity skips)
    g_prof = None  # Var(dL/ds) per position (mean 1) in a zero-padded conv chain
    k = len(rows)
    for seg in reversed(segments):
        if seg["kind"] == "layer":
            k -= 1
            # a weight layer mixes units: no dependence on one unit's value, unless max
            # pooling before it sends the gradient to the largest entries
            g_out, v_of_x = _backward(rows, grad, k, g_out, v_of_x)
            mats = rows[k].get("mats")
            if mats is not None:  # zero padding: fewer outputs send a gradient to the border
                ones = np.ones([mm.shape[0] for mm in mats])
                gp = g_prof if g_prof is not None and g_prof.shape == ones.shape else ones
                a1, ag = _along(mats, ones, True), _along(mats, gp, True)
                g_out *= float(ag.mean()) / float(a1.mean())
                plain_below = k > 0 and rows[k - 1].get("plain") and not rows[k]["between"]
                d_prof = rows[k - 1]["d_prof"] if plain_below else None
                if d_prof is not None and d_prof.shape == ag.shape:  # E f'^2 per position
                    ag = ag * d_prof
                g_prof = ag / float(ag.mean()) if plain_below and ag.mean() > 0 else None
            else:
                g_prof = None
            continue
        g_prof = None
        first, mid, last, _ = seg["_rows"]
        (xv, xw), (fv, fw), _ = seg["_dist"]
        identity = mid == last
        if identity:  # y = post(x + F), F independent of x: condition on the unit's x
            sv = xv[:, None] + fv[None, :]
        else:  # y = post(P(x) + F): both independent of the unit's x
            sv = (seg["_dist"][2][0][:, None] + fv[None, :])
            xw = seg["_dist"][2][1]
        yv, dv = _apply(seg["post"], sv)
        after = (g_out if v_of_x is None else np.interp(yv, v_of_x[0], v_of_x[1]))
        inner = (dv * dv * after * fw[None, :]).sum(1)  # E[f'(s)^2 Var(dL/dy | y) | x]
        g_pre = _dot(xw, inner)
        # both paths: the branch and the shortcut (the identity when it has no layers)
        g_branch = _path_backward(rows, grad, first, mid, g_pre)
        g_short = _path_backward(rows, grad, mid, last, g_pre)
        g_out = g_branch + g_short
        v_of_x = pooling.table(xv, inner + g_branch) if identity else None
        g_out, v_of_x = _between_backward(seg["_between"], g_out, v_of_x)
        k = first
    return rows, grad


GROUPS = 4
"""Groups of examples (by quantiles of their mean square) that :func:`predict` propagates
separately (:func:`_input_groups`)."""
_SAME = 0.02


def _input_groups(x64: torch.Tensor) -> list[tuple[float, tuple]]:
    """The batch as at most :data:`GROUPS` groups of examples of similar mean square
    ``|x_i|^2 / d`` (equal counts, by quantiles), each with its weight (its share of the
    batch) and its input state ``(E[x^2], E[x], E|x - mean_batch(x)|^2 / d, distribution)``
    over its examples. An activation whose ``E f(s)^2`` is not proportional to ``Var(s)``
    (tanh, sigmoid, gelu, Tanhshrink) gives a batch of varied example lengths other moments
    than one example of the average length (``E_i[E f(sqrt(q_i) z)^2] !=
    E f(sqrt(E q_i) z)^2``); for ReLU and linear layers without biases' or BatchNorm's
    offsets the two agree. No split (an empty list) for one example or when the examples'
    mean squares vary by less than :data:`_SAME` relative (std / mean): the difference is
    second order in that spread (``f''(q) Var(q_i) / 2``)."""
    n = int(x64.shape[0])
    flat = x64.reshape(n, -1)
    sq = flat.pow(2).mean(1).cpu().numpy()
    if n < 2 or sq.std() <= _SAME * sq.mean():
        return []
    means = flat.mean(1).cpu().numpy()
    cen = (flat - flat.mean(0, keepdim=True)).pow(2).mean(1).cpu().numpy()
    out = []
    for idx in np.array_split(np.argsort(sq, kind="stable"), min(GROUPS, n)):
        sq_g, m_g = float(sq[idx].mean()), float(means[idx].mean())
        out.append((idx.size / n, (sq_g, m_g, float(cen[idx].mean()),
                                   _gauss_dist(None, max(sq_g - m_g * m_g, 0.0), m_g))))
    return out


def _combine(runs: list[tuple[float, list[dict], list[float]]]
             ) -> tuple[list[dict], list[float]]:
    """One row per layer from the groups' runs (weights ``w_g``): ``Var(s)`` over the batch
    ``= sum_g w_g (q_g + shift_g^2) - (sum_g w_g shift_g)^2`` (the groups' means differ),
    ``Var(a) = sum_g w_g E_g[a^2] - (sum_g w_g E_g[a])^2``, ``Var(dL/ds) = sum_g w_g
    Var_g(dL/ds)`` (each group's gradient from ``Var(dL/da) = 1`` at the output)."""
    w = np.array([r[0] for r in runs])
    rows = []
    for j, row in enumerate(runs[0][1]):
        col = {k: np.array([r[1][j][k] for r in runs]) for k in ("q", "shift", "sq", "mean")}
        m = float(w @ col["shift"])
        am = float(w @ col["mean"])
        rows.append({**row, "q": max(float(w @ (col["q"] + col["shift"] ** 2)) - m * m, 0.0),
                     "act_var": max(float(w @ col["sq"]) - am * am, 0.0)})
    grad = [float(w @ np.array([r[2][j] for r in runs])) for j in range(len(rows))]
    return rows, grad


def _all_betweens(seg: dict) -> list[pooling.Between]:
    """The pooling/dropout modules before a segment and inside a block's paths."""
    inner = [b for s in (*seg.get("layers", ()), *seg.get("shortcut", ()))
             for b in s.get("between", ())]
    return [*seg.get("between", ()), *inner]


def theory_rows(model: nn.Module, x: torch.Tensor) -> tuple[list[dict[str, Any]] | None, str]:
    """:func:`predict` of ``model`` on the inputs ``x`` as the theory rows a report draws dashed
    beside the measurement (``layer``, ``grad_pre_var`` relative to the last layer,
    ``act_var``; the report scales the gradient to the run's measured top layer) and a note;
    ``(None, why)`` when the model is not a chain the theory covers (attention, recurrent
    layers, pooling other than average and max pooling, ...); the note says where pooling
    windows were taken as independent. The model, its gradients, buffers and the random
    number generators are left as they were (:func:`predict` runs isolated)."""
    try:
        df = predict(model, x)
    except (ValueError, TypeError, RuntimeError) as exc:
        return None, f"no theory: {exc}"
    wide = df.pivot_table(index="layer", columns="quantity", values="predicted")
    rows = []
    for layer, r in wide.iterrows():
        act = r.get("act_std", math.nan)
        rows.append({"layer": int(layer), "grad_pre_var": float(r["grad_pre_std"]) ** 2,
                     "act_var": float(act) ** 2 if math.isfinite(act) else None})
    note = "theory: depthlab.torch.predict (variance propagation from the actual weights)"
    extra = df.attrs.get("approximation")
    return rows, f"{note}; {extra}" if extra else note
