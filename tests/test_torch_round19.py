"""depthlab.torch probe / predict / Watch on the models and loops practitioners have
(round 19): each finding's regression test, values checked against direct autograd."""

from __future__ import annotations

import dataclasses
import warnings

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))


# -- torch.compile after a Watch is attached ------------------------------------------------

@pytest.mark.parametrize("how", ["torch.compile", "model.compile", "function"])
def test_a_model_compiled_after_the_watch_is_refused_in_one_line(how):
    # it crashed inside dynamo ("AssertionError: exception table entry start instruction has
    # no offset": dynamo ran the hooks through its frame evaluation into Numba's dispatcher)
    pytest.importorskip("torch._dynamo")
    m = _mlp()
    x = torch.randn(16, 4)
    with dlt.Watch(m, every=2, theory=False):
        if how == "torch.compile":
            run = torch.compile(m, backend="eager")
        elif how == "model.compile":
            m.compile(backend="eager")
            run = m
        else:
            run = torch.compile(lambda t: m(t).sum(), backend="eager")
        with pytest.raises(TypeError, match=r"Sequential runs compiled .*compile it after "
                                            r"watch\.close\(\)"):
            run(x)
    # closed: the compiled model trains as any other
    assert torch.isfinite(torch.as_tensor(run(x))).all()


def test_a_model_compiled_before_the_watch_is_refused_or_named_in_the_warning():
    # compiled code that skips hooks added later made every record loss-only with a warning
    # asking only whether the Watch was created after the step's forward; where dynamo does
    # run the hooks (the compiled code recompiled), it crashed inside dynamo
    pytest.importorskip("torch._dynamo")
    m = _mlp()
    cm = torch.compile(m, backend="eager")
    x = torch.randn(16, 4)
    cm(x).sum().backward()
    with dlt.Watch(m, every=1, theory=False) as w:
        try:
            loss = cm(x).pow(2).mean()
        except TypeError as e:
            assert "runs compiled (torch.compile(model))" in str(e)
            return
        loss.backward()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            w.step(loss)
    assert any("torch.compile(model) compiled before the Watch" in str(c.message)
               for c in caught), [str(c.message) for c in caught]


# -- the Watch's theory of a forward called with more than one input -----------------------

class _Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.f, self.act, self.g = nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)

    def forward(self, a, scale=None):
        h = self.f(a)
        return self.g(self.act(h if scale is None else h * scale))


class _Listed(nn.Module):
    def __init__(self):
        super().__init__()
        self.f, self.act, self.g = nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)

    def forward(self, xs):
        return self.g(self.act(sum(self.f(t) for t in xs)))


@pytest.mark.parametrize("call, what", [
    (lambda m, a: m(a, torch.full((16, 8), 3.0)), "2 positional arguments"),
    (lambda m, a: m(a, scale=torch.full((16, 8), 3.0)), "1 positional argument and keyword "
                                                       "argument 'scale'"),
    (lambda m, a: m([a, 2 * a]), "a list of inputs"),
])
def test_the_watch_has_no_theory_of_a_forward_called_with_several_inputs(call, what):
    # predict calls model(x): the theory was that of model(a) without the scale (act_var 0.23
    # of a tanh fed 3x its input), or of model(xs[0]) for a list ("'f' ran 16 times")
    torch.manual_seed(0)
    m = _Listed() if "list" in what else _Scaled()
    a, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    with dlt.Watch(m, every=1) as w:
        loss = nn.functional.cross_entropy(call(m, a), y)
        loss.backward()
        w.step(loss)
    assert w.theory is None
    assert w.theory_note == (f"no theory: the model's forward was called with {what}, and "
                             "predict() takes one input tensor x (it calls model(x))")


@pytest.mark.parametrize("by_keyword", [False, True])
def test_the_watch_predicts_a_forward_called_with_its_one_input(by_keyword):
    torch.manual_seed(0)
    m = _Scaled()
    a, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    with dlt.Watch(m, every=1) as w:
        loss = nn.functional.cross_entropy(m(a=a) if by_keyword else m(a), y)
        loss.backward()
        w.step(loss)
    assert w.theory is not None and w.theory_note.startswith("theory:")
    expected = dlt.predict(m, a)
    assert w.theory.act_var[0] == pytest.approx(
        float(expected[expected.quantity == "act_std"].predicted.iloc[0]) ** 2, rel=1e-6)


# -- probe/predict in a loop leave the model's own attributes as they were ------------------

class _Counting(nn.Module):
    """A forward that counts its calls and keeps its last hidden state (warm-up schedules,
    attention maps kept for plotting)."""

    def __init__(self):
        super().__init__()
        self.f, self.act, self.g = nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)
        self.calls, self.seen = 0, []

    def forward(self, x):
        self.calls += 1
        self.seen.append(len(x))
        h = self.act(self.f(x))
        self.last_hidden = h
        return self.g(h)


@pytest.mark.parametrize("what", ["probe", "predict"])
def test_probe_and_predict_leave_the_models_own_attributes_as_they_were(what):
    # dlt.probe/dlt.predict in a loop advanced a forward's call counter (+1 per probe: a
    # warm-up read from it trains differently from the loop without the probe), appended to
    # its lists and left the probe's hidden state cached
    torch.manual_seed(0)
    m = _Counting()
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    m(x)
    cached = m.last_hidden
    if what == "probe":
        dlt.probe(m, x[:5], y[:5], "cross_entropy")
    else:
        dlt.predict(m, x[:5], y[:5], "cross_entropy")
    assert m.calls == 1 and m.seen == [16] and m.last_hidden is cached


# -- a model returning a dataclass ----------------------------------------------------------

@dataclasses.dataclass
class _Output:
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class _ReturnsDataclass(nn.Module):
    def __init__(self, wrap=True):
        super().__init__()
        self.wrap = wrap
        self.f, self.act, self.g = nn.Linear(6, 16), nn.GELU(), nn.Linear(16, 3)

    def forward(self, x):
        logits = self.g(self.act(self.f(x)))
        return _Output(logits=logits) if self.wrap else logits


def test_predict_and_the_watch_theory_read_a_dataclass_output():
    # its first output tensor was not found (fields unread): "no theory: predict() needs the
    # gradient to flow through every layer of the chain" for a model it covers
    torch.manual_seed(0)
    m = _ReturnsDataclass()
    x = torch.randn(32, 6)
    got = dlt.predict(m, x)
    m.wrap = False
    expected = dlt.predict(m, x)
    m.wrap = True
    assert got.predicted.tolist() == expected.predicted.tolist()
    with dlt.Watch(m, every=1) as w:
        loss = m(x).logits.pow(2).mean()
        loss.backward()
        w.step(loss)
    assert w.theory is not None, w.theory_note


# -- a frozen layer on a block's raw input (LoRA) -------------------------------------------

class _LoRA(nn.Module):
    def __init__(self, base):
        super().__init__()
        self.base = base
        self.A = nn.Linear(base.in_features, 4, bias=False)
        self.B = nn.Linear(4, base.out_features, bias=False)

    def forward(self, x):
        return self.base(x) + self.B(self.A(x))


def test_a_frozen_base_of_a_lora_block_has_no_gradient_rows_at_any_step():
    # '0.base' had grad_pre_* rows at step 0 only (the first armed pass's requires-grad copy of
    # the block's raw input made its output require grad), none later nor in dlt.probe
    torch.manual_seed(0)
    m = nn.Sequential(_LoRA(nn.Linear(10, 32)), nn.Tanh(), nn.Linear(32, 3))
    m[0].base.requires_grad_(False)
    x, y = torch.randn(16, 10), torch.randint(0, 3, (16,))
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    with dlt.Watch(m, every=1, theory=False) as w:
        for _ in range(3):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(m(x), y)
            loss.backward()
            w.step(loss)
            opt.step()
    f = w.frame()
    grad = f[f.quantity == "grad_pre_std"].groupby("module").step.apply(list).to_dict()
    assert grad == {"0.A": [0, 1, 2], "0.B": [0, 1, 2], "2": [0, 1, 2]}
    # base(x) + B(A(x)) is one linear map (W + B A) x, no residual block (round 32)
    assert f[f.quantity == "block_grad_std"].step.tolist() == []
    assert "0.base" in set(f[f.quantity == "pre_std"].module)
    df = dlt.probe(m, x, y, "cross_entropy")
    assert sorted(set(df[df.quantity == "grad_pre_std"].module)) == ["0.A", "0.B", "2"]


# -- Softshrink, Hardshrink ----------------------------------------------------------------

@pytest.mark.parametrize("act", [nn.Softshrink(0.5), nn.Hardshrink(0.3)])
def test_shrink_activations_are_measured_and_refused_by_predict_by_name(act):
    # no act_* rows, and predict refused them as "the input of '2' is not the previous layer's
    # output"; predicted as a chain they were 0.78x the measurement (sparse outputs): refused
    torch.manual_seed(0)
    x, y = torch.randn(256, 32, dtype=torch.float64), torch.randint(0, 3, (256,))
    m = nn.Sequential(nn.Linear(32, 64), act, nn.Linear(64, 64), act, nn.Linear(64, 3)).double()
    df = dlt.probe(m, x, y, "cross_entropy")
    h = act(m[0](x))
    value = df[(df.layer == 1) & (df.quantity == "act_std")].value.iloc[0]
    assert value == pytest.approx(h.std(unbiased=False).item(), rel=1e-9)
    mean = df[(df.layer == 1) & (df.quantity == "act_mean")].value.iloc[0]
    assert mean == pytest.approx(h.mean().item(), rel=1e-9, abs=1e-15)
    with pytest.raises(ValueError, match=rf"^predict\(\) does not model '1' "
                                         rf"\({type(act).__name__}\): its flat zone"):
        dlt.predict(m, x, y, "cross_entropy")
