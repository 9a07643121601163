"""Writing a reproduction's results: ``claims.json`` (and ``checks.json``), PNG figures and a
self-contained HTML page built with the same toolkit as the run reports
(:mod:`depthlab.report.html`: one style, a table of contents, scrolling wide tables).

The claims table keeps the paper's number in the "paper" column, the number measured here in
"measured here" and any cross-check against our own computation (theory, a NumPy re-derivation:
``Claim.computed``) in a separate "our computation" column.
"""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from ..atomic import atomic_write_all
from ..report import html as H
from .base import Experiment, Result, checks_json, claims_json

SECTION_CLAIMS = "Claims"
SECTION_CHECKS = "Sanity checks"
SECTION_NOTES = "Notes"
SECTION_FIGURES = "Figures"
SECTION_TABLES = "Tables"


def figure_png(fig: Any) -> bytes:
    """PNG bytes of a matplotlib figure (tight bounding box; the figure stays usable)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def figure_caption(key: str, fig: Any, result: Result) -> str:
    """The experiment's caption for figure ``key`` (``Result.captions``), else one built from
    the figure itself: its titles and what its axes show."""
    caption = (getattr(result, "captions", None) or {}).get(key)
    if caption:
        return caption
    bits = []
    for ax in getattr(fig, "axes", []):
        x, y = ax.get_xlabel(), ax.get_ylabel()
        if not (x or y):
            continue
        title = ax.get_title()
        bits.append((f"{title}: " if title else "") + f"{y or 'value'} against {x or 'index'}")
    return "; ".join(dict.fromkeys(bits)) + "." if bits else key.replace("_", " ")


def figure_title(key: str, fig: Any) -> str:
    """The figure's suptitle, its only axes' title, the part before ``:`` that all its
    panels' titles share (``Table 1 analogue: shapeset ...`` and ``Table 1 analogue: mnist5k
    ...`` give ``Table 1 analogue``), or its key in words (``table1`` -> ``Table 1``; the
    page headed the glorot2010 panels 'Table1')."""
    suptitle = getattr(getattr(fig, "_suptitle", None), "get_text", lambda: "")()
    axes = [ax for ax in getattr(fig, "axes", []) if ax.get_label() != "<colorbar>"]
    if suptitle:
        return suptitle
    if len(axes) == 1 and axes[0].get_title():
        return axes[0].get_title()
    heads = {ax.get_title().split(":", 1)[0].strip() for ax in axes if ":" in ax.get_title()}
    if len(heads) == 1 and all(":" in ax.get_title() for ax in axes) and heads != {""}:
        return heads.pop()
    words = re.sub(r"(?<=[A-Za-z])(?=\d)", " ", key.replace("_", " "))
    return words[:1].upper() + words[1:]


def _claims_table(claims: list) -> str:
    computed = any(getattr(c, "computed", "") for c in claims)
    cols = ["claim", "paper", "measured here", *(["our computation"] if computed else []),
            "verdict"]
    rows = []
    for c in claims:
        verdict = ("<span class=\"badge finished\">holds</span>" if c.holds else
                   "<span class=\"badge diverged\">does not hold</span>")
        rows.append([c.claim, c.paper, c.measured,
                     *([getattr(c, "computed", "")] if computed else []), verdict])
    return H.table(cols, rows, raw_html_columns=("verdict",),
                   row_classes=["" if c.holds else "diverged" for c in claims])


def _frame_table(df: pd.DataFrame) -> str:
    def cell(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v.item() if hasattr(v, "item") else v

    cols = [str(c) for c in df.columns]
    return H.table(cols, [[cell(v) for v in row] for row in df.itertuples(index=False)],
                   sortable=True)


def result_body(result: Result, pngs: dict[str, bytes] | None = None) -> tuple[str, list]:
    """The page body of a result (claims, checks, notes, figures, tables) and its table of
    contents. ``pngs``: rendered figures by key (rendered here when missing)."""
    pngs = dict(pngs or {})
    body, toc = [], []
    held = sum(c.holds for c in result.claims)
    body.append(f"<h2 id=\"claims\">{SECTION_CLAIMS}</h2><p class=\"note\">{held} of "
                f"{len(result.claims)} claims hold. \"paper\": the number the paper reports; "
                "\"measured here\": this run's number.</p>"
                f"<div class=\"card\">{_claims_table(result.claims)}</div>")
    toc.append(("claims", SECTION_CLAIMS))
    if result.checks:
        body.append(f"<h2 id=\"checks\">{SECTION_CHECKS}</h2><p class=\"note\">Identities the "
                    "code must satisfy; not counted as reproduced claims.</p>"
                    f"<div class=\"card\">{_claims_table(result.checks)}</div>")
        toc.append(("checks", SECTION_CHECKS))
    if result.notes:
        items = "".join(f"<li>{H.esc(n)}</li>" for n in result.notes)
        body.append(f"<h2 id=\"notes\">{SECTION_NOTES}</h2><div class=\"card\"><ul>{items}"
                    "</ul></div>")
        toc.append(("notes", SECTION_NOTES))
    if result.figures:
        blocks = []
        for key, fig in result.figures.items():
            caption = figure_caption(key, fig, result)
            png = pngs.get(key) or figure_png(fig)
            pngs[key] = png
            blocks.append(H.figure_block(png, figure_title(key, fig), caption, wide=True,
                                         alt=caption))
        body.append(f"<h2 id=\"figures\">{SECTION_FIGURES}</h2><div class=\"grid\">"
                    + "".join(blocks) + "</div>")
        toc.append(("figures", SECTION_FIGURES))
    if result.tables:
        parts = "".join(f"<h3>{H.esc(k)}</h3><div class=\"card\">{_frame_table(df)}</div>"
                        for k, df in result.tables.items())
        body.append(f"<h2 id=\"tables\">{SECTION_TABLES}</h2>{parts}")
        toc.append(("tables", SECTION_TABLES))
    return "".join(body), toc


def write_result(result: Result, out: Path, exp: Experiment) -> Path:
    """Write ``out/claims.json`` (``checks.json`` when there are sanity checks, else an old
    one is removed),
    ``out/figures/<name>.png`` and ``out/report.html``, all atomically together (every figure
    is rendered, and every file written to a temporary, before any is renamed into place).
    Returns the report path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pngs = {key: figure_png(fig) for key, fig in result.figures.items()}
    body, toc = result_body(result, pngs)
    intro = (f"<p>{H.esc(exp.summary)}</p>" if exp.summary else "")
    meta = [("paper", exp.paper), ("version", "quick" if result.quick else "full"),
            ("ran in", f"{result.seconds:.0f} s"),
            ("claims holding", f"{sum(c.holds for c in result.claims)}/{len(result.claims)}")]
    document = H.page(exp.title, meta, intro + body, toc=toc)
    report = out / "report.html"
    from ..report.build import FIGURE_LIST, _figures_written

    fig_dir = out / "figures"
    # the PNG copies an earlier reproduction (or report) wrote here and this one does not
    # draw are removed afterwards: another experiment's figures stayed beside this one's
    written_before = _figures_written(fig_dir)
    names = sorted(f"{key}.png" for key in pngs)
    files = [(out / "claims.json", claims_json(result).encode("utf-8")),
             *([(out / "checks.json", checks_json(result).encode("utf-8"))] if result.checks
               else []),
             *((fig_dir / f"{key}.png", png) for key, png in pngs.items()),
             (report, document.encode("utf-8")),
             *([(fig_dir / FIGURE_LIST, json.dumps(names).encode("utf-8"))]
               if pngs or written_before else [])]
    # all written, then all renamed: a Ctrl-C after claims.json left the new claims beside
    # the previous run's report.html and figures
    atomic_write_all([(path, lambda fh, data=data: fh.write(data)) for path, data in files])
    for name in written_before - set(names):
        (fig_dir / name).unlink(missing_ok=True)
    if not result.checks:  # an earlier run's checks (another experiment in the same folder)
        (out / "checks.json").unlink(missing_ok=True)  # are not this one's
    return report
