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


def _amp_loop(seed, every):
    """A 6-8-3 ReLU classifier on 16 rows, its SGD optimizer, a GradScaler and a Watch of it."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = _scaler()
    watch = dlt.Watch(model, every=every, theory=False, scaler=scaler)
    return model, x, y, opt, scaler, watch


def _row(watch, step, layer, quantity):
    f = watch.frame()
    v = f[(f.step == step) & (f.layer == layer) & (f.quantity == quantity)].value
    assert len(v) == 1
    return float(v.iloc[0])


def test_a_skipped_first_scaler_step_records_the_unscaled_gradient_once():
    # fp16 training skips its first steps (inf gradients at the initial scale): scaler.step
    # unscales .grad and never calls optimizer.step, so the optimizer was unknown to the Watch,
    # which divided the already unscaled weight gradients by the scale again (1/S of them)
    model, x, y, opt, scaler, watch = _amp_loop(seed=0, every=1)
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
    model, x, y, opt, scaler, watch = _amp_loop(seed=2, every=2)
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
            for _ in range(2):  # refused again when called again
                with pytest.raises(ValueError, match=r"after scaler\.update\(\)"):
                    watch.step(loss)
            break
    watch.close()
    assert 2 not in set(watch.frame().step)


@pytest.mark.parametrize("where", ["before", "after_step"])
def test_a_validation_forward_of_the_model_is_not_pooled_with_a_training_pass_through_submodules(
        where):
    # a loop that trains through the model's submodules (model[0], model[1], ...) and
    # validates with model(x_val), gradients left on and no backward: the training forward
    # that followed the validation was pooled with it (pre_std 0.965 where the batch's is 0.618)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 6, dtype=torch.float64), torch.randint(0, 3, (16,))
    xv = 2 * torch.randn(7, 6, dtype=torch.float64)
    watch = dlt.Watch(model, every=2, theory=False)
    for step in range(3):
        if where == "before" and step == 2:
            model.eval()
            nn.functional.cross_entropy(model(xv), y[:7])
            model.train()
        opt.zero_grad()
        h = model[0](x)
        h.retain_grad()
        loss = nn.functional.cross_entropy(model[2](model[1](h)), y)
        loss.backward()
        watch.step(loss)
        if where == "after_step" and step == 1:
            model.eval()
            nn.functional.cross_entropy(model(xv), y[:7])
            model.train()
        opt.step()
    watch.close()
    assert _row(watch, 2, 1, "pre_std") == pytest.approx(h.std(unbiased=False).item(), rel=1e-9)
    assert _row(watch, 2, 1, "grad_pre_std") == pytest.approx(
        h.grad.std(unbiased=False).item(), rel=1e-9)


def test_a_forward_of_the_model_and_a_submodule_call_under_one_loss_are_still_pooled():
    # model(a) and model[0](b) graded by one backward: both calls of layer 1 pooled
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    a, b = torch.randn(9, 5, dtype=torch.float64), 3 * torch.randn(4, 5, dtype=torch.float64)
    watch = dlt.Watch(model, every=1, theory=False)
    outs = []
    hook = model[0].register_forward_hook(lambda m, i, o: outs.append(o))
    loss = model(a).pow(2).mean() + model[0](b).pow(2).mean()
    loss.backward()
    watch.step(loss)
    hook.remove()
    watch.close()
    pooled = torch.cat(outs).detach()
    assert _row(watch, 0, 1, "pre_std") == pytest.approx(pooled.std(unbiased=False).item(),
                                                         rel=1e-9)


def test_a_refused_watch_step_is_not_counted_as_a_step():
    # a notebook: watch.step refused (no backward since the previous call), the loop fixed and
    # run again: the refused call's loss was kept, numbered as the next step, and the next
    # real loss took the number of the step before it (two losses at step 2, 99.0 at step 3)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    watch = dlt.Watch(model, every=2, theory=False)
    seen = []

    def train_step():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        watch.step(loss)
        seen.append(loss.item())
        opt.step()

    for _ in range(4):
        train_step()
    for _ in range(2):  # refused twice: each time no backward since the previous call
        with pytest.raises(ValueError, match="without a backward"):
            watch.step(torch.tensor(99.0))
    for _ in range(2):
        train_step()
    watch.close()
    losses = watch.losses()
    assert list(losses["step"]) == list(range(6))
    assert list(losses["loss"]) == pytest.approx(seen, rel=1e-6)
    assert watch.steps_seen == 6
    assert sorted(set(watch.frame().step)) == [0, 2, 4]
