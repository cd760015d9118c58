"""Leaderboard tables as text: the terminal (rich), Markdown, CSV, JSON, HTML, or a PNG bar chart (matplotlib).

``RENDERERS`` maps each output format to its renderer; adding a format is one entry there.
"""

from __future__ import annotations

import csv
import html
import io
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dyt_bench.grid.spec import Axis
from dyt_bench.leaderboard.tables import Options, Table, TableCell, short_name

# Row label and, per column, the cell and its text lines.
Body = list[tuple[str, list[tuple[TableCell, list[str]]]]]


# ---------------------------------------------------------------------------------------------------------------
# Cell text, shared by every text format
# ---------------------------------------------------------------------------------------------------------------
def _num(x: float, opts: Options, signed: bool = False) -> str:
    v = x * opts.scale
    return f"{v:+.{opts.digits}f}".replace("-", "−") if signed else f"{v:.{opts.digits}f}"


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}" if p < 0.1 else f"p={p:.2f}"  # 3 decimals near 0.05


def _value_line(cell: TableCell, opts: Options, axis_short: str | None) -> str:
    s = cell.stats
    if s.n:
        main = _num(s.mean, opts)
        main += f" ± {_num(s.std, opts)}" if s.n >= 2 else ""
        main += f" ({s.n})"
        if cell.argbest is not None:
            main = f"{axis_short or 'best'}={cell.argbest}: {main}"
        extra = []
        if s.diverged:
            extra.append(f"Diverge {s.diverged}/{s.runs}")
        if s.failed:
            extra.append(f"failed {s.failed}")
        if s.interrupted:
            extra.append(f"interrupted {s.interrupted}")
        if s.missing:
            extra.append(f"no metric {s.missing}")
        return main + (" · " + ", ".join(extra) if extra else "")
    if s.diverged:
        return ("Diverge" + (f" ({s.diverged}/{s.diverged})" if s.diverged > 1 else "")
                + (f" · failed {s.failed}" if s.failed else ""))
    if s.failed or s.interrupted or s.missing:
        return ", ".join(f"{k} {v}" for k, v in (("failed", s.failed), ("interrupted", s.interrupted),
                                                  ("no metric", s.missing)) if v)
    return "—"


def _comparison_line(cell: TableCell, opts: Options) -> str:
    cmp = f"Δ {_num(cell.delta, opts, signed=True)}"
    if cell.runner_up is not None:
        cmp += f" vs {cell.runner_up}"
    if cell.p_value is not None:
        cmp += f" {_p(cell.p_value)}"
    if cell.ci is not None:
        cmp += f" [{_num(cell.ci[0], opts, True)}, {_num(cell.ci[1], opts, True)}]"
    if cell.significant is False:
        cmp += " n.s."
    elif cell.significant is None:
        cmp += " (n<2)"
    return cmp


def cell_lines(cell: TableCell, opts: Options, axis_short: str | None = None) -> list[str]:
    """The text of one cell: value line, then comparison and paper lines where there are any."""
    lines = [_value_line(cell, opts, axis_short)]
    if cell.is_baseline:
        lines.append("baseline")
    elif cell.delta is not None:
        lines.append(_comparison_line(cell, opts))
    if cell.paper is not None:
        lines.append(f"paper {cell.paper}")
    return lines


def _legend(opts: Options) -> str:
    test = ("Welch t-test p" if opts.test == "welch" else f"bootstrap {100 * (1 - opts.alpha):g}% CI of Δ")
    scale = f" ×{opts.scale:g}" if opts.scale != 1 else ""
    return (f"{opts.metric} ({opts.value}{scale}, {opts.mode} is better): mean ± std (n seeds, sample std); "
            f"Diverge = every seed diverged; ★ best in row; Δ with {test}; n.s. = not significant at α={opts.alpha:g}")


def _table_grid(table: Table, opts: Options) -> tuple[list[str], Body]:
    """Header and rows of a table: each row is its label and, per column, the cell and its text lines."""
    axes: list[Axis] = table.row_axes + table.col_axes
    argbest_short = opts.argbest.rsplit(".", 1)[-1] if opts.argbest else None
    header = [" / ".join(short_name(axes, a.name) for a in table.row_axes) or " "]
    header += [" · ".join(ck) if ck else opts.metric for ck in table.cols]
    body = []
    for rk in table.rows:
        row = []
        for ck in table.cols:
            cell = table.cells[(rk, ck)]
            lines = cell_lines(cell, opts, argbest_short)
            if cell.best_in_row:
                lines[0] = "★ " + lines[0]
            row.append((cell, lines))
        body.append((" · ".join(rk) if rk else "all", row))
    return header, body


# ---------------------------------------------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------------------------------------------
def render_terminal(tables: list[Table], opts: Options, file=None, width: int | None = None) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable
    from rich.text import Text

    console = Console(file=file, width=width, force_terminal=None if file is None else False)
    for table in tables:
        header, body = _table_grid(table, opts)
        rt = RichTable(title=table.title, title_justify="left", title_style="bold", show_lines=True)
        for i, h in enumerate(header):
            rt.add_column(h, justify="left" if i == 0 else "right")
        for row_label, row in body:
            cells = [Text(row_label, style="bold")]
            for cell, lines in row:
                text = Text()
                for j, line in enumerate(lines):
                    style = ""
                    if j == 0 and cell.best_in_row:
                        style = "bold green"
                    elif line.startswith("Diverge"):
                        style = "yellow"
                    elif line.startswith("paper"):
                        style = "dim"
                    elif "n.s." in line:
                        style = "dim italic"
                    text.append(("\n" if j else "") + line, style=style)
                cells.append(text)
            rt.add_row(*cells)
        console.print(rt)
        console.print(Text("\n".join([_legend(opts), *table.notes]), style="dim"))
        console.print()


def render_markdown(tables: list[Table], opts: Options) -> str:
    out = []
    for table in tables:
        header, body = _table_grid(table, opts)
        out.append(f"**{table.title}**\n")
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        for row_label, row in body:
            cells = [row_label]
            for _, lines in row:
                lines = [ln.replace("|", "\\|") for ln in lines]
                if lines[0].startswith("★ "):
                    lines[0] = f"**{lines[0]}**"
                cells.append("<br>".join(lines))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        out.append(_legend(opts) + ("; " + "; ".join(table.notes) if table.notes else "") + ".")
        out.append("")
    return "\n".join(out)


HTML_HEAD = ("<!doctype html><meta charset='utf-8'><title>dyt-bench leaderboard</title>",
             "<style>body{font-family:sans-serif}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #bbb;padding:4px 8px;text-align:right;vertical-align:top}"
             "td:first-child,th:first-child{text-align:left}.best{font-weight:bold;color:#064}"
             ".paper,.ns{color:#777}.div{color:#a60}caption{font-weight:bold;text-align:left}</style>")


def render_html(tables: list[Table], opts: Options) -> str:
    parts = list(HTML_HEAD)
    for table in tables:
        header, body = _table_grid(table, opts)
        parts.append(f"<table><caption>{html.escape(table.title)}</caption><tr>"
                     + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
        for row_label, row in body:
            parts.append(f"<tr><th>{html.escape(row_label)}</th>")
            for _, lines in row:
                spans = []
                for j, line in enumerate(lines):
                    cls = ("best" if j == 0 and line.startswith("★") else "div" if line.startswith("Diverge")
                           else "paper" if line.startswith("paper") else "ns" if "n.s." in line else "")
                    spans.append(f"<span class='{cls}'>{html.escape(line)}</span>")
                parts.append("<td>" + "<br>".join(spans) + "</td>")
            parts.append("</tr>")
        parts.append("</table>")
        parts.append(f"<p>{html.escape(_legend(opts))}" + "".join(f"<br>{html.escape(n)}" for n in table.notes)
                     + "</p>")
    return "\n".join(parts) + "\n"


def records_of(tables: list[Table], opts: Options) -> list[dict[str, Any]]:
    """One flat record per table cell (the CSV rows and the JSON ``cells``)."""
    out = []
    for table in tables:
        for (rk, ck), cell in table.cells.items():
            s = cell.stats
            out.append({
                "table": table.title, "grid": table.grid, "task": table.task, "metric": opts.metric,
                "value": opts.value, "mode": opts.mode, "row": " · ".join(rk), "col": " · ".join(ck),
                "axes": dict(cell.labels), "n": s.n, "mean": s.mean if s.n else None,
                "std": s.std if s.n >= 2 else None, "values": s.values, "seeds": s.seeds, "diverged": s.diverged,
                "failed": s.failed, "interrupted": s.interrupted, "status": "Diverge" if (s.diverged and not s.n) else
                ("ok" if s.n else "missing"), "baseline": cell.is_baseline, "delta": cell.delta,
                "p_value": cell.p_value, "ci_low": cell.ci[0] if cell.ci else None,
                "ci_high": cell.ci[1] if cell.ci else None, "significant": cell.significant, "paper": cell.paper,
                "best_in_row": cell.best_in_row, "argbest": cell.argbest, "runner_up": cell.runner_up,
                "scale": opts.scale,
            })
    return out


CSV_FIELDS = ("metric", "value", "mode", "n", "mean", "std", "diverged", "failed", "interrupted", "status", "baseline",
              "delta", "p_value", "ci_low", "ci_high", "significant", "paper", "best_in_row", "argbest", "values",
              "seeds")  # after table, grid, task and one column per axis


def render_csv(tables: list[Table], opts: Options) -> str:
    rows = records_of(tables, opts)
    axis_names: list[str] = []
    for r in rows:
        axis_names += [k for k in r["axes"] if k not in axis_names]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["table", "grid", "task", *axis_names, *CSV_FIELDS],
                            extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        flat = {**r, **r["axes"], "values": " ".join(f"{v:.6g}" for v in r["values"]),
                "seeds": " ".join(str(s) for s in r["seeds"])}
        writer.writerow(flat)
    return buf.getvalue()


def render_json(tables: list[Table], opts: Options) -> str:
    return json.dumps({"metric": opts.metric, "value": opts.value, "mode": opts.mode, "test": opts.test,
                       "alpha": opts.alpha, "tables": [{"title": t.title, "grid": t.grid, "task": t.task,
                                                         "facet": t.facet, "rows": [a.name for a in t.row_axes],
                                                         "cols": [a.name for a in t.col_axes], "notes": t.notes}
                                                        for t in tables],
                       "cells": records_of(tables, opts)}, indent=2, default=str) + "\n"


def render_png(tables: list[Table], opts: Options, path: Path) -> None:
    """Grouped bars (groups = rows, bars = columns) with ±std error bars; the paper's numeric values as markers."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(len(tables), 1, figsize=(max(6.0, 1.6 * max(len(t.rows) * len(t.cols) for t in tables)),
                                                     3.8 * len(tables)), squeeze=False)
    for ax, table in zip(axs[:, 0], tables, strict=True):
        n_cols = max(1, len(table.cols))
        outlined = []
        width = 0.8 / n_cols
        x = np.arange(len(table.rows))
        for j, ck in enumerate(table.cols):
            cells = [table.cells[(rk, ck)] for rk in table.rows]
            means = np.array([c.stats.mean * opts.scale if c.stats.n else 0.0 for c in cells])
            stds = np.array([c.stats.std * opts.scale if c.stats.n >= 2 else 0.0 for c in cells])
            pos = x - 0.4 + width * (j + 0.5)
            label = " · ".join(ck) if ck else opts.metric
            bars = ax.bar(pos, means, width * 0.92, yerr=stds, capsize=3, label=label)
            for p, c, bar in zip(pos, cells, bars, strict=True):
                if not c.stats.n and (c.stats.diverged or c.stats.failed):
                    ax.text(p, ax.get_ylim()[0], "Diverge" if c.stats.diverged else "failed", rotation=90,
                            ha="center", va="bottom", fontsize=8)
                elif c.best_in_row:
                    outlined.append(bar)
                if isinstance(c.paper, (int, float)) and not isinstance(c.paper, bool):
                    ax.plot(p, c.paper, marker="D", mfc="none", mec="black", ms=5)
        ax.set_xticks(x)
        ax.set_xticklabels([" · ".join(rk) if rk else "all" for rk in table.rows])
        ax.set_title(table.title, fontsize=10)
        ax.set_ylabel(opts.metric + (f" ×{opts.scale:g}" if opts.scale != 1 else ""))
        finite = [c.stats.mean * opts.scale for c in table.cells.values() if c.stats.n]
        if finite and opts.mode == "max":
            lo = min(finite) - 0.15 * (max(finite) - min(finite) + 1e-9) - 3 * max(
                (c.stats.std * opts.scale for c in table.cells.values() if c.stats.n >= 2), default=0)
            ax.set_ylim(bottom=max(0.0, lo))
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        for bar in outlined:  # after the legend, so its swatches stay plain
            bar.set_edgecolor("black")
            bar.set_linewidth(1.5)
    fig.suptitle("bars: mean ± std over seeds; ◇ the paper's value; outlined: best in row", fontsize=8)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------
# The format table
# ---------------------------------------------------------------------------------------------------------------
def _prepare(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _write_terminal(tables: list[Table], opts: Options, out: Path | None) -> None:
    if out is None:
        render_terminal(tables, opts)
        return
    with open(_prepare(out), "w", encoding="utf-8") as f:
        render_terminal(tables, opts, file=f, width=200)


def _write_text(render: Callable[[list[Table], Options], str]) -> Callable[[list[Table], Options, Path | None], None]:
    """A text renderer as a writer: to stdout, or to the file ``out``."""
    def write(tables: list[Table], opts: Options, out: Path | None) -> None:
        text = render(tables, opts)
        if out is None:
            sys.stdout.write(text)
        else:
            _prepare(out).write_text(text, encoding="utf-8")

    return write


def _write_png(tables: list[Table], opts: Options, out: Path | None) -> None:
    render_png(tables, opts, _prepare(out))


@dataclass(frozen=True)
class Renderer:
    """An output format: how to write the tables (``out`` None: to stdout), the file suffixes that select it, and
    whether it can only go to a file."""

    write: Callable[[list[Table], Options, Path | None], None]
    suffixes: tuple[str, ...]
    needs_file: bool = False


RENDERERS: dict[str, Renderer] = {
    "terminal": Renderer(_write_terminal, (".txt",)),
    "md": Renderer(_write_text(render_markdown), (".md",)),
    "csv": Renderer(_write_text(render_csv), (".csv",)),
    "json": Renderer(_write_text(render_json), (".json",)),
    "html": Renderer(_write_text(render_html), (".html", ".htm")),
    "png": Renderer(_write_png, (".png",), needs_file=True),
}
DEFAULT_FORMAT = "terminal"
FORMATS = tuple(RENDERERS)
# Output suffix → format; the terminal table's plain-text suffix listed last (as the --output error shows them).
SUFFIX_FORMATS = {suffix: name for name, r in sorted(RENDERERS.items(), key=lambda kv: kv[0] == DEFAULT_FORMAT)
                  for suffix in r.suffixes}


def render(tables: list[Table], opts: Options, fmt: str, out: Path | None = None) -> None:
    """Write ``tables`` in format ``fmt`` to the file ``out``, or to stdout."""
    RENDERERS[fmt].write(tables, opts, out)
