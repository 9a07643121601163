"""depthlab.torch.doctor and its prescriptions, round 7: adversarial general-case models (a
shared activation instance, a sigmoid output for ``BCELoss``) and optimizer arguments (each
test failed before its fix)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import depthlab.torch as dlt
from depthlab.torch import prescriptions as rx
from depthlab.torch.train import TorchTrainSpec


def _xy(n=96, d=8, seed=0):
    g = np.random.default_rng(seed)
    x = g.normal(size=(n, d)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.float32)[:, None]  # binary targets (N, 1)
    return x, y


def _sick_sigmoid(d=8, h=16, depth=4, out=1, shared=False, head=True):
    """``depth`` sigmoid layers with N(0, 1) weights (a mean shift the rules see); ``shared``:
    one Sigmoid instance in every hidden slot; ``head``: a Sigmoid after the output layer (for
    ``BCELoss``)."""
    def make():
        one = nn.Sigmoid()
        layers = [nn.Linear(d, h), one if shared else nn.Sigmoid()]
        for _ in range(depth - 1):
            layers += [nn.Linear(h, h), one if shared else nn.Sigmoid()]
        layers.append(nn.Linear(h, out))
        if head:
            layers.append(nn.Sigmoid())
        model = nn.Sequential(*layers)
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 1.0)
        return model
    return make


def test_a_shared_activation_instance_is_swapped_and_normalized_in_every_slot():
    """Regression: with one Sigmoid instance in every slot of an ``nn.Sequential``
    (``named_children`` lists it once) the activation swap replaced only the first slot (the
    tanh cure of a 6-layer sigmoid net verified as 'train loss 2.228 -> 2.31: did not help',
    0.757 with separate instances), and ``insert_batchnorm`` re-added the other slots
    first, so the model ran Sigmoid before its first Linear."""
    x = torch.randn(8, 8)
    model = _sick_sigmoid(shared=True, head=False)()
    assert rx.swap_activations(model, "tanh", x) == 4
    assert not any(isinstance(m, nn.Sigmoid) for m in model)
    model = _sick_sigmoid(shared=True, head=False)()
    assert rx.insert_batchnorm(model, x) == 4
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Linear", "BatchNorm1d", "Sigmoid"] * 4 + ["Linear"], kinds


def test_shared_instance_cures_are_verified_as_for_separate_instances():
    """Regression (end to end): the verified cures of a model sharing one activation instance
    equal those of the same model with one instance per slot."""
    x, y = _xy()
    kw = {"loss_fn": nn.BCEWithLogitsLoss(), "steps": 12, "batch_size": 16, "max_cures": 2,
          "probe_every": 6}
    shared = dlt.doctor(_sick_sigmoid(shared=True, head=False), (x, y), **kw)
    apart = dlt.doctor(_sick_sigmoid(shared=False, head=False), (x, y), **kw)
    got = [(v.prescription, v.after["train_loss"]) for v in shared.verifications]
    want = [(v.prescription, v.after["train_loss"]) for v in apart.verifications]
    assert any("activation" in p for p, _ in want), want
    assert got == want


def test_the_output_sigmoid_of_a_bce_model_is_kept_by_every_cure():
    """Regression: the activation swap replaced the output layer's Sigmoid of a ``BCELoss``
    model too (ReLU outputs above 1): verifying it raised torch's 'RuntimeError: all elements
    of input should be between 0 and 1' out of ``doctor``; batch norm was also inserted
    between the output layer and its sigmoid."""
    x = torch.randn(8, 8)
    for name in ("relu", "tanh"):
        model, _ = rx.apply({"activation": name, "init": "matched"}, _sick_sigmoid()(),
                            TorchTrainSpec(), x)
        assert isinstance(model[-1], nn.Sigmoid) and isinstance(model[-2], nn.Linear)
        assert not any(isinstance(m, nn.Sigmoid) for m in list(model)[:-1])
    model = _sick_sigmoid()()
    assert rx.insert_batchnorm(model, x) == 4
    assert [type(m).__name__ for m in list(model)[-3:]] == ["Sigmoid", "Linear", "Sigmoid"]

    d = dlt.doctor(_sick_sigmoid(), _xy(), loss_fn=nn.BCELoss(), steps=12, batch_size=16,
                   probe_every=6, max_cures=2)
    swaps = [v for v in d.verifications if "activation" in v.prescription]
    assert swaps and all(np.isfinite(v.after["train_loss"]) for v in swaps)


def test_the_output_sigmoid_is_not_judged_as_a_hidden_layer():
    """Regression: the probe table holds the activation statistics of the sigmoid after the
    output layer, and the saturation/mean-shift rules read them: a confident BCE classifier
    got '1 of 3 hidden sigmoid layers are saturated ... (layer 4)', layer 4 being the
    output."""
    x, y = _xy(n=128)

    def make():
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                              nn.Linear(32, 1), nn.Sigmoid())
        with torch.no_grad():
            model[4].weight.mul_(60.0)  # confident outputs: the output sigmoid saturates
        return model

    d = dlt.doctor(make, (x, y), loss_fn=nn.BCELoss(), steps=4, batch_size=16, verify=False)
    out = d.probes[(d.probes.layer == 3) & (d.probes.quantity == "saturated_frac")]
    assert len(out) and out.value.iloc[-1] > 0.5  # measured, but not a hidden layer's
    assert all(3 not in f.layers for f in d.findings), [(f.kind, f.layers) for f in d.findings]
    assert "saturation" not in [f.kind for f in d.findings]


def test_optimizer_arguments_of_the_wrong_shape_are_a_value_error():
    """Regression: ``("adam", {"betas": (0.9,)})`` raised torch's IndexError ('tuple index
    out of range') out of ``doctor``."""
    with pytest.raises(ValueError, match="optimizer 'adam' does not accept .*betas"):
        dlt.doctor(_sick_sigmoid(head=False), _xy(), loss_fn=nn.BCEWithLogitsLoss(),
                   optimizer=("adam", {"betas": (0.9,)}), steps=2, batch_size=16, verify=False)


def test_a_validation_half_given_alone_is_named():
    """Regression: ``(x, y, x_val, None)`` failed with 'y_val must be an array or a tensor,
    got NoneType: can't convert np.ndarray of type numpy.object_. The only supported types
    are: ...'."""
    x, y = _xy()
    with pytest.raises(TypeError, match="^y_val is None; expected an array or a tensor "
                                        r"\(give x_val and y_val together, or neither\)$"):
        dlt.doctor(_sick_sigmoid(head=False), (x, y, x[:10], None),
                   loss_fn=nn.BCEWithLogitsLoss(), steps=2, verify=False)


def test_read_only_arrays_are_copied_not_shared():
    """Regression: a read-only array (a pandas column's values, ``np.load(mmap_mode='r')``)
    became a tensor sharing its memory, and torch warned 'The given NumPy array is not
    writable, and PyTorch does not support non-writable tensors'."""
    from depthlab.torch.inputs import _as_tensor

    x, y = _xy()
    ro = x.copy()
    ro.setflags(write=False)
    t = _as_tensor(ro, "x")
    assert not np.shares_memory(t.numpy(), ro) and torch.equal(t, torch.from_numpy(x))
    pd = pytest.importorskip("pandas")
    d = dlt.doctor(_sick_sigmoid(head=False), (pd.DataFrame(x), pd.DataFrame(y)),
                   loss_fn=nn.BCEWithLogitsLoss(), steps=2, batch_size=16, verify=False)
    assert d.baseline["steps"] == 2


def test_targets_of_another_shape_for_bce_name_the_shapes_per_example():
    """Regression: ``BCEWithLogitsLoss`` on outputs ``(N, 1)`` and targets ``(N,)`` passed
    torch's own message on through, of the two rows checked ('Target size
    (torch.Size([2])) must be the same as input size (torch.Size([2, 1]))')."""
    x, y = _xy()
    with pytest.raises(ValueError, match=r"^the model or loss_fn fails on inputs of shape "
                                         r"\(8,\) per example \(targets: shape \(\), float32\)"):
        dlt.doctor(_sick_sigmoid(head=False), (x, y[:, 0]), loss_fn=nn.BCEWithLogitsLoss(),
                   steps=2, verify=False)
    with pytest.raises(ValueError, match="^loss_fn must return a scalar tensor"):
        dlt.doctor(_sick_sigmoid(head=False), (x, y), steps=2, verify=False,
                   loss_fn=nn.BCEWithLogitsLoss(reduction="none"))


def test_a_torch_diagnosis_shows_in_a_notebook():
    """Regression: ``Diagnosis._repr_html_()`` of a torch diagnosis raised 'ValueError:
    dictionary update sequence element #0 has length 1' (``plot.theory_for_config`` took its
    ``config["model"]``, the class name "Sequential", for a model section)."""
    from depthlab import plot

    d = dlt.doctor(_sick_sigmoid(head=False), _xy(), loss_fn=nn.BCEWithLogitsLoss(), steps=4,
                   batch_size=16, verify=False)
    assert d.config["model"] == "Sequential"
    html = d._repr_html_()
    assert "Diagnosis" in html and "<img" in html
    theory, note = plot.theory_for_config(d.config)
    assert theory is None and note.startswith("no theory curve")


def test_lazy_modules_are_initialized_on_the_data_as_their_eager_twins():
    """Regression: a factory (or an instance) with ``nn.LazyLinear`` failed with 'Attempted to
    use an uninitialized parameter in <method 'detach' ...>'; lazy modules are now initialized
    on the data's first rows, after ``torch.manual_seed(seed)``: the same weights as
    ``nn.Linear`` layers built after that seed, so the same diagnosis and verified cures; the
    caller's lazy instance stays uninitialized."""
    x, y = _xy()

    def make(lazy):
        def build():
            layers = [nn.LazyLinear(16) if lazy else nn.Linear(8, 16), nn.Sigmoid()]
            for _ in range(5):
                layers += [nn.LazyLinear(16) if lazy else nn.Linear(16, 16), nn.Sigmoid()]
            return nn.Sequential(*layers, nn.LazyLinear(1) if lazy else nn.Linear(16, 1))
        return build

    kw = {"loss_fn": nn.BCEWithLogitsLoss(), "steps": 10, "batch_size": 16, "max_cures": 1,
          "probe_every": 5}
    lazy = dlt.doctor(make(True), (x, y), **kw)
    eager = dlt.doctor(make(False), (x, y), **kw)
    assert lazy.baseline["train_loss"] == eager.baseline["train_loss"]
    assert [(v.prescription, v.after["train_loss"]) for v in lazy.verifications] == \
        [(v.prescription, v.after["train_loss"]) for v in eager.verifications]
    instance = make(True)()
    d = dlt.doctor(instance, (x, y), **{**kw, "verify": False})
    assert d.baseline["steps"] == 10
    assert any(isinstance(p, nn.parameter.UninitializedParameter) for p in instance.parameters())
    with pytest.raises(ValueError, match="lazy modules cannot be initialized on inputs of shape "
                                         r"\(8,\) per example"):
        dlt.doctor(lambda: nn.Sequential(nn.LazyConv2d(3, 3), nn.Flatten(), nn.LazyLinear(1)),
                   (x, y), **kw)


def test_a_one_row_validation_set_does_not_break_a_batch_norm_model():
    """Regression: with one validation row the probe batch was that row, and tracing a model
    with ``BatchNorm1d`` (in training mode, as probed) on it raised torch's 'Expected more
    than 1 value per channel when training' out of ``doctor`` (``depthlab doctor --torch
    --n 11``); the probes now use the training rows then."""
    x, y = _xy(n=20)

    def make():
        return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 1))

    d = dlt.doctor(make, (x[:19], y[:19], x[19:], y[19:]), loss_fn=nn.BCEWithLogitsLoss(),
                   steps=3, batch_size=8, verify=False)
    assert d.baseline["steps"] == 3 and np.isfinite(d.baseline["val_loss"])


def test_training_labels_that_are_all_ignored_are_refused():
    """Regression: with every training label ``-100`` (``CrossEntropyLoss``'s ignore_index)
    the loss was 0 / 0 = NaN from step 1 and the diagnosis a 'divergence' with verified
    cures."""
    x, _ = _xy()

    def make():
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

    with pytest.raises(ValueError, match="^every training label is the loss's ignore_index "
                                         "-100: nothing to train on"):
        dlt.doctor(make, (x, np.full(len(x), -100)), steps=3, batch_size=16)
    some = np.where(np.arange(len(x)) % 2 == 0, -100, (x[:, 0] > 0).astype(np.int64))
    d = dlt.doctor(make, (x, some), steps=3, batch_size=16, verify=False)
    assert np.isfinite(d.baseline["train_loss"])


def test_a_depthlab_image_data_set_is_shaped_for_a_cnn_as_on_the_command_line():
    """Regression: ``dlt.doctor(make_cnn, load_dataset("digits"))`` failed ('Expected 3D
    (unbatched) or 4D (batched) input to conv2d, but got input of size: [2, 64]'): only the
    command line shaped a data set's rows into its images; the API now does the same
    (``shape_inputs``), and gives a GRU its sequences."""
    from depthlab.data import load_dataset

    ds = load_dataset("digits", seed=0, n=200)

    def cnn():
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                             nn.Linear(4 * 64, 10))

    kw = {"steps": 3, "batch_size": 16, "verify": False}
    d = dlt.doctor(cnn, ds, **kw)
    by_hand = dlt.doctor(cnn, (ds.x_train.reshape(-1, 1, 8, 8), ds.y_train,
                               ds.x_val.reshape(-1, 1, 8, 8), ds.y_val), **kw)
    assert d.baseline == {**by_hand.baseline, "seconds": d.baseline["seconds"]}

    class GRUNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = nn.GRU(8, 8, batch_first=True), nn.Linear(8, 10)

        def forward(self, x):
            return self.head(self.rnn(x)[0][:, -1])

    assert dlt.doctor(GRUNet, ds, **kw).baseline["steps"] == 3
