"""Self-contained HTML assembly: inline CSS, inline JS (table sorting), figures as base64 PNG
data URIs. The page references no external resource, so it opens offline."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

CSS = """
:root { --fg:#1d232b; --muted:#5b6573; --line:#d9dee5; --bg:#ffffff; --soft:#f5f7fa;
  --accent:#0072B2; --bad:#b3261e; --warn:#8a5a00; --good:#00734f; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue",
  Arial, sans-serif; color:var(--fg); background:var(--soft); }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 60px; }
header.page { background:var(--bg); border-bottom:1px solid var(--line); }
header.page .inner { max-width:1240px; margin:0 auto; padding:22px 28px 16px; }
h1 { font-size: 26px; margin: 0 0 6px; }
h2 { font-size: 20px; margin: 34px 0 12px; padding-bottom:6px;
  border-bottom:2px solid var(--line); }
h3 { font-size: 16px; margin: 22px 0 8px; }
.meta { color:var(--muted); font-size:14px; display:flex; gap:18px; flex-wrap:wrap; }
.meta b { color:var(--fg); font-weight:600; }
.note { color:var(--muted); font-size:14px; margin:6px 0 12px; }
.card { background:var(--bg); border:1px solid var(--line); border-radius:8px;
  padding:6px 18px 16px;
  margin: 14px 0; }
details.run { background:var(--bg); border:1px solid var(--line); border-radius:8px;
  margin:12px 0; }
details.run > summary { cursor:pointer; padding:12px 18px; font-size:16px; font-weight:600;
  list-style:none; display:flex; gap:12px; align-items:center; flex-wrap:wrap; }
details.run > summary::-webkit-details-marker { display:none; }
/* run names without spaces ("sweep:activation=relu,init=he_normal") wrap on a phone */
h1, h2, h3, details.run > summary, nav.toc { overflow-wrap:anywhere; }
details.run > summary::before { content:"\\25B6"; font-size:11px; color:var(--muted);
  transition: transform .15s; }
details.run[open] > summary::before { transform: rotate(90deg); }
details.run > summary .sub { font-weight:400; color:var(--muted); font-size:14px; }
details.run .body { padding: 0 18px 16px; border-top:1px solid var(--line); }
.badge { display:inline-block; font-size:12px; font-weight:600; padding:1px 8px;
  border-radius:10px;
  border:1px solid currentColor; }
.badge.finished { color:var(--good); } .badge.diverged { color:var(--bad); background:#fdecea; }
.badge.failed { color:#fff; background:var(--bad); border-color:var(--bad); }
.badge.best { color:var(--accent); }
.grid { display:grid; grid-template-columns: repeat(auto-fit, minmax(min(540px, 100%), 1fr));
  gap: 14px 18px; }
figure { margin:0; background:var(--bg); }
figure.wide { grid-column: 1 / -1; }
figure img { max-width:100%; height:auto; display:block; margin:0 auto; }
figcaption { color:var(--muted); font-size:13px; margin-top:2px; }
table { border-collapse: collapse; font-size:13.5px; background:var(--bg); }
th, td { padding: 5px 10px; border-bottom:1px solid var(--line); text-align:left;
  vertical-align:top; }
td.num, th.num { text-align:right; font-variant-numeric: tabular-nums; }
/* a number is never split over two lines ("1.464e-" above "12" in a phone-wide table, which
   scrolls sideways instead) */
td.num { white-space:nowrap; }
/* a text cell with a long unbroken word (class "long", set by the script below) breaks at the
   punctuation inside it and, where that is not enough, anywhere: a table that fits its box at all
   no longer scrolls for want of a line break; 9em keeps such a column readable */
td.long { overflow-wrap:anywhere; min-width:9em; }
td.long code, td.long .badge { white-space:nowrap; }
thead th { background:#eef1f5; position: sticky; top: 0; }
table.sortable thead th { cursor:pointer; user-select:none; white-space:nowrap; }
/* a table too wide for its box (saxe2013's "median condition number", "expected mean σ⁴
   (Gaussian)": 1183 px in 1146 at 1400 px, its last column behind a scroll bar) gets class
   "wrap-headers" from the script below: its headers then break between their words; the sort
   mark is joined to the last word by a no-break space, never a line of its own */
table.sortable.wrap-headers thead th { white-space:normal; }
table.sortable thead th:focus-visible { outline:2px solid var(--accent); outline-offset:-2px; }
table.sortable thead th::after { content:"\\00A0\\21C5"; color:#9aa3ae; font-size:11px; }
table.sortable thead th.asc::after { content:"\\00A0\\25B2"; color:var(--fg); }
table.sortable thead th.desc::after { content:"\\00A0\\25BC"; color:var(--fg); }
/* a long header ("grad_w30_step0") breaks at the <wbr> after its punctuation (script below) */
table thead th.long { white-space:normal; }
tr.diverged td { background:#fdecea; } tr.failed td { background:#f9d6d3; }
td p.cure { margin: 0 0 .45em; } td p.cure:last-child { margin-bottom: 0; }
.scroll { overflow-x:auto; max-width:100%; }
/* a table of paragraphs (the doctor's findings: a finding, its evidence, its prescription and
   its verification, 7 columns) is one card per row where the page is narrow: at 375 px and at
   800 px it was 740 px wide in a sideways-scrolling box, each text column at 9em, 1988 px tall;
   each cell is then named by its column (data-label) */
@media (max-width: 900px) {
  table.stacked, table.stacked tbody, table.stacked tr, table.stacked td { display:block; }
  table.stacked thead { display:none; }
  table.stacked tr { border-bottom:2px solid var(--line); padding:6px 0; }
  table.stacked td, table.stacked td.long { border-bottom:none; padding:2px 10px; min-width:0;
    overflow-wrap:anywhere; text-align:left; white-space:normal; }
  table.stacked td::before { content:attr(data-label) ": "; font-weight:600;
    color:var(--muted); }
}
.alert { border-left:4px solid var(--bad); background:#fdecea; padding:10px 14px;
  border-radius:4px;
  margin: 10px 0; }
.alert pre { white-space:pre-wrap; margin:6px 0 0; font-size:12.5px; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size:12.5px; }
.kv { display:grid; grid-template-columns: repeat(auto-fill, minmax(min(230px, 100%), 1fr));
  gap:2px 18px; margin:10px 0; font-size:13.5px; }
.kv div { display:flex; gap:8px; align-items:baseline; border-bottom:1px dotted var(--line);
  padding:2px 0; min-width:0; }
.kv span { color:var(--muted); white-space:nowrap; }
.kv code { overflow-wrap:anywhere; }
nav.toc { font-size:14px; margin: 8px 0 0; } nav.toc a { margin-right:14px;
  color:var(--accent); }
footer { color:var(--muted); font-size:12.5px; margin-top:40px; }
"""

# Click a header to sort (or Tab to it and press Enter or Space); numbers (data-v attribute when
# present) sort numerically, blanks last.
JS = """
document.querySelectorAll('table.sortable').forEach(function (t) {
  t.querySelectorAll('thead th').forEach(function (th, i) {
    th.tabIndex = 0;
    th.addEventListener('keydown', function (e) {
      if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); th.click(); } });
    th.addEventListener('click', function () {
      var asc = !th.classList.contains('asc');
      t.querySelectorAll('thead th').forEach(function (h) { h.classList.remove('asc', 'desc');
        h.removeAttribute('aria-sort'); });
      th.classList.add(asc ? 'asc' : 'desc');
      th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
      var body = t.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var key = function (r) { var c = r.cells[i]; var v = c.getAttribute('data-v');
        if (v === null) v = c.textContent.trim(); var n = parseFloat(v);
        return (v !== '' && !isNaN(n) && isFinite(v)) ? n : v.toLowerCase(); };
      rows.sort(function (a, b) { var x = key(a), y = key(b);
        if (x === '' || x === 'nan') return 1; if (y === '' || y === 'nan') return -1;
        if (typeof x === typeof y) return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
        return (typeof x === 'number' ? -1 : 1) * (asc ? 1 : -1); });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


# A text cell with a word of 16 or more characters (a sweep point's name
# "base:activation=relu,lr=0.1", a module "encoder.layers.11.self_attn.out_proj"), and a column
# header with one of 10 or more ("grad_w30_step0", "final/initial"), get class "long" and a
# <wbr> after each , = : ; / _ | and each "." that is no decimal point of its text (not inside
# an id's <code>, a link or a badge): the line breaks there first. The written HTML is unchanged
# (a search for "<td>NAME</td>" finds the name) and so is each cell's textContent.
JS += r"""
function breakAtPunctuation(cell, longest) {
  var word = new RegExp('\\S{' + longest + '}');
  if (!word.test(cell.textContent)) return;
  var walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT), texts = [];
  for (var n = walker.nextNode(); n; n = walker.nextNode()) texts.push(n);
  texts.forEach(function (n) {
    if (n.parentNode.closest('code, a, .badge') || !word.test(n.data)) return;
    var parts = n.data.split(/(?<=[,=:;\/_|])(?=\S)|(?<=\D\.)(?=\S)|(?<=\.)(?=\D)/);
    if (parts.length < 2) return;
    cell.classList.add('long');
    var frag = document.createDocumentFragment();
    parts.forEach(function (part, k) {
      if (k) frag.appendChild(document.createElement('wbr'));
      frag.appendChild(document.createTextNode(part)); });
    n.parentNode.replaceChild(frag, n);
  });
  if (cell.tagName === 'TD') cell.classList.add('long');
}
document.querySelectorAll('td:not(.num)').forEach(function (td) { breakAtPunctuation(td, 16); });
document.querySelectorAll('thead th').forEach(function (th) { breakAtPunctuation(th, 10); });
"""

# A sortable table's headers stay on one line while the table fits its box; one that does not
# (also after the window narrows or a <details> opens) lets them break between their words.
JS += r"""
function fitHeaders() {
  document.querySelectorAll('table.sortable').forEach(function (t) {
    var box = t.parentElement;
    t.classList.remove('wrap-headers');
    if (box.clientWidth > 0 && box.scrollWidth > box.clientWidth + 1)
      t.classList.add('wrap-headers');
  });
}
fitHeaders();
window.addEventListener('resize', fitHeaders);
document.addEventListener('toggle', fitHeaders, true);
"""

def esc(value: Any) -> str:
    """HTML-escape ``str(value)`` (quotes included)."""
    return html.escape(str(value), quote=True)


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def fmt(value: Any, digits: int = 4) -> str:
    """Compact display of a cell value: floats to ``digits`` significant digits, None/NaN blank."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.{digits}g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v, digits) for v in value) + "]"
    return str(value)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def figure_block(png: bytes, title: str, caption: str = "", wide: bool = False,
                 alt: str = "") -> str:
    """A ``<figure>`` with an ``<h3>``-level title, the embedded image and a caption."""
    cls = ' class="wide"' if wide else ""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return (f"<figure{cls}><h3>{esc(title)}</h3><img alt=\"{esc(alt or title)}\" "
            f"src=\"{data_uri(png)}\">{cap}</figure>")


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, sortable: bool = False,
          row_classes: Sequence[str] | None = None, table_id: str | None = None,
          raw_html_columns: Sequence[str] = (), stacked: bool = False) -> str:
    """An HTML table. Numeric cells are right-aligned and carry ``data-v`` (the full value) so
    sorting is numeric; ``raw_html_columns`` are inserted unescaped (already-built markup).
    ``stacked``: a table of long texts, drawn one card per row on a narrow page (class
    ``stacked``, each cell's column in its ``data-label``)."""
    rows = list(rows)
    numeric = [all(_is_number(r[i]) or r[i] is None for r in rows) and
               any(_is_number(r[i]) for r in rows) for i in range(len(columns))]
    classes = " ".join(c for c, on in (("sortable", sortable), ("stacked", stacked)) if on)
    attrs = f' class="{classes}"' if classes else ""
    if table_id:
        attrs += f' id="{esc(table_id)}"'
    out = [f"<div class=\"scroll\"><table{attrs}><thead><tr>"]
    for c, num in zip(columns, numeric):
        th_cls = ' class="num"' if num else ""
        out.append(f"<th{th_cls}>{esc(c)}</th>")
    out.append("</tr></thead><tbody>")
    for k, r in enumerate(rows):
        cls = row_classes[k] if row_classes else ""
        out.append(f"<tr class=\"{esc(cls)}\">" if cls else "<tr>")
        for c, v, num in zip(columns, r, numeric):
            label = f' data-label="{esc(c)}"' if stacked else ""
            if c in raw_html_columns:
                out.append(f"<td{label}>{v}</td>")
            elif num:
                dv = "" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(v)
                out.append(f"<td class=\"num\"{label} data-v=\"{esc(dv)}\">{esc(fmt(v))}</td>")
            else:
                out.append(f"<td{label}>{esc(fmt(v))}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def badge(status: str) -> str:
    return f"<span class=\"badge {esc(status)}\">{esc(status)}</span>"


def key_values(pairs: Iterable[tuple[str, Any]]) -> str:
    """A compact grid of ``key value`` pairs. Unlike a table cell, a value that is None reads
    ``none`` and a NaN ``nan``: a diverged run's ``loss`` and ``train_loss`` stood as a key
    with nothing after it, like a value lost in the page."""

    def shown(v: Any) -> str:
        if v is None:
            return "none"
        return "nan" if isinstance(v, float) and math.isnan(v) else fmt(v)

    items = "".join(f"<div><span>{esc(k)}</span><code>{esc(shown(v))}</code></div>"
                    for k, v in pairs)
    return f"<div class=\"kv\">{items}</div>"


def page(title: str, meta: Sequence[tuple[str, str]], body: str,
         toc: Sequence[tuple[str, str]] = ()) -> str:
    """The whole document: header (title, ``meta`` label/value pairs, table of contents) and
    ``body`` markup, with the inline CSS and JS."""
    meta_html = "".join(f"<span>{esc(k)}: <b>{esc(v)}</b></span>" for k, v in meta)
    toc_html = ("<nav class=\"toc\">" + "".join(f"<a href=\"#{esc(a)}\">{esc(t)}</a>"
                                                  for a, t in toc) + "</nav>") if toc else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<header class=\"page\"><div class=\"inner\"><h1>{esc(title)}</h1>"
        f"<div class=\"meta\">{meta_html}</div>{toc_html}</div></header>"
        f"<main>{body}<footer>Generated by depthlab. Self-contained: figures are embedded; "
        "PNG copies are in the figures/ folder next to this file.</footer></main>"
        f"<script>{JS}</script></body></html>\n"
    )
