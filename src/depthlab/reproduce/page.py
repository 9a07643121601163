"""Writing a reproduction's results: claims.json, PNG figures and a self-contained HTML page."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from ..atomic import atomic_write_bytes, atomic_write_text
from .base import Experiment, Result, checks_json, claims_json

_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
    "color:#222}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
    "tr.ok td:last-child{color:#1a7f37;font-weight:600}"
    "tr.bad td:last-child{color:#b42318;font-weight:600}"
    "figure{margin:1em 0}img{max-width:100%}figcaption{color:#666;font-size:90%}"
)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def write_result(result: Result, out: Path, exp: Experiment) -> Path:
    """Write ``out/claims.json``, ``out/figures/<name>.png`` and ``out/report.html`` (each
    atomically). Returns the report path."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "claims.json", claims_json(result))
    if result.checks:
        atomic_write_text(out / "checks.json", checks_json(result))
    head = "<tr><th>claim</th><th>paper</th><th>measured here</th><th>verdict</th></tr>"
    blocks = []
    for key, fig in result.figures.items():
        data = _png(fig)
        atomic_write_bytes(out / "figures" / f"{key}.png", data)
        b64 = base64.b64encode(data).decode()
        blocks.append(f'<figure><img alt="{html.escape(key)}" src="data:image/png;base64,{b64}">'
                      f"<figcaption>{html.escape(key)}</figcaption></figure>")
    def claim_rows(claims) -> str:
        return "".join(
            f"<tr class='{'ok' if c.holds else 'bad'}'><td>{html.escape(c.claim)}</td>"
            f"<td>{html.escape(c.paper)}</td><td>{html.escape(c.measured)}</td>"
            f"<td>{'holds' if c.holds else 'does not hold'}</td></tr>" for c in claims)

    rows = claim_rows(result.claims)
    checks = (f"<h2>Sanity checks</h2><p>Identities the code must satisfy; not counted as "
              f"reproduced claims.</p><table>{head}{claim_rows(result.checks)}</table>"
              if result.checks else "")
    tables = "".join(
        f"<h3>{html.escape(k)}</h3>{df.to_html(index=False, float_format=lambda v: f'{v:.4g}')}"
        for k, df in result.tables.items())
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result.notes)
    quick = " (quick version)" if result.quick else ""
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>{html.escape(exp.title)}</title><style>{_CSS}</style></head><body>
<h1>{html.escape(exp.title)}</h1>
<p>{html.escape(exp.paper)}{quick}; ran in {result.seconds:.0f} s.</p>
<p>{html.escape(exp.summary)}</p>
<h2>Claims</h2><table>{head}{rows}</table>
{checks}
{'<h2>Notes</h2><ul>' + notes + '</ul>' if notes else ''}
<h2>Figures</h2>{''.join(blocks)}
{'<h2>Tables</h2>' + tables if tables else ''}
</body></html>"""
    report = out / "report.html"
    atomic_write_text(report, page)
    return report
