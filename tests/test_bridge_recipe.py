"""``dl.save`` writes a ``from_torch`` network (no recipe of its own) with the ``dl.mlp``
recipe that builds its layers; layers no recipe builds are refused, nothing written."""

from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from depthlab.bridge.torch_bridge import from_torch, to_torch  # noqa: E402
from depthlab.recipe import infer_recipe, signature  # noqa: E402

RECIPES = [
    dict(sizes=[5, 4, 4, 3], activation="tanh"),
    dict(sizes=[5, 4, 4, 3], activation="leaky_relu", activation_kwargs={"negative_slope": 0.2},
         batchnorm=True, dropout=0.1),
    dict(sizes=[5, 4, 4, 4, 3], residual=True, batchnorm=True),
    dict(sizes=[5, 4, 3], activation="selu", dropout=0.2, input_dropout=0.1),
    dict(sizes=[5, 4, 3], output_activation="sigmoid", dtype="float64"),
]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: "-".join(map(str, r.values()))[:40])
def test_a_round_trip_through_torch_saves_and_loads_bit_identically(recipe, tmp_path):
    net = dl.mlp(**recipe, seed=3)
    back = from_torch(to_torch(net))
    assert back.config == {}  # no initializer known: the theory and doctor still refuse it
    found = infer_recipe(back.layers, back.dtype)
    assert found, "an mlp-shaped module must have a recipe"
    assert signature(dl.mlp(**found).layers) == signature(back.layers)
    for key in ("sizes", "activation", "batchnorm", "residual", "dtype"):
        if key in recipe:
            want = list(recipe[key]) if key == "sizes" else recipe[key]
            assert found[key] == want
    loaded = dl.load(dl.save(back, tmp_path / "net.npz"))
    x = np.random.default_rng(0).standard_normal((6, 5)).astype(back.dtype)
    np.testing.assert_array_equal(back.predict(x), loaded.predict(x))


def test_a_plain_torch_sequential_gets_its_recipe_and_is_saved(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(inplace=True),
                          nn.Linear(8, 8, bias=False), nn.BatchNorm1d(8, eps=1e-3), nn.ReLU(),
                          nn.Linear(8, 2))
    net = from_torch(model)
    assert infer_recipe(net.layers, "float32") is None  # a bias before a batch norm
    model = nn.Sequential(nn.Linear(6, 8, bias=False), nn.BatchNorm1d(8, momentum=0.2),
                          nn.ReLU(inplace=True), nn.Linear(8, 8, bias=False),
                          nn.BatchNorm1d(8, momentum=0.2), nn.ReLU(), nn.Linear(8, 2)).double()
    model.train()
    model(torch.randn(16, 6, dtype=torch.float64))  # non-trivial running statistics
    net = from_torch(model)
    loaded = dl.load(dl.save(net, tmp_path / "m.npz"))
    assert loaded.config["batchnorm"] is True and loaded.config["bn_momentum"] == 0.2
    assert loaded.config["bn_ema_start"] == "zero" and loaded.config["dtype"] == "float64"
    model.eval()
    x = np.random.default_rng(1).standard_normal((5, 6))
    np.testing.assert_allclose(loaded.predict(x), model(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("model", [
    nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)),
    nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Dropout(0.1), nn.Linear(4, 4), nn.ReLU(),
                  nn.Dropout(0.3), nn.Linear(4, 2)),
    nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.ReLU(), nn.Linear(4, 2)),
], ids=["mixed-activations", "mixed-dropout", "two-activations"])
def test_layers_no_recipe_builds_have_none_and_save_says_so(model, tmp_path):
    net = from_torch(model)
    assert net.config == {}
    assert infer_recipe(net.layers, "float32") is None
    with pytest.raises(TypeError, match="dl.mlp does not build"):
        dl.save(net, tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()
