"""Round 35b: depthlab.torch.Watch inside practitioners' training loops (torchwatch35b)."""
from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
dlt = pytest.importorskip("depthlab.torch")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


def _amp_loop(give_scaled: bool) -> tuple[list[float], list[str]]:
    torch.manual_seed(1)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    losses = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        watch = dlt.Watch(model, every=2, theory=False, scaler=scaler)
        for _ in range(3):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            scaled = scaler.scale(loss)
            scaled.backward()
            losses.append(loss.item())
            watch.step(scaled if give_scaled else loss)
            scaler.step(opt)
            scaler.update()
        watch.close()
    got = watch.losses()["loss"].tolist()
    assert got == pytest.approx(losses if not give_scaled else [v * 1024 for v in losses])
    return got, [str(w.message) for w in caught if "scaler.scale" in str(w.message)]


def test_a_scaled_loss_given_to_watch_step_is_warned_about_once_and_the_loss_itself_is_not():
    # scaler.scale(loss).backward(); watch.step(scaled): losses() and the report's loss curve
    # held 1024 x the loss (and jumped with every change of the scale) without a word
    _, warned = _amp_loop(give_scaled=True)
    assert len(warned) == 1, warned
    assert "1024" in warned[0] and "watch.step(loss)" in warned[0]
    _, quiet = _amp_loop(give_scaled=False)
    assert quiet == []
