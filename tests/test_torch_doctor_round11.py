"""depthlab.torch.doctor, round 11: models, data and options a demanding user brings (a model
that squeezes its output, ...)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import depthlab.torch as dlt


class Squeezed(nn.Module):
    """A binary classifier returning ``logits.squeeze()`` (shape (N,); a scalar for 1 row)."""

    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(6, 8)
        self.l2 = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(torch.relu(self.l1(x))).squeeze()


def binary(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.float32)


def test_the_final_metrics_have_no_one_row_batch_for_a_squeezing_model():
    # 1281 rows: 1025 training rows, evaluated as 1024 + 1 rows, whose 1-row batch the model
    # squeezed to a scalar: torch's 'Target size (torch.Size([1])) must be the same as input
    # size (torch.Size([]))' after all the training
    x, y = binary(1281)
    diag = dlt.doctor(Squeezed, (x, y), loss_fn=nn.BCEWithLogitsLoss(), steps=2, verify=False)
    assert np.isfinite(diag.baseline["train_loss"]) and np.isfinite(diag.baseline["val_loss"])


def test_the_final_training_loss_is_the_mean_over_all_rows():
    from depthlab.torch.train import evaluate

    x, y = binary(2049)  # 3 equal batches of 683
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 1), nn.Flatten(0))
    loss_fn = nn.BCEWithLogitsLoss()
    got = evaluate(model, torch.from_numpy(x), torch.from_numpy(y), loss_fn)["loss"]
    with torch.no_grad():
        want = float(loss_fn(model(torch.from_numpy(x)), torch.from_numpy(y)))
    assert got == pytest.approx(want, rel=1e-5)


def test_a_one_row_validation_set_the_model_fails_on_is_named_before_training():
    x, y = binary(101)
    with pytest.raises(ValueError, match="validation set's single row.*Target size.*at least 2"):
        dlt.doctor(Squeezed, (x[:100], y[:100], x[100:], y[100:]),
                   loss_fn=nn.BCEWithLogitsLoss(), steps=2, verify=False)


class NumpyNoise(nn.Module):
    """Gaussian input noise drawn from NumPy's global generator while training."""

    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(6, 8)
        self.l2 = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            noise = np.random.normal(0.0, 0.5, size=tuple(x.shape)).astype(np.float32)
            x = x + torch.from_numpy(noise)
        return self.l2(torch.relu(self.l1(x)))


class JitteredRows(torch.utils.data.Dataset):
    """A map-style Dataset whose items carry a random offset from Python's ``random``."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        import random

        return torch.from_numpy(self.x[i] + np.float32(random.gauss(0.0, 0.1))), int(self.y[i])


def small_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))


def test_noise_from_numpy_and_python_generators_is_the_same_in_every_call():
    import random

    x, y = binary(100)
    y = y.astype(np.int64)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        np.random.seed(1)
        random.seed(1)
        np_before, py_before = np.random.get_state()[1].copy(), random.getstate()
        # were: train losses 0.7077 then 0.7063 (the noise drawn from wherever NumPy's global
        # generator stood), and the caller's generator moved on
        a = dlt.doctor(NumpyNoise, (x, y), steps=2, verify=False)
        assert (np.random.get_state()[1] == np_before).all()
        b = dlt.doctor(NumpyNoise, (x, y), steps=2, verify=False)
        assert a.baseline["train_loss"] == b.baseline["train_loss"]
        c = dlt.doctor(small_mlp, JitteredRows(x, y), steps=2, verify=False)
        assert random.getstate() == py_before
        d = dlt.doctor(small_mlp, JitteredRows(x, y), steps=2, verify=False)
        assert c.baseline["train_loss"] == d.baseline["train_loss"]
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


class BagOfTokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 8)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.emb(x).mean(1))


@pytest.mark.parametrize("row", [200, 250])  # a training row after the first batch; validation
def test_token_ids_beyond_the_embedding_are_named_before_training(row):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 50, size=(300, 12))
    y = (x[:, 0] > 25).astype(np.int64)
    x[row, 3] = 50
    # was: torch's 'IndexError: index out of range in self' from the mini-batch (or the
    # probe of the validation rows) that first held it, after training started
    with pytest.raises(ValueError, match=r"token id 50 \(1 of 3600 outside 0 to 49\).*"
                                         r"Embedding 'emb' has 50"):
        dlt.doctor(BagOfTokens, (x[:240], y[:240], x[240:], y[240:]), steps=3, verify=False)
    x[row, 3] = 49
    diag = dlt.doctor(BagOfTokens, (x[:240], y[:240], x[240:], y[240:]), steps=3, verify=False)
    assert np.isfinite(diag.baseline["train_loss"])


@pytest.mark.parametrize("loss_fn, sigmoid", [(nn.BCELoss(), True),
                                              (nn.BCEWithLogitsLoss(), False),
                                              (nn.functional.binary_cross_entropy, True)])
def test_binary_targets_outside_0_to_1_are_named_before_training(loss_fn, sigmoid):
    x, y = binary(300)
    y = y[:, None].copy()
    y[200] = 2.0  # a training row after the first batch
    # was: torch's 'RuntimeError: all elements of target should be between 0 and 1' from the
    # mini-batch that first held it (BCELoss), or a loss unbounded below (BCEWithLogitsLoss)
    tail = [nn.Sigmoid()] if sigmoid else []
    make = lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 1), *tail)  # noqa: E731
    with pytest.raises(ValueError, match=r"targets hold 2 \(1 of 300 outside 0 to 1\).*"
                                         r"probabilities"):
        dlt.doctor(make, (x[:240], y[:240], x[240:], y[240:]), loss_fn=loss_fn, steps=2,
                   verify=False)
    y[200] = 1.0
    diag = dlt.doctor(make, (x[:240], y[:240], x[240:], y[240:]), loss_fn=loss_fn, steps=2,
                      verify=False)
    assert np.isfinite(diag.baseline["train_loss"])


@pytest.mark.parametrize("name", ["adamw", "nadam", "AdamW"])
def test_no_switch_to_adam_is_offered_to_a_model_trained_with_an_adam_variant(name):
    from depthlab.torch import prescriptions as rx
    from depthlab.torch.train import TorchTrainSpec

    # was: AdamW at lr 0.5 offered (and verified) "Adam (lr 1e-3) scales each parameter's
    # step by its gradient's running RMS", which AdamW does: the gain was the lower lr alone
    spec = TorchTrainSpec(optimizer=name, lr=0.5)
    for kind in ("lr_too_high", "vanishing_gradients", "dead_relu", "divergence"):
        cures = rx.alternatives(kind, "relu", spec, False)
        assert cures and not any(c.get("optimizer") == "adam" for c, _ in cures), kind
    rms = rx.alternatives("lr_too_high", "relu", TorchTrainSpec(optimizer="rmsprop"), False)
    assert any(c.get("optimizer") == "adam" for c, _ in rms)


class LockedSigmoidNet(nn.Module):
    """Sigmoid layers with N(0, 1) weights, holding a lock (no deep copy)."""

    def __init__(self) -> None:
        import threading

        super().__init__()
        layers: list[nn.Module] = [nn.Linear(6, 16), nn.Sigmoid()]
        for _ in range(4):
            layers += [nn.Linear(16, 16), nn.Sigmoid()]
        self.body = nn.Sequential(*layers, nn.Linear(16, 2))
        for m in self.body.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 1.0)
        self.lock = threading.Lock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.lock:
            return self.body(x)


def test_a_factorys_model_that_cannot_be_deep_copied_is_diagnosed_and_verified():
    x, y = binary(60)
    # was: TypeError "cannot pickle '_thread.lock' object" from copying the model for the
    # checking step (the factory's model itself is trained when it cannot be copied)
    diag = dlt.doctor(LockedSigmoidNet, (x, y.astype(np.int64)), steps=2, verify=True,
                      max_cures=1)
    assert diag.findings and diag.verifications


def test_one_feature_given_as_a_flat_array_is_told_to_make_it_a_column():
    x, _ = binary(50)
    y = (2.0 * x[:, :1]).astype(np.float32)
    make = lambda: nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))  # noqa: E731
    # was: torch's 'mat1 and mat2 shapes cannot be multiplied (1x2 and 1x8)' alone
    with pytest.raises(ValueError, match=r"mat1 and mat2.*x\.reshape\(-1, 1\)"):
        dlt.doctor(make, (x[:, 0], y), loss_fn=nn.MSELoss(), steps=2, verify=False)
    diag = dlt.doctor(make, (x[:, :1], y), loss_fn=nn.MSELoss(), steps=2, verify=False)
    assert np.isfinite(diag.baseline["train_loss"])


def test_the_callers_torch_settings_are_left_as_found_with_a_float64_default():
    x, y = binary(60)
    rng_before = torch.random.get_rng_state()
    threads = torch.get_num_threads()
    dtype = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        with torch.no_grad():
            # built under the float64 default: a float64 model, sick enough to be cured
            diag = dlt.doctor(LockedSigmoidNet, (x, y.astype(np.int64)), steps=2,
                              verify=True, max_cures=1)
            assert not torch.is_grad_enabled()
        assert torch.get_default_dtype() == torch.float64
    finally:
        torch.set_default_dtype(dtype)
    assert diag.findings and all(np.isfinite(v.after["train_loss"])
                                 for v in diag.verifications)
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.random.get_rng_state(), rng_before)


def test_one_shared_instance_that_cannot_be_copied_is_named_before_training():
    x, y = binary(60)
    shared = LockedSigmoidNet()
    before = {k: v.clone() for k, v in shared.state_dict().items()}
    # was: TypeError "cannot pickle '_thread.lock' object" from copy.deepcopy alone
    with pytest.raises(TypeError, match="same model object on every call.*cannot be "
                                        "deep-copied.*_thread.lock.*new model in each call"):
        dlt.doctor(lambda: shared, (x, y.astype(np.int64)), steps=2, verify=False)
    assert all(torch.equal(before[k], v) for k, v in shared.state_dict().items())
