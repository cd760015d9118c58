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

from dyt_bench.leaderboard.tables import Options, Table
from dyt_bench.leaderboard.text import BEST_MARK, cell_lines, header, legend, table_grid

__all__ = ["FORMATS", "RENDERERS", "SUFFIX_FORMATS", "Renderer", "cell_lines", "records_of", "render", "render_csv",
           "render_html", "render_json", "render_markdown", "render_png", "render_terminal"]

# ---------------------------------------------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------------------------------------------
def _style(j: int, line: str) -> str:
    if j == 0 and line.startswith(BEST_MARK):
        return "bold green"
    if line.startswith(("Diverge", "Stalled")):
        return "yellow"
    if line.startswith("paper"):
        return "dim"
    if "n.s." in line:
        return "dim italic"
    return ""


def render_terminal(tables: list[Table], opts: Options, file=None, width: int | None = None) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable
    from rich.text import Text

    console = Console(file=file, width=width, force_terminal=None if file is None else False)
    for table in tables:
        head, body = table_grid(table, opts)
        rt = RichTable(title=f"{table.title}\n{header(table, opts)}", title_justify="left", title_style="bold",
                       show_lines=True)
        for i, h in enumerate(head):
            rt.add_column(h, justify="left" if i == 0 else "right")
        for row_label, row in body:
            cells = [Text(row_label, style="bold")]
            for _, lines in row:
                text = Text()
                for j, line in enumerate(lines):
                    text.append(("\n" if j else "") + line, style=_style(j, line))
                cells.append(text)
            rt.add_row(*cells)
        console.print(rt)
        console.print(Text("\n".join([legend(table, opts), *table.notes]), style="dim"))
        console.print()


def render_markdown(tables: list[Table], opts: Options) -> str:
    out = []
    for table in tables:
        head, body = table_grid(table, opts)
        out.append(f"**{table.title}** — {header(table, opts)}\n")
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for row_label, row in body:
            cells = [row_label]
            for _, lines in row:
                lines = [ln.replace("|", "\\|") for ln in lines]
                if lines[0].startswith(BEST_MARK):
                    lines[0] = f"**{lines[0]}**"
                cells.append("<br>".join(lines))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        out.append(legend(table, opts) + ("; " + "; ".join(table.notes) if table.notes else "") + ".")
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
        head, body = table_grid(table, opts)
        parts.append(f"<table><caption>{html.escape(table.title)}<br><small>{html.escape(header(table, opts))}"
                     "</small></caption><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>")
        for row_label, row in body:
            parts.append(f"<tr><th>{html.escape(row_label)}</th>")
            for _, lines in row:
                spans = []
                for j, line in enumerate(lines):
                    cls = ("best" if j == 0 and line.startswith(BEST_MARK)
                           else "div" if line.startswith(("Diverge", "Stalled"))
                           else "paper" if line.startswith("paper") else "ns" if "n.s." in line else "")
                    spans.append(f"<span class='{cls}'>{html.escape(line)}</span>")
                parts.append("<td>" + "<br>".join(spans) + "</td>")
            parts.append("</tr>")
        parts.append("</table>")
        parts.append(f"<p>{html.escape(legend(table, opts))}" + "".join(f"<br>{html.escape(n)}" for n in table.notes)
                     + "</p>")
    return "\n".join(parts) + "\n"


def _status(s) -> str:
    if s.n:
        return "partial" if s.not_trained else "ok"
    if s.not_trained:
        return "Diverge" if not s.stalled else "Stalled" if not s.diverged else "Diverge/Stalled"
    return "missing"


def records_of(tables: list[Table], opts: Options) -> list[dict[str, Any]]:
    """One flat record per table cell (the CSV rows and the JSON ``cells``); values unscaled."""
    out = []
    for table in tables:
        for (rk, ck), cell in table.cells.items():
            s = cell.stats
            out.append({
                "table": table.title, "grid": table.grid, "task": table.task, "metric": opts.metric,
                "value": opts.value, "test": opts.test, "mode": opts.mode, "row": " · ".join(rk),
                "col": " · ".join(ck), "axes": dict(cell.labels), "n": s.n, "runs": s.runs,
                "mean": s.mean if s.n else None, "std": s.std if s.n >= 2 else None, "values": s.values,
                "seeds": s.seeds, "diverged": s.diverged, "stalled": s.stalled, "diverged_best": s.diverged_best,
                "stalled_values": s.stalled_values, "chance": s.chance, "failed": s.failed,
                "interrupted": s.interrupted, "missing": s.missing, "status": _status(s),
                "baseline": cell.is_baseline, "delta": cell.delta,
                "ci95": list(cell.ci95) if cell.ci95 is not None else None, "p": cell.p, "p_holm": cell.p_holm,
                "significant": cell.significant, "note": cell.note, "fisher_p": cell.fisher_p,
                "fisher_p_holm": cell.fisher_p_holm, "fisher_significant": cell.fisher_significant,
                "paper": cell.paper, "paper_version": table.paper_version if cell.paper is not None else None,
                "best_in_row": cell.best_in_row, "argbest": cell.argbest, "runner_up": cell.runner_up,
                "not_trained_values": {label: {"diverged": u.diverged, "stalled": u.stalled, "runs": u.runs}
                                       for label, u in cell.untrained.items()},
                "scale": opts.scale,
            })
    return out


CSV_FIELDS = ("metric", "value", "test", "mode", "n", "runs", "mean", "std", "diverged", "stalled", "chance", "failed",
              "interrupted", "status", "baseline", "delta", "ci95_low", "ci95_high", "p", "p_holm", "significant",
              "fisher_p", "fisher_p_holm", "fisher_significant", "paper", "paper_version", "best_in_row", "argbest",
              "runner_up", "values", "seeds")  # after table, grid, task and one column per axis


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
        ci = r["ci95"] or (None, None)
        flat = {**r, **r["axes"], "values": " ".join(f"{v:.6g}" for v in r["values"]),
                "seeds": " ".join(str(s) for s in r["seeds"]), "ci95_low": ci[0], "ci95_high": ci[1]}
        writer.writerow(flat)
    return buf.getvalue()


def render_json(tables: list[Table], opts: Options) -> str:
    return json.dumps({"metric": opts.metric, "value": opts.value, "mode": opts.mode, "test": opts.test,
                       "alpha": opts.alpha, "stall_margin": opts.stall_margin,
                       "tables": [{"title": t.title, "header": header(t, opts), "grid": t.grid, "task": t.task,
                                   "facet": t.facet, "rows": [a.name for a in t.row_axes],
                                   "cols": [a.name for a in t.col_axes], "comparisons": t.comparisons,
                                   "fisher_tests": t.fisher_tests, "paper_version": t.paper_version,
                                   "chance": t.chance, "legend": legend(t, opts), "notes": t.notes}
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
                if not c.stats.n and (c.stats.not_trained or c.stats.failed):
                    label = "Diverge" if c.stats.diverged else "Stalled" if c.stats.stalled else "failed"
                    ax.text(p, ax.get_ylim()[0], label, rotation=90, ha="center", va="bottom", fontsize=8)
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
