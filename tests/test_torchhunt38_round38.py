"""torchhunt38: dlt.probe / dlt.predict on models and inputs the earlier rounds had not seen."""

from __future__ import annotations

import functools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402


def _frozen_mlp() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(),
                          nn.Linear(16, 3)).double()
    return model.requires_grad_(False)


def test_a_frozen_model_given_an_x_that_requires_grad_has_its_gradient_rows():
    """model.requires_grad_(False) with x.requires_grad_() (input gradients, adversarial
    examples): the loss requires grad, but no backward ran (it ran only for trainable
    parameters), so the table had no grad_pre_* rows at all and said nothing."""
    model = _frozen_mlp()
    x = torch.randn(32, 8, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 3, (32,))
    df = dlt.probe(model, x, y, nn.CrossEntropyLoss())
    outs = []

    def keep(module, args, out):
        out.retain_grad()
        outs.append(out)

    hooks = [model[i].register_forward_hook(keep) for i in (0, 2, 4)]
    nn.CrossEntropyLoss()(model(x), y).backward()
    for h in hooks:
        h.remove()
    for layer, out in enumerate(outs, start=1):
        got = df[(df.layer == layer) & (df.quantity == "grad_pre_std")].value
        assert len(got) == 1 and np.isclose(got.iloc[0], out.grad.std(unbiased=False).item(),
                                            rtol=1e-9)
    assert "weight_grad_std" not in set(df.quantity)  # no parameter has a gradient
    x.grad = None
    dlt.probe(model, x, y, nn.CrossEntropyLoss())
    assert x.grad is None  # the caller's x left as found
    pred = dlt.predict(model, x, y, nn.CrossEntropyLoss())
    g = pred[pred.quantity == "grad_pre_std"]
    assert g.value.notna().all() and ((g.value / g.predicted).between(0.7, 1.4)).all()


def test_warnings_of_the_probe_point_at_the_callers_line():
    """They pointed at depthlab/validators.py (the keyword-hint wrapper) for a direct call."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 3))
    x, y = torch.randn(4, 8), torch.randint(0, 3, (4,))
    with pytest.warns(RuntimeWarning, match="loss does not require grad") as got:
        dlt.probe(model, x, y, lambda o, t: nn.functional.cross_entropy(o, t).detach())
    assert got[0].filename == __file__


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize("fn", ["probe", "predict"])
def test_class_weights_of_another_dtype_or_length_are_named(fn):
    """Class weights from NumPy (float64) in nn.CrossEntropyLoss(weight=...) for a float32
    model: torch said 'expected scalar type Float but found Double', naming neither."""
    x, y = torch.randn(6, 5), torch.randint(0, 3, (6,))
    w64 = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    with pytest.raises(TypeError, match=r"CrossEntropyLoss's class weight has dtype "
                                        r"torch\.float64, but the model's output is "
                                        r"torch\.float32.*weight=w\.to\(torch\.float32\)"):
        getattr(dlt, fn)(_mlp(), x, y, nn.CrossEntropyLoss(weight=w64))
    with pytest.raises(TypeError, match=r"F\.nll_loss's class weight has dtype torch\.float64"):
        getattr(dlt, fn)(_mlp(), x, y, functools.partial(nn.functional.nll_loss, weight=w64))
    with pytest.raises(ValueError, match=r"class weight has 4 entries \(shape \(4,\)\), but the "
                                         r"model's output \(6, 3\) has 3 classes"):
        getattr(dlt, fn)(_mlp(), x, y, nn.CrossEntropyLoss(weight=torch.ones(4)))
    # weights of the output's dtype, and float32 weights under bf16 autocast, are taken
    getattr(dlt, fn)(_mlp(), x, y, nn.CrossEntropyLoss(weight=w64.float()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        dlt.probe(_mlp(), x, y, nn.CrossEntropyLoss(weight=w64.float()))


@pytest.mark.parametrize("fn", ["probe", "predict"])
def test_targets_that_are_no_tensor_at_all_are_named(fn):
    """A string or dict y: torch said "cross_entropy_loss(): argument 'target' (position 2)
    must be Tensor, not str"."""
    x = torch.randn(6, 5)
    for y, kind in (("labels", "str"), ({"y": torch.zeros(6)}, "dict")):
        with pytest.raises(TypeError, match=rf"y must be a torch\.Tensor of targets for "
                                            rf"CrossEntropyLoss, got {kind}$"):
            getattr(dlt, fn)(_mlp(), x, y, nn.CrossEntropyLoss())


def test_a_scalar_x_is_named():
    """torch said 'both arguments to linear need to be at least 1D, but they are 0D and 2D'."""
    with pytest.raises(ValueError, match=r"x is a 0-dimensional tensor \(a single number\); "
                                         r"expected a batch of examples \(N, \.\.\.\)"):
        dlt.probe(_mlp(), torch.tensor(1.0), torch.tensor(0), nn.CrossEntropyLoss())


def test_predict_names_token_ids_into_an_embedding_of_one_id_per_example():
    """Ids (N,) into nn.Embedding: predict said 'x must be a batch of examples (N,
    features...), got shape (64,)', though they are a batch; the refusal is the token ids'."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 10))
    ids, y = torch.randint(0, 50, (64,)), torch.randint(0, 10, (64,))
    with pytest.raises(TypeError, match=r"got dtype torch\.int64.*token ids into an Embedding "
                                        r"are not supported"):
        dlt.predict(model, ids, y, nn.CrossEntropyLoss())


class _NoGradFirst(nn.Module):
    def __init__(self, detach: bool) -> None:
        super().__init__()
        self.a, self.h, self.b, self.detach = (nn.Linear(8, 16), nn.Linear(16, 16),
                                               nn.Linear(16, 3), detach)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.detach:
            h = torch.tanh(self.a(x)).detach()
        else:
            with torch.no_grad():
                h = torch.tanh(self.a(x))
        return self.b(torch.tanh(self.h(h)))


@pytest.mark.parametrize("detach", [False, True])
def test_predict_names_a_no_grad_section_between_layers(detach):
    """The refusal said only "the input of 'h' is not the previous layer's output (pooling or
    another operation in between)", with nothing in between to see."""
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    with pytest.raises(ValueError, match=r"the input of 'h' .*it has no autograd graph "
                                         r"\(computed under torch\.no_grad\(\) or detached\)"):
        dlt.predict(_NoGradFirst(detach), x, y, nn.CrossEntropyLoss())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script's own
def test_predict_refuses_a_torchscript_model_as_probe_does():
    """dlt.predict of torch.jit.script(model) raised AttributeError "'OrderedModuleDict' object
    has no attribute 'get'" (its isolation ran before the model was checked)."""
    x, y = torch.randn(6, 5), torch.randint(0, 3, (6,))
    scripted = torch.jit.script(_mlp())
    for fn in (dlt.probe, dlt.predict):
        with pytest.raises(TypeError, match=r"is a TorchScript module .*pass the original "
                                            r"nn\.Module"):
            fn(scripted, x, y, nn.CrossEntropyLoss())


def test_predict_measures_a_loss_of_the_output_alone_without_targets():
    """An autoencoder's loss_fn=lambda out, _: F.mse_loss(out, x) with y=None: dlt.probe takes
    it, dlt.predict refused it ('give both y and loss_fn ... or neither')."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 8), nn.Tanh(),
                          nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 16))
    x = torch.randn(128, 16)
    df = dlt.predict(model, x, None, lambda out, _: nn.functional.mse_loss(out, x))
    probed = dlt.probe(model, x, None, lambda out, _: nn.functional.mse_loss(out, x))
    g = df[df.quantity == "grad_pre_std"].set_index("layer")
    want = probed[probed.quantity == "grad_pre_std"].set_index("layer").value
    assert np.allclose(g.value, want.loc[g.index], rtol=1e-12)
    assert (g.value / g.predicted).between(0.8, 1.25).all()
    with pytest.raises(ValueError, match=r"y given without loss_fn; give both y and loss_fn"):
        dlt.predict(model, x, torch.zeros(128))
    with pytest.raises(TypeError, match=r"y is None, but CrossEntropyLoss needs the targets"):
        dlt.predict(model, x, None, nn.CrossEntropyLoss())


@pytest.mark.parametrize("fn", ["probe", "predict"])
def test_a_loss_that_needs_more_than_output_and_targets_is_named_before_the_forward(fn):
    """nn.CTCLoss() as loss_fn: torch said 'CTCLoss.forward() missing 2 required positional
    arguments: 'input_lengths' and 'target_lengths'' after the forward had run."""
    x, y = torch.randn(6, 5), torch.randint(0, 3, (6,))
    with pytest.raises(TypeError, match=r"loss_fn is called as loss_fn\(output, y\), but CTCLoss "
                                        r"takes 4 arguments \(log_probs, targets, input_lengths, "
                                        r"target_lengths\).*lambda out, y: loss\(out, y, "
                                        r"input_lengths, target_lengths\)"):
        getattr(dlt, fn)(_mlp(), x, y, nn.CTCLoss())
    with pytest.raises(TypeError, match=r"GaussianNLLLoss takes 3 arguments \(input, target, "
                                        r"var\)"):
        getattr(dlt, fn)(_mlp(), x, y, nn.GaussianNLLLoss())

    def weighted(out, target, w):
        return nn.functional.cross_entropy(out, target) * w

    with pytest.raises(TypeError, match=r"weighted takes 3 arguments \(out, target, w\).*"
                                        r"lambda out, y: weighted\(out, y, w\)"):
        getattr(dlt, fn)(_mlp(), x, y, weighted)
    # an optional third argument is fine
    getattr(dlt, fn)(_mlp(), x, y, lambda out, target, w=1.0: weighted(out, target, w))


def test_percentiles_given_as_a_generator_give_their_rows():
    """percentiles=(q for q in (10, 90)): the type check consumed the generator and the table
    had no pK rows, without a word."""
    x, y = torch.randn(6, 5), torch.randint(0, 3, (6,))
    df = dlt.probe(_mlp(), x, y, nn.CrossEntropyLoss(), percentiles=(q for q in (10, 90)))
    assert {"pre_p10", "pre_p90", "act_p10", "act_p90"} <= set(df.quantity)


@pytest.mark.parametrize("fn", ["probe", "predict"])
def test_a_namedtuple_output_given_to_a_torch_loss_names_its_fields(fn):
    """It was "a Out of 2 tensors (shapes (8, 3), (8, 10))" with out[0]; a namedtuple's fields
    are named as a dataclass's are, and the remedy reads out.logits."""
    import collections

    out_t = collections.namedtuple("Out", "logits feat")

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(6, 10), nn.Linear(10, 3)

        def forward(self, x: torch.Tensor):
            h = torch.tanh(self.a(x))
            return out_t(self.b(h), h)

    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    with pytest.raises(TypeError, match=r"namedtuple Out with fields logits \(8, 3\), feat "
                                        r"\(8, 10\).*nn\.CrossEntropyLoss\(\)\(out\.logits, y\)"):
        getattr(dlt, fn)(Model(), x, y, nn.CrossEntropyLoss())


@pytest.mark.parametrize("loss", [
    nn.KLDivLoss(reduction="batchmean"),
    functools.partial(nn.functional.kl_div, reduction="batchmean"),
    nn.PoissonNLLLoss()], ids=["KLDivLoss", "kl_div", "poisson"])
def test_kl_and_poisson_targets_of_another_batch_are_named(loss):
    """KLDivLoss with targets of 5 rows for 6 outputs: torch's 'The size of tensor a (5) must
    match the size of tensor b (6) at non-singleton dimension 0', naming neither y nor the
    shapes; now the elementwise losses' line (a target broadcast over the output still taken)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3), nn.LogSoftmax(1))
    x = torch.randn(6, 5)
    with pytest.raises(ValueError, match=r"y has shape \(5, 3\) but the model's output has "
                                         r"shape \(6, 3\), and .* compares them entry by entry"):
        dlt.probe(model, x, torch.rand(5, 3), loss)
    dlt.probe(model, x, torch.rand(6, 3), loss)
    dlt.probe(model, x, torch.rand(6, 1), loss)


def test_one_feature_too_few_is_said_in_the_singular():
    """x of shape (4, 5, 1) into Linear(5, 3): '1 features in its last dimension'."""
    with pytest.raises(ValueError, match=r"x has shape \(4, 5, 1\), 1 feature in its last "
                                         r"dimension, but .*in_features=5"):
        dlt.probe(_mlp(), torch.randn(4, 5, 1), torch.randint(0, 3, (4,)), nn.CrossEntropyLoss())
    rnn = nn.GRU(3, 4, batch_first=True)  # a series of one feature into input_size=3
    with pytest.raises(ValueError, match=r"x has shape \(2, 6, 1\), 1 feature in its last "
                                         r"dimension, but .*input_size=3"):
        dlt.probe(rnn, torch.randn(2, 6, 1), None, lambda out, _: out[0].pow(2).mean())
