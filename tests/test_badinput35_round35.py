"""Round 35 (badinput35): bad input at the CLI and the public API, on inputs not tried before."""

from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl


def test_ragged_python_lists_are_refused_naming_the_argument_and_the_rows():
    """x (or y) given as Python lists of rows of different lengths came back as NumPy's
    "setting an array element with a sequence. The requested array has an inhomogeneous
    shape after 1 dimensions ..." from fit, probe, lsuv, mc_dropout_predict, doctor and
    net.predict: neither the argument nor the offending row was named."""
    net = dl.mlp([4, 3, 2], seed=0)
    ragged = [[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [1.0, 2.0]]
    calls = {
        "fit": lambda: dl.fit(net, ragged, [0, 1, 0], epochs=1),
        "probe": lambda: dl.probe(net, ragged, [0, 1, 0]),
        "predict": lambda: net.predict(ragged),
        "doctor": lambda: dl.doctor(net, (ragged, [0, 1, 0])),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError) as info:
            call()
        msg = str(info.value)
        assert "\n" not in msg and "inhomogeneous" not in msg, (name, msg)
        assert "x" in msg and "row 2" in msg and "2 values" in msg and "4" in msg, (name, msg)
    with pytest.raises(ValueError, match=r"y .*row 1 .*2 values") as info:
        dl.fit(net, np.ones((3, 4)), [[1, 0], [0, 1, 0], [1, 0]], epochs=1, loss="mse")
    # a rectangular list of lists still trains, as before
    assert dl.fit(net, [[1.0, 2.0, 3.0, 4.0]] * 4, [0, 1, 0, 1], epochs=1).steps


def test_store_export_to_a_file_says_it_is_a_file_and_keeps_it(tmp_path):
    """Store.export(path) where path (or a folder above it) is a file: Python's raw
    "[Errno 17] File exists: '.../notes.txt'" (and "[Errno 20] Not a directory" below it),
    as if the export had refused to replace something. It is one StoreError naming the file
    in the way and what was expected; the file is unchanged."""
    from depthlab.experiments import Store, StoreError

    store = Store(tmp_path / "res")
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me\n")
    for target in (notes, notes / "export"):
        with pytest.raises(StoreError) as info:
            store.export(target)
        msg = str(info.value)
        assert "\n" not in msg and "Errno" not in msg, msg
        assert msg.startswith("cannot create folder"), msg
        assert "notes.txt' is a file, not a folder" in msg, msg
    assert notes.read_text() == "keep me\n"


def test_mc_dropout_output_typo_names_the_output_argument():
    """mc_dropout_predict(..., output="sofmax") said "unknown activation 'sofmax'", an
    argument the call does not have (the network's activations are fine): the message names
    output= and keeps the list of accepted names."""
    net = dl.mlp([4, 6, 3], dropout=0.5, seed=0)
    x = np.ones((5, 4))
    with pytest.raises(ValueError) as info:
        dl.mc_dropout_predict(net, x, T=2, output="sofmax")
    msg = str(info.value)
    assert msg.startswith("output='sofmax'") and "softmax" in msg and "\n" not in msg, msg
    with pytest.raises(TypeError, match=r"^output=5"):
        dl.mc_dropout_predict(net, x, T=2, output=5)
    mean, _ = dl.mc_dropout_predict(net, x, T=2, output="softmax", seed=0)
    assert np.allclose(mean.sum(axis=1), 1.0)


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_an_integer_of_thousands_of_digits_in_a_config_is_one_line(tmp_path, capsys, suffix):
    """A config holding an integer longer than Python's 4,300-digit string limit (a pasted
    number, a runaway generator: data.n = 1000...0) ended as "depthlab: error: ValueError:
    Exceeds the limit (4300 digits) for integer string conversion ... (internal error; run
    with --debug ...)", exit 1, from run, sweep and doctor alike."""
    from helpers.cli import assert_one_line_error, run_cli

    big = "1" + "0" * 5000
    config = tmp_path / f"big{suffix}"
    config.write_text(f'[data]\nname = "digits"\nn = {big}\n' if suffix == ".toml" else
                      f'{{"data": {{"name": "digits", "n": {big}}}}}')
    code, out, err = run_cli(capsys, "run", config, "--out", tmp_path / "r", "--quiet")
    line = assert_one_line_error(code, err, f"big{suffix}", "5001 digits", "4300")
    assert "ValueError" not in line and not (tmp_path / "r").exists(), line


def test_torch_loss_names_of_the_numpy_engine_and_of_torch_are_accepted():
    """dlt.probe(..., "ce") said "unknown loss 'ce' (did you mean 'bce'?)": binary cross-entropy
    for a 10-class model, where the NumPy engine reads "ce" as cross_entropy; torch's own names
    ("binary_cross_entropy" is F.binary_cross_entropy, "CrossEntropyLoss", "mse_loss") were
    refused too, by dlt and by `depthlab doctor --torch --loss`."""
    torch = pytest.importorskip("torch")
    from depthlab.torch.probe import loss_by_name

    nn = torch.nn
    for name, cls in (("ce", nn.CrossEntropyLoss), ("CrossEntropyLoss", nn.CrossEntropyLoss),
                      ("categorical_cross_entropy", nn.CrossEntropyLoss),
                      ("mse_loss", nn.MSELoss), ("mean_squared_error", nn.MSELoss),
                      ("binary_cross_entropy", nn.BCELoss),
                      ("binary_cross_entropy_with_logits", nn.BCEWithLogitsLoss),
                      ("nll_loss", nn.NLLLoss), ("HuberLoss", nn.HuberLoss)):
        assert type(loss_by_name(name)) is cls, name
    with pytest.raises(ValueError) as info:
        loss_by_name("cee")
    assert "did you mean 'cross_entropy'?" in str(info.value), str(info.value)


def test_sizes_past_float64_in_a_config_are_memory_refusals_not_internal_errors(tmp_path, capsys):
    """TOML integers have no size limit: model.width, model.depth, train.epochs, a hidden size
    or spirals' n_classes of 10**400 (beyond float64) ended as "depthlab: error: OverflowError:
    int too large to convert to float (internal error ...)", exit 1: the memory refusal's
    byte count could not be formatted. It is the refusal line, exit 2."""
    from helpers.cli import assert_one_line_error, run_cli

    from depthlab.memory import format_bytes

    assert format_bytes(3 * 2**60) == "3 EiB"
    assert format_bytes(10**400) == "8.67e+381 EiB"  # 10**400 / 2**60, three digits
    big = "1" + "0" * 400
    config = tmp_path / "w.toml"
    config.write_text(f'[data]\nname = "digits"\nn = 100\n[model]\ndepth = 2\nwidth = {big}\n'
                      "[train]\nepochs = 1\n")
    code, _, err = run_cli(capsys, "run", config, "--out", tmp_path / "r", "--quiet")
    assert_one_line_error(code, err, "model.width = 1000", "e+", "EiB", "nothing was allocated")
    # dl.fit(epochs=10**400): "OverflowError: integer division result too large for a float"
    net = dl.mlp([2, 3, 2], seed=0)
    from depthlab.memory import MemoryRefusal

    with pytest.raises(MemoryRefusal, match="nothing was allocated"):
        dl.fit(net, np.ones((4, 2)), [0, 1, 0, 1], epochs=10**400)


def test_a_typo_in_depthlab_engine_kernels_is_refused_as_probe_kernels_is(tmp_path, capsys,
                                                                          monkeypatch):
    """DEPTHLAB_PROBE_KERNELS=nmupy is refused before a command starts, but
    DEPTHLAB_ENGINE_KERNELS=nmupy (meant: numpy, the NumPy path) was silently read as "auto":
    the compiled engine kernels were loaded after 3 s, the opposite of what was asked."""
    from helpers.cli import assert_one_line_error, one_blas_thread, run_cli

    one_blas_thread(monkeypatch)
    monkeypatch.setenv("DEPTHLAB_ENGINE_KERNELS", "nmupy")
    code, out, err = run_cli(capsys, "datasets")
    assert_one_line_error(code, err, "DEPTHLAB_ENGINE_KERNELS='nmupy'", "numpy, numba, auto")
    assert out == ""
    monkeypatch.setenv("DEPTHLAB_ENGINE_KERNELS", " NumPy ")  # case and spaces, as read
    code, out, err = run_cli(capsys, "datasets")
    assert code == 0 and "digits" in out, err


def test_load_config_of_a_non_path_names_the_argument():
    """experiments.load_config(None) / read_toml(5): Python's "expected str, bytes or
    os.PathLike object, not NoneType", naming neither the argument nor what it is for."""
    from depthlab.experiments import load_config, read_toml

    for call in (lambda: load_config(None), lambda: read_toml(5)):
        with pytest.raises(TypeError, match=r"^config path (None|5) has the wrong type; "
                                            r"accepted: a \.toml or \.json file path"):
            call()


def test_gradient_ratio_step_of_the_wrong_type_is_a_type_error():
    """plot.gradient_ratio(table, step="0") said "step '0' has no 'grad_pre_std' probes;
    recorded steps: 0" - a recorded step refused as missing; step=True was read as step 1."""
    import depthlab.plot as plot

    net = dl.mlp([3, 4, 4, 2], activation="tanh", seed=0)
    rng = np.random.default_rng(0)
    table = dl.probe(net, rng.normal(size=(16, 3)), rng.integers(0, 2, 16))
    for bad in ("0", True, 0.5):
        with pytest.raises(TypeError, match=r"^step=.* is not accepted; accepted: a probed "
                                            r"step number \(an integer\) or None"):
            plot.gradient_ratio(table, step=bad)
    assert plot.gradient_ratio(table, step=0) == plot.gradient_ratio(table)
    assert plot.gradient_ratio(table, step=np.int64(0)) == plot.gradient_ratio(table)
    assert plot.gradient_ratio(table, step=0.0) == plot.gradient_ratio(table)
