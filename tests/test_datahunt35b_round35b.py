"""Round 35b, data hunt: user data files through every door (run ids, splits, labels)."""

from __future__ import annotations

import json

import numpy as np
from helpers.cli import one_blas_thread, run_cli

from depthlab.data.idx import write_idx


def test_an_idx_images_files_labels_are_part_of_the_run_id(tmp_path, capsys, monkeypatch):
    # data.path = an IDX images file: the loader also reads its labels file beside it, but
    # the run id's content fingerprint hashed the images file alone: relabelled data (3
    # classes became 5) was refused as "has this config and is stored" (a sweep would have
    # taken the old run for a finished point, the playground its cached data set)
    one_blas_thread(monkeypatch)
    pixels = np.random.default_rng(0).integers(0, 256, (40, 3, 3), dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte", pixels)
    (tmp_path / "run.toml").write_text(
        '[data]\npath = "train-images-idx3-ubyte"\n[model]\nsizes = ["auto", 4, "auto"]\n'
        "[train]\nepochs = 1\nbatch_size = 20\n[probes]\nevery = 0\n")
    out = str(tmp_path / "out")
    runs = []
    for classes in (3, 5):
        rng = np.random.default_rng(classes)
        write_idx(tmp_path / "train-labels-idx1-ubyte",
                  rng.integers(0, classes, 40).astype(np.uint8))
        code, printed, err = run_cli(capsys, "run", tmp_path / "run.toml", "--out", out,
                                     "--quiet", "--json")
        assert code == 0, err
        runs.append(json.loads(printed))
    assert runs[0]["id"] != runs[1]["id"]
