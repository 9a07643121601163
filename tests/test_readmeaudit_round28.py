"""Round 28 README audit: behaviour the README states, checked where it drifted."""

from __future__ import annotations

import pytest

from depthlab.demo import demo_recipes
from depthlab.experiments import ConfigError

DEMO_BASE = """name = "mine"
[data]
name = "clusters"
[model]
sizes = ["auto", "auto"]
depth = 2
width = 4
[train]
epochs = 1

[[recipes]]
name = "relu"
meaning = "a cure"
model = { activation = "relu", init = "he_normal" }
"""


def test_a_demo_config_with_a_sweep_table_is_refused_not_silently_run_once(tmp_path):
    """`depthlab demo --config FILE` trains one run per recipe. A [sweep] table in FILE (five
    seeds of each recipe, say) was validated and then dropped: each recipe ran once, exit 0,
    nothing said. It is refused in one line naming the table (exit 2 from the CLI)."""
    path = tmp_path / "demo.toml"
    path.write_text(DEMO_BASE + '\n[sweep]\n"train.seed" = [0, 1, 2]\n')
    with pytest.raises(ConfigError, match=r"\[sweep\].*train\.seed.*one run per recipe"):
        demo_recipes(path)
    # without it the same recipes load; an empty [sweep] table asks for nothing
    path.write_text(DEMO_BASE)
    assert [r.name for r in demo_recipes(path)] == ["relu"]
    path.write_text(DEMO_BASE + "\n[sweep]\n")
    assert [r.name for r in demo_recipes(path)] == ["relu"]


def test_the_demo_cli_refuses_a_sweep_table_with_exit_2_before_any_store(tmp_path, capsys):
    from depthlab.cli import main

    path = tmp_path / "demo.toml"
    path.write_text(DEMO_BASE + '\n[sweep]\n"model.width" = [4, 8]\n')
    code = main(["demo", "--config", str(path), "--out", str(tmp_path / "out"), "--no-report",
                 "-q", "--jobs", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "[sweep]" in err and "model.width" in err
    assert not (tmp_path / "out").exists()


DEPTHS = DEMO_BASE + """
[[recipes]]
name = "deep"
meaning = "deeper"
model = { activation = "tanh", depth = 6 }

[[recipes]]
name = "wide"
meaning = "wider"
model = { activation = "tanh", depth = 3, width = 16 }
"""


def test_the_demo_names_each_recipes_last_layer_when_depths_differ(tmp_path, capsys):
    """`depthlab demo --config FILE` with recipes of other depths said "2 hidden layers of 4
    units" and "std(dL/ds) in hidden layer 1 / in hidden layer 2" for all of them (the first
    recipe's network), under ratios taken at layers 6 and 3."""
    from depthlab.cli import main

    path = tmp_path / "demo.toml"
    path.write_text(DEPTHS)
    code = main(["demo", "--config", str(path), "--out", str(tmp_path / "out"), "--no-report",
                 "--jobs", "1"])
    assert code == 0
    out, err = capsys.readouterr()
    assert "2-6 hidden layers of 4-16 units, 3 recipes" in out + err
    assert "in hidden layer 1 / in its network's last hidden layer:" in out
    assert "in hidden layer 2" not in out


def test_the_demo_header_of_recipes_of_one_network_shape_is_unchanged(tmp_path):
    from depthlab.demo import network_phrase, ratio_header

    path = tmp_path / "demo.toml"
    path.write_text(DEMO_BASE + '\n[[recipes]]\nname = "tanh"\nmodel = { activation = "tanh" }\n')
    recipes = demo_recipes(path)
    assert network_phrase(recipes) == "2 hidden layers of 4 units"
    assert "/ in hidden layer 2:" in ratio_header(recipes)
    packaged = demo_recipes()
    assert network_phrase(packaged) == "20 hidden layers of 64 units"
    assert "/ in hidden layer 20:" in ratio_header(packaged)


def test_the_demo_of_networks_without_a_hidden_layer_names_no_layer_0(tmp_path):
    """A demo config of linear models said "std(dL/ds) in hidden layer 1 / in hidden layer 0"."""
    from depthlab.demo import network_phrase, ratio_header

    path = tmp_path / "demo.toml"
    path.write_text(DEMO_BASE.replace("depth = 2\nwidth = 4\n", ""))
    recipes = demo_recipes(path)
    assert network_phrase(recipes) == "no hidden layer"
    assert "hidden layer 0" not in ratio_header(recipes)
    assert "no hidden layer" in ratio_header(recipes)


def test_the_readme_sweep_example_is_the_example_files_grid():
    """README's second TOML block is headed `# examples/digits_sweep.toml`: its grid must be
    that file's (the run example's block is pinned the same way in test_readme_audit)."""
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    blocks = re.findall(r"```toml\n(.*?)```", (root / "README.md").read_text(encoding="utf-8"),
                        flags=re.S)
    block = next(b for b in blocks if b.startswith("# examples/digits_sweep.toml"))
    with open(root / "examples" / "digits_sweep.toml", "rb") as f:
        assert tomllib.loads(block)["sweep"] == tomllib.load(f)["sweep"]
