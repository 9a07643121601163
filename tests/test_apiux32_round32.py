"""Round 32 (apiux32): the top-level Python API fed the inputs people really pass."""

from __future__ import annotations

import numpy as np
import pytest

from depthlab.data import load_dataset


@pytest.mark.parametrize("name", ["digits", "spirals"])
def test_load_dataset_keyword_typo_names_load_datasets_own_keyword(name: str) -> None:
    # `standardise=True` is a typo of load_dataset's own `standardize`; the message used to blame
    # the data set ("digits: unknown option(s) ['standardise']; accepted: []") with no hint
    with pytest.raises(TypeError) as err:
        load_dataset(name, standardise=True)
    msg = str(err.value)
    assert "'standardise'" in msg and "did you mean 'standardize'?" in msg
    assert "standardize" in msg.split("accepted")[1]  # the accepted list names it too
    # a data set's own option is still accepted, and its typo still hinted
    assert load_dataset("spirals", n=60, noise=0.1).x_train.shape[1] == 2
    with pytest.raises(TypeError, match="did you mean 'noise'"):
        load_dataset("spirals", n=60, nosie=0.1)


def test_load_dataset_file_keyword_typo_hints(tmp_path) -> None:
    path = tmp_path / "d.csv"
    rows = "".join(f"{i % 5},{i % 3},{i % 2}\n" for i in range(30))
    path.write_text("a,b,label\n" + rows)
    with pytest.raises(TypeError, match=r"'sed'.*did you mean 'seed'"):
        load_dataset(path, sed=1)
    ds = load_dataset(path, label="label", seed=1)
    assert ds.x_train.shape[1] == 2 and np.isfinite(ds.x_train).all()


def test_torch_tensors_are_taken_as_their_values_by_the_numpy_engine() -> None:
    # a tensor that requires grad (a model's output, a torch Dataset's features) or holds
    # bfloat16 failed inside NumPy's conversion: "Can't call numpy() on Tensor that requires
    # grad" / "Got unsupported ScalarType BFloat16", from dl.fit, probe, doctor, predict, ...
    torch = pytest.importorskip("torch")
    import depthlab as dl

    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    xt = torch.tensor(x, requires_grad=True) * 1.0  # a non-leaf tensor of a graph
    xb = torch.tensor(x).bfloat16()
    x_of_b = xb.float().numpy()  # bfloat16 -> float32 is exact

    def losses(xx, yy, **kw):
        net = dl.mlp([3, 5, 2], seed=0)
        return dl.fit(net, xx, yy, epochs=2, batch_size=8, seed=0, **kw).step_loss

    assert losses(xt, torch.tensor(y)) == losses(x, y)
    assert losses(xb, y) == losses(x_of_b, y)
    assert losses(x, y, x_val=xt, y_val=torch.tensor(y)) == losses(x, y, x_val=x, y_val=y)
    net = dl.mlp([3, 5, 2], seed=0)
    assert np.array_equal(net.predict(xt), net.predict(x))
    pd_t, pd_n = dl.probe(net, xt, torch.tensor(y)), dl.probe(net, x, y)
    assert pd_t.equals(pd_n)
    assert repr(dl.doctor(net, (xt, torch.tensor(y)), steps=3)) == repr(
        dl.doctor(net, (x, y), steps=3))


def test_doctor_called_like_fit_names_the_data_argument() -> None:
    # dl.fit(net, x, y) and dl.probe(net, x, y) take x, y; dl.doctor(net, x, y) said only
    # Python's "doctor() takes 2 positional arguments but 3 were given"
    import depthlab as dl

    x = np.random.default_rng(0).standard_normal((12, 3))
    y = np.arange(12) % 2
    net = dl.mlp([3, 4, 2], seed=0)
    with pytest.raises(TypeError) as err:
        dl.doctor(net, x, y, steps=2)
    msg = str(err.value)
    assert "3 were given" in msg and "dl.doctor(net, (x, y))" in msg
    assert repr(dl.doctor(net, (x, y), steps=2)).startswith("Diagnosis(")


@pytest.mark.parametrize("key", ["validation_data", "X_val", "val_data"])
def test_fit_keyword_for_validation_data_points_to_x_val_y_val(key: str) -> None:
    # Keras' validation_data=(xv, yv) and scikit-learn's X_val= were refused with no hint
    # (val_data= even with "did you mean 'eval_train'?"): x_val/y_val are fit()'s own arguments
    import depthlab as dl

    x = np.random.default_rng(0).standard_normal((8, 3))
    y = np.arange(8) % 2
    with pytest.raises(TypeError) as err:
        dl.fit(dl.mlp([3, 2], seed=0), x, y, epochs=1, **{key: (x, y)})
    msg = str(err.value)
    assert f"'{key}'" in msg and "dl.fit(net, x, y, x_val, y_val)" in msg
    assert "eval_train'?" not in msg


def test_string_and_bool_labels_are_refused_with_the_encoding_that_works() -> None:
    # y = ['cat', 'dog', ...] said only "target must be a numeric array, got dtype <U3";
    # bool labels "labels must be integers, got a bool array": neither said what to pass
    import depthlab as dl

    x = np.random.default_rng(0).standard_normal((12, 3))
    words = np.array(["cat", "dog", "emu"])[np.arange(12) % 3]
    with pytest.raises(TypeError) as err:
        dl.fit(dl.mlp([3, 4, 3], seed=0), x, words, epochs=1)
    msg = str(err.value)
    assert "(e.g. 'cat')" in msg and "np.unique(y, return_inverse=True)[1]" in msg
    codes = np.unique(words, return_inverse=True)[1]  # the advice works
    assert len(dl.fit(dl.mlp([3, 4, 3], seed=0), x, codes, epochs=1).step_loss) == 1
    flags = np.arange(12) % 2 == 1
    with pytest.raises(TypeError, match=r"y\.astype\(int\)"):
        dl.fit(dl.mlp([3, 4, 2], seed=0), x, flags, epochs=1)


def test_one_dimensional_x_is_refused_with_the_reshape_that_works() -> None:
    # one feature as a 1-D array (y = f(x) regression) and one example x[0] to predict: the
    # refusals named the shape only
    import depthlab as dl

    t = np.linspace(-1, 1, 16)
    net = dl.mlp([1, 4, 1], seed=0)
    with pytest.raises(ValueError, match=r"x\.reshape\(-1, 1\)"):
        dl.fit(net, t, 2 * t, loss="mse", epochs=1)
    hist = dl.fit(net, t.reshape(-1, 1), 2 * t, loss="mse", epochs=1)
    assert len(hist.step_loss) == 1
    x = np.random.default_rng(0).standard_normal((5, 3))
    net3 = dl.mlp([3, 4, 2], seed=0)
    with pytest.raises(ValueError, match=r"x\.reshape\(1, -1\)"):
        net3.predict(x[0])
    assert np.allclose(net3.predict(x[0].reshape(1, -1)), net3.predict(x)[:1], rtol=1e-5)


def test_a_column_of_labels_is_refused_with_ravel() -> None:
    # y of shape (N, 1) (df[["label"]], scikit-learn style) for cross_entropy named the shapes
    import depthlab as dl

    x = np.random.default_rng(0).standard_normal((10, 3))
    y = np.arange(10) % 3
    with pytest.raises(ValueError, match=r"y\.ravel\(\)"):
        dl.fit(dl.mlp([3, 4, 3], seed=0), x, y[:, None], epochs=1)
    a = dl.fit(dl.mlp([3, 4, 3], seed=0), x, y[:, None].ravel(), epochs=1, seed=0).step_loss
    assert a == dl.fit(dl.mlp([3, 4, 3], seed=0), x, y, epochs=1, seed=0).step_loss


def test_a_torch_module_given_to_the_numpy_api_is_pointed_to_depthlab_torch() -> None:
    # dl.probe / dl.doctor / dl.fit of an nn.Module said "net must be a depthlab Network ...,
    # got Sequential", not that depthlab.torch measures such a model
    torch = pytest.importorskip("torch")
    import depthlab as dl

    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    x = np.zeros((4, 3), dtype=np.float32)
    y = np.arange(4) % 2
    for call, remedy in [(lambda: dl.probe(model, x, y), "dlt.probe(model, x, y, loss_fn)"),
                         (lambda: dl.doctor(model, (x, y)), "dlt.doctor(model, data"),
                         (lambda: dl.fit(model, x, y), "dlt.Watch(model)")]:
        with pytest.raises(TypeError) as err:
            call()
        msg = str(err.value)
        assert "torch.nn.Module" in msg and "import depthlab.torch as dlt" in msg
        assert remedy in msg, msg


def test_a_text_column_of_a_dataframe_is_named() -> None:
    # pd.DataFrame with a text column: "training x of dtype object is not accepted" did not
    # say which column (or which entry of an object array) is not a number
    pd = pytest.importorskip("pandas")
    import depthlab as dl

    x = pd.DataFrame({"age": [30.0, 41.0, 25.0, 33.0], "city": ["Paris", "Rome", "Oslo", "Rome"],
                      "income": [1.0, 2.0, 3.0, 4.0]})
    y = np.array([0, 1, 0, 1])
    with pytest.raises(TypeError) as err:
        dl.fit(dl.mlp([3, 2], seed=0), x, y, epochs=1)
    assert "column 'city'" in str(err.value) and "'Paris'" in str(err.value)
    rows = np.array([[1.0, 2.0, 3.0], [4.0, None, 6.0]], dtype=object)
    with pytest.raises(TypeError, match=r"row 1, column 1.*None"):
        dl.fit(dl.mlp([3, 2], seed=0), rows, y[:2], epochs=1)
    with pytest.raises(TypeError, match=r"column 'city'"):
        dl.mlp([3, 2], seed=0).predict(x)


def test_load_finds_the_file_save_wrote_under_the_same_name(tmp_path) -> None:
    # dl.save(net, "model") writes model.npz; dl.load("model") said "no saved network at
    # 'model'"
    import depthlab as dl

    net = dl.mlp([3, 4, 2], seed=0)
    written = dl.save(net, tmp_path / "model")
    assert written.name == "model.npz"
    x = np.random.default_rng(0).standard_normal((5, 3))
    assert np.array_equal(dl.load(tmp_path / "model").predict(x), net.predict(x))
    assert np.array_equal(dl.load(str(tmp_path / "model")).predict(x), net.predict(x))
    with pytest.raises(FileNotFoundError, match="no saved network"):
        dl.load(tmp_path / "other")


def test_nan_in_y_names_its_row() -> None:
    # x's NaN was named by row and column, y's only as "training y contains NaN or infinity"
    import depthlab as dl

    x = np.random.default_rng(0).standard_normal((8, 3))
    y = np.linspace(0.0, 1.0, 8)
    y[5] = np.nan
    with pytest.raises(ValueError, match=r"training y contains NaN or infinity \(first at row 5\)"):
        dl.fit(dl.mlp([3, 1], seed=0), x, y, loss="mse", epochs=1)


def test_masked_entries_are_missing_values_and_a_sparse_matrix_is_named() -> None:
    # a masked array trained on the values under its mask (fit == fit of the unmasked data);
    # a scipy.sparse x was refused as "index () holds <Compressed Sparse Row sparse matrix ..."
    import depthlab as dl

    x = np.random.default_rng(0).standard_normal((8, 3))
    y = np.arange(8) % 2
    masked = np.ma.masked_array(x, mask=np.zeros_like(x, dtype=bool))
    masked[2, 1] = np.ma.masked
    with pytest.raises(ValueError, match=r"training x contains NaN or infinity \(first at row 2, "
                                         r"column 1\)"):
        dl.fit(dl.mlp([3, 2], seed=0), masked, y, epochs=1)
    nothing_masked = np.ma.masked_array(x, mask=False)
    a = dl.fit(dl.mlp([3, 2], seed=0), nothing_masked, y, epochs=1, seed=0).step_loss
    assert a == dl.fit(dl.mlp([3, 2], seed=0), x, y, epochs=1, seed=0).step_loss
    sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match=r"sparse matrix.*x\.toarray\(\)"):
        dl.fit(dl.mlp([3, 2], seed=0), sparse.csr_matrix(x), y, epochs=1)
    net = dl.mlp([3, 2], seed=0)
    with pytest.raises(ValueError, match=r"row 2, column 1"):
        net.predict(masked)
