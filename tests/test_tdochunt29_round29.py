"""Round 29 (tdochunt29): the torch doctor and the rules it shares with the NumPy doctor."""

from __future__ import annotations

import math

import pandas as pd

import depthlab as dl
from depthlab.diagnosis.rules import RunContext, rule_exploding, rule_vanishing


def _gradient_ctx(grads: dict[int, dict[int, float]], activation: str = "tanh") -> RunContext:
    """A RunContext of a 6-hidden-layer MLP whose probe table holds ``grads[step][layer]``
    (grad_pre_std) and a probe loss that falls but stays far above 1% of its start."""
    sizes = [8, 16, 16, 16, 16, 16, 16, 4]
    net = dl.mlp(sizes, activation, "glorot_uniform", seed=0)
    rows = []
    for i, (step, per_layer) in enumerate(sorted(grads.items())):
        rows.append((step, 0, "loss", 2.3 + 100.0 * i))
        rows += [(step, layer, "grad_pre_std", g) for layer, g in per_layer.items()]
    frame = pd.DataFrame(rows, columns=["step", "layer", "quantity", "value"])
    config = {"activation": activation, "batchnorm": False, "sizes": sizes}
    return RunContext(net=net, config=config, settings={}, frame=frame, history=None,
                      metrics={}, probe_examples=300, chance_loss=2.3)


def test_the_vanishing_layers_are_those_whose_gradient_the_ratio_says_is_small():
    # 6 tanh conv layers at Adam lr 0.5 on digits: step 0's gradients within 2x (layer 1
    # 1.8x smaller than layer 6), step 15's saturated (layers 1-4 ~1e-9, layers 5-6 ~7e-5; later
    # steps all 0, left out). The finding read 'the std of dL/ds in layer 1 is 354x smaller
    # than in layer 6' with layers [] : each layer's arithmetic median of its two raw stds
    # (step 0's dominating) was compared with the last layer's, not the per-step ratio the
    # message reports.
    grads = {0: {1: 1.26e-4, 2: 1.45e-4, 3: 1.65e-4, 4: 1.79e-4, 5: 2.04e-4, 6: 2.30e-4},
             15: {1: 1.16e-9, 2: 4.45e-10, 3: 1.77e-10, 4: 4.10e-10, 5: 6.8e-5, 6: 8.0e-5}}
    _, finding = rule_vanishing(_gradient_ctx(grads))
    assert finding is not None
    assert math.isclose(finding.evidence["ratio"], math.sqrt(8.0e-5 / 1.16e-9 * 2.30e-4 / 1.26e-4),
                        rel_tol=1e-9)
    # per layer, the median over the two probes of its gradient over layer 6's at that probe
    assert finding.layers == [1, 2, 3, 4]


def test_the_exploding_layers_are_read_as_the_ratio_is():
    # the mirror case: step 0 within 2x, a later probe's gradients all far smaller than step 0's
    # but its first layers' 1e5x larger than the last's (the arithmetic medians, step 0's,
    # were within 2x of each other: no layer listed)
    grads = {0: {1: 2.3e-4, 2: 2.0e-4, 3: 1.8e-4, 4: 1.6e-4, 5: 1.4e-4, 6: 1.26e-4},
             10: {1: 1e-6, 2: 5e-7, 3: 3e-7, 4: 1e-7, 5: 1.2e-11, 6: 1e-11}}
    _, finding = rule_exploding(_gradient_ctx(grads))
    assert finding is not None
    assert finding.layers == [1, 2, 3, 4]


def test_the_torch_init_cure_for_sigmoid_units_says_what_glorot_was_derived_for():
    # a 4-layer sigmoid MLP with N(0, 25) weights (it was N(0, 1), ~17x Glorot's; see below):
    # the NumPy rule's text says Glorot's variance was derived for f'(0) = 1 and that the
    # sigmoid's linear regime keeps variances at 16x it (Xu et al. 2016); the torch doctor
    # replaced it with 'Re-initialize each layer for the activation that follows it (He / Glorot
    # / LeCun).', silent on it (a 12-layer sigmoid regression at 33x Glorot trained to 7.4;
    # Glorot's variance left it at 19.5, a constant prediction's loss)
    import torch
    from torch import nn

    import depthlab.torch as dlt

    def make() -> nn.Module:
        model = nn.Sequential(nn.Linear(6, 32), nn.Sigmoid(), nn.Linear(32, 32), nn.Sigmoid(),
                              nn.Linear(32, 32), nn.Sigmoid(), nn.Linear(32, 2))
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 5.0)
        return model

    # N(0, 25): 800x Glorot's variance, beyond the sigmoid's critical one (103x Glorot's;
    # siginit29: N(0, 1), 32x, below it, is no init_mismatch)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g)
    y = (x[:, 0] > 0).long()
    d = dlt.doctor(make, (x, y), loss_fn=nn.CrossEntropyLoss(), optimizer=("sgd", {"lr": 0.1}),
                   steps=10, batch_size=16, seed=0, verify=False)
    f = d.finding("init_mismatch")
    assert f is not None and f.prescription == {"init": "matched"}
    assert "recommended for sigmoid units too" in f.prescription_text
    assert "16x" in f.prescription_text
    assert "0.24x of the gradient's std (chi1 = 0.056" in f.prescription_text


def test_a_plain_rnn_is_told_that_chrono_init_does_not_apply_not_switched_silently():
    # a plain nn.RNN stuck at chance with the gradient vanishing through time:
    # 'vanishing_through_time', whose rule names chrono initialization of gate biases; an
    # nn.RNN has no gates, so the doctor went on to Adam with Adam's text alone: the finding's
    # advice changed without a word. N(0, 0.01) weights over 40 time steps, labels set by the
    # first 3: 13-15 decades lost through time (threshold 3) over seeds 0-2. (It was N(0, 9)
    # weights over 12 steps: a chaotic net whose gradient through time grew or shrank with the
    # CPU's rounding, 1.5-3.7 decades, and whose first updates read 'lr_too_high' on some CPUs.)
    import torch
    from torch import nn

    import depthlab.torch as dlt

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.r = nn.RNN(4, 16, num_layers=2, batch_first=True)
            self.h = nn.Linear(16, 2)
            for name, p in self.r.named_parameters():
                if "weight" in name:
                    nn.init.normal_(p, 0.0, 0.1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.h(self.r(x)[0][:, -1])

    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 40, 4, generator=g)
    y = (x[:, :3, 0].sum(1) > 0).long()
    d = dlt.doctor(Net, (x, y), loss_fn=nn.CrossEntropyLoss(), optimizer=("sgd", {"lr": 0.1}),
                   steps=100, batch_size=32, seed=0, verify=False)
    f = d.finding("vanishing_through_time")
    assert f is not None and f.prescription == {"optimizer": "adam", "lr": 0.001}
    assert '"recurrent_init": "chrono"} does not apply' in f.prescription_text
    assert "plain nn.RNN" in f.prescription_text


def test_a_deep_he_swish_net_stuck_at_chance_with_small_steps_is_not_healthy():
    # 8 SiLU layers of 16, He init, zero biases, digits, sgd lr 0.01, 200 steps: the forward
    # signal shrinks ~1.4x per layer (act_std 0.41 -> 0.032: He's variance with SiLU's slope
    # 1/2 at 0), the steps stay small (largest update ratio 2.3e-4, a quarter of the healthy
    # 1e-3) and the probe loss went 2.307 -> 2.300 (a constant prediction's 2.301): a clean
    # bill of health, as the learning-rate rule asked for a 10x shortfall. Adam lr 1e-3
    # trains it to val acc 0.82, lr 0.1 to 0.47.
    from torch import nn

    import depthlab.torch as dlt
    from depthlab.data import load_dataset

    def make() -> nn.Module:
        layers = [nn.Linear(64, 16), nn.SiLU()]
        for _ in range(7):
            layers += [nn.Linear(16, 16), nn.SiLU()]
        model = nn.Sequential(*layers, nn.Linear(16, 10))
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        return model

    d = dlt.doctor(make, load_dataset("digits", seed=0), loss_fn=nn.CrossEntropyLoss(),
                   optimizer=("sgd", {"lr": 0.01}), steps=200, batch_size=64, seed=0,
                   verify=False)
    f = d.finding("lr_too_low")
    assert f is not None, d.kinds
    assert 1e-4 < f.evidence["largest_update_ratio"] < 1e-3 / 3
    assert f.prescription == {"lr": 0.1}
