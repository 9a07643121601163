"""Probes: measurement inside every hidden layer.

* :class:`ProbeRecorder` — a training callback recording per-layer statistics on a fixed probe
  batch (or the training batches), fixed-bin histograms and Jacobian singular values;
* :func:`probe` — the same statistics at one instant, without training;
* :func:`input_output_jacobian`, :func:`jacobian_singular_values` — for small networks.
"""

from .histograms import HISTOGRAM_KINDS, ROBUST_PERCENTILE, bin_counts, choose_edges
from .jacobian import input_output_jacobian, jacobian_singular_values
from .oneshot import probe
from .recorder import ProbeRecorder
from .stats import (
    PERCENTILES,
    SATURATION_RATIO,
    layer_quantities,
    layer_stats,
    measurement_mode,
    measurement_pass,
    percentiles_of,
)

__all__ = [
    "HISTOGRAM_KINDS",
    "ROBUST_PERCENTILE",
    "PERCENTILES",
    "SATURATION_RATIO",
    "ProbeRecorder",
    "bin_counts",
    "choose_edges",
    "input_output_jacobian",
    "jacobian_singular_values",
    "layer_quantities",
    "layer_stats",
    "measurement_mode",
    "measurement_pass",
    "percentiles_of",
    "probe",
]
