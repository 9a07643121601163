"""One name registry for activations, losses, initializers and optimizers.

A :class:`Registry` maps canonical names to factories (classes or functions). Names are
looked up case-insensitively with ``-`` standing for ``_`` and through aliases
(``"xavier_uniform"`` -> ``"glorot_uniform"``); a name written without separators, as torch and
Keras spell classes (``"LeakyReLU"``, ``"GlorotUniform"``, ``"CrossEntropyLoss"``), is found
when exactly one registered name or alias reads the same without its ``_``. An unknown name
is a ValueError listing the registered names, with the closest one as a "did you mean" hint
(``validators.closest_name``); a keyword argument the factory does not take is a TypeError
listing the accepted ones (and the closest); an object that already is one (``passes``) is returned
unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_NOT_ARGUMENTS = ("self", "params", "args", "kwargs")


@lru_cache(maxsize=1024)
def _keyword_parameters(target: Callable[..., Any]) -> tuple[inspect.Parameter, ...]:
    """The parameters of ``target``'s signature that a name's keyword arguments may fill, read
    once per factory (``inspect.signature`` parses a built-in's text signature with the
    tokenizer: it was most of the time of building a 3000-layer ``dl.mlp``)."""
    return tuple(p for p in inspect.signature(target).parameters.values()
                 if p.name not in _NOT_ARGUMENTS)


class Registry(Generic[T]):
    """Named factories of one kind (``kind`` is the word used in messages: "activation").

    ``passes(obj)`` says whether ``obj`` is already built (returned by :meth:`build` as is);
    ``listed``: the names :attr:`names` gives (default: all registered ones).
    """

    def __init__(self, kind: str, factories: Mapping[str, Callable[..., T]],
                 aliases: Mapping[str, str] | None = None,
                 passes: Callable[[Any], bool] | None = None,
                 listed: tuple[str, ...] | None = None) -> None:
        self.kind = kind
        self.factories = dict(factories)
        self.aliases = dict(aliases or {})
        self.passes = passes or (lambda obj: False)
        for alias, target in self.aliases.items():
            if target not in self.factories:
                raise ValueError(f"alias {alias!r} points to unregistered {kind} {target!r}")
        compact: dict[str, set[str]] = {}
        for name in (*self.factories, *self.aliases):
            compact.setdefault(name.replace("_", ""), set()).add(self.aliases.get(name, name))
        # written without separators: only where that reading is unambiguous
        self._compact = {k: next(iter(v)) for k, v in compact.items() if len(v) == 1}
        unknown = [n for n in listed or () if n not in self.factories]
        if unknown:
            raise ValueError(f"listed {kind} {unknown[0]!r} is not registered")
        self._listed = None if listed is None else tuple(listed)

    @property
    def names(self) -> tuple[str, ...]:
        """The registered names (aliases not listed), in registration order; only ``listed``
        when given (the others, torch's for ports, are found by name but not offered as
        choices)."""
        return tuple(self.factories) if self._listed is None else self._listed

    def key(self, name: str) -> str:
        """The canonical name of ``name``; ValueError (unknown) or TypeError (not a string)."""
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} must be a name, got {type(name).__name__} {name!r}; "
                            f"expected one of: {', '.join(self.names)}")
        key = "_".join(name.lower().split()).replace("-", "_")  # "leaky relu", "He Normal"
        key = self.aliases.get(key, key)
        if key not in self.factories:
            key = self._compact.get(key.replace("_", ""), key)
        if key not in self.factories:
            raise ValueError(f"unknown {self.kind} {name!r}{self._hint(name)}; expected one of: "
                             f"{', '.join(self.names)}")
        return key

    def _hint(self, name: str) -> str:
        """`` (did you mean 'adam'?)`` for a mistyped name: the closest listed name or alias of
        one (an alias shown as the name it stands for), else the closest registered one, else
        ``""`` (``adma`` was told 'adamax', registered but not in the line's list, for the
        listed 'adam')."""
        from .validators import closest_name  # imports NumPy: only on an error

        listed = set(self.names)
        close = closest_name(name, (*listed, *(a for a, k in self.aliases.items()
                                               if k in listed)))
        if not close:
            close = closest_name(name, (*self.factories, *self.aliases))
        return f" (did you mean {self.aliases.get(close, close)!r}?)" if close else ""

    def __getitem__(self, name: str) -> Callable[..., T]:
        """The factory registered under ``name`` (or an alias of it)."""
        return self.factories[self.key(name)]

    def __contains__(self, name: object) -> bool:
        try:
            self.key(name)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
        return True

    def _parameters(self, name: str) -> list[inspect.Parameter]:
        """The keyword parameters of the factory of ``name`` (from its signature)."""
        factory = self[name]
        target = factory.__init__ if isinstance(factory, type) else factory
        try:
            return list(_keyword_parameters(target))
        except TypeError:  # an unhashable callable: its signature read each time
            return list(_keyword_parameters.__wrapped__(target))

    def arguments(self, name: str) -> list[str]:
        """The keyword arguments the factory of ``name`` accepts (from its signature)."""
        return [p.name for p in self._parameters(name)]

    def defaults(self, name: str) -> dict[str, Any]:
        """The keyword arguments of the factory of ``name`` that have a default, with it."""
        return {p.name: p.default for p in self._parameters(name)
                if p.default is not inspect.Parameter.empty}

    def check_arguments(self, name: str, kwargs: Mapping[str, Any]) -> None:
        """TypeError naming the first keyword argument the factory of ``name`` does not take."""
        accepted = self.arguments(name)
        for k in kwargs:
            if k not in accepted:
                from .validators import closest_name

                close = closest_name(k, accepted) if isinstance(k, str) else None
                hint = f" (did you mean {close!r}?)" if close else ""
                raise TypeError(f"unknown argument {k!r} for {self.kind} {self.key(name)!r}{hint}; "
                                f"accepted: {', '.join(accepted) if accepted else '(none)'}")

    def build(self, name: Any, *args: Any, **kwargs: Any) -> T:
        """``factory(*args, **kwargs)`` for ``name``; an already built object passes through
        (no keyword arguments allowed then)."""
        if self.passes(name):
            if kwargs:
                raise TypeError(f"cannot apply arguments {sorted(kwargs)} to the {self.kind} "
                                f"{name!r}")
            return name
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} must be a name or a built {self.kind}, got "
                            f"{type(name).__name__} {name!r}; expected one of: "
                            f"{', '.join(self.names)}")
        self.check_arguments(name, kwargs)
        return self[name](*args, **kwargs)
