"""readmehunt39 (round 39): README prose claims checked by running them; regressions."""

from __future__ import annotations

from pathlib import Path

import pytest

from depthlab.cli import main

BASE = """name = "d"
[data]
name = "digits"
[model]
sizes = ["auto", "auto"]
depth = 2
width = 8
[train]
epochs = 1
"""

RECIPE = """{header}
name = "{name}"
meaning = "m"
model = {{activation = "tanh"}}
"""


@pytest.mark.parametrize("headers", [
    ("[recipes]", "[recipes]"),        # tomllib: Cannot declare ('recipes',) twice
    ("[recipes]", "[[recipes]]"),      # tomllib: Cannot overwrite a value
    ("[[recipes]]", "[recipes]"),      # tomllib: Cannot declare ('recipes',) twice
])
def test_demo_single_bracket_recipes_twice_named(tmp_path: Path, capsys, headers) -> None:
    """README: "a single-bracket `[recipes]` table is named as such". With two recipes the
    single brackets made tomllib's "declared twice" error, answered with "put all its keys
    under one [recipes]", the wrong remedy: a demo's recipes are the array [[recipes]]."""
    text = BASE + "".join(RECIPE.format(header=h, name=f"r{i}") for i, h in enumerate(headers))
    cfg = tmp_path / "demo2.toml"
    cfg.write_text(text)
    rc = main(["demo", "--config", str(cfg), "--out", str(tmp_path / "o"), "-q", "--no-report"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "[recipes] is one table" in err and "[[recipes]]" in err, err
    assert "under one [recipes]" not in err
    assert not (tmp_path / "o").exists()


def test_demo_other_toml_errors_unchanged(tmp_path: Path, capsys) -> None:
    """A syntax error unrelated to [recipes] keeps tomllib's own message."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text(BASE + "[data]\nseed = 1\n" + RECIPE.format(header="[[recipes]]", name="a"))
    rc = main(["demo", "--config", str(cfg), "--out", str(tmp_path / "o"), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "table [data] is declared twice" in err, err
