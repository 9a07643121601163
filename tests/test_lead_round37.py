"""Round 37, lead: bad torch inputs that reached the user as torch's own errors."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import depthlab.torch as dlt  # noqa: E402


class _Bag(nn.Module):
    def __init__(self):
        super().__init__()
        self.e = nn.Embedding(20, 8)
        self.l = nn.Linear(8, 2)

    def forward(self, x):
        return self.l(self.e(x).mean(1))


@pytest.mark.parametrize("loss_fn", [nn.BCEWithLogitsLoss(), F.binary_cross_entropy_with_logits])
def test_probe_names_a_binary_cross_entropys_target_shape(loss_fn):
    """torch said only 'Target size (torch.Size([4])) must be the same as input size
    (torch.Size([4, 1]))'."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    with pytest.raises(ValueError, match=r"y has shape \(4,\) .* output has shape \(4, 1\).*"
                                         r"y.reshape\(4, 1\)"):
        dlt.probe(m, torch.randn(4, 8), torch.rand(4), loss_fn)


def test_probe_names_float_token_ids():
    """A raw RuntimeError ('Expected tensor for argument #1 'indices' ...') became a TypeError
    naming the embedding and the remedy."""
    torch.manual_seed(0)
    x = torch.randint(0, 20, (6, 5)).float()
    with pytest.raises(TypeError, match=r"Embedding 'e' takes integer token ids.*x.long\(\)"):
        dlt.probe(_Bag(), x, torch.randint(0, 2, (6,)), nn.CrossEntropyLoss())


def test_doctor_names_the_remedy_of_a_bce_target_shape_and_float_ids():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    with pytest.raises(ValueError, match=r"give y as a column, y.reshape\(-1, 1\)"):
        dlt.doctor(lambda: nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1)),
                   (x, y), loss_fn=nn.BCEWithLogitsLoss(), steps=2)
    ids = rng.integers(0, 20, size=(32, 5)).astype(np.float32)
    with pytest.raises(ValueError, match=r"nn.Embedding takes integer token ids"):
        dlt.doctor(_Bag, (ids, rng.integers(0, 2, size=32)), loss_fn=nn.CrossEntropyLoss(),
                   steps=2)
