"""Round 26 hunt of depthlab.torch.Watch in real training loops (watchhunt26)."""
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
dlt = pytest.importorskip("depthlab.torch")

GradScaler = getattr(torch.amp, "GradScaler", None)


def _scaler():
    try:
        return GradScaler("cpu", init_scale=1024.0)
    except Exception as e:  # an old torch without a CPU GradScaler
        pytest.skip(f"no CPU GradScaler: {e}")


def _row(watch, step, layer, quantity):
    f = watch.frame()
    v = f[(f.step == step) & (f.layer == layer) & (f.quantity == quantity)].value
    assert len(v) == 1
    return float(v.iloc[0])


def test_a_skipped_first_scaler_step_records_the_unscaled_gradient_once():
    # fp16 training skips its first steps (inf gradients at the initial scale): scaler.step
    # unscales .grad and never calls optimizer.step, so the optimizer was unknown to the Watch,
    # which divided the already unscaled weight gradients by the scale again (1/S of them)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = _scaler()
    watch = dlt.Watch(model, every=1, theory=False, scaler=scaler)
    for step in range(3):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        if step < 2:  # an overflow in the first layer's gradient: the step is skipped
            model[0].weight.grad[0, 0] = float("inf")
        true = model[2].weight.grad.std(unbiased=False).item() / scaler.get_scale()
        w2 = model[2].weight.detach().clone()
        scaler.step(opt)
        watch.step(loss)  # between scaler.step and scaler.update, as documented
        assert _row(watch, step, 2, "weight_grad_std") == pytest.approx(true, rel=1e-5)
        if step < 2:
            assert torch.equal(model[2].weight, w2)  # skipped indeed
        scaler.update()
    watch.close()


def test_a_skipped_step_of_another_models_optimizer_is_not_taken_for_mine():
    # a GAN: the discriminator's first step is skipped before the generator's backward; the
    # generator's .grad is still scaled when its Watch records (before its scaler.step)
    torch.manual_seed(1)
    g = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 5))
    d = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 1))
    og, od = torch.optim.SGD(g.parameters(), lr=0.1), torch.optim.SGD(d.parameters(), lr=0.1)
    scaler = _scaler()
    watch = dlt.Watch(g, every=1, theory=False, scaler=scaler)
    z, real = torch.randn(16, 4), torch.randn(16, 5)
    fake = g(z)
    od.zero_grad()
    ld = d(real).mean() - d(fake.detach()).mean()
    scaler.scale(ld).backward()
    d[0].weight.grad[0, 0] = float("inf")
    scaler.step(od)  # skipped
    og.zero_grad()
    lg = d(fake).mean()
    scaler.scale(lg).backward()
    true = g[2].weight.grad.std(unbiased=False).item() / scaler.get_scale()
    watch.step(lg)
    scaler.step(og)
    scaler.update()
    watch.close()
    assert _row(watch, 0, 2, "weight_grad_std") == pytest.approx(true, rel=1e-5)


def test_a_watch_step_after_scaler_update_is_refused_not_recorded_wrong():
    # scaler.step(opt); scaler.update(); watch.step(loss): the .grad were unscaled by
    # scaler.step and update() reset the scaler's state, so the rows were divided by the next
    # step's scale (weight_grad_* a second time: 1/S of the gradient, silently)
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = _scaler()
    watch = dlt.Watch(model, every=2, theory=False, scaler=scaler)
    for step in range(4):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        if step < 2:  # the documented order, recorded right
            true = model[2].weight.grad.std(unbiased=False).item() / scaler.get_scale()
            watch.step(loss)
            scaler.step(opt)
            scaler.update()
            if step == 0:
                assert _row(watch, 0, 2, "weight_grad_std") == pytest.approx(true, rel=1e-5)
            continue
        scaler.step(opt)
        scaler.update()
        if step == 2:
            with pytest.raises(ValueError, match=r"after scaler\.update\(\)"):
                watch.step(loss)
            break
    watch.close()
    assert 2 not in set(watch.frame().step)
