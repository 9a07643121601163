"""Optimizer base class: parameter bookkeeping, validation and lazily allocated buffers.

Every optimizer follows ``torch.optim`` (names, defaults, update rules). Updates are done
in place with ufuncs on preallocated arrays: per parameter, the state buffers of the
algorithm (allocated at the first :meth:`Optimizer.step`, same shape and dtype as the
value) plus one scratch slot for temporaries. A second slot exists only where the rule
needs two temporaries at once (Adadelta, NAdam) or where coupled ``weight_decay`` must
hold the decayed gradient ``g + wd * w`` (``.grad`` itself is never modified).
All per-step scalars are Python floats, so float32 parameters stay float32 (NEP 50).
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import Any, ClassVar

import numpy as np

from ..backend import Array, _torch_values, xp
from ..parameter import Parameter
from ..validators import to_float


def check_number(name: str, value: Any, *, low: float = 0.0, high: float | None = None,
                 high_inclusive: bool = True, low_inclusive: bool = True) -> float:
    """Return ``float(value)`` after checking ``low <= value <= high`` (``low < value`` with
    ``low_inclusive=False``, ``value < high`` with ``high_inclusive=False``).

    Raises TypeError for non-numbers (bools included) and ValueError naming the value when
    it is out of range, infinite or NaN (an infinite lr, momentum or eps is no setting); the
    message states the accepted range with its open and closed ends.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    v = to_float(value)  # an int beyond the float range is inf (refused below), no OverflowError
    ok = math.isfinite(v) and (v >= low if low_inclusive else v > low)
    if high is not None:
        ok = ok and (v <= high if high_inclusive else v < high)
    if not ok:
        if high is None:
            accepted = f" {'>=' if low_inclusive else '>'} {low}" if math.isfinite(low) else ""
        else:
            accepted = (f" in {'[' if low_inclusive else '('}{low}, "
                        f"{high}{']' if high_inclusive else ')'}")
        raise ValueError(f"invalid {name} value: {value!r}; expected a finite number{accepted}")
    return v


def check_flag(name: str, value: Any) -> bool:
    """Return ``bool(value)`` for a bool (NumPy bools included); TypeError otherwise."""
    if isinstance(value, (bool, xp.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}")


def check_betas(value: Any) -> tuple[float, float]:
    """Validate Adam-style ``betas = (beta1, beta2)``, each in [0, 1)."""
    try:
        b1, b2 = value
    except (TypeError, ValueError):
        raise TypeError(f"betas must be a pair (beta1, beta2), got {value!r}") from None
    return (check_number("beta1 (betas[0])", b1, high=1.0, high_inclusive=False),
            check_number("beta2 (betas[1])", b2, high=1.0, high_inclusive=False))


class _NoParameters(tuple):
    """Stands for "no parameters" in Optimizer.check_hyperparameters (for users an empty
    parameter list is an error)."""


_NO_PARAMETERS = _NoParameters()


def _param_list(params: Iterable[Parameter]) -> list[Parameter]:
    if params is _NO_PARAMETERS:
        return []
    if isinstance(params, Parameter):
        params = [params]
    if callable(getattr(params, "parameters", None)):  # a network or layer, as torch users
        raise TypeError(  # pass model.parameters(): Network iterates over its layers
            f"params must be an iterable of depthlab Parameter objects, got a "
            f"{type(params).__name__}; pass its .parameters()")
    try:
        plist = list(params)
    except TypeError:
        call = (f"; call it: {params.__name__}()" if callable(params)
                and hasattr(params, "__name__") else "")  # net.parameters, not called
        raise TypeError(
            f"params must be an iterable of depthlab Parameter objects, got "
            f"{type(params).__name__}{call}") from None
    if not plist:
        raise ValueError("optimizer got an empty parameter list")
    seen: set[int] = set()
    for p in plist:
        if not isinstance(p, Parameter):
            group = (" (parameter groups: give a list of dicts only, each with 'params')"
                     if isinstance(p, dict) else "")
            raise TypeError(f"params must be depthlab Parameter objects, got "
                            f"{type(p).__name__}{group}")
        if id(p) in seen:
            raise ValueError(f"parameter {p!r} appears more than once in params")
        seen.add(id(p))
    return plist


def axpy(x: Array, c: float, y: Array, tmp: Array | None) -> None:
    """In place ``x += c * y`` (``tmp`` receives ``c * y`` unless ``c`` is +-1)."""
    if c == 1.0:
        x += y
    elif c == -1.0:
        x -= y
    else:
        xp.multiply(y, c, out=tmp)
        x += tmp


def lerp(x: Array, g: Array, sign: float, weight: float, tmp: Array) -> None:
    """In place ``x = lerp(x, sign*g, weight)`` in torch's two-branch form.

    ``x + weight * (sign*g - x)`` for ``weight < 0.5``, else
    ``sign*g - (sign*g - x) * (1 - weight)``.
    """
    if sign == 1.0:
        xp.subtract(g, x, out=tmp)         # tmp = end - x
    else:
        xp.add(g, x, out=tmp)              # tmp = -(end - x)
    if abs(weight) < 0.5:
        tmp *= weight * sign
        x += tmp
    else:
        tmp *= (1.0 - weight) * sign       # (end - x)(1 - weight)
        if sign == 1.0:
            xp.subtract(g, tmp, out=x)
        else:                              # -g - tmp = -(g + tmp)
            xp.add(g, tmp, out=x)
            xp.negative(x, out=x)


# torch.optim's keywords that choose how torch runs an update (for-each or fused kernels, CUDA
# graphs, autograd through the step), not what the update computes
TORCH_IMPLEMENTATION_FLAGS = ("foreach", "fused", "capturable", "differentiable")


def refuse_unknown_arguments(cls: type[Optimizer], kwargs: Mapping[str, Any]) -> None:
    """TypeError naming the first keyword argument that is no hyperparameter of ``cls``, with
    the closest name, or for torch's implementation flags (``foreach``, ``fused``,
    ``capturable``, ``differentiable``) what they are; the accepted names follow. A class
    called directly said only Python's "got an unexpected keyword argument 'fused'"."""
    accepted = cls.hyperparameter_names()
    for k in kwargs:
        if k == "params" or k in accepted:
            continue
        if any(q.kind is inspect.Parameter.VAR_KEYWORD
               for q in inspect.signature(cls.__init__).parameters.values()):
            return  # a subclass taking **kwargs checks them itself
        if k in TORCH_IMPLEMENTATION_FLAGS:
            hint = (f" (torch's {k}= chooses how torch runs the update, not what it computes; "
                    "depthlab has one NumPy update: leave it out)")
        else:
            from ..validators import closest_name

            close = closest_name(k, accepted) if isinstance(k, str) else None
            hint = f" (did you mean {close!r}?)" if close else ""
        raise TypeError(f"unknown argument {k!r} for optimizer {cls.name!r}{hint}; accepted: "
                        f"{', '.join(accepted)}")


# the keys of a group in state_dict()["param_groups"] besides its hyperparameters
_GROUP_LAYOUT = ("params", "step", "scalars", "initial_lr")


def _all_hyperparameter_names() -> set[str]:
    """Every hyperparameter name of every registered optimizer (``betas``, ``momentum``, ...)."""
    from . import REGISTRY  # the package imports this module first

    return {k for cls in REGISTRY.factories.values()
            for k in cls.hyperparameter_names()}  # type: ignore[attr-defined]


def check_user_key(cls: type[Optimizer], key: Any) -> str | None:
    """Why ``key`` cannot be one of torch's own keys of a parameter group (``{"params": ...,
    "name": "encoder"}``: torch keeps any other key in the group, unread by the update), or
    None when it can. Refused: a key that is not a string, torch's implementation flags
    (``foreach``, ...), a hyperparameter of another optimizer (``betas`` in an SGD group: it
    would be silently ignored), depthlab's ``step``/``scalars`` and a likely typo of one
    of any optimizer's hyperparameters (difflib's similarity ratio ``2 M / T >= 0.8`` and a
    length within 2: ``momentun``, ``betas2``; ``weight_decay_mult`` is a key of its own)."""
    import difflib

    accepted = cls.hyperparameter_names()
    if not isinstance(key, str):
        return f"a parameter group's keys are names, got {type(key).__name__} {key!r}"
    if key in TORCH_IMPLEMENTATION_FLAGS:
        return (f"{key!r} chooses how torch runs the update, not what it computes; depthlab "
                "has one NumPy update: leave it out")
    if key in _GROUP_LAYOUT:
        return f"{key!r} is a key of depthlab's state_dict group layout"
    if key in _all_hyperparameter_names():
        return f"{key!r} is no hyperparameter of {cls.name!r}"
    for names in (accepted, sorted(_all_hyperparameter_names())):
        close = [n for n in difflib.get_close_matches(key.lower(), names, n=3, cutoff=0.8)
                 if abs(len(n) - len(key)) <= 2]
        if close:
            theirs = "" if close[0] in accepted else ", a hyperparameter of other optimizers"
            return (f"{key!r} is no hyperparameter of {cls.name!r} (did you mean "
                    f"{close[0]!r}{theirs}?)")
    return None


def _group_specs(params: Any) -> tuple[list[dict[str, Any]] | None, Any]:
    """``(groups, params)``: torch's parameter groups when ``params`` is a list of dicts
    (``groups`` the dicts, each holding ``"params"``), else ``(None, params)`` with an iterator
    materialised as a list (read once here)."""
    if isinstance(params, Iterator):
        params = list(params)
    if not isinstance(params, list | tuple) or not any(isinstance(g, dict) for g in params):
        return None, params
    if not all(isinstance(g, dict) for g in params):
        raise TypeError("params mixes parameter groups (dicts) with other items; give a list "
                        "of Parameters or a list of dicts, each with 'params'")
    if not params:
        raise ValueError("optimizer got an empty parameter list")
    return list(params), params


class _OptimizerType(type):
    """Builds an optimizer from torch's parameter groups: ``Adam([{"params": a, "lr": 1e-2},
    {"params": b}], lr=1e-3)`` checks the constructor's arguments as the defaults
    (``opt.defaults``), then adds each dict with :meth:`Optimizer.add_param_group`."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        refuse_unknown_arguments(cls, kwargs)
        if args:
            groups, params = _group_specs(args[0])
            args = (params, *args[1:])
        elif "params" in kwargs:
            groups, kwargs["params"] = _group_specs(kwargs["params"])
        else:
            groups = None
        if groups is None:
            opt = super().__call__(*args, **kwargs)
            object.__setattr__(opt, "defaults", opt.hyperparameters())
            return opt
        if args:
            args = (_NO_PARAMETERS, *args[1:])
        else:
            kwargs["params"] = _NO_PARAMETERS
        opt = super().__call__(*args, **kwargs)  # the defaults, checked
        object.__setattr__(opt, "defaults", opt.hyperparameters())
        object.__setattr__(opt, "_groups", [])
        opt.state = _GroupState(opt._groups)
        for group in groups:
            opt.add_param_group(group)
        return opt


class _GroupState(Mapping):
    """``optimizer.state`` of an optimizer of several groups: a read-only view of the groups'
    ``state`` dicts (Parameter -> its buffers)."""

    def __init__(self, groups: list[Optimizer]) -> None:
        self._groups = groups

    def __getitem__(self, p: Parameter) -> dict[str, Any]:
        for g in self._groups:
            if p in g.state:
                return g.state[p]
        raise KeyError(p)

    def __iter__(self) -> Iterator[Parameter]:
        return (p for g in self._groups for p in g.state)

    def __len__(self) -> int:
        return sum(len(g.state) for g in self._groups)


class ParamGroup(MutableMapping):
    """torch's ``optimizer.param_groups[i]`` for one group's optimizer: a live view
    whose ``"params"`` is the parameter list and whose other keys are the hyperparameters,
    read and set as the optimizer's attributes (``g["lr"] *= 0.5`` is ``opt.lr *= 0.5``, with
    its checks), then the group's own keys (torch keeps any other key: ``g["name"] =
    "encoder"``; :func:`check_user_key` refuses another optimizer's hyperparameter or a
    likely typo, a KeyError naming the keys the group has). ``"initial_lr"`` (torch's
    schedulers' key) is ``optimizer.initial_lr``: present once set."""

    def __init__(self, optimizer: Optimizer) -> None:
        self._optimizer = optimizer

    def _names(self) -> list[str]:
        names = self._optimizer.hyperparameter_names()
        if getattr(self._optimizer, "initial_lr", None) is not None:  # a scheduler's key
            names = [*names, "initial_lr"]
        return names

    def _user(self) -> dict[str, Any]:
        return self._optimizer.user_keys

    def _missing(self, key: Any, why: str = "") -> KeyError:
        return KeyError(f"{key!r}: a {self._optimizer.name} group holds params, "
                        f"{', '.join([*self._names(), *self._user()])}{why}")

    def __getitem__(self, key: str) -> Any:
        if key == "params":
            return list(self._optimizer.params)
        if key in self._names():
            return getattr(self._optimizer, key)
        if key in self._user():
            return self._user()[key]
        raise self._missing(key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key == "params":
            raise TypeError("a param_group's 'params' cannot be replaced: add other "
                            "parameters with optimizer.add_param_group({'params': ...})")
        if key == "initial_lr":  # torch's schedulers' key (g.setdefault("initial_lr", lr))
            self._optimizer.initial_lr = check_number("initial_lr", value)
            return
        if key in self._names():
            setattr(self._optimizer, key, value)
            return
        why = check_user_key(type(self._optimizer), key)
        if why is not None:
            raise self._missing(key, f" ({why})")
        self._optimizer.set_user_key(key, value)

    def __delitem__(self, key: str) -> None:
        if key in self._user():
            del self._user()[key]
            return
        raise TypeError(f"param_groups[0][{key!r}] cannot be removed")

    def __iter__(self) -> Iterator[str]:
        return iter(["params", *self._names(), *self._user()])

    def __len__(self) -> int:
        return 1 + len(self._names()) + len(self._user())

    def __repr__(self) -> str:
        return repr(dict(self))


class Optimizer(metaclass=_OptimizerType):
    """Base class. Subclasses define ``_init_state``, ``_n_scratch`` and ``_update``.

    ``step()`` applies one update from the ``.grad`` arrays to the ``.value`` arrays (in
    place); ``lr`` may be changed between steps; ``state`` maps each Parameter object
    (identity, not name) to its dict of buffers, filled at the first step.

    Parameter groups (torch's): ``params`` may be a list of dicts, each with ``"params"`` and
    hyperparameters overriding the constructor's (``opt.defaults``). Each group is an
    optimizer of the same class over its parameters, stepped with its own hyperparameters
    (the one update rule, per group); the optimizer holding them (``_groups``) checks every
    ``.grad`` first, then steps each group. A list of parameters is one group: the optimizer
    itself, whose attributes are its hyperparameters (the fast path).
    """

    name: ClassVar[str] = "optimizer"
    # attributes other than the buffers that the rule updates at each step (NAdam's P_t)
    _state_scalars: ClassVar[tuple[str, ...]] = ()
    # the groups' optimizers when there are several (add_param_group); None: one group, self
    _groups: list[Optimizer] | None = None

    def __init__(self, params: Iterable[Parameter], lr: float, *, weight_decay: float = 0.0,
                 maximize: bool = False) -> None:
        self.params: list[Parameter] = _param_list(params)
        self.lr = lr
        self.weight_decay = check_number("weight_decay", weight_decay)
        self.maximize = check_flag("maximize", maximize)
        self.state: dict[Parameter, dict[str, Any]] = {}
        self.step_count = 0
        self._scratch: dict[Parameter, tuple[Array, ...]] = {}
        self._scratch_slots = 0

    def __setattr__(self, name: str, value: Any) -> None:
        """A hyperparameter set again after construction (``opt.momentum = 0.9`` between
        steps) passes the constructor's checks first: ``opt.momentum = float("nan")`` was taken
        as given (NaN weights at the next step). The first assignment of each, in
        ``__init__``, is checked there."""
        groups = self._groups
        if groups is not None and (name == "initial_lr"
                                   or name in type(self).hyperparameter_names()):
            raise AttributeError(
                f"this {self.name} optimizer has {len(groups)} parameter groups: set "
                f"param_groups[i][{name!r}] (opt.{name} is the default, opt.defaults)")
        if name in self.__dict__ and name != "lr" and name in (
                type(self).__dict__.get("_hyperparameter_names")
                or type(self).hyperparameter_names()):  # read once per class
            checked = type(self).check_hyperparameters(
                **{**self.hyperparameters(), name: value})
            value = checked[name]
        object.__setattr__(self, name, value)

    @property
    def param_groups(self) -> list[ParamGroup]:
        """torch's ``param_groups``: one live view per group of its ``params`` and
        hyperparameters (``for g in opt.param_groups: g["lr"] *= 0.5``; with one group this
        sets ``opt.lr``)."""
        if self._groups is None:
            return [ParamGroup(self)]
        return [ParamGroup(g) for g in self._groups]

    @property
    def groups(self) -> list[Optimizer]:
        """The optimizer of each parameter group (``[self]`` for one group): schedulers set
        each one's ``lr`` from its own ``initial_lr``."""
        return [self] if self._groups is None else list(self._groups)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's ``add_param_group``: a dict with ``"params"`` (a Parameter or a list of them)
        and hyperparameters overriding ``opt.defaults`` (plus torch's ``"initial_lr"``); any
        other key is the group's own, kept as torch keeps it (``"name": "encoder"``,
        :attr:`user_keys`) unless :func:`check_user_key` refuses it (another optimizer's
        hyperparameter, a likely typo). The group starts with fresh state (step 0); a
        parameter already in a group is refused."""
        cls = type(self)
        if not isinstance(param_group, dict):
            raise TypeError(f"a parameter group must be a dict with 'params', got "
                            f"{type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError(f"a parameter group needs 'params'; got keys {sorted(param_group)}")
        given = param_group["params"]
        if isinstance(given, set | frozenset):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of tensors in sets will change between runs. "
                            "Please use a list instead.")
        plist = _param_list(given)
        held = {id(p) for p in self.params}
        if any(id(p) in held for p in plist):
            raise ValueError("some parameters appear in more than one parameter group")
        names = cls.hyperparameter_names()
        extra = {k: v for k, v in param_group.items() if k in names}
        user = {k: v for k, v in param_group.items()
                if k not in names and k not in ("params", "initial_lr")}
        for k in user:
            why = check_user_key(cls, k)
            if why is not None:
                raise TypeError(f"unknown hyperparameter(s) [{k!r}] for optimizer "
                                f"{cls.name!r}: {why}; accepted: {names} and keys of your own, "
                                "which torch keeps in the group ('name')")
        defaults = getattr(self, "defaults", None) or self.hyperparameters()
        hyper = cls.check_hyperparameters(**{**defaults, **extra})
        group = cls.__new__(cls)
        cls.__init__(group, plist, **hyper)
        object.__setattr__(group, "defaults", defaults)
        for k, v in user.items():
            group.set_user_key(k, v)
        if param_group.get("initial_lr") is not None:
            group.initial_lr = check_number("initial_lr", param_group["initial_lr"])
        if self._groups is None:
            self._hold_groups(defaults)
        self._groups.append(group)
        self.params = [*self.params, *plist]

    def _hold_groups(self, defaults: dict[str, Any]) -> None:
        """Turn a one-group optimizer into the holder of groups: its parameters, state,
        step count and hyperparameters move to the first group; its own attributes become
        ``defaults``."""
        first = type(self).__new__(type(self))
        first.__dict__.update(self.__dict__)
        for name, value in defaults.items():
            object.__setattr__(self, name, value)
        self.__dict__.pop("initial_lr", None)
        self.__dict__.pop("_user_keys", None)  # the first group's now
        object.__setattr__(self, "_groups", [first])
        self.params = list(first.params)
        self.state = _GroupState(self._groups)
        self._scratch = {}

    @property
    def user_keys(self) -> dict[str, Any]:
        """This group's own keys beside its hyperparameters (torch keeps any other key of a
        parameter group, ``{"params": ..., "name": "encoder"}``, which the update never
        reads), as given; in :meth:`state_dict`'s ``param_groups`` and restored by
        :meth:`load_state_dict`."""
        return self.__dict__.get("_user_keys", {})

    def set_user_key(self, key: str, value: Any) -> None:
        """Set one of this group's own keys (:attr:`user_keys`)."""
        self.__dict__.setdefault("_user_keys", {})[key] = value

    # -- learning rate ---------------------------------------------------------------
    @property
    def lr(self) -> float:
        """Learning rate (>= 0); may be reassigned between steps."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = check_number("lr", value)

    # -- public API ------------------------------------------------------------------
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Apply one update to every parameter from its current ``.grad``.

        ``closure`` (torch's ``step(closure)``): a function that recomputes the loss and fills
        the ``.grad`` arrays (``net.forward``, ``loss.forward``, ``net.backward``); it is called
        first and its value is returned (None without one). Before, ``opt.step(closure)`` was
        Python's "takes 1 positional argument but 2 were given".

        Hyperparameters may be changed between steps, as a ``param_group``'s in torch: a
        ``weight_decay`` set from 0 (or back) changes how many scratch slots the rule needs,
        which are reallocated then (one slot doubled as ``g + wd*w`` and the rule's temporary:
        Adam's steps came out 0.087 away from torch's, SGD with Nesterov 0.53)."""
        loss = None
        if closure is not None:
            if not callable(closure):
                raise TypeError(f"closure must be a function that recomputes the loss and fills "
                                f"the .grad arrays (torch's step(closure)), got "
                                f"{type(closure).__name__} {closure!r:.60}")
            loss = closure()
        groups = self._groups
        if groups is not None:
            for g in groups:  # every group's .grad first: nothing changes when one is refused
                g._check_grads()
            for g in groups:
                g._advance()
            self.step_count += 1
            return loss
        self._check_grads()
        self._advance()
        return loss

    def _check_grads(self) -> None:
        """Refuse (before any update) a ``.grad`` the rule cannot use: :meth:`_refuse_grad`."""
        params = self.params
        for i in range(len(params)):  # before any update: nothing changes when one is refused
            p = params[i]  # (indexed: a list subclass hooking iteration sees one pass per step)
            g = p.grad
            if (g.__class__ is not np.ndarray or g.shape != p.value.shape
                    or g.dtype.kind not in "biuf"):
                self._refuse_grad(p)

    def _advance(self) -> None:
        """One update of this group's parameters (their ``.grad`` checked)."""
        if not self.state:
            self._allocate()
        elif self._n_scratch() != self._scratch_slots:
            self._allocate_scratch()
        self.step_count += 1
        self._update(self.step_count)

    def _refuse_grad(self, p: Parameter) -> None:
        """A ValueError naming a parameter whose ``.grad`` the rule cannot use (``None``, as
        torch's ``zero_grad()`` leaves it, another shape, or complex/text/object values): it
        was NumPy's "Cannot cast ufunc 'multiply' output from dtype('O')" or a broadcast
        error, after the parameters before it had been updated."""
        g = p.grad
        if (isinstance(g, np.ndarray) and g.shape == p.value.shape
                and g.dtype.kind in "biuf"):
            return  # an ndarray subclass (a memmap): NumPy takes it
        if g is not None and not isinstance(g, np.ndarray):  # a list, a NumPy scalar of a 0-d
            arr = np.asarray(_torch_values(g))  # parameter, a tensor: as an array
            if arr.dtype.kind in "biuf" and arr.shape == p.value.shape:
                p.grad = arr.astype(p.value.dtype)
                return
        got = ("None" if g is None else f"of dtype {g.dtype} (complex, text or objects)"
               if isinstance(g, np.ndarray) and g.shape == p.value.shape
               else f"of shape {np.shape(g)}" if isinstance(g, np.ndarray)
               else f"a {type(g).__name__} of shape {np.shape(g)}"
               if isinstance(g, list | tuple | np.generic | float | int) else
               f"a {type(g).__name__}")
        raise ValueError(f"{self.name} step: parameter {p.name!r} has .grad {got}; expected "
                         f"an array of its value's shape {p.value.shape} of real numbers "
                         "(zeros for no gradient; a parameter that is not trained is left out "
                         "of the optimizer); no parameter was updated")

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Fill every ``.grad`` with zeros (in place; a ``.grad`` set to None or to an array
        of another shape or dtype is replaced by zeros of the value's:
        ``Parameter.grad_buffer``); ``set_to_none=True`` (torch's keyword and default) sets
        every ``.grad`` to None instead, which the next ``net.backward`` fills (``step()``
        refuses a None ``.grad``)."""
        if check_flag("set_to_none", set_to_none):
            for p in self.params:
                p.grad = None
            return
        for p in self.params:
            p.grad_buffer().fill(0)

    @classmethod
    def hyperparameter_names(cls) -> list[str]:
        """The constructor's keyword arguments (``lr`` first), read from its signature; each is
        stored under the same attribute name. Read once per class (config validation asks
        for every point of a sweep grid)."""
        names = cls.__dict__.get("_hyperparameter_names")
        if names is None:
            names = [k for k in inspect.signature(cls.__init__).parameters
                     if k not in ("self", "params")]
            cls._hyperparameter_names = names  # on this class only, never inherited
        return list(names)

    def hyperparameters(self) -> dict[str, Any]:
        """Constructor keyword arguments (name -> value), e.g. for logging or rebuilding."""
        return {k: getattr(self, k) for k in self.hyperparameter_names()}

    @classmethod
    def check_hyperparameters(cls, **hyperparameters: Any) -> dict[str, Any]:
        """Run the constructor's checks without parameters to optimize (the experiment spec
        validates a config with them) and return the normalised hyperparameters; TypeError
        for an unknown name, ValueError naming a bad value."""
        unknown = sorted(set(hyperparameters) - set(cls.hyperparameter_names()))
        if unknown:
            raise TypeError(f"unknown hyperparameter(s) {unknown} for optimizer {cls.name!r}; "
                            f"accepted: {cls.hyperparameter_names()}")
        bare = cls.__new__(cls)
        cls.__init__(bare, _NO_PARAMETERS, **hyperparameters)
        return bare.hyperparameters()

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs, as torch's ``Optimizer.state_dict()`` (copies, so
        later steps leave it as it was): ``name``, ``hyperparameters`` (``lr`` included),
        ``step`` (the updates done: ``t`` of the bias corrections), ``scalars`` (running
        products such as NAdam's ``P_t``) and ``state``: one dict of buffers per parameter, in
        the order of ``params`` (Adam's ``exp_avg`` ``m`` and ``exp_avg_sq`` ``v``, SGD's
        ``momentum_buffer``, ...), and ``initial_lr`` once a learning-rate scheduler has set it
        (torch's group key, which a resumed scheduler's ``last_epoch`` needs). Plain Python and
        NumPy: ``pickle`` stores it.

        ``param_groups`` is torch's layout: one dict per group with its hyperparameters,
        ``params`` (indices into ``state``), ``step``, ``scalars`` and ``initial_lr`` once
        set (one group: the values above again). With several groups ``hyperparameters`` are
        the defaults and ``state`` runs over all parameters, group by group."""
        if self._groups is not None:
            out = {"name": self.name, "hyperparameters": self.hyperparameters(),
                   "step": self.step_count, "scalars": {}, "state": [], "param_groups": []}
            for g in self._groups:
                sub = g.state_dict()
                start = len(out["state"])
                out["state"].extend(sub["state"])
                group = {**sub["hyperparameters"],
                         "params": list(range(start, len(out["state"]))),
                         "step": sub["step"], "scalars": sub["scalars"]}
                if "initial_lr" in sub:
                    group["initial_lr"] = sub["initial_lr"]
                group.update(g.user_keys)
                out["param_groups"].append(group)
            return out
        out = {"name": self.name, "hyperparameters": self.hyperparameters(),
               "step": self.step_count,
               "scalars": {k: getattr(self, k) for k in self._state_scalars},
               "state": [{k: np.array(v, copy=True) for k, v in self.state.get(p, {}).items()}
                         for p in self.params]}
        if getattr(self, "initial_lr", None) is not None:
            out["initial_lr"] = self.initial_lr
        group = {**out["hyperparameters"], "params": list(range(len(self.params))),
                 "step": out["step"], "scalars": dict(out["scalars"])}
        if "initial_lr" in out:
            group["initial_lr"] = out["initial_lr"]
        group.update(self.user_keys)
        out["param_groups"] = [group]
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (of this kind of optimizer, over parameters of the
        same shapes and dtypes, in the same order): hyperparameters, step count and buffers are
        copied in, so the next steps are bit for bit those the saved optimizer would have taken
        (``torch.optim.Optimizer.load_state_dict``). Checked in full before anything changes:
        a mismatch is a ValueError naming it. With ``param_groups`` (torch's layout): the same
        number of groups, of the same sizes (torch's check), each group's values read from its
        dict (``param_groups[i]["lr"]`` edited before loading is taken)."""
        if self._groups is None and not (isinstance(state_dict, dict)
                                         and "param_groups" in state_dict):
            self._apply_loaded(self._check_loaded(state_dict))  # a dict without groups
            return
        self._check_loaded(state_dict, groups=False)  # name, defaults, the dict's keys
        groups = self.groups
        every = state_dict["state"]
        if isinstance(every, list | tuple) and len(every) != len(self.params):
            raise ValueError(f"state_dict holds the state of {len(every)} parameters; this "
                             f"{self.name} optimizes {len(self.params)}")
        saved = state_dict.get("param_groups")
        if not isinstance(saved, list | tuple) or len(saved) != len(groups):
            n = len(saved) if isinstance(saved, list | tuple) else "no"
            raise ValueError(f"loaded state dict has {n} parameter groups; this {self.name} "
                             f"optimizer has {len(groups)}")
        names = type(self).hyperparameter_names()
        loaded = []
        for i, (g, sg) in enumerate(zip(groups, saved)):
            if not isinstance(sg, dict) or not isinstance(sg.get("params"), list | tuple) \
                    or len(sg["params"]) != len(g.params):
                raise ValueError(f"loaded state dict contains a parameter group ({i}) that "
                                 "doesn't match the size of optimizer's group")
            try:
                bufs = [state_dict["state"][k] for k in sg["params"]]
            except (IndexError, TypeError, KeyError):
                raise ValueError(f"state_dict param_groups[{i}]['params'] indexes no saved "
                                 "state") from None
            hyper = {**state_dict["hyperparameters"], **{k: sg[k] for k in names if k in sg}}
            sub = {"name": self.name, "hyperparameters": hyper,
                   "step": sg.get("step", state_dict["step"]),
                   "scalars": sg.get("scalars", state_dict.get("scalars")), "state": bufs}
            if sg.get("initial_lr") is not None:
                sub["initial_lr"] = sg["initial_lr"]
            user = {k: v for k, v in sg.items() if k not in names and k not in _GROUP_LAYOUT}
            for k in user:
                why = check_user_key(type(self), k)
                if why is not None:
                    raise ValueError(f"state_dict param_groups[{i}] holds {k!r}: {why}")
            loaded.append((g._check_loaded(sub), user))
        for g, (checked, user) in zip(groups, loaded):
            g._apply_loaded(checked)
            g.__dict__.pop("_user_keys", None)  # torch: the saved group's keys replace them
            for k, v in user.items():
                g.set_user_key(k, v)
        if self._groups is None:
            return
        defaults = type(self).check_hyperparameters(**state_dict["hyperparameters"])
        for name, value in defaults.items():
            object.__setattr__(self, name, value)
        self.defaults = defaults
        self.step_count = int(state_dict["step"])

    def _check_loaded(self, state_dict: Any, groups: bool = True) -> tuple[Any, ...]:
        """Check a one-group :meth:`state_dict` against this optimizer (``groups=False``: the
        keys, name and hyperparameters only); the checked values for :meth:`_apply_loaded`."""
        if not isinstance(state_dict, dict) or not {"name", "hyperparameters", "step",
                                                    "state"} <= set(state_dict):
            raise TypeError(f"load_state_dict takes the dict of an optimizer's state_dict(); "
                            f"got {type(state_dict).__name__} {state_dict!r:.60}")
        if state_dict["name"] != self.name:
            raise ValueError(f"state_dict of a {state_dict['name']!r} optimizer cannot be loaded "
                             f"into {self.name!r}; expected the state of a {self.name!r}")
        hyper = type(self).check_hyperparameters(**state_dict["hyperparameters"])
        if not groups:
            return ()
        step = state_dict["step"]
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise ValueError(f"state_dict step = {step!r:.60}; expected an integer >= 0")
        saved = state_dict["state"]
        if not isinstance(saved, list | tuple) or len(saved) != len(self.params):
            n = len(saved) if isinstance(saved, list | tuple) else type(saved).__name__
            raise ValueError(f"state_dict holds the state of {n} parameters; this {self.name} "
                             f"optimizes {len(self.params)}")
        state: dict[Parameter, dict[str, Any]] = {}
        for i, (p, bufs) in enumerate(zip(self.params, saved)):
            if not isinstance(bufs, dict):
                raise ValueError(f"state_dict state[{i}] is a {type(bufs).__name__}; expected "
                                 "a dict of buffers")
            for key, buf in bufs.items():
                if not isinstance(buf, np.ndarray) or buf.shape != p.value.shape \
                        or buf.dtype != p.value.dtype:
                    got = (f"shape {buf.shape} {buf.dtype}" if isinstance(buf, np.ndarray)
                           else f"a {type(buf).__name__}")
                    raise ValueError(f"state_dict state[{i}][{key!r}] has {got}; parameter "
                                     f"{p.name!r} is {p.value.shape} {p.value.dtype}")
            state[p] = {k: np.array(v, copy=True) for k, v in bufs.items()}
        initial_lr = state_dict.get("initial_lr")
        if initial_lr is not None:
            initial_lr = check_number("initial_lr", initial_lr)
        scalars = dict(state_dict.get("scalars") or {})
        if set(scalars) != set(self._state_scalars):
            raise ValueError(f"state_dict scalars {sorted(scalars)}; a {self.name} keeps "
                             f"{sorted(self._state_scalars)}")
        return hyper, scalars, initial_lr, step, state, saved

    def _apply_loaded(self, checked: tuple[Any, ...]) -> None:
        """Set what :meth:`_check_loaded` checked (nothing can fail here)."""
        hyper, scalars, initial_lr, step, state, saved = checked
        for name, value in hyper.items():  # checked together above (nesterov with momentum)
            object.__setattr__(self, name, value)  # (lr: through its property)
        for name, value in scalars.items():
            object.__setattr__(self, name, float(value))
        if initial_lr is not None:
            object.__setattr__(self, "initial_lr", initial_lr)
        self.step_count = int(step)
        self.state = state if step > 0 or any(saved) else {}
        if self.state:
            self._allocate_scratch()

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        groups = "" if self._groups is None else f" in {len(self._groups)} groups"
        return f"{type(self).__name__}({len(self.params)} parameters{groups}, {hp})"

    # -- subclass hooks --------------------------------------------------------------
    @property
    def _coupled_wd(self) -> bool:
        """True when weight decay is added to the gradient (``g + wd * w``)."""
        return self.weight_decay != 0.0

    def _init_state(self, p: Parameter) -> dict[str, Any]:
        return {}

    def _n_scratch(self) -> int:
        return 1 + self._coupled_wd

    def _update(self, t: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------------
    def _allocate(self) -> None:
        for p in self.params:
            self.state[p] = self._init_state(p)
        self._allocate_scratch()

    def _allocate_scratch(self) -> None:
        k = self._scratch_slots = self._n_scratch()
        for p in self.params:
            block = xp.empty((k, *p.value.shape), dtype=p.value.dtype)
            self._scratch[p] = tuple(block[i, ...] for i in range(k))  # views, 0-d safe

    def _buffer(self, p: Parameter, key: str) -> Array:
        """``state[p][key]``, created as zeros when missing: a hyperparameter switched on after
        the first step (Adam's ``amsgrad``, RMSprop's ``centered`` or ``momentum``) was a
        KeyError naming the buffer."""
        st = self.state[p]
        buf = st.get(key)
        if buf is None:
            buf = st[key] = xp.zeros_like(p.value)
        return buf

    def _direction(self, p: Parameter, slot: Array) -> tuple[Array, float]:
        """The gradient torch feeds its rule, as ``(G, sign)`` with ``grad' = sign * G``.

        ``grad' = (-g if maximize else g) + wd * w``. Without coupled decay ``G`` is ``p.grad``
        itself (read only) and the sign is folded into the caller's coefficients; with it
        ``G`` is ``slot`` (the last scratch slot), filled here, and the sign is 1.
        """
        g = p.grad
        if not self._coupled_wd:
            return g, (-1.0 if self.maximize else 1.0)
        xp.multiply(p.value, self.weight_decay, out=slot)
        if self.maximize:
            slot -= g
        else:
            slot += g
        return slot, 1.0

    def _adam_moments(self, p: Parameter, beta1: float, beta2: float, shrink: float,
                      decay_first: bool, tmp: Array,
                      slot: Array) -> tuple[Array, Array, Array, Array, float]:
        """The Adam family's first step for one parameter (Adam, NAdam, RAdam): decoupled decay
        first (``w *= 1 - lr*wd`` when ``decay_first``), then for the direction ``d``
        (:meth:`_direction`, into ``slot``) ``m = lerp(m, d, 1 - beta1)`` and
        ``v = beta2 v + (1 - beta2) d^2`` in place (``tmp`` scratch). Returns ``(w, m, v, d, sign)``
        (``d`` and ``sign`` as :meth:`_direction` gives them)."""
        w = p.value
        if decay_first:
            w *= shrink
        d, sign = self._direction(p, slot)
        st = self.state[p]
        m, v = st["exp_avg"], st["exp_avg_sq"]
        lerp(m, d, sign, 1.0 - beta1, tmp)
        v *= beta2
        xp.multiply(d, 1.0 - beta2, out=tmp)
        tmp *= d
        v += tmp
        return w, m, v, d, sign
