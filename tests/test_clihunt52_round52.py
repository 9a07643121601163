"""Round 52 CLI hunt (clihunt52): README commands typed outside a checkout, ..."""

from __future__ import annotations

import pytest


def _main(args: list[str], capsys) -> tuple[int, str, str]:
    from depthlab.cli import main

    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", [
    ["run", "examples/digits_run.toml", "--out", "results"],
    ["sweep", "examples/digits_sweep.toml", "--out", "results", "--jobs", "2"],
    ["doctor", "examples/digits_run.toml"],
    ["demo", "--config", "examples/demo.toml"],
])
def test_a_readme_example_path_outside_a_checkout_names_depthlab_init_example(
        command, tmp_path, monkeypatch, capsys):
    """README's ``depthlab run examples/digits_run.toml --out results``, typed in a folder
    without the repository's ``examples/`` (depthlab installed with pip), said only "config
    file 'examples/digits_run.toml' not found": now the line names the shipped example and
    the command that writes it; with that file in the current folder, it is suggested."""
    monkeypatch.chdir(tmp_path)
    code, _, err = _main(command, capsys)
    stem = command[1 if command[0] != "demo" else 2].split("/")[1].removesuffix(".toml")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"`depthlab init --example {stem}` writes {stem}.toml here" in err
    assert not (tmp_path / "results").exists()
    assert _main(["init", "--example", stem], capsys)[0] == 0
    code, _, err = _main(command, capsys)
    assert code == 2 and f"(did you mean {stem}.toml, in this folder?)" in err
    # a missing config of another name gets no hint
    code, _, err = _main(["run", "examples/mine.toml"], capsys)
    assert code == 2 and "not found" in err and "did you mean" not in err
    assert "init --example" not in err
