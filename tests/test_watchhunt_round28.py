"""Round 28 hunt of depthlab.torch.Watch in real training loops (watchhunt28)."""
import warnings

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
dlt = pytest.importorskip("depthlab.torch")

ORDER = "optimizer.step() ran on the gradients"
ZEROED = "every weight's .grad is zero"


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(),
                         nn.Linear(16, 3))


def _run(loop, every, model=None, steps=5):
    """Run ``loop(model, opt, watch, x, y)`` ``steps`` times; the Watch's messages."""
    model = _mlp() if model is None else model
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with dlt.Watch(model, every=every, theory=False) as watch:
            for _ in range(steps):
                loop(model, opt, watch, x, y)
    return watch, [str(w.message) for w in caught if "Watch" in str(w.message)]


def _before(model, opt, watch, x, y):  # the documented order
    opt.zero_grad(set_to_none=False)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    watch.step(loss)
    opt.step()


def _after(model, opt, watch, x, y):
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    watch.step(loss)


def _zeroed(model, opt, watch, x, y):
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=False)
    watch.step(loss)


def _closure(model, opt, watch, x, y):  # watch.step inside the closure (LBFGS style)
    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        watch.step(loss)
        return loss
    opt.step(closure)


@pytest.mark.parametrize("every", [1, 3])
def test_watch_step_after_optimizer_step_is_warned(every):
    # `opt.step(); watch.step(loss)` recorded silently the weights after the update (weight_std,
    # update_ratio one update ahead of the loss, layer and gradient rows of the same step)
    _, said = _run(_after, every)
    assert len(said) == 1 and ORDER in said[0] and "step 0" in said[0], said
    for loop in (_before, _closure):
        _, said = _run(loop, every)
        assert not said, (loop.__name__, said)


def test_an_optimizer_of_other_weights_stepped_first_is_not_warned():
    # a second model's optimizer (a GAN's discriminator) stepping before Watch.step is fine
    model, other = _mlp(), _mlp()
    opt_other = torch.optim.SGD(other.parameters(), lr=0.1)

    def loop(model, opt, watch, x, y):
        opt.zero_grad()
        opt_other.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y) + other(x).square().mean()
        loss.backward()
        opt_other.step()
        watch.step(loss)
        opt.step()
    _, said = _run(loop, 1, model=model)
    assert not said, said


@pytest.mark.parametrize("every", [1, 2])
def test_gradients_zeroed_before_watch_step_are_warned(every):
    # opt.zero_grad(set_to_none=False) between the backward and watch.step recorded
    # weight_grad_* rows of 0 silently (set_to_none=True, leaving no .grad, was said)
    watch, said = _run(_zeroed, every)
    assert any(ZEROED in m for m in said), said
    assert sum(ZEROED in m for m in said) == 1
    f = watch.frame()
    assert (f[f.quantity == "weight_grad_absmean"].value == 0).all()
    _, said = _run(_before, every)
    assert not said, said


def test_a_network_whose_weight_gradients_are_truly_zero_is_not_warned():
    # all-zero weights: only the output layer's output gets a gradient and every weight
    # gradient is 0 in truth (its input is 0): measured, not blamed on zero_grad
    model = _mlp()
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.zero_()
                m.bias.zero_()
    watch, said = _run(_before, 1, model=model, steps=2)
    assert not said, said
    f = watch.frame()
    assert (f[(f.quantity == "weight_grad_absmean") & (f.step == 0)].value == 0).all()


@pytest.mark.parametrize("scaler", [False, True])
def test_weights_reassigned_after_an_optimizer_step_are_not_taken_for_a_wrong_order(scaler):
    # A checkpoint loaded with assign=True (and a new optimizer) between two records: the
    # optimizer's step had marked the old weights' gradients, unchanged since (those weights
    # are gone), so the documented order was refused as "after scaler.update()" (ValueError)
    # or, without a scaler, warned as after optimizer.step().
    import io

    model = _mlp()
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    gs = torch.amp.GradScaler("cpu", init_scale=1024.0) if scaler else None
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    checkpoint = io.BytesIO()
    torch.save(model.state_dict(), checkpoint)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with dlt.Watch(model, every=1, scaler=gs, theory=False) as watch:
            for step in range(4):
                if step == 2:
                    checkpoint.seek(0)
                    model.load_state_dict(torch.load(checkpoint), assign=True)
                    opt = torch.optim.SGD(model.parameters(), lr=0.1)
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(x), y)
                (gs.scale(loss) if gs else loss).backward()
                watch.step(loss)
                if gs:
                    gs.step(opt)
                    gs.update()
                else:
                    opt.step()
    assert not [w for w in caught if ORDER in str(w.message)]
    f = watch.frame()
    assert sorted(f.step.unique()) == [0, 1, 2, 3]
    # the gradient rows are those of the loss itself (the scale divided out)
    assert f[(f.step == 3) & (f.quantity == "weight_grad_std")].value.max() < 1.0
