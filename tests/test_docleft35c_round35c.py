"""Round 35c (docleft35c): dead_relu's cure for the most-dead layer's units that large updates
killed is judged on that layer, as the README says ("only when more than half of the most-dead
layer's dead units died after initialization")."""
import depthlab as dl
from depthlab.data import load_dataset


def test_dead_relu_whose_worst_layer_died_under_large_updates_gets_the_smaller_lr() -> None:
    # 7 hidden relu layers of 32 (Glorot, 0.5x He's variance) at SGD lr 1: a probed update of
    # 0.24 of the weights' norm (lr_too_high), the top layer 16% dead at init and 100% after;
    # another layer started 31% dead (> 30%), which used to veto the smaller learning rate and
    # give He's init instead (verified: val acc 0.061 -> 0.061; lr 0.1: 0.061 -> 0.41)
    ds = load_dataset("digits", seed=0)
    d = dl.doctor(dict(sizes=[64] + [32] * 7 + [10], activation="relu"), ds, lr=1.0, steps=100)
    kinds = [f.kind for f in d.findings]
    assert "lr_too_high" in kinds and "dead_relu" in kinds
    dead = next(f for f in d.findings if f.kind == "dead_relu")
    p = d.probes[d.probes.quantity == "dead_frac"].pivot(index="step", columns="layer",
                                                          values="value")
    worst = dead.evidence["worst_layer"]
    start, end = float(p[worst].iloc[0]), float(p[worst].iloc[-1])
    assert end - start > end / 2  # most of its dead units died after initialization
    assert float(p.iloc[0].max()) > 0.3  # another layer started above the 30% threshold
    assert dead.prescription == {"lr": 0.1}
    assert "Units died during training" in dead.prescription_text


def test_dead_relu_whose_worst_layer_died_beside_a_layer_dead_at_init_gets_the_smaller_lr() -> None:
    # 8 He-initialized relu layers of 16 at SGD lr 2 (no lr_too_high): the top layer 6% dead at
    # init, 100% after; another started 31% dead, which gave leaky_relu ("did not help", val acc
    # 0.061 -> 0.061) where lr / 10 helped (0.061 -> 0.12, the layer 100% -> 62% dead)
    ds = load_dataset("digits", seed=0)
    d = dl.doctor(dict(sizes=[64] + [16] * 8 + [10], activation="relu", init="he_normal"), ds,
                  lr=2.0, steps=100)
    assert d.kinds == ["dead_relu"]
    dead = d.findings[0]
    p = d.probes[d.probes.quantity == "dead_frac"].pivot(index="step", columns="layer",
                                                          values="value")
    worst = dead.evidence["worst_layer"]
    assert float(p[worst].iloc[-1]) == 1.0 and float(p[worst].iloc[0]) < 0.5
    assert float(p.iloc[0].max()) > 0.3
    assert dead.prescription == {"lr": 0.2}
    assert "Units died during training" in dead.prescription_text
