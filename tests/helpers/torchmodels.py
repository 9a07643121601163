"""Small torch models shared by several test files (built from ``torch.nn`` only)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class LstmHead(nn.Module):
    """An LSTM(6 -> 8) over (N, T, 6) sequences, a Linear(8, 3) head on its last step."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(6, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(x)[0][:, -1])


class EncoderHead(nn.Module):
    """Linear(6, 8), one TransformerEncoderLayer (2 heads, no dropout), mean over positions,
    Linear(8, 3), on (N, T, 6) sequences."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0,
                                           batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.inp = nn.Linear(6, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(self.inp(x)).mean(1))


def sigmoid_cnn(device: str = "cpu", depth: int = 20, ch: int = 4) -> Callable[[], nn.Module]:
    """A factory of issue 8's known-answer model: ``depth`` Conv2d(ch, 3x3, padding 1) +
    Sigmoid layers on (N, 1, 8, 8) images, Flatten, Linear(ch * 64, 10), every weight N(0, 1)
    and every bias 0: gradients vanish towards the input."""
    def make() -> nn.Module:
        mods: list[nn.Module] = [nn.Conv2d(1, ch, 3, padding=1), nn.Sigmoid()]
        for _ in range(depth - 1):
            mods += [nn.Conv2d(ch, ch, 3, padding=1), nn.Sigmoid()]
        model = nn.Sequential(*mods, nn.Flatten(), nn.Linear(ch * 64, 10))
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, 1.0)
                nn.init.zeros_(m.bias)
        return model.to(device)
    return make


class ParameterListMaps(nn.Module):
    """Map layers in a ParameterList: Linear(5, 6), ``h = relu(h @ ws[i])`` for i = 0, 1, 0
    (one matrix used twice), Linear(6, 3); float64."""

    def __init__(self) -> None:
        super().__init__()
        d = torch.float64
        self.inp = nn.Linear(5, 6, dtype=d)
        self.ws = nn.ParameterList([nn.Parameter(torch.randn(6, 6, dtype=d) / 6 ** 0.5)
                                    for _ in range(2)])
        self.out = nn.Linear(6, 3, dtype=d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for i in (0, 1, 0):
            h = torch.relu(h @ self.ws[i])
        return self.out(h)


class TiedEmbeddingHead(nn.Module):
    """An embedding table (5 tokens, 8 wide) used as the output projection too:
    ``mean_t(tanh(fc(emb(t))) @ emb.weight.T)``; float64."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(5, 8, dtype=torch.float64)
        self.fc = nn.Linear(8, 8, dtype=torch.float64)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(self.fc(self.emb(t))) @ self.emb.weight.T).mean(1)


# --- round 43 (torcharch43): small realistic architectures built from torch.nn ---------------

class TinyViT(nn.Module):
    """A ViT on (N, 1, 8, 8) images: Conv2d(1, 16, 4, stride 4) patch embedding, a learned cls
    token and position embedding (nn.Parameter), 2 pre-norm TransformerEncoderLayers (2 heads,
    no dropout), LayerNorm, Linear(16, 3) on the cls token."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, d, 4, stride=4)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(torch.randn(1, 5, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, 2, dim_feedforward=2 * d, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.patch(x).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], 1) + self.pos
        return self.head(self.norm(self.enc(h))[:, 0])


class TinyUNet(nn.Module):
    """A U-Net on (N, 1, 8, 8) images, 2 classes per pixel: Conv+ReLU, max pool, Conv+ReLU,
    ConvTranspose2d(2), torch.cat with the first block's output (the skip), Conv+ReLU, 1x1 Conv."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.d1 = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.ReLU())
        self.d2 = nn.Sequential(nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(2 * c, c, 2, stride=2)
        self.u1 = nn.Sequential(nn.Conv2d(2 * c, c, 3, padding=1), nn.ReLU())
        self.out = nn.Conv2d(c, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.d1(x)
        u = self.up(self.d2(nn.functional.max_pool2d(a, 2)))
        return self.out(self.u1(torch.cat([u, a], 1)))


class MixerBlock(nn.Module):
    """An MLP-Mixer block on (N, T, D): token mixing through a transpose, then channel mixing,
    each pre-norm and residual."""

    def __init__(self, t: int, d: int) -> None:
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.tok = nn.Sequential(nn.Linear(t, 2 * t), nn.GELU(), nn.Linear(2 * t, t))
        self.ch = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.tok(self.n1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.ch(self.n2(x))


class TinyMixer(nn.Module):
    """Linear(5, 8) on (N, 6, 5) sequences, 2 MixerBlocks, LayerNorm, mean over tokens,
    Linear(8, 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(5, 8)
        self.blocks = nn.Sequential(MixerBlock(6, 8), MixerBlock(6, 8))
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.inp(x))).mean(1))


class GruSeq2Seq(nn.Module):
    """A GRU encoder-decoder with teacher forcing over a vocabulary of 7 tokens:
    ``model(src, tgt_in)`` -> (N, T_tgt, 7) logits (one shared Embedding(7, 8))."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(7, 8)
        self.enc = nn.GRU(8, 8, batch_first=True)
        self.dec = nn.GRU(8, 8, batch_first=True)
        self.out = nn.Linear(8, 7)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        _, h = self.enc(self.emb(src))
        return self.out(self.dec(self.emb(tgt), h)[0])


class GruSeq2SeqOneInput(GruSeq2Seq):
    """:class:`GruSeq2Seq` of one (N, 9) token tensor: the first 5 columns are the source, the
    last 4 the teacher-forced decoder input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x[:, :5], x[:, 5:])


def seq_cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (N, T, V) logits against (N, T) tokens."""
    return nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


class DilatedCnn1d(nn.Module):
    """Conv1d(2, c, 3) then Conv1d(c, c, 3) at dilations 2 and 4, each + GroupNorm(2, c) + ReLU,
    mean over time, Linear(c, 3), on (N, 2, L)."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv1d(2, c, 3, padding=1), nn.GroupNorm(2, c), nn.ReLU()]
        for d in (2, 4):
            layers += [nn.Conv1d(c, c, 3, padding=d, dilation=d), nn.GroupNorm(2, c), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(-1))


class TiedLanguageModel(nn.Module):
    """Embedding(9, 8), Linear + tanh, a decoder Linear(8, 9) whose weight IS the embedding's
    (weight tying), mean over positions; (N, T) token ids -> (N, 9) logits."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(9, 8)
        self.fc = nn.Linear(8, 8)
        self.dec = nn.Linear(8, 9, bias=False)
        self.dec.weight = self.emb.weight

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.dec(torch.tanh(self.fc(self.emb(t)))).mean(1)


class DictOutput(nn.Module):
    """Linear(6, 16) + ReLU feeding a classifier Linear(16, 3) and an auxiliary Linear(16, 1):
    returns ``{'logits': ..., 'aux': ...}`` (see :func:`dict_aux_loss`)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.aux = nn.Linear(6, 16), nn.Linear(16, 3), nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.relu(self.a(x))
        return {"logits": self.b(h), "aux": self.aux(h)}


class TupleOutput(DictOutput):
    """:class:`DictOutput` returning ``(logits, aux)`` (see :func:`tuple_aux_loss`)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        d = super().forward(x)
        return d["logits"], d["aux"]


def dict_aux_loss(out: dict[str, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``out['logits']`` plus 0.1 mean(aux^2)."""
    return nn.functional.cross_entropy(out["logits"], y) + 0.1 * out["aux"].pow(2).mean()


def tuple_aux_loss(out: tuple[torch.Tensor, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``out[0]`` plus 0.1 mean(out[1]^2)."""
    return nn.functional.cross_entropy(out[0], y) + 0.1 * out[1].pow(2).mean()
