"""Round 31 (torchhunt31): depthlab.torch on models the other tests do not use."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import depthlab.torch as dlt  # noqa: E402


class _SqueezeExcite(nn.Module):
    """A squeeze-and-excitation gate: the block's output is ``h * w``, a product."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.fc1 = nn.Linear(c, c // 4)
        self.fc2 = nn.Linear(c // 4, c)

    def forward(self, x):
        h = F.relu(self.conv(x))
        w = torch.sigmoid(self.fc2(F.relu(self.fc1(h.mean((2, 3))))))
        return h * w[:, :, None, None]


def test_predict_refusal_names_the_gate_not_the_flatten_module_after_it():
    # an nn.Flatten module (a view) after the gate's product: the refusal said "it is the
    # output of 'flat' (Flatten)", a module predict() models, and never named the product
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), _SqueezeExcite(8),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 3))
    with pytest.raises(ValueError) as info:
        dlt.predict(model, torch.randn(4, 3, 4, 4))
    message = str(info.value)
    assert "\n" not in message
    assert "'3' (Flatten)" in message and "'Mul'" in message, message


class _TokenTagger(nn.Module):
    """Per-token classes on the last axis: ``(N, T, C)`` scores, as a sequence model gives."""

    def __init__(self, vocab: int, classes: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, 8)
        self.out = nn.Linear(8, classes)

    def forward(self, x):
        return self.out(torch.tanh(self.emb(x)))


def _last_axis_loss(out, y):
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


@pytest.mark.parametrize("classes_last", [True, False])
def test_acc_of_scores_whose_time_steps_equal_the_classes_is_read_on_the_losss_axis(
        classes_last):
    # (N, T, C) scores with T == C read as (N, C, T): acc was the arg-max over the time steps
    # (0.05 where the per-token accuracy was 0.0625 at seed 0), a number no loss computed
    torch.manual_seed(0)
    model = _TokenTagger(20, 20)
    x, y = torch.randint(0, 20, (4, 20)), torch.randint(0, 20, (4, 20))
    if classes_last:
        wrapped, loss_fn, axis = model, _last_axis_loss, -1
    else:
        wrapped = nn.Sequential(model)
        wrapped.forward = lambda x: model(x).transpose(1, 2)  # (N, C, T), torch's layout
        loss_fn, axis = (lambda out, y: F.cross_entropy(out, y)), 1
    with torch.no_grad():
        expected = (wrapped(x).argmax(axis) == y).double().mean().item()
    df = dlt.probe(wrapped, x, y, loss_fn)
    assert df[df.quantity == "acc"].value.tolist() == pytest.approx([expected], abs=1e-12)


def test_doctor_evaluate_reads_the_same_class_axis_as_the_loss():
    from depthlab.torch.train import evaluate

    torch.manual_seed(0)
    model = _TokenTagger(20, 20)
    x, y = torch.randint(0, 20, (4, 20)), torch.randint(0, 20, (4, 20))
    with torch.no_grad():
        expected = (model(x).argmax(-1) == y).double().mean().item()
    assert evaluate(model, x, y, _last_axis_loss)["acc"] == pytest.approx(expected, abs=1e-12)


def test_watch_first_step_without_a_backward_since_creation_is_refused(tmp_path):
    # .grad left by a backward before the Watch was made (a loop that trained without it, or
    # a forgotten backward): the first step recorded that earlier gradient as this step's
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.randn(20, 5), torch.randint(0, 3, (20,))
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(model(x), y).backward()
    watch = dlt.Watch(model, every=1, out=None, theory=False)
    loss = loss_fn(model(x), y)
    with pytest.raises(ValueError, match="since the Watch was created") as info:
        watch.step(loss)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError):  # refused again: not a step
        watch.step(loss)
    model.zero_grad()
    loss.backward()
    watch.step(loss)  # now the step's own gradient
    watch.close()
    table = watch.frame()
    rows = table[(table.module == "0") & (table.quantity == "weight_grad_std")]
    assert rows.step.tolist() == [0]
    expected = model[0].weight.grad.double().std(unbiased=False).item()
    assert rows.value.item() == pytest.approx(expected, rel=1e-9)


def test_a_closed_watch_is_not_re_entered():
    # `with watch:` again after its block (a second epoch) entered silently; the refusal came
    # only at the first step, with no remedy
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.randn(20, 5), torch.randint(0, 3, (20,))
    with dlt.Watch(model, every=1, out=None, theory=False) as watch:
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        watch.step(loss)
    with pytest.raises(RuntimeError, match="after close.*new dlt.Watch") as info:
        with watch:
            pass
    assert "\n" not in str(info.value)
    with pytest.raises(RuntimeError, match="after close.*new dlt.Watch"):
        watch.step(loss)
    assert watch.frame().step.unique().tolist() == [0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_class_axis_of_large_or_half_precision_scores(dtype):
    # N(0, 1) shifts of scores of std 100 (or fp16 scores of std 10, rounded) moved the loss by
    # less than its tolerance, or by their rounding more: the axis was not found, no acc
    from depthlab.torch.train import class_axis

    torch.manual_seed(0)
    scale = 100.0 if dtype == torch.float32 else 10.0
    out = (torch.randn(64, 50, 50) * scale).to(dtype)
    y = torch.randint(0, 50, (64, 50))
    assert class_axis(out, y, _last_axis_loss) == -1
    assert class_axis(out, y, lambda out, y: F.cross_entropy(out, y)) == 1
