"""Round 25 (huntnp25): NumPy engine vs PyTorch under settings nobody combined yet."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def test_from_torch_softmax_over_the_batch_is_refused_for_its_dim_not_its_class():
    # torch's own nn.Softmax(dim=0) was refused as "torch.nn.modules.activation.Softmax, not
    # torch.nn's", which contradicts the accepted list naming Softmax
    from depthlab.bridge import from_torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=0))
    with pytest.raises(TypeError) as info:
        from_torch(model)
    msg = str(info.value)
    assert "not torch.nn's" not in msg
    assert "dim 0" in msg and "Softmax(dim=1)" in msg
