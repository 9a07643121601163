"""nphunt40 (round 40): the NumPy engine against torch on configurations not tried before."""

from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cross_entropy_ignore_index_matches_torch(dtype: str) -> None:
    """``cross_entropy(ignore_index=)`` (torch's, default -100): rows whose label is the
    ignored index add nothing and get a zero gradient; the mean divides by the kept rows
    (or their class weights' sum), also for the label-smoothing term. Was "unknown argument
    'ignore_index'" and "label -100 out of range"."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    z = (rng.normal(size=(7, 4)) * 3).astype(dtype)
    tol = 1e-12 if dtype == "float64" else 2e-6
    w = rng.random(4) + 0.2
    for ignore, labels in ((-100, [0, -100, 3, 2, -100, 1, 1]), (2, [0, 2, 3, 2, 2, 1, 1]),
                           (-1, [-1, -1, -1, -1, -1, -1, -1])):
        y = np.array(labels)
        for weight in (None, w):
            for smoothing in (0.0, 0.2):
                for reduction in ("mean", "sum", "none"):
                    kw = {"label_smoothing": smoothing, "reduction": reduction}
                    if ignore != -100:
                        kw["ignore_index"] = ignore
                    loss = dl.loss("cross_entropy", **kw,
                                   **({} if weight is None else {"weight": weight}))
                    value = np.asarray(loss.forward(z, y))
                    grad = loss.backward()
                    tz = torch.tensor(z, requires_grad=True)
                    tw = None if weight is None else torch.tensor(weight, dtype=tz.dtype)
                    tv = F.cross_entropy(tz, torch.tensor(y), weight=tw, ignore_index=ignore,
                                         label_smoothing=smoothing, reduction=reduction)
                    tv.sum().backward()
                    what = f"{ignore} {weight is not None} {smoothing} {reduction}"
                    np.testing.assert_allclose(value, tv.detach().numpy(), rtol=tol, atol=tol,
                                               err_msg=what)
                    np.testing.assert_allclose(grad, tz.grad.numpy(), rtol=tol, atol=tol,
                                               err_msg=what)
