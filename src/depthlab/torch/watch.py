"""``Watch``: per-layer statistics of a ``torch.nn.Module`` inside the user's own training loop.

::

    watch = Watch(model, every=10, out="runs/")
    for x, y in loader:
        opt.zero_grad(); loss = loss_fn(model(x), y); loss.backward()
        watch.step(loss)          # after backward, before opt.step()
        opt.step()
    watch.close()                 # hooks removed; the run stored in runs/depthlab.db
    table = watch.frame()         # step, layer, module, quantity, value

Step ``n`` is the ``n``-th call of :meth:`Watch.step` (0-based): the model after ``n`` optimizer
updates, measured on that step's mini-batch (the forward/backward that produced ``loss``).
Steps ``0, every, 2 every, ...`` are recorded with the quantities of :mod:`depthlab.torch.probe`
(``loss`` at layer 0) plus ``update_ratio`` = ``||W_n - W_{n-1}|| / ||W_{n-1}||`` (Frobenius
norms over the layer's weights), as in :class:`depthlab.probes.ProbeRecorder`.

Cost. The hooks are installed only for the forward/backward of a recorded step (at the end of
the preceding ``step()`` call) and removed right after it, so unrecorded steps run the model
without any hook; their ``step()`` keeps a reference to the detached loss and, before a
recorded step, copies the weights (for the update ratio). Statistics are computed on the
model's device and copied to the host once per recorded step (together with the losses of the
steps since the last record). Training is unchanged: hooks only read tensors, never draw
random numbers, never write a gradient.

The last forward of the model through which a backward ran before a recorded ``step()`` is the
one measured (a forward with gradients but without a backward, such as a validation pass
without ``no_grad``, is not; with none, the last forward), pooled with the forwards before it
that the same backward ran through (a siamese pair ``model(a)``, ``model(b)`` under one loss; a
watched submodule that the model calls in a loop: every call), as :func:`~depthlab.torch.probe`
pools a module's calls; with gradient accumulation (a backward per micro-batch) the layer
gradients are those of the last micro-batch (``weight_grad_*`` read ``.grad``, the
accumulated sum). A forward without gradients (validation under ``no_grad`` or
``inference_mode``) and a :func:`~depthlab.torch.probe` inside the loop are never the one
measured. A recorded ``step()`` without a backward since the previous call is a ValueError;
several backward passes through the measured forward (``retain_graph``) are warned about.
Copies of the model (``copy.deepcopy``, ``torch.save``) made while the hooks are on carry inert
hooks only.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import math
import numbers
import operator
import os
import sys
import time
import warnings
import weakref
from array import array
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..atomic import expand_home
from ..probes.stats import check_percentiles
from ..validators import keyword_hints, positive_int, run_name
from .accumulators import NORM_HIGH, NORM_LOW, norm_dtype, scaled_norm, stat_dtype, update_ratio
from .chain import unsupported_layer
from .hooks import Recording
from .layers import _attributes, _put_back, check_materialized, check_nonempty_weights, none_ran
from .predict import theory_rows
from .probe import COLUMNS, check_loss

if TYPE_CHECKING:
    from ..experiments.store import RunRecord

__all__ = ["Watch"]


GRADIENT_ROWS = frozenset({"grad_pre_std", "grad_pre_absmean", "block_grad_std"})
"""Rows measured on the gradients the backward passes through the modules (hooks)."""
PENDING_LOSSES = 4096
"""The losses of at most this many unrecorded steps wait on the device: then they are copied
to the host at once (a run with ``every`` in the millions kept one tensor, ~270 bytes, per
step until the next record)."""
SCALED_NAMED = 32
"""Without ``scaler=``: at most this many steps recorded before the first optimizer step of the
watched weights are named by the warning of a GradScaler found then (Watch._adopt_scaler)."""
WEIGHT_GRADIENT_ROWS = frozenset({"weight_grad_std", "weight_grad_absmean"})
"""Rows measured on the parameters' ``.grad``."""


def _scaler_state(scaler: Any, optimizers: _OptimizersOf | None = None
                  ) -> tuple[float, bool | set[int]]:
    """``(S, unscaled)`` of a ``torch.amp.GradScaler`` between a backward and its
    ``scaler.update()``: the factor ``S`` the backward's gradients carry (``get_scale()``; 1
    when disabled or before the first ``scaler.scale(loss)``: a scaler passed to a loop that
    scales no loss, such as bf16 autocast's) and which ``.grad`` are already divided by it:
    those of the parameters of an optimizer that ``scaler.unscale_`` took, or that
    ``scaler.step`` stepped (it unscales first, fused optimizers too), as the ids of those
    parameters. Each optimizer is its own: unscaling a GAN's discriminator optimizer (to clip
    it) before the generator's record leaves the generator's ``.grad`` scaled (its rows were
    read unscaled, S times the gradient), and so does unscaling one of two optimizers of one
    model for the other's weights. A ``Watch.step`` between ``scaler.step`` and
    ``scaler.update`` reads the stepped weights' ``.grad`` unscaled (divided again, it was 1/S
    of the gradient). ``True`` (all unscaled): the scaler is disabled, or an optimizer it
    unscaled is not found among the live objects (its parameters unknown: the rule before
    per-optimizer states, unscale all or none); without ``optimizers``, whether any optimizer
    was unscaled."""
    if not scaler.is_enabled() or getattr(scaler, "_scale", 0.0) is None:
        # disabled, or no scaler.scale(loss) yet (its scale tensor is made at the first):
        # no backward ran on a scaled loss, get_scale() would be the initial scale
        return 1.0, True
    from torch.amp.grad_scaler import OptState

    states = getattr(scaler, "_per_optimizer_states", {})
    done = [key for key, st in states.items()
            if st.get("stage") in (OptState.UNSCALED, OptState.STEPPED)]
    if optimizers is None:
        return float(scaler.get_scale()), any(
            st.get("stage") is OptState.UNSCALED for st in states.values())
    unscaled: set[int] = set()
    if done:
        # an optimizer whose steps were all skipped so far (or one only unscaled) never ran the
        # step pre-hook: found among the live objects, once
        optimizers.learn(done)
        for key in done:
            opt = optimizers.live(key)
            if opt is None:
                if states[key].get("stage") is OptState.UNSCALED:
                    return float(scaler.get_scale()), True
                continue  # stepped, not found: not one of the watched weights' (see learn)
            unscaled.update(id(p) for group in opt.param_groups for p in group["params"])
    return float(scaler.get_scale()), unscaled


class _OptimizersOf:
    """A global optimizer step pre-hook (``torch.optim.optimizer.
    register_optimizer_step_pre_hook``) that notes which optimizers step the weights of a
    Watch with a ``scaler`` (``scaler.step`` calls ``optimizer.step``): ``seen`` maps
    ``id(optimizer)`` to (a weak reference to it, whether it holds one of the weights);
    :meth:`mine` gives the ids of the live ones that do. The Watch is held weakly (a global
    hook). While the Watch is armed, a step of such an optimizer marks the gradients it read
    (``Watch._stepped_marks``): unchanged at the record, the optimizer stepped before
    ``Watch.step`` (after ``scaler.update()``: refused; before it, or without a scaler: warned, the
    weight rows being those after the update)."""

    def __init__(self, watch: Watch) -> None:
        self.watch = weakref.ref(watch)
        self.seen: dict[int, tuple[weakref.ref, bool]] = {}
        self.limit = 64

    def __call__(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        watch = self.watch()
        if watch is None:
            return
        if watch.scaler is None:
            armed = watch._rec.armed
            # the weights' first step after a record (or an armed one): by a GradScaler not
            # given to the Watch? (Watch._adopt_scaler)
            if (armed or watch._scaled_last is not None) and self.note(opt):
                watch._adopt_scaler()
            if watch.scaler is None and (watch._warned_order or not armed):
                return  # without a scaler only the armed steps matter (_check_step_order)
        holds = self.note(opt)
        if holds and watch._rec.armed:
            # the gradients this step of the watched weights reads: unchanged at the record,
            # it ran before Watch.step (see Watch._unscaled, Watch._check_step_order)
            watch._stepped_marks = watch._marks()

    def note(self, opt: torch.optim.Optimizer) -> bool:
        """Note ``opt``; whether it holds one of the watched weights."""
        entry = self.seen.get(id(opt))
        if entry is not None and entry[0]() is opt:
            return entry[1]
        watch = self.watch()
        if watch is None:
            return False
        if len(self.seen) >= self.limit:  # an optimizer made per step: the dead ones go
            self.seen = {k: v for k, v in self.seen.items() if v[0]() is not None}
            self.limit = max(64, 2 * len(self.seen))  # amortized: many alive at once
        ids = {id(p) for _, p in watch._weights}
        holds = any(id(p) in ids for group in opt.param_groups for p in group["params"])
        self.seen[id(opt)] = (weakref.ref(opt), holds)
        return holds

    def learn(self, keys: Collection[int]) -> None:
        """Note the optimizers of ``keys`` (ids) not seen yet: ``scaler.step`` unscales the
        gradients and then skips ``optimizer.step`` when one is inf/NaN, so an optimizer whose
        steps were all skipped so far (the first steps of fp16 training, at the scaler's
        initial scale) never ran the step pre-hook, and its unscaled ``.grad`` was divided by
        the scale again (1/S of the gradient). Found among the live objects (only then)."""
        unknown = {k for k in keys if (e := self.seen.get(k)) is None or e[0]() is None}
        if not unknown:
            return
        for obj in gc.get_objects():
            if id(obj) in unknown and isinstance(obj, torch.optim.Optimizer):
                self.note(obj)

    def mine(self) -> set[int]:
        return {key for key, (ref, holds) in self.seen.items() if holds and ref() is not None}

    def live(self, key: int) -> torch.optim.Optimizer | None:
        """The live optimizer of id ``key`` noted so far, or None."""
        entry = self.seen.get(key)
        return entry[0]() if entry is not None else None


def _stepping_scaler() -> tuple[Any, int]:
    """The ``torch.amp.GradScaler`` whose ``scaler.step(opt)`` is calling the optimizer step
    in progress (found on the call stack, a few frames up from an optimizer step pre-hook), or
    None (the optimizer was stepped directly); with the ``stacklevel`` of a warning from the
    caller of this function's caller that names the line calling ``scaler.step``."""
    frame, level, step = sys._getframe(2), 2, _SCALER_STEP[0]
    for _ in range(12):
        if frame is None:
            break
        if frame.f_code is step:
            scaler = frame.f_locals.get("self")
            return (scaler, level + 1) if isinstance(scaler, _SCALER_STEP[1]) else (None, 0)
        frame, level = frame.f_back, level + 1
    return None, 0


def _scaler_step() -> tuple[Any, type]:
    from torch.amp.grad_scaler import GradScaler

    return GradScaler.step.__code__, GradScaler


_SCALER_STEP = _scaler_step()
"""``GradScaler.step``'s code object (what :func:`_stepping_scaler` looks for) and the class."""


def _nearer_one(recorded: float, now: float, scale: float) -> bool:
    """Whether ``recorded / now`` is nearer to 1 than to ``scale`` on a log scale
    (``|log r| < |log(r / S)|``): a gradient statistic read unscaled (``r = 1``, or ``1 / c``
    after a ``clip_grad_norm_`` by ``c`` since) rather than scaled (``r = S``, or ``S / c``).
    Equal values (zeros too) are; a non-finite or non-positive ratio is not."""
    if recorded == now:
        return True
    ratio = recorded / now if now else math.inf
    if not (0.0 < ratio < math.inf):
        return False
    return abs(math.log(ratio)) < abs(math.log(ratio / scale))


def _error_text(error: BaseException, steps: int) -> str:
    """The stored text of the exception that ended a watched loop: ``Type: message``; one
    without a message says what happened (a Ctrl-C was stored as ``KeyboardInterrupt: ``)."""
    message = str(error)
    if not message:
        message = (f"interrupted (Ctrl-C) after {steps} steps"
                   if isinstance(error, KeyboardInterrupt) else f"raised after {steps} steps")
    return f"{type(error).__name__}: {message}"


def _clean_exit(error: BaseException | None) -> bool:
    """Whether the exception that left a ``with`` block ends the run as a ``break`` would:
    ``sys.exit(0)``/``sys.exit()`` (early stopping in a script) or ``GeneratorExit`` (a
    generator-based loop whose consumer stopped). Stored as ``failed`` before ("SystemExit:
    0"); an exit with an error status (``sys.exit(1)``, ``sys.exit("message")``) still is."""
    return isinstance(error, GeneratorExit) or (isinstance(error, SystemExit)
                                                 and error.code in (0, None))


def _graded(w: torch.Tensor) -> bool:
    """Whether parameter ``w`` holds a gradient with a nonzero entry (a sparse one too)."""
    g = w.grad
    if g is None:
        return False
    if g.is_sparse:
        g = g.coalesce().values()
    return bool(g.any())


def _kept(loss: torch.Tensor) -> torch.Tensor:
    """The value of ``loss`` now, kept until the losses are copied to the host: a detached view
    of a fresh autograd result (``grad_fn`` set, never written in place: version 0, not a
    view), which no loop writes again; else a copy. A running-loss tensor that the loop
    reuses (``total.zero_(); total += part.detach()`` per micro-batch, or ``total += part``
    in the graph) gave every unrecorded step the value it held at the next record."""
    value = loss.detach()
    # is_leaf: grad_fn is None, without building the node's Python object (a third of this
    # function's time on an unrecorded step, after the backward left the caches cold)
    if loss.is_leaf or loss._version != 0 or loss._is_view():
        value = value.clone()
    return value


def _array_loss(loss: np.ndarray) -> float:
    """The number a one-element NumPy array of real numbers holds (a 0-d array, as
    ``loss.detach().cpu().numpy()`` gives, or ``(1,)``, as a one-element tensor is taken); a
    ValueError naming the shape or dtype otherwise."""
    if loss.dtype.kind not in "fiu":
        raise ValueError(f"loss must be a number, got a NumPy array of dtype {loss.dtype}")
    if loss.size != 1:
        raise ValueError(f"the loss must be a scalar (one-element) array, got shape "
                         f"{loss.shape}; reduce it over the batch")
    return float(loss.reshape(()))


_NO_CHILDREN: dict[str, nn.Module] = {}
"""The saved children (:meth:`Watch._modules`) of every module that had none: one empty dict,
never written, shared by all leaves (a layer, an activation). :meth:`Watch._changed` compares
each module's ``_modules`` with its saved copy at the calls that record or arm, after a
backward and an optimizer step have left the copies out of the cache: an empty copy per leaf
was a cold read each (the 7 leaves of a 784-100-100-100-10 MLP: about 6 of the check's 43 us
per call on a loaded host), the shared one is read warm after the first."""


def _own_params(m: nn.Module) -> dict[str, Any] | None:
    """A copy of the parameters ``m`` registers itself (None when it has none): what
    :meth:`Watch._changed` compares (:func:`_same_params`) to find a re-assigned or
    re-registered parameter."""
    return dict(m._parameters) if m._parameters else None


def _same_params(now: dict[str, Any], saved: dict[str, Any] | None) -> bool:
    """Whether the module's parameter dict ``now`` holds the very objects of ``saved`` (a
    copy by :func:`_own_params`) under the same names in the same order: identity per entry
    (``operator.is_``, never a tensor's ``==``: a one-entry parameter replaced by an equal
    one is a change), at C speed (the lists of ``(name, id)`` built per module and compared
    were a third of this check)."""
    if saved is None:
        return not now
    return len(now) == len(saved) and all(map(operator.is_, now.values(), saved.values())) \
        and all(map(operator.eq, now, saved))


def _untouched(marks: list | None) -> bool:
    """Whether every weight of ``marks`` (:meth:`Watch._marks`) that a backward can give a
    gradient (``requires_grad`` now) still holds the very ``.grad`` it held then, unchanged
    (same storage, same version); False when none can. A weight frozen since
    (``requires_grad_(False)``: a BitFit phase training the biases only, with a new optimizer)
    keeps its last gradient, which no backward changes any more: it told of no step (every
    weight frozen, the record after a backward was refused as "called again without a
    backward")."""
    if not marks:
        return False
    live = False
    for p, ref, v in marks:  # stops at the first gradient changed (a backward ran: usual)
        if not p.requires_grad:
            continue
        g = p.grad
        if g is None or g._version != v or (s := ref()) is None or s is not _storage_of(g):
            return False
        live = True
    return live


def _storage_of(g: torch.Tensor) -> Any:
    """The storage object of ``g`` (one Python object per storage), or None (a tensor whose
    storage cannot be read: a wrapper subclass)."""
    try:
        return g.untyped_storage()
    except (RuntimeError, NotImplementedError, TypeError):
        return None


def _copy_no_grad(dst: list[torch.Tensor], src: list[torch.Tensor]) -> None:
    """``torch._foreach_copy_(dst, src)`` with gradients off, as under ``torch.no_grad()``,
    without that context manager's Python objects (entering it took about as long as copying
    the small layers' weights: a fifth of the snapshot at an arming step)."""
    on = torch.is_grad_enabled()
    torch._C._set_grad_enabled(False)
    try:
        torch._foreach_copy_(dst, src)
    finally:
        torch._C._set_grad_enabled(on)


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def _value(v: float) -> float:
    """The value of an extra row of one host number (the loss of a CPU step)."""
    return v


def _added(d: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``W0 = (W0 - W) + W`` in float64 from the snapshot overwritten by the difference."""
    return d.to(norm_dtype(d)) + w.detach().to(norm_dtype(d))


def _checked_ratio(parts: list, *norms: float) -> float:
    """:func:`~depthlab.torch.accumulators.update_ratio` (``sqrt(sum ||W_n - W_{n-1}||^2 /
    sum ||W_{n-1}||^2)``, scale free) of the host norms (``||W0||``, ``||W - W0||`` per weight
    tensor), where a ``||W0||`` is 0 or its square leaves float64's range (weights beyond
    ~1e154 or below ~1e-154), or a ``||W - W0||`` overflowed, both norms of that tensor taken
    again by
    :func:`~depthlab.torch.accumulators.scaled_norm` of ``W0`` and ``W - W0`` (``parts``: per
    tensor a callable giving ``W0`` and the difference; read at the record's transfer, before
    the optimizer step). The usual case: range comparisons only, no device read."""
    out = list(norms)
    for k, (w0, d) in enumerate(parts):
        n0, n1 = out[2 * k], out[2 * k + 1]
        if not (NORM_LOW <= n0 <= NORM_HIGH or n0 != n0) or n1 > NORM_HIGH:
            out[2 * k] = scaled_norm(w0(), n0)
            out[2 * k + 1] = scaled_norm(d, n1)
    return update_ratio(*out)


_CLOSED = ("{what} after close(): this Watch's hooks are removed and its run is ended; create a "
           "new dlt.Watch(model, ...) to record more steps (one Watch per run)")


class Watch:
    """Attach to a model; call :meth:`step` after each backward; :meth:`close` at the end.

    Parameters
    ----------
    model:
        A plain ``nn.Module`` (DataParallel and compiled modules are refused).
    every:
        Record every ``every``-th step (steps 0, every, 2 every, ...).
    out:
        A folder (created, with its store, here: an unusable one, a read-only or full store
        too, is a ValueError before any training): :meth:`close` stores the run in
        ``out/depthlab.db`` (a
        :class:`depthlab.experiments.store.RunRecord` that ``depthlab report out`` renders,
        layers labelled by module name). None keeps it in memory only.
    name:
        The run's name in the store (default: the model's class name); a blank name or one
        that is not UTF-8 text is a ValueError here, not at :meth:`close`.
    percentiles:
        ``pre_pK``/``act_pK`` percentiles to record, e.g.
        :data:`depthlab.probes.stats.PERCENTILES`. Default ``()``: none, because each costs
        a selection over every layer output on recorded steps (on a CPU ResNet-18 about as
        long as the training step itself); :func:`depthlab.torch.probe` records them by
        default.
    scaler:
        The ``torch.amp.GradScaler`` of a mixed-precision loop (``scaler.scale(loss)
        .backward()``; call :meth:`step` before ``scaler.step(opt)``): the gradient rows are
        divided by the scale that backward ran with, so they are the gradients of ``loss``
        itself (``weight_grad_*`` only when ``scaler.unscale_(opt)`` has not done so yet).
        Without it, a scaler whose ``scaler.step(opt)`` steps an optimizer of the watched
        weights right after a record (or while the hooks are on) is taken as this one from
        that record on (a RuntimeWarning says so; mixed precision switched on mid-run too):
        only the records after which the scaler skipped the step (inf gradients: no
        optimizer step ran) keep the factor ``scaler.get_scale()`` of then.
    theory:
        At the first recorded step, :func:`depthlab.torch.predict` of the model on that
        step's input (the first positional argument of its forward): :attr:`theory` (rows
        ``layer, grad_pre_var, act_var``; the gradient relative to the last layer), stored with
        the run, where the report draws it dashed beside the measured gradients and
        activations. One extra forward and backward, isolated (the model, its ``.grad``,
        buffers and random number generators are left as they were); None, with the reason in
        :attr:`theory_note`, for a model the theory does not cover (attention, recurrent
        layers, ...). ``False``: not computed. That forward and backward run the model's own
        hooks too (a hook that counts or logs calls sees one call more); what the forward does
        to the modules' own attributes (a call counter, a list it appends to, a cached tensor)
        is put back.
    """

    @keyword_hints(positional_hint="name, percentiles, scaler and theory are keywords: "
                   "Watch(model, 10, 'runs/', name='run1')")
    def __init__(self, model: nn.Module, every: int = 10, out: str | os.PathLike | None = None,
                 *, name: str | None = None,
                 percentiles: Sequence[float] = (), scaler: Any = None,
                 theory: bool = True) -> None:
        self.every = positive_int("every", every)
        name = run_name(name)  # before the store is made: a blank or non-UTF-8 name
        if not isinstance(theory, (bool, np.bool_)):
            raise TypeError(f"theory must be True or False, got {type(theory).__name__}")
        if isinstance(scaler, type):  # GradScaler without its parentheses: its methods
            # are attributes of the class too, and failed at the first record (no `self`)
            raise TypeError(f"scaler must be a torch.amp.GradScaler or None, got the class "
                            f"{scaler.__name__} itself; expected an instance "
                            f"(torch.amp.GradScaler('cuda'))")
        if scaler is not None and not (callable(getattr(scaler, "get_scale", None))
                                       and callable(getattr(scaler, "is_enabled", None))):
            raise TypeError(f"scaler must be a torch.amp.GradScaler or None, got "
                            f"{type(scaler).__name__}")
        self.scaler = scaler
        self._rec = Recording(model, check_percentiles(percentiles), maps=True)
        check_materialized(model)  # a 'meta' model: refused here, not at the first record
        self.model = model
        if out is not None and not isinstance(out, (str, os.PathLike)):
            raise TypeError(f"out must be a folder path or None, got {type(out).__name__}")
        if out is not None and not os.fspath(out).strip():  # Path("") is the working folder
            raise ValueError(f"out={out!r} is an empty path; expected a folder (e.g. 'runs/') "
                             "or None")
        if out is not None and "\x00" in os.fspath(out):  # no path holds one: the store's
            # os calls raised a bare "embedded null byte", naming neither out nor its value
            raise ValueError(f"out={out!r} holds a NUL character ('\\x00'), which no path "
                             "can; expected a folder (e.g. 'runs/') or None")
        # a relative folder is the one under the working directory of now, where the store is
        # made: a loop that changes directory (os.chdir, a notebook's %cd) stored the run in
        # another folder at close; "~/runs" is the home folder's, as the store reads it
        self.out = None if out is None else expand_home(out).absolute()
        if self.out is not None:  # an unusable folder fails now, not after the training
            from ..experiments.store import Store, StoreError

            try:  # opened and a scratch row written: a read-only or full store too
                with Store(self.out) as store:
                    store.check_writable()
            except StoreError as e:
                raise ValueError(f"out={str(out)!r} cannot hold the run: {e}") from None
        self.name = name if name is not None else type(model).__name__
        self._weights = [(info, p) for info in self._rec.layers for p in info.weights]
        self._structure = self._modules()
        self._calls = 0
        self._closed = False
        self._unstored = False  # closed with out, the store not written yet (or failed)
        self._ended: float | None = None  # when close() ended the run
        self._warned_empty = False
        self._warned_twice = False
        self._warned_no_grad = False
        self._warned_frozen = False  # no parameter of the model requires grad (said once)
        self._checked_unrun = False  # layers bypassed by the forward: looked for once
        self._grad_marks: list | None = None  # the gradients at the call before a record
        self._stepped_marks: list | None = None  # those an optimizer of the weights stepped on
        self._started = time.time()
        self._col_step = array("q")
        self._col_layer = array("i")
        self._col_module: list[str] = []
        self._col_q: list[str] = []
        self._col_value = array("d")
        self._loss_steps = array("q")
        self._loss_values = array("d")
        # the losses since the last record: detached tensors (_kept), copied to the host at
        # the record in one transfer, and host floats (the CPU loss of a step that records,
        # read in Watch.step on the CPU kernels' path)
        self._pending: list[torch.Tensor | float] = []
        self._snap: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._pairs: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}  # last snapshot
        self._buffers: dict[int, torch.Tensor] = {}
        # (buffers, parameters) of the last snapshot, for the next one's fused copy
        self._copy_lists: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        self._previous: dict[int, torch.Tensor] = {}  # id(parameter) -> its snapshot buffer
        self._snap_norms: dict[int, torch.Tensor] = {}  # ||W|| of the snapshot, when known
        # the map layers' weights (hooks.Recording's maps: F.linear(x, self.weight), a
        # ParameterList's h @ w, a tied table) before the next record: key -> (weight, copy)
        self._map_snap: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.run_id: str | None = None
        self._theory_rows: list[dict[str, Any]] | None = None
        self.theory_note = "no theory: not computed (theory=False)" if not theory else \
            "no theory: not computed yet (computed at the first recorded step)"
        self._theory_pending = self._rec.want_input = bool(theory)
        self._warned_order = False
        self._warned_zero = False
        # without scaler=: the steps recorded since the last optimizer step of the weights
        # (the first SCALED_NAMED) and the last one's (step, first row), which the next
        # optimizer step's GradScaler, if any, divides (Watch._adopt_scaler)
        self._scaled_records: list[int] = []
        self._scaled_last: tuple[int, int] | None = None
        # which optimizers step these weights (see _scaler_state), and whether one stepped
        # before Watch.step (_check_scaler_order, _check_step_order)
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        self._optimizers: _OptimizersOf | None = _OptimizersOf(self)
        self._optimizers_hook = register_optimizer_step_pre_hook(self._optimizers)
        # the gradients now: a first step whose forward ran while watched but no backward since
        # (their .grad an earlier backward's, from before the Watch) is refused as a later one
        # is (it was recorded)
        self._grad_marks = self._marks()
        self._rec.arm()  # step 0 is recorded

    # -- training loop -----------------------------------------------------------------------
    @property
    def steps_seen(self) -> int:
        """Number of :meth:`step` calls so far."""
        return self._calls

    def step(self, loss: torch.Tensor | float) -> None:
        """Mark the end of one training step's backward (call before ``optimizer.step()``).

        On a recorded call the ``weight_grad_*`` rows are of each weight's ``.grad`` as it is
        now (after ``clip_grad_norm_``: the clipped gradient), the ``grad_pre_*`` rows of
        ``dL/d(layer output)`` as the backward delivered it (before any clipping), and
        ``update_ratio = ||W_n - W_{n-1}|| / ||W_{n-1}||`` with ``W_{n-1}`` the weights at the
        previous call."""
        n = self._calls
        every = self.every
        if 0 < n % every < every - 1 and type(loss) is torch.Tensor and loss.ndim == 0 \
                and loss.dtype.is_floating_point and not loss.is_meta and not self._closed \
                and not self._rec._armed:
            # the usual unrecorded call (neither records nor arms, every >= 3; a 0-d floating
            # loss; the hooks off): the loss's value kept, nothing else. The general path
            # below does the same for it, after checks that cannot fire here
            pending = self._pending
            pending.append(_kept(loss))
            self._calls = n + 1
            if len(pending) >= PENDING_LOSSES:
                self._flush_losses()
            return
        if self._closed:
            raise RuntimeError(_CLOSED.format(what="Watch.step()"))
        if type(loss) is torch.Tensor and loss.ndim == 0 and loss.dtype.is_floating_point \
                and not loss.is_meta:
            # the usual case, checked in place. A step that records on the CPU kernels' path
            # reads its CPU loss now (no transfer: the record reads it anyway, twice before):
            # a host float, not a tensor kept and checked (_kept)
            value = (float(loss.detach()) if n % self.every == 0 and loss.is_cpu
                     and self._rec._wk is not None else _kept(loss))
        elif isinstance(loss, torch.Tensor):
            if loss.is_meta:  # no value: its .item() failed at the record, a torch message
                raise ValueError("Watch.step(loss) got a loss on the 'meta' device, which "
                                 "holds no value; pass the loss of the step's forward")
            value = _kept(check_loss(loss))
        elif isinstance(loss, numbers.Real) and not isinstance(loss, bool):  # numpy's too
            value = torch.tensor(float(loss), dtype=torch.float64)
        elif isinstance(loss, np.ndarray):  # loss.detach().cpu().numpy(): a 0-d array
            value = torch.tensor(_array_loss(loss), dtype=torch.float64)
        else:
            raise TypeError(f"loss must be a scalar tensor or a number, got "
                            f"{type(loss).__name__}")
        self._pending.append(value)
        if 0 < n % every < every - 1:  # neither records nor arms (every >= 3): nothing else
            if self._rec._armed:  # (the recorded step's hooks, still on after a refused call)
                self._rec.disarm()
            self._calls = n + 1
            if len(self._pending) >= PENDING_LOSSES:
                self._flush_losses()
            return
        if self._rec.grown:  # a module beside child layers found a layer by its forward
            # (hooks.Recording._holder_post: CLIP's visual.proj): its weights watched too
            self._rec.grown = False
            self._weights = [(info, p) for info in self._rec.layers for p in info.weights]
        refreshed = False
        # a module or weight added or replaced since the layers were found (checked on the
        # calls that record or arm only): found again after this call's record
        changed = ((n % self.every == 0 or (n + 1) % self.every == 0)
                   and self._changed())
        if n % self.every == 0:
            order = self._rec.order
            if changed:  # the record reads the model's weights, not the replaced ones
                self._rec.order = self._present_layers()
            try:
                refreshed = self._record(n, refresh=(n + 1) % self.every == 0,
                                         root=loss.grad_fn if type(loss) is torch.Tensor
                                         else None)
            except BaseException as exc:
                # a refused call (no backward since the previous one, ...) is not a step: its
                # loss was kept and given the number of the step before the next call's (two
                # losses at one step, the refused value at the next)
                if self._pending and self._pending[-1] is value:
                    self._pending.pop()
                if not isinstance(exc, Exception):  # a Ctrl-C part-way: the snapshot may
                    self._forget_snapshot()  # be read (overwritten by the difference)
                raise
            finally:
                self._rec.order = order
        # else: nothing ran while armed yet
        theory = n % self.every == 0 and self._theory_pending and bool(self._rec.order)
        try:
            if changed:
                self._relayer(n)
                refreshed = False
            if (n + 1) % self.every == 0:
                self._grad_marks = self._marks()
                self._snapshot(copy=not refreshed)
                # recorded in this call too (every=1): the snapshot's norms were just computed
                self._snap_norms = self._rec.weight_norms if n % self.every == 0 else {}
                self._rec.arm()
            elif self._rec.armed:
                self._rec.disarm()
        except BaseException:
            # a Ctrl-C after the record (in the snapshot): the step stays recorded and counted
            # once (the next call recorded the same step number again, its rows and loss
            # twice); before the next record, no update ratio (the snapshot half copied) and
            # the hooks on. A call that did not record is not a step: its loss is not kept.
            self._forget_snapshot()
            if n % self.every == 0:
                self._calls = n + 1
                self._grad_marks = None
                if (n + 1) % self.every == 0:
                    self._rec.arm()
            elif self._pending and self._pending[-1] is value:
                self._pending.pop()
            raise
        self._calls += 1
        if len(self._pending) >= PENDING_LOSSES:
            self._flush_losses()
        if theory:  # last: a Ctrl-C in its forward leaves this step recorded and counted once
            self._predict_theory()

    @property
    def theory(self) -> pd.DataFrame | None:
        """The prediction of the first recorded step (``layer, grad_pre_var, act_var``), or
        None (see :attr:`theory_note`)."""
        return None if self._theory_rows is None else pd.DataFrame(self._theory_rows)

    def _predict_theory(self) -> None:
        """:attr:`theory` from the recorded step's input, with Watch's own hooks off."""
        self._theory_pending = self._rec.want_input = False
        x, self._rec.first_input = self._rec.first_input, None
        if isinstance(x, torch.Tensor) and x.dim() >= 1 and x.shape[0] == 0:
            # an empty batch (a loader's last one) has nothing to predict from: the next
            # record's batch is taken (the note said 'x is an empty batch' for the whole run)
            self._theory_pending = self._rec.want_input = True
            return
        if x is None:
            kind = unsupported_layer(self._rec.ran_layers()) if self._rec.input_note else ""
            self.theory_note = f"no theory: {kind}" if kind else self._rec.input_note or (
                "no theory: the model itself did not run in the recorded step (the loop called "
                "its submodules)" if not self._rec.input_seen else "no theory: the model's "
                "forward got no tensor as its first positional argument")
            return
        armed = self._rec.armed
        self._rec.disarm()
        saved = _attributes(self.model)
        try:
            rows, self.theory_note = theory_rows(self.model, x)
        except Exception as exc:  # the theory is an addition: never the end of the training
            rows, self.theory_note = None, f"no theory: {type(exc).__name__}: {exc}"
        except BaseException:  # a Ctrl-C: the next record's input is taken
            self._theory_pending = self._rec.want_input = True
            raise
        finally:
            _put_back(saved)
            if armed:
                self._rec.arm()
        self._theory_rows = rows

    def _modules(self) -> list[tuple[nn.Module, dict, dict | None]]:
        """What the layers were found from: per module of the model, the module, a copy of its
        ``_modules`` dict (children by name; :data:`_NO_CHILDREN` for a module without any) and
        of its own parameters (:func:`_own_params`). Compared by :meth:`_changed` before the
        calls that record or arm (not on other steps)."""
        return [(m, dict(m._modules) or _NO_CHILDREN, _own_params(m))
                for m in self.model.modules()]

    def _changed(self) -> bool:
        """A module added, removed or replaced anywhere (every new module hangs in the
        ``_modules`` dict of one seen before: a dict comparison, identity first, per module) or
        a parameter re-assigned since :meth:`_modules`. One pass over the modules without
        building names (``named_modules`` made this check a twentieth of a recorded MLP
        step)."""
        for m, children, params in self._structure:
            try:
                if m._modules != children:
                    return True
            except Exception:  # a replaced child whose class defines an unusual __eq__
                return True
            if not _same_params(m._parameters, params):
                return True
        return False

    def _present_layers(self) -> list:
        """Before the record of a step at which the model's modules or weights changed: the
        layers that ran whose module is still the model's, each reading the weights its module
        has now (re-assigned by ``load_state_dict(assign=True)`` or ``layer.weight =
        nn.Parameter(...)``: the replaced ones are not the model's, and their ``.grad`` is an
        earlier step's; a layer whose weights were replaced gets no update ratio this time).
        A layer whose module was replaced or removed is left out of this record."""
        from .layers import weight_modules

        now = {(info.name, id(info.owner)): info.weights for info in weight_modules(self.model)}
        present = []
        for info in self._rec.order:
            weights = now.get((info.name, id(info.owner)))
            if weights is None:
                continue
            if len(weights) != len(info.weights) or any(
                    a is not b for a, b in zip(weights, info.weights)):
                info = dataclasses.replace(info, weights=weights)  # no snapshot: no ratio
            present.append(info)
        watched = {id(p) for _, p in self._weights}
        self._weights = [(info, p) for info in present for p in info.weights]
        live = {id(p) for _, p in self._weights}
        gone = watched - live
        if self._grad_marks:  # the replaced weights' gradients do not tell a backward ran
            # (a frozen-weights model's marks are of its other parameters: kept)
            self._grad_marks = [m for m in self._grad_marks if id(m[0]) not in gone]
        if self._stepped_marks:  # nor that an optimizer stepped on this step's gradients
            # (all weights re-assigned after an optimizer step, load_state_dict(assign=True)
            # and a new optimizer: their old .grad unchanged was refused as after
            # scaler.update())
            self._stepped_marks = [m for m in self._stepped_marks if id(m[0]) not in gone]
        return present

    def _relayer(self, n: int) -> None:
        """After call ``n``, find the layers again: the model's modules changed since they
        were found (a head replaced, a module added, a weight re-assigned). A layer under a
        name seen before keeps its number; a new one is numbered after the largest. Warns
        once per change; the snapshot for the next update ratio is taken anew."""
        old = self._rec
        old.disarm()
        rec = Recording(self.model, old.percentiles, maps=True)
        rec._map_at = dict(old._map_at)  # (the maps keep their places)
        before = {info.name: info.index for info in old.order}
        gone = sorted(set(before) - {info.name for info in rec.layers})
        kept = {id(p) for info in old.layers for p in info.weights}
        new = [info.name for info in rec.layers
               if info.name not in before or not all(id(p) in kept for p in info.weights)]
        for info in rec.layers:
            if info.name in before:
                info.index = before[info.name]
                rec.order.append(info)
        rec.order.sort(key=lambda info: info.index)
        rec.numbered = max(old.numbered, max(before.values(), default=0))
        rec.want_input, rec.first_input = old.want_input, old.first_input
        rec.input_seen, rec.input_note = old.input_seen, old.input_note  # for the theory's note
        self._rec = rec
        self._weights = [(info, p) for info in rec.layers for p in info.weights]
        self._forget_snapshot()
        names = {id(m): name or type(m).__name__ for name, m in self.model.named_modules()}
        regrouped = [names.get(id(m), type(m).__name__) for m, _, params in self._structure
                     if not _same_params(m._parameters, params)]
        self._structure = self._modules()
        # the same layers under the same names, their parameters re-registered (e.g.
        # torch.nn.utils.prune moves 'weight' to 'weight_orig'): said, not "none; none"
        moved = (f"; parameters re-registered in: {', '.join(regrouped)}"
                 if regrouped and not new and not gone else "")
        # found at call n: changed since the previous check, at step n at the latest (the
        # message said "before step n + 1", and a head replaced before step 3 read as step 3's
        # record having measured it; that record, taken with the hooks of the old modules,
        # leaves the new modules and removed ones out; a weight re-assigned in its module is
        # read there, without an update ratio: _present_layers)
        owners = {info.name: id(info.owner) for info in old.order}
        unhooked = [info.name for info in rec.layers
                    if info.name in new and owners.get(info.name) != id(info.owner)] + gone
        left_out = (f"; step {n}'s record leaves out {', '.join(unhooked)}, whose hooks were "
                    "not on when it ran" if n % self.every == 0 and unhooked else "")
        warnings.warn(f"Watch: the modules of {type(self.model).__name__} changed by step {n} "
                      f"(new or replaced: {', '.join(new) or 'none'}; removed: "
                      f"{', '.join(gone) or 'none'}{moved}): its layers are found again, each "
                      f"keeping its number by module name, from step {n + 1} on (earlier records "
                      f"measured the modules found then{left_out})",
                      RuntimeWarning, stacklevel=3)

    def _marks(self) -> list[tuple[torch.Tensor, Any, int]]:
        """``(weight, weakref to its .grad's storage, the grad's version counter)`` per weight
        with a gradient: a backward since then replaces or changes in place at least one of
        them. The storage, not the tensor: ``torch.utils.swap_tensors`` (``model.to(dtype)``
        with ``torch.__future__.set_swap_module_params_on_conversion(True)``, tensor
        subclasses) refuses a tensor with a weak reference, and the loop's conversion failed
        half done."""
        params = [p for _, p in self._weights]
        for p in params:
            if p.requires_grad:
                break
        else:  # every weight frozen (BitFit: the biases trained): their .grad tell nothing (a
            # step before any backward, or twice without one, was recorded); the model's
            # parameters that train do
            params = [p for p in self.model.parameters() if p.requires_grad]
        marks = []
        for p in params:
            g = p.grad
            if g is not None and not g.is_sparse:
                try:
                    marks.append((p, weakref.ref(g.untyped_storage()), g._version))
                except (RuntimeError, NotImplementedError, TypeError):
                    pass  # (no storage to read: a wrapper subclass)
        return marks

    def _check_backward(self) -> None:
        marks = self._grad_marks  # kept when refused: a call again is refused again
        # a weight whose gradient was cleared and not given a new one (a branch that did not
        # run this step) has changed too (its dead reference matched the None: AttributeError)
        if _untouched(marks) and (self._calls or self._rec.forwards):
            # (at the first call: the model's forward ran with gradients since the Watch was
            # created; a Watch created between the step's backward and this call records
            # the step's loss only, as it did)
            if self._calls == 0:
                raise ValueError("Watch.step(loss) was called without a backward since the "
                                 "Watch was created: every weight's .grad is the one it had "
                                 "then, an earlier backward's (a record of it would be stale); "
                                 "create the Watch before the step's forward and call "
                                 "Watch.step(loss) after loss.backward()")
            raise ValueError("Watch.step(loss) was called again without a backward since the "
                             "previous call: every weight's .grad is the one it had then (a "
                             "record of it would be stale); call it once per step, after "
                             "loss.backward()")
        self._grad_marks = None
        trainable = False
        for _, p in self._weights:  # stops at the first gradient (the usual case)
            if p.requires_grad:
                if p.grad is not None:
                    return
                trainable = True
        if not trainable:  # every weight frozen: the parameters that train tell (BitFit)
            trainable = self._frozen_weights()
            if not trainable:
                return
        # gradients taken by torch.autograd.grad (a loop that updates the weights itself, or a
        # functional optimizer) set no .grad: the backward is seen by the hooks of the pass
        rec = self._rec
        if not (rec.p.graded() or any(q.graded() for q in rec._earlier)):
            raise ValueError("Watch.step(loss) was called before any backward: no weight has a "
                             "gradient; call it after loss.backward() and before "
                             "optimizer.step()")
        if not self._warned_no_grad:  # said once: also what optimizer.zero_grad() before
            self._warned_no_grad = True  # Watch.step leaves
            warnings.warn("Watch: a backward ran through the model but no weight has a .grad "
                          "(gradients by torch.autograd.grad, or optimizer.zero_grad() between "
                          "the backward and Watch.step): the weight_grad_* rows are left out; "
                          "with loss.backward(), call Watch.step(loss) before "
                          "optimizer.step() and zero_grad()", RuntimeWarning, stacklevel=4)

    def _frozen_weights(self) -> bool:
        """With every watched weight frozen (``requires_grad`` False): whether a parameter of
        the model trains (a bias, a norm's scale) and none has a gradient yet, which the hooks
        then tell (a step before any backward is refused). Nothing in the model training is
        said once: no gradient reaches a weight, the records have no ``weight_grad_*``."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        if params:
            return all(p.grad is None for p in params)
        if not self._warned_frozen:
            self._warned_frozen = True
            warnings.warn(f"Watch: no parameter of {type(self.model).__name__} requires grad "
                          f"at step {self._calls} (all frozen by requires_grad_(False)?): "
                          "nothing in it gets a gradient or trains; its records have no "
                          "weight_grad_* rows and update_ratio 0 (grad_pre_* only where a "
                          "backward reaches its layers through the input)", RuntimeWarning,
                          stacklevel=5)
        return False

    def _warn_several_backwards(self, n: int) -> None:
        """Warn (once) when a layer output of the recorded pass received more gradients than
        it had outputs: several backward passes through one forward (``retain_graph=True``,
        a gradient penalty by ``torch.autograd.grad``); the gradient rows pool each
        backward's gradient, which is not the gradient of their sum."""
        p = self._rec.p
        for i, g in p.grad.items():
            pre = p.pre.get(i)
            if pre is not None and len(g.ns) > len(pre.ns):
                self._warned_twice = True
                warnings.warn(f"Watch: several backward passes ran through the forward of step "
                              f"{n} (retain_graph, torch.autograd.grad): its grad_pre_* rows "
                              "pool the gradient of each, not the gradient of their sum",
                              RuntimeWarning, stacklevel=4)
                return

    def _check_snapshot_fits(self) -> None:
        """Refuse (:class:`~depthlab.memory.MemoryRefusal`, one line) the snapshot's new
        buffers (a copy of every watched weight without one: ``sum numel x element_size`` per
        device) when they exceed the memory available (CPU: :func:`depthlab.memory.
        check_fits`; CUDA: ``torch.cuda.mem_get_info``), before any is allocated: a model
        filling most of the memory was doubled by its ``update_ratio`` snapshot."""
        from ..memory import CHECK_FROM_BYTES, check_fits

        need: dict[torch.device, int] = {}
        seen: set[int] = set()
        for info in self._rec.layers:
            for p in info.weights:
                buf = self._buffers.get(id(p))
                if id(p) in seen or (buf is not None and buf.shape == p.shape
                                     and buf.dtype == p.dtype and buf.device == p.device):
                    continue
                seen.add(id(p))
                need[p.device] = need.get(p.device, 0) + p.numel() * p.element_size()
        for device, nbytes in need.items():
            if nbytes < CHECK_FROM_BYTES or device.type not in ("cpu", "cuda"):
                continue
            free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
            check_fits(nbytes, f"Watch's copy of the watched weights on {device} (the "
                       "weights before each recorded update, for update_ratio)",
                       available=free)

    def _snapshot(self, copy: bool = True) -> None:
        """Copy every layer's weights into buffers kept between records (no allocation).
        ``copy=False``: the record's weight pass has just copied them into the buffers of the
        last snapshot (CPU kernels), which are reused as they are. The map layers' weights
        (:meth:`_snapshot_maps`) are copied either way."""
        if self._rec._map_keys:
            self._snapshot_maps()
        if not copy and self._pairs:
            self._snap.update(self._pairs)
            return
        if self._copy_lists is not None:  # the buffers of the last snapshot, if they still fit
            bufs, params = self._copy_lists
            for b, p in zip(bufs, params):
                if b.shape != p.shape or b.dtype != p.dtype or b.device != p.device:
                    break
            else:
                _copy_no_grad(bufs, params)
                self._snap.update(self._pairs)
                return
        self._check_snapshot_fits()
        # buffers made outside inference mode: a Watch.step under torch.inference_mode() (a
        # loop's logging block) made inference tensors, and the next record's in-place
        # difference (W0 - W) outside it failed ('Inplace update to inference tensor');
        # no_grad inside it: inference_mode(False) turns gradient mode on (the copies had
        # a grad_fn)
        with torch.inference_mode(False), torch.no_grad():
            fresh = []
            for info in self._rec.layers:
                pairs = []
                for p in info.weights:
                    buf = self._buffers.get(id(p))
                    if buf is None or buf.shape != p.shape or buf.dtype != p.dtype \
                            or buf.device != p.device:
                        buf = self._buffers[id(p)] = torch.empty_like(p, memory_format=
                                                                       torch.contiguous_format)
                        fresh.append((p, buf))
                    pairs.append((p, buf))
                self._snap[id(info)] = pairs
            self._pairs = dict(self._snap)
            every = [pair for v in self._snap.values() for pair in v]
            pairs = every if copy else fresh
            if pairs:  # one fused copy
                torch._foreach_copy_([b for _, b in pairs], [p for p, _ in pairs])
            unique = list({id(b): (b, p) for p, b in every}.values())  # tied weights: once
            self._copy_lists = ([b for b, _ in unique], [p for _, p in unique])
            self._previous = {id(p): b for p, b in every}
            self._rec._snap_facts = None  # (it held the buffers replaced: freed now)

    def _snapshot_maps(self) -> None:
        """Copy the weights the record measures at their linear maps (the recording's map
        keys: the model's own weight in ``F.linear(x, self.weight)``, a ``ParameterList``'s
        matrices, an embedding table used as a tied projection) for their ``update_ratio``
        rows (``||W_n - W_{n-1}|| / ||W_{n-1}||``), into buffers kept between records."""
        old, self._map_snap = self._map_snap, {}
        loose = self._rec._loose
        with torch.inference_mode(False), torch.no_grad():  # (normal tensors: _snapshot)
            for key in self._rec._map_keys:
                w = loose[key][1]
                kept = old.get(key)
                buf = kept[1] if kept is not None and kept[0] is w else None
                if buf is None or buf.shape != w.shape or buf.dtype != w.dtype \
                        or buf.device != w.device:
                    buf = torch.empty_like(w, memory_format=torch.contiguous_format)
                buf.copy_(w)
                self._map_snap[key] = (w, buf)

    def _forget_snapshot(self) -> None:
        """Drop the snapshot (and its buffers: reallocated and copied whole by the next
        :meth:`_snapshot`) after a Ctrl-C part-way through taking or reading it: the next
        record has no ``update_ratio`` rather than one from a half-copied or consumed
        snapshot."""
        self._snap.clear()
        self._pairs = {}
        self._buffers.clear()
        self._copy_lists = None
        self._previous = {}
        self._snap_norms = {}
        self._map_snap = {}
        self._rec._snap_facts = None

    def _update_ratios(self) -> list[tuple[int, str, str, torch.Tensor]]:
        """``||W_n - W_{n-1}|| / ||W_{n-1}||`` per layer: ``||W_{n-1}||`` from the record that
        took the snapshot (every=1) or by a fused norm of the snapshot, then the snapshot is
        overwritten in place by the difference and its norm taken (norms in float64: tiny
        updates do not underflow). The device path; on the CPU kernels ``collect``'s weight
        pass sums the same."""
        rows = []
        layers = [(info, self._snap[id(info)]) for info in self._rec.order
                  if self._snap.get(id(info))]
        # A parameter tied between layers (e.g. shared input and output embeddings) has one
        # snapshot buffer: reduce each buffer once, then read its norms for every layer.
        slot: dict[int, int] = {}
        params, olds = [], []
        for _, pairs in layers:
            for p, w0 in pairs:
                if id(w0) not in slot:
                    slot[id(w0)] = len(olds)
                    params.append(p)
                    olds.append(w0)
        if olds:
            with torch.no_grad():  # fused over all layers: three calls in all
                cached = [self._snap_norms.get(id(p)) for p in params]
                before = (cached if all(v is not None for v in cached)
                          else torch._foreach_norm(olds, 2, dtype=norm_dtype(olds[0])))
                if any(o.dtype in (torch.bfloat16, torch.float16) for o in olds):
                    # W - W0 in float32: a bf16 difference rounds to 8 bits wherever an entry
                    # more than doubles or changes sign (ratio off by 2e-5 at lr 0.5)
                    diffs = torch._foreach_sub([o.to(stat_dtype(o)) for o in olds],
                                               [p.detach().to(stat_dtype(p)) for p in params])
                    after = torch._foreach_norm(diffs, 2, dtype=norm_dtype(diffs[0]))
                    parts = [(functools.partial(_same, o), d) for o, d in zip(olds, diffs)]
                else:
                    torch._foreach_sub_(olds, params)
                    after = torch._foreach_norm(olds, 2, dtype=norm_dtype(olds[0]))
                    parts = [(functools.partial(_added, o, p), o) for o, p in zip(olds, params)]
            for info, pairs in layers:
                norms = [v for _, w0 in pairs for v in (before[slot[id(w0)]],
                                                        after[slot[id(w0)]])]
                ratio = functools.partial(_checked_ratio, [parts[slot[id(w0)]] for _, w0 in pairs])
                rows.append((info.index, info.name, "update_ratio", (norms, ratio)))
        self._snap.clear()
        return rows

    def _warn_unrun(self) -> None:
        """Once, at the first record where layers ran: a RuntimeWarning naming the weight
        layers whose weights got a nonzero gradient although their module's forward never ran
        with the hooks on and no map of them was measured (``self.fc.forward(x)``, or
        ``F.linear(x, self.fc.weight)`` outside a layer): they have no rows, as
        :func:`depthlab.torch.probe` warns (the Watch dropped them without a word)."""
        rec = self._rec
        ran = {id(info) for info in rec.order}
        measured = {id(w) for info in rec.order for w in info.weights}
        # the maps measured (after the first record: those its capture found; before, every
        # candidate, which names nothing)
        measured.update(id(rec._loose[k][1]) for k in rec._map_keys if k in rec._loose)
        holders = (nn.ParameterList, nn.ParameterDict)
        unrun = [info for info in rec.layers
                 if id(info) not in ran and info.owner is not None
                 and not isinstance(info.owner, holders)
                 and any(id(w) not in measured and _graded(w) for w in info.weights)]
        if unrun:
            names = ", ".join(f"{info.name!r} ({info.kind})" for info in unrun[:4])
            first = unrun[0].name
            warnings.warn(f"Watch: the forward used the weights of {names} without calling the "
                          f"module (e.g. self.{first}.forward(x) or F.linear(x, self.{first}"
                          f".weight)), so they are not measured (no rows: only a module's "
                          f"forward is seen); expected forward to call it (self.{first}(x))",
                          RuntimeWarning, stacklevel=4)

    def _record(self, n: int, refresh: bool = False,
                root: torch.autograd.graph.Node | None = None) -> bool:
        """Record step ``n``; True when the weight pass also refreshed the snapshot
        (``refresh`` on the CPU kernels' path). ``root``: the loss's ``grad_fn``, which tells
        the pass its backward graded from a later one's (:meth:`Recording.settle`)."""
        self._check_backward()
        if self.scaler is not None:
            self._check_scaler_order()  # after scaler.update(): refused
        self._check_step_order(n)  # after optimizer.step() / scaler.step(): warned
        self._rec.settle(root)  # the pass that the loss's backward ran through, read from
        # here on
        last = self._pending[-1]
        # (a host float: a row of its one value, as collect takes host numbers)
        extra = [(0, "", "loss", ([last], _value) if type(last) is float else last)]
        if not self._warned_twice:
            self._warn_several_backwards(n)
        # the map weights' copies, read once (none: no ratio, not an older snapshot's)
        self._rec.map_previous = {k: b for k, (w, b) in self._map_snap.items()
                                  if self._rec._loose.get(k, (None, None))[1] is w} \
            if self._map_snap else {}
        self._map_snap = {}
        try:
            fused = self._collect(extra, refresh)
        except ZeroDivisionError:  # a layer whose weight has no entries: named in one line
            check_nonempty_weights((info.name, info.owner) for info in self._rec.order)
            raise
        ran = self._rec.forwards  # the model's forward ran while armed, no layer in it
        transformed = self._rec.transformed  # ... or only inside vmap/grad (torch.func)
        self._rec.new_pass()  # the next record measures its own calls only
        if not self._rec.order and not self._warned_empty:
            self._warned_empty = True
            # the model ran and no layer did: weights used without their module's forward
            # (F.linear(x, self.fc.weight), a ParameterList); the guess about a late Watch
            # misled there
            # per-example gradients by torch.func (vmap(grad(...)) of functional_call, as
            # DP-SGD computes them) were blamed on a Watch created late or a compiled model
            why = (none_ran(self.model, self._rec.layers) if ran else
                   f"the forward of {type(self.model).__name__} ran only inside a torch.func "
                   "transform (vmap, grad: e.g. per-example gradients of functional_call), "
                   "whose wrapped tensors are not measured (a forward with gradients outside "
                   "the transform is)" if transformed else
                   f"no layer of {type(self.model).__name__} ran while its hooks were on (was "
                   "the Watch created after this step's forward?"
                   + (" Or does the loop call a torch.compile(model) compiled before the "
                      "Watch, whose compiled forward skips hooks added later?)"
                      if "torch._dynamo.eval_frame" in sys.modules else ")"))
            warnings.warn(f"Watch: {why}, so step {n} records its loss only", RuntimeWarning,
                          stacklevel=3)
        elif not self._checked_unrun and self._rec.order:
            self._checked_unrun = True
            self._warn_unrun()
        first = n - len(self._pending) + 1
        layers, modules, quantities = self._rec.layout  # tuples reused while it repeats
        values = self._rec.values
        if self.scaler is not None:
            values = self._unscaled(values, layers, quantities)
        if not self._warned_zero:
            self._check_zeroed(n, layers, quantities, values)
        # the losses and the rows' columns appended all or none: a Ctrl-C between two appends
        # left columns of different lengths (frame(), close() and the store failed)
        columns = (self._loss_steps, self._loss_values, self._col_step, self._col_layer,
                   self._col_module, self._col_q, self._col_value)
        sizes = [len(c) for c in columns]
        pending = list(self._pending)
        try:
            self._loss_steps.extend(range(first, n + 1))
            self._loss_values.extend(self._rec.also)
            self._col_step.extend([n] * len(values))
            self._col_layer.extend(layers)
            self._col_module.extend(modules)
            self._col_q.extend(quantities)
            self._col_value.extend(values)
            self._pending.clear()
        except BaseException:
            for column, size in zip(columns, sizes):
                del column[size:]
            self._pending[:] = pending
            raise
        if self.scaler is None:  # what the next optimizer step's GradScaler divides
            if len(self._scaled_records) < SCALED_NAMED:  # (a loop with no optimizer)
                self._scaled_records.append(n)
            self._scaled_last = (n, sizes[2])
        return fused and refresh

    def _collect(self, extra: list, refresh: bool) -> bool:
        """The record's one transfer (:meth:`Recording.collect`), with the update ratios in
        its weight pass where the snapshot is on the host; True when that pass also refreshed
        the snapshot."""
        fused = bool(self._snap) and self._rec.host_weights()
        if fused:  # update ratios in the weight pass of collect
            self._rec.collect(extra=extra, also=self._pending, previous=self._previous,
                              refresh=refresh, rows=False, settled=True)  # ratios after loss
            self._snap.clear()
            return self._rec.refreshed
        extra += self._update_ratios()
        self._rec.collect(extra=extra, also=self._pending, rows=False,
                          settled=True)  # one transfer
        return False

    def _adopt_scaler(self) -> None:
        """Without ``scaler=``, at the first step of an optimizer of the watched weights after
        a record (and at the steps while armed): when a ``torch.amp.GradScaler`` makes it
        (``scaler.step(opt)``, found on the call stack), the backward ran on ``loss * S``, so
        the gradient rows carried the factor ``S`` (``grad_pre_std`` of ``S dL/ds``) without a
        word. The scaler is taken as the Watch's own from then on (the rows divided by ``S``,
        as with ``scaler=``), and warned about once. The record of this very step (taken
        before ``scaler.step``, at the scale of now) is divided too (:meth:`_divide_record`).
        Records of steps after which no optimizer step ran (steps the scaler skipped for inf
        gradients: fp16's first ones) keep the factor of their own scale, which the warning
        names."""
        steps, self._scaled_records = self._scaled_records, []
        last, self._scaled_last = self._scaled_last, None
        scaler, level = _stepping_scaler()
        if scaler is None or not scaler.is_enabled() or getattr(scaler, "_scale", 0.0) is None:
            return
        self.scaler = scaler
        scale, unscaled = _scaler_state(scaler, self._optimizers)
        fixed = [last[0]] if last is not None and last[0] == self._calls - 1 \
            and self._divide_record(*last, scale, unscaled) else []
        left = [n for n in steps if n not in fixed]
        more = ", ..." if len(steps) == SCALED_NAMED else ""
        kept = (f"; the records of steps {', '.join(map(str, left))}{more} (no optimizer "
                "step after them: steps it skipped) keep the factor of its scale then"
                if left else "")
        warnings.warn(f"Watch: a torch.amp.GradScaler steps the optimizer of "
                      f"{type(self.model).__name__}'s weights (scaler.step(opt)) but was not "
                      f"given to the Watch: its gradient rows carried the loss scale "
                      f"(S = {scale:g}); the scaler is taken as the Watch's from step "
                      f"{fixed[0] if fixed else self._calls} on, the rows being the gradients "
                      f"of the loss itself (divided by S){kept}; pass "
                      "Watch(model, ..., scaler=scaler) to say so", RuntimeWarning,
                      stacklevel=level)

    def _divide_record(self, n: int, start: int, scale: float,
                       unscaled: bool | set[int]) -> bool:
        """Divide the gradient rows of the record of step ``n`` (rows ``start`` on) by
        ``scale``: ``grad_pre_*`` always; ``weight_grad_*`` of a layer unless its ``.grad``
        was read unscaled: its ``weight_grad_absmean`` then is nearer (:func:`_nearer_one`)
        to ``mean |g|`` of its ``.grad`` unscaled now than to ``S mean |g|`` (``g = .grad``
        where ``scaler.step`` or ``unscale_`` has unscaled it, ``.grad / S`` where not yet: a
        fused optimizer's; the unscaling kernel keeps the version counter, so the values
        tell, a ``clip_grad_norm_`` since the record included). With map layers (rows
        numbered among them) the weights of each row's layer are the recording's
        (``Recording._weights_at``)."""
        if start > len(self._col_step) or any(s != n for s in self._col_step[start:]):
            return False  # (not the last record)
        q, layers, values = self._col_q, self._col_layer, self._col_value
        recorded = {layers[i]: values[i] for i in range(start, len(values))
                    if q[i] == "weight_grad_absmean"}
        if self._rec.mapped:  # (the rows numbered among map layers: the weights' own)
            params = {id(p): p for p in self.model.parameters()}
            params.update((k, v[1]) for k, v in self._rec._loose.items())
            pairs = [(i, params[k]) for i, ids in self._rec._weights_at.items() for k in ids
                     if k in params]
        else:
            pairs = [(info.index, p) for info, p in self._weights]
        sums: dict[int, list[float]] = {}
        with torch.no_grad():
            for i, p in pairs:
                if p.grad is not None and i in recorded:
                    acc = sums.setdefault(i, [0.0, 0.0])
                    now = float(p.grad.detach().abs().sum(dtype=torch.float64))
                    acc[0] += now if unscaled is True or (
                        isinstance(unscaled, set) and id(p) in unscaled) else now / scale
                    acc[1] += p.grad.numel()
        done = {i for i, (total, count) in sums.items()
                if count and _nearer_one(recorded[i], total / count, scale)}
        for i in range(start, len(values)):
            if q[i] in GRADIENT_ROWS or (q[i] in WEIGHT_GRADIENT_ROWS and layers[i] not in done):
                values[i] /= scale
        return True

    def _check_scaler_order(self) -> None:
        """Refuse a record after ``scaler.update()`` (see :class:`_OptimizersOf`)."""
        marks = self._stepped_marks  # kept when refused: a call again is refused again
        if (marks and self.scaler.is_enabled()
                and not getattr(self.scaler, "_per_optimizer_states", None)
                and _untouched(marks)):
            # scaler.step(opt) stepped on these very gradients (unscaled them) and
            # scaler.update() has run since (its state reset, get_scale() the next step's):
            # the rows were divided by the new scale, weight_grad_* twice
            raise ValueError("Watch.step(loss) was called after scaler.update(): the "
                             "gradients were unscaled by scaler.step and the scale is the next "
                             "step's; call it before scaler.step(opt) (or between "
                             "scaler.step and scaler.update)")

    def _check_step_order(self, n: int) -> None:
        """Warn (once) when an optimizer of the watched weights stepped on the very gradients
        of this record (its step pre-hook's marks unchanged: no backward since): Watch.step
        came after ``optimizer.step()``, so the weight rows are of the updated weights."""
        marks, self._stepped_marks = self._stepped_marks, None
        if marks and not self._warned_order and _untouched(marks):
            self._warned_order = True
            warnings.warn(f"Watch: optimizer.step() ran on the gradients of step {n} before "
                          "Watch.step(loss): its weight_std and update_ratio rows are of the "
                          "weights after that update, not of those its forward ran with; "
                          "call Watch.step(loss) after loss.backward() and before "
                          "optimizer.step() (with a torch.amp.GradScaler: pass "
                          "scaler=scaler and call it before scaler.step(opt))",
                          RuntimeWarning, stacklevel=4)

    def _overflowed(self) -> bool:
        """Whether a parameter of the model holds a non-finite gradient: ``clip_grad_norm_``
        of an overflowed total norm (inf: a step a GradScaler skips, after
        ``scaler.unscale_(opt)``; a diverging step) multiplies every finite gradient by
        ``max_norm / inf = 0`` and leaves the inf entries NaN, so all-zero weight gradients
        then come from the clipping, not from ``zero_grad``. Read only when every weight's
        gradient is zero (one device sync per parameter, rare)."""
        return any(p.grad is not None and not bool(torch.isfinite(p.grad).all())
                   for p in self.model.parameters())

    def _check_zeroed(self, n: int, layers: Sequence[int], quantities: Sequence[str],
                      values: Sequence[float]) -> None:
        """Warn (once) when every weight's ``.grad`` is zero while the backward carried a
        gradient to the outputs of two layers or more: ``optimizer.zero_grad(set_to_none=
        False)`` between the backward and Watch.step (set_to_none=True leaves no ``.grad``,
        which :meth:`_check_backward` says). A layer whose output has a gradient has a zero
        weight gradient only when its input is zero (the output layer of a network whose
        hidden units are all dead or all-zero weights: one layer), so a model that trains
        is not warned about; nor a loop that clipped a non-finite gradient norm
        (:meth:`_overflowed`)."""
        try:
            first = quantities.index("weight_grad_absmean")
        except ValueError:  # no weight has a .grad
            return
        if values[first] != 0.0:  # the usual case: one look
            return
        zero, graded = set(), set()
        for layer, q, v in zip(layers, quantities, values):
            if q == "weight_grad_absmean":
                if v != 0.0:
                    return
                zero.add(layer)
            elif q == "grad_pre_absmean" and v > 0.0:
                graded.add(layer)
        if len(graded & zero) >= 2 and not self._overflowed():
            self._warned_zero = True
            warnings.warn(f"Watch: at step {n} every weight's .grad is zero while the backward "
                          f"carried gradients through {len(graded & zero)} layers "
                          "(grad_pre_absmean > 0): were they zeroed "
                          "(optimizer.zero_grad(set_to_none=False)) between loss.backward() "
                          "and Watch.step(loss)? Its weight_grad_* rows are those zeros; call "
                          "Watch.step(loss) after loss.backward() and before "
                          "optimizer.step() and zero_grad()", RuntimeWarning, stacklevel=4)

    def _unscaled(self, values: list[float], layers: Sequence[int],
                  quantities: Sequence[str]) -> list[float]:
        """The record's values with the gradient rows divided by the GradScaler's scale
        ``S``: ``grad_pre_*``/``block_grad_std`` always (the backward ran on the scaled loss),
        ``weight_grad_*`` of a layer unless its ``.grad`` was unscaled already, by the
        optimizer that holds its weights (:func:`_scaler_state`; a layer pooling weights of
        several optimizers counts as unscaled when one of them was)."""
        scale, unscaled = _scaler_state(self.scaler, self._optimizers)
        if scale == 1.0:
            return values
        if isinstance(unscaled, bool):
            rows = GRADIENT_ROWS if unscaled else GRADIENT_ROWS | WEIGHT_GRADIENT_ROWS
            return [v / scale if q in rows else v for v, q in zip(values, quantities)]
        done = {info.index for info, p in self._weights if id(p) in unscaled}
        if self._rec.mapped:  # (the rows numbered among map layers: the weights' own)
            done = self._rec.unscaled_layers(unscaled)
        return [v / scale if q in GRADIENT_ROWS
                or (q in WEIGHT_GRADIENT_ROWS and layer not in done) else v
                for v, layer, q in zip(values, layers, quantities)]

    def close(self, error: BaseException | None = None) -> None:
        """Remove the hooks and, with ``out``, store the run (idempotent). ``error``: the
        exception that ended training (the ``with`` block's), stored as a ``failed`` run. A
        store that fails (disk full, the folder removed and a file in its place, a locked
        database) raises, and the run stays in memory: ``close()`` again stores it (it was
        lost: the second call did nothing). So does a Ctrl-C part-way through ``close()``
        (while the pending losses are copied to the host, a device sync): ``close()`` again
        finishes it; the run was left closed and not marked unstored, never stored."""
        if not self._closed:
            self._error = None if error is None else _error_text(error, self._calls)
            self._rec.disarm()
            self._closed = True
            self._ended = time.time()
            self._unstored = self.out is not None  # from here on close() again stores it
        # the rest again on a later call (each part does nothing when done): an interrupted
        # first call is finished by the next
        self._remove_optimizers_hook()
        self._snap.clear()
        self._buffers.clear()
        self._pairs.clear()
        self._copy_lists = None
        self._previous = {}
        self._map_snap = {}
        self._rec._snap_facts = None  # (it held the buffers: freed with them)
        self._flush_losses()
        if self._unstored:
            self._store()

    def _flush_losses(self) -> None:
        """Copy the losses of the steps since the last record to the host (one transfer for
        the device tensors among them; the host floats are taken as they are)."""
        pending = self._pending
        if pending:
            kept = [t for t in pending if type(t) is not float]
            host: list[float] = pending
            if kept:
                dev = kept[-1].device
                wide = torch.float64 if dev.type != "mps" else torch.float32
                try:  # one stack (dtypes promoted exactly), then one conversion
                    stacked = torch.stack(kept).to(wide)
                except RuntimeError:  # losses on several devices (the model moved mid-run)
                    stacked = torch.stack([t.to(dev, wide) for t in kept])
                values = iter(stacked.cpu().tolist())
                host = [v if type(v) is float else next(values) for v in pending]
            first = self._calls - len(pending)
            steps, losses = self._loss_steps, self._loss_values
            sizes = len(steps), len(losses)
            try:  # both or neither (a Ctrl-C between them left two lengths: losses() failed)
                steps.extend(range(first, self._calls))
                losses.extend(host)
                pending.clear()
            except BaseException:
                del steps[sizes[0]:], losses[sizes[1]:]
                raise

    def _remove_optimizers_hook(self) -> None:
        hook = getattr(self, "_optimizers_hook", None)
        if hook is not None:
            hook.remove()
            self._optimizers_hook = None

    def __del__(self) -> None:
        # a Watch dropped without close() (a notebook cell run again after an error): its
        # hooks would stay on the model, measuring every forward, for as long as the model
        rec = getattr(self, "_rec", None)
        if rec is not None:
            rec.disarm()
        self._remove_optimizers_hook()

    def __getstate__(self) -> dict:
        # pickle, copy.deepcopy (a checkpoint of "everything", torch.save({'watch': w}))
        # failed with "cannot pickle 'module' object" or "Can't pickle local object
        # '_relu.<locals>.<lambda>'", naming neither the Watch nor what to keep instead
        raise TypeError("a depthlab.torch.Watch cannot be pickled or copied (it holds hooks on "
                        "the live model); keep its results instead: watch.frame() and "
                        "watch.losses() (DataFrames) or watch.record() (a RunRecord), or pass "
                        "out= to store the run")

    def __enter__(self) -> Watch:
        if self._closed:  # a second `with watch:` (the next epoch) entered, refused at its step
            raise RuntimeError(_CLOSED.format(what="with watch: (re-entered)"))
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.close(error=None if _clean_exit(exc) else exc)

    # -- results -----------------------------------------------------------------------------
    def __repr__(self) -> str:
        from ..report.notebook import watch_repr

        return watch_repr(self)

    def _repr_html_(self) -> str:
        """What was recorded, the gradient ratio and the gradient figure (Jupyter)."""
        from ..report.notebook import watch_html

        return watch_html(self)

    def frame(self) -> pd.DataFrame:
        """Tidy table ``step, layer, module, quantity, value`` of the recorded steps."""
        df = pd.DataFrame({
            "step": pd.array(self._col_step, dtype="int64"),
            "layer": pd.array(self._col_layer, dtype="int64"),
            "module": pd.Series(self._col_module, dtype=object),
            "quantity": pd.Series(self._col_q, dtype=object),
            "value": pd.array(self._col_value, dtype="float64"),
        }, columns=list(COLUMNS))
        return df.sort_values(["step", "layer"], kind="stable", ignore_index=True)

    def losses(self) -> pd.DataFrame:
        """``step, loss`` of every step seen so far: the losses kept on the device since the
        last record are copied to the host first (one transfer, only when asked)."""
        self._flush_losses()
        return pd.DataFrame({"step": pd.array(self._loss_steps, dtype="int64"),
                             "loss": pd.array(self._loss_values, dtype="float64")})

    def layer_names(self) -> dict[int, str]:
        """Layer number -> dotted module name (layers that ran in a recorded step); a model
        with map layers (:func:`depthlab.torch.probe`'s, numbered among the others): those of
        the recorded rows."""
        if self._rec.mapped:
            return {layer: m for layer, m in zip(self._col_layer, self._col_module) if layer}
        return {info.index: info.name for info in self._rec.order}

    def _block_layers(self, table: pd.DataFrame) -> dict[str, int]:
        """Block name -> the layer of its ``block_grad_std`` rows, for a model with map layers
        (the rows are numbered among them); otherwise empty (the blocks' own numbers)."""
        if not self._rec.mapped:
            return {}
        rows = table[table["quantity"] == "block_grad_std"].drop_duplicates("module", keep="last")
        return {m: int(i) for m, i in zip(rows["module"], rows["layer"])}

    def record(self) -> RunRecord:
        """The run as a :class:`depthlab.experiments.store.RunRecord` (kind ``run``)."""
        from ..experiments.config import run_id
        from ..experiments.store import RunRecord

        losses = self.losses()
        table = self.frame()
        # every layer number the rows use (a module removed mid-run keeps its name)
        named = table[table["layer"] >= 1].drop_duplicates("layer")
        layers = {**dict(zip(named["layer"].astype(str), named["module"])),
                  **{str(k): v for k, v in self.layer_names().items()}}
        parameters = int(sum(p.numel() for p in self.model.parameters()))  # tied ones once
        config = {
            "source": "depthlab.torch.Watch",
            "model": {"class": type(self.model).__name__,
                      "layers": dict(sorted(layers.items(), key=lambda kv: int(kv[0]))),
                      "blocks": {**{b.name: b.layer for b in self._rec.blocks.values()},
                                 **self._block_layers(table)},
                      "parameters": parameters,
                      **({"theory": self._theory_rows} if self._theory_rows else
                         {"theory_note": self.theory_note})},
            "probes": {"every": self.every, "percentiles": list(self._rec.percentiles)},
        }
        if self.run_id is None:
            self.run_id = run_id(config, extra={"created": self._started, "name": self.name})
        last = float(losses["loss"].iloc[-1]) if len(losses) else math.nan
        status = "finished" if math.isfinite(last) or not len(losses) else "diverged"
        error = getattr(self, "_error", None)
        if error is not None:
            status = "failed"
        probes = table[["step", "layer", "quantity", "value"]]
        # the run's own time: up to close() (a store retried later does not add the wait)
        seconds = (self._ended if self._ended is not None else time.time()) - self._started
        return RunRecord(
            id=self.run_id, name=self.name, kind="run", status=status, config=config,
            metrics={"train_loss": last, "steps": self._calls,
                     "seconds": seconds, "n_parameters": parameters},
            seconds=seconds, steps=losses, probes=probes,
            error=error, created=self._started)

    def _store(self) -> None:
        from ..experiments.store import Store

        record = self.record()
        try:
            with Store(self.out) as store:
                store.add_run(record)
        except Exception as e:
            e.add_note(f"depthlab.torch.Watch: the run is not stored in {str(self.out)!r}; it "
                       "is kept in memory (watch.frame()): call watch.close() again to store it")
            raise
        self._unstored = False
