"""Round 39, lead: what readmehunt39 found the README promising and the code not keeping."""
from __future__ import annotations

import argparse
import inspect

from depthlab.cli import build_parser


def test_every_option_help_names_its_default() -> None:
    """README: "`--help` names every option's default" — every subcommand option that takes a
    value says its default (or that it has none); `doctor --torch`/`--data` did not."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    flags = (argparse._HelpAction, argparse._StoreTrueAction, argparse._StoreFalseAction,
             argparse._VersionAction, argparse._CountAction)
    bad = [(name, a.option_strings) for name, sp in sub.choices.items() for a in sp._actions
           if a.option_strings and a.help != argparse.SUPPRESS and not isinstance(a, flags)
           and "default" not in (a.help or "").lower()]
    assert not bad, bad


def test_public_callback_hooks_have_hints_and_docstrings() -> None:
    """The project standard: type hints on public functions, docstrings."""
    from depthlab.probes.recorder import ProbeRecorder
    from depthlab.training.early_stopping import EarlyStopping

    hooks = [getattr(ProbeRecorder, n) for n in
             ("on_train_begin", "before_update", "after_update", "on_train_end")]
    hooks.append(EarlyStopping.on_epoch_end)
    for fn in hooks:
        assert fn.__doc__, fn.__qualname__
        params = inspect.signature(fn).parameters
        assert all(p.annotation is not inspect.Parameter.empty
                   for name, p in params.items() if name != "self"), fn.__qualname__
