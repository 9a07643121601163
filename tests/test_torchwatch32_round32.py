"""Round 32 (torchwatch32): depthlab.torch.Watch inside practitioners' training loops."""

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = nn.functional
dlt = pytest.importorskip("depthlab.torch")


def _rows(watch, step, module, quantity):
    f = watch.frame()
    sel = f[(f.step == step) & (f.module == module) & (f.quantity == quantity)]
    assert len(sel) == 1, (step, module, quantity)
    return float(sel.value.iloc[0])


def _std(g, scale):
    return (g.detach().double() / scale).std(unbiased=False).item()


def test_a_scaler_unscaling_another_optimizer_leaves_each_weights_rows_unscaled_by_its_own():
    """One GradScaler, two optimizers: `scaler.unscale_(opt)` of one optimizer (to clip its
    weights) does not unscale the `.grad` of the weights the other holds. The Watch divided
    no weight gradient as soon as any optimizer was unscaled: a GAN's generator rows, with the
    discriminator's optimizer unscaled first, were 1024x the gradient; a model split over two
    optimizers likewise for the half not unscaled. Each weight's rows now follow the state of
    the optimizer that holds it (against `.grad / scale` computed directly)."""
    torch.manual_seed(0)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    gen = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    disc = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    opt_g = torch.optim.SGD(gen.parameters(), lr=0.1)
    opt_d = torch.optim.SGD(disc.parameters(), lr=0.1)
    # one model, two optimizers: only the first layer's is unscaled (clipped) before the record
    split = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    opt_a = torch.optim.SGD(split[0].parameters(), lr=0.1)
    opt_b = torch.optim.Adam(split[2].parameters(), lr=0.01)
    with dlt.Watch(gen, every=1, theory=False, scaler=scaler) as wg, \
            dlt.Watch(split, every=1, theory=False, scaler=scaler) as ws:
        for step in range(2):
            for o in (opt_g, opt_d, opt_a, opt_b):
                o.zero_grad()
            scaler.scale(F.cross_entropy(disc(x), y)).backward()
            scaler.unscale_(opt_d)
            torch.nn.utils.clip_grad_norm_(disc.parameters(), 1.0)
            loss = F.cross_entropy(gen(x), y)
            scaler.scale(loss).backward()
            s = scaler.get_scale()
            wg.step(loss)
            for name in ("0", "2"):
                want = _std(gen.get_submodule(name).weight.grad, s)
                assert _rows(wg, step, name, "weight_grad_std") == pytest.approx(want, rel=1e-5)
            loss2 = F.cross_entropy(split(x), y)
            scaler.scale(loss2).backward()
            scaler.unscale_(opt_a)
            torch.nn.utils.clip_grad_norm_(split[0].parameters(), 1.0)
            ws.step(loss2)
            assert _rows(ws, step, "0", "weight_grad_std") == pytest.approx(
                _std(split[0].weight.grad, 1.0), rel=1e-5)
            assert _rows(ws, step, "2", "weight_grad_std") == pytest.approx(
                _std(split[2].weight.grad, s), rel=1e-5)
            for o in (opt_d, opt_g, opt_a, opt_b):
                scaler.step(o)
            scaler.update()


def test_gradients_zeroed_by_clipping_an_overflowed_norm_are_not_blamed_on_zero_grad():
    """AMP's recipe `scaler.unscale_(opt); clip_grad_norm_(...)` at a step whose gradients
    overflowed (the scaler skips it): the total norm is inf, so clipping multiplies every finite
    gradient by 0 (the inf entries, here a bias's, become NaN). The Watch warned "were they zeroed
    (optimizer.zero_grad(set_to_none=False)) between loss.backward() and Watch.step(loss)?",
    which the loop did not do. Its rows are still the zeros the `.grad` holds."""
    import warnings

    torch.manual_seed(0)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with dlt.Watch(model, every=1, theory=False) as watch:
            for step in range(2):
                opt.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                if step == 1:
                    model[2].bias.grad[0] = float("inf")  # an overflow in a bias's gradient
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                watch.step(loss)
                if torch.isfinite(norm):
                    opt.step()
    assert not torch.isfinite(norm)
    for name in ("0", "2", "4"):
        assert _rows(watch, 1, name, "weight_grad_absmean") == 0.0
        assert _rows(watch, 1, name, "grad_pre_absmean") > 0.0


def test_a_scaler_that_never_scaled_a_loss_divides_no_gradient_row():
    """`scaler=` given (a copied AMP config) while the loop never calls `scaler.scale(loss)`
    (bf16 autocast needs no scaling): no backward ran on a scaled loss, yet the Watch divided
    every gradient row by the scaler's initial scale (65536: rows 1/65536 of the gradient)."""
    torch.manual_seed(0)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = {}

    def keep(module, args, output):
        output.register_hook(lambda g: out.__setitem__("g", g.detach()))

    model[2].register_forward_hook(keep)
    with dlt.Watch(model, every=1, theory=False, scaler=torch.amp.GradScaler("cpu")) as watch:
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        watch.step(loss)
        opt.step()
    assert _rows(watch, 0, "0", "weight_grad_std") == pytest.approx(
        _std(model[0].weight.grad, 1.0), rel=1e-5)
    assert _rows(watch, 0, "2", "grad_pre_std") == pytest.approx(
        _std(out["g"].float(), 1.0), rel=1e-3)


def test_the_gradscaler_class_itself_is_refused_when_the_watch_is_made():
    """`scaler=torch.amp.GradScaler` (the parentheses forgotten) was taken: the class has
    `get_scale` and `is_enabled` as attributes, so the check passed, and the loop then failed
    at the first record with "GradScaler.is_enabled() missing 1 required positional argument"."""
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(TypeError, match=r"got the class GradScaler itself; expected an "
                                        r"instance \(torch.amp.GradScaler\('cuda'\)\)"):
        dlt.Watch(model, scaler=torch.amp.GradScaler)


def test_a_record_between_scaler_step_and_update_warns_that_its_weight_rows_are_updated():
    """`scaler.step(opt); watch.step(loss); scaler.update()`: the gradient rows are right, but
    `weight_std`/`update_ratio` are of the weights after that step's update (0.2577 where the
    forward ran with 0.2552). Without a scaler the same order is warned about; with one it was
    silent."""
    torch.manual_seed(0)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    with dlt.Watch(model, every=1, theory=False, scaler=scaler) as watch:
        loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        with pytest.warns(RuntimeWarning, match=r"optimizer.step\(\) ran on the gradients of "
                                                r"step 0 before Watch.step"):
            watch.step(loss)
        scaler.update()
    assert _rows(watch, 0, "0", "weight_std") == pytest.approx(
        model[0].weight.detach().double().std(unbiased=False).item(), rel=1e-6)
