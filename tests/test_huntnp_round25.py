"""Round 25 (huntnp25): NumPy engine vs PyTorch under settings nobody combined yet."""

from __future__ import annotations

import pytest


def test_from_torch_softmax_over_the_batch_is_refused_for_its_dim_not_its_class():
    # torch's own nn.Softmax(dim=0) was refused as "torch.nn.modules.activation.Softmax, not
    # torch.nn's", which contradicts the accepted list naming Softmax
    torch = pytest.importorskip("torch")
    from depthlab.bridge import from_torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=0))
    with pytest.raises(TypeError) as info:
        from_torch(model)
    msg = str(info.value)
    assert "not torch.nn's" not in msg
    assert "dim 0" in msg and "Softmax(dim=1)" in msg


def test_mc_dropout_refuses_a_softmax_the_network_already_applies():
    # output="softmax" on a network ending in softmax squashed the probabilities twice,
    # silently (3 classes: means ~0.32/0.34/0.34 instead of 0.29/0.35/0.35)
    import numpy as np

    import depthlab as dl

    x = np.random.default_rng(0).normal(size=(5, 4))
    for act in ("softmax", "sigmoid"):
        net = dl.mlp([4, 8, 3], dropout=0.5, output_activation=act, seed=0)
        with pytest.raises(ValueError, match=f"already ends in {act}"):
            dl.mc_dropout_predict(net, x, T=4, seed=0, output=act)
        mean, _ = dl.mc_dropout_predict(net, x, T=4, seed=0)  # its own outputs: accepted
        assert mean.shape == (5, 3)
    logits = dl.mlp([4, 8, 3], dropout=0.5, seed=0)
    mean, _ = dl.mc_dropout_predict(logits, x, T=4, seed=0, output="softmax")
    np.testing.assert_allclose(mean.sum(1), 1, rtol=1e-5)


def test_max_steps_set_by_on_epoch_end_stops_at_that_epoch():
    # early stopping from on_epoch_end (trainer.max_steps = trainer.step) ran one more update
    # and logged a spurious 1-step epoch (16 steps, epochs [5, 10, 15, 16] instead of 15)
    import numpy as np

    import depthlab as dl
    from depthlab.training.trainer import Callback, Trainer

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 4)), rng.integers(0, 3, 40)

    class StopAfter(Callback):
        def __init__(self, last_epoch: int) -> None:
            self.last_epoch = last_epoch

        def on_epoch_end(self, trainer, epoch, metrics) -> None:
            if epoch == self.last_epoch:
                trainer.max_steps = trainer.step - trainer._first_step

    net = dl.mlp([4, 8, 3], seed=0)
    hist = dl.fit(net, x, y, x[:10], y[:10], batch_size=8, epochs=10,
                  callbacks=[StopAfter(3)])
    assert len(hist.step_loss) == 15
    assert [int(e["step"]) for e in hist.epochs] == [5, 10, 15]
    # the same stop within a second fit call of one Trainer (steps continue from 15)
    trainer = Trainer(dl.mlp([4, 8, 3], seed=0), batch_size=8, epochs=3)
    trainer.fit(x, y)
    trainer.callbacks = [StopAfter(5)]
    trainer.epochs = 10
    trainer.fit(x, y)
    assert trainer.step == 25 and [int(e["step"]) for e in trainer.history.epochs][-1] == 25


def test_recorder_standardizes_its_probe_batch_from_float64_as_fit_does():
    # fit(standardize=True) on a float32 network standardizes in float64, but the recorder cast
    # probe_x to float32 first: a feature 1e7 + N(0, 1) was rounded to integers, so the probes
    # measured other inputs (step-0 loss 0.6176 where the network's inputs give 0.6433)
    import copy

    import numpy as np

    import depthlab as dl

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    x[:, 0] += 1e7
    x[:, 1] = x[:, 1] * 1e-3 + 5e4
    y = (x[:, 0] - 1e7 > 0).astype(int)
    net = dl.mlp([3, 8, 2], activation="tanh", seed=0)  # float32
    before = copy.deepcopy(net)
    rec = dl.ProbeRecorder(x[:50], y[:50], every=1)
    hist = dl.fit(net, x, y, standardize=True, epochs=1, batch_size="full", lr=1e-3,
                  callbacks=[rec])
    z = (x[:50] - hist.standardizer.mean64) / hist.standardizer.std64
    ref = dl.probe(before, z, y[:50], loss="cross_entropy")
    got = rec.frame()
    got = got[got.step == 0]
    for quantity in ("loss", "pre_mean", "pre_std", "act_p50"):
        a = got[got.quantity == quantity].sort_values("layer").value.to_numpy()
        b = ref[ref.quantity == quantity].sort_values("layer").value.to_numpy()
        np.testing.assert_allclose(a, b, rtol=1e-5, err_msg=quantity)
