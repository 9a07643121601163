"""Text that the fonts on this machine can draw, for every figure of ``depthlab.report`` and
``depthlab.plot``.

matplotlib draws a character missing from its font (DejaVu Sans has no CJK, Devanagari or Thai)
as an empty box: a run named ``日本語の実験`` and modules named ``入力層``, ``隠れ層`` read as rows
of identical boxes. For each character the figure's font lacks:

1. another installed font that has it is added to the text's font list (matplotlib's glyph
   fallback; found by each font's character map, placeholder fonts such as "Last Resort",
   which map every code point to the picture of its block, left out);
2. a character no installed font has is written as its code point, a run of them between
   ``‹ ›``: ``日本`` -> ``‹U+65E5 U+672C›``. Two different names stay two different labels,
   and no "Glyph missing from font" warning is raised.

:func:`drawable` is rule 2 for labels made before drawing (layer names, cut labels: their
length and margin count the code points), :func:`fitted` both rules for a text measured
outside a figure; :func:`install` puts both rules into a renderer, so every text drawn or
measured through it (titles, legends, ticks) gets them.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache, lru_cache
from typing import Any

from matplotlib import font_manager, ft2font
from matplotlib.font_manager import FontProperties

_PLACEHOLDER_CODES = 0x10000
"""A font mapping more code points than this is a placeholder (Last Resort maps all 1.1
million to the pictures of their blocks): a real font has at most 65,535 glyphs."""


@cache
def _charmap(path: str) -> frozenset[int]:
    """The code points the font file at ``path`` maps to a glyph (empty if unreadable). Read
    from a font object of its own, closed after (matplotlib's ``get_font`` keeps each file it
    opens: a scan of every installed font left ~128 files open for the process's life)."""
    try:
        return frozenset(ft2font.FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return frozenset()


@lru_cache(maxsize=256)
def _covered(prop: FontProperties) -> frozenset[int]:
    """Code points that the fonts matplotlib uses for ``prop`` draw (its list, fallbacks
    included)."""
    codes: set[int] = set()
    try:
        paths = font_manager.fontManager._find_fonts_by_props(prop)
    except (AttributeError, ValueError):
        paths = [font_manager.findfont(prop)]
    for p in paths:
        codes |= _charmap(str(p))
    return frozenset(codes)


@lru_cache(maxsize=4096)
def _fallback_family(code: int, prop: FontProperties | None = None) -> str | None:
    """The family of an installed font (not a placeholder) that has ``code`` in the file
    matplotlib picks for that family at ``prop``'s style, weight and stretch, else ``None``.
    A family whose other style has it is not enough: ``𝛼`` (U+1D6FC) is in DejaVu Serif
    *Italic* only, so upright text given "DejaVu Serif" was drawn from DejaVuSerif.ttf, as an
    empty box, with a "Glyph missing" warning."""
    prop = FontProperties() if prop is None else prop
    tried: set[str] = set()
    for entry in font_manager.fontManager.ttflist:
        if entry.name in tried or "last resort" in entry.name.lower():
            continue
        codes = _charmap(str(entry.fname))
        if code not in codes or len(codes) > _PLACEHOLDER_CODES:
            continue
        tried.add(entry.name)
        chosen = prop.copy()
        chosen.set_family([entry.name])
        try:
            path = font_manager.findfont(chosen, fallback_to_default=False)
        except ValueError:
            continue
        if code in _charmap(str(path)):
            return entry.name
    return None


def _silent(ch: str) -> bool:
    """Whitespace and control characters: laid out, not drawn as glyphs."""
    return ch.isspace() or unicodedata.category(ch) == "Cc"


_RECORDERS: list[set[str]] = []


@contextmanager
def recorded() -> Iterator[set[str]]:
    """The characters written as code points while the ``with`` block runs (in any thread):
    a report says which ones and why beside its figures."""
    seen: set[str] = set()
    _RECORDERS.append(seen)
    try:
        yield seen
    finally:
        _RECORDERS.remove(seen)


def _code_points(chars: str) -> str:
    for seen in _RECORDERS:
        seen.update(chars)
    return "‹" + " ".join(f"U+{ord(c):04X}" for c in chars) + "›"


def _fit(text: str, prop: FontProperties | None = None,
         fallback: bool = True) -> tuple[str, list[str]]:
    """``text`` with the characters that neither ``prop``'s fonts nor (with ``fallback``)
    another installed font draw written as code points, and the families to add to
    ``prop``'s list for the characters another font draws."""
    if text.isascii():
        return text, []
    covered = _covered(FontProperties() if prop is None else prop)
    families: list[str] = []
    out: list[str] = []
    run = ""
    for ch in text:
        family = None
        if not (_silent(ch) or ord(ch) in covered):
            family = _fallback_family(ord(ch), prop) if fallback else None
            if family is None:
                run += ch
                continue
            if family not in families:
                families.append(family)
        if run:
            out.append(_code_points(run))
            run = ""
        out.append(ch)
    if run:
        out.append(_code_points(run))
    return "".join(out), families


def drawable(text: str) -> str:
    """``text`` with each run of characters that no installed font draws written as their
    code points (``日本`` -> ``‹U+65E5 U+672C›`` where no CJK font is installed; unchanged
    where one is: the figure then draws it with that font)."""
    return _fit(str(text))[0]


def fitted(s: str, prop: FontProperties, ismath: Any = False) -> tuple[str, FontProperties]:
    """``s`` and ``prop`` by both rules: the characters no installed font has written as
    code points, the families that draw the others added to ``prop``'s list (a copy).
    ``ismath``: as matplotlib's renderers take it (mathtext: code points only)."""
    if ismath == "TeX" or not isinstance(s, str) or s.isascii():
        return s, prop
    # mathtext picks its own fonts: the font list of ``prop`` does not reach it
    s, families = _fit(s, prop, fallback=not ismath)
    if families:
        prop = prop.copy()
        prop.set_family([*prop.get_family(), *families])
    return s, prop


def _original(renderer: Any, name: str) -> Any:
    """``renderer``'s own method ``name`` (a class's, or the one a delegating renderer such as
    matplotlib's ``MixedModeRenderer`` forwards to at the time of the call)."""
    for klass in type(renderer).__mro__:
        if name in vars(klass):
            return vars(klass)[name].__get__(renderer)
    return type(renderer).__getattr__(renderer, name)


def install(renderer: Any) -> Any:
    """Make ``renderer`` draw and measure every text by the two rules of this module (once per
    renderer); returns it."""
    if getattr(renderer, "_depthlab_glyphs", False):
        return renderer

    def draw_text(gc, x, y, s, prop, angle, ismath=False, mtext=None):
        s, prop = fitted(s, prop, ismath)
        return _original(renderer, "draw_text")(gc, x, y, s, prop, angle, ismath, mtext)

    def get_text_width_height_descent(s, prop, ismath):
        s, prop = fitted(s, prop, ismath)
        return _original(renderer, "get_text_width_height_descent")(s, prop, ismath)

    renderer.draw_text = draw_text
    renderer.get_text_width_height_descent = get_text_width_height_descent
    renderer._depthlab_glyphs = True
    return renderer
