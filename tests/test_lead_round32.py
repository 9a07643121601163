"""Lead's round-32 regression tests."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
import depthlab.torch as dlt  # noqa: E402


def test_watch_losses_mid_run_lists_every_step_so_far():
    """``watch.losses()`` between records lists every step seen, not only those up to the
    last record (every=3 after 5 steps: steps 0..4, each the loss the loop computed)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    loss_fn = torch.nn.CrossEntropyLoss()
    watch = dlt.Watch(model, every=3)
    seen = []
    try:
        for _ in range(5):
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            watch.step(loss)
            opt.step()
            seen.append(loss.item())
        mid = watch.losses()
        assert mid["step"].tolist() == [0, 1, 2, 3, 4]
        assert mid["loss"].tolist() == pytest.approx(seen, rel=1e-7)
        # and nothing is listed twice when the next record or close transfers again
        for _ in range(2):
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            watch.step(loss)
            opt.step()
            seen.append(loss.item())
    finally:
        watch.close()
    end = watch.losses()
    assert end["step"].tolist() == list(range(7))
    assert end["loss"].tolist() == pytest.approx(seen, rel=1e-7)
