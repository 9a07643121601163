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
