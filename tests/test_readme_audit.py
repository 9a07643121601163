"""The README and ARCHITECTURE.md against the code: every `depthlab COMMAND --option` the README
shows exists, `depthlab --help` lists every command, the module table of ARCHITECTURE.md names
the modules that exist (and every module of src/depthlab), and the submodules the README reaches
through `import depthlab as dl` (`dl.diagnosis.RULES`, `dl.probes.PERCENTILES`) are attributes
of a freshly imported package; the README's run config is examples/digits_run.toml, its
50-layer batch-norm cross-check against PyTorch holds, and doctor's --json prints with --quiet.
Fast: a few seconds, a few training steps at most."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

from depthlab.cli import COMMAND_MODULES, build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
ARCHITECTURE = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
PACKAGE = ROOT / "src" / "depthlab"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _command_lines() -> list[str]:
    """Every `depthlab ...` command the README shows: sh-block lines and inline code."""
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", README, flags=re.S):
        lines += [ln.split("#")[0] for ln in block.splitlines()]
    lines += re.findall(r"`(depthlab [^`]*)`", README)
    return [ln.strip() for ln in lines if re.match(r"\s*depthlab\s", ln)]


def test_every_documented_option_exists():
    parser = build_parser()
    subs = _subparsers(parser)
    top = {s for a in parser._actions for s in a.option_strings}
    lines = _command_lines()
    assert len(lines) > 20
    for line in lines:
        words = line.split()[1:]
        command = next((w for w in words if not w.startswith("-") and not w.isdigit()
                        and w != "N"), None)
        known = set(top)
        if command in subs:
            known |= {s for a in subs[command]._actions for s in a.option_strings}
        else:
            assert command in (None, "COMMAND"), f"README shows an unknown command: {line}"
        for opt in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", line):
            assert opt in known, f"README shows `{opt}`, which `depthlab {command}` lacks: {line}"


def test_help_lists_every_command(capsys):
    from depthlab.cli import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMAND_MODULES:
        assert re.search(rf"^\s+{re.escape(name)}\b", out, flags=re.M), name


def _table_rows() -> list[str]:
    section = ARCHITECTURE.split("## Modules", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", section, flags=re.M)


def test_architecture_module_table_matches_the_package():
    rows = _table_rows()
    for row in rows:
        assert (PACKAGE / row).exists(), f"ARCHITECTURE.md lists {row}, which does not exist"
    covered = set(rows)
    for path in sorted(PACKAGE.iterdir()):
        if path.name.startswith(("_", ".")) or path.name in ("examples", "py.typed"):
            continue
        name = path.name + ("/" if path.is_dir() else "")
        if path.is_dir() and any(r.startswith(name) for r in rows):
            continue
        assert name in covered, f"{name} of src/depthlab is missing from ARCHITECTURE.md"
    for path in sorted((PACKAGE / "torch").glob("*.py")):
        if path.name != "__init__.py":
            assert f"torch/{path.name}" in covered, path.name


def test_submodules_are_attributes_of_a_fresh_import():
    code = ("import sys, depthlab as dl\n"
            "assert dl.diagnosis.RULES['divergence'].threshold == 1.5\n"
            "assert tuple(dl.probes.PERCENTILES) == (2, 15, 50, 85, 98)\n"
            "assert not hasattr(dl, 'no_such_module') and not hasattr(dl, '_private')\n"
            "assert 'torch' not in sys.modules\n"
            "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_every_option_named_in_the_prose_exists():
    parser = build_parser()
    known = {s for p in (parser, *_subparsers(parser).values()) for a in p._actions
             for s in a.option_strings}
    named = set(re.findall(r"`(--[a-z][\w-]*)[^`]*`", README))
    assert {"--cluster", "--host", "--yes"} <= named
    assert named <= known, sorted(named - known)


def test_readme_run_config_is_the_example_file():
    import tomllib

    from depthlab.experiments.config import validate

    block = re.findall(r"```toml\n(.*?)```", README, flags=re.S)[0]
    assert block.startswith("# examples/digits_run.toml")
    shown = validate(tomllib.loads(block))
    with open(ROOT / "examples" / "digits_run.toml", "rb") as f:
        assert shown == validate(tomllib.load(f))


def test_fifty_layer_bn_gradients_equal_torch_given_the_same_weights():
    """README, Results: the depth ladder's plain ReLU + BN net at depth 50 (width 32, batch 64,
    SGD lr 0.01 with momentum 0.9, digits), float64, in PyTorch given depthlab's weights and
    batch before every step: gradients within 1e-9 of the largest at every step (the BLAS's
    rounding, amplified ~1.2x per BN layer, reached 1.35e-10 on an AVX-512 host)."""
    import numpy as np
    import torch

    import depthlab as dl
    from depthlab.bridge.torch_bridge import to_torch
    from depthlab.data import load_dataset

    data = load_dataset("digits", seed=0, standardize=True)
    x, y = data.x_train.astype("float64"), data.y_train
    net = dl.mlp([64] + [32] * 50 + [10], activation="relu", init="he_normal", batchnorm=True,
                 dtype="float64", seed=50)
    tnet = to_torch(net).double().train()
    loss = dl.loss("cross_entropy")
    opt = dl.optimizer("sgd", net.parameters(), lr=0.01, momentum=0.9)
    for step in range(8):
        xb, yb = x[step * 64:(step + 1) * 64], y[step * 64:(step + 1) * 64]
        with torch.no_grad():
            for p, tp in zip(net.parameters(), tnet.parameters(), strict=True):
                tp.copy_(torch.from_numpy(p.value.T if p.value.ndim == 2 else p.value))
        loss.forward(net.forward(xb, training=True), yb)
        net.backward(loss.backward())
        tnet.zero_grad()
        torch.nn.functional.cross_entropy(tnet(torch.from_numpy(xb)),
                                          torch.from_numpy(yb)).backward()
        for p, tp in zip(net.parameters(), tnet.parameters(), strict=True):
            g = tp.grad.numpy().T if p.grad.ndim == 2 else tp.grad.numpy()
            assert np.max(np.abs(p.grad - g)) <= 1e-9 * np.max(np.abs(g)), (step, p.name)
        opt.step()


def test_doctor_json_prints_with_quiet(tmp_path, capsys):
    """README: `--json` on run, sweep, reproduce and doctor prints only JSON on stdout, and
    `--quiet` silences the progress; doctor's --quiet used to swallow its --json too."""
    import json

    from depthlab.cli import main

    cfg = tmp_path / "d.toml"
    cfg.write_text('[data]\nname = "spirals"\n[model]\nsizes = ["auto", 8, 8, 8, 8, "auto"]\n'
                   'activation = "sigmoid"\n[train]\nbatch_size = 32\n')
    assert main(["doctor", str(cfg), "--steps", "5", "--out", str(tmp_path / "r"),
                 "--quiet", "--json"]) == 0
    out, err = capsys.readouterr()
    assert "findings" in json.loads(out) and err == ""
    assert main(["doctor", str(cfg), "--steps", "5", "--out", str(tmp_path / "s"),
                 "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")
