"""tdochunt52 (round 52): dlt.doctor and ``depthlab doctor --torch`` on known-answer cases
written differently from the earlier tests, unusual data and factories."""

from __future__ import annotations

import math

import torch
from torch import nn

import depthlab.torch as dlt


def _random_label_images(n: int = 64, c: int = 3, seed: int = 0
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose labels are drawn independently of them: no net fits them in a few steps,
    so the init_mismatch rule's 'the net fitted' exemption never applies."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def _set_variance(w: torch.Tensor, variance: float) -> None:
    """Fill ``w`` with +-sqrt(variance), half of each sign: population variance exactly
    ``variance`` (mean 0), so the measured init ratio has no sampling noise."""
    n = w.numel()
    signs = torch.tensor([1.0, -1.0]).repeat(n // 2 + 1)[:n]
    with torch.no_grad():
        w.copy_((signs * math.sqrt(variance)).reshape(w.shape))


def _conv_net(first: nn.Conv2d, factor: float) -> nn.Module:
    """``first`` -> ReLU -> Conv2d(c, 4, 3) -> ReLU -> Flatten -> Linear: the first layer's
    initial variance ``factor`` x the upper end of He's band (fan_in mode), the second
    exactly He's."""
    c = first.out_channels
    model = nn.Sequential(first, nn.ReLU(), nn.Conv2d(c, 4, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 64, 10))
    fi, fo = nn.init._calculate_fan_in_and_fan_out(first.weight)
    _set_variance(first.weight, factor * 2.0 / min(fi, fo))
    _set_variance(model[2].weight, 2.0 / (c * 9))
    for m in (first, model[2]):
        nn.init.zeros_(m.bias)
    return model


def test_a_conv_init_mismatch_is_judged_on_its_own_weight_count():
    """Regression: the init-mismatch noise bound counted a convolution's weights as
    fan_in x fan_out (cin k^2 x cout k^2 = 972 for Conv2d(3, 4, 3)), k^2 = 9 times its 108
    weights: a 4.8x variance, within the 2-sd scatter of a 108-weight sample variance
    (bound 5.25x), was flagged as init_mismatch (bound read 4.38x)."""
    def make() -> nn.Module:
        return _conv_net(nn.Conv2d(3, 4, 3, padding=1), 4.8)

    diag = dlt.doctor(make, _random_label_images(), steps=4, batch_size=16, verify=False,
                        optimizer=("sgd", {"lr": 0.01}))
    assert diag.finding("init_mismatch") is None, str(diag)

    def clear() -> nn.Module:  # well beyond the noise: still flagged, layer 1
        return _conv_net(nn.Conv2d(3, 4, 3, padding=1), 9.0)

    f = dlt.doctor(clear, _random_label_images(), steps=4, batch_size=16,
                   optimizer=("sgd", {"lr": 0.01}), verify=False).finding("init_mismatch")
    assert f is not None and f.layers == [1] and f.evidence["variance_ratio"] > 8.9


def test_a_conv_of_fewer_weights_than_the_minimum_is_not_judged():
    """Regression: Conv2d(1, 2, 3) has 18 weights, fewer than INIT_MIN_WEIGHTS (20), whose
    sample variance scatters by factors; counted as fan_in x fan_out = 9 x 18 = 162 it was
    judged and its 10x variance named an init mismatch."""
    def make() -> nn.Module:
        return _conv_net(nn.Conv2d(1, 2, 3, padding=1), 10.0)

    diag = dlt.doctor(make, _random_label_images(c=1), steps=4, batch_size=16, verify=False,
                        optimizer=("sgd", {"lr": 0.01}))
    assert diag.finding("init_mismatch") is None, str(diag)


def test_cli_a_cnn_on_a_csv_of_flat_rows_names_the_missing_image_shape(tmp_path, capsys):
    """Regression: ``depthlab doctor --torch net.py:cnn --data d.csv`` (a CSV has no image
    shape) failed with torch's bare 'Expected 3D (unbatched) or 4D (batched) input to
    conv2d', naming neither the data nor a remedy; now the line says the data has no image
    shape, the Conv2d takes (N, C, H, W) and how to give it (exit 2, one line)."""
    import numpy as np

    from tests.helpers.cli import assert_one_line_error, run_cli

    (tmp_path / "my net.py").write_text(
        "import torch.nn as nn\n\ndef cnn():\n    return nn.Sequential(nn.Conv2d(1, 4, 3, "
        "padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))\n")
    rng = np.random.default_rng(0)
    rows = np.column_stack([rng.normal(size=(60, 64)).round(3), rng.integers(0, 3, 60)])
    header = ",".join([f"p{i}" for i in range(64)] + ["label"])
    np.savetxt(tmp_path / "d.csv", rows, delimiter=",", header=header, comments="",
               fmt=["%.3f"] * 64 + ["%d"])
    code, out, err = run_cli(capsys, "doctor", "--torch", f"{tmp_path / 'my net.py'}:cnn",
                             "--data", str(tmp_path / "d.csv"), "--steps", "2",
                             "--out", tmp_path / "res")
    assert out == ""
    assert_one_line_error(code, err, "input to conv2d", "has no image shape",
                          "each example is 64 values in a row",
                          "Conv2d(in_channels=1) takes (N, C, H, W) inputs",
                          "give a .npz whose x has that shape")


def test_images_without_a_channel_axis_are_named_for_a_conv2d():
    """Regression: (N, H, W) images (raw MNIST-like tensors, uint8 too) for a Conv2d(1, ...)
    failed with torch's 'expected input[1, 2, 8, 8] to have 1 channels, but got 2 channels'
    (torch read the checked rows as one unbatched image), with no hint; channels-last images
    had one. Now the line says the channel axis is missing and how to add it."""
    import pytest

    def make() -> nn.Module:
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                             nn.Linear(256, 10))

    x, y = _random_label_images(n=32, c=1)
    for images in (x[:, 0], (x[:, 0].abs() * 40).to(torch.uint8)):
        with pytest.raises(ValueError, match=r"^the model or loss_fn fails on inputs of shape "
                                             r"\(8, 8\) per example.*the images have no channel "
                                             r"axis \(N, H, W\): torch's Conv2d takes \(N, C, H, "
                                             r"W\), e.g. x\[:, None\] for one channel"):
            dlt.doctor(make, (images, y), steps=2, verify=False)


def test_cli_warns_for_a_data_file_of_unscaled_pixels(tmp_path, capsys):
    """Regression: a .npz of uint8 images (pixels 0 to 255) reached the torch doctor as
    float32 0 to 255 without a word (dlt.doctor warns for uint8 tensors, the CLI never passes
    one), and a ReLU CNN on them read lr_too_high and dead_relu; now a one-line warning names
    the data and x / 255. The same images scaled to [0, 1] get none."""
    import numpy as np

    from tests.helpers.cli import run_cli

    (tmp_path / "net.py").write_text(
        "import torch.nn as nn\n\ndef cnn():\n    return nn.Sequential(nn.Conv2d(1, 4, 3, "
        "padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 3))\n")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(40, 1, 8, 8)).astype(np.uint8)
    labels = rng.integers(0, 3, 40)
    np.savez(tmp_path / "raw.npz", x=pixels, y=labels)
    np.savez(tmp_path / "scaled.npz", x=pixels / np.float32(255), y=labels)
    import warnings

    for name, warned in (("raw.npz", True), ("scaled.npz", False)):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            code, out, err = run_cli(capsys, "doctor", "--torch",
                                     f"{tmp_path / 'net.py'}:cnn", "--data",
                                     str(tmp_path / name), "--steps", "2", "--out",
                                     tmp_path / "res")
        assert code == 0, err
        lines = [str(w.message) for w in seen if "--data" in str(w.message)]
        if warned:  # the command line prints it as 'depthlab: warning: --data ...'
            assert len(lines) == 1 and lines[0].startswith(f"--data {str(tmp_path / name)!r}")
            assert "whole numbers up to 255" in lines[0] and "x / 255" in lines[0]
        else:
            assert lines == []
