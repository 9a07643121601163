"""Round 25 (torchhunt25): depthlab.torch end to end on models nobody tried: the CLI doctor
on data files of signals and volumes, Watch runs in a shared store, bad input."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from depthlab.torch.inputs import shape_inputs  # noqa: E402

MODELS = '''
from torch import nn
def audio():
    return nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
                         nn.Flatten(), nn.Linear(4, 3))
def volume():
    return nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
                         nn.Flatten(), nn.Linear(4, 3))
'''


@pytest.mark.parametrize("layer, shape, want", [
    (nn.Conv1d(2, 4, 3), (2, 10), lambda x: x),                       # (N, C, L)
    (nn.Conv1d(2, 4, 3), (10, 2), lambda x: x.transpose(0, 2, 1)),    # (N, L, C)
    (nn.Conv1d(1, 4, 3), (10,), lambda x: x[:, None]),                # (N, L)
    (nn.LazyConv1d(4, 3), (3, 10), lambda x: x),
    (nn.Conv3d(2, 4, 3), (2, 3, 4, 5), lambda x: x),                  # (N, C, D, H, W)
    (nn.Conv3d(2, 4, 3), (3, 4, 5, 2), lambda x: np.moveaxis(x, -1, 1)),
    (nn.Conv3d(1, 4, 3), (3, 4, 5), lambda x: x[:, None]),            # (N, D, H, W)
    (nn.LazyConv3d(4, 3), (3, 4, 5, 2), lambda x: np.moveaxis(x, -1, 1)),
])
def test_a_files_signals_and_volumes_keep_their_shape_for_conv1d_and_conv3d(layer, shape, want):
    """A .npz of signals (N, C, L) or volumes (N, C, D, H, W) was given to a Conv1d model as
    (N, 1, C*L) (channels concatenated into one) and to a Conv3d model as flat rows (fails)."""
    x = np.arange(4 * int(np.prod(shape)), dtype=np.float32).reshape(4, *shape)
    got = shape_inputs(x.reshape(4, -1), shape, nn.Sequential(layer))
    np.testing.assert_array_equal(got, want(x))


@pytest.mark.parametrize("name, shape", [("audio", (2, 16)), ("volume", (2, 3, 4, 4))])
def test_cli_doctor_takes_npz_signals_and_volumes(tmp_path, name, shape, capsys):
    """`depthlab doctor --torch` on a user's .npz of (N, 2, 16) signals for a Conv1d(2, ...)
    and of (N, 2, 3, 4, 4) volumes for a Conv3d(2, ...): exit 2 ('expected input[2, 1, 32]
    to have 2 channels', 'Expected 4D or 5D input to conv3d') before the fix."""
    from depthlab.cli import main

    (tmp_path / "models.py").write_text(MODELS)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, *shape)).astype(np.float32)
    np.savez(tmp_path / f"{name}.npz", x=x, y=rng.integers(0, 3, 40))
    code = main(["doctor", "--torch", f"{tmp_path / 'models.py'}:{name}", "--data",
                 str(tmp_path / f"{name}.npz"), "--steps", "2", "--batch-size", "16",
                 "--out", str(tmp_path / "out"), "-q"])
    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize("rnn, shape, want", [
    (nn.GRU(5, 8, batch_first=True), (12, 5), lambda x: x),                      # (N, T, F)
    (nn.LSTM(5, 8, batch_first=True), (5, 12), lambda x: x.transpose(0, 2, 1)),  # (N, F, T)
    (nn.RNN(4, 8, batch_first=True), (3, 4), lambda x: x),
    (nn.GRU(4, 8, batch_first=True), (4, 4), lambda x: x),                       # T == F
    (nn.GRU(2, 8, batch_first=True), (3, 4), lambda x: x.reshape(len(x), 6, 2)),  # as before
])
def test_a_files_features_first_sequences_reach_a_recurrent_layer_as_time_steps(rnn, shape, want):
    """A .npz of (N, F, T) sequences (features first, as for a Conv1d: mel bands x frames)
    for a GRU/LSTM of input_size F was cut as x.reshape(N, F, T).reshape(N, T, F): each
    'time step' a mix of features and times, trained on silently."""
    x = np.arange(3 * int(np.prod(shape)), dtype=np.float32).reshape(3, *shape)
    got = shape_inputs(x.reshape(3, -1), shape, nn.Sequential(rnn))
    np.testing.assert_array_equal(got, want(x))


@pytest.mark.parametrize("out", ["", "   "])
def test_a_watch_refuses_an_empty_out_path(tmp_path, monkeypatch, out):
    """Watch(out="") (e.g. os.environ.get("RUNS", "")) made a store in the working folder,
    Path("") being ".", where the store, the CLI and dlt.doctor refuse an empty path."""
    import depthlab.torch as dlt

    monkeypatch.chdir(tmp_path)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="empty path"):
        dlt.Watch(model, out=out)
    assert not list(tmp_path.iterdir())
    assert not model._forward_hooks and not model[0]._forward_hooks


TOKENS = '''
from torch import nn
class Tok(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 4)
        self.gru = nn.GRU(4, 6, batch_first=True)
        self.head = nn.Linear(6, 3)
    def forward(self, x):
        return self.head(self.gru(self.emb(x))[0][:, -1])
def make():
    return Tok()
def make_bag():
    return nn.Sequential(nn.EmbeddingBag(20, 4), nn.Linear(4, 3))
'''


@pytest.mark.parametrize("factory", ["make", "make_bag"])
def test_cli_doctor_gives_a_files_token_ids_to_an_embedding_model(tmp_path, capsys, factory):
    """A .npz of integer token ids (N, T) for an Embedding/EmbeddingBag model: the data set's
    rows are float32, and the CLI handed them on as floats (exit 2: 'Expected tensor for
    argument #1 'indices' to have one of the following scalar types: Long, Int')."""
    from depthlab.cli import main

    (tmp_path / "models.py").write_text(TOKENS)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 20, (40, 5))
    np.savez(tmp_path / "tokens.npz", x=x, y=x[:, -1] % 3)
    code = main(["doctor", "--torch", f"{tmp_path / 'models.py'}:{factory}", "--data",
                 str(tmp_path / "tokens.npz"), "--steps", "2", "--batch-size", "16",
                 "--out", str(tmp_path / "out"), "-q"])
    assert code == 0, capsys.readouterr().err
    rows = shape_inputs(x.astype(np.float32), None, nn.Sequential(nn.Embedding(20, 4)))
    assert rows.dtype == np.int64 and np.array_equal(rows, x)
    frac = shape_inputs(x + 0.5, None, nn.Sequential(nn.Embedding(20, 4)))  # not ids: as given
    assert frac.dtype == np.float64


@pytest.mark.parametrize("bad_rows", [slice(None), slice(30, 31)])
def test_token_ids_beyond_the_vocabulary_are_named_also_in_the_first_rows(bad_rows):
    """An id beyond the Embedding's vocabulary in the first two rows failed the two-row check
    first, with torch's 'IndexError: index out of range in self' and a hint to give floats;
    the vocabulary check (that names the id) ran only after it, for later rows."""
    import depthlab.torch as dlt

    x = torch.randint(0, 20, (40, 5))
    x[bad_rows, 2] = 23  # every row (the two checked first among them), or one
    model = nn.Sequential(nn.Embedding(20, 4), nn.Flatten(), nn.Linear(20, 3))
    with pytest.raises(ValueError, match=r"token id 23 .* '0' has 20 embeddings; expected "
                                         r"token ids 0 to 19"):
        dlt.doctor(model, (x, x[:, 0] % 3), steps=2, batch_size=16, verify=False)


def test_cli_doctor_on_a_model_returning_a_dict_says_what_the_command_line_can_do(
        tmp_path, capsys):
    """A factory whose model returns a dict: the doctor's hint (give a loss_fn that takes it)
    names an option the command line does not have; the CLI adds its own remedy."""
    from depthlab.cli import main

    (tmp_path / "models.py").write_text(
        "import torch\nfrom torch import nn\n"
        "class D(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(64, 10)\n"
        "    def forward(self, x):\n"
        "        return {'logits': self.fc(x)}\n"
        "def make():\n    return D()\n")
    code = main(["doctor", "--torch", f"{tmp_path / 'models.py'}:make", "--data", "digits",
                 "--n", "100", "--steps", "2", "--out", str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "make return a module whose forward returns that tensor" in err


class _StepEncoderGRU(nn.Module):  # a per-time-step Linear before a GRU
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(5, 8)
        self.gru = nn.GRU(8, 6, batch_first=True)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.gru(torch.relu(self.enc(x)))[0][:, -1])


class _StepMLP(nn.Module):  # Linear layers only, applied per time step, then a mean over time
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(5, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.enc(x)).mean(1))


@pytest.mark.parametrize("model", [_StepEncoderGRU(), _StepMLP()], ids=["gru", "mlp"])
def test_a_model_that_takes_a_files_own_example_shape_gets_it(model):
    """(N, T, F) sequences of a .npz for a model whose first layer is a per-step Linear(F, H):
    flattened (N, T*F) rows (the Linear's shape) and the GRU's (N, T*F/H, H) both fail, and
    the file's own shape, on which the model runs, was never tried (exit 2)."""
    x = np.arange(3 * 60, dtype=np.float32).reshape(3, 12, 5)
    got = shape_inputs(x.reshape(3, -1), (12, 5), model)
    np.testing.assert_array_equal(got, x)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(60, 3))  # runs on flat rows: flat, as before
    assert shape_inputs(x.reshape(3, -1), (12, 5), mlp).shape == (3, 60)
