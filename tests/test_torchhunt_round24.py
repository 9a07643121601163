"""Round 24 hunt (torchhunt24): dlt.probe / dlt.Watch / dlt.predict against float64 autograd."""

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402


def _relu_truth(m, x):
    """inactive_frac, dead_frac (units of the layer), act_mean, act_std of m[1] on m[0](x)."""
    with torch.no_grad():
        s = m[0](x)
        a = m[1](s.clone())
    s, a = s.double(), a.double()
    return {"inactive_frac": (s <= 0).double().mean().item(),
            "dead_frac": (~(s > 0).any(0)).double().mean().item(),
            "act_mean": a.mean().item(), "act_std": a.std(unbiased=False).item()}


def _hooked_relu_mlp(hook: str, inplace: bool = False):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(10, 32), nn.ReLU(inplace=inplace), nn.Linear(32, 3))
    with torch.no_grad():
        m[0].bias[:4] = -50.0  # four dead units
    handle = None
    if hook == "module":
        m[1].register_forward_hook(lambda mod, args, out: out + 0.1)
    elif hook == "global":
        handle = nn.modules.module.register_module_forward_hook(
            lambda mod, args, out: out + 0.1 if isinstance(mod, nn.ReLU) else None)
    return m, handle


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("hook", ["module", "global"])
def test_a_relu_whose_output_a_user_hook_changes_is_counted_on_its_input(hook, inplace):
    # A forward hook on a ReLU (or a global one) that shifts its output: the probe counted the
    # inactive entries and live units on the shifted output (inactive_frac 0.0 where half the
    # entries are <= 0, no dead unit), and a Watch's later records took act_mean from relu(s)
    # (0.24 where the module returned 0.34): the output is not relu(input) any more. An
    # in-place ReLU's rows came from its autograd node: act_* of relu(s), not of what it
    # returned.
    m, handle = _hooked_relu_mlp(hook, inplace)
    try:
        g = torch.Generator().manual_seed(5)
        x, y = torch.randn(256, 10, generator=g), torch.randint(0, 3, (256,), generator=g)
        truth = _relu_truth(m, x)
        assert 0.3 < truth["inactive_frac"] < 0.7 and truth["dead_frac"] == 4 / 32
        df = dlt.probe(m, x, y, nn.CrossEntropyLoss())
        got = df[df.layer == 1].set_index("quantity").value
        for q, v in truth.items():
            assert got[q] == pytest.approx(v, rel=1e-6, abs=1e-7), q
        opt = torch.optim.SGD(m.parameters(), lr=0.0)
        loss_fn = nn.CrossEntropyLoss()
        with dlt.Watch(m, every=1, theory=False) as watch:
            for _ in range(3):  # the second and third records take the fused path
                opt.zero_grad()
                loss = loss_fn(m(x), y)
                loss.backward()
                watch.step(loss)
                opt.step()
        w = watch.frame()
        for step in range(3):
            got = w[(w.layer == 1) & (w.step == step)].set_index("quantity").value
            for q, v in truth.items():
                assert got[q] == pytest.approx(v, rel=1e-6, abs=1e-7), (step, q)
    finally:
        if handle is not None:
            handle.remove()


def _mlp3():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))


@pytest.mark.parametrize("case", ["ce_int32", "nll_int16", "ce_name_int32", "bce_int64",
                                  "bce_bool", "bce_fn_int64", "ce_numpy", "mse_list"])
@pytest.mark.parametrize("api", ["probe", "predict"])
def test_targets_a_known_loss_cannot_take_are_named_in_one_line(case, api):
    # torch said 'expected target dtype to be Long or Byte, but got Int' (int32 class indices,
    # RuntimeError), "result type Float can't be cast to the desired output type Long" (0/1
    # targets of dtype int64 for a binary cross-entropy) and "cross_entropy_loss(): argument
    # 'target' (position 2) must be Tensor, not numpy.ndarray", naming neither y nor the remedy
    from torch.nn import functional as F

    from depthlab.validators import ArgumentTypeError

    m = _mlp3()
    x = torch.randn(8, 10)
    labels = torch.randint(0, 3, (8,))
    flags = torch.randint(0, 2, (8, 3))
    loss_fn, y, words = {
        "ce_int32": (nn.CrossEntropyLoss(), labels.int(), ["torch.int32", "y.long()"]),
        "nll_int16": (nn.NLLLoss(), labels.short(), ["torch.int16", "y.long()"]),
        "ce_name_int32": ("cross_entropy", labels.int(), ["torch.int32", "y.long()"]),
        "bce_int64": (nn.BCEWithLogitsLoss(), flags, ["torch.int64", "y.float()"]),
        "bce_bool": (nn.BCEWithLogitsLoss(), flags.bool(), ["torch.bool", "y.float()"]),
        "bce_fn_int64": (F.binary_cross_entropy_with_logits, flags,
                         ["torch.int64", "F.binary_cross_entropy_with_logits"]),
        "ce_numpy": (nn.CrossEntropyLoss(), labels.numpy(), ["ndarray", "torch.as_tensor(y)"]),
        "mse_list": (nn.MSELoss(), flags.float().tolist(), ["list", "MSELoss"]),
    }[case]
    fn = dlt.probe if api == "probe" else dlt.predict
    with pytest.raises(ArgumentTypeError) as info:
        fn(m, x, y, loss_fn)
    text = str(info.value)
    assert "\n" not in text and text.startswith("y "), text
    for w in words:
        assert w in text, text
    # what the losses take still runs: int64 and uint8 class indices, float 0/1 targets
    for y_ok, loss_ok in ((labels, nn.CrossEntropyLoss()),
                          (labels.to(torch.uint8), nn.CrossEntropyLoss()),
                          (flags.float(), nn.BCEWithLogitsLoss()),
                          (flags, nn.MSELoss())):
        fn(m, x, y_ok, loss_ok)


def _tanh_mlp():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(32, 128), nn.Tanh(), nn.Linear(128, 128), nn.Tanh(),
                         nn.Linear(128, 4))


@pytest.mark.parametrize("kind", ["replaces", "in_place", "with_kwargs"])
def test_predict_refuses_a_global_forward_hook_that_changes_an_output(kind):
    # A global forward hook (register_module_forward_hook) doubling each Tanh's output: torch
    # runs it before the modules' own hooks, so predict's check of what a module returned saw
    # the doubled output as the Tanh's and predicted every later row at 0.3-0.5x the
    # measurement, silently; a module's own such hook was refused
    register = nn.modules.module.register_module_forward_hook
    if kind == "replaces":
        handle = register(lambda mod, args, out: out * 2 if isinstance(mod, nn.Tanh) else None)
    elif kind == "in_place":
        def doubles(mod, args, out):  # (a Tanh keeps its output for the backward)
            if isinstance(mod, nn.Linear) and mod.out_features == 128:
                out.mul_(2)
        handle = register(doubles)
    else:
        handle = register(lambda mod, args, kwargs, out: out * 2 if isinstance(mod, nn.Tanh)
                          else None, with_kwargs=True)
    try:
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(256, 32, generator=g), torch.randint(0, 4, (256,), generator=g)
        m = _tanh_mlp()
        first = r"'0' \(Linear\)" if kind == "in_place" else r"'1' \(Tanh\)"
        with pytest.raises(ValueError, match="global forward hook .*" + first) as info:
            dlt.predict(m, x, y, nn.CrossEntropyLoss())
        assert "\n" not in str(info.value)
        # a Watch says why it has no theory, and training goes on
        loss_fn = nn.CrossEntropyLoss()
        watch = dlt.Watch(m, every=1)
        loss = loss_fn(m(x), y)
        loss.backward()
        watch.step(loss)
        watch.close()
        assert watch.theory is None and "global forward hook" in watch.theory_note
    finally:
        handle.remove()
    # the hook wrapped for the forward is put back as it was, and a hook that only reads is
    # no reason to refuse: the same predictions as without it
    assert not nn.modules.module._global_forward_hooks
    seen = []
    reading = nn.modules.module.register_module_forward_hook(
        lambda mod, args, out: seen.append(type(mod).__name__))
    try:
        got = dlt.predict(_tanh_mlp(), x, y, nn.CrossEntropyLoss())
    finally:
        reading.remove()
    want = dlt.predict(_tanh_mlp(), x, y, nn.CrossEntropyLoss())
    assert seen and got.predicted.tolist() == want.predicted.tolist()


@pytest.mark.parametrize("where", ["layer", "activation", "model", "global"])
def test_predict_names_a_forward_pre_hook_that_changes_an_input(where):
    # A pre-hook returning 3 * input was refused as "the input of '2' is not the previous
    # layer's output ...; it is computed by the torch operation 'Mul'", naming no hook, and a
    # global one on the Tanh modules with a path going round in circles ("made by '2' (Linear)
    # -> '1' (Tanh) -> '2' (Linear) -> '1' (Tanh) -> ...")
    m = _tanh_mlp()

    def triple(mod, args):
        return (args[0] * 3,)

    handle = None
    if where == "layer":
        m[2].register_forward_pre_hook(triple)
        who = r"forward pre-hook .* of '2' \(Linear\)"
    elif where == "activation":
        m[1].register_forward_pre_hook(triple)
        who = r"forward pre-hook .* of '1' \(Tanh\)"
    elif where == "model":
        m.register_forward_pre_hook(triple)
        who = r"forward pre-hook .* of the model \(Sequential\)"
    else:
        handle = nn.modules.module.register_module_forward_pre_hook(
            lambda mod, args: (args[0] * 3,) if isinstance(mod, nn.Tanh) else None)
        who = r"global forward pre-hook \(register_module_forward_pre_hook\) .* of '1' \(Tanh\)"
    try:
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(64, 32, generator=g), torch.randint(0, 4, (64,), generator=g)
        with pytest.raises(ValueError, match=who) as info:
            dlt.predict(m, x, y, nn.CrossEntropyLoss())
        assert "\n" not in str(info.value)
    finally:
        if handle is not None:
            handle.remove()
    # put back as they were: the hooks still run, unwrapped
    assert not nn.modules.module._global_forward_pre_hooks
    if where == "layer":
        hook = next(iter(m[2]._forward_pre_hooks.values()))
        assert hook is triple
    # a pre-hook that only reads is no reason to refuse: the same predictions
    seen = []
    m = _tanh_mlp()
    m[2].register_forward_pre_hook(lambda mod, args: seen.append(1))
    got = dlt.predict(m, x, y, nn.CrossEntropyLoss())
    want = dlt.predict(_tanh_mlp(), x, y, nn.CrossEntropyLoss())
    assert seen and got.predicted.tolist() == want.predicted.tolist()


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_an_activation_module_on_a_view_with_a_hooked_output_is_measured_once(act):
    # Linear -> Unflatten -> activation module whose output a user's forward hook changes:
    # the module's node in the autograd graph was also taken for an activation the forward
    # applies itself (the layer's own output link stays open when a module reads a view of
    # it, and the module's output, the hook's, has another grad_fn), so act_* pooled the
    # hooked output with f(s): act_mean 0.41 and act_std 0.59 where they are 0.58 and 0.72
    from numpy import percentile

    torch.manual_seed(0)
    f = {"relu": nn.ReLU, "tanh": nn.Tanh}[act]
    m = nn.Sequential(nn.Linear(10, 64), nn.Unflatten(1, (4, 16)), f(), nn.Flatten(),
                      nn.Linear(64, 3)).double()
    m[2].register_forward_hook(lambda mod, args, out: out * 2 + 0.1)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(64, 10, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=g)
    with torch.no_grad():
        s = m[0](x)
        a = m[2](s.view(64, 4, 16)).reshape(-1)
    truth = {"act_mean": a.mean().item(), "act_std": a.std(unbiased=False).item(),
             "act_p2": float(percentile(a.numpy(), 2)),
             "act_p50": float(percentile(a.numpy(), 50))}
    if act == "relu":
        truth["inactive_frac"] = (s <= 0).double().mean().item()
    df = dlt.probe(m, x, y, nn.CrossEntropyLoss(), percentiles=(2, 50))
    got = df[df.layer == 1].set_index("quantity").value
    for q, v in truth.items():
        assert got[q] == pytest.approx(v, rel=1e-9, abs=1e-12), q
    opt = torch.optim.SGD(m.parameters(), lr=0.0)
    loss_fn = nn.CrossEntropyLoss()
    with dlt.Watch(m, every=1, theory=False, percentiles=(2, 50)) as watch:
        for _ in range(3):
            opt.zero_grad()
            loss = loss_fn(m(x), y)
            loss.backward()
            watch.step(loss)
            opt.step()
    w = watch.frame()
    for step in range(3):
        got = w[(w.layer == 1) & (w.step == step)].set_index("quantity").value
        for q, v in truth.items():
            assert got[q] == pytest.approx(v, rel=1e-9, abs=1e-12), (step, q)


class _ViewTranspose(nn.Module):
    """Linear -> .view(N, 4, 16).transpose(1, 2) -> activation module -> Linear."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.a = nn.Linear(10, 64)
        self.act = act
        self.b = nn.Linear(64, 3)

    def forward(self, x):
        h = self.a(x).view(-1, 4, 16).transpose(1, 2)
        return self.b(self.act(h).reshape(x.shape[0], -1))


@pytest.mark.parametrize("act", ["relu_inplace", "leaky_inplace", "elu_inplace", "relu",
                                 "tanh"])
def test_an_activation_on_a_transposed_view_of_a_reshaped_output_is_the_layers(act):
    # h.view(N, 4, 16).transpose(1, 2) then an in-place activation: the view is no plain
    # reshape or permute of the layer output (two steps), so its follower was not linked and
    # the layer had no act_*, inactive_frac or dead_frac rows (the out-of-place ones came from
    # the autograd graph); the README lists '.transpose(1, 2)' among the reshapes handled
    from torch.nn import functional as F

    make, f = {"relu_inplace": (lambda: nn.ReLU(inplace=True), torch.relu),
               "leaky_inplace": (lambda: nn.LeakyReLU(0.1, inplace=True),
                                 lambda s: F.leaky_relu(s, 0.1)),
               "elu_inplace": (lambda: nn.ELU(inplace=True), F.elu),
               "relu": (nn.ReLU, torch.relu), "tanh": (nn.Tanh, torch.tanh)}[act]
    torch.manual_seed(0)
    m = _ViewTranspose(make()).double()
    with torch.no_grad():
        m.a.bias[:8] = -50.0  # 8 of the 64 units dead
    g = torch.Generator().manual_seed(5)
    x = torch.randn(64, 10, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=g)
    with torch.no_grad():
        s = m.a(x)
        a = f(s)
    truth = {"act_mean": a.mean().item(), "act_std": a.std(unbiased=False).item(),
             "pre_std": s.std(unbiased=False).item()}
    if act != "tanh":  # (f' of leaky ReLU and ELU is never 0)
        truth["dead_frac"] = 8 / 64 if act in ("relu", "relu_inplace") else 0.0
    if act in ("relu_inplace", "relu", "leaky_inplace", "elu_inplace"):
        truth["inactive_frac"] = (s <= 0).double().mean().item()
    df = dlt.probe(m, x, y, nn.CrossEntropyLoss())
    got = df[df.layer == 1].set_index("quantity").value
    for q, v in truth.items():
        assert q in got.index, q
        assert got[q] == pytest.approx(v, rel=1e-9, abs=1e-12), q


def test_predict_names_a_loss_fn_that_is_not_callable():
    # dlt.probe said "loss_fn must be callable (output, y) -> scalar tensor, got int";
    # dlt.predict raised "TypeError: 'int' object is not callable" from inside its forward
    m = _mlp3()
    x, y = torch.randn(8, 10), torch.randint(0, 3, (8,))
    with pytest.raises(TypeError, match=r"^loss_fn must be callable .* got int$"):
        dlt.predict(m, x, y, 3)


@pytest.mark.parametrize("api", ["probe", "predict"])
def test_float64_targets_of_a_probability_bce_for_a_float32_model_are_named(api):
    # torch.from_numpy(labels) is float64: BCELoss on a float32 model's probabilities failed
    # inside torch with 'Found dtype Double but expected Float'
    from torch.nn import functional as F

    from depthlab.validators import ArgumentTypeError

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3), nn.Sigmoid())
    x = torch.randn(8, 10)
    y = torch.randint(0, 2, (8, 3)).double()
    fn = dlt.probe if api == "probe" else dlt.predict
    for loss_fn in (nn.BCELoss(), F.binary_cross_entropy, "bce"):
        with pytest.raises(ArgumentTypeError, match=r"^y has dtype torch.float64, .*"
                           r"torch.float32 \(y.to\(torch.float32\)\)$"):
            fn(m, x, y, loss_fn)
    fn(m, x, y.float(), nn.BCELoss())
    fn(m, x, y, nn.BCEWithLogitsLoss())  # (torch takes float64 targets there)
