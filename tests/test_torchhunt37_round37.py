"""torchhunt37: dlt.probe / dlt.predict on models the earlier tests had not seen."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402


@dataclasses.dataclass
class _Out:
    logits: torch.Tensor
    feat: torch.Tensor


class _DataclassOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 10), nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> _Out:
        h = torch.tanh(self.a(x))
        return _Out(self.b(h), h)


@pytest.mark.parametrize("fn", ["probe", "predict"])
def test_a_dataclass_output_given_to_a_torch_loss_names_its_fields(fn):
    """A model returning a dataclass (logits, features) with nn.CrossEntropyLoss: torch said
    "cross_entropy_loss(): argument 'input' (position 1) must be Tensor, not _Out"."""
    torch.manual_seed(0)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    with pytest.raises(TypeError, match=r"dataclass _Out with fields logits \(8, 3\), feat "
                                        r"\(8, 10\).*CrossEntropyLoss takes one tensor.*"
                                        r"nn\.CrossEntropyLoss\(\)\(out\.logits, y\)"):
        getattr(dlt, fn)(_DataclassOut(), x, y, nn.CrossEntropyLoss())
    df = dlt.probe(_DataclassOut(), x, y, lambda o, t: nn.functional.cross_entropy(o.logits, t))
    assert set(df[df.layer >= 1].module) == {"a", "b"}


def _norm_cnn(norm) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), norm(16, False), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1), norm(16, True), nn.Tanh(),
                         nn.Flatten(), nn.Linear(16 * 36, 5))


def test_predict_models_instance_norm_as_groupnorm_with_a_channel_per_group():
    """InstanceNorm2d (CycleGAN, style transfer) was refused ('predict() models BatchNorm1d/2d/3d,
    LayerNorm, GroupNorm and RMSNorm after a layer'), though each example's channel normalized
    over its positions is GroupNorm(C, C) exactly: the same table as that twin."""
    x, y = torch.randn(32, 3, 6, 6), torch.randint(0, 5, (32,))
    torch.manual_seed(0)
    inst = dlt.predict(_norm_cnn(lambda c, a: nn.InstanceNorm2d(c, affine=a)), x, y,
                       nn.CrossEntropyLoss())
    torch.manual_seed(0)
    group = dlt.predict(_norm_cnn(lambda c, a: nn.GroupNorm(c, c, affine=a)), x, y,
                        nn.CrossEntropyLoss())
    assert np.allclose(inst.predicted, group.predicted, rtol=1e-9, equal_nan=True)
    assert np.allclose(inst.value, group.value, rtol=1e-6, equal_nan=True)
    g = inst[inst.quantity == "grad_pre_std"]
    ratio = (g.value / g.predicted).to_numpy()
    assert np.all((ratio > 0.8) & (ratio < 1.25)), ratio


def test_predict_refuses_instance_norm_on_running_statistics_or_an_unbatched_read():
    x, y = torch.randn(8, 3, 4, 4), torch.randint(0, 5, (8,))
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1),
                          nn.InstanceNorm2d(4, track_running_stats=True), nn.ReLU(),
                          nn.Flatten(), nn.Linear(64, 5)).eval()
    with pytest.raises(ValueError, match=r"InstanceNorm.*'1' is in eval mode with "
                                         r"track_running_stats=True.*model\.train\(\)"):
        dlt.predict(model, x, y, nn.CrossEntropyLoss())
    # an InstanceNorm1d after a Linear: torch reads (N, C) as one unbatched example whose
    # "channels" are the N rows; taken as a batch of N examples of one value each, the
    # prediction was inf
    mlp = nn.Sequential(nn.Linear(6, 8), nn.InstanceNorm1d(8), nn.ReLU(), nn.Linear(8, 5))
    with pytest.warns(UserWarning), pytest.raises(
            ValueError, match=r"'1' is a InstanceNorm1d given a tensor of shape \(16, 8\), "
                              r"which torch reads as one unbatched.*LayerNorm\(8\)"):
        dlt.predict(mlp, torch.randn(16, 6), torch.randint(0, 5, (16,)), nn.CrossEntropyLoss())


@pytest.mark.parametrize("shuffle,c_in,side", [(lambda: nn.PixelShuffle(2), 4, 16),
                                                (lambda: nn.PixelUnshuffle(2), 64, 4),
                                                (lambda: nn.ChannelShuffle(4), 16, 8)])
def test_predict_passes_through_modules_that_only_rearrange_the_values(shuffle, c_in, side):
    """Conv -> ReLU -> PixelShuffle (a super-resolution upsampler) / PixelUnshuffle /
    ChannelShuffle (ShuffleNet) -> Conv was refused ('the input of '3' is not the previous
    layer's output ... it is the output of '2' (PixelShuffle)'), though such a module only
    moves each value to another place, as Flatten/Unflatten do: no variance changes."""
    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 5, (32,))
    ratios = []
    for seed in range(2):
        torch.manual_seed(seed)
        groups = 4 if c_in == 16 else 1
        model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), shuffle(),
                              nn.Conv2d(c_in, 16, 3, padding=1, groups=groups), nn.Tanh(),
                              nn.Flatten(), nn.Linear(16 * side * side, 5))
        p = dlt.predict(model, x, y, nn.CrossEntropyLoss())
        p = p[p.quantity == "grad_pre_std"]
        ratios.append((p.value / p.predicted).to_numpy())
    mean = np.mean(ratios, axis=0)
    assert len(mean) == 3 and np.all((mean > 0.8) & (mean < 1.25)), mean
