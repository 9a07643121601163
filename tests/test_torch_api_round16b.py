"""Round 16b regressions of the torch API: loss names in probe/predict, wrong input width,
mistyped keywords."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402


def _net_and_batch(classes: int = 3):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, classes))
    x = torch.randn(16, 4)
    y = torch.randint(0, classes, (16,))
    return model, x, y


def test_probe_and_predict_take_a_loss_by_name_as_the_doctor_does():
    model, x, y = _net_and_batch()
    by_name = dlt.probe(model, x, y, "cross_entropy")
    by_module = dlt.probe(model, x, y, nn.CrossEntropyLoss())
    loss = lambda t: float(t[t.quantity == "loss"].value.iloc[0])  # noqa: E731
    assert loss(by_name) == pytest.approx(loss(by_module), rel=1e-12)
    assert loss(by_name) == pytest.approx(float(nn.CrossEntropyLoss()(model(x), y)), rel=1e-6)
    yf = torch.randn(16, 3)
    mse = dlt.probe(model, x, yf, "MSE")  # case-insensitive, as the doctor's resolver
    assert loss(mse) == pytest.approx(float(nn.MSELoss()(model(x), yf)), rel=1e-6)
    pred = dlt.predict(model, x, y, "cross-entropy")
    assert pred["value"].notna().any()
    with pytest.raises(ValueError, match=r"unknown loss 'crossentropy' \(did you mean "
                                         r"'cross_entropy'\?\)"):
        dlt.probe(model, x, y, "crossentropy")
    with pytest.raises(ValueError, match=r"did you mean 'cross_entropy'"):
        dlt.predict(model, x, y, "crossentropy")


@pytest.mark.parametrize("fn", [dlt.probe, dlt.predict])
def test_an_input_of_the_wrong_width_names_its_shape_and_the_first_layers_in_features(fn):
    model, _, y = _net_and_batch()
    with pytest.raises(ValueError, match=r"^x has shape \(16, 5\), 5 features in its last "
                                         r"dimension, but the model's first layer '0' \(Linear\) "
                                         r"expects in_features=4; expected x of shape \(16, 4\)$"
                       ) as info:
        fn(model, torch.randn(16, 5), y, nn.CrossEntropyLoss())
    assert isinstance(info.value.__cause__, RuntimeError)  # torch's own error is kept
    flat = nn.Sequential(nn.Flatten(), nn.Linear(700, 3))
    with pytest.raises(ValueError, match=r"784 values per example.*in_features=700"):
        fn(flat, torch.randn(16, 1, 28, 28), y, nn.CrossEntropyLoss())
    # a mismatch deeper in the model is the model's own bug: torch's error is not reworded
    inner = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(9, 3))
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        fn(inner, torch.randn(16, 4), y, nn.CrossEntropyLoss())


def test_a_mistyped_keyword_names_the_closest_accepted_one():
    import depthlab as dl
    from depthlab.probes import ProbeRecorder

    with pytest.raises(TypeError, match=r"^ProbeRecorder\(\) got an unexpected keyword argument "
                                        r"'evry' \(did you mean 'every'\?\)$"):
        ProbeRecorder(evry=10)
    assert ProbeRecorder(every=7).every == 7  # the accepted keywords still work
    with pytest.raises(TypeError, match=r"^doctor\(\) got an unexpected keyword argument 'step' "
                                        r"\(did you mean 'steps'\?\)$"):
        dl.doctor({"widths": [4, 8, 3]}, None, step=3)
    with pytest.raises(TypeError, match=r"'step' \(did you mean 'steps'\?\)$"):
        dlt.doctor(nn.Linear(4, 3), None, step=3)
    with pytest.raises(TypeError, match=r"'zzz'; accepted: make_model_or_model, data, loss_fn"):
        dlt.doctor(nn.Linear(4, 3), None, zzz=3)


class _ClassesLast(nn.Module):
    """A per-token classifier: (N, T, 4) -> (N, T, 5), the classes last."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 5)

    def forward(self, x):
        return self.head(x)


def test_the_doctor_names_outputs_with_the_classes_last_for_a_class_index_loss():
    torch.manual_seed(0)
    x, y = torch.randn(32, 7, 4), torch.randint(0, 5, (32, 7))
    with pytest.raises(ValueError, match=r"Expected target size.*; the model's outputs hold the 5 "
                                         r"classes last \(shape \(7, 5\) per example, labels "
                                         r"\(7,\)\), but CrossEntropyLoss takes them in dim 1.*"
                                         r"cross_entropy\(out\.movedim\(-1, 1\), y\)$"):
        dlt.doctor(_ClassesLast, (x, y), steps=2, verify=False)
    # the loss it prescribes runs
    fixed = lambda o, t: nn.functional.cross_entropy(o.movedim(-1, 1), t)  # noqa: E731
    diagnosis = dlt.doctor(_ClassesLast, (x, y), loss_fn=fixed, steps=2, batch_size=16,
                           verify=False)
    assert diagnosis is not None
