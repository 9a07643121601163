"""Batch norm's own gradient explosion at initialization (Yang et al. 2019) in the doctors'
exploding-gradient finding: named, with the predicted and measured per-layer factors, and no
re-initialization prescribed for it (bnexplode33)."""
import math

import pandas as pd
import pytest

import depthlab as dl
from depthlab.diagnosis.rules import RunContext, rule_exploding

YANG_RELU = math.sqrt(math.pi / (math.pi - 1.0))  # 1.2113 per ReLU layer


def _ctx(batchnorm: bool, per_layer: float, end_loss: float = 0.1, n: int = 16):
    """A ReLU MLP of ``n`` hidden layers of 8 whose probe table has its gradient grow by
    ``per_layer`` per layer towards the input at every one of 5 probes (loss 2.3 -> end_loss)."""
    sizes = [4] + [8] * n + [3]
    net = dl.mlp(sizes, "relu", "he_normal", batchnorm=batchnorm, seed=0)
    rows = []
    for i, step in enumerate((0, 10, 20, 30, 40)):
        rows.append((step, 0, "loss", 2.3 + (end_loss - 2.3) * i / 4))
        for layer in range(1, n + 1):
            rows.append((step, layer, "grad_pre_std", 1e-3 * per_layer ** (n - layer)))
    frame = pd.DataFrame(rows, columns=["step", "layer", "quantity", "value"])
    config = {"activation": "relu", "batchnorm": batchnorm, "sizes": sizes}
    return RunContext(net=net, config=config, settings={}, frame=frame, history=None,
                      metrics={}, probe_examples=300, chance_loss=2.3)


def test_batch_norms_own_explosion_is_named_with_yangs_factor_and_not_cured_by_reinit():
    f = rule_exploding(_ctx(True, 1.22))[1]
    assert f is not None and f.kind == "exploding_gradients"
    ev = f.evidence
    assert ev["bn_growth_predicted"] == pytest.approx(YANG_RELU, rel=1e-6)
    assert ev["bn_growth_measured"] == pytest.approx(1.22, rel=1e-9)
    assert ev["ratio_init"] == pytest.approx(1.22 ** 15)
    assert "Yang et al. 2019" in f.message and "1.211 per layer predicted" in f.message
    assert "1.22 measured at step 0" in f.message
    assert "trained nonetheless (probe loss 0.1" in f.message
    assert "init" not in f.prescription and "Re-initialize" not in f.prescription_text
    assert f.prescription == {"residual": True}  # NumPy: the identity path bounds the growth
    # not trained: no claim that it trained
    g = rule_exploding(_ctx(True, 1.22, end_loss=2.0))[1]
    assert "Yang et al. 2019" in g.message and "trained nonetheless" not in g.message


def test_other_growth_and_plain_nets_are_judged_as_before():
    far = rule_exploding(_ctx(True, 1.5))[1]  # 24% off batch norm's factor
    assert far is not None and "bn_growth_predicted" not in far.evidence
    assert "Yang" not in far.message
    plain = rule_exploding(_ctx(False, 1.22))[1]  # no batch norm: as before
    assert plain is not None and "bn_growth_predicted" not in plain.evidence
    assert "Yang" not in plain.message


def test_torch_doctor_prescribes_no_reinitialization_for_batch_norms_own_growth():
    torch = pytest.importorskip("torch")
    from torch import nn

    import depthlab.torch as dlt
    from depthlab.data import load_dataset

    def factory():
        layers, w = [], 64
        dims = [64] + [w] * 16
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b, bias=False), nn.BatchNorm1d(b), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(w, 10))

    torch.manual_seed(0)
    d = load_dataset("digits", seed=0)
    dg = dlt.doctor(factory, d, optimizer=("sgd", {"lr": 0.05, "momentum": 0.9}), steps=5,
                    verify=False, seed=0)
    f = next(f for f in dg.findings if f.kind == "exploding_gradients")
    assert "Yang et al. 2019" in f.message
    assert f.evidence["bn_growth_measured"] == pytest.approx(f.evidence["ratio_init"] ** (1 / 15))
    assert "init" not in f.prescription and "Re-initialize" not in f.prescription_text
