"""The leaderboard as one self-contained HTML page: every table (sortable columns, the paper's numbers beside ours,
a legend), its bar chart and validation curves embedded as PNG data URIs, and no file or network it depends on.

Every string that comes from results, grid files or configs goes through ``html.escape``; the page's only script
is the few lines that sort a table by a column.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

from dyt_bench.leaderboard.tables import Options, Table
from dyt_bench.leaderboard.text import BEST_MARK, header, legend, table_grid

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0}
td,th{border:1px solid #bbb;padding:4px 8px;text-align:right;vertical-align:top}
td:first-child,th:first-child{text-align:left}td span{white-space:nowrap}
thead th{background:#f3f3f3;cursor:pointer;user-select:none}
thead th:after{content:" \\2195";color:#aaa;font-size:.8em}
thead th.asc:after{content:" \\2191";color:#333}thead th.desc:after{content:" \\2193";color:#333}
.best{font-weight:bold;color:#064}.paper{color:#555;font-style:italic}.ns{color:#777}.div{color:#a60}
.res{color:#357;font-size:.85em}.note,.legend{color:#555;font-size:.9em}
figure{margin:.8em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.85em}
dl.key{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:.9em}dl.key dt{font-weight:bold}
"""

# Sort a table by the clicked column: numeric by each cell's data-v (missing values last), else by text.
SCRIPT = """
document.querySelectorAll('section.lb table').forEach(function(t){
  t.querySelectorAll('thead th').forEach(function(th,i){th.addEventListener('click',function(){
    var asc=!th.classList.contains('asc');
    t.querySelectorAll('thead th').forEach(function(h){h.classList.remove('asc','desc')});
    th.classList.add(asc?'asc':'desc');
    var rows=Array.from(t.tBodies[0].rows);
    rows.sort(function(a,b){
      var x=a.cells[i],y=b.cells[i],u=parseFloat(x.dataset.v),v=parseFloat(y.dataset.v);
      if(isNaN(u)&&isNaN(v)){return asc?x.textContent.localeCompare(y.textContent):y.textContent.localeCompare(x.textContent)}
      if(isNaN(u))return 1;if(isNaN(v))return -1;return asc?u-v:v-u;});
    rows.forEach(function(r){t.tBodies[0].appendChild(r)});});});});
"""

KEY = (("▸ bold", "the best mean of its row, among cells where every run trained"),
       ("± std (n)", "standard deviation over seeds, n runs with a value"),
       ("Δ … [CI]", "difference to the baseline cell with its 95% confidence interval; ★ significant after Holm"),
       ("paper …", "the paper's number for this cell (the version named in the table's notes)"),
       ("Diverge / Stalled", "runs that did not train: loss non-finite, or no better than chance"),
       ("samples/s · MB", "mean training throughput and peak memory of the runs (--show)"))


@dataclass
class Page:
    """What the page shows beside the tables: per table, its bar chart and curves PNG (bytes), and per cell the lines
    of its throughput / memory; notes about the inputs."""

    bars: list[bytes | None] = field(default_factory=list)
    curves: list[bytes | None] = field(default_factory=list)
    cell_extra: list[dict] = field(default_factory=list)  # per table: (row key, col key) → extra lines
    notes: list[str] = field(default_factory=list)
    title: str = "dyt-bench leaderboard"


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _line_class(j: int, line: str) -> str:
    if j == 0 and line.startswith(BEST_MARK):
        return "best"
    if line.startswith(("Diverge", "Stalled")):
        return "div"
    if line.startswith("paper"):
        return "paper"
    return "ns" if "n.s." in line else ""


def _sort_value(cell, opts: Options) -> str:
    s = cell.stats
    return f"{s.mean * opts.scale:.6g}" if s.n and s.mean is not None and math.isfinite(s.mean) else ""


def _table_html(table: Table, opts: Options, extra: dict) -> list[str]:
    head, body = table_grid(table, opts)
    out = ["<table><thead><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for (row_label, row), rk in zip(body, table.rows or [()], strict=False):
        cells = [f"<th>{_esc(row_label)}</th>"]
        for (cell, lines), ck in zip(row, table.cols or [()], strict=False):
            spans = [f"<span class='{_line_class(j, ln)}'>{_esc(ln)}</span>" for j, ln in enumerate(lines)]
            spans += [f"<span class='res'>{_esc(ln)}</span>" for ln in extra.get((rk, ck), [])]
            cells.append(f"<td data-v='{_esc(_sort_value(cell, opts))}'>" + "<br>".join(spans) + "</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return out


def render_page(tables: list[Table], opts: Options, page: Page | None = None) -> str:
    """The whole page as a string."""
    page = page or Page()
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = ["<!doctype html>", "<html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width,initial-scale=1'>",
             f"<title>{_esc(page.title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{_esc(page.title)}</h1>",
             f"<p class='note'>{len(tables)} table(s) · metric {_esc(opts.metric)} · {_esc(opts.value)} value · "
             f"written {_esc(now)}. Click a column header to sort.</p>",
             "<dl class='key'>" + "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in KEY) + "</dl>"]
    for i, table in enumerate(tables):
        parts.append(f"<section class='lb'><h2>{_esc(table.title)}</h2><p class='note'>{_esc(header(table, opts))}</p>")
        extra = page.cell_extra[i] if i < len(page.cell_extra) else {}
        parts += _table_html(table, opts, extra)
        parts.append("<p class='legend'>" + _esc(legend(table, opts))
                     + "".join(f"<br>{_esc(n)}" for n in table.notes) + "</p>")
        for kind, images in (("bars: mean ± std over seeds, ◇ the paper's value", page.bars),
                             ("validation curves: mean ± std over seeds", page.curves)):
            png = images[i] if i < len(images) else None
            if png:
                parts.append(f"<figure><img alt='{_esc(kind.split(':')[0] + ' of ' + table.title)}' "
                             f"src='{data_uri(png)}'><figcaption>{_esc(kind)}</figcaption></figure>")
        parts.append("</section>")
    if page.notes:
        parts.append("<p class='note'>" + "<br>".join(_esc(n) for n in page.notes) + "</p>")
    parts.append(f"<script>{SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"


def figure_bytes(draw) -> bytes:
    """The PNG that ``draw(file)`` writes into a buffer."""
    buf = io.BytesIO()
    draw(buf)
    return buf.getvalue()


__all__ = ["KEY", "Page", "data_uri", "figure_bytes", "render_page"]
