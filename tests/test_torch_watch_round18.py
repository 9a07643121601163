"""depthlab.torch.Watch in real users' training loops (round 18): each finding's regression
test, the recorded values checked against a direct autograd computation and the training with a
Watch against the same training without one, bit for bit."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402

F = nn.functional


def _mlp(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(),
                         nn.Linear(8, 3)).to(dtype)


def _data(rows=6, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 5, generator=g).to(dtype), torch.randint(0, 3, (rows,), generator=g)


def _pstd(t):
    return t.detach().double().std(unbiased=False).item()


def _table(watch, step):
    frame = watch.frame()
    return frame[frame.step == step].set_index(["layer", "quantity"]).value


def _outputs_and_grads(model, x, y):
    """Each Linear's output and ``dL/d output`` by autograd on a copy of ``model``."""
    ref = copy.deepcopy(model)
    outs, h = [], x
    for m in ref:
        h = m(h)
        if isinstance(m, nn.Linear):
            h.retain_grad()
            outs.append(h)
    F.cross_entropy(h, y).backward()
    return outs, [o.grad for o in outs]


def test_a_loop_that_takes_its_gradients_by_autograd_grad_is_recorded():
    """A loop that updates the weights itself from ``torch.autograd.grad`` (no ``.grad`` is
    ever set) was refused at step 0: 'Watch.step(loss) was called before any backward'. The
    backward the hooks saw is a backward: the rows are recorded (gradient rows equal autograd's,
    no ``weight_grad_*`` rows since there is no ``.grad``), update ratios as by hand, and the
    training is bit-identical to the same loop without a Watch."""
    x, y = _data()

    def train(watch_it):
        model = _mlp()
        watch = dlt.Watch(model, every=2, theory=False) if watch_it else None
        weights, wants = [], []
        for _ in range(5):
            wants.append(_outputs_and_grads(model, x, y))
            weights.append(model[2].weight.detach().clone())
            loss = F.cross_entropy(model(x), y)
            grads = torch.autograd.grad(loss, list(model.parameters()))
            if watch is not None:
                watch.step(loss)
            with torch.no_grad():
                for p, g in zip(model.parameters(), grads):
                    p -= 0.1 * g
        if watch is not None:
            watch.close()
        return model, watch, weights, wants

    plain, _, _, _ = train(False)
    with pytest.warns(RuntimeWarning, match="no weight has a .grad") as said:
        model, watch, weights, wants = train(True)
    mine = [w for w in said if "no weight has a .grad" in str(w.message)]
    assert len(mine) == 1 and mine[0].filename == __file__  # once a run, at the user's line
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), model.parameters()))
    assert not watch.frame()["quantity"].str.startswith("weight_grad").any()
    for step in (0, 2, 4):
        table = _table(watch, step)
        outs, gouts = wants[step]
        for i, (o, g) in enumerate(zip(outs, gouts)):
            assert table[(i + 1, "pre_std")] == pytest.approx(_pstd(o), rel=1e-10)
            assert table[(i + 1, "grad_pre_std")] == pytest.approx(_pstd(g), rel=1e-10)
    for step in (2, 4):
        w1, w0 = weights[step], weights[step - 1]
        want = ((w1 - w0).norm() / w0.norm()).item()
        assert _table(watch, step)[(2, "update_ratio")] == pytest.approx(want, rel=1e-9)
    # optimizer.zero_grad() between backward and Watch.step: recorded, and told where to call
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = dlt.Watch(model, every=1, theory=False)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    opt.zero_grad()
    with pytest.warns(RuntimeWarning, match=r"call Watch.step\(loss\) before optimizer.step"):
        watch.step(loss)
    # with no backward at all the refusal stays
    model = _mlp()
    watch = dlt.Watch(model, theory=False)
    loss = F.cross_entropy(model(x), y)
    with pytest.raises(ValueError, match="before any backward"):
        watch.step(loss)


def test_a_relative_out_is_the_folder_of_the_working_directory_at_creation(tmp_path,
                                                                          monkeypatch):
    """``Watch(model, out="runs")`` made ``runs/depthlab.db`` in the working directory of the
    moment, but close() stored the run under the working directory of its own moment: a loop
    that changed directory (``os.chdir``, a notebook's ``%cd``) found an empty store where it
    looked and a run in another folder. The run goes where the store was made."""
    from depthlab.experiments.store import Store

    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(first)
    model = _mlp()
    x, y = _data()
    watch = dlt.Watch(model, every=1, out="runs", theory=False)
    monkeypatch.chdir(second)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    watch.step(loss)
    watch.close()
    assert not (second / "runs").exists()
    with Store(first / "runs") as store:
        assert list(store.runs()["name"]) == ["Sequential"]
    # "~/runs": the home folder's, at creation and at close (not a folder named '~')
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    watch = dlt.Watch(model, every=1, out="~/runs", theory=False)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    watch.step(loss)
    watch.close()
    assert not (second / "~").exists()
    with Store(home / "runs") as store:
        assert len(store.runs()) == 1


@pytest.mark.parametrize("fused", [False, True])
def test_a_watch_step_between_scaler_step_and_update_reads_the_unscaled_gradients(fused):
    """``scaler.scale(loss).backward(); scaler.step(opt); watch.step(loss); scaler.update()``:
    ``scaler.step`` had unscaled ``.grad`` in place (a fused Adam's too), and the Watch divided
    it by the scale once more: ``weight_grad_std`` 1/1024 of the gradient, silently. The rows
    equal autograd's gradients of the same loss without a scaler (the scale is a power of 2:
    exact), wherever the call is before ``scaler.update``."""
    x, y = _data(rows=16, dtype=torch.float32)

    def model():
        return _mlp(dtype=torch.float32)

    ref = model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        F.cross_entropy(ref(x), y).backward()
    for where in ("before", "after"):
        net = model()
        opt = torch.optim.Adam(net.parameters(), 1e-3, fused=fused)
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
        watch = dlt.Watch(net, every=1, scaler=scaler, theory=False)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(net(x), y)
        scaler.scale(loss).backward()
        if where == "before":
            watch.step(loss)
        scaler.step(opt)
        if where == "after":
            watch.step(loss)
        scaler.update()
        table = _table(watch, 0)
        for i in range(3):
            want = ref[2 * i].weight.grad
            assert table[(i + 1, "weight_grad_std")] == pytest.approx(_pstd(want), rel=1e-6)
            assert table[(i + 1, "weight_grad_absmean")] == pytest.approx(
                want.double().abs().mean().item(), rel=1e-6)


def test_a_run_whose_store_failed_at_close_is_stored_by_a_second_close(tmp_path):
    """close() marked the Watch closed before storing: when the store failed (the results
    folder removed during training and a file in its place, a full disk, a locked database)
    the exception said nothing of the run, and the second close() did nothing, so the run
    could not be stored any more. The error now says the run is kept and close() again stores
    it, with the time the run took up to the first close."""
    import shutil

    from depthlab.experiments.store import Store

    out = tmp_path / "runs"
    model = _mlp()
    x, y = _data()
    watch = dlt.Watch(model, every=1, out=out, theory=False)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    watch.step(loss)
    shutil.rmtree(out)
    out.write_text("not a folder")
    with pytest.raises(Exception, match="not a folder") as info:
        watch.close()
    assert any("call watch.close() again to store it" in n
               for n in getattr(info.value, "__notes__", []))
    out.unlink()
    watch.close()
    with Store(out) as store:
        runs = store.runs()
        assert list(runs["name"]) == ["Sequential"]
        frame = store.probes(runs["id"].iloc[0])
    assert len(frame) == len(watch.frame())
    watch.close()  # stored: nothing more
    with Store(out) as store:
        assert len(store.runs()) == 1


def _sgd_groups(model):
    return torch.optim.SGD([{"params": model[0].parameters(), "lr": 0.01},
                            {"params": [*model[2].parameters(), *model[4].parameters()]}],
                           lr=0.1, momentum=0.9, nesterov=True)


@pytest.mark.parametrize("setting", ["adam_step_lr", "adamw_clip", "sgd_groups_zero_grad_false",
                                     "rmsprop_every_1"])
def test_optimizers_clipping_schedulers_and_param_groups(setting):
    """A practitioner's loop with Adam and a StepLR, AdamW after clip_grad_norm_, SGD with
    Nesterov momentum over two parameter groups and zero_grad(set_to_none=False), RMSprop
    recorded at every step: the training is bit-identical to the same loop without a Watch,
    every update_ratio equals ||W_n - W_(n-1)|| / ||W_(n-1)|| of the weights by hand, and
    weight_grad_std the std of the .grad the optimizer stepped with (after clipping)."""
    make_opt = {
        "adam_step_lr": lambda m: torch.optim.Adam(m.parameters(), lr=1e-2),
        "adamw_clip": lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1),
        "sgd_groups_zero_grad_false": _sgd_groups,
        "rmsprop_every_1": lambda m: torch.optim.RMSprop(m.parameters(), lr=1e-3),
    }[setting]
    every = 1 if setting == "rmsprop_every_1" else 3

    def train(watch_it):
        model = _mlp()
        opt = make_opt(model)
        sched = torch.optim.lr_scheduler.StepLR(opt, 2, 0.5) if setting == "adam_step_lr" \
            else None
        g = torch.Generator().manual_seed(3)
        watch = dlt.Watch(model, every=every, theory=False) if watch_it else None
        weights, grads = [], []
        for _ in range(8):
            x = torch.randn(12, 5, generator=g, dtype=torch.float64)
            y = torch.randint(0, 3, (12,), generator=g)
            opt.zero_grad(set_to_none=setting != "sgd_groups_zero_grad_false")
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            if setting == "adamw_clip":
                nn.utils.clip_grad_norm_(model.parameters(), 0.05)
            if watch is not None:
                watch.step(loss)
            weights.append([model[i].weight.detach().clone() for i in (0, 2, 4)])
            grads.append([model[i].weight.grad.clone() for i in (0, 2, 4)])
            opt.step()
            if sched is not None:
                sched.step()
        if watch is not None:
            watch.close()
        return model, watch, weights, grads

    plain = train(False)[0]
    model, watch, weights, grads = train(True)
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), model.parameters()))
    frame = watch.frame()
    ratios = frame[frame.quantity == "update_ratio"]
    assert len(ratios) == 3 * len(range(every, 8, every))
    for row in ratios.itertuples():
        w1, w0 = weights[row.step][row.layer - 1], weights[row.step - 1][row.layer - 1]
        assert row.value == pytest.approx(((w1 - w0).norm() / w0.norm()).item(), rel=1e-9)
    for step in range(0, 8, every):
        table = _table(watch, step)
        for i in range(3):
            assert table[(i + 1, "weight_grad_std")] == pytest.approx(_pstd(grads[step][i]),
                                                                      rel=1e-10)


class _Counting(nn.Module):
    """A model whose forward keeps state in plain attributes: a call counter its output
    depends on (a warm-up), a list of batch sizes, a cached tensor, an attribute made on the
    first call."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
        self.calls = 0
        self.seen = []
        self.sizes = {}
        self.last = None

    def forward(self, x):
        self.calls += 1
        self.seen.append(x.shape[0])
        self.sizes[self.calls] = x.shape[0]
        if not hasattr(self, "first"):
            self.first = x.shape[0]
        self.last = out = self.net(x) * min(1.0, self.calls / 4)
        return out


def test_the_theorys_extra_forward_leaves_the_models_own_attributes_as_they_were():
    """The theory's forward at the first recorded step ran the model's forward once more, so
    a counter the forward increments was one ahead for the rest of the run (a warm-up factor
    read from it trained differently than without a Watch), a list it appends to had an entry
    more, and its cached tensor was the theory's. They are put back: the training is
    bit-identical and the attributes are those of the same loop without a Watch."""
    x, y = _data(rows=8)

    def train(watch_it):
        model = _Counting()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        watch = dlt.Watch(model, every=2) if watch_it else None
        for _ in range(5):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            if watch is not None:
                watch.step(loss)
            opt.step()
        return model, watch

    plain, _ = train(False)
    model, watch = train(True)
    assert watch.theory is not None  # the theory's forward did run
    assert model.calls == plain.calls == 5
    assert model.seen == plain.seen and model.sizes == plain.sizes and model.first == 8
    assert torch.equal(model.last, plain.last)
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), model.parameters()))


def test_a_gan_sharing_one_grad_scaler_reads_each_models_gradients_unscaled_once():
    """One GradScaler for a GAN (PyTorch's recipe for several optimizers): the discriminator's
    ``scaler.step(opt_d)`` comes before the generator's backward and ``watch_g.step``. Reading
    that STEPPED state as 'unscaled' (any optimizer's) left the generator's ``weight_grad_*``
    1024x the gradient; only an optimizer of the watched weights counts now. Both models' rows
    equal autograd's of the same losses without a scaler; the Watch's optimizer hook goes at
    close."""
    from torch.optim.optimizer import _global_optimizer_pre_hooks

    torch.manual_seed(0)
    gen = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 6))
    disc = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 1))
    opt_g = torch.optim.Adam(gen.parameters(), 1e-3)
    opt_d = torch.optim.Adam(disc.parameters(), 1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    hooks_before = len(_global_optimizer_pre_hooks)
    watch_g = dlt.Watch(gen, every=1, scaler=scaler, theory=False)
    watch_d = dlt.Watch(disc, every=1, scaler=scaler, theory=False)
    g = torch.Generator().manual_seed(1)
    bce = F.binary_cross_entropy_with_logits
    amp = torch.autocast("cpu", dtype=torch.bfloat16)
    for step in range(3):
        real, z = torch.randn(8, 6, generator=g), torch.randn(8, 4, generator=g)
        ones, zeros = torch.ones(8, 1), torch.zeros(8, 1)
        ref_g, ref_d = copy.deepcopy(gen), copy.deepcopy(disc)
        with amp:
            (bce(ref_d(real), ones) + bce(ref_d(ref_g(z).detach()), zeros)).backward()
        want_d = [ref_d[i].weight.grad for i in (0, 2)]
        opt_d.zero_grad()
        with amp:
            loss_d = bce(disc(real), ones) + bce(disc(gen(z).detach()), zeros)
        scaler.scale(loss_d).backward()
        watch_d.step(loss_d)
        scaler.step(opt_d)
        ref_g, ref_d = copy.deepcopy(gen), copy.deepcopy(disc)
        with amp:
            bce(ref_d(ref_g(z)), ones).backward()
        want_g = [ref_g[i].weight.grad for i in (0, 2)]
        opt_g.zero_grad()
        with amp:
            loss_g = bce(disc(gen(z)), ones)
        scaler.scale(loss_g).backward()
        watch_g.step(loss_g)
        scaler.step(opt_g)
        scaler.update()
        for watch, want in ((watch_g, want_g), (watch_d, want_d)):
            table = _table(watch, step)
            for i in range(2):
                assert table[(i + 1, "weight_grad_std")] == pytest.approx(_pstd(want[i]),
                                                                          rel=1e-6)
    watch_g.close()
    watch_d.close()
    assert len(_global_optimizer_pre_hooks) == hooks_before


def test_optimizers_made_per_step_under_a_scaler_are_not_kept():
    """A loop that makes a new optimizer at every step (an inner loop, a restarted schedule)
    under a Watch with a GradScaler: the Watch's note of which optimizers step its weights grew
    by one entry per step for the whole run; dead optimizers are dropped now."""
    model = _mlp(dtype=torch.float32)
    x, y = _data(dtype=torch.float32)
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    watch = dlt.Watch(model, every=50, scaler=scaler, theory=False)
    made = []  # alive for a while (a schedule's history), then let go
    for step in range(300):
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        made.append(opt)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        watch.step(loss)
        scaler.step(opt)
        scaler.update()
        if step == 199:
            made.clear()
            del opt
    # 100 alive now; the 200 let go are not all still there (at most twice the alive ones)
    assert len(watch._optimizers.seen) <= 150
    watch.close()


def test_pickling_or_copying_a_watch_says_what_to_keep_instead():
    """``torch.save({'model': ..., 'watch': watch})`` or ``copy.deepcopy`` of a training state
    holding a Watch failed with "Can't pickle local object '_relu.<locals>.<lambda>'" (open)
    or "cannot pickle 'module' object" (closed). Now a TypeError names the Watch and what to
    keep; its record pickles."""
    import io
    import pickle

    model = _mlp()
    x, y = _data()
    watch = dlt.Watch(model, every=1, theory=False)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    watch.step(loss)
    for closed in (False, True):
        if closed:
            watch.close()
        with pytest.raises(TypeError, match=r"Watch cannot be pickled.*watch\.record\(\)"):
            pickle.dumps(watch)
        with pytest.raises(TypeError, match="Watch cannot be pickled or copied"):
            copy.deepcopy(watch)
        with pytest.raises(TypeError, match="Watch cannot be pickled or copied"):
            torch.save({"model": model.state_dict(), "watch": watch}, io.BytesIO())
    again = pickle.loads(pickle.dumps(watch.record()))
    assert len(again.probes) == len(watch.frame())
