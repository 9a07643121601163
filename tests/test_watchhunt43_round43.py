"""Round 43 (watchhunt43): dlt.Watch inside real training loops, its bad inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.torchmodels import ParameterListMaps
from torch import nn

import depthlab.torch as dlt
from depthlab.probes import accel


@pytest.mark.parametrize("out", ["runs\x00", Path("a\x00b")])
def test_out_with_a_nul_character_is_named(out: str | Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """``out=`` holding a NUL byte (no path can) raised the store's bare "embedded null byte",
    naming neither ``out`` nor its value; now a one-line ValueError naming both, nothing
    created."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"^out=.*NUL character.*expected a folder"):
        dlt.Watch(nn.Linear(3, 3), out=out)
    assert list(tmp_path.iterdir()) == []


def _ratio(w1: torch.Tensor, w0: torch.Tensor) -> float:
    return float((w1 - w0).norm() / w0.norm())


@pytest.mark.parametrize("path", ["kernels", "torch_ops"])
@pytest.mark.parametrize("every, inside", [(1, {0}), (2, {1, 3}), (1, {0, 2, 3})])
@pytest.mark.parametrize("maps", [False, True])
def test_step_under_inference_mode_then_outside(path: str, every: int, inside: set[int],
                                                maps: bool,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A loop that calls ``Watch.step(loss)`` inside ``torch.inference_mode()`` (its logging
    block) on some steps: on the torch-operations path (CUDA's; the CPU without Numba) the
    snapshot buffers made there were inference tensors, and the next record outside it failed
    with 'Inplace update to inference tensor outside InferenceMode is not allowed'. Now every
    record's ``update_ratio`` is ``||W_n - W_{n-1}|| / ||W_{n-1}||`` (float64 reference of the
    test's own), the map layers' (a ParameterList's ``h @ w``) too."""
    if path == "torch_ops":
        monkeypatch.setattr(accel, "kernels", lambda: None)
    torch.manual_seed(0)
    if maps:
        model = ParameterListMaps()
        weights = {"inp": model.inp.weight, "ws.0": model.ws[0], "out": model.out.weight}
        g = torch.Generator().manual_seed(1)
        x = torch.randn(16, 5, generator=g, dtype=torch.float64)
    else:
        model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
        weights = {"0": model[0].weight, "2": model[2].weight}
        g = torch.Generator().manual_seed(1)
        x = torch.randn(16, 6, generator=g)
    y = torch.randint(0, 3, (16,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = dlt.Watch(model, every=every, theory=False)
    before: list[dict[str, torch.Tensor]] = []
    for i in range(5):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        before.append({k: w.detach().double().clone() for k, w in weights.items()})
        if i in inside:
            with torch.inference_mode():
                watch.step(loss)
        else:
            watch.step(loss)
        opt.step()
    watch.close()
    table = watch.frame()
    ratios = table[table["quantity"] == "update_ratio"]
    seen = set()
    for step, module, value in zip(ratios["step"], ratios["module"], ratios["value"]):
        if module in weights:
            want = _ratio(before[step][module], before[step - 1][module])
            assert value == pytest.approx(want, rel=1e-6), (step, module)
            seen.add((step, module))
    assert seen == {(s, k) for s in range(every, 5, every) for k in weights}
