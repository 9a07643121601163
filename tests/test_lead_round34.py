"""Lead's regression tests of round 34."""
from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn


def test_the_init_cures_reinitialize_attention_in_projections() -> None:
    """A module whose child owns a weight is no layer (torchhunt34), but MultiheadAttention's
    in_proj weight is one beside its out_proj: the doctor's init cures skipped it."""
    from depthlab.torch import prescriptions as rx
    from depthlab.torch.train import TorchTrainSpec

    torch.manual_seed(0)
    model = nn.Sequential(nn.TransformerEncoder(nn.TransformerEncoderLayer(
        8, 2, 16, dropout=0.0, batch_first=True), 1, enable_nested_tensor=False),
        nn.Flatten(), nn.Linear(24, 3))
    x = torch.randn(6, 3, 8)
    attn = model[0].layers[0].self_attn
    for cure in ("lsuv", "matched"):
        cured, _ = rx.apply({"init": cure}, copy.deepcopy(model), TorchTrainSpec(), x)
        got = cured[0].layers[0].self_attn
        assert not torch.equal(got.in_proj_weight, attn.in_proj_weight), cure
        assert not torch.equal(got.out_proj.weight, attn.out_proj.weight), cure


def test_units_killed_by_large_updates_get_the_smaller_learning_rate() -> None:
    """A Glorot-initialized relu net (0.6x He's variance) whose units large updates killed
    was prescribed He's init (readmewalk34b: it did not help, val acc 0.12 -> 0.12), not the
    10x smaller learning rate that cures it (0.12 -> 0.96)."""
    import depthlab as dl
    from depthlab.data import load_dataset

    data = load_dataset("digits", seed=0, standardize=True)
    dg = dl.doctor(dict(sizes=[64, 16, 16, 10], activation="relu", init="glorot_uniform"),
                   data, steps=200, lr=2.0)
    dead = [f for f in dg.findings if f.kind == "dead_relu"]
    # every unit of the layer dead ("all") on some CPUs' BLAS, most of them ("died") on others
    assert dead and dead[0].evidence["reason"] in ("died", "all")
    assert dead[0].prescription == {"lr": 0.2}
    assert "smaller learning rate" in dead[0].prescription_text
