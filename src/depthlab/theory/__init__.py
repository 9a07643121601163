"""Theory: predictions of signal and gradient propagation at initialisation.

* :mod:`.taylor`    Taylor coefficients at 0 (Xu et al. 2016: sigmoid needs 16x tanh's variance);
* :mod:`.variance`  layer-by-layer forward/backward variances (Glorot, He, LeCun derivations);
* :mod:`.meanfield` q*, chi1, c*, depth scales xi_c, xi_q (Poole et al. 2016, Schoenholz 2017);
* :mod:`.selu`      the SELU moment map and its attracting fixed point (Klambauer et al. 2017);
* :mod:`.gaussian`  Gaussian quadrature rules and activation resolution;
* :mod:`.batchnorm` gradient growth of batch-normalized plain nets (Yang et al. 2019);
* :mod:`.residual`  forward/gradient variances of pre-activation residual nets;
* :mod:`.predict`   ``predict_gradients``: one entry for plain, BN and residual networks
                    (``loss=``: the note's output-gradient terms are that loss's);
* :mod:`.lengths`   the recursions averaged over the examples' input lengths (a data set's own
                    with ``predict_gradients(x=)``), every length in one pass;
* :mod:`.labels`    the labels of a batch (``predict_gradients(y=)``): a batch-norm prediction's
                    note warns of labels of (nearly) one class.
"""

from .batchnorm import BNGradientFactor, bn_gradient_factor, propagate_batchnorm
from .gaussian import (
    ScalarActivation,
    affine_activation,
    gauss_expect,
    gauss_expect_2d,
    hermite_rule,
    normal_rule,
    rescaled_sigmoid,
    resolve_activation,
)
from .meanfield import (
    MeanField,
    c_map,
    critical_sigma_w2,
    gradient_growth,
    length_map_slope,
    meanfield,
    q_map,
)
from .predict import GradientPrediction, predict_gradients
from .residual import propagate_residual
from .selu import (
    selu_fixed_point,
    selu_jacobian,
    selu_map,
    selu_spectral_radius,
    selu_trajectory,
)
from .taylor import TaylorCoefficients, numerical_taylor, taylor
from .variance import gradient_ratio, preserving_weight_variance, propagate

__all__ = [
    "BNGradientFactor",
    "GradientPrediction",
    "bn_gradient_factor",
    "predict_gradients",
    "propagate_batchnorm",
    "propagate_residual",
    "MeanField",
    "ScalarActivation",
    "TaylorCoefficients",
    "affine_activation",
    "c_map",
    "critical_sigma_w2",
    "gauss_expect",
    "gauss_expect_2d",
    "gradient_growth",
    "gradient_ratio",
    "hermite_rule",
    "length_map_slope",
    "meanfield",
    "normal_rule",
    "numerical_taylor",
    "preserving_weight_variance",
    "propagate",
    "q_map",
    "rescaled_sigmoid",
    "resolve_activation",
    "selu_fixed_point",
    "selu_jacobian",
    "selu_map",
    "selu_spectral_radius",
    "selu_trajectory",
    "taylor",
]
