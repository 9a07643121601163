"""``depthlab reproduce``: the classic experiments, each claim measured beside the paper's."""

from .base import REGISTRY, Claim, Experiment, Result, format_claims, register, run_experiment


def list_experiments() -> list[Experiment]:
    from . import experiments  # noqa: F401

    return [REGISTRY[k] for k in sorted(REGISTRY)]


__all__ = ["Claim", "Experiment", "Result", "format_claims", "list_experiments", "register",
           "run_experiment"]
