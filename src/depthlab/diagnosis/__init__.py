"""The doctor: findings with evidence and verified prescriptions.

``doctor(net_or_config, data, ...)`` trains a copy of a network briefly with probes, applies
the rules of :mod:`depthlab.diagnosis.rules` (vanishing/exploding gradients, saturation, dead
ReLUs, mean shift, initializer mismatch, divergence, batch-norm drift) and returns a
:class:`Diagnosis`; with ``verify=True`` each prescription is re-run and judged.
"""

from .doctor import doctor
from .findings import Diagnosis, Finding, Verification
from .rules import KINDS, RULES

__all__ = ["KINDS", "RULES", "Diagnosis", "Finding", "Verification", "doctor"]
