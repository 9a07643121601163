"""The demo: one deep network, several recipes, and the number that tells them apart.

The recipes live in a TOML file (default: the packaged ``depthlab/examples/demo.toml``, also
``examples/demo.toml`` in the repository): an ordinary run config plus ``[[recipes]]``
entries, each with a ``name``, a one-line ``meaning`` and the ``model`` keys it changes. The
headline number of every recipe is the gradient ratio at initialization,

    ratio = std(dL/ds_1) / std(dL/ds_L)

(first over last hidden layer, measured on the probe batch): about 1 when the gradient reaches
the first layer intact, orders of magnitude below 1 when it vanishes, above 1 when it grows.
"""

from __future__ import annotations

import copy
import math
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["DEMO_CONFIG", "Recipe", "demo_recipes", "describe_ratio", "summary_lines"]

DEMO_CONFIG = "demo.toml"
"""Name of the packaged demo config in ``depthlab/examples``."""


@dataclass(frozen=True)
class Recipe:
    """One demo recipe: its ``name``, what it shows (``meaning``) and its sweep ``point``."""

    name: str
    meaning: str
    point: Any  # depthlab.experiments.SweepPoint


def packaged_example(name: str) -> Path:
    """Path of a file shipped in ``depthlab/examples`` (configs reachable after ``pip install``)."""
    path = Path(str(resources.files("depthlab").joinpath("examples", name)))
    if not path.is_file():
        shipped = sorted(p.name for p in path.parent.glob("*.toml"))
        raise ValueError(f"no packaged example {name!r}; shipped: {', '.join(shipped)}")
    return path


_RECIPES_HEADER = re.compile(r"^\s*\[\s*recipes\s*\]", re.MULTILINE)
"""A single-bracket ``[recipes]`` table header (``[[recipes]]`` does not match)."""


def _single_bracket_recipes_error(src: Path, message: str) -> bool:
    """Whether a TOML syntax error of the demo config comes from a ``[recipes]`` header written
    with single brackets: tomllib's error is at a ``[recipes]``/``[[recipes]]`` header line (or
    names the table ``('recipes',)``) and the file holds a single-bracket one."""
    try:
        text = src.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeError):
        return False
    if not _RECIPES_HEADER.search(text):
        return False
    if "('recipes',)" in message:
        return True
    at = re.search(r"\(at line (\d+),", message)
    lines = text.splitlines()
    if not at or not 1 <= int(at[1]) <= len(lines):
        return False
    header = lines[int(at[1]) - 1].split("#")[0].replace(" ", "").replace("\t", "")
    return header in ("[recipes]", "[[recipes]]")


def demo_recipes(path: str | os.PathLike | None = None, *, epochs: int | None = None
                 ) -> list[Recipe]:
    """The recipes of the demo config at ``path`` (default: the packaged one), each validated
    as a full run config (base config + the recipe's ``model`` keys); ``epochs`` overrides the
    base config's ``train.epochs``. Raises ``ConfigError`` naming the bad recipe."""
    from .experiments import ConfigError, SweepPoint, read_toml, run_id, validate
    from .fieldcheck import fmt

    src = Path(path) if path is not None else packaged_example(DEMO_CONFIG)
    one_table = (f"{src}: [recipes] is one table; accepted: [[recipes]] (double brackets), one "
                 "entry per recipe with name, meaning and a model table")
    try:
        raw = read_toml(src)
    except ConfigError as exc:  # two recipes under `[recipes]`: tomllib's "declared twice"
        if _single_bracket_recipes_error(src, str(exc)):
            raise ConfigError(one_table, "recipes") from None
        raise
    recipes = raw.pop("recipes", None)
    if isinstance(recipes, dict):  # `[recipes]`: one table, not the array `[[recipes]]`
        raise ConfigError(one_table, "recipes")
    if not isinstance(recipes, list) or not recipes:
        raise ConfigError(f"{src}: no [[recipes]] entries; each needs name, meaning and a "
                          "model table", "recipes")
    if raw.get("sweep"):  # was validated, then dropped: each recipe ran once, nothing said
        keys = ", ".join(map(str, raw["sweep"])) if isinstance(raw["sweep"], dict) else None
        raise ConfigError(f"{src}: a demo config takes no [sweep] table (got "
                          f"{keys or fmt(raw['sweep'])}); the demo trains one run per recipe: "
                          "vary the recipes' model keys, or run the grid with `depthlab "
                          "sweep`", "sweep")
    for section in ("model", "train"):  # merged into below: a table, or an error naming it
        if section in raw and not isinstance(raw[section], dict):
            raise ConfigError(f"{src}: {section} = {fmt(raw[section])} must be a table "
                              f"([{section}] section)", section)
    if epochs is not None:
        raw.setdefault("train", {})["epochs"] = epochs
    out, names = [], set()
    for i, rec in enumerate(recipes, 1):
        _check_recipe(src, i, rec)
        if rec["name"] in names:
            raise ConfigError(f"{src}: recipe name {rec['name']!r} appears twice", "recipes")
        names.add(rec["name"])
        if not isinstance(rec.get("model") or {}, dict):  # was: dict("x") raised ValueError
            raise ConfigError(f"{src}: recipe {rec['name']!r}: model = {fmt(rec['model'])} "
                              "must be a table of [model] keys, e.g. model = {activation = "
                              '"relu"}', "recipes")
        cfg_raw = copy.deepcopy(raw)
        cfg_raw.setdefault("model", {}).update(dict(rec.get("model") or {}))
        try:
            cfg = validate(cfg_raw, base_dir=src.parent)
        except ConfigError as exc:
            raise ConfigError(f"{src}: recipe {rec['name']!r}: {exc}", exc.key) from None
        cfg.pop("sweep", None)
        point = SweepPoint(run_id(cfg), rec["name"], {"recipe": rec["name"]}, cfg)
        twin = next((r for r in out if r.point.id == point.id), None)
        if twin is not None:  # was: trained once, its result shown under both names
            raise ConfigError(f"{src}: recipe {rec['name']!r} trains the same network as "
                              f"recipe {twin.name!r} (their model keys give the same config); "
                              "expected recipes that differ", "recipes")
        out.append(Recipe(rec["name"], str(rec.get("meaning", "")), point))
    return out


RECIPE_KEYS = ("name", "meaning", "model")


def _check_recipe(src: Path, i: int, rec: Any) -> None:
    """Recipe ``i`` of ``src`` is a table of :data:`RECIPE_KEYS` with a non-empty string
    ``name`` and a string ``meaning``, else a ``ConfigError`` naming it (an unknown key with
    the accepted key it most likely meant, ``nmae``: did you mean "name"?)."""
    from .experiments import ConfigError
    from .fieldcheck import did_you_mean, fmt

    if not isinstance(rec, dict):
        raise ConfigError(f"{src}: recipe {i} = {fmt(rec)} is not accepted; accepted: a table "
                          "([[recipes]] entry) with name, meaning and a model table", "recipes")
    label = f"recipe {rec['name']!r}" if isinstance(rec.get("name"), str) else f"recipe {i}"
    extra = sorted(set(rec) - set(RECIPE_KEYS), key=str)
    if extra:
        raise ConfigError(f"{src}: {label} has the unknown key {extra[0]!r}"
                          f"{did_you_mean(extra[0], RECIPE_KEYS)}; accepted: "
                          f"{', '.join(RECIPE_KEYS)}", "recipes")
    if not isinstance(rec.get("name"), str) or not rec["name"].strip():
        got = f"got {fmt(rec['name'])}" if "name" in rec else "it has none"
        raise ConfigError(f"{src}: {label} needs a non-empty 'name' (a string; {got})", "recipes")
    if not isinstance(rec.get("meaning", ""), str):
        raise ConfigError(f"{src}: {label}: meaning = {fmt(rec['meaning'])} has the wrong "
                          "type; accepted: a string (one line on what the recipe shows)",
                          "recipes")


def describe_ratio(ratio: float | None) -> str:
    """A few words on a first/last-layer gradient ratio (see the module docstring): flows
    within a factor 4 of 1, shrinking/growing up to a factor 100, vanishing/exploding beyond.
    A ratio of exactly 0 is a measurement: no gradient reaches the first layer (its units all
    dead); None, NaN, an infinity or a negative number is "not measured"."""
    if ratio is None or not math.isfinite(ratio) or ratio < 0:
        return "not measured"
    if ratio == 0:  # was "not measured", for a run whose first layer got no gradient at all
        return "vanishing: the first layer gets no gradient at all (0)"
    if ratio < 1e-2:
        return f"vanishing: the first layer gets {1 / ratio:.2g}x less gradient"
    if ratio > 1e2:
        return f"exploding: the first layer gets {ratio:.2g}x more gradient"
    if ratio < 0.25:
        return f"shrinking: the first layer gets {1 / ratio:.2g}x less gradient"
    if ratio > 4:
        return f"growing: the first layer gets {ratio:.2g}x more gradient"
    factor = max(ratio, 1 / ratio)
    # two digits, three where two round to 1 (1.04 read 'within a factor 1 of 1')
    text = f"{factor:.2g}" if f"{factor:.2g}" != "1" else f"{factor:.3g}"
    return f"flows: within a factor {text} of 1"


def _hidden(recipe: Recipe) -> list[int]:
    """The hidden layers' widths of ``recipe``'s network."""
    return list(recipe.point.config["model"]["sizes"][1:-1])


def _span(values: list[int]) -> str:
    return f"{min(values)}" if min(values) == max(values) else f"{min(values)}-{max(values)}"


def network_phrase(recipes: list[Recipe]) -> str:
    """The recipes' networks in a few words, true of every one: ``20 hidden layers of 64
    units``; recipes of other depths or widths give the ranges (``2-6 hidden layers of 4-8
    units``), a network of varying widths ``3 hidden layers of 8-16 units``."""
    layers = [_hidden(r) for r in recipes]
    depths = [len(h) for h in layers]
    widths = [w for h in layers for w in h]
    if not widths:
        return "no hidden layer"
    return f"{_span(depths)} hidden layers of {_span(widths)} units"


def ratio_header(recipes: list[Recipe]) -> str:
    """The line above the recipes' gradient ratios, naming the last hidden layer each is
    taken at (the first recipe's depth named for all of them said "in hidden layer 2" of a
    6-layer recipe's ratio)."""
    depths = {len(_hidden(r)) for r in recipes}
    if depths == {0}:  # was "in hidden layer 1 / in hidden layer 0"
        return ("Gradient ratio at initialization: not measured, the networks have no hidden "
                "layer (give model.depth and model.width, or hidden sizes).")
    depths.discard(0)  # a linear recipe beside deeper ones has its own "not measured"
    last = (f"in hidden layer {depths.pop()}" if len(depths) == 1
            else "in its network's last hidden layer")
    return (f"Gradient ratio at initialization = std(dL/ds) in hidden layer 1 / {last}: 1 means "
            "the gradient reaches the first layer intact.")


def summary_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per recipe: name, gradient ratio at init and what it means, accuracy.

    ``rows``: dicts with ``name``, ``meaning``, ``ratio``, ``status``, ``val_acc``."""
    width = max(len(r["name"]) for r in rows)
    lines = []
    for r in rows:
        ratio = r.get("ratio")
        rtxt = f"{ratio:.2g}" if ratio is not None and math.isfinite(ratio) else "-"
        acc = r.get("val_acc")
        atxt = f"{acc:.2f}" if isinstance(acc, float) and math.isfinite(acc) else "-"
        status = "" if r.get("status") == "finished" else f" [{r.get('status')}]"
        lines.append(f"{r['name'].ljust(width)}  ratio {rtxt:>8} ({describe_ratio(ratio)}); "
                     f"val acc {atxt}{status}")
        if r.get("meaning"):
            lines.append(f"{'':{width}}  -> {r['meaning']}")
    return lines
