"""Round 15: adversarial exactness and robustness of the engine (see each test's comment)."""

from __future__ import annotations

import os
import signal
import warnings

import numpy as np
import pytest

import depthlab as dl
from depthlab.training.trainer import Callback, Trainer

# -- Ctrl-C during fit -----------------------------------------------------------------------


def _interrupt_data():
    g = np.random.default_rng(0)
    return g.standard_normal((24, 4)), g.integers(0, 3, 24)


def _interrupt_net():
    return dl.mlp([4, 6, 6, 3], "tanh", seed=1, dtype="float64", batchnorm=True,
                  bn_momentum=0.3)


class _InterruptingParams(list):
    """The optimizer's parameter list; iterating it in step ``at`` sends SIGINT to this
    process after the first parameter's update (Python raises KeyboardInterrupt at its next
    bytecode: mid-step, with the other parameters not updated yet)."""

    def __init__(self, params, trainer, at):
        super().__init__(params)
        self.trainer, self.at = trainer, at

    def __iter__(self):
        for i, p in enumerate(super().__iter__()):
            if i == 1 and self.trainer.step == self.at:
                os.kill(os.getpid(), signal.SIGINT)
            yield p


class _InterruptBeforeUpdate(Callback):
    def __init__(self, at):
        self.at = at

    def before_update(self, trainer, step):
        if step == self.at:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("where", ["optimizer", "before_update"])
def test_ctrl_c_during_a_step_ends_that_step_and_leaves_the_network_consistent(where):
    # A Ctrl-C (SIGINT) that arrived during a training step raised KeyboardInterrupt where it
    # landed: in the optimizer's loop over the parameters only the first of 8 was updated for
    # step 3 (the others kept step 2's values, Adam's moments of the first moved), in a
    # before_update callback the batch norms had counted 3 batches and trainer.step was 3
    # while the weights, optimizer.step_count (2) and history.step_loss (2 losses) said 2.
    # Now the step in progress is completed, then KeyboardInterrupt is raised: everything
    # equals a run of max_steps=3 and fit can continue the run.
    x, y = _interrupt_data()
    kw = dict(optimizer="adam", lr=0.01, batch_size=8, epochs=None, seed=2)
    ref = _interrupt_net()
    ref_tr = Trainer(ref, max_steps=3, **kw)
    ref_tr.fit(x, y)

    net = _interrupt_net()
    cbs = [_InterruptBeforeUpdate(3)] if where == "before_update" else []
    tr = Trainer(net, max_steps=10, callbacks=cbs, **kw)
    if where == "optimizer":
        tr.optimizer.params = _InterruptingParams(tr.optimizer.params, tr, 3)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        tr.fit(x, y)
    assert signal.getsignal(signal.SIGINT) is handler  # the caller's handler is back
    assert tr.step == tr.optimizer.step_count == len(tr.history.step_loss) == 3
    assert tr.history.step_loss == ref_tr.history.step_loss
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):
        np.testing.assert_array_equal(p.value, q.value, err_msg=p.name)
        for key, buf in tr.optimizer.state[p].items():
            np.testing.assert_array_equal(buf, ref_tr.optimizer.state[q][key], err_msg=key)
    for bn, rb in zip(net.batchnorms(), ref.batchnorms(), strict=True):
        assert bn.num_batches == rb.num_batches == 3
        np.testing.assert_array_equal(bn.running_mean, rb.running_mean)
        np.testing.assert_array_equal(bn.running_var, rb.running_var)
    # the run continues from there as an uninterrupted one does
    if where == "optimizer":
        tr.optimizer.params.at = None
    tr.callbacks = []
    tr.max_steps = ref_tr.max_steps = 4
    tr.fit(x, y)
    ref_tr.fit(x, y)
    assert tr.history.step_loss == ref_tr.history.step_loss


def test_a_second_ctrl_c_during_a_step_is_not_deferred():
    # the first Ctrl-C waits for the step's end; one more during that step stops at once (a
    # step that takes too long can still be interrupted)
    x, y = _interrupt_data()

    class Twice(Callback):
        def before_update(self, trainer, step):
            if step == 2:
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
                self.after_kill = True  # not reached: the second one raised

    cb = Twice()
    tr = Trainer(_interrupt_net(), optimizer="sgd", lr=0.1, batch_size=8, epochs=None,
                 max_steps=5, seed=0, callbacks=[cb])
    with pytest.raises(KeyboardInterrupt):
        tr.fit(x, y)
    assert not hasattr(cb, "after_kill") and tr.optimizer.step_count == 1


# -- memory: a layer built by hand is refused before allocating --------------------------------


def test_a_hand_built_layer_too_large_for_memory_is_refused_before_allocating(monkeypatch):
    # dl.mlp checked its sizes, a Dense or BatchNorm built by hand did not: Dense(10**6, 10**6)
    # was NumPy's 'MemoryError: Unable to allocate 7.28 TiB for an array with shape (1000000,
    # 1000000) and data type float64' (a float32 layer; the initializer's float64 draw),
    # Dense(10**12, 10**12) 'ValueError: array is too big', and under DEPTHLAB_MEMORY_LIMIT=64M
    # a Dense(3000, 3000) took 108 MB. Now one line naming the layer, before any array.
    from depthlab.layers import BatchNorm, Dense
    from depthlab.memory import MemoryRefusal

    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "64M")
    for build, what in ((lambda: Dense(3000, 3000), r"Dense\(3000, 3000\) \(9,003,000 float32 "),
                        (lambda: Dense(10**6, 10**6, dtype="float64"), r"Dense\(1000000, 1000000"),
                        (lambda: Dense(10**12, 10**12), r"Dense\(1000000000000, "),
                        (lambda: BatchNorm(3 * 10**6, dtype="float64"),
                         r"BatchNorm\(3000000\) \(float64\)")):
        with pytest.raises(MemoryRefusal, match=what + r".* needs about .* but only 64 MiB is "
                                                       r"available; nothing was allocated"):
            build()
    dl.Network([Dense(300, 300), BatchNorm(300)], n_inputs=300)  # these fit


# -- bad input -----------------------------------------------------------------------------


def test_a_learning_rate_in_optimizer_kwargs_is_one_line_naming_it():
    # was "TypeError: depthlab.optimizers.get_optimizer() got multiple values for keyword
    # argument 'lr'" (a function the caller never called; lr=0.5 there was never used)
    x, y = _interrupt_data()
    with pytest.raises(TypeError, match=r"^optimizer_kwargs\['lr'\]=0.5 is not accepted; the "
                                        r"learning rate is fit\(\)/Trainer\(\)'s own option: "
                                        r"lr=0.5$"):
        dl.fit(_interrupt_net(), x, y, optimizer_kwargs={"lr": 0.5, "momentum": 0.9})


# -- optimizer hyperparameters changed between steps, as torch's param_groups -----------------

_CHANGES = [
    # (optimizer, torch class, constructor kwargs, set before step 3; what it was without the fix)
    ("adam", "Adam", dict(lr=0.01), dict(weight_decay=0.1)),  # 0.087 away from torch
    ("sgd", "SGD", dict(lr=0.1, momentum=0.9, nesterov=True), dict(weight_decay=0.1)),  # 0.53
    ("rmsprop", "RMSprop", dict(lr=0.01, momentum=0.5), dict(weight_decay=0.1)),  # 0.35
    ("adagrad", "Adagrad", dict(lr=0.1), dict(weight_decay=0.1)),  # 0.51
    ("adam", "Adam", dict(lr=0.01, weight_decay=0.1), dict(weight_decay=0.0)),
    ("nadam", "NAdam", dict(lr=0.01), dict(weight_decay=0.1, decoupled_weight_decay=True)),
    ("sgd", "SGD", dict(lr=0.1), dict(momentum=0.9, dampening=0.3)),  # KeyError
    ("sgd", "SGD", dict(lr=0.1, momentum=0.9), dict(momentum=0.0, weight_decay=0.2)),
]


@pytest.mark.parametrize("name,tname,kw,change", _CHANGES,
                         ids=[f"{c[0]}-{'-'.join(c[3])}" for c in _CHANGES])
def test_hyperparameters_changed_between_steps_act_as_in_torch(name, tname, kw, change):
    # weight_decay set from 0 after the first step: the rule's one scratch slot then held both
    # g + wd*w and its temporary (Adam 0.087, SGD+Nesterov 0.53, RMSprop 0.35, Adagrad 0.51
    # away from torch after 6 steps); SGD's momentum set after the first step was
    # KeyError: 'momentum_buffer' (torch clones the gradient then). Now as torch.optim.
    torch = pytest.importorskip("torch")
    from depthlab.optimizers import get_optimizer
    from depthlab.parameter import Parameter

    g = np.random.default_rng(0)
    w0, grads = g.standard_normal((3, 4)), [g.standard_normal((3, 4)) for _ in range(6)]
    p = Parameter("w", w0.copy())
    opt = get_optimizer(name, [p], **kw)
    t = torch.tensor(w0.copy(), requires_grad=True)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # NAdam's scalar mu_product as ours
    try:
        topt = getattr(torch.optim, tname)([t], **kw)
        _steps_with_a_change(opt, topt, p, t, grads, change, torch)
    finally:
        torch.set_default_dtype(old)


def _steps_with_a_change(opt, topt, p, t, grads, change, torch):
    for k, grad in enumerate(grads, 1):
        if k == 3:
            for key, v in change.items():
                setattr(opt, key, v)
                topt.param_groups[0][key] = v
        p.grad[...] = grad
        t.grad = torch.tensor(grad)
        opt.step()
        topt.step()
        np.testing.assert_allclose(p.value, t.detach().numpy(), rtol=1e-13, atol=1e-15,
                                   err_msg=f"step {k}")


def test_a_state_buffer_switched_on_later_starts_at_zero_not_a_key_error():
    # Adam's amsgrad and RMSprop's centered/momentum set after the first step were KeyError
    # 'max_exp_avg_sq' / 'grad_avg' / 'momentum_buffer' (torch.optim raises the same
    # KeyError); now the buffer starts at zero, as a run with the option from the start does
    from depthlab.optimizers import get_optimizer
    from depthlab.parameter import Parameter

    g = np.random.default_rng(1)
    grads = [g.standard_normal(5) for _ in range(4)]
    for name, kw in (("adam", dict(amsgrad=True)), ("rmsprop", dict(centered=True)),
                     ("rmsprop", dict(momentum=0.5))):
        late, ref = Parameter("w", np.ones(5)), Parameter("w", np.ones(5))
        opt, ref_opt = get_optimizer(name, [late], lr=0.01), get_optimizer(name, [ref], lr=0.01)
        late.grad[...] = ref.grad[...] = grads[0]
        opt.step()
        ref_opt.step()
        for key, v in kw.items():
            setattr(opt, key, v)
        fresh = get_optimizer(name, [ref], lr=0.01, **kw)  # from ref's state after step 1
        fresh.state = {ref: {**ref_opt.state[ref]}}
        fresh.step_count, fresh._scratch, fresh._scratch_slots = 1, ref_opt._scratch, 1
        for grad in grads[1:]:
            late.grad[...] = ref.grad[...] = grad
            opt.step()
            fresh.step()
        np.testing.assert_array_equal(late.value, ref.value, err_msg=f"{name} {kw}")


@pytest.mark.parametrize("name,kw,attr,value,match", [
    ("sgd", {}, "momentum", float("nan"), r"^invalid momentum value: nan; expected a finite "),
    ("adam", {}, "betas", (0.9, 1.5), r"^invalid beta2 \(betas\[1\]\) value: 1.5; expected"),
    ("adagrad", {}, "weight_decay", -1.0, r"^invalid weight_decay value: -1.0; expected"),
    ("nadam", {}, "momentum_decay", float("inf"), r"^invalid momentum_decay value: inf"),
    ("sgd", {"momentum": 0.9, "nesterov": True}, "dampening", 0.5, r"^Nesterov momentum "
     r"requires momentum > 0 and dampening == 0, got momentum=0.9, dampening=0.5$"),
])
def test_a_hyperparameter_set_between_steps_passes_the_constructors_checks(name, kw, attr,
                                                                            value, match):
    # opt.momentum = nan was taken as given: the next step made every weight NaN (the lr
    # setter alone checked its value). Now the constructor's one-line error, nothing changed.
    from depthlab.optimizers import get_optimizer
    from depthlab.parameter import Parameter

    p = Parameter("w", np.ones(3))
    opt = get_optimizer(name, [p], **kw)
    before = getattr(opt, attr)
    with pytest.raises((ValueError, TypeError), match=match):
        setattr(opt, attr, value)
    assert getattr(opt, attr) == before
    p.grad[...] = 0.5
    opt.step()
    assert np.isfinite(p.value).all()
    if name == "adam":  # accepted values are normalized as the constructor does
        opt.betas = [0.5, 0.6]
        assert opt.betas == (0.5, 0.6)


@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_a_regression_target_too_large_for_float32_is_named_not_a_divergence(loss):
    # a float32 network's target of 1e39 was cast to inf: the loss was inf at step 1 and the
    # run 'diverged', advised to use a variance-preserving initializer. Now one line naming the
    # value when fit starts (and from the loss itself); float64 networks take it.
    from depthlab.losses import get_loss

    x, y = np.zeros((4, 2)), np.array([1e39, 0.0, 1.0, 2.0])
    msg = (rf"^training y: {loss}: target value 1e\+39 does not fit in float32 \(the "
           r"prediction's dtype\); accepted: \|target\| <= 3.4e\+38, or a float64 network$")
    with pytest.raises(ValueError, match=msg):
        dl.fit(dl.mlp([2, 3, 1]), x, y, loss=loss)
    with pytest.raises(ValueError, match=msg[len("^training y: "):]):
        get_loss(loss).forward(np.zeros((4, 1), np.float32), y)
    assert not dl.fit(dl.mlp([2, 3, 1], dtype="float64"), x, y, loss=loss, lr=1e-90).diverged


@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_a_float32_regression_loss_over_many_entries_is_summed_as_torch_does(loss):
    # float32 sums of squares were BLAS's float32 dot: over 10**6 entries the MSE was 7.6e-7
    # relative off the float64 sum of the same float32 errors (4e6 entries: 9e-6), torch's
    # mean 2.9e-8; now float64 sums of dots of 8192 entries (cross-entropy summed in float64)
    torch = pytest.importorskip("torch")
    from depthlab.losses import get_loss

    g = np.random.default_rng(0)
    n = 10**6
    z = (g.standard_normal((n, 1)) * 3 + 1).astype(np.float32)
    y = g.standard_normal(n).astype(np.float32)
    d = np.abs(z[:, 0].astype(np.float64) - y)  # float64: no rounding of the sum
    exact = float(np.mean(d * d if loss == "mse" else np.where(d <= 1, 0.5 * d * d, d - 0.5)))
    ref = (torch.nn.functional.mse_loss if loss == "mse" else torch.nn.functional.huber_loss)(
        torch.tensor(z[:, 0]), torch.tensor(y)).item()
    got = get_loss(loss).forward(z, y)
    assert abs(got - exact) / exact < 1e-9
    assert abs(got - ref) / ref < 1.5e-7  # torch's float32 mean, to float32 rounding


def test_the_penalty_of_a_large_float32_weight_matrix_is_summed_as_accurately_as_torch():
    # l2 * sum w^2 of a float32 (1000, 1000) weight was BLAS's float32 dot: 1.2e-6 relative
    # off (torch's (w*w).sum() 1.9e-8), part of every step's reported loss; l1 7.9e-8
    from depthlab.parameter import Parameter
    from depthlab.regularizers import penalty

    w = (np.random.default_rng(0).standard_normal((1000, 1000)) * 0.05 + 0.01).astype(
        np.float32)
    w64 = w.astype(np.float64)
    p = Parameter("w", w)
    for kw, exact in (({"l2": 1.0}, float((w64 * w64).sum())),
                      ({"l1": 1.0}, float(np.abs(w64).sum()))):
        assert abs(penalty([p], **kw) - exact) / exact < 1e-8, kw  # torch: 1.9e-8


# -- random architectures and hyperparameters against torch, step for step (float64) ---------

_ACTS = ["tanh", "relu", "elu", "selu", "gelu", "mish", "swish", "softsign", "sigmoid",
         "leaky_relu", "penalized_tanh"]


def _random_optimizer(g):
    k = int(g.integers(0, 7))
    if k == 0:
        mom = float(g.choice([0.0, 0.5, 0.9]))
        nest = bool(mom > 0 and g.random() < 0.5)
        return "sgd", "SGD", dict(lr=0.05, momentum=mom, nesterov=nest,
                                  dampening=0.0 if nest else float(g.choice([0.0, 0.3])),
                                  weight_decay=float(g.choice([0.0, 0.01])))
    if k == 1:
        return "adam", "Adam", dict(lr=0.01, betas=(float(g.choice([0.0, 0.9])), 0.99),
                                    eps=float(g.choice([1e-8, 1e-3])),
                                    amsgrad=bool(g.random() < .5),
                                    weight_decay=float(g.choice([0.0, 0.05])))
    if k == 2:
        return "adamw", "AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=bool(g.random() < .5))
    if k == 3:
        return "rmsprop", "RMSprop", dict(lr=0.01, alpha=float(g.choice([0.5, 0.99])),
                                          momentum=float(g.choice([0.0, 0.9])),
                                          centered=bool(g.random() < .5),
                                          weight_decay=float(g.choice([0.0, 0.05])))
    if k == 4:
        return "adagrad", "Adagrad", dict(lr=0.1, lr_decay=float(g.choice([0.0, 0.1])),
                                          initial_accumulator_value=float(g.choice([0.0, 0.3])),
                                          weight_decay=float(g.choice([0.0, 0.05])))
    if k == 5:
        return "adadelta", "Adadelta", dict(lr=1.0, rho=float(g.choice([0.5, 0.9])),
                                            weight_decay=float(g.choice([0.0, 0.05])))
    return "nadam", "NAdam", dict(lr=0.01, momentum_decay=float(g.choice([4e-3, 0.1])),
                                  weight_decay=float(g.choice([0.0, 0.05])),
                                  decoupled_weight_decay=bool(g.random() < .5))


@pytest.mark.parametrize("trial", range(12))
def test_random_networks_and_optimizers_train_as_torch_for_20_steps(trial):
    """mlp + fit against to_torch's copy trained by torch.optim: random widths, depths,
    activations, batch norm (momentum 0.1/0.5/1/None, either start), residual blocks,
    dropout 0, losses (label smoothing, soft labels, Huber deltas), penalties, batch sizes,
    optimizers with non-default options. Losses, parameters, optimizer state, running
    statistics and eval-mode outputs after 20 steps. (Batches of 2 under batch norm are left
    out: their pre-norm gradients are rounding noise that adaptive optimizers scale up.)"""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    from depthlab.bridge.torch_bridge import to_torch

    g = np.random.default_rng(1000 + trial)
    n_in, n_out, width, depth = (int(v) for v in (g.integers(2, 6), g.integers(2, 4),
                                                  g.integers(3, 7), g.integers(1, 4)))
    bn = bool(g.random() < 0.5)
    mkw = dict(activation=str(g.choice(_ACTS)), batchnorm=bn, dtype="float64",
               residual=bool(depth >= 2 and g.random() < 0.4), bias_init="normal",
               init=str(g.choice(["he_normal", "glorot_uniform", "lecun_normal"])))
    if bn:
        mkw.update(bn_momentum=[0.1, 0.5, 1.0, None][int(g.integers(0, 4))],
                   bn_ema_start=str(g.choice(["zero", "first_batch"])))
    if g.random() < 0.3:
        mkw["dropout"] = 0.0
    loss = str(g.choice(["cross_entropy", "mse", "binary_cross_entropy", "huber"]))
    lkw = ({"label_smoothing": 0.2} if loss == "cross_entropy" and g.random() < 0.5 else
           {"delta": float(g.choice([1.0, 0.1]))} if loss == "huber" else {})
    n = int(g.integers(6, 13))
    bs = int(g.integers(3, n + 1)) if g.random() < 0.6 else None
    x = g.standard_normal((n, n_in)) * 2
    y = (g.integers(0, n_out, n) if loss == "cross_entropy" and g.random() < 0.5 else
         g.dirichlet(np.ones(n_out), n) if loss == "cross_entropy" else
         g.random((n, n_out)) if loss == "binary_cross_entropy" else
         g.standard_normal((n, n_out)))
    name, tname, okw = _random_optimizer(g)
    l1, l2 = float(g.choice([0.0, 0.01])), float(g.choice([0.0, 0.02]))

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        net = dl.mlp([n_in] + [width] * depth + [n_out], seed=trial, **mkw)
        tnet = to_torch(net)
        tr = Trainer(net, loss=loss, loss_kwargs=lkw, optimizer=name, lr=okw["lr"],
                     optimizer_kwargs={k: v for k, v in okw.items() if k != "lr"},
                     batch_size=bs, epochs=None, max_steps=20, seed=5, l1=l1, l2=l2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a last batch of one row merged (batch norm)
            tr.fit(x, y)
        topt = getattr(torch.optim, tname)(tnet.parameters(), **okw)
        weights = [p for p in tnet.parameters() if p.ndim == 2]
        order, losses, b = np.random.default_rng(5), [], n if bs is None else bs
        while len(losses) < 20:
            perm = order.permutation(n) if b < n else np.arange(n)
            for start in range(0, n, b):
                if len(losses) == 20 or (bn and n - start < 2):
                    continue
                idx = perm[start:n if bn and n - start - b == 1 else start + b]
                topt.zero_grad()
                out, ty = tnet(torch.tensor(x[idx])), torch.tensor(y[idx])
                L = (F.cross_entropy(out, ty, label_smoothing=lkw.get("label_smoothing", 0.0))
                     if loss == "cross_entropy" else F.mse_loss(out, ty) if loss == "mse" else
                     F.huber_loss(out, ty, delta=lkw["delta"]) if loss == "huber" else
                     F.binary_cross_entropy_with_logits(out, ty))
                L = L + sum(l1 * w.abs().sum() + l2 * (w * w).sum() for w in weights)
                L.backward()
                topt.step()
                losses.append(L.item())
        np.testing.assert_allclose(tr.history.step_loss, losses, rtol=1e-10)
        tparams = list(tnet.parameters())
        for p, q in zip(net.parameters(), tparams, strict=True):
            t = lambda a: a.T if a.ndim == 2 else a  # noqa: E731
            np.testing.assert_allclose(t(p.value), q.detach().numpy(), rtol=1e-9, atol=1e-12,
                                       err_msg=p.name)
            for key, buf in tr.optimizer.state[p].items():
                want = topt.state[q][key]
                np.testing.assert_allclose(t(buf), want.numpy(), rtol=1e-8, atol=1e-12,
                                           err_msg=f"{p.name} {key}")
        for mine, theirs in zip(net.batchnorms(), [m for m in tnet.modules()
                                                   if isinstance(m, torch.nn.BatchNorm1d)],
                                strict=True):
            assert mine.num_batches == int(theirs.num_batches_tracked)
            np.testing.assert_allclose(mine.running_mean, theirs.running_mean.numpy(),
                                       rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(mine.running_var, theirs.running_var.numpy(), rtol=1e-9)
        with torch.no_grad():
            want = tnet.eval()(torch.tensor(x)).numpy()
        np.testing.assert_allclose(net.predict(x), want, rtol=1e-9, atol=1e-12)
    finally:
        torch.set_default_dtype(old)


@pytest.mark.parametrize("kw,match", [
    ({"lr": 0.5}, r"^lr=0.5 is not used: optimizer is an instance of SGD with lr=0.001; set "
                  r"optimizer.lr = 0.5 or pass optimizer='sgd'$"),
    ({"momentum": 0.9}, r"^momentum=0.9 is not used: optimizer is an instance of SGD, which "
                        r"keeps its own hyperparameters; set it there \(optimizer.momentum = "
                        r"0.9\) or pass optimizer='sgd'$"),
    ({"optimizer_kwargs": {"nesterov": True}}, r"^nesterov=True is not used: "),
])
def test_hyperparameters_given_beside_an_optimizer_instance_are_not_silently_dropped(kw, match):
    # fit(net, x, y, optimizer=SGD(params, lr=0.001), lr=0.5, momentum=0.9) trained with
    # lr=0.001 and no momentum, saying nothing (the instance keeps its own settings)
    from depthlab.optimizers import SGD

    x, y = _interrupt_data()
    net = _interrupt_net()
    with pytest.raises(TypeError, match=match):
        dl.fit(net, x, y, optimizer=SGD(net.parameters(), lr=0.001), **kw)
    opt = SGD(net.parameters(), lr=0.001)
    assert Trainer(net, optimizer=opt).optimizer is opt  # nothing else given: used as it is
    assert Trainer(net, optimizer=opt, lr=0.001).optimizer.lr == 0.001
