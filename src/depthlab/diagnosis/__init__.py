"""The doctor: findings with evidence and verified prescriptions.

``doctor(net_or_config, data, ...)`` trains a copy of a network briefly with probes, applies
the rules of :mod:`depthlab.diagnosis.rules` (a bounded output before a loss on logits,
unscaled inputs or regression targets, divergence, too-high or too-low learning rate,
initializer mismatch, residual activations exploding with depth, dead
ReLUs, saturation, vanishing/exploding gradients, batch-norm drift, mean shift)
and returns a :class:`Diagnosis`; with ``verify=True`` each prescription is re-run and judged,
and the finding whose prescription helped most leads.
"""

from .doctor import doctor
from .findings import Diagnosis, Finding, Verification
from .rules import KINDS, RULES, Rule

__all__ = ["KINDS", "RULES", "Diagnosis", "Rule", "Finding", "Verification", "doctor"]
