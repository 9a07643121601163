"""Round 20 of the torch bridge: modules whose computation is not their class's."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from depthlab.bridge import from_torch  # noqa: E402


def _stepped(model: nn.Module) -> nn.Module:
    """``model`` after one SGD step (an old-style spectral/weight norm's ``.weight`` attribute
    is then stale: the value of the forward before the step)."""
    torch.manual_seed(0)
    x = torch.randn(5, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(x).sum().backward()
    opt.step()
    return model


def _old_spectral():
    return _stepped(nn.Sequential(nn.utils.spectral_norm(nn.Linear(4, 3)), nn.Tanh()))


def _old_weight_norm():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _stepped(nn.Sequential(nn.utils.weight_norm(nn.Linear(4, 3)), nn.Tanh()))


def _pruned():
    lin = nn.Linear(4, 3)
    nn.utils.prune.l1_unstructured(lin, "weight", amount=0.5)
    return nn.Sequential(lin, nn.ReLU())


def _output_hook():
    lin = nn.Linear(4, 3)
    lin.register_forward_hook(lambda mod, inp, out: out * 2)
    return nn.Sequential(lin, nn.Tanh())


def _input_hook():
    lin = nn.Linear(4, 3)
    lin.register_forward_pre_hook(lambda mod, inp: (inp[0] + 1,))
    return nn.Sequential(nn.Sequential(lin), nn.Tanh())


def _grad_hook():
    lin = nn.Linear(4, 3)
    lin.register_full_backward_hook(lambda mod, gin, gout: (gin[0] * 0,))
    return nn.Sequential(lin, nn.Tanh())


@pytest.mark.parametrize("make, where, what", [
    (_old_spectral, "module '0'", r"forward pre-hook \(SpectralNorm\).*remove_spectral_norm"),
    (_old_weight_norm, "module '0'", r"forward pre-hook \(WeightNorm\).*remove_weight_norm"),
    (_pruned, "module '0'", r"forward pre-hook \(L1Unstructured\).*prune\.remove"),
    (_output_hook, "module '0'", r"a forward hook \(\S*<lambda>\).*handle\.remove"),
    (_input_hook, "module '0.0'", r"a forward pre-hook \(\S*<lambda>\)"),
    (_grad_hook, "module '0'", r"backward hook"),
])
def test_a_module_with_a_hook_is_refused_by_name_not_copied_without_it(make, where, what):
    # before: accepted, and the network's outputs differed from the model's by 0.81 (old
    # spectral norm after a step), 0.21 (old weight norm), 0.30 (output hook), 1.08 (input hook)
    model = make()
    with pytest.raises(TypeError, match=rf"^from_torch cannot express {where} \(Linear\(.*"
                                        rf"{what}"):
        from_torch(model)


@pytest.mark.parametrize("param", ["weight_norm", "spectral_norm"])
def test_a_parametrized_weight_is_refused_and_its_remedy_is_accepted(param):
    # before: accepted with the computed weight: 15 depthlab parameters for torch's 18
    # (weight norm's g and v), trained as a plain weight (no renormalization), and reading a
    # spectral norm's weight in training mode ran a power iteration on the user's model
    make = getattr(nn.utils.parametrizations, param)
    lin = make(nn.Linear(4, 3))
    model = nn.Sequential(lin, nn.Tanh())
    u = [b.clone() for b in model.buffers()]
    with pytest.raises(TypeError, match=r"^from_torch cannot express module '0' "
                                        r"\(ParametrizedLinear\(.*'weight' is parametrized "
                                        r"\(_(Weight|Spectral)Norm\).*remove_parametrizations"):
        from_torch(model)
    assert all(torch.equal(a, b) for a, b in zip(u, model.buffers()))  # left as it was
    x = torch.randn(6, 4)
    model.eval()
    with torch.no_grad():
        expected = model(x)
    nn.utils.parametrize.remove_parametrizations(lin, "weight")
    net = from_torch(model)
    assert abs(net.predict(x.numpy()) - expected.numpy()).max() < 1e-6


@pytest.mark.parametrize("options", [
    {},  # dl.mlp's default norm: ema_start="first_batch"
    {"bn_ema_start": "zero", "bn_inference": "population"},
    {"bn_inference": "population", "bn_momentum": None},
])
def test_to_torch_batch_norms_compile_under_torchscript_and_compute_the_same(options):
    # before: torch.jit.script failed ("try blocks aren't supported", then super()) on every
    # to_torch model of dl.mlp(batchnorm=True) with its default bn_ema_start="first_batch"
    import numpy as np

    import depthlab as dl
    from depthlab.bridge import to_torch

    net = dl.mlp([3, 5, 5, 2], "tanh", batchnorm=True, dtype="float64", seed=0, **options)
    rng = np.random.default_rng(0)
    if options.get("bn_inference") == "population":
        net.calibrate(rng.normal(1, 2, (40, 3)))
    eager, scripted = to_torch(net), torch.jit.script(to_torch(net))
    for _ in range(3):  # training mode: the running statistics of each batch, from the first
        x = torch.from_numpy(rng.normal(1, 2, (8, 3)))
        net.forward(x.numpy(), training=True)
        out_e, out_s = eager(x), scripted(x)
        assert torch.allclose(out_e, out_s, rtol=0, atol=1e-14)
    norms = [m for m in eager.modules() if isinstance(m, nn.BatchNorm1d)]
    scripted_norms = [m for m in scripted.modules() if m.original_name.endswith("Norm1d")]
    for a, b, c in zip(net.batchnorms(), norms, scripted_norms, strict=True):
        np.testing.assert_allclose(b.running_mean.numpy(), a.running_mean, rtol=1e-12)
        np.testing.assert_allclose(c.running_var.numpy(), a.running_var, rtol=1e-12)
        assert int(c.num_batches_tracked) == a.num_batches == 3
    eager.eval(), scripted.eval()
    x = torch.from_numpy(rng.normal(1, 2, (6, 3)))
    np.testing.assert_allclose(scripted(x).detach().numpy(), net.predict(x.numpy()),
                               rtol=1e-12, atol=1e-14)


def test_an_uncalibrated_population_norm_still_names_its_class_in_eval_mode():
    from depthlab.bridge.torch_bridge import FirstBatchPopulationBatchNorm1d

    bn = FirstBatchPopulationBatchNorm1d(3).eval()
    with pytest.raises(RuntimeError, match=r"^FirstBatchPopulationBatchNorm1d: inference="
                                           r"'population' needs whole-training-set"):
        bn(torch.randn(4, 3))


class Linear(nn.Module):  # another library's "Linear": not torch's
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(2, 2))

    def forward(self, x):
        return x @ self.w


class ScaledLinear(nn.Linear):
    def forward(self, x):
        return super().forward(x) * 2


@pytest.mark.parametrize("make, what", [
    # before: "cannot express the model itself (Sequential); accepted: nn.Sequential, ..."
    (lambda: torch.fx.symbolic_trace(nn.Sequential(nn.Linear(3, 2), nn.ReLU())),
     r"the model itself \(Sequential: a torch\.fx GraphModule running traced code; pass the "
     r"model it was traced from\); accepted"),
    (lambda: nn.Sequential(nn.Linear(2, 2), Linear()),
     r"module '1' \(Linear: \S+\.Linear, not torch\.nn's\); accepted"),
    (lambda: nn.Sequential(ScaledLinear(2, 2)),
     r"module '0' \(ScaledLinear\(.*\): \S+\.ScaledLinear, a subclass of nn\.Linear with its own "
     r"forward, which depthlab cannot read\); accepted"),
])
def test_a_refused_module_named_like_an_accepted_one_says_what_it_is(make, what):
    with pytest.raises(TypeError, match=rf"^from_torch cannot express {what}"):
        from_torch(make())


@pytest.mark.parametrize("register", ["register_module_forward_hook",
                                      "register_module_forward_pre_hook"])
def test_a_global_module_hook_is_refused_while_it_is_registered(register):
    # before: accepted; the torch model's outputs were the hook's (here doubled), the
    # network's not
    import numpy as np

    model = nn.Sequential(nn.Linear(3, 2), nn.Tanh())
    if register.endswith("pre_hook"):
        def double(mod, inp):
            return (inp[0] * 2,) if isinstance(mod, nn.Linear) else None
    else:
        def double(mod, inp, out):
            return out * 2 if isinstance(mod, nn.Linear) else None
    handle = getattr(nn.modules.module, register)(double)
    try:
        with pytest.raises(TypeError, match=r"^from_torch cannot express the model while a "
                                            r"global forward (pre-)?hook \(\S*double\) is "
                                            r"registered.*handle\.remove\(\)"):
            from_torch(model)
    finally:
        handle.remove()
    x = torch.randn(4, 3)
    with torch.no_grad():
        assert np.abs(from_torch(model).predict(x.numpy()) - model(x).numpy()).max() < 1e-6
