"""Round 40 (reporthunt40): what a person reads in the report's figures."""

from __future__ import annotations

import pandas as pd

_BERT_PARTS = ("attention.self.query", "attention.self.key", "attention.self.value",
               "attention.output.dense", "intermediate.dense", "output.dense")


def _bert_names() -> list[str]:
    return (["bert.embeddings.word_embeddings"]
            + [f"bert.encoder.layer.{i}.{p}" for i in range(12) for p in _BERT_PARTS]
            + ["classifier"])


def test_long_module_paths_keep_their_index_and_leaf_and_stay_distinct():
    """BERT-base's module names on a layer axis (cut to 40 characters by ``layer_names``):
    ``bert.encoder.layer.10.attention.self.query`` and ``...self.value`` both read
    ``bert.encoder.layer.10.attention.self.…#1`` (two layers, one tick label; layer 11's pair
    ``…#2``), and cut to a tick's 32 characters the block's number was gone
    (``bert.encoder.lay…tion.self.query`` for every block). A module path too long keeps its
    numbers and its last part: its leading names shorten to their first letter
    (``b.encoder.layer.10.attention.self.query``), and no two labels coincide."""
    from depthlab.report.figures import cut_labels, layer_names

    names = _bert_names()
    for limit in (40, 32, 24):
        out = cut_labels(names, limit)
        assert len(set(out)) == len(out), [o for o in out if out.count(o) > 1]
        assert all(len(o) <= limit for o in out), out
    for limit in (40, 32):
        for name, o in zip(names, cut_labels(names, limit)):
            parts = name.split(".")
            assert o.endswith(parts[-1]), (name, o)  # the leaf: query, key, value, dense
            for p in parts:
                if p.isdigit():
                    assert f".{p}." in o, (name, o)  # the block's number
    table = pd.DataFrame({"layer": range(1, len(names) + 1), "module": names,
                          "quantity": "grad_pre_std", "value": 1.0, "step": 0})
    labels = layer_names(table)
    assert len(set(labels.values())) == len(names)
    assert labels[1 + 6 * 10 + 1] == "b.encoder.layer.10.attention.self.query", labels[62]
    # a name that fits, and labels that are not module paths, are cut as before
    assert cut_labels(["short.name", "lr=0.05,activation=tanh"], 40) == \
        ["short.name", "lr=0.05,activation=tanh"]
    assert cut_labels(["sweep:x=1", "sweep:x=2"], 5) == ["…x=1", "…x=2"]
