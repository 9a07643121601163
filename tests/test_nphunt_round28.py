"""Round 28 (nphunt28): NumPy engine and command line regressions."""

from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl
from depthlab.memory import MemoryRefusal
from tests.helpers.cli import assert_one_line_error, run_cli

_RUN = """
[data]
name = "clusters"
n = 60
[model]
sizes = ["auto", 4, "auto"]
[train]
epochs = 1
"""


# -- output folders named '-' ----------------------------------------------------------------

@pytest.mark.parametrize("args", [("export", "st", "--to", "-"), ("export", "st", "--to=-"),
                                  ("run", "c.toml", "--out", "-")])
def test_a_folder_option_refuses_dash(tmp_path, capsys, monkeypatch, args):
    # `depthlab export DIR --to -` wrote its nine tables into a new folder named '-' (exit 0),
    # while '-' is stdout to `predict --to`; every option naming an output folder refuses it
    # in one line (exit 2) and writes nothing; './-' still names such a folder.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(_RUN)
    code, _, err = run_cli(capsys, "run", "c.toml", "--out", "st", "--quiet")
    assert code == 0, err
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, "'-'", "folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if args[0] == "export":
        code, _, err = run_cli(capsys, "export", "st", "--to", "./-")
        assert code == 0, err
        assert (tmp_path / "-" / "runs.csv").is_file()


# -- dl.save / dl.load of a name longer than the file system takes ----------------------------

@pytest.mark.parametrize("name", ["a" * 300 + ".npz", "a" * 253, "sub/" + "b" * 300 + "/net.npz"])
def test_save_of_a_too_long_file_name_is_one_clear_value_error(tmp_path, monkeypatch, name):
    # dl.save(net, 300-character name) raised pathlib's raw "OSError: [Errno 36] File name too
    # long" (a 253-character name became too long only with the '.npz' appended); a name in a
    # new folder left that folder behind, empty.
    monkeypatch.chdir(tmp_path)
    net = dl.mlp([3, 4, 2], seed=0)
    with pytest.raises(ValueError, match=r"save\(\) path has a name of \d+ bytes .*at most 255"):
        dl.save(net, name)
    if max(map(len, name.split("/"))) > 255:
        with pytest.raises(ValueError, match=r"load\(\) path has a name of \d+ bytes"):
            dl.load(name)
    assert list(tmp_path.iterdir()) == []
    assert dl.save(net, "a" * 251).name == "a" * 251 + ".npz"  # 255 bytes: accepted


# -- a batch too large for memory through net.forward ------------------------------------------

def _huge(dtype, rows=10**10):
    return np.broadcast_to(np.zeros((1, 4), dtype), (rows, 4))  # no memory behind it


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_of_a_batch_too_large_is_refused_before_allocating(dtype):
    # net.forward (the training step's entry) on 10**10 rows raised numpy's "MemoryError: Unable
    # to allocate 3.64 TiB for an array with shape (10000000000, 100)" from inside a Dense layer;
    # net.predict's finite check raised "Unable to allocate 37.3 GiB ... bool". Both are refused
    # before allocating, naming the rows and the bytes.
    net = dl.mlp([4, 100, 2], seed=0)
    with pytest.raises(MemoryRefusal, match=r"x of 10,000,000,000 rows x 4 features .*TiB of "
                       r"memory but only .* is available; nothing was allocated"):
        net.forward(_huge(dtype), training=True)
    with pytest.raises(MemoryRefusal, match=r"10,000,000,000 rows .*nothing was allocated"):
        net.predict(_huge(dtype))  # before its finite check scans 4e10 entries
    # ordinary batches are unchanged
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(dtype)
    np.testing.assert_array_equal(net.forward(x, training=False), net.predict(x))


def test_the_finite_check_of_a_large_x_does_not_allocate_a_mask_of_it():
    # fit / predict / probe checked x (and real y) with np.isfinite(x).all(): a bool mask of
    # one byte per entry, allocated at once (24 GB for a 6e9 x 4 memory-mapped or broadcast
    # float32 x, on a 23 GB host: the kernel's overcommit let it through). The check goes a
    # block at a time.
    import tracemalloc

    from depthlab.training.data_checks import check_xy

    x = np.broadcast_to(np.ones((1, 4), np.float32), (5 * 10**7, 4))  # 800 MB, none allocated
    y = np.broadcast_to(np.ones((), np.float64), (x.shape[0],))
    tracemalloc.start()
    try:
        out, _ = check_xy(x, y, n_inputs=4, dtype=np.float32)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out is x
    assert peak < 50 * 2**20, peak  # the masks alone were 200 MB and 50 MB
    bad = np.ones((3 * 2**21, 2), np.float32)
    bad[-1, 1] = np.nan  # in the last block
    with pytest.raises(ValueError, match=r"contains NaN or infinity \(first at row 6291455, "
                       r"column 1\)"):
        check_xy(bad, np.zeros(len(bad)), n_inputs=2, dtype=np.float32)


def test_a_failed_save_leaves_no_new_empty_folder(tmp_path, monkeypatch):
    # dl.save(net, "new/sub/net.npz") (and every atomic write: predict --to, report, ...) on a
    # full disk raised "cannot write ...: no space left on device" but left the folders it had
    # created, new/sub, behind, empty. They are removed again; a folder that existed stays.
    import errno

    import depthlab.atomic as atomic
    from depthlab.atomic import AtomicWriteError

    net = dl.mlp([3, 4, 2], seed=0)
    (tmp_path / "old").mkdir()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    for target in (tmp_path / "new" / "sub" / "net.npz", tmp_path / "old" / "sub" / "net.npz"):
        with pytest.raises(AtomicWriteError, match="no space left on device"):
            dl.save(net, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]
    assert list((tmp_path / "old").iterdir()) == []
    monkeypatch.undo()
    assert dl.load(dl.save(net, tmp_path / "new" / "sub" / "net.npz")).config == net.config


def test_fit_standardize_refuses_copies_that_cannot_fit_before_allocating(monkeypatch):
    # dl.fit(standardize=True) makes a float64 copy of x, (x - mean) / std in float64 and its
    # cast to the network's dtype: on a 1e9 x 4 float32 x (20 GB) that was numpy's MemoryError
    # from inside the statistics. Refused first, naming the work; within memory it trains.
    x = np.random.default_rng(0).normal(size=(200_000, 4)).astype(np.float32)  # 3.2 MB
    y = (x[:, 0] > 0).astype(np.int64)
    net = dl.mlp([4, 2], seed=0)
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "10M")  # the copies take 16 MB
    with pytest.raises(MemoryRefusal, match=r"standardize=True on the training x \(200,000 x 4: "
                       r"float64 copies and the float32 result\) needs about 15\.3 MiB"):
        dl.fit(net, x, y, standardize=True, max_steps=1, batch_size=8, eval_train=False)
    hist = dl.fit(net, x[:20_000], y[:20_000], standardize=True, max_steps=1, batch_size=8,
                  eval_train=False)
    assert hist.steps == 1


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta",
                                  "nadam"])
def test_a_step_with_a_grad_the_rule_cannot_use_is_one_line_and_changes_nothing(name):
    # p.grad = None (what torch's zero_grad() leaves) was NumPy's "Cannot cast ufunc 'multiply'
    # output from dtype('O') ..." and a .grad of another shape a broadcast error, raised after
    # the parameters before it had been updated (and their optimizer state advanced).
    from depthlab.parameter import Parameter

    first, second = Parameter("a", np.ones(2)), Parameter("w", np.ones(3))
    opt = dl.optimizer(name, [first, second], lr=0.1, weight_decay=0.1)
    for bad, said in ((None, "None"), (np.ones(4), r"of shape \(4,\)")):
        first.grad[...] = 1.0
        second.grad = bad
        with pytest.raises(ValueError, match=rf"{name} step: parameter 'w' has \.grad {said}; "
                           r"expected an array of its value's shape \(3,\)"):
            opt.step()
        np.testing.assert_array_equal(first.value, np.ones(2))
        assert opt.step_count == 0 and not any(opt.state.get(first, {}).values())
    second.grad = [1.0, 1.0, 1.0]  # a list of the right shape is taken, as before
    opt.step()
    assert opt.step_count == 1 and np.all(first.value != 1.0) and np.all(second.value != 1.0)


@pytest.mark.parametrize("grad", [None, "dL/dy", np.ones((5, 2), dtype=complex)])
def test_backward_of_a_gradient_that_is_not_real_numbers_is_one_clear_type_error(grad):
    # net.backward(None) was AttributeError "'NoneType' object has no attribute 'shape'" (a
    # list of lists too, though it is an array once converted); a complex gradient trained on
    # its real part after a ComplexWarning.
    net = dl.mlp([3, 4, 2], seed=0)
    net.forward(np.ones((5, 3), np.float32))
    with pytest.raises(TypeError, match=r"gradient.* is not accepted; expected .*output shape "
                       r"\(5, 2\)"):
        net.backward(grad)
    np.testing.assert_array_equal(net.backward([[1.0, 2.0]] * 5),
                                  net.backward(np.array([[1.0, 2.0]] * 5)))
